//! Test helpers: start the real server (in-process on port 0, or the built binary as a
//! child process), connect real WebSocket clients, and expect frames, so that tests
//! read as the scenario they check.
#![allow(dead_code)]

pub mod history;
pub mod sentinel;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use natter::config::Config;
use natter::shutdown::{self, ShutdownTrigger};
use natter::{Listeners, ServeError};
use serde_json::{json, Value};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// How long any single expectation may wait before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The server running inside the test process.
pub struct TestServer {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    /// `/metrics` lives here (`--admin-bind`).
    pub admin: SocketAddr,
    trigger: ShutdownTrigger,
    handle: Option<JoinHandle<Result<(), ServeError>>>,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let http = TcpListener::bind("127.0.0.1:0").unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let (http_addr, ws_addr) = (http.local_addr().unwrap(), ws.local_addr().unwrap());
        let admin_addr = admin.local_addr().unwrap();
        let mut cfg = Config {
            data_dir: dir.path().to_owned(),
            http_port: http_addr.port(),
            ws_port: ws_addr.port(),
            ..Config::default()
        };
        tweak(&mut cfg);
        let (trigger, shutdown) = shutdown::channel();
        let handle =
            std::thread::spawn(move || natter::serve(cfg, Listeners { http, ws, admin: Some(admin) }, shutdown, || {}));
        TestServer { http: http_addr, ws: ws_addr, admin: admin_addr, trigger, handle: Some(handle), dir }
    }

    pub fn url(&self, name: &str) -> String {
        format!("ws://{}/ws?name={name}", self.ws)
    }

    /// Connects and reads the welcome frame.
    pub fn connect(&self, name: &str) -> Client {
        Client::connect(&self.url(name))
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").1
    }

    /// Waits until `/metrics` has a line `series value`.
    pub fn wait_metric(&self, series: &str, value: u64) {
        let line = format!("{series} {value}");
        wait_until(|| self.metrics().lines().any(|l| l == line), &format!("metric `{line}`"));
    }

    pub fn stop(mut self) {
        self.trigger.fire();
        let result = self.handle.take().unwrap().join().expect("serve thread panicked");
        result.expect("serve returned an error");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger.fire();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// `c` (a third user) reads private `room`, which holds `text`, by no means: `join`,
/// `since`, a private join, `history`, `search`; nor may it join `other` (a private
/// room of someone else, or a guessed DM room name).
pub fn kept_out(c: &mut Client, room: &str, text: &str, other: &str) {
    for attempt in [
        json!({"type": "join", "room": room}),
        json!({"type": "join", "room": room, "since": 0}),
        json!({"type": "join", "room": room, "private": true}),
        json!({"type": "history", "room": room, "before": 5}),
        json!({"type": "search", "room": room, "q": text}),
        json!({"type": "join", "room": other}),
    ] {
        c.send(attempt.clone());
        let v = c.expect("error");
        assert!(v["code"] == "forbidden" || v["code"] == "not_joined", "{attempt} → {v}");
        assert!(!v.to_string().contains(text));
    }
}

/// The seqs of a `history` frame's messages, in order.
pub fn history_seqs(history: &Value) -> Vec<u64> {
    history["messages"].as_array().expect("history has messages").iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

/// Lifts the per-connection rate limit, for tests that flood on purpose.
pub fn unlimited_rate(c: &mut Config) {
    c.rate_per_s = 1_000_000;
    c.rate_burst = 1_000_000;
}

/// `flooder` posts `n` messages of `text` to `room` in batches of `batch`, paced by
/// `reader`, which must see every one in order (so only a client that does not read
/// falls behind).
pub fn flood_paced(flooder: &mut Client, reader: &mut Client, room: &str, n: usize, batch: usize, text: &str) {
    for b in 0..n / batch {
        for i in 0..batch {
            flooder.send(json!({"type": "msg", "room": room, "text": text, "id": format!("f{b}-{i}")}));
        }
        for i in 0..batch {
            let m = reader.expect("msg");
            assert_eq!(m["seq"].as_u64(), Some((b * batch + i + 1) as u64), "the reader misses nothing");
        }
        for _ in 0..batch {
            flooder.expect("ack");
            flooder.expect("msg");
        }
    }
}

/// Polls `cond` until it holds (for state observable only by asking, like /metrics).
pub fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `series` (the whole name, labels included) in a `/metrics` text;
/// None when the series is not there at all.
pub fn metric_value(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A plain HTTP/1.0 GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// In open mode a name is not an identity: the id comes from the `key` a client
/// presents. Test clients named alike are meant as the same user (one person
/// reconnecting), so a URL with `name=X` and no `key=` gets a key derived from X.
pub fn with_identity_key(url: &str) -> String {
    let name = url.split(['?', '&']).find_map(|p| p.strip_prefix("name="));
    match name {
        Some(name) if !url.contains("key=") => format!("{url}&key=test-identity-key-for-{name}"),
        _ => url.to_owned(),
    }
}

/// A client's byte stream: plain TCP, or TLS over it (`wss://`). Derefs to the
/// socket, for timeouts and peeking.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl std::ops::Deref for Stream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A 64 KiB receive buffer (no autotuning), so a client that stops reading backs up
/// into the server quickly instead of into megabytes of kernel buffers.
pub fn small_receive_buffer(s: &TcpStream) {
    let size: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt on a socket we own with a pointer to a local int.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// A real WebSocket client (tungstenite, blocking, with a read timeout).
pub struct Client {
    pub ws: WebSocket<Stream>,
    pub welcome: Value,
}

impl Client {
    pub fn connect(url: &str) -> Client {
        Self::connect_with(url, |_| {})
    }

    /// Connects with a 64 KiB receive buffer (no autotuning), so a client that stops reading
    /// backs up into the server quickly instead of into megabytes of kernel buffers.
    pub fn connect_small_buffer(url: &str) -> Client {
        Self::connect_with(url, small_receive_buffer)
    }

    fn connect_with(url: &str, tune: impl FnOnce(&TcpStream)) -> Client {
        let url = &with_identity_key(url);
        let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        tune(&stream);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self::over(url, Stream::Plain(stream))
    }

    /// Connects to a `wss://` URL, verifying the server's chain against `tls`'s roots.
    pub fn connect_tls(url: &str, tls: &std::sync::Arc<rustls::ClientConfig>) -> Client {
        Self::connect_tls_with(url, tls, |_| {})
    }

    /// `connect_tls` with the socket tuned first (e.g. [`small_receive_buffer`]).
    pub fn connect_tls_with(
        url: &str,
        tls: &std::sync::Arc<rustls::ClientConfig>,
        tune: impl FnOnce(&TcpStream),
    ) -> Client {
        let addr = url.trim_start_matches("wss://").split('/').next().unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        tune(&stream);
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let host = addr.rsplit_once(':').unwrap().0.to_owned();
        let name = rustls::pki_types::ServerName::try_from(host).unwrap();
        let session = rustls::ClientConnection::new(tls.clone(), name).unwrap();
        Self::over(url, Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream))))
    }

    /// Connects with extra request headers, e.g. the `X-Forwarded-For` a trusted proxy
    /// would add.
    pub fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Client {
        use tungstenite::client::IntoClientRequest;
        let url = with_identity_key(url);
        let mut req = url.as_str().into_client_request().expect("a ws:// URL");
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            req.headers_mut().append(name, value.parse().expect("a header value"));
        }
        let addr = url.trim_start_matches("ws://").split('/').next().unwrap();
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self::over(req, Stream::Plain(stream))
    }

    /// The WebSocket handshake and the welcome frame over an open stream.
    pub fn over(url: impl tungstenite::client::IntoClientRequest, stream: Stream) -> Client {
        let (ws, _) = tungstenite::client(url, stream).expect("handshake");
        let mut c = Client { ws, welcome: Value::Null };
        c.welcome = c.recv();
        assert_eq!(c.welcome["type"], "welcome", "first frame is welcome");
        c
    }

    /// The user id the server gave this connection.
    pub fn uid(&self) -> String {
        self.welcome["user"]["id"].as_str().expect("welcome names the user").to_owned()
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    pub fn send_raw(&mut self, m: Message) {
        self.ws.send(m).expect("send");
    }

    /// The next JSON frame (pings are answered by tungstenite and skipped).
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read a frame") {
                Message::Text(t) => return serde_json::from_str(t.as_str()).expect("server frames are JSON"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame of type `kind`, whatever comes first (others' messages, acks,
    /// presence): for a test that only cares when that answer arrives.
    pub fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// The next frame of type `kind`, skipping presence and typing noise.
    pub fn expect(&mut self, kind: &str) -> Value {
        loop {
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
            assert!(v["type"] == "system" || v["type"] == "typing", "expected `{kind}`, got {v}");
        }
    }

    /// Joins and returns (joined, history), the history's pages (`more:true`) merged
    /// into one.
    pub fn join(&mut self, room: &str, since: Option<u64>) -> (Value, Value) {
        let mut m = json!({"type": "join", "room": room});
        if let Some(s) = since {
            m["since"] = json!(s);
        }
        self.send(m);
        let joined = self.expect("joined");
        let history = self.expect_history();
        (joined, history)
    }

    /// The next `history` answer, its pages merged: every `more:true` page's messages
    /// are prepended to the last page's.
    pub fn expect_history(&mut self) -> Value {
        let mut messages = Vec::new();
        loop {
            let mut page = self.expect("history");
            messages.extend(page["messages"].as_array().expect("history has messages").iter().cloned());
            if page["more"] != true {
                page["messages"] = Value::Array(messages);
                return page;
            }
        }
    }

    /// Posts, reads the ack and (unless it is a duplicate) the echo of the message, in
    /// either order (in Redis mode the echo may come first); returns the ack.
    pub fn post(&mut self, room: &str, text: &str, id: &str) -> Value {
        self.send(json!({"type": "msg", "room": room, "text": text, "id": id}));
        let (mut ack, mut echo) = (None::<Value>, None::<Value>);
        while ack.is_none() || (echo.is_none() && ack.as_ref().is_some_and(|a| a["dup"] == false)) {
            let v = self.recv();
            match v["type"].as_str() {
                Some("ack") if v["id"] == id => ack = Some(v),
                Some("msg") if v["id"] == id => echo = Some(v),
                Some("system") | Some("typing") => {}
                _ => panic!("while posting {id}: unexpected {v}"),
            }
        }
        let ack = ack.expect("loop ends with an ack");
        if let Some(echo) = echo {
            assert_eq!(echo["seq"], ack["seq"], "the echo carries the acked seq");
        }
        ack
    }

    /// Reads until the server's close frame; returns (code, reason).
    pub fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                    let _ = self.ws.flush(); // answer the close, as a polite client does
                    return (code.into(), reason.to_string());
                }
                Ok(Message::Close(None)) => return (1005, String::new()),
                Ok(_) => continue,
                Err(e) => panic!("connection ended without a close frame: {e}"),
            }
        }
    }
}

/// The built `natter` binary as a child process.
pub struct Proc {
    pub child: Child,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub admin: SocketAddr,
}

pub fn natter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_natter"))
}

/// A free loopback port (bound then released; fine for a test that starts one server).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Proc {
    /// Starts `natter serve` on `data_dir` and waits for its "listening" line.
    pub fn start(data_dir: &Path, ports: Option<(u16, u16)>, extra: &[&str]) -> Proc {
        Proc::launch(Proc::command(data_dir, ports, extra))
    }

    /// Like `start`, with the open-files limit (soft and hard) set to `nofile`.
    pub fn start_with_nofile(data_dir: &Path, extra: &[&str], nofile: u64) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut cmd = Proc::command(data_dir, None, extra);
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: nofile, rlim_max: nofile };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Proc::launch(cmd)
    }

    /// Like `start`, with files limited to `bytes` (RLIMIT_FSIZE) and SIGXFSZ ignored,
    /// so a write past the limit fails with EFBIG as on a full disk.
    pub fn start_with_fsize(data_dir: &Path, extra: &[&str], bytes: u64) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut cmd = Proc::command(data_dir, None, extra);
        // SAFETY: signal and setrlimit are async-signal-safe and touch only the child;
        // an ignored signal stays ignored across exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let lim = libc::rlimit { rlim_cur: bytes, rlim_max: libc::RLIM_INFINITY };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Proc::launch(cmd)
    }

    /// Lifts the child's file-size limit (the disk has room again).
    pub fn lift_fsize(&self) {
        let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: prlimit on a child this test started, with a pointer to a local struct.
        let rc = unsafe { libc::prlimit(self.child.id() as i32, libc::RLIMIT_FSIZE, &lim, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    }

    fn command(data_dir: &Path, ports: Option<(u16, u16)>, extra: &[&str]) -> Command {
        let (hp, wp) = ports.unwrap_or((0, 0));
        let mut cmd = Command::new(natter_bin());
        cmd.args(["serve", "--bind", "127.0.0.1", "--http-port", &hp.to_string(), "--ws-port", &wp.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--log-level", &std::env::var("NATTER_TEST_LOG").unwrap_or_else(|_| "warn".into())])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cmd
    }

    fn launch(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("spawn natter");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = |key: &str| -> SocketAddr {
            let v = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}"));
            v.split("://").last().unwrap().trim_end_matches("/ws").parse().unwrap()
        };
        Proc { http: addr("http="), ws: addr("ws="), admin: addr("admin="), child }
    }

    pub fn url(&self, name: &str) -> String {
        format!("ws://{}/ws?name={name}", self.ws)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for exit; returns the exit code (None when killed by a signal).
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "natter did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
