//! The WebSocket side's accept loop: admission by connection count (total and per IP),
//! then one small-stack thread per connection running [`connection::run`].
//!
//! Admission itself is transport/admission.rs. Refusals past a limit are answered with HTTP 503/429 by one refuser thread, so the
//! accept loop never blocks on a client and a refused connection costs no thread of
//! its own. This module never touches chat state.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tungstenite::http::StatusCode;

use crate::delivery::outbox::Conn;
use crate::shutdown::Shutdown;
use crate::transport::connection;
use crate::transport::context::ConnContext;
use crate::transport::handshake::Refusal;

/// Refused connections waiting for their HTTP answer; more are dropped unanswered.
const REFUSE_QUEUE: usize = 256;
/// Time a refused client gets to send its request before the answer.
const REFUSE_READ: Duration = Duration::from_millis(500);

/// Pending connections the kernel queues before `accept`: std binds with 128, which
/// drops SYNs when thousands of clients arrive at once (each retried only after 1 s).
const LISTEN_BACKLOG: i32 = 4096;

/// Raises the listen backlog of an already-listening socket (listen(2) may be called
/// again to change it; the kernel caps it at `net.core.somaxconn`).
pub fn raise_backlog(listener: &TcpListener) {
    // SAFETY: listen(2) on a socket this process owns and is already listening.
    unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
}

/// Starts the accept loop (thread `ws-accept`) and its helpers, all before returning,
/// so that a failure to start them (descriptors or threads short) is an error at start,
/// never a listener that silently dies later. `max_connections` is the effective
/// ceiling computed at start.
pub fn start_accepting(
    listener: TcpListener,
    ctx: Arc<ConnContext>,
    max_connections: usize,
    shutdown: Shutdown,
) -> std::io::Result<thread::JoinHandle<()>> {
    raise_backlog(&listener);
    let (refuse_tx, refuse_rx) = crossbeam_channel::bounded(REFUSE_QUEUE);
    let refuser = thread::Builder::new().name("ws-refuser".into()).spawn(move || refuser(refuse_rx))?;
    // Closing the listening socket's read side wakes `accept` when shutdown fires. The
    // watcher shuts down its own duplicate: the loop may drop `listener` first, and a
    // bare descriptor number could by then name another file.
    let own = listener.try_clone()?;
    let watcher = shutdown.clone();
    thread::Builder::new().name("ws-accept-stop".into()).spawn(move || {
        watcher.wait();
        // SAFETY: shutdown(2) on `own`, a descriptor this closure owns until it returns.
        unsafe { libc::shutdown(own.as_raw_fd(), libc::SHUT_RD) };
    })?;
    thread::Builder::new()
        .name("ws-accept".into())
        .spawn(move || accept_loop(listener, ctx, max_connections, shutdown, refuse_tx, refuser))
}

/// Accepts until shutdown.
fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ConnContext>,
    max_connections: usize,
    shutdown: Shutdown,
    refuse_tx: Sender<(TcpStream, Refusal)>,
    refuser: thread::JoinHandle<()>,
) {
    let admission = ctx.admission.clone();

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
        // Behind a trusted proxy the client's address is known only from the
        // handshake's headers: its per-IP check waits until then.
        let ip = (!crate::proxy::is_trusted(&ctx.cfg.trusted_proxies, peer.ip())).then_some(peer.ip());
        let slot = match admission.admit(ip, max_connections, per_ip) {
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
            connection::run(thread_conn, thread_ctx, slot);
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
