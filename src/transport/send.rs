//! The fallback transport's upstream: `POST /send?session=…` carries one client message
//! (a JSON object) or several (an array) into an SSE session, and is answered only
//! once what it carried has been handled and committed. The connection stays open for
//! the client's next request unless it asked to close (HTTP/1.1 keep-alive).
//!
//! Messages are validated, rate limited (the session's own bucket) and sent to the
//! dispatcher exactly as a WebSocket's frames are; every reply still goes down the
//! stream as it would on a WebSocket. The POST also gets a copy of its answers: the
//! `ack` or `error` of each message with an `id`, the errors about the others (matched
//! by type), and pongs. To know when the rest is done it sends a `ping` barrier after
//! its messages: the dispatcher answers it in order, after the commit of everything
//! before it. This module never touches chat state.

use std::collections::HashSet;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use tungstenite::handshake::server::Request;
use tungstenite::http::StatusCode;

use crate::auth;
use crate::config::AuthMode;
use crate::delivery::fanout;
use crate::delivery::sse::SseStream;
use crate::dispatcher::Command;
use crate::protocol::ServerMsg;
use crate::protocol::{parse_client, wire, ClientMsg, CloseReason, ErrorCode, ParseLimits, ProtocolError, RawJson};
use crate::transport::context::{ConnContext, Session};
use crate::transport::handshake::{check_origin, query_param, token, Refusal};
use crate::transport::plain;

/// Most messages one POST may carry (each still takes a rate-limit token).
pub const MAX_MESSAGES: usize = 100;
/// How long a POST waits for its answers before it says 504 (retry with the same ids).
const SEND_WAIT: Duration = Duration::from_secs(10);

static BARRIERS: AtomicU64 = AtomicU64::new(1);

/// Serves one `POST /send`. Returns the bytes already read of the next request when
/// the connection stays open for it (keep-alive); None when it was closed.
/// `body` is what was read of the body with the head; the rest comes from `input`.
pub fn run(
    conn: &Arc<crate::delivery::outbox::Conn>,
    ctx: &ConnContext,
    req: &Request,
    (body, input): (Vec<u8>, &mut impl Read),
) -> Option<Vec<u8>> {
    let cors = plain::cors_origin(req, &ctx.cfg);
    match handle(input, ctx, req, body) {
        Ok((status, json, rest)) => {
            let keep = plain::keeps_alive(req);
            let bytes = plain::response(status, "application/json", json.as_bytes(), cors.as_deref(), keep);
            if keep {
                return plain::reply(conn, bytes).then_some(rest);
            }
            plain::answer(conn, bytes);
        }
        Err(r) => plain::refuse(conn, &r, cors.as_deref(), &ctx.metrics),
    }
    None
}

fn refusal(status: StatusCode, body: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal::new(status, body, detail)
}

/// Checks the request, reads and runs its messages; the status and JSON answer, and
/// the bytes read past the body (the start of the next request).
fn handle(
    input: &mut impl Read,
    ctx: &ConnContext,
    req: &Request,
    body: Vec<u8>,
) -> Result<(StatusCode, String, Vec<u8>), Refusal> {
    check_origin(req, &ctx.cfg)?;
    let session = find_session(req, ctx)?;
    let (body, rest) = read_body(input, req, body, ctx.cfg.max_frame_bytes)?;
    let messages = split(&body)?;
    let stream = session.conn.sse().expect("sessions are SSE streams");
    let barrier = format!("\"send-{}\"", BARRIERS.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = crossbeam_channel::unbounded();
    stream.tap(barrier.clone(), tx);
    let mut wait = Waiting::default();
    let closed = submit(&session, stream, ctx, &messages, &mut wait, &barrier);
    let deadline = Instant::now() + SEND_WAIT;
    while !closed && !wait.done() {
        match rx.recv_deadline(deadline) {
            Ok(json) => wait.take(&json, &barrier),
            Err(_) => break,
        }
    }
    stream.untap(&barrier);
    let status = if closed || wait.done() { StatusCode::OK } else { StatusCode::GATEWAY_TIMEOUT };
    let answers: Vec<&str> = wait.answers.iter().map(|a| std::str::from_utf8(a).unwrap_or("null")).collect();
    Ok((status, format!("[{}]", answers.join(",")), rest))
}

/// The session named by `?session=` or `X-Natter-Session`, checked against the token
/// in token mode.
fn find_session(req: &Request, ctx: &ConnContext) -> Result<Arc<Session>, Refusal> {
    let id = query_param(req.uri().query().unwrap_or(""), "session")
        .or_else(|| req.headers().get("x-natter-session").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .ok_or_else(|| refusal(StatusCode::BAD_REQUEST, "bad request: which session? (?session=)", "no session"))?;
    let session = ctx
        .sessions
        .get(&id)
        .ok_or_else(|| refusal(StatusCode::NOT_FOUND, "no such session: open GET /sse again", "unknown session"))?;
    if let AuthMode::Token { secret } = &ctx.cfg.auth {
        let token = token(req)
            .ok_or_else(|| refusal(StatusCode::UNAUTHORIZED, "unauthorized: a token is required", "no token"))?;
        let claims = auth::verify(&token, secret, ctx.cfg.jwt_leeway_s)
            .map_err(|e| refusal(StatusCode::UNAUTHORIZED, "unauthorized: bad or expired token", e.to_string()))?;
        if *claims.sub != *session.uid {
            return Err(refusal(StatusCode::FORBIDDEN, "forbidden: not your session", "token of another user"));
        }
    }
    // A session being closed by a ban takes nothing more, however fast the caller is.
    if let Some(ban) = ctx.bans.refusing(&session.uid, None, crate::bans::now_ms()) {
        return Err(crate::transport::context::ban_refusal(&ban));
    }
    Ok(session)
}

/// The body, `Content-Length` bytes of it, at most `max` (413 past it, unread), and
/// what was read past it.
pub(crate) fn read_body(
    input: &mut impl Read,
    req: &Request,
    mut body: Vec<u8>,
    max: usize,
) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let len: usize = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| refusal(StatusCode::LENGTH_REQUIRED, "length required: send Content-Length", "no length"))?;
    if len > max {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large: see --max-frame-bytes",
            format!("{len}"),
        ));
    }
    let mut chunk = [0u8; 4096];
    while body.len() < len {
        match input.read(&mut chunk) {
            Ok(0) | Err(_) => {
                return Err(refusal(StatusCode::REQUEST_TIMEOUT, "request timeout: body incomplete", "short body"))
            }
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let rest = body.split_off(len);
    Ok((body, rest))
}

/// One JSON object, or an array of them (each checked later, like a frame).
fn split(body: &[u8]) -> Result<Vec<Box<RawValue>>, Refusal> {
    let bad = |detail: String| {
        refusal(StatusCode::BAD_REQUEST, "bad request: the body must be a JSON object or an array of them", detail)
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let messages = match first {
        Some(b'{') => vec![serde_json::from_slice::<Box<RawValue>>(body).map_err(|e| bad(e.to_string()))?],
        Some(b'[') => serde_json::from_slice::<Vec<Box<RawValue>>>(body).map_err(|e| bad(e.to_string()))?,
        _ => return Err(bad("not an object or array".into())),
    };
    if messages.len() > MAX_MESSAGES {
        return Err(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload too large: at most 100 messages per POST",
            format!("{} messages", messages.len()),
        ));
    }
    Ok(messages)
}

/// What a POST still waits for, and the answers it has.
#[derive(Debug, Default)]
struct Waiting {
    /// Ids of messages still owed an ack or error (a repeated id is owed twice).
    ids: Vec<String>,
    /// The `ref`s of errors about this POST's other messages ("" for none).
    refs: HashSet<String>,
    barrier_seen: bool,
    /// The answers as the stream carried them (server JSON).
    answers: Vec<Bytes>,
}

impl Waiting {
    fn done(&self) -> bool {
        self.barrier_seen && self.ids.is_empty()
    }

    fn owed(&mut self, id: &str) -> bool {
        let at = self.ids.iter().position(|i| i == id);
        at.map(|i| self.ids.swap_remove(i)).is_some()
    }

    /// Takes one answer copied from the stream if it is this POST's.
    fn take(&mut self, json: &Bytes, barrier: &str) {
        let Ok(v) = serde_json::from_slice::<Value>(json) else { return };
        let mine = match v["type"].as_str() {
            Some("pong") => {
                self.barrier_seen |= v["t"].as_str().is_some_and(|t| barrier.trim_matches('"') == t);
                false
            }
            Some("ack") => v["id"].as_str().is_some_and(|id| self.owed(id)),
            Some("error") => {
                let r = v["ref"].as_str().unwrap_or_default();
                self.owed(r) || self.refs.contains(r)
            }
            _ => false,
        };
        if mine {
            self.answers.push(json.clone());
        }
    }
}

/// Validates, rate limits and forwards each message, then the barrier. Returns true
/// when the session was closed for flooding (nothing more will be answered).
fn submit(
    session: &Session,
    stream: &SseStream,
    ctx: &ConnContext,
    messages: &[Box<RawValue>],
    wait: &mut Waiting,
    barrier: &str,
) -> bool {
    let limits = ParseLimits { max_text_chars: ctx.cfg.max_text_chars };
    let conn = &session.conn;
    for raw in messages {
        let msg = match parse_client(raw.get(), limits) {
            Ok(m) => m,
            Err(e) => {
                wait.refs.insert(e.reference.clone().unwrap_or_default());
                reply_error(session, ctx, &e);
                continue;
            }
        };
        if let ClientMsg::Ping { t } = &msg {
            let pong = wire::encode(&ServerMsg::Pong { t: t.as_ref().map(|t| &*t.0) });
            let _ = fanout::send_one(conn, &pong);
            wait.answers.push(wire::payload(&pong));
            continue;
        }
        let reference = msg.reference();
        match msg.ack_id() {
            Some(id) => wait.ids.push(id.to_owned()),
            None => {
                wait.refs.insert(reference.clone());
            }
        }
        let mut limiter = session.limiter.lock().unwrap_or_else(|p| p.into_inner());
        if !limiter.0.take() {
            let e = ProtocolError::new(
                ErrorCode::RateLimited,
                format!("slow down: at most {} messages per second", ctx.cfg.rate_per_s),
            )
            .with_ref(Some(reference));
            reply_error(session, ctx, &e);
            if limiter.1.strike() {
                session.end(CloseReason::RateLimit);
                return true;
            }
            continue;
        }
        drop(limiter);
        if let ClientMsg::Leave { room } = &msg {
            stream.forget(room);
        }
        let msg = match crate::transport::files::resolve(msg, &session.uid, ctx) {
            Ok(m) => m,
            Err(e) => {
                reply_error(session, ctx, &e);
                continue;
            }
        };
        if ctx.commands.send(Command::Client { conn: conn.id, msg }).is_err() {
            return true;
        }
    }
    let t = RawValue::from_string(barrier.to_owned()).expect("a quoted id is JSON");
    let ping = ClientMsg::Ping { t: Some(RawJson(t)) };
    ctx.commands.send(Command::Client { conn: conn.id, msg: ping }).is_err()
}

fn reply_error(session: &Session, ctx: &ConnContext, e: &ProtocolError) {
    ctx.metrics.error(e.code);
    let _ = fanout::send_one(&session.conn, &wire::encode(&e.to_server_msg()));
}
