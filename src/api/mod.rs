//! natter inside someone else's product: the server HTTP API (`/api/v1/`) a backend
//! calls (the webhooks natter calls back live in [`crate::webhooks`]).
//!
//! - [`http`]: the API's worker threads behind the HTTP side;
//! - [`keys`]: the API keys (`--api-key-file`), re-read when the file changes;
//! - [`overview`]: the admin console's overview, from the counters;
//! - [`routes`]: parsing and checking requests into dispatcher calls, errors to statuses;
//! - [`userdata`]: a user's export (streamed) and erasure (driven chunk by chunk).
//!
//! Nothing here owns chat state: API calls reach the dispatcher as
//! [`Command::Api`]s, like a client's messages, and wait for its answer (a post's
//! answer comes after the store committed).

pub mod http;
pub mod keys;
pub mod overview;
pub mod routes;
pub mod userdata;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use serde_json::Value;

use crate::config::Config;
use crate::dispatcher::api::ApiCall;
use crate::dispatcher::{Actor, Command};
use crate::metrics::Metrics;
use crate::protocol::{ErrorCode, ProtocolError};
use crate::ratelimit::TokenBucket;
use crate::store::audit::AuditQuery;
use crate::store::files::Files;
use crate::store::redis::io::page_json;
use crate::store::redis::{Master, StoreOptions};
use crate::store::sqlite::audit as sqlite_audit;
use keys::ApiKeys;
use routes::{error_body, status_of, ApiRequest, Routed};

/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a call may wait for the dispatcher before the caller gets `unavailable`.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The API as the HTTP side sees it: one request in, a status and a JSON body out.
pub struct Api {
    keys: ApiKeys,
    commands: Sender<Command>,
    /// One bucket for all callers: the API is for a few backends, not for the crowd.
    limiter: Mutex<TokenBucket>,
    max_text: usize,
    /// Single-instance mode: the store file the audit log is read from, on a read-only
    /// connection of the API's own (opened at first use), never the dispatcher's.
    audit_db: Option<(PathBuf, Mutex<Option<rusqlite::Connection>>)>,
    /// Where export and erasure read a user's data: the SQLite store's data dir, or
    /// the Redis the instances share; none in unit tests.
    user_data: Option<userdata::Source>,
    /// Uploaded files, for a user's export and erasure; none in unit tests.
    files: Option<Arc<Files>>,
    /// For the admin console's overview; none in unit tests.
    overview: Option<(Arc<Metrics>, Arc<Config>)>,
    /// This instance's name in the console's user list: host and WebSocket port.
    instance: String,
}

/// An answer: JSON, or a user's export for the HTTP side to stream.
pub enum Reply {
    Json(u16, Value),
    Export(Box<userdata::Export>),
}

impl Api {
    pub fn new(keys: ApiKeys, commands: Sender<Command>, rate_per_s: u32, max_text: usize) -> Api {
        let limiter = Mutex::new(TokenBucket::new(rate_per_s, rate_per_s.saturating_mul(2)));
        Api {
            keys,
            commands,
            limiter,
            max_text,
            audit_db: None,
            user_data: None,
            files: None,
            overview: None,
            instance: String::new(),
        }
    }

    /// Answers the admin console's overview from these counters and settings.
    pub fn with_overview(mut self, metrics: Arc<Metrics>, cfg: Arc<Config>) -> Api {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        self.instance = format!("{}:{}", host.trim(), cfg.ws_port);
        self.overview = Some((metrics, cfg));
        self
    }

    /// Reads the audit log from this SQLite store (single-instance mode); without it,
    /// audit reads go to Redis through the dispatcher.
    pub fn with_audit_db(mut self, path: PathBuf) -> Api {
        self.audit_db = Some((path, Mutex::new(None)));
        self
    }

    /// Single-instance mode: user export and erasure read the store in `dir`.
    pub fn with_data_dir(mut self, dir: PathBuf) -> Api {
        self.user_data = Some(userdata::Source::Sqlite(dir));
        self
    }

    /// Redis mode: user export and erasure read the Redis every instance shares, on
    /// connections of their own.
    pub fn with_redis(mut self, master: Master, opts: StoreOptions) -> Api {
        self.user_data = Some(userdata::Source::Redis(master, opts));
        self
    }

    /// A user's export holds their uploaded files, and their erasure forgets them as uploader.
    pub fn with_files(mut self, files: Arc<Files>) -> Api {
        self.files = Some(files);
        self
    }

    /// True when `authorization` names a valid key: checked from the head, before
    /// any body is read.
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        self.keys.check(authorization).is_some()
    }

    /// The answer to a request without a valid key (logged).
    pub fn unauthorized(&self, method: &str, url: &str) -> (u16, Value) {
        log::info!("api: {method} {} refused: no valid key", path_of(url));
        let e = ProtocolError::new(ErrorCode::Unauthorized, "send Authorization: Bearer <API key>");
        (401, error_body(&e))
    }

    /// Answers one request; logs it with the key's id (never the key).
    pub fn handle(&self, req: &ApiRequest, authorization: Option<&str>) -> Reply {
        let key = self.keys.check(authorization);
        self.record_reloads();
        let Some(key) = key else {
            let (status, body) = self.unauthorized(req.method, req.url);
            return Reply::Json(status, body);
        };
        let (status, body) = match self.answer(req, &key) {
            Ok(Reply::Export(export)) => {
                log::info!("api: {} {} {} -> export", key.id, req.method, path_of(req.url));
                return Reply::Export(export);
            }
            Ok(Reply::Json(status, body)) => (status, body),
            Err(e) => (status_of(e.code), error_body(&e)),
        };
        log::info!("api: {} {} {} -> {status}", key.id, req.method, path_of(req.url));
        Reply::Json(status, body)
    }

    fn answer(&self, req: &ApiRequest, key: &keys::ApiKey) -> Result<Reply, ProtocolError> {
        if !self.limiter.lock().unwrap_or_else(PoisonError::into_inner).take() {
            return Err(ProtocolError::new(ErrorCode::RateLimited, "too many API calls; slow down"));
        }
        if req.body.len() > MAX_BODY {
            return Err(ProtocolError::new(ErrorCode::TooLong, format!("the body is over {MAX_BODY} bytes")));
        }
        let mut call = match routes::route(req, key, self.max_text)? {
            Routed::Answer(status, body) => return Ok(Reply::Json(status, body)),
            Routed::Overview => {
                let (metrics, cfg) = self
                    .overview
                    .as_ref()
                    .ok_or_else(|| ProtocolError::new(ErrorCode::Unavailable, "no overview on this listener"))?;
                return Ok(Reply::Json(200, overview::overview(metrics, cfg)));
            }
            Routed::Call(call) => call,
            Routed::Export { uid, zip } => {
                let source = self.user_data.clone().ok_or_else(userdata::no_store)?;
                return Ok(Reply::Export(Box::new(userdata::Export { source, uid, zip, files: self.files.clone() })));
            }
            Routed::Erase { uid, messages, by } => {
                let source = self.user_data.as_ref().ok_or_else(userdata::no_store)?;
                log::info!("api: erasing user {uid} (messages {messages:?})");
                return userdata::erase(&self.commands, source, self.files.as_deref(), &uid, messages, by)
                    .map(|v| Reply::Json(200, v));
            }
        };
        if let ApiCall::AdminUsers { instance } = &mut call {
            instance.clone_from(&self.instance);
        }
        if let (ApiCall::Audit { query }, Some(db)) = (&call, &self.audit_db) {
            return read_audit(db, query).map(|page| Reply::Json(200, page));
        }
        let created = matches!(call, ApiCall::Post { .. });
        let (reply, answer) = crossbeam_channel::bounded(1);
        let unavailable = || ProtocolError::new(ErrorCode::Unavailable, "the server is busy or stopping; retry");
        match self.commands.try_send(Command::Api { call, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return Err(unavailable()),
        }
        let value = answer.recv_timeout(CALL_TIMEOUT).map_err(|_| unavailable())??;
        let status = if created && value["dup"] == false { 201 } else { 200 };
        Ok(Reply::Json(status, value))
    }
}

impl Api {
    /// Tells the audit log of key file re-reads (never waits: a full queue drops it, logged).
    fn record_reloads(&self) {
        for detail in self.keys.take_reloads() {
            let by = Actor { id: "api-key-file".into(), addr: "local".into() };
            let cmd = Command::Audit { by, action: "keys.reload", detail };
            if self.commands.try_send(cmd).is_err() {
                log::warn!("api: the key file re-read is not in the audit log (the server is busy)");
            }
        }
    }
}

/// A page of the audit log from the local store.
fn read_audit(
    (path, conn): &(PathBuf, Mutex<Option<rusqlite::Connection>>),
    query: &AuditQuery,
) -> Result<Value, ProtocolError> {
    let failed = |e: &dyn std::fmt::Display| {
        log::warn!("api: reading the audit log failed: {e}");
        ProtocolError::new(ErrorCode::Unavailable, "the audit log cannot be read; retry")
    };
    let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
    if conn.is_none() {
        *conn = Some(sqlite_audit::open_reader(path).map_err(|e| failed(&e))?);
    }
    let c = conn.as_ref().expect("opened just above");
    match sqlite_audit::read(c, query) {
        Ok(entries) => Ok(page_json(&entries, query.limit)),
        Err(e) => {
            *conn = None; // opened again next time
            Err(failed(&e))
        }
    }
}

/// The path without its query, for logs (queries are not secret, but are noise).
fn path_of(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}
