//! `redis-io`'s admin requests: bans written for every instance (and answered to the
//! API caller once Redis holds them), audit entries appended, audit pages read; and
//! the poll of the bans' version that tells every instance of bans made elsewhere.
//!
//! Never decides who is banned or what is recorded; never touches sockets or rooms.

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use super::{describe, unix_ms};
use crate::bans::Ban;
use crate::protocol::{ApiResult, ErrorCode, ProtocolError, RoomName};
use crate::store::audit::{AuditEntry, AuditQuery};
use crate::store::redis::RedisStore;

/// A ban, an unban or an audit entry to store, or an audit page to read.
#[derive(Debug)]
pub enum AdminRequest {
    /// Store the ban, then send `answer` to `reply` (or `unavailable`).
    Ban { ban: Ban, reply: Sender<ApiResult>, answer: Value },
    /// Lift the user's ban, then send `answer` to `reply`.
    Unban { user: String, reply: Sender<ApiResult>, answer: Value },
    /// Append an entry; entries older than `keep_ms` go on the way. No answer.
    Audit { entry: AuditEntry, keep_ms: Option<u64> },
    /// A page of the log for the API.
    ReadAudit { query: AuditQuery, reply: Sender<ApiResult> },
    /// Erasure: make `uid` anonymous in these stored messages (each rewritten only if
    /// unchanged since read), tell the other instances to do the same to their rings,
    /// then answer `{renamed}`.
    Anonymize { uid: String, keep: bool, rows: Vec<(RoomName, u64)>, reply: Sender<ApiResult> },
    /// Erasure's last step: forget everything else Redis holds about `uid`, then send
    /// `answer` to `reply`.
    Forget { uid: String, reply: Sender<ApiResult>, answer: Value },
}

fn unavailable(e: &crate::store::redis::RedisStoreError) -> ProtocolError {
    ProtocolError::new(ErrorCode::Unavailable, describe(e))
}

pub(super) fn handle(store: &mut RedisStore, req: AdminRequest) {
    match req {
        AdminRequest::Ban { ban, reply, answer } => {
            let _ = reply.send(store.ban_set(&ban).map(|()| answer).map_err(|e| unavailable(&e)));
        }
        AdminRequest::Unban { user, reply, answer } => {
            let _ = reply.send(store.ban_lift(&user).map(|()| answer).map_err(|e| unavailable(&e)));
        }
        AdminRequest::Audit { entry, keep_ms } => {
            if let Err(e) = store.audit_append(&entry, keep_ms) {
                log::warn!("audit: entry not stored in Redis ({e}): {entry:?}");
            }
        }
        AdminRequest::ReadAudit { query, reply } => {
            let page = store.audit_read(&query).map_err(|e| unavailable(&e));
            let _ = reply.send(page.map(|entries| page_json(&entries, query.limit)));
        }
        AdminRequest::Anonymize { uid, keep, rows, reply } => {
            let _ = reply.send(anonymize(store, &uid, keep, &rows).map_err(|e| unavailable(&e)));
        }
        AdminRequest::Forget { uid, reply, mut answer } => {
            let forgotten = store.forget_user(&uid).map_err(|e| unavailable(&e));
            let _ = reply.send(forgotten.map(|f| {
                log::info!("erasure: {} key(s) and {} audit entry(ies) no longer name the user", f.keys, f.audit);
                answer["audit_renamed"] = json!(f.audit);
                answer
            }));
        }
    }
}

/// The event that tells every other instance to make `uid` anonymous in the messages
/// its rings hold (an instance skips its own: its dispatcher did that). It goes on the
/// users channel, which every instance subscribes to from its start, not on each
/// room's: an instance subscribes to a room's channel only once its events thread has
/// applied the watch, and one that had not yet kept the name in its ring.
#[derive(serde::Serialize)]
struct Erased<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    uid: &'a str,
    keep: bool,
}

/// Rewrites each row, then tells the other instances; `{renamed}`.
fn anonymize(
    store: &mut RedisStore,
    uid: &str,
    keep: bool,
    rows: &[(RoomName, u64)],
) -> Result<Value, crate::store::redis::RedisStoreError> {
    let mut renamed = 0u64;
    for (room, seq) in rows {
        renamed += u64::from(store.anonymize(room, *seq, uid, keep)?);
    }
    let event = Erased { kind: "erased", uid, keep };
    store.tell_user(&serde_json::to_vec(&event).expect("an event serializes"))?;
    Ok(json!({ "renamed": renamed }))
}

/// An audit page as the API answers it: the entries and the `before` of the next page
/// (none when this one is the last).
pub fn page_json(entries: &[AuditEntry], limit: usize) -> Value {
    let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id)).flatten();
    json!({ "entries": entries, "next_before": next })
}

/// The bans when their version moved since `seen` (the first poll always reads them).
pub(super) fn poll_bans(store: &mut RedisStore, seen: &mut Option<u64>) -> Option<Vec<Ban>> {
    let version = store.bans_version().ok()?;
    if *seen == Some(version) {
        return None;
    }
    let bans = store.bans(unix_ms()).ok()?;
    *seen = Some(version);
    Some(bans)
}
