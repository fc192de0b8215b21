//! Erasing a user (`DELETE /api/v1/users/{id}`), the dispatcher's side: the API's
//! worker finds the user's stored rows on a connection of its own and hands them
//! here in small chunks, so no chunk holds the dispatcher for long. A chunk of their
//! messages is deleted as the server API deletes one (a `delete` event each, to the
//! room's members and webhook receivers); a chunk of rows naming them is rewritten
//! with the author made anonymous, in the store and in the rings after the commit; the
//! last step forgets the rest (name, markers, blocks, invitations) and truncates the
//! WAL, so the old bytes leave the files once committed.
//!
//! With `--redis` the same steps go through `redis-io`: a deletion as the API's
//! `DELETE` makes it (every instance's reader delivers the `delete` event to its
//! members); a chunk of rows is made anonymous in this instance's rings here and in
//! Redis by `redis-io` (only a body unchanged since read), which tells the other
//! instances to rewrite their rings (an `erased` event on the users channel); the last
//! step closes the user's connections on every instance and has `redis-io` forget the
//! rest. Never reads the store beyond one row per message (like an edit's check).

use std::collections::BTreeSet;

use bytes::Bytes;
use crossbeam_channel::Sender;
use serde_json::json;

use super::backend::Backend;
use super::edits::{Change, Changer, RingRewrite};
use super::tags::{AckTo, Request};
use super::{Actor, Dispatcher};
use crate::protocol::{wire, ApiResult, ErrorCode, ProtocolError, RoomName, User, UserId};
use crate::store::redis::io::AdminRequest;
use crate::store::sqlite::userdata::{anonymized, erased_id};
use crate::webhooks::Event as HookEvent;

impl Dispatcher {
    /// Deletes each message as the API's moderator (`system`). Every message gets one
    /// answer on `reply`: `{seq, dup}` after the commit, or its error at once (a
    /// message deleted meanwhile answers `not_found`).
    pub(super) fn erase_messages(&mut self, messages: Vec<(RoomName, u64)>, reply: &Sender<ApiResult>) {
        for (room, seq) in messages {
            let changed = self.bring_back(&room).and_then(|_| {
                let changer = Changer {
                    user: User { id: "system".into(), name: "system".into() },
                    is_mod: true,
                    ack: AckTo::Api(reply.clone()),
                    // One audit entry for the whole erasure, not one naming them per message.
                    actor: None,
                };
                self.make_change(changer, room, seq, Change::Delete, None)
            });
            if let Err(e) = changed {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Rewrites each stored row (room, seq) that names `uid` with the author made
    /// anonymous; answered `{renamed}` after the commit.
    pub(super) fn anonymize(&mut self, uid: &UserId, keep: bool, rows: Vec<(RoomName, u64)>, reply: Sender<ApiResult>) {
        if let Backend::Redis(_) = self.backend {
            return self.cluster_anonymize(uid, keep, rows, reply);
        }
        let mut renamed = 0u64;
        for (room, seq) in rows {
            self.settle(&room); // a change of it still in the batch is committed first
            let current = match self.original(&room, seq) {
                Ok(Some(json)) => json,
                Ok(None) => continue, // gone meanwhile (retention)
                Err(e) => {
                    log::warn!("erasure: reading {room}/{seq}: {e}");
                    let e = ProtocolError::new(ErrorCode::Unavailable, "the message store cannot be read; retry");
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            let Some(json) = anonymized(&current, uid, keep) else { continue };
            if self.rooms.get(&room).is_some_and(|r| r.history.get(seq).is_some()) {
                self.ring_rewrites.push(RingRewrite { room: room.clone(), seq, frame: wire::text_frame(&json) });
            }
            if let Backend::Local(local) = &mut self.backend {
                local.store.rename(room.as_str(), seq, Bytes::from(json));
            }
            renamed += 1;
        }
        self.api_replies.push((reply, Ok(json!({ "renamed": renamed }))));
    }

    /// The erasure's last step: closes the user's connections, forgets what else the
    /// store holds about them, commits, and truncates the WAL (its frames still hold
    /// the old rows); webhook receivers get `user.erased`. Answered at once with
    /// `{closed, scrubbed}` (`scrubbed` false: readers kept the WAL busy, the next tick
    /// retries).
    /// The audit log records the erasure under [`erased_id`], never the id itself.
    pub(super) fn forget_user(
        &mut self,
        uid: &UserId,
        messages: &str,
        by: &Actor,
        detail: String,
        reply: Sender<ApiResult>,
    ) {
        if let Backend::Redis(_) = self.backend {
            return self.cluster_forget_user(uid, messages, by, detail, reply);
        }
        let answer = self.forget_user_here(uid, messages, by, detail);
        let _ = reply.send(answer);
    }

    fn forget_user_here(&mut self, uid: &UserId, messages: &str, by: &Actor, detail: String) -> ApiResult {
        let closed = self.disconnect(uid);
        let Backend::Local(local) = &mut self.backend else {
            return Err(ProtocolError::new(ErrorCode::Unavailable, "erasure needs single-instance mode"));
        };
        local.store.forget_user(uid);
        self.record(by, "erase", &erased_id(uid), "", detail);
        self.webhooks.stage(&HookEvent::UserErased { uid, messages });
        self.commit_and_deliver();
        if self.store_health.failing() {
            return Err(ProtocolError::new(ErrorCode::Unavailable, "the message store could not write it; retry"));
        }
        let scrubbed = match &mut self.backend {
            Backend::Local(local) => local.store.scrub_wal().unwrap_or_else(|e| {
                log::warn!("erasure: truncating the WAL: {e}");
                false
            }),
            Backend::Redis(_) => false,
        };
        log::info!("erasure of user {uid}: done (messages {messages}, {closed} connection(s) closed)");
        Ok(json!({ "closed": closed, "scrubbed": scrubbed }))
    }

    /// Redis mode's [`Self::anonymize`]: the rows held in this instance's rings are
    /// rewritten here at once; `redis-io` rewrites the stored bodies (each only if
    /// unchanged since read), tells the other instances to rewrite their rings, and
    /// answers `{renamed}`.
    fn cluster_anonymize(&mut self, uid: &UserId, keep: bool, rows: Vec<(RoomName, u64)>, reply: Sender<ApiResult>) {
        let rooms: BTreeSet<&RoomName> = rows.iter().map(|(room, _)| room).collect();
        let rooms: Vec<RoomName> = rooms.into_iter().cloned().collect();
        self.anonymize_rings(uid, keep, rooms);
        let Backend::Redis(cluster) = &self.backend else { return };
        let uid = uid.to_string();
        cluster.io.send(Request::Admin(AdminRequest::Anonymize { uid, keep, rows, reply }));
    }

    /// Makes `uid` anonymous in every message the rings of `rooms` hold, and remembers
    /// the erasure for their messages still on their way from Redis (Redis mode: this
    /// instance's part of an erasure, or another instance's `erased` event).
    pub(super) fn anonymize_rings(&mut self, uid: &str, keep: bool, rooms: Vec<RoomName>) {
        self.recently_erased.note(uid, keep);
        for room in rooms {
            let Some(r) = self.rooms.get_mut(&room) else { continue };
            let rewrites: Vec<(u64, Bytes)> = r
                .history
                .after(0)
                .filter_map(|m| anonymized(&m.json(), uid, keep).map(|json| (m.seq, Bytes::from(json))))
                .collect();
            for (seq, json) in rewrites {
                r.history.replace(seq, wire::text_frame(&json));
            }
        }
    }

    /// Redis mode's last step: the user's connections close on every instance, Redis
    /// forgets the rest (`redis-io` answers the caller once it has), the audit log and
    /// webhook receivers hear of it.
    fn cluster_forget_user(
        &mut self,
        uid: &UserId,
        messages: &str,
        by: &Actor,
        detail: String,
        reply: Sender<ApiResult>,
    ) {
        let closed = self.disconnect(uid);
        self.backend.tell_cluster(|| Request::Disconnect { uid: uid.clone() });
        self.record(by, "erase", &erased_id(uid), "", detail);
        self.webhooks.stage(&HookEvent::UserErased { uid, messages });
        self.commit_and_deliver();
        log::info!("erasure of user {uid}: forgetting the rest in Redis (messages {messages}, {closed} connection(s) closed here)");
        // Nothing to scrub: Redis keeps no write-ahead log of old values to truncate.
        let answer = json!({ "closed": closed, "scrubbed": true });
        let Backend::Redis(cluster) = &self.backend else { return };
        cluster.io.send(Request::Admin(AdminRequest::Forget { uid: uid.to_string(), reply, answer }));
    }
}

/// How long, and for how many users, an erasure is remembered for messages still on
/// their way from Redis (read before the erasure rewrote them, delivered after).
const ERASED_FOR: std::time::Duration = std::time::Duration::from_secs(300);
const ERASED_KEPT: usize = 64;

/// Users erased in the last [`ERASED_FOR`] (at most [`ERASED_KEPT`]), with the choice
/// made for their messages.
#[derive(Debug, Default)]
pub(super) struct RecentlyErased(std::collections::VecDeque<(String, bool, std::time::Instant)>);

impl RecentlyErased {
    fn note(&mut self, uid: &str, keep: bool) {
        let now = std::time::Instant::now();
        self.0.retain(|(u, _, at)| u != uid && now.duration_since(*at) < ERASED_FOR);
        if self.0.len() == ERASED_KEPT {
            self.0.pop_front();
        }
        self.0.push_back((uid.to_owned(), keep, now));
    }

    /// `json` with every recently erased user made anonymous in it (`None`: unchanged).
    pub(super) fn scrub(&self, json: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        for (uid, keep, at) in &self.0 {
            // Parsing is for messages that name them: a byte search skips the rest.
            let named = |j: &[u8]| j.windows(uid.len()).any(|w| w == uid.as_bytes());
            if at.elapsed() >= ERASED_FOR || !named(out.as_deref().unwrap_or(json)) {
                continue;
            }
            if let Some(changed) = anonymized(out.as_deref().unwrap_or(json), uid, *keep) {
                out = Some(changed);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::RecentlyErased;

    #[test]
    fn a_message_of_a_user_erased_lately_arrives_anonymous_and_others_untouched() {
        let mut erased = RecentlyErased::default();
        let theirs = br#"{"type":"msg","room":"r","seq":4,"uid":"u-zed","user":"zed","text":"hi"}"#;
        let other = br#"{"type":"msg","room":"r","seq":5,"uid":"u-bob","user":"bob","text":"hi"}"#;
        assert_eq!(erased.scrub(theirs), None, "no one erased yet");
        erased.note("u-zed", true);
        let scrubbed: serde_json::Value = serde_json::from_slice(&erased.scrub(theirs).expect("rewritten")).unwrap();
        assert_eq!((scrubbed["uid"].as_str(), scrubbed["user"].as_str()), (Some("deleted"), Some("deleted user")));
        assert_eq!(scrubbed["text"], "hi", "kept");
        assert_eq!(erased.scrub(other), None);
    }
}
