//! The fallback transport's downstream: one `GET /sse` stream's thread, and the
//! tickets `POST /sse` hands out for it. It registers its session in the registry
//! ([`super::context::Sessions`]) that `POST /send` ([`super::send`]) posts into.
//!
//! A ticket keeps credentials out of the stream's URL (which proxies log): `POST /sse`
//! with the credentials in its body answers a random, single-use ticket that lives
//! [`TICKET_TTL`]; `GET /sse?ticket=…` redeems it. A logged ticket is spent or stale.
//! The URL form (`?name=&key=`, `?token=`) still works for old clients.
//!
//! A stream is admitted like a WebSocket (Origin, name or token, the same connection
//! caps, since it came through the same accept loop), gets a `welcome` whose `session`
//! is an unguessable id, and is registered with the dispatcher as an ordinary
//! connection whose socket carries SSE events ([`crate::delivery::sse`]). A
//! `Last-Event-ID` (header, or `last_event_id` in the query for clients that cannot
//! set headers) resumes each room it names with `since`. The thread then only waits
//! for the client to hang up or its token to expire; it never touches chat state.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::handshake::server::Request;
use tungstenite::http::StatusCode;

use crate::auth::now_s;
use crate::delivery::fanout;
use crate::delivery::outbox::Conn;
use crate::delivery::sse::SseStream;
use crate::dispatcher::Command;
use crate::protocol::sse::parse_event_id;
use crate::protocol::{ClientMsg, CloseReason, RoomName};
use crate::ratelimit::{Strikes, TokenBucket};
use crate::transport::context::{ban_of, ban_refusal, finish, welcome, ConnContext, Session};
use crate::transport::handshake::{
    admit_credentials, check_origin, identify, os_random, query_param, Admitted, Credentials, Refusal,
};
use crate::transport::plain;

/// Window in which `rate_strikes` refusals close a session (as on a WebSocket).
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);
/// Longest a stream's thread sleeps between checks when no token expiry wakes it.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// 128 random bits from the kernel's CSPRNG: a session id nobody can guess.
fn new_session_id() -> String {
    format!("s-{:032x}", os_random::<u128>())
}

/// Serves one `GET /sse` from admission to its closing event.
pub fn run(conn: Arc<Conn>, ctx: &ConnContext, req: &Request) {
    let cfg = &ctx.cfg;
    let cors = plain::cors_origin(req, cfg);
    let admitted = match admit(req, ctx).and_then(|a| match ban_of(ctx, &conn, &a.identity) {
        Some(ban) => Err(ban_refusal(&ban)),
        None => Ok(a),
    }) {
        Ok(a) => a,
        Err(r) => return plain::refuse(&conn, &r, cors.as_deref(), &ctx.metrics),
    };
    let resume = match resume_rooms(req, cfg.max_rooms_per_conn + cfg.max_dms_per_conn) {
        Ok(r) => r,
        Err(r) => return plain::refuse(&conn, &r, cors.as_deref(), &ctx.metrics),
    };
    conn.make_sse(SseStream::resumed(&resume));
    let _ = conn.push(plain::stream_head(cors.as_deref()));

    let id = new_session_id();
    let session = Arc::new(Session {
        conn: conn.clone(),
        uid: admitted.identity.id.clone(),
        limiter: Mutex::new((
            TokenBucket::new(cfg.rate_per_s, cfg.rate_burst),
            Strikes::new(cfg.rate_strikes, STRIKE_WINDOW),
        )),
    });
    let registered =
        ctx.commands.send(Command::Register { conn: conn.clone(), user: admitted.identity.clone() }).is_ok();
    ctx.sessions.insert(id.clone(), session);
    let _ = fanout::send_one(&conn, &welcome(&id, &admitted.identity, cfg));
    for (room, since) in resume {
        let _ = ctx.commands.send(Command::Client {
            conn: conn.id,
            msg: ClientMsg::Join { room, since: Some(since), epoch: None, private: false },
        });
    }

    crate::transport::stack::release_unused();
    let reason = if registered { wait(&conn, admitted.expires_at) } else { CloseReason::Shutdown };
    ctx.sessions.remove(&id);
    conn.set_reason(reason);
    let reason = conn.reason().unwrap_or(reason);
    let _ = ctx.commands.send(Command::Gone { conn: conn.id });
    ctx.metrics.close(reason);
    finish(&conn, reason);
}

/// How long a ticket from `POST /sse` may wait for its `GET /sse`.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Most tickets waiting at once; past it `POST /sse` answers 503 until some expire.
const MAX_TICKETS: usize = 4096;
/// Largest `POST /sse` body: the credentials, as in a `hello` frame.
const MAX_TICKET_BODY: usize = crate::transport::hello::MAX_HELLO_BYTES;

/// Who the stream is: the ticket's holder (`?ticket=`), else the URL form's identity.
fn admit(req: &Request, ctx: &ConnContext) -> Result<Admitted, Refusal> {
    let Some(ticket) = query_param(req.uri().query().unwrap_or(""), "ticket") else {
        return identify(req, &ctx.cfg);
    };
    check_origin(req, &ctx.cfg)?;
    let (identity, expires_at) = ctx.sessions.redeem_ticket(&ticket).ok_or_else(|| {
        Refusal::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized: unknown, used or expired ticket: POST /sse for a new one",
            "bad ticket",
        )
    })?;
    Ok(Admitted { identity, expires_at })
}

/// Serves one `POST /sse`: the credentials in its body (a JSON object like a `hello`
/// frame's: `token`, or `name` and `key`) for a ticket, `{"ticket", "expires_in_ms"}`.
pub fn ticket(conn: &Conn, ctx: &ConnContext, req: &Request, (body, input): (Vec<u8>, &mut impl Read)) {
    let cors = plain::cors_origin(req, &ctx.cfg);
    let issued = check_origin(req, &ctx.cfg)
        .and_then(|()| crate::transport::send::read_body(input, req, body, MAX_TICKET_BODY))
        .and_then(|(body, _)| {
            serde_json::from_slice::<Credentials>(&body).map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad request: the body must be a JSON object: {\"token\"} or {\"name\", \"key\"}",
                    e.to_string(),
                )
            })
        })
        .and_then(|credentials| admit_credentials(credentials, &ctx.cfg))
        .and_then(|admitted| match ban_of(ctx, conn, &admitted.identity) {
            Some(ban) => Err(ban_refusal(&ban)),
            None => Ok(admitted),
        })
        .and_then(|admitted| {
            let id = format!("t-{:032x}", os_random::<u128>());
            let ticket = (admitted.identity, admitted.expires_at, Instant::now() + TICKET_TTL);
            if ctx.sessions.issue_ticket(id.clone(), ticket, MAX_TICKETS) {
                Ok(id)
            } else {
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy: too many tickets waiting, retry",
                    "tickets full",
                ))
            }
        });
    match issued {
        Ok(id) => {
            let json = serde_json::json!({"ticket": id, "expires_in_ms": TICKET_TTL.as_millis() as u64});
            let bytes = plain::response(
                StatusCode::OK,
                "application/json",
                json.to_string().as_bytes(),
                cors.as_deref(),
                false,
            );
            plain::answer(conn, bytes);
        }
        Err(r) => plain::refuse(conn, &r, cors.as_deref(), &ctx.metrics),
    }
}

/// The rooms a `Last-Event-ID` resumes; a malformed one is refused with 400.
fn resume_rooms(req: &Request, max_rooms: usize) -> Result<Vec<(RoomName, u64)>, Refusal> {
    let header = req.headers().get("last-event-id").map(|v| v.to_str().map(str::to_owned));
    let id = match header {
        Some(Ok(v)) => v,
        Some(Err(_)) => return Err(bad_event_id("not text")),
        None => query_param(req.uri().query().unwrap_or(""), "last_event_id").unwrap_or_default(),
    };
    parse_event_id(&id, max_rooms).map_err(|e| bad_event_id(&e.to_string()))
}

fn bad_event_id(detail: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "bad request: Last-Event-ID must be room=seq,room=seq as the stream sent it",
        format!("Last-Event-ID: {detail}"),
    )
}

/// Waits for the client to hang up (a stream's client sends nothing after its
/// request), the token to expire, or another thread to end the stream.
fn wait(conn: &Conn, expires_at: Option<u64>) -> CloseReason {
    let mut buf = [0u8; 512];
    loop {
        if expires_at.is_some_and(|exp| now_s() >= exp) {
            return CloseReason::TokenExpired;
        }
        let left = expires_at.map_or(IDLE_WAKE, |exp| Duration::from_secs(exp.saturating_sub(now_s())));
        let _ = conn.stream().set_read_timeout(Some(left.clamp(Duration::from_millis(1), IDLE_WAKE)));
        match conn.stream().read(&mut buf) {
            Ok(0) => return conn.reason().unwrap_or(CloseReason::Client),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return conn.reason().unwrap_or(CloseReason::SocketError),
        }
    }
}
