//! Posts through natter's server API (`POST /api/v1/rooms/{room}/messages` on the
//! admin listener) instead of a WebSocket: the witness's probes when
//! `--witness-via-api` (so its round trip is an API post's latency, request to seen
//! by a WebSocket client), and `--api-rate` background posts into a room of their
//! own (the load a backend adds while the fleet is measured).
//!
//! Each post is one blocking HTTP/1.1 request on its own connection (natter's API
//! answers `Connection: close`), on a few threads that share the rate. Posts that fail
//! are counted, never retried: a failure is the server's answer.

use crate::sys::now_ns;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Threads sharing a poster's rate: one post takes a connect, a commit and a close.
const THREADS: u32 = 4;

/// Where and as whom to post.
#[derive(Debug, Clone)]
pub struct Api {
    /// `host:port` of the admin listener.
    pub addr: String,
    pub key: String,
}

/// A running poster; stops when dropped or after its duration.
pub struct Poster {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub posted: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

impl Poster {
    /// Posts probes of `stream` into `room` at `rate` a second for `duration`.
    pub fn start(api: &Api, room: &str, stream: u32, rate: f64, duration: Duration) -> Poster {
        let stop = Arc::new(AtomicBool::new(false));
        let (posted, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let threads = (0..THREADS)
            .map(|_| {
                let (api, room) = (api.clone(), room.to_owned());
                let (stop, posted, failed, next) = (stop.clone(), posted.clone(), failed.clone(), next.clone());
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) && start.elapsed() < duration {
                        let n = next.fetch_add(1, Relaxed);
                        // Paced from the start, not from the last post: a slow answer is
                        // caught up by the other threads, not lost from the rate.
                        let due = start + Duration::from_secs_f64(n as f64 / rate.max(0.001));
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        let text = format!("lt {stream} {n} {}", now_ns());
                        match post(&api, &room, &text, &format!("api-{stream}-{n}")) {
                            Ok(()) => posted.fetch_add(1, Relaxed),
                            Err(_) => failed.fetch_add(1, Relaxed),
                        };
                    }
                })
            })
            .collect();
        Poster { stop, threads, posted, failed }
    }

    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One post; Ok when the API answered 2xx (stored, or a duplicate).
fn post(api: &Api, room: &str, text: &str, id: &str) -> std::io::Result<()> {
    let body = serde_json::json!({ "text": text, "id": id }).to_string();
    let mut s = TcpStream::connect(&api.addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = format!(
        "POST /api/v1/rooms/{room}/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        api.addr,
        api.key,
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    let mut answer = Vec::with_capacity(256);
    s.read_to_end(&mut answer)?;
    match answer.get(9..10) {
        Some(b"2") => Ok(()),
        _ => Err(std::io::Error::other(String::from_utf8_lossy(&answer).into_owned())),
    }
}
