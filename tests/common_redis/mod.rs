//! Test helper: a private `redis-server` on a free loopback port, started from PATH,
//! killed by its PID on drop, and stoppable/restartable on the same port for outage
//! tests. Never touches any other Redis (a system service on 6379 is left alone).
//!
//! When `redis-server` is not installed the test fails and says to run
//! `scripts/ensure-redis.sh` (which `make test` runs first).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer PING after it was started.
const START_WAIT: Duration = Duration::from_secs(10);

/// A redis-server child process owned by one test.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// An in-memory server: its data is gone once it stops.
    pub fn start() -> RedisServer {
        Self::start_with(false)
    }

    /// A server with an append-only file in its own temp dir, so a stop (even SIGKILL:
    /// the AOF is written before Redis replies) and restart keeps its data.
    pub fn start_persistent() -> RedisServer {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> RedisServer {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut server = RedisServer { child: None, port: 0, dir, persistent };
        let mut last_log = String::new();
        // A free port can be taken between our probe and redis-server's bind: retry.
        for _ in 0..5 {
            server.port = free_port();
            match server.spawn() {
                Ok(()) => return server,
                Err(log) => last_log = log,
            }
        }
        panic!("redis-server would not start:\n{last_log}");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The server's process id while it runs (for signals such as SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL, by PID) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `SIGSTOP`s the server (by PID): its sockets stay open, it answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// `SIGCONT`s a paused server.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("redis-server runs").id();
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts the server again on the same port (and, when persistent, the same data).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_WAIT;
        // The port may linger for a moment after the kill.
        while let Err(log) = self.spawn() {
            assert!(Instant::now() < deadline, "redis-server would not restart on port {}:\n{log}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends one command (inline form) and returns the raw reply, for checks the
    /// store's API does not expose (e.g. XLEN).
    pub fn command(&self, line: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to test redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("read timeout");
        s.write_all(format!("{line}\r\n").as_bytes()).expect("send to test redis");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).expect("reply from test redis");
        String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()
    }

    /// The keys whose stored bytes hold `needle`: every key's `DUMP` (what snapshots
    /// and replicas get, e.g. a stream entry's bytes even after `XDEL`), read with
    /// compression off so no text hides inside LZF.
    pub fn keys_holding(&self, needle: &str) -> Vec<String> {
        let client = redis::Client::open(self.url()).expect("redis url");
        let mut con = client.get_connection().expect("connect to test redis");
        redis::cmd("CONFIG").arg("SET").arg("rdbcompression").arg("no").exec(&mut con).expect("CONFIG SET");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
        assert!(!keys.is_empty(), "there are keys to look through");
        let holds = |dump: &[u8]| dump.windows(needle.len()).any(|w| w == needle.as_bytes());
        keys.into_iter()
            .filter(|k| holds(&redis::cmd("DUMP").arg(k).query::<Vec<u8>>(&mut con).expect("DUMP")))
            .collect()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns redis-server and waits until it answers PING; on failure kills it and
    /// returns its log.
    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--dir".as_ref(), self.dir.path().as_os_str()])
            .args(["--logfile".as_ref(), self.log_path().as_os_str()])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (not on PATH): run scripts/ensure-redis.sh \
                 (`make test` runs it first), then run the tests again"
            ),
            Err(e) => panic!("starting redis-server: {e}"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_WAIT;
        while Instant::now() < deadline {
            // Ours answering, not another test's that took the port first (ours then exits).
            if self.answers_ping() && self.is_ours() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_exited)) = child.try_wait() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(std::fs::read_to_string(self.log_path()).unwrap_or_default())
    }

    /// Whether the server on our port is our child (its `INFO server` names its pid).
    fn is_ours(&self) -> bool {
        let Some(pid) = self.pid() else { return false };
        let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 8192];
        s.write_all(b"INFO server\r\n").is_ok()
            && s.read(&mut buf).is_ok_and(|n| {
                String::from_utf8_lossy(&buf[..n]).lines().any(|l| l.trim() == format!("process_id:{pid}"))
            })
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_millis(200))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 64];
        s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    listener.local_addr().expect("probe port address").port()
}
