//! One connection's socket as seen by writers: the shared [`Conn`] handle and its
//! bounded outbox of frames waiting to be written.
//!
//! Every byte the server sends on a WebSocket goes through [`Conn`]: the dispatcher's
//! broadcasts and the connection thread's pongs and close frames alike. The outbox
//! lock is held for each append and each write, so frames never interleave (one
//! writer at a time). Writes use `sendmsg` with `MSG_DONTWAIT` on the one shared file
//! descriptor, so they never block; the connection thread reads the same fd with
//! `MSG_DONTWAIT` too and sleeps in `poll` (`transport::wait`), so the socket itself
//! can stay in blocking mode. Pending frames are written together in one `sendmsg`
//! (coalescing).
//! This module never decides policy (who is slow, when to close): callers do.
//!
//! A TLS connection keeps its rustls session here too, behind the same lock, so the
//! session has one writer at a time as the socket does. Frames wait unencrypted (the
//! shared bytes every receiver holds); a flush seals a bounded slice of them into TLS
//! records ([`SEAL_AHEAD`]) and writes the records with the same non-blocking
//! `sendmsg`. The reader thread reads ciphertext from the socket without the lock and
//! takes it only to hand the bytes to the session ([`Conn::tls_receive`]).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::ServerConnection;

use crate::delivery::sse::SseStream;
use crate::protocol::deflate::Agreed;
use crate::protocol::sse;
use crate::protocol::wire::{self, Frame};
use crate::protocol::CloseReason;

/// A connection's id, unique for the life of the process.
pub type ConnId = u64;

/// Most frames handed to one `sendmsg`.
const MAX_IOV: usize = 64;

/// Ciphertext a TLS connection may have sealed but not yet written before more frames
/// are sealed: bounds the sealed (and no longer discardable) part of the backlog.
pub const SEAL_AHEAD: usize = 64 * 1024;

/// Slots a drained queue keeps. A burst (a join storm's presence events, a long
/// resume) grows a queue far past what the connection needs afterwards; such a queue
/// is freed once it has been written out, or every idle connection would keep it.
const KEEP_SLOTS: usize = 16;

/// How long a client that has its close frame gets to answer before the socket is cut.
pub const LINGER: Duration = Duration::from_secs(2);

/// What a write attempt achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Nothing is left to write.
    Done,
    /// The socket's buffer is full; the rest waits for the next attempt.
    Pending,
    /// The socket is gone (reset, closed); nothing more can be written.
    Failed,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A close frame is already queued or sent: nothing may follow it.
    Closing,
}

#[derive(Debug, Default)]
struct Outbox {
    /// What goes on the socket next: frames (plain) or sealed TLS records.
    queue: VecDeque<Frame>,
    /// Bytes of `queue[0]` already written.
    head_written: usize,
    /// Bytes in `queue` not yet written.
    pending: usize,
    /// A close frame has been queued: data frames are refused from now on.
    closing: bool,
    /// The socket failed or was shut down.
    dead: bool,
    /// The largest frame queued since the queue was last empty.
    largest: usize,
    /// Bytes of requested answers (history pages) queued since the queue was last empty.
    answers: usize,
    /// A TLS connection's session and the frames not yet sealed into it.
    tls: Option<Box<Sealer>>,
}

/// A TLS session and the frames waiting to be encrypted by it. The frames count in
/// `Outbox::pending` by their length; once sealed, by their records' length.
#[derive(Debug)]
struct Sealer {
    session: ServerConnection,
    frames: VecDeque<Frame>,
    unsealed: usize,
}

impl Outbox {
    /// Queues bytes for the socket, sealing them first on a TLS connection.
    fn enqueue(&mut self, frame: Frame) {
        self.pending += frame.len();
        match &mut self.tls {
            Some(tls) => {
                tls.unsealed += frame.len();
                tls.frames.push_back(frame);
            }
            None => self.queue.push_back(frame),
        }
    }

    /// TLS: seals waiting frames while less than [`SEAL_AHEAD`] ciphertext is queued.
    fn seal(&mut self) -> io::Result<()> {
        let Some(tls) = &mut self.tls else { return Ok(()) };
        let sealed_waiting = self.pending - tls.unsealed;
        if tls.frames.is_empty() || sealed_waiting >= SEAL_AHEAD {
            return Ok(());
        }
        let mut plain = 0;
        while plain < SEAL_AHEAD {
            let Some(frame) = tls.frames.pop_front() else { break };
            // No buffer limit is set, so the session takes every byte.
            tls.session.writer().write_all(&frame)?;
            plain += frame.len();
        }
        tls.unsealed -= plain;
        self.pending -= plain;
        shrink_drained(&mut tls.frames);
        self.drain_session()
    }

    /// Moves whatever records the session has to send (sealed data, alerts, tickets,
    /// key updates) to the end of the socket queue, in the session's order.
    fn drain_session(&mut self) -> io::Result<()> {
        let Some(tls) = &mut self.tls else { return Ok(()) };
        let mut records = Vec::new();
        while tls.session.wants_write() {
            tls.session.write_tls(&mut records)?;
        }
        if !records.is_empty() {
            self.pending += records.len();
            self.queue.push_back(Bytes::from(records));
        }
        Ok(())
    }

    fn fail(&mut self) -> Flush {
        self.dead = true;
        self.queue.clear();
        if let Some(tls) = &mut self.tls {
            tls.frames.clear();
            tls.unsealed = 0;
        }
        self.pending = 0;
        Flush::Failed
    }
}

/// Who is on the other end: the socket's peer, and the client behind it when the
/// peer is a trusted proxy that named one. Logs print the client first.
#[derive(Clone)]
pub struct Peer {
    pub socket: SocketAddr,
    client: OnceLock<IpAddr>,
}

impl Peer {
    /// The client's address: the one a trusted proxy named, else the socket's.
    pub fn ip(&self) -> IpAddr {
        self.client.get().copied().unwrap_or(self.socket.ip())
    }

    /// Records the client a trusted proxy named (once; later calls are ignored).
    pub fn set_client(&self, ip: IpAddr) {
        if ip != self.socket.ip() {
            let _ = self.client.set(ip);
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.client.get() {
            Some(client) => write!(f, "{client} via {}", self.socket),
            None => write!(f, "{}", self.socket),
        }
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Bytes of requested answers (a resume or scroll-back in several pages) that do not
/// count towards the slow-consumer backlog: a reading client is never cut for the size
/// of what it asked for, and a client that asks without reading is still bounded.
pub const ANSWER_ALLOWANCE: usize = 16 << 20;

/// A WebSocket connection's socket, shared by its reader thread, the dispatcher and
/// the writer shard that owns it.
#[derive(Debug)]
pub struct Conn {
    pub id: ConnId,
    pub peer: Peer,
    stream: TcpStream,
    out: Mutex<Outbox>,
    /// Set while a writer shard has this connection on its to-flush list (the
    /// connections a batch touched, each written once after the batch is queued).
    dirty: AtomicBool,
    /// Why the connection is ending; the first to decide wins.
    reason: OnceLock<CloseReason>,
    /// Set when the socket turned out to be an SSE stream (`GET /sse`).
    sse: OnceLock<SseStream>,
    /// What permessage-deflate the handshake agreed, if any: the writer shards send
    /// this connection the compressed form of what they write.
    deflate: OnceLock<Agreed>,
}

impl Conn {
    pub fn new(id: ConnId, stream: TcpStream, peer: SocketAddr) -> Conn {
        Conn {
            id,
            peer: Peer { socket: peer, client: OnceLock::new() },
            stream,
            out: Mutex::new(Outbox::default()),
            dirty: AtomicBool::new(false),
            reason: OnceLock::new(),
            sse: OnceLock::new(),
            deflate: OnceLock::new(),
        }
    }

    /// Records that the handshake agreed permessage-deflate (once, before registering).
    pub fn set_deflate(&self, agreed: Agreed) {
        let _ = self.deflate.set(agreed);
    }

    /// The permessage-deflate agreed with this connection's client, if any.
    pub fn deflate(&self) -> Option<&Agreed> {
        self.deflate.get()
    }

    /// Makes this connection an SSE stream: frames are queued as events from now on.
    pub fn make_sse(&self, stream: SseStream) {
        let _ = self.sse.set(stream);
    }

    /// The SSE state, when this connection is an SSE stream.
    pub fn sse(&self) -> Option<&SseStream> {
        self.sse.get()
    }

    /// The socket, for the connection thread's reads and its `poll`.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn lock(&self) -> MutexGuard<'_, Outbox> {
        // A panic while holding the lock leaves a consistent queue; keep serving.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame without writing. Returns the backlog: the bytes waiting, less
    /// the largest frame queued since the queue was last empty. One large frame (a
    /// long history) therefore never makes a reading client look slow; a client that
    /// stopped reading still is, as soon as enough queues up beside it.
    pub fn push(&self, frame: Frame) -> Result<usize, Refused> {
        self.push_counted(frame, false)
    }

    /// Queues a page of an answer the client asked for: like [`push`](Self::push),
    /// but up to [`ANSWER_ALLOWANCE`] bytes of such pages are not counted as backlog.
    pub fn push_answer(&self, frame: Frame) -> Result<usize, Refused> {
        self.push_counted(frame, true)
    }

    fn push_counted(&self, frame: Frame, answer: bool) -> Result<usize, Refused> {
        let mut out = self.lock();
        if out.closing || out.dead {
            return Err(Refused::Closing);
        }
        out.largest = out.largest.max(frame.len());
        if answer {
            out.answers += frame.len();
        }
        out.enqueue(frame);
        let exempt = out.largest.max(out.answers.min(ANSWER_ALLOWANCE));
        Ok(out.pending.saturating_sub(exempt))
    }

    /// Queues several parts that must stay together (an SSE event's `id:` line and
    /// data), as [`Conn::push`] does. Over TLS they are joined into one frame first: a
    /// frame is sealed whole, so a close that drops what is not sealed yet never leaves
    /// half an event (an `id:` whose data never comes) on the stream.
    pub fn push_parts<const N: usize>(&self, parts: [Frame; N]) -> Result<usize, Refused> {
        let mut out = self.lock();
        if out.closing || out.dead {
            return Err(Refused::Closing);
        }
        if out.tls.is_some() {
            let joined = Frame::from(parts.concat());
            out.largest = out.largest.max(joined.len());
            out.enqueue(joined);
        } else {
            for frame in parts {
                out.largest = out.largest.max(frame.len());
                out.enqueue(frame);
            }
        }
        Ok(out.pending.saturating_sub(out.largest))
    }

    /// Queues a frame and writes what the socket takes now.
    pub fn send(&self, frame: Frame) -> Result<Flush, Refused> {
        self.push(frame)?;
        Ok(self.flush())
    }

    /// Records why the connection ends, unless a reason was already recorded.
    pub fn set_reason(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
    }

    /// The recorded reason, if any.
    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    /// Marks the connection as queued for a flush; true when it was not already.
    pub fn mark_dirty(&self) -> bool {
        !self.dirty.swap(true, Ordering::AcqRel)
    }

    pub fn clear_dirty(&self) {
        self.dirty.store(false, Ordering::Release);
    }

    /// Bytes waiting to be written.
    pub fn backlog(&self) -> usize {
        self.lock().pending
    }

    /// Queues a close frame after everything already queued (or, with `discard`, after
    /// only the frame being written, dropping the rest) and refuses data from then on.
    /// Returns false when a close was already queued.
    pub fn close(&self, code: u16, reason: &str, discard: bool) -> bool {
        let mut out = self.lock();
        if out.closing {
            return false;
        }
        out.closing = true;
        if discard {
            let dropped: usize = match &mut out.tls {
                // Sealed records must all go out (the stream would not decrypt
                // otherwise); only frames not yet sealed are dropped.
                Some(tls) => {
                    tls.unsealed = 0;
                    tls.frames.drain(..).map(|f| f.len()).sum()
                }
                None => {
                    let mut keep = usize::from(out.head_written > 0);
                    // An SSE event is several parts: keep the rest of the one being written.
                    if keep == 1 && self.sse.get().is_some() {
                        keep = out.queue.iter().position(|f| sse::ends_event(f)).map_or(out.queue.len(), |i| i + 1);
                    }
                    out.queue.drain(keep..).map(|f| f.len()).sum()
                }
            };
            out.pending -= dropped;
        }
        let frame = match self.sse.get() {
            Some(_) => sse::close_event(code, reason).data,
            None => wire::close_frame(code, reason),
        };
        out.enqueue(frame);
        true
    }

    /// Writes as much of the queue as the socket takes without blocking.
    pub fn flush(&self) -> Flush {
        let mut out = self.lock();
        loop {
            if out.dead {
                return Flush::Failed;
            }
            if out.seal().is_err() {
                return out.fail();
            }
            if out.queue.is_empty() {
                return Flush::Done;
            }
            match self.write_some(&out) {
                Ok(n) => consume(&mut out, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return out.fail(),
            }
        }
    }

    /// Flushes until done, failed, or `deadline`, waiting for the socket to drain.
    /// Only for connection threads and shutdown: the dispatcher never waits.
    pub fn flush_until(&self, deadline: Instant) -> Flush {
        loop {
            match self.flush() {
                Flush::Pending => {}
                done => return done,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Flush::Pending;
            }
            wait_writable(&[self.stream.as_raw_fd()], left.min(Duration::from_millis(100)));
        }
    }

    /// Ends the connection at once: reads and writes fail from now on, which also
    /// wakes the connection thread from its `poll` (or an SSE stream's timed read).
    pub fn abort(&self) {
        self.lock().dead = true;
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Ends the write side after the queue has been written (the peer sees EOF); a
    /// TLS connection first sends its `close_notify` (best effort, without blocking).
    pub fn shutdown_write(&self) {
        let tls = {
            let mut out = self.lock();
            let tls = out.tls.as_mut().map(|tls| tls.session.send_close_notify()).is_some();
            let _ = out.drain_session();
            tls
        };
        if tls {
            self.flush();
        }
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Makes this a TLS connection: `session` has completed its handshake on this
    /// socket. Returns the plaintext the client already sent with its last handshake
    /// flight (the HTTP upgrade request often rides along).
    pub fn install_tls(&self, mut session: ServerConnection) -> io::Result<Vec<u8>> {
        session.set_buffer_limit(None);
        let mut early = Vec::new();
        drain_plaintext(&mut session, &mut early)?;
        let mut out = self.lock();
        out.tls = Some(Box::new(Sealer { session, frames: VecDeque::new(), unsealed: 0 }));
        out.drain_session()?;
        Ok(early)
    }

    /// TLS: hands ciphertext the reader thread read to the session and appends the
    /// plaintext it yields to `plain`. Anything the session must answer (an alert, a
    /// key update) is queued and written without blocking. Returns true once the peer
    /// sent `close_notify`. A plain connection passes the bytes through.
    pub fn tls_receive(&self, mut ciphertext: &[u8], plain: &mut Vec<u8>) -> io::Result<bool> {
        let mut out = self.lock();
        let Some(tls) = &mut out.tls else {
            plain.extend_from_slice(ciphertext);
            return Ok(false);
        };
        let mut closed = false;
        let mut failure = None;
        while !ciphertext.is_empty() && failure.is_none() {
            tls.session.read_tls(&mut ciphertext)?;
            match tls.session.process_new_packets() {
                Ok(state) => closed |= state.peer_has_closed(),
                Err(e) => failure = Some(e),
            }
            closed |= drain_plaintext(&mut tls.session, plain)?;
        }
        // The session may owe the peer records now: a fatal alert, or a key update.
        let drained = out.drain_session();
        drop(out);
        self.flush();
        drained?;
        match failure {
            Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            None => Ok(closed),
        }
    }

    pub fn raw_fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    fn write_some(&self, out: &Outbox) -> io::Result<usize> {
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_IOV];
        let mut n = 0;
        for (i, frame) in out.queue.iter().take(MAX_IOV).enumerate() {
            let bytes = if i == 0 { &frame[out.head_written..] } else { &frame[..] };
            iov[i] = libc::iovec { iov_base: bytes.as_ptr() as *mut _, iov_len: bytes.len() };
            n += 1;
        }
        // SAFETY: msghdr is plain data, for which all-zero bytes are a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = n as _;
        // SAFETY: `msg` points at `n` iovecs, each into a frame that `out` keeps alive
        // (the lock is held) for the duration of the call; the fd is this Conn's own.
        let rc = unsafe { libc::sendmsg(self.stream.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }
}

/// Moves the session's decrypted bytes into `plain`; true when the peer has closed.
fn drain_plaintext(session: &mut ServerConnection, plain: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        match session.reader().read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => plain.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

fn consume(out: &mut Outbox, mut n: usize) {
    out.pending -= n;
    if out.pending == 0 {
        out.largest = 0;
        out.answers = 0;
    }
    while n > 0 {
        let head_left = out.queue[0].len() - out.head_written;
        if n >= head_left {
            n -= head_left;
            out.queue.pop_front();
            out.head_written = 0;
        } else {
            out.head_written += n;
            n = 0;
        }
    }
    shrink_drained(&mut out.queue);
}

/// Frees an empty queue's slots when a burst had grown it past [`KEEP_SLOTS`].
fn shrink_drained(queue: &mut VecDeque<Frame>) {
    if queue.is_empty() && queue.capacity() > KEEP_SLOTS {
        *queue = VecDeque::new();
    }
}

/// Waits until at least one of `fds` can take more bytes, or `timeout`. Returns the
/// indexes of the writable ones.
pub fn wait_writable(fds: &[i32], timeout: Duration) -> Vec<usize> {
    let mut polls: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLOUT, revents: 0 }).collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `polls` is a valid array of pollfd for the length given.
    let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as _, ms) };
    if rc <= 0 {
        return Vec::new();
    }
    polls.iter().enumerate().filter(|(_, p)| p.revents != 0).map(|(i, _)| i).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A connected loopback pair: (client, server).
    pub(crate) fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (client, server)
    }

    fn pair() -> (Conn, TcpStream) {
        let (client, server) = tcp_pair();
        let peer = server.peer_addr().unwrap();
        (Conn::new(1, server, peer), client)
    }

    #[test]
    fn coalesced_frames_arrive_whole_and_in_order() {
        let (conn, mut client) = pair();
        for i in 0..100u8 {
            conn.push(wire::text_frame(&[i; 10])).unwrap();
        }
        assert_eq!(conn.flush(), Flush::Done);
        let mut buf = vec![0u8; 1200];
        client.read_exact(&mut buf).unwrap();
        for i in 0..100usize {
            assert_eq!(&buf[i * 12..i * 12 + 2], &[0x81, 10]);
            assert_eq!(buf[i * 12 + 2], i as u8);
        }
    }

    #[test]
    fn a_queue_grown_by_a_burst_is_freed_once_written() {
        let (conn, mut client) = pair();
        for i in 0..100u8 {
            conn.push(wire::text_frame(&[i; 10])).unwrap();
        }
        assert!(conn.lock().queue.capacity() >= 100);
        assert_eq!(conn.flush(), Flush::Done);
        assert!(conn.lock().queue.capacity() <= KEEP_SLOTS, "{}", conn.lock().queue.capacity());
        client.read_exact(&mut [0u8; 1200]).unwrap();
        // A connection's usual few frames keep their slots.
        for _ in 0..2 {
            conn.send(wire::text_frame(b"x")).unwrap();
        }
        assert!(conn.lock().queue.capacity() > 0);
    }

    #[test]
    fn a_reader_that_stops_leaves_a_backlog_and_never_blocks() {
        let (conn, _client) = pair();
        let frame = wire::text_frame(&[b'x'; 60_000]);
        let mut last = Flush::Done;
        for _ in 0..200 {
            last = conn.send(frame.clone()).unwrap();
        }
        assert_eq!(last, Flush::Pending);
        assert!(conn.backlog() > 1_000_000);
    }

    #[test]
    fn one_large_frame_is_not_a_backlog() {
        let (conn, _client) = pair();
        let small = wire::text_frame(b"x");
        assert_eq!(conn.push(small.clone()).unwrap(), 0);
        let history = wire::text_frame(&vec![b'h'; 4 << 20]);
        assert_eq!(conn.push(history).unwrap(), small.len(), "the large frame is not counted");
        assert_eq!(conn.push(small.clone()).unwrap(), 2 * small.len());
    }

    #[test]
    fn close_with_discard_keeps_the_partly_written_frame() {
        let (conn, mut client) = pair();
        let frame = wire::text_frame(&[b'x'; 60_000]);
        while conn.send(frame.clone()).unwrap() != Flush::Pending {}
        conn.push(frame.clone()).unwrap();
        assert!(conn.close(1008, "slow consumer", true));
        assert_eq!(conn.push(frame.clone()), Err(Refused::Closing));
        // The reader drains: it must see whole frames, then the close frame, then EOF.
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            client.read_to_end(&mut all).unwrap();
            all
        });
        assert_eq!(conn.flush_until(Instant::now() + Duration::from_secs(10)), Flush::Done);
        conn.shutdown_write();
        let all = reader.join().unwrap();
        assert_eq!(&all[all.len() - 17..all.len() - 15], &[0x88, 15]);
        assert_eq!((all.len() - 17) % frame.len(), 0, "only whole frames before the close");
    }
}
