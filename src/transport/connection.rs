//! One WebSocket connection's threads: one for the handshake and the `welcome`, then a
//! fresh one for the read loop that turns frames into validated [`ClientMsg`]s for the
//! dispatcher (so the handshake's freed blocks leave with its thread, see [`run`]).
//! After the handshake no read blocks: the thread reads what the socket holds and sleeps in
//! `poll` on its one socket ([`wait`]) until more arrives, the client has been silent
//! too long or its token expires. A request for the fallback transport (`/sse`,
//! `/send`) is handed to [`super::sse`]
//! or [`super::send`] instead, once [`plain::read_route`] has read its head (over TLS
//! too: everything reads the connection's [`Inbound`] plaintext); after a `/send` the
//! connection may carry the client's next request (keep-alive).
//!
//! The thread owns its tungstenite `WebSocket` for reading only: every byte it sends
//! (pong, error, close) goes through the shared [`Conn`] outbox, so it and the
//! dispatcher never interleave frames. It answers `ping` and malformed input itself
//! and never touches room state.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error as WsError, HandshakeError, Message};

use crate::auth::now_s;
use crate::delivery::fanout;
use crate::delivery::outbox::{Conn, Flush};
use crate::dispatcher::Command;
use crate::protocol::deflate::InflateError;
use crate::protocol::wire;
use crate::protocol::CloseReason;
use crate::protocol::{parse_client, ClientMsg, ErrorCode, ParseLimits, ProtocolError, ServerMsg};
use crate::ratelimit::{Strikes, TokenBucket};
use crate::tls::{self, Tls};
use crate::transport::admission::Slot;
use crate::transport::context::{ban_of, ban_refusal, finish, linger, welcome, ConnContext};
use crate::transport::handshake::{self, Handshake, Refusal};
use crate::transport::hello::{self, HelloError};
use crate::transport::inbound::Inbound;
use crate::transport::inflate::{self, Unwrap};
use crate::transport::plain::{self, Route};
use crate::transport::wait::{self, Waited};

/// Window in which `rate_strikes` refusals close a connection.
const STRIKE_WINDOW: Duration = Duration::from_secs(10);
/// Longest wait for a handshake response or refusal to leave.
const HANDSHAKE_WRITE: Duration = Duration::from_secs(5);

/// Writes `bytes` through the outbox (sealed on TLS), waiting up to `wait` for them to
/// leave. Only before the connection is registered, or for its last words.
fn send_now(conn: &Conn, bytes: &[u8], wait: Duration) -> io::Result<()> {
    match conn.send(bytes::Bytes::copy_from_slice(bytes)) {
        Err(_) => Err(io::ErrorKind::BrokenPipe.into()),
        Ok(_) => match conn.flush_until(Instant::now() + wait) {
            Flush::Done => Ok(()),
            Flush::Pending => Err(io::ErrorKind::TimedOut.into()),
            Flush::Failed => Err(io::ErrorKind::BrokenPipe.into()),
        },
    }
}

/// The stream tungstenite sees. During the handshake it writes through the outbox
/// (the 101 or refusal response; sealed on TLS) and waits for it to leave;
/// afterwards its writes are discarded, because the thread sends its own pongs and
/// close frames through the outbox. It reads the connection's plaintext: blocking
/// (under the handshake timeout) during the handshake, never blocking afterwards,
/// when the read loop waits in [`wait::wait_readable`] instead.
struct ConnIo {
    input: Inbound,
    handshaking: bool,
    /// Bytes read before the handshake started (while routing), read again first.
    replay: io::Cursor<Vec<u8>>,
    /// With permessage-deflate: inflates compressed frames before tungstenite reads them.
    unwrap: Option<Box<Unwrap>>,
}

impl Read for ConnIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if (self.replay.position() as usize) < self.replay.get_ref().len() {
            let n = self.replay.read(buf)?;
            if self.replay.position() as usize == self.replay.get_ref().len() {
                // Read out: the request head must not stay on the heap for the
                // connection's life.
                self.replay = io::Cursor::default();
            }
            return Ok(n);
        }
        let input = &mut self.input;
        match &mut self.unwrap {
            _ if self.handshaking => input.read(buf),
            Some(unwrap) => unwrap.read(&mut |b| input.read_now(b), buf),
            None => input.read_now(buf),
        }
    }
}

impl Write for ConnIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.handshaking {
            send_now(self.input.conn(), buf, HANDSHAKE_WRITE)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs one connection from accept to close, holding its admission `slot`.
///
/// The handshake and the read loop run on two threads, one after the other: this one
/// does everything up to the registration ([`open`]), then starts a fresh thread for
/// the read loop ([`serve`]) and ends. The handshake allocates and frees hundreds of
/// small blocks (HTTP parsing, the identity, the `welcome`), and glibc keeps what a
/// thread frees in that thread's own cache (tcache, up to 7 blocks of each size) for
/// as long as the thread lives: about 3.7 KiB per idle connection, and glibc has no
/// switch to turn the cache off for one thread. A thread that ends hands its cache
/// back to the arenas, so ending the handshake's thread returns those blocks, while
/// the dispatcher and writer threads keep their caches. If no thread can be started,
/// the read loop runs here.
pub fn run(conn: Arc<Conn>, ctx: Arc<ConnContext>, mut slot: Slot) {
    let Some(opened) = open(&conn, &ctx, &mut slot) else { return };
    let name = format!("conn-{}", conn.id);
    let stack = ctx.cfg.conn_stack_bytes;
    let serve = move || {
        let _slot = slot;
        serve(opened, &conn, &ctx);
    };
    if let Err((e, serve)) = crate::transport::stack::try_spawn(&name, stack, serve) {
        log::debug!("no fresh thread for a read loop ({e}): it runs on its handshake's");
        serve();
    }
}

/// The read loop of an opened connection, to its end.
///
/// Kept shallow on purpose: every frame is handled in [`Reader::step`], below this
/// frame, so the thread sleeps (in [`Reader::read_until_closed`]) on the first pages
/// of its stack.
#[inline(never)]
fn serve(opened: Opened, conn: &Arc<Conn>, ctx: &ConnContext) {
    let Opened { ws, expires_at, uid, echo } = opened;
    let mut reader = Reader::new(ws, conn, ctx, expires_at, uid);
    reader.echo = echo;
    let reason = reader.read_until_closed();
    drop(reader);
    end(conn, ctx, reason);
}

/// A connection past its handshake, `welcome` and registration, on its way to the
/// read loop's thread. The WebSocket is boxed where the handshake made it: moved
/// whole, it would deepen the frames the idle thread sleeps on, and freed on the read
/// loop's thread it would sit in that thread's cache.
struct Opened {
    ws: Box<tungstenite::WebSocket<ConnIo>>,
    expires_at: Option<u64>,
    uid: Arc<str>,
    echo: bool,
}

/// Everything before the read loop: routing, the TLS and WebSocket handshakes, the
/// `welcome` and the registration. None when the connection ended here (a fallback
/// request, a refusal, a failed handshake, or a server shutting down).
#[inline(never)]
fn open(conn: &Arc<Conn>, ctx: &ConnContext, slot: &mut Slot) -> Option<Opened> {
    let cfg = &ctx.cfg;
    let stream = conn.stream();
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(cfg.handshake_timeout));
    let _ = stream.set_write_timeout(Some(cfg.handshake_timeout));

    let mut input = match &ctx.tls {
        Some(tls) => match tls_handshake(conn, tls, cfg.handshake_timeout) {
            Ok(early) => Inbound::tls(conn.clone(), early),
            Err(e) => {
                log::info!("TLS handshake with {} failed: {e}", conn.peer);
                linger(conn.stream());
                return None;
            }
        },
        None => Inbound::plain(conn.clone()),
    };
    // Requests are routed first: the fallback transport (`/sse`, `/send`) shares this
    // listener, over plain TCP and TLS alike.
    let replay = serve_plain(conn, ctx, &mut input, slot)?;
    let (mut ws, handshake) = handshake(conn, ctx, input, replay, slot)?;
    let _ = stream.set_write_timeout(None);
    ws.get_mut().handshaking = false;
    let admitted = match handshake {
        Handshake::Admitted(admitted) => admitted,
        // The conformance echo: the same reader, not registered, no welcome.
        Handshake::Echo => return Some(Opened { ws: Box::new(ws), expires_at: None, uid: Arc::from(""), echo: true }),
        // The identity comes in the first frame: known before anything is registered.
        Handshake::AwaitHello => {
            let admitted =
                hello::await_hello(&mut ws, conn, stream, cfg).and_then(|a| match ban_of(ctx, conn, &a.identity) {
                    Some(ban) => Err(HelloError::Banned(ban.refusal(crate::bans::now_ms()))),
                    None => Ok(a),
                });
            match admitted {
                Ok(admitted) => admitted,
                Err(e) => {
                    hello::refuse(conn, &e, &ctx.metrics);
                    return None;
                }
            }
        }
    };

    let _ = conn.send(welcome(&format!("c{}", conn.id), &admitted.identity, cfg));
    if ctx.commands.send(Command::Register { conn: conn.clone(), user: admitted.identity.clone() }).is_err() {
        end(conn, ctx, CloseReason::Shutdown);
        return None;
    }
    let uid = admitted.identity.id.clone();
    Some(Opened { ws: Box::new(ws), expires_at: admitted.expires_at, uid, echo: false })
}

/// The connection's last steps: record why it ends, tell the dispatcher, say goodbye.
fn end(conn: &Arc<Conn>, ctx: &ConnContext, reason: CloseReason) {
    conn.set_reason(reason);
    let reason = conn.reason().unwrap_or(reason);
    let _ = ctx.commands.send(Command::Gone { conn: conn.id });
    ctx.metrics.close(reason);
    finish(conn, reason);
}

/// Serves the fallback transport's requests on a plain connection, the next one too
/// while a `POST /send` keeps the connection alive. Returns the bytes read of a
/// WebSocket upgrade request (replayed to the handshake), or None once served.
fn serve_plain(conn: &Arc<Conn>, ctx: &ConnContext, input: &mut Inbound, slot: &mut Slot) -> Option<Vec<u8>> {
    let cfg = &ctx.cfg;
    let mut next = Vec::new();
    loop {
        let route = plain::read_route(input, next)?;
        let _ = conn.stream().set_read_timeout(Some(cfg.handshake_timeout));
        match route {
            Route::WebSocket(bytes) => return Some(bytes),
            // The stream's client is the one a trusted proxy names, as for a WebSocket
            // (the per-IP cap, logs, and open mode's kicks of addresses).
            Route::Sse(req) => match client_from_headers(conn, &req, ctx, slot) {
                Ok(()) => crate::transport::sse::run(conn.clone(), ctx, &req),
                Err(r) => plain::refuse(conn, &r, None, &ctx.metrics),
            },
            Route::Ticket(req, body) => crate::transport::sse::ticket(conn, ctx, &req, (body, input)),
            Route::Send(req, body) => {
                if let Some(rest) = crate::transport::send::run(conn, ctx, &req, (body, input)) {
                    // Kept alive: the next request may take as long as an idle HTTP connection.
                    let _ = conn.stream().set_read_timeout(Some(cfg.http_idle_timeout));
                    next = rest;
                    continue;
                }
            }
            Route::Upload(req, body) => crate::transport::upload::run(conn, ctx, &req, (body, input)),
            Route::File(req, rest) => {
                if crate::transport::files::run(conn, ctx, &req) {
                    let _ = conn.stream().set_read_timeout(Some(cfg.http_idle_timeout));
                    next = rest;
                    continue;
                }
            }
            Route::Preflight(req) => plain::preflight(conn, &req, cfg, &ctx.metrics),
            Route::Refused(r) => plain::refuse(conn, &r, None, &ctx.metrics),
        }
        return None;
    }
}

/// Performs the upgrade; on refusal or failure answers in plain HTTP and returns None.
#[inline(never)]
fn handshake(
    conn: &Arc<Conn>,
    ctx: &ConnContext,
    input: Inbound,
    replay: Vec<u8>,
    slot: &mut Slot,
) -> Option<(tungstenite::WebSocket<ConnIo>, Handshake)> {
    let cfg = &ctx.cfg;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(cfg.read_buffer_bytes)
        .write_buffer_size(0)
        .max_frame_size(Some(cfg.max_frame_bytes))
        .max_message_size(Some(cfg.max_frame_bytes));
    let mut admitted = None;
    let mut refused = None;
    let mut agreed = None;
    // tungstenite's callback type fixes the large error type; it is built once per refusal.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| match client_from_headers(conn, req, ctx, slot)
        .and_then(|()| handshake::admit(req, cfg))
        .and_then(|h| match &h {
            Handshake::Admitted(a) => ban_of(ctx, conn, &a.identity).map_or(Ok(h), |ban| Err(ban_refusal(&ban))),
            Handshake::AwaitHello | Handshake::Echo => Ok(h),
        }) {
        Ok(a) => {
            admitted = Some(a);
            agreed = handshake::deflate(req, cfg);
            if let Some(value) = agreed.as_ref().and_then(|a| a.response().parse().ok()) {
                resp.headers_mut().insert("sec-websocket-extensions", value);
            }
            Ok(resp)
        }
        Err(r) => {
            let response = r.to_response();
            refused = Some(r);
            Err(response)
        }
    };
    let io = ConnIo { input, handshaking: true, replay: io::Cursor::new(replay), unwrap: None };
    match tungstenite::accept_hdr_with_config(io, callback, Some(ws_config)) {
        Ok(mut ws) => {
            if let Some(agreed) = agreed {
                conn.set_deflate(agreed);
                ws.get_mut().unwrap = Some(Box::new(Unwrap::new(&agreed, cfg.max_frame_bytes)));
            }
            Some((ws, admitted.expect("the callback admitted this request")))
        }
        Err(HandshakeError::Failure(WsError::Http(_))) => {
            let r = refused.expect("an HTTP failure comes from our refusal");
            r.record(&conn.peer, &ctx.metrics);
            linger(conn.stream());
            None
        }
        Err(HandshakeError::Failure(WsError::Io(e))) => {
            log::debug!("handshake with {} failed: {e}", conn.peer);
            None
        }
        Err(HandshakeError::Failure(e)) => {
            // Not a WebSocket upgrade (a plain GET, a bad key...): say so in HTTP.
            let r = Refusal::new(
                tungstenite::http::StatusCode::BAD_REQUEST,
                "bad request: not a WebSocket upgrade",
                e.to_string(),
            );
            r.record(&conn.peer, &ctx.metrics);
            let _ = send_now(conn, &r.to_bytes(), HANDSHAKE_WRITE);
            conn.shutdown_write();
            linger(conn.stream());
            None
        }
        Err(HandshakeError::Interrupted(_)) => {
            log::info!("handshake with {} timed out", conn.peer);
            None
        }
    }
}

/// Behind a trusted proxy: the client the headers name becomes the connection's
/// address in logs, and is counted against the per-IP cap (429 past it).
fn client_from_headers(conn: &Conn, req: &Request, ctx: &ConnContext, slot: &mut Slot) -> Result<(), Refusal> {
    let cfg = &ctx.cfg;
    if !crate::proxy::is_trusted(&cfg.trusted_proxies, conn.peer.socket.ip()) {
        return Ok(());
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let client = crate::proxy::client_ip(
        conn.peer.socket.ip(),
        &cfg.trusted_proxies,
        header("x-forwarded-for"),
        header("x-real-ip"),
    );
    conn.peer.set_client(client);
    ctx.admission.admit_ip(slot, client, cfg.max_connections_per_ip)
}

/// The TLS handshake, before anything else is read: a client that speaks plain text
/// gets a plain HTTP 400; a garbage or truncated hello, or one that stalls, ends
/// within `timeout` (the socket's read timeout, set by the caller). Returns the
/// plaintext that arrived with the client's last flight.
fn tls_handshake(conn: &Conn, tls: &Tls, timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = conn.stream();
    let mut first = [0u8; 1];
    if stream.peek(&mut first)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != tls::HANDSHAKE_RECORD {
        let _ = stream.write_all(tls::PLAIN_REFUSAL);
        return Err(io::Error::new(io::ErrorKind::InvalidData, "plain text on the TLS port"));
    }
    let mut session = tls.session().map_err(io::Error::other)?;
    let deadline = Instant::now() + timeout;
    while session.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let _ = stream.set_read_timeout(Some(left));
        if session.complete_io(&mut stream)? == (0, 0) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    conn.install_tls(session)
}

/// What one look at the connection gave.
enum Step {
    /// A frame was handled; there may be more.
    Handled,
    /// Nothing more to read for now.
    Idle,
    /// The connection must end.
    Close(CloseReason),
}

/// An established WebSocket connection's reading side: frames in, validated
/// [`ClientMsg`]s out to the dispatcher, pongs and errors answered here.
struct Reader<'a> {
    ws: Box<tungstenite::WebSocket<ConnIo>>,
    conn: &'a Arc<Conn>,
    ctx: &'a ConnContext,
    expires_at: Option<u64>,
    /// Who the connection is: a message's files must be this user's uploads.
    uid: Arc<str>,
    limits: ParseLimits,
    bucket: TokenBucket,
    strikes: Strikes,
    last_heard: Instant,
    /// The conformance echo (`--autobahn-echo`): messages come back, nothing is parsed.
    echo: bool,
}

impl<'a> Reader<'a> {
    fn new(
        ws: Box<tungstenite::WebSocket<ConnIo>>,
        conn: &'a Arc<Conn>,
        ctx: &'a ConnContext,
        expires_at: Option<u64>,
        uid: Arc<str>,
    ) -> Reader<'a> {
        let cfg = &ctx.cfg;
        Reader {
            ws,
            conn,
            ctx,
            expires_at,
            uid,
            limits: ParseLimits { max_text_chars: cfg.max_text_chars },
            bucket: TokenBucket::new(cfg.rate_per_s, cfg.rate_burst),
            strikes: Strikes::new(cfg.rate_strikes, STRIKE_WINDOW),
            last_heard: Instant::now(),
            echo: false,
        }
    }

    /// Reads until the connection ends; returns why. Each time nothing is left to read,
    /// the thread gives back the stack pages the last frames touched and sleeps here,
    /// until bytes arrive, the client has been silent too long, or its token expires.
    fn read_until_closed(&mut self) -> CloseReason {
        // The first release also gives back the handshake's pages, the deepest of all.
        let stack = crate::transport::stack::Stack::current();
        let heartbeat_timeout = self.ctx.cfg.heartbeat_timeout;
        loop {
            if self.expires_at.is_some_and(|exp| now_s() >= exp) {
                return CloseReason::TokenExpired;
            }
            match self.step() {
                Step::Handled => continue,
                Step::Close(reason) => return reason,
                Step::Idle => {}
            }
            if let Some(stack) = &stack {
                stack.release_below_caller();
            }
            // Wake for whichever comes first: the silence timeout or the token's expiry.
            let silence_left = heartbeat_timeout.saturating_sub(self.last_heard.elapsed());
            let expiry_left =
                self.expires_at.map_or(Duration::MAX, |exp| Duration::from_secs(exp.saturating_sub(now_s())));
            let timeout = silence_left.min(expiry_left).max(Duration::from_millis(1));
            if wait::wait_readable(self.conn.stream(), timeout) == Waited::TimedOut
                && self.last_heard.elapsed() >= heartbeat_timeout
            {
                return CloseReason::HeartbeatTimeout;
            }
        }
    }

    /// Reads and handles one frame, if a whole one is there. Never inlined: the reading
    /// and handling run below the loop's frame, on pages given back when idle.
    #[inline(never)]
    fn step(&mut self) -> Step {
        let msg = match self.ws.read() {
            Ok(m) => m,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Step::Idle,
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => return Step::Handled,
            Err(e) => return Step::Close(classify(&e)),
        };
        self.last_heard = Instant::now();
        let (conn, ctx) = (self.conn, self.ctx);
        if self.echo {
            if let Some(reason) = echo(conn, &msg) {
                return Step::Close(reason);
            }
        }
        match msg {
            Message::Text(_) | Message::Binary(_) if self.echo => {}
            Message::Text(text) => {
                if let Some(reason) =
                    on_text(text.as_str(), conn, ctx, self.limits, &self.uid, &mut self.bucket, &mut self.strikes)
                {
                    return Step::Close(reason);
                }
            }
            Message::Binary(_) => {
                send_error(
                    conn,
                    ctx,
                    &ProtocolError::new(ErrorCode::BadJson, "binary frames are not supported: send JSON text"),
                );
            }
            Message::Ping(payload) => {
                let _ = conn.send(wire::pong_frame(&payload));
            }
            // Nothing answers a pong, so nothing would carry its ACK (transport/wait.rs).
            Message::Pong(_) => wait::ack_now(conn.stream()),
            Message::Frame(_) => {}
            // tungstenite hands on a close code RFC 6455 §7.4 does not allow (0–999,
            // 1004–1006, 1016–2999 unassigned, 5000 and up) as 1002: that is answered with
            // 1002, as is a client's own 1002; any other close with 1000.
            Message::Close(Some(frame)) if frame.code == CloseCode::Protocol => {
                return Step::Close(CloseReason::Protocol)
            }
            Message::Close(_) => return Step::Close(CloseReason::Client),
        }
        Step::Handled
    }
}

/// Longest the conformance echo waits for one answer to leave (the suite's large
/// messages fill the socket; no writer shard retries an unregistered connection).
const ECHO_WRITE: Duration = Duration::from_secs(30);

/// The conformance echo: a text or binary message goes back as it came, through the
/// outbox like every answer (compressed when the client negotiated it).
fn echo(conn: &Conn, msg: &Message) -> Option<CloseReason> {
    let frame = match msg {
        Message::Text(text) => wire::text_frame(text.as_bytes()),
        Message::Binary(data) => wire::binary_frame(data),
        _ => return None,
    };
    match fanout::send_compressed(conn, &frame) {
        Ok(Flush::Done) => None,
        Ok(Flush::Pending) if conn.flush_until(Instant::now() + ECHO_WRITE) == Flush::Done => None,
        Ok(Flush::Pending) => Some(CloseReason::SlowConsumer),
        Ok(Flush::Failed) | Err(_) => Some(CloseReason::SocketError),
    }
}

/// Handles one text frame; returns a reason when the connection must close.
fn on_text(
    text: &str,
    conn: &Arc<Conn>,
    ctx: &ConnContext,
    limits: ParseLimits,
    uid: &str,
    bucket: &mut TokenBucket,
    strikes: &mut Strikes,
) -> Option<CloseReason> {
    let msg = match parse_client(text, limits) {
        Ok(m) => m,
        Err(e) => {
            send_error(conn, ctx, &e);
            return None;
        }
    };
    if let ClientMsg::Ping { t } = &msg {
        // Keep-alives are never rate limited: a busy client must not look dead.
        let _ = conn.send(wire::encode(&ServerMsg::Pong { t: t.as_ref().map(|t| &*t.0) }));
        return None;
    }
    if !bucket.take() {
        let reference = msg.reference();
        let e = ProtocolError::new(
            ErrorCode::RateLimited,
            format!("slow down: at most {} messages per second", ctx.cfg.rate_per_s),
        )
        .with_ref(Some(reference));
        send_error(conn, ctx, &e);
        return strikes.strike().then_some(CloseReason::RateLimit);
    }
    let msg = match crate::transport::files::resolve(msg, uid, ctx) {
        Ok(m) => m,
        Err(e) => {
            send_error(conn, ctx, &e);
            return None;
        }
    };
    ctx.commands.send(Command::Client { conn: conn.id, msg }).err().map(|_| CloseReason::Shutdown)
}

fn send_error(conn: &Conn, ctx: &ConnContext, e: &ProtocolError) {
    ctx.metrics.error(e.code);
    let _ = conn.send(wire::encode(&e.to_server_msg()));
}

fn classify(e: &WsError) -> CloseReason {
    use tungstenite::error::{CapacityError, ProtocolError as P};
    match e {
        WsError::ConnectionClosed | WsError::AlreadyClosed => CloseReason::Client,
        WsError::Protocol(P::ResetWithoutClosingHandshake) => CloseReason::Client,
        WsError::Capacity(CapacityError::MessageTooLong { .. }) | WsError::Capacity(_) => CloseReason::TooBig,
        WsError::Utf8(_) => CloseReason::InvalidUtf8,
        WsError::Protocol(_) => CloseReason::Protocol,
        WsError::Io(e) => match inflate::inflate_error(e) {
            // A compressed message past the frame limit once inflated (a bomb, say).
            Some(InflateError::TooBig { .. }) => CloseReason::TooBig,
            Some(InflateError::Corrupt(_)) => CloseReason::Protocol,
            None => CloseReason::SocketError,
        },
        _ => CloseReason::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::outbox::tests::tcp_pair;

    #[test]
    fn the_replayed_request_head_is_freed_once_read_and_later_reads_never_block() {
        let (_client, server) = tcp_pair();
        let peer = server.peer_addr().unwrap();
        let head = b"GET /ws HTTP/1.1\r\n\r\n".to_vec();
        let mut conn_io = ConnIo {
            input: Inbound::plain(Arc::new(Conn::new(1, server, peer))),
            handshaking: true,
            replay: io::Cursor::new(head),
            unwrap: None,
        };
        let mut buf = [0u8; 10];
        assert_eq!(conn_io.read(&mut buf).unwrap(), 10);
        assert!(conn_io.replay.get_ref().capacity() > 0, "half read: kept");
        assert_eq!(conn_io.read(&mut buf).unwrap(), 10);
        assert_eq!(conn_io.replay.get_ref().capacity(), 0, "read out: freed");
        conn_io.handshaking = false;
        assert_eq!(conn_io.read(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }
}
