//! The HTTP side cannot be exhausted or desynchronised by one client: 5,000 idle
//! connections and a slowloris on 500 more, all from 127.0.0.1, while another client
//! (127.0.0.2) loads `/`, `/healthz` and opens WebSockets, each answered within a
//! second; natter's threads and descriptors stay within a stated bound (the built
//! binary runs, so they can be counted in /proc). And a request whose body length is
//! ambiguous is refused on every listener, never answered as two requests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, Proc, Stream, TestServer, WAIT};

const IDLE: usize = 5_000;
const SLOWLORIS: usize = 500;
/// How long the attack runs: past the default 10 s head timeout, so slowloris
/// connections that got in are seen being cut.
const ATTACK: Duration = Duration::from_secs(13);
/// The default per-IP cap on HTTP connections (the test runs natter's defaults).
const PER_IP_CAP: usize = 64;

fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// A connection from 127.0.0.2: another client, as far as natter can tell.
fn from_other_address(to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(1)).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s
}

/// GET `path` from the other address; returns the status and how long it took.
fn timed_get(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let t0 = Instant::now();
    let mut s = from_other_address(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap_or_else(|e| panic!("GET {path} during the attack: {e}"));
    let status = String::from_utf8_lossy(&out).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, t0.elapsed())
}

fn proc_counts(pid: u32) -> (usize, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (threads, fds)
}

#[test]
fn idle_and_slowloris_connections_from_one_address_cannot_take_the_http_side_down() {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::start(dir.path(), None, &[]);
    let pid = server.child.id();
    // Every thread natter starts at once is up when a WebSocket is served and both
    // HTTP sites have answered (each site's tiny_http, with its pool, starts on its own).
    let first = Client::connect(&server.url("first"));
    assert_eq!(common::http_get(server.http, "/healthz").0, 200);
    assert_eq!(common::http_get(server.admin, "/healthz").0, 200);
    let (threads0, fds0) = proc_counts(pid);

    let idle: Vec<TcpStream> = (0..IDLE).filter_map(|_| TcpStream::connect(server.http).ok()).collect();
    let slow: Vec<TcpStream> = (0..SLOWLORIS).filter_map(|_| TcpStream::connect(server.http).ok()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let loris = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut at = 0;
            while !stop.load(Ordering::Relaxed) {
                for mut s in &slow {
                    let _ = s.write(&head[at % head.len()..at % head.len() + 1]);
                }
                at += 1;
                let tick = Instant::now();
                while tick.elapsed() < Duration::from_secs(5) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            slow.len()
        })
    };

    let started = Instant::now();
    let (mut worst, mut peak) = (Duration::ZERO, (0, 0));
    let mut sockets = Vec::new();
    while started.elapsed() < ATTACK {
        for path in ["/", "/healthz"] {
            let (status, took) = timed_get(server.http, path);
            assert_eq!(status, 200, "{path} during the attack");
            worst = worst.max(took);
        }
        let t0 = Instant::now();
        let url = format!("ws://{}/ws?name=other", server.ws);
        let ws = Client::over(&url, Stream::Plain(from_other_address(server.ws)));
        worst = worst.max(t0.elapsed());
        sockets.push(ws);
        let (threads, fds) = proc_counts(pid);
        peak = (peak.0.max(threads), peak.1.max(fds));
        std::thread::sleep(Duration::from_millis(250));
    }
    stop.store(true, Ordering::Relaxed);
    drop(first);
    let slow_held = loris.join().unwrap();
    let metrics = common::http_get(server.admin, "/metrics").1;
    let counter = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    let (per_ip, head_timeouts) = (
        counter("natter_http_refused_total{reason=\"per_ip\"}"),
        counter("natter_http_refused_total{reason=\"head_timeout\"}"),
    );
    let ws_conns = sockets.len();
    // Bounds: one guard thread whatever the HTTP load, and a thread per WebSocket. The
    // page's tiny_http (accept thread, 4 pooled threads), its serving thread and the
    // guard's 4 relays are all up in `threads0`; tiny_http only ever sees relay
    // connections, at most 4 at once, but its pool adds a thread when none is waiting
    // (one may still be finishing a relay's connection): at most 4 more, for 5 s.
    // Descriptors: one per HTTP connection
    // up to the per-IP cap, one per WebSocket, and a few for the other client's
    // requests in flight, each with a relay's two ends of a Unix socket to tiny_http.
    let thread_bound = threads0 + ws_conns + 2 + 4;
    let fd_bound = fds0 + PER_IP_CAP + ws_conns + 8 + 2 * 4;
    eprintln!(
        "attack: {} idle + {slow_held} slowloris connections from 127.0.0.1 for {ATTACK:?}; \
         worst answer to the other client {worst:?}; natter threads {threads0} -> peak {} (bound {thread_bound}), \
         fds {fds0} -> peak {} (bound {fd_bound}); refused per_ip {per_ip}, head_timeout {head_timeouts}; \
         {ws_conns} WebSockets opened",
        idle.len(),
        peak.0,
        peak.1
    );
    assert!(worst < Duration::from_secs(1), "an answer took {worst:?}");
    assert!(peak.0 <= thread_bound, "threads grew to {} (bound {thread_bound})", peak.0);
    assert!(peak.1 <= fd_bound, "descriptors grew to {} (bound {fd_bound})", peak.1);
    assert!(per_ip >= (IDLE + SLOWLORIS - PER_IP_CAP) as u64, "per-IP refusals counted: {per_ip}");
    assert!(head_timeouts >= 1, "slow heads cut at the deadline: {head_timeouts}");
}

/// tiny_http serves the page behind the guard: each response carries the `Server`
/// header tiny_http adds (the guard's own answers carry none), while the browser's
/// keep-alive connection stays the guard's and carries the next request; the
/// threads answering for tiny_http run under their names.
/// (Broken once by answering in the guard again: the `Server` header was missing.)
#[test]
fn tiny_http_answers_behind_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::start(dir.path(), None, &[]);
    for (addr, paths) in
        [(server.http, ["/", "/config.json", "/healthz"]), (server.admin, ["/metrics", "/healthz", "/nope"])]
    {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for path in paths {
            write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
            let head = read_keep_alive_response(&mut s);
            assert!(head.contains("\r\nServer: tiny-http"), "{path} not answered by tiny_http:\n{head}");
            assert!(head.contains("\r\nConnection: keep-alive\r\n"), "{path}: keep-alive lost:\n{head}");
        }
    }
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", server.child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    for name in ["http", "http-tiny", "http-admin", "http-admin-tiny"] {
        assert!(names.iter().any(|n| n == name), "no thread {name} in {names:?}");
    }
}

/// One response with a `Content-Length` from a connection that stays open: its head.
fn read_keep_alive_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in\n{head}"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head
}

/// Everything the server writes back to `request` until it closes (or `WAIT` passes).
fn answers_to(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // A reset after the answer still leaves the answer read.
    while let Ok(n @ 1..) = s.read(&mut buf) {
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn an_ambiguous_body_length_is_a_400_and_a_close_on_every_listener() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("api.keys");
    std::fs::write(&key_file, "backend-key-0123456789\n").unwrap();
    let server = TestServer::start_with(|c| c.api_key_file = Some(key_file));
    // The "body" of the first request is a whole second request: answered as one, it
    // would desync a front proxy that took the body as a body.
    let smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: 0123\r\n\r\n";
    let auth = "Authorization: Bearer backend-key-0123456789\r\n";
    let cases = [
        (server.http, "GET /", "Content-Length: 0\r\nContent-Length: 44\r\n"),
        (server.http, "POST /", "Content-Length: 44\r\nTransfer-Encoding: chunked\r\n"),
        (server.admin, "GET /healthz", "Content-Length: 0\r\nContent-Length: 44\r\n"),
        (server.admin, "GET /api/v1/rooms", "Content-Length: 0\r\nContent-Length: 44\r\n"),
        (server.admin, "GET /api/v1/rooms", "Transfer-Encoding: chunked\r\nContent-Length: 44\r\n"),
        (server.admin, "GET /api/v1/rooms", "Content-Length: +44\r\n"),
        (server.ws, "POST /send?session=s-x", "Content-Length: 0\r\nContent-Length: 44\r\n"),
        (server.ws, "POST /send?session=s-x", "Content-Length: 44\r\nTransfer-Encoding: chunked\r\n"),
        (server.ws, "GET /sse?name=a", "Content-Length: 0\r\nContent-Length: 44\r\n"),
    ];
    for (addr, line, framing) in cases {
        let request = format!("{line} HTTP/1.1\r\nHost: x\r\n{auth}{framing}\r\n{smuggled}");
        let out = answers_to(addr, request.as_bytes());
        assert!(out.starts_with("HTTP/1.1 400 "), "{line} {framing:?} on {addr}:\n{out}");
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{line} {framing:?}: one answer, then the close:\n{out}");
    }
}
