//! The server API's calls as the dispatcher sees them: a backend's post takes the same
//! path as a client's (seq, store, dedup by id, fan-out) and is answered only after
//! the store committed; reads answer from the dispatcher's own state. The HTTP side
//! ([`crate::api`]) waits for the reply; the dispatcher never waits for the caller.

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use super::admin::Actor;
use super::backend::Backend;
use super::edits::{Change, Changer};
use super::tags::{AckTo, NewPost, ReadFor, Request};
use super::Dispatcher;
use crate::access::PRIVATE_PREFIX;
use crate::protocol::{ApiResult, CloseReason, ErrorCode, ProtocolError, RoomName, User, UserId};
use crate::store::audit::AuditQuery;
use crate::store::read::Query;
use crate::store::redis::io::{AdminRequest, ApiRead};

/// One call of the server API.
#[derive(Debug)]
pub enum ApiCall {
    /// Post as `from` (already checked against the key's rights).
    Post { room: RoomName, text: String, id: Option<String>, from: User },
    /// Held messages with `after < seq < before`, oldest first, at most `limit`.
    Messages { room: RoomName, before: Option<u64>, after: Option<u64>, limit: usize },
    /// Every room with its present users and head.
    Rooms,
    /// Who is present in a room.
    Presence { room: RoomName },
    /// Delete message `seq` (already checked against the key's rights), as a moderator.
    Delete { room: RoomName, seq: u64, by: Actor },
    /// Close every connection of a user here.
    Disconnect { uid: UserId, by: Actor },
    /// Ban a user from the server for `ms` milliseconds (checked against the key's rights).
    Ban { uid: UserId, ms: u64, reason: String, by: Actor },
    /// Lift a user's ban.
    Unban { uid: UserId, by: Actor },
    /// The bans in force.
    Bans,
    /// A page of the audit log (Redis mode; locally the API reads it itself).
    Audit { query: AuditQuery },
    /// Erasure: delete these messages as `system`, one answer each (see `erasure`).
    EraseMessages { messages: Vec<(RoomName, u64)> },
    /// Erasure: these stored rows name `uid`; make the author anonymous in each.
    /// `keep`: their messages are kept (a reply's quote of one stays, unnamed).
    Anonymize { uid: UserId, keep: bool, rows: Vec<(RoomName, u64)> },
    /// Erasure's last step: close, forget the rest, truncate the WAL.
    ForgetUser { uid: UserId, messages: &'static str, deleted: u64, renamed: u64, by: Actor },
    /// The admin console's room list (names containing `q`).
    AdminRooms { q: String },
    /// The admin console's users online; `instance` names this instance.
    AdminUsers { instance: String },
    /// Remove `user` from `room` for `minutes`, as a moderator.
    Kick { room: RoomName, user: UserId, minutes: u64, by: Actor },
    /// Make `room` read-only (or writable again), as a moderator.
    Mode { room: RoomName, read_only: bool, by: Actor },
}

fn not_found(room: &RoomName) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotFound, format!("no room `{room}`"))
}

impl Dispatcher {
    pub(super) fn on_api(&mut self, call: ApiCall, reply: Sender<ApiResult>) {
        // The server API answers for a private room as for a room that does not exist,
        // and makes no public room of a `p.` name: neither can be told from the other.
        let room = match &call {
            ApiCall::Post { room, .. }
            | ApiCall::Delete { room, .. }
            | ApiCall::Messages { room, .. }
            | ApiCall::Kick { room, .. }
            | ApiCall::Mode { room, .. }
            | ApiCall::Presence { room } => Some(room),
            // Erasure reaches private and DM rooms too: it is the user's data, not a room's.
            ApiCall::Rooms
            | ApiCall::Disconnect { .. }
            | ApiCall::Ban { .. }
            | ApiCall::Unban { .. }
            | ApiCall::Bans
            | ApiCall::Audit { .. }
            | ApiCall::EraseMessages { .. }
            | ApiCall::Anonymize { .. }
            | ApiCall::ForgetUser { .. }
            | ApiCall::AdminRooms { .. }
            | ApiCall::AdminUsers { .. } => None,
        };
        if let Some(room) = room.filter(|r| r.as_str().starts_with(PRIVATE_PREFIX) || self.privacy.is_private_room(r)) {
            let _ = reply.send(Err(not_found(room)));
            return;
        }
        // Redis mode: reads are Redis's to answer, for every instance alike.
        if let Backend::Redis(cluster) = &self.backend {
            let read = match call {
                ApiCall::Messages { room, before, after, limit } => {
                    Some(ApiRead::Messages { room, before, after, limit })
                }
                ApiCall::Rooms => Some(ApiRead::Rooms),
                ApiCall::Presence { room } => Some(ApiRead::Presence { room }),
                ApiCall::Audit { query } => {
                    cluster.io.send(Request::Admin(AdminRequest::ReadAudit { query, reply }));
                    return;
                }
                ApiCall::AdminUsers { instance } => return self.cluster_admin_users(&instance, reply),
                other => return self.on_api_local(other, reply),
            };
            if let Some(read) = read {
                cluster.io.send(Request::Api(read, reply));
            }
            return;
        }
        self.on_api_local(call, reply);
    }

    fn on_api_local(&mut self, call: ApiCall, reply: Sender<ApiResult>) {
        let answer = match call {
            ApiCall::Post { room, text, id, from } => {
                let posted = self.ensure_room(&room, None).and_then(|()| {
                    self.store_message(NewPost {
                        poster: &from,
                        ack: AckTo::Api(reply.clone()),
                        room,
                        text: &text,
                        msg_id: id,
                        reply_to: None,
                        files: &[],
                        mentions: &[],
                    })
                });
                match posted {
                    Ok(()) => return, // answered after the commit
                    Err(e) => Err(e),
                }
            }
            ApiCall::Delete { room, seq, by } => match self.api_delete(room, seq, by, &reply) {
                Ok(()) => return, // answered after the commit
                Err(e) => Err(e),
            },
            ApiCall::Messages { room, before, after, limit } => {
                match self.api_messages(room, before, after, limit, &reply) {
                    Ok(()) => return, // the store's reader answers
                    Err(e) => Err(e),
                }
            }
            ApiCall::Rooms => Ok(self.api_rooms()),
            ApiCall::Presence { room } => match self.bring_back(&room).map(|_| self.rooms.get(&room)) {
                Ok(Some(r)) => Ok(json!({ "room": room, "users": r.users(usize::MAX), "remote": r.remote.len() })),
                Ok(None) => Err(not_found(&room)),
                Err(e) => Err(e),
            },
            ApiCall::Disconnect { uid, by } => {
                // Redis mode: the other instances close theirs too (polling, ≤ 250 ms).
                self.backend.tell_cluster(|| Request::Disconnect { uid: uid.clone() });
                let closed = self.disconnect(&uid);
                self.record(&by, "disconnect", &uid, "", format!("{closed} connection(s) here"));
                return self.answer_after_commit(reply, Ok(json!({ "closed": closed })));
            }
            ApiCall::Ban { uid, ms, reason, by } => return self.ban(&uid, ms, reason, by, reply),
            ApiCall::Unban { uid, by } => return self.unban(&uid, by, reply),
            ApiCall::Bans => Ok(json!({ "bans": self.bans.list(super::state::now_ms()) })),
            ApiCall::Audit { .. } => {
                Err(ProtocolError::new(ErrorCode::Unavailable, "the audit log is read by the API"))
            }
            ApiCall::EraseMessages { messages } => return self.erase_messages(messages, &reply),
            ApiCall::Anonymize { uid, keep, rows } => return self.anonymize(&uid, keep, rows, reply),
            ApiCall::ForgetUser { uid, messages, deleted, renamed, by } => {
                let detail = format!("messages {messages}: {deleted} deleted, {renamed} made anonymous");
                return self.forget_user(&uid, messages, &by, detail, reply);
            }
            ApiCall::AdminRooms { q } => Ok(self.admin_rooms(&q)),
            ApiCall::AdminUsers { instance } => Ok(self.admin_users(&instance)),
            ApiCall::Kick { room, user, minutes, by } => {
                let answer = self.api_kick(room, &user, minutes, by);
                return self.answer_after_commit(reply, answer);
            }
            ApiCall::Mode { room, read_only, by } => {
                let answer = self.api_mode(room, read_only, by);
                return self.answer_after_commit(reply, answer);
            }
        };
        // Reads have nothing to commit: answer at once.
        let _ = reply.send(answer);
    }

    /// Deletes a message as a moderator would: the `delete` event to the room's
    /// members, the text out of the store (history, search, files) and the webhook
    /// event; the caller is answered `{seq, dup}` (the event's seq) after the commit.
    fn api_delete(
        &mut self,
        room: RoomName,
        seq: u64,
        by: Actor,
        reply: &Sender<ApiResult>,
    ) -> Result<(), ProtocolError> {
        if matches!(self.backend, Backend::Local(_)) && !self.rooms.contains_key(&room) {
            return Err(not_found(&room));
        }
        let changer = Changer {
            user: User { id: "system".into(), name: "system".into() },
            is_mod: true,
            ack: AckTo::Api(reply.clone()),
            actor: Some(by),
        };
        self.make_change(changer, room, seq, Change::Delete, None)
    }

    /// A history page from the store, whose reader threads answer the caller: with
    /// `after`, the oldest `limit` messages after it (below `before`); otherwise the
    /// newest `limit` below `before` (or the head).
    fn api_messages(
        &mut self,
        room: RoomName,
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
        reply: &Sender<ApiResult>,
    ) -> Result<(), ProtocolError> {
        self.bring_back(&room)?; // an idle room may have left memory
        let head = self.rooms.get(&room).ok_or_else(|| not_found(&room))?.history.head();
        self.settle(&room); // what is read must be committed
        let name = room.clone();
        let query = match (after, before) {
            (Some(after), before) => {
                let upto = before.map_or(head, |b| b.saturating_sub(1)).min(after.saturating_add(limit as u64));
                Query::After { room: name, since: after, upto, limit }
            }
            (None, before) => Query::Before { room: name, before: before.unwrap_or(head + 1), limit },
        };
        let Backend::Local(local) = &self.backend else { return Ok(()) };
        local
            .readers
            .ask(ReadFor::Api { reply: reply.clone(), room, head }, query)
            .map_err(|_| ProtocolError::new(ErrorCode::Unavailable, "history reads are queued too deep; retry"))
    }

    fn api_rooms(&self) -> Value {
        let mut rooms: Vec<Value> = self
            .rooms
            .iter()
            // Private and DM rooms are never listed, not even to the API.
            .filter(|(name, _)| !self.privacy.is_private(name))
            .map(|(name, r)| json!({ "room": name, "users": r.present.len() + r.remote.len(), "head": r.history.head() }))
            .collect();
        rooms.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
        json!({ "rooms": rooms })
    }

    /// Closes every connection of `uid` on this instance; returns how many.
    pub(super) fn disconnect(&mut self, uid: &str) -> usize {
        self.close_user(uid, CloseReason::Disconnected)
    }
}
