//! What every connection thread on the WebSocket listener shares, and the steps each
//! of its transports (WebSocket, SSE stream, `POST /send`) takes alike: the shared
//! [`ConnContext`], the registry of live SSE [`Sessions`] (and their stream tickets), the `welcome` that opens a
//! connection and the goodbye ([`finish`], [`linger`]) that ends one.
//!
//! The transports' modules import this one and it imports none of them, so the
//! WebSocket thread, the SSE stream and `POST /send` never import each other back.
//! Never touches chat state.

use std::collections::HashMap;
use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_channel::Sender;

use tungstenite::http::StatusCode;

use crate::auth::Identity;
use crate::bans::{Ban, Bans};
use crate::config::{AuthMode, Config};
use crate::delivery::outbox::{Conn, LINGER};
use crate::dispatcher::Command;
use crate::metrics::Metrics;
use crate::protocol::wire;
use crate::protocol::{CloseReason, HeartbeatInfo, LimitsInfo, ServerMsg, UserRef};
use crate::ratelimit::{Strikes, TokenBucket};
use crate::store::files::Files;
use crate::tls::Tls;
use crate::transport::admission::Admission;
use crate::transport::handshake::Refusal;

/// What every connection thread shares.
#[derive(Debug)]
pub struct ConnContext {
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub commands: Sender<Command>,
    /// Set when the WebSocket listener speaks TLS (`--tls-cert`).
    pub tls: Option<Tls>,
    /// Live connections in total and per client address.
    pub admission: Arc<Admission>,
    /// The fallback transport's live SSE sessions, which `POST /send` posts into.
    pub sessions: Sessions,
    /// Server-wide bans, checked once per connection, before it is registered.
    pub bans: Arc<Bans>,
    /// Uploaded files (`POST /upload`, `GET /files/`, a message's `files`).
    pub files: Arc<Files>,
    /// Uploads in progress and each user's upload rate.
    pub uploads: UploadGate,
}

/// The ban that refuses `identity` on `conn`, if any: by user id, and in open mode
/// also by the client's address (as a kick covers it: never a loopback or
/// trusted-proxy address, which many clients share, nor for a moderator).
pub fn ban_of(ctx: &ConnContext, conn: &Conn, identity: &Identity) -> Option<Ban> {
    let ip = conn.peer.ip();
    let shared =
        ip.is_loopback() || ip.to_canonical().is_loopback() || crate::proxy::is_trusted(&ctx.cfg.trusted_proxies, ip);
    let by_address = matches!(ctx.cfg.auth, AuthMode::Open) && !identity.access.is_mod() && !shared;
    ctx.bans.refusing(&identity.id, by_address.then_some(ip), crate::bans::now_ms())
}

/// The HTTP refusal of a banned client (403; the ban's terms are logged).
pub fn ban_refusal(ban: &Ban) -> Refusal {
    let detail = format!("{}: {}", ban.user, ban.refusal(crate::bans::now_ms()));
    Refusal::new(StatusCode::FORBIDDEN, "forbidden: banned from this server", detail)
}

/// Bounds on uploads: how many run at once on this instance, and each user's rate.
#[derive(Debug, Default)]
pub struct UploadGate {
    running: std::sync::atomic::AtomicUsize,
    per_user: Mutex<HashMap<Arc<str>, TokenBucket>>,
}

/// Most users whose upload rate is remembered; past it every bucket starts over.
const RATE_USERS: usize = 10_000;

impl UploadGate {
    /// Takes one of `uid`'s uploads for this minute; false past the rate.
    pub fn take(&self, uid: &Arc<str>, per_min: u32) -> bool {
        let mut users = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if users.len() >= RATE_USERS {
            users.clear();
        }
        users.entry(uid.clone()).or_insert_with(|| TokenBucket::per_minute(per_min, per_min)).take()
    }

    /// A slot for one upload, held until the guard drops; None when `max` run already.
    pub fn enter(&self, max: usize) -> Option<UploadSlot<'_>> {
        use std::sync::atomic::Ordering::AcqRel;
        let prev = self.running.fetch_add(1, AcqRel);
        if prev >= max {
            self.running.fetch_sub(1, AcqRel);
            return None;
        }
        Some(UploadSlot(self))
    }
}

/// One running upload's place in the [`UploadGate`].
#[derive(Debug)]
pub struct UploadSlot<'a>(&'a UploadGate);

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One live SSE stream, as `POST /send` finds it.
#[derive(Debug)]
pub struct Session {
    pub conn: Arc<Conn>,
    pub uid: Arc<str>,
    /// Shared by every POST of the session, like a WebSocket's own bucket.
    pub limiter: Mutex<(TokenBucket, Strikes)>,
}

impl Session {
    /// Ends the stream from another thread: the reason is recorded and the stream's
    /// thread, blocked reading, wakes and sends the closing event.
    pub fn end(&self, reason: CloseReason) {
        self.conn.set_reason(reason);
        let _ = self.conn.stream().shutdown(Shutdown::Read);
    }
}

/// A stream ticket's holder: who it admits, the token's expiry, and when it goes stale.
type Ticket = (Identity, Option<u64>, Instant);

/// Live sessions by id, and the stream tickets (`POST /sse`) not yet redeemed.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Arc<Session>>>,
    tickets: Mutex<HashMap<String, Ticket>>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tickets(&self) -> MutexGuard<'_, HashMap<String, Ticket>> {
        self.tickets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps ticket `id` for `identity` until `until`; false while `max` wait already
    /// (stale ones are dropped first).
    pub fn issue_ticket(&self, id: String, ticket: Ticket, max: usize) -> bool {
        let mut tickets = self.tickets();
        if tickets.len() >= max {
            let now = Instant::now();
            tickets.retain(|_, (_, _, until)| *until > now);
            if tickets.len() >= max {
                return false;
            }
        }
        tickets.insert(id, ticket);
        true
    }

    /// Who ticket `id` admits and the token's expiry, once: it is gone afterwards,
    /// and unusable once stale.
    pub fn redeem_ticket(&self, id: &str) -> Option<(Identity, Option<u64>)> {
        let (identity, expires_at, until) = self.tickets().remove(id)?;
        (until > Instant::now()).then_some((identity, expires_at))
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.lock().get(id).cloned()
    }

    pub fn insert(&self, id: String, session: Arc<Session>) {
        self.lock().insert(id, session);
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The first frame of every connection, on either transport.
pub fn welcome(session: &str, identity: &Identity, cfg: &Config) -> wire::Frame {
    wire::encode(&ServerMsg::Welcome {
        session,
        user: UserRef { id: &identity.id, name: &identity.name },
        role: identity.access.is_mod().then_some("mod"),
        heartbeat: HeartbeatInfo {
            interval_ms: cfg.heartbeat_interval.as_millis() as u64,
            timeout_ms: cfg.heartbeat_timeout.as_millis() as u64,
        },
        limits: LimitsInfo {
            max_text: cfg.max_text_chars,
            rate_per_s: cfg.rate_per_s,
            max_rooms: cfg.max_rooms_per_conn,
            max_dms: cfg.max_dms_per_conn,
        },
    })
}

/// Sends the close frame (echoing 1000 to a client that closed), lets it drain, ends
/// the write side and waits briefly for the client to hang up, so the close frame is
/// not lost to a reset.
pub fn finish(conn: &Arc<Conn>, reason: CloseReason) {
    let (code, text) = reason.close_frame().unwrap_or((1000, ""));
    if reason != CloseReason::SocketError {
        conn.close(code, text, false);
        conn.flush_until(Instant::now() + LINGER);
    }
    conn.shutdown_write();
    linger(conn.stream());
}

/// Reads and discards until the peer closes or `LINGER` passes.
pub fn linger(mut stream: &TcpStream) {
    let deadline = Instant::now() + LINGER;
    let mut buf = [0u8; 1024];
    let _ = stream.shutdown(Shutdown::Write);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
