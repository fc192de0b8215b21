//! The guard's relays: a few threads that carry a complete request head from the
//! guard to its site's tiny_http (transport/upstream.rs) over the Unix socket, read
//! the whole response (bounded in size and time), and hand it back to the guard
//! through a channel, waking its `poll` through a socket pair.
//!
//! The relays block on tiny_http so the guard's loop never does, and their number
//! bounds how many connections tiny_http (a thread each) ever holds. A relay never
//! touches a client's socket: the guard writes the response, so TLS, non-blocking
//! writes and keep-alive stay the guard's. It never touches chat state.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::transport::http;
use crate::transport::upstream::Upstream;

/// Relay threads per HTTP listener: at most this many requests are with tiny_http at
/// once (the page's answers come from memory, so a few keep up with a browser's
/// parallel loads).
pub const RELAYS: usize = 4;
/// Request heads waiting for a relay; past it the guard answers 503 itself.
const QUEUE: usize = 1024;
/// Largest response read from tiny_http (the page's files are far smaller).
const MAX_RESPONSE: u64 = 32 * 1024 * 1024;
/// Longest a relay waits on one read or write of tiny_http's socket.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A response for the guard's client `id`.
#[derive(Debug)]
pub struct Done {
    pub id: u64,
    pub response: Vec<u8>,
}

struct Job {
    id: u64,
    request: Vec<u8>,
}

/// One guard's relay pool. Dropping it ends its threads once their jobs are done.
pub struct Relay {
    jobs: Sender<Job>,
    done: Receiver<Done>,
    /// Readable when a response is waiting in `done`.
    wake: UnixStream,
}

impl Relay {
    /// Starts `threads` relays to `upstream`, named after the guard's thread.
    pub fn start(name: &str, upstream: Arc<Upstream>, threads: usize) -> io::Result<Relay> {
        let (jobs, jobs_rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        // Bounded by the jobs queued or in flight.
        let (done_tx, done) = crossbeam_channel::unbounded();
        let (wake, ring) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        ring.set_nonblocking(true)?;
        // One descriptor shared by the relays, not one each.
        let ring = Arc::new(ring);
        for i in 0..threads {
            let (jobs_rx, done_tx, upstream, ring) = (jobs_rx.clone(), done_tx.clone(), upstream.clone(), ring.clone());
            thread::Builder::new().name(format!("{name}-relay-{i}")).spawn(move || {
                for job in jobs_rx {
                    let response = fetch(&upstream, &job.request);
                    if done_tx.send(Done { id: job.id, response }).is_err() {
                        return;
                    }
                    // A full socket buffer already wakes the guard.
                    let _ = (&*ring).write(&[1]);
                }
            })?;
        }
        Ok(Relay { jobs, done, wake })
    }

    /// Queues `request` for client `id`; false when the queue is full.
    pub fn submit(&self, id: u64, request: Vec<u8>) -> bool {
        self.jobs.try_send(Job { id, request }).is_ok()
    }

    /// The descriptor the guard polls for finished responses.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The responses ready now.
    pub fn finished(&self) -> Vec<Done> {
        let mut buf = [0u8; 256];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        self.done.try_iter().collect()
    }
}

/// tiny_http's response to `request`, or a 502/503 the guard can send instead.
fn fetch(upstream: &Upstream, request: &[u8]) -> Vec<u8> {
    match exchange(upstream.path(), request) {
        Ok(response) => response,
        Err(e) => {
            log::warn!("HTTP relay: no answer from tiny_http: {e}");
            if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound) {
                upstream.lost();
                return http::plain(503, "the page server is restarting; try again\n");
            }
            http::plain(502, "the page server did not answer\n")
        }
    }
}

fn exchange(path: &Path, request: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    (&mut stream).take(MAX_RESPONSE + 1).read_to_end(&mut response)?;
    if response.is_empty() || response.len() as u64 > MAX_RESPONSE {
        return Err(io::Error::other(format!("a response of {} bytes", response.len())));
    }
    Ok(response)
}
