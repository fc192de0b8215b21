//! Edits and deletions of messages: `edit {room, seq, text}` by the author,
//! `delete {room, seq}` by the author or a moderator. Each is a new event with its own
//! seq that names the original (`of`), stored and delivered like a message, so a
//! client that was away gets it on resume in seq order. The original's stored JSON is
//! rewritten in the same transaction (the new text with `edited`, or a deletion
//! marker without text), and in the ring once the commit succeeded.
//!
//! Rights are checked here, per action, never per delivered message. Never changes an
//! event, a deleted message, or someone else's message (but a moderator's delete).

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use serde_json::Value;

use super::api::AckTo;
use super::backend::Backend;
use super::durability::BatchPost;
use super::history::Stored;
use super::state::now_ms;
use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire::{self, Frame};
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg};
use crate::store::sqlite::edits::{without_text, Rewrite};
use crate::store::sqlite::NewMessage;

/// What a client asks to change about a message.
#[derive(Debug)]
pub(super) enum Change {
    Edit(String),
    Delete,
}

/// An event to store in a room's seq order (see [`Dispatcher::store_event`]).
pub(super) struct Event {
    pub room: RoomName,
    pub seq: u64,
    pub ts: u64,
    /// The event's JSON.
    pub json: Vec<u8>,
    /// Who made it.
    pub uid: crate::protocol::UserId,
    /// The connection to ack (with `msg_id`), if any.
    pub conn: Option<ConnId>,
    pub msg_id: Option<String>,
}

/// A ring entry to replace once the batch is committed.
pub(super) struct RingRewrite {
    pub room: RoomName,
    pub seq: u64,
    pub frame: Frame,
}

impl Dispatcher {
    /// Checks and applies an edit or deletion of message `of` in `room`.
    pub(super) fn change_message(
        &mut self,
        id: ConnId,
        room: RoomName,
        of: u64,
        change: Change,
        msg_id: Option<String>,
    ) -> Result<(), ProtocolError> {
        let kind = if let Change::Edit(_) = change { "edit" } else { "delete" };
        let reference = msg_id.clone().unwrap_or_else(|| kind.to_owned());
        let err = |code, message: String| ProtocolError::new(code, message).with_ref(Some(reference.clone()));
        let client = &self.clients[&id];
        if !client.rooms.contains(&room) {
            return Err(err(ErrorCode::NotJoined, format!("join `{room}` first")));
        }
        if let Backend::Redis(_) = self.backend {
            return Err(err(ErrorCode::Unavailable, format!("`{kind}` is not available in Redis mode yet")));
        }
        let (uid, name, is_mod) = (client.uid.clone(), client.name.clone(), client.access.is_mod());
        if let Change::Edit(_) = change {
            self.check_writable_room(id, &room, Some(reference.clone()))?;
        }
        self.settle(&room); // the target, and any earlier change of it, are committed
        self.check_writable(Some(reference.clone()))?;
        if let Some(seq) = msg_id.as_deref().and_then(|m| self.rooms.get(&room)?.history.seen(&uid, m)) {
            // A retry of a change already applied: the same answer, nothing new.
            self.metrics.messages_duplicate.fetch_add(1, Relaxed);
            self.stage_ack(AckTo::Conn(id), &room, msg_id.as_deref(), seq, true);
            return Ok(());
        }
        let original = self.original(&room, of).map_err(|e| {
            log::warn!("{kind} of {room}/{of}: reading the original failed: {e}");
            err(ErrorCode::Unavailable, "the message store cannot be read; retry".into())
        })?;
        let mut msg = original
            .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
            .filter(|m| m["type"] == "msg")
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no message {of} in `{room}`")))?;
        if msg["deleted"] == true {
            return Err(err(ErrorCode::NotFound, format!("message {of} in `{room}` was deleted")));
        }
        let author = msg["uid"].as_str() == Some(&*uid);
        match &change {
            Change::Edit(_) if !author => {
                return Err(err(ErrorCode::Forbidden, "you can edit only your own messages".into()))
            }
            Change::Delete if !author && !is_mod => {
                return Err(err(ErrorCode::Forbidden, "only its author or a moderator can delete a message".into()))
            }
            _ => {}
        }

        let Some(r) = self.rooms.get_mut(&room) else { return Ok(()) };
        let (seq, ts) = (r.history.next_seq(), now_ms());
        let (event, rewritten, text) = match &change {
            Change::Edit(text) => {
                let event = ServerMsg::Edit {
                    room: room.as_str(),
                    seq,
                    of,
                    id: msg_id.as_deref(),
                    ts,
                    user: &name,
                    uid: &uid,
                    text,
                };
                msg["text"] = Value::from(text.as_str());
                msg["edited"] = Value::from(ts);
                (event.to_json(), serde_json::to_vec(&msg).unwrap_or_default(), Some(text.clone()))
            }
            Change::Delete => {
                let event = ServerMsg::Delete {
                    room: room.as_str(),
                    seq,
                    of,
                    id: msg_id.as_deref(),
                    ts,
                    user: &name,
                    uid: &uid,
                };
                let marker = serde_json::to_vec(&msg).ok().and_then(|j| without_text(&j)).unwrap_or_default();
                (event.to_json(), marker, None)
            }
        };
        // The ring changes only after the commit: a refused batch must leave it as it was.
        let mut rewrites = vec![RingRewrite { room: room.clone(), seq: of, frame: wire::text_frame(&rewritten) }];
        if text.is_none() {
            rewrites.extend(edit_events_of(r.history.after(of), of, &room));
        }
        self.ring_rewrites.extend(rewrites);
        if let Backend::Local(local) = &mut self.backend {
            local.store.rewrite(Rewrite {
                room: room.to_string(),
                seq: of,
                json: Bytes::from(rewritten),
                text,
                by: seq,
            });
        }
        log::info!("{kind} of message {of} in {room} by {uid} (event {seq})");
        self.store_event(Event { room, seq, ts, json: event, uid, conn: Some(id), msg_id });
        Ok(())
    }

    /// Stores an event that takes a seq (an edit, a deletion, a moderator's action) like
    /// a message: in the ring, the store's batch and the room's frames, acked to `conn`
    /// when it gave an id, and undone with the batch if the commit fails. `seq` must be
    /// the room's next.
    pub(super) fn store_event(&mut self, e: Event) {
        let Event { room, seq, ts, json, uid, conn, msg_id } = e;
        let Some(r) = self.rooms.get_mut(&room) else { return };
        let frame = wire::text_frame(&json);
        let epoch = r.epoch.get_or_insert_with(crate::store::new_epoch).clone();
        r.history.push(Stored { seq, frame: frame.clone() }, &uid, msg_id.as_deref());
        if let Backend::Local(local) = &mut self.backend {
            let json = wire::payload(&frame);
            local.store.append(NewMessage { room: room.to_string(), epoch, seq, ts, text: String::new(), json });
        }
        self.metrics.messages_accepted.fetch_add(1, Relaxed);
        self.staged_msgs += 1;
        let sender = conn.and_then(|id| self.clients.get(&id)).map(|c| c.conn.clone());
        let ack = conn.and_then(|id| self.stage_ack(AckTo::Conn(id), &room, msg_id.as_deref(), seq, false));
        self.stage_room(&room, &frame, None);
        let staged = self.staged.len() - 1;
        self.dirty_rooms.insert(room.clone());
        self.batch_posts.push(BatchPost { room, seq, uid, id: msg_id, conn: sender, ack, frame: staged });
    }

    /// The committed JSON of message `seq`: from the ring, else one row of the store.
    fn original(&mut self, room: &RoomName, seq: u64) -> Result<Option<Bytes>, crate::store::sqlite::StoreError> {
        if let Some(m) = self.rooms.get(room).and_then(|r| r.history.get(seq)) {
            return Ok(Some(m.json()));
        }
        match &mut self.backend {
            Backend::Local(local) => local.store.message(room.as_str(), seq),
            Backend::Redis(_) => Ok(None),
        }
    }

    /// The batch is committed: its edits and deletions reach the rings.
    pub(super) fn apply_ring_rewrites(&mut self) {
        for w in std::mem::take(&mut self.ring_rewrites) {
            if let Some(r) = self.rooms.get_mut(&w.room) {
                r.history.replace(w.seq, w.frame);
            }
        }
    }
}

/// The held edit events of message `of`, without their text (it was deleted).
fn edit_events_of<'a>(held: impl Iterator<Item = &'a Stored>, of: u64, room: &RoomName) -> Vec<RingRewrite> {
    held.filter_map(|m| {
        let json = m.json();
        let v: Value = serde_json::from_slice(&json).ok()?;
        (v["type"] == "edit" && v["of"] == of).then_some(())?;
        let scrubbed = without_text(&json)?;
        Some(RingRewrite { room: room.clone(), seq: m.seq, frame: wire::text_frame(&scrubbed) })
    })
    .collect()
}
