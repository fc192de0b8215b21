//! The WebSocket side's accept loop: admission by connection count (total and per IP),
//! then one small-stack thread per connection running [`connection::run`].
//!
//! Refusals past a limit are answered with HTTP 503/429 by one refuser thread, so the
//! accept loop never blocks on a client and a refused connection costs no thread of
//! its own. This module never touches chat state.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tungstenite::http::StatusCode;

use crate::delivery::outbox::Conn;
use crate::shutdown::Shutdown;
use crate::transport::connection::{self, ConnContext};
use crate::transport::handshake::Refusal;

/// Refused connections waiting for their HTTP answer; more are dropped unanswered.
const REFUSE_QUEUE: usize = 256;
/// Time a refused client gets to send its request before the answer.
const REFUSE_READ: Duration = Duration::from_millis(500);

/// Counts live connections, in total and per IP address.
#[derive(Debug, Default)]
pub struct Admission {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A held connection slot; released when dropped (when the connection thread ends).
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        let mut map = self.admission.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    /// Takes a slot for `ip` or says which limit stops it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Slot, Refusal> {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if self.total.load(Ordering::Acquire) >= max_total {
            return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server at its connection limit", "total limit"));
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address",
                format!("per-IP limit for {ip}"),
            ));
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::AcqRel);
        Ok(Slot { admission: self.clone(), ip })
    }

    pub fn live(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

/// Pending connections the kernel queues before `accept`: std binds with 128, which
/// drops SYNs when thousands of clients arrive at once (each retried only after 1 s).
const LISTEN_BACKLOG: i32 = 4096;

/// Raises the listen backlog of an already-listening socket (listen(2) may be called
/// again to change it; the kernel caps it at `net.core.somaxconn`).
pub fn raise_backlog(listener: &TcpListener) {
    // SAFETY: listen(2) on a socket this process owns and is already listening.
    unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
}

/// Accepts until shutdown. `max_connections` is the effective ceiling computed at start.
pub fn accept_loop(listener: TcpListener, ctx: Arc<ConnContext>, max_connections: usize, shutdown: Shutdown) {
    raise_backlog(&listener);
    let admission = Arc::new(Admission::default());
    let (refuse_tx, refuse_rx) = crossbeam_channel::bounded(REFUSE_QUEUE);
    let refuser = thread::Builder::new()
        .name("ws-refuser".into())
        .spawn(move || refuser(refuse_rx))
        .expect("spawning the refuser thread at start");
    // Closing the listening socket's read side wakes `accept` when shutdown fires. The
    // watcher shuts down its own duplicate: the loop may drop `listener` first, and a
    // bare descriptor number could by then name another file.
    let own = listener.try_clone().expect("duplicating the listening socket at start");
    let watcher = shutdown.clone();
    thread::Builder::new()
        .name("ws-accept-stop".into())
        .spawn(move || {
            watcher.wait();
            // SAFETY: shutdown(2) on `own`, a descriptor this closure owns until it returns.
            unsafe { libc::shutdown(own.as_raw_fd(), libc::SHUT_RD) };
        })
        .expect("spawning the accept watcher at start");

    let next_id = AtomicU64::new(1);
    let stack = ctx.cfg.conn_stack_bytes;
    let per_ip = ctx.cfg.max_connections_per_ip;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(_) if shutdown.is_fired() => break,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shutdown.is_fired() {
            break;
        }
        let slot = match admission.admit(peer.ip(), max_connections, per_ip) {
            Ok(slot) => slot,
            Err(r) => {
                refuse(&refuse_tx, stream, r, &ctx);
                continue;
            }
        };
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id, stream, peer));
        let thread_ctx = ctx.clone();
        let thread_conn = conn.clone();
        let spawned = crate::transport::stack::spawn(&format!("conn-{id}"), stack, move || {
            let _slot = slot;
            connection::run(thread_conn, &thread_ctx);
        });
        if let Err(e) = spawned {
            log::warn!("cannot spawn a connection thread ({e}): refusing {peer}");
            let r =
                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "server at its connection limit", "thread spawn failed");
            if let Ok(stream) = conn.stream().try_clone() {
                refuse(&refuse_tx, stream, r, &ctx);
            }
        }
    }
    drop(refuse_tx);
    let _ = refuser.join();
    log::info!("accept loop stopped with {} connections live", admission.live());
}

fn refuse(tx: &Sender<(TcpStream, Refusal)>, stream: TcpStream, r: Refusal, ctx: &ConnContext) {
    r.record(&stream.peer_addr().ok(), &ctx.metrics);
    if let Err(TrySendError::Full(_)) = tx.try_send((stream, r)) {
        log::warn!("refusal queue full: dropping a connection unanswered");
    }
}

/// Answers refused connections one at a time: read the request (briefly), write the
/// HTTP refusal, close.
fn refuser(rx: Receiver<(TcpStream, Refusal)>) {
    let mut buf = [0u8; 2048];
    for (mut stream, r) in rx {
        let deadline = Instant::now() + REFUSE_READ;
        let mut seen: Vec<u8> = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16 * 1024 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.set_write_timeout(Some(REFUSE_READ));
        let _ = stream.write_all(&r.to_bytes());
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}
