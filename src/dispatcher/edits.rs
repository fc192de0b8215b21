//! Edits, deletions and reactions of messages: `edit {room, seq, text}` by the author,
//! `delete {room, seq}` by the author or a moderator, `react {room, seq, emoji}` by any
//! member (a toggle: the event says whether it is `on`). Each is a new event with its own
//! seq that names the original (`of`), stored and delivered like a message, so a
//! client that was away gets it on resume in seq order. The original's stored JSON is
//! rewritten in the same transaction (the new text with `edited`, or a deletion
//! marker without text), and in the ring once the commit succeeded. In Redis mode the
//! append script checks and rewrites in the same step as it stores the event
//! ([`Dispatcher::cluster_change`]), and every instance rewrites its ring when its
//! reader delivers the event.
//!
//! The server API's `DELETE` takes the same path with a moderator's right. Each change
//! is told to webhook receivers (`edit`/`delete`) by the instance that stored it.
//!
//! Rights are checked here (or by the script, by the same rule), per action, never per
//! delivered message. Never changes an event, a deleted message, or someone else's
//! message (but a moderator's delete).

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use serde_json::Value;

use super::backend::Backend;
use super::durability::BatchPost;
use super::history::Stored;
use super::state::now_ms;
use super::tags::AckTo;
use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire::{self, Frame};
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, User};
use crate::store::reactions::{self, NotStored, MAX_EMOJI_PER_MSG, MAX_REACTIONS_PER_MSG};
use crate::store::redis;
use crate::store::sqlite::edits::{without_text, Rewrite};
use crate::store::NewMessage;
use crate::store::Refused;
use crate::webhooks::Event as HookEvent;

/// What a client asks to change about a message.
#[derive(Debug)]
pub(super) enum Change {
    Edit(String),
    Delete,
    /// Toggles the changer's reaction `emoji`; `on` is what the toggle made (the
    /// event's template says `true` until the store knows).
    React {
        emoji: String,
        on: bool,
    },
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
    /// Who to answer (a connection with `msg_id`, or an API caller), if anyone.
    pub ack: Option<AckTo>,
    pub msg_id: Option<String>,
}

/// A ring entry to replace once the batch is committed.
pub(super) struct RingRewrite {
    pub room: RoomName,
    pub seq: u64,
    pub frame: Frame,
}

impl Change {
    fn kind(&self) -> &'static str {
        match self {
            Change::Edit(_) => "edit",
            Change::Delete => "delete",
            Change::React { .. } => "react",
        }
    }

    /// The `edit` or `delete` event's JSON, as seq `seq`.
    pub(super) fn event(&self, seq: u64, e: &EventOf<'_>) -> Vec<u8> {
        let (room, of, id, ts, user, uid) = (e.room.as_str(), e.of, e.id, e.ts, e.user, e.uid);
        match self {
            Change::Edit(text) => ServerMsg::Edit { room, seq, of, id, ts, user, uid, text }.to_json(),
            Change::Delete => ServerMsg::Delete { room, seq, of, id, ts, user, uid }.to_json(),
            Change::React { emoji, on } => ServerMsg::React { room, seq, of, ts, user, uid, emoji, on: *on }.to_json(),
        }
    }

    /// Local mode: message `msg` after the change made at `ts`, and the text the search
    /// index holds for it now (none once deleted).
    fn apply(&self, mut msg: Value, ts: u64) -> (Vec<u8>, Option<String>) {
        match self {
            // Made on the bytes instead (`reactions::toggle`): the text stays.
            Change::React { .. } => (serde_json::to_vec(&msg).unwrap_or_default(), None),
            Change::Edit(text) => {
                msg["text"] = Value::from(text.as_str());
                msg["edited"] = Value::from(ts);
                (serde_json::to_vec(&msg).unwrap_or_default(), Some(text.clone()))
            }
            Change::Delete => {
                let marker = serde_json::to_vec(&msg).ok().and_then(|j| without_text(&j)).unwrap_or_default();
                (marker, None)
            }
        }
    }

    /// Whether `uid` (a moderator when `is_mod`) may make this change to `msg`.
    fn allowed(&self, msg: &Value, uid: &str, is_mod: bool) -> Result<(), Refused> {
        if msg["deleted"] == true {
            return Err(Refused::Deleted);
        }
        let author = msg["uid"].as_str() == Some(uid);
        match self {
            Change::Edit(_) if !author => Err(Refused::NotYours),
            Change::Delete if !author && !is_mod => Err(Refused::NotYours),
            // Any member reacts to any message.
            _ => Ok(()),
        }
    }
}

/// Who makes a change, to which message, when: what an event says besides the change.
pub(super) struct EventOf<'a> {
    pub room: &'a RoomName,
    pub of: u64,
    pub id: Option<&'a str>,
    pub ts: u64,
    pub user: &'a str,
    pub uid: &'a str,
}

/// The answer to a change the rules refuse, in either mode.
pub(super) fn refusal(kind: &str, room: &RoomName, of: u64, why: Refused) -> ProtocolError {
    match why {
        Refused::Missing => ProtocolError::new(ErrorCode::NotFound, format!("no message {of} in `{room}`")),
        Refused::Deleted => ProtocolError::new(ErrorCode::NotFound, format!("message {of} in `{room}` was deleted")),
        Refused::NotYours if kind == "edit" => {
            ProtocolError::new(ErrorCode::Forbidden, "you can edit only your own messages")
        }
        Refused::NotYours => {
            ProtocolError::new(ErrorCode::Forbidden, "only its author or a moderator can delete a message")
        }
        Refused::ReadOnly => ProtocolError::new(ErrorCode::Forbidden, format!("`{room}` is read-only")),
        Refused::Full => ProtocolError::new(
            ErrorCode::BadField,
            format!(
                "message {of} in `{room}` has all the reactions it can hold ({MAX_EMOJI_PER_MSG} emoji, {MAX_REACTIONS_PER_MSG} reactions)"
            ),
        ),
    }
}

/// The answer to a reply to a seq that is not a message of the room.
pub(super) fn no_reply_target(room: &RoomName, of: u64) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotFound, format!("no message {of} in `{room}` to reply to"))
}

/// Why a reaction could not be stored, as the rules say it.
fn not_stored(e: NotStored) -> Refused {
    match e {
        NotStored::NoText => Refused::Deleted,
        NotStored::Full => Refused::Full,
    }
}

/// Who asks for a change, and where its answer goes: a client (with its own rights),
/// or the server API with a key that may moderate.
pub(super) struct Changer {
    pub user: User,
    pub is_mod: bool,
    pub ack: AckTo,
    /// Who to record in the audit log for a deletion of someone else's message.
    pub actor: Option<super::admin::Actor>,
}

impl Dispatcher {
    /// A client's edit or deletion of message `of` in `room`: checked against the
    /// client's rooms and the room's mode, then made like any change.
    pub(super) fn change_message(
        &mut self,
        id: ConnId,
        room: RoomName,
        of: u64,
        change: Change,
        msg_id: Option<String>,
    ) -> Result<(), ProtocolError> {
        let reference = msg_id.clone().unwrap_or_else(|| change.kind().to_owned());
        let client = &self.clients[&id];
        if !client.rooms.contains(&room) {
            let e = ProtocolError::new(ErrorCode::NotJoined, format!("join `{room}` first"));
            return Err(e.with_ref(Some(reference)));
        }
        if matches!(change, Change::React { .. }) && !crate::protocol::plain(&client.uid) {
            // Stored unescaped in the message (store/reactions.rs): such an id could not be.
            let e = ProtocolError::new(ErrorCode::BadField, "a user id with quotes, brackets or commas cannot react");
            return Err(e.with_ref(Some(reference)));
        }
        let user = User { id: client.uid.clone(), name: client.name.clone() };
        let is_mod = client.access.is_mod();
        let actor = is_mod.then(|| self.actor_of(id));
        let changer = Changer { user, is_mod, ack: AckTo::Conn(id), actor };
        if let (Change::Edit(_), Backend::Local(_)) = (&change, &self.backend) {
            self.check_writable_room(id, &room, Some(reference.clone()))?;
        }
        self.make_change(changer, room, of, change, msg_id).map_err(|e| e.with_ref(Some(reference)))
    }

    /// Checks and applies an edit or deletion of message `of` in `room` by `changer`
    /// (in Redis mode the append script checks and applies it, [`Self::cluster_change`]).
    /// The event is stored, delivered and told to webhook receivers like a message.
    pub(super) fn make_change(
        &mut self,
        changer: Changer,
        room: RoomName,
        of: u64,
        change: Change,
        msg_id: Option<String>,
    ) -> Result<(), ProtocolError> {
        if let Backend::Redis(_) = self.backend {
            self.cluster_change(changer, room, of, change, msg_id);
            return Ok(());
        }
        let kind = change.kind();
        let Changer { user: User { id: uid, name }, is_mod, ack, actor } = changer;
        self.settle(&room); // the target, and any earlier change of it, are committed
        self.check_writable(None)?;
        if let Some(seq) = msg_id.as_deref().and_then(|m| self.rooms.get(&room)?.history.seen(&uid, m)) {
            // A retry of a change already applied: the same answer, nothing new.
            self.metrics.messages_duplicate.fetch_add(1, Relaxed);
            self.stage_ack(ack, &room, msg_id.as_deref(), seq, true);
            return Ok(());
        }
        let original = self.original(&room, of).map_err(|e| {
            log::warn!("{kind} of {room}/{of}: reading the original failed: {e}");
            ProtocolError::new(ErrorCode::Unavailable, "the message store cannot be read; retry")
        })?;
        let msg = original
            .as_deref()
            .and_then(|json| serde_json::from_slice::<Value>(json).ok())
            .filter(|m| m["type"] == "msg")
            .ok_or(Refused::Missing)
            .and_then(|m| change.allowed(&m, &uid, is_mod).map(|()| m))
            .map_err(|why| refusal(kind, &room, of, why))?;

        if let (Change::Delete, Some(by)) = (&change, &actor) {
            let author = msg["uid"].as_str().unwrap_or_default().to_owned();
            if author != *uid {
                self.record(by, "delete", &author, room.as_str(), format!("message {of}"));
            }
        }
        let Some(r) = self.rooms.get_mut(&room) else { return Ok(()) };
        let (seq, ts) = (r.history.next_seq(), now_ms());
        let (change, rewritten, text) = match change {
            Change::React { emoji, .. } => {
                let (json, on) = reactions::toggle(original.as_deref().unwrap_or_default(), &emoji, &uid)
                    .map_err(|e| refusal(kind, &room, of, not_stored(e)))?;
                let text = msg["text"].as_str().map(str::to_owned);
                (Change::React { emoji, on }, json, text)
            }
            other => {
                let (json, text) = other.apply(msg, ts);
                (other, json, text)
            }
        };
        let about = EventOf { room: &room, of, id: msg_id.as_deref(), ts, user: &name, uid: &uid };
        let event = change.event(seq, &about);
        let same_text = matches!(change, Change::React { .. });
        let deleted = matches!(change, Change::Delete);
        // The ring changes only after the commit: a refused batch must leave it as it was.
        let mut rewrites = vec![RingRewrite { room: room.clone(), seq: of, frame: wire::text_frame(&rewritten) }];
        if text.is_none() {
            let r = self.rooms.get(&room).expect("looked up above");
            rewrites.extend(edit_events_of(r.history.after(of), of, &room, without_text));
            rewrites.extend(replies_to(r.history.after(of), of, &room));
        }
        self.ring_rewrites.extend(rewrites);
        if let Backend::Local(local) = &mut self.backend {
            local.store.rewrite(Rewrite {
                room: room.to_string(),
                seq: of,
                json: Bytes::from(rewritten),
                text,
                by: seq,
                same_text,
            });
        }
        log::info!("{kind} of message {of} in {room} by {uid} (event {seq})");
        if let (true, Some(files)) = (deleted, &self.files) {
            files.tell_deleted(room.as_str(), of);
        }
        if deleted {
            self.reads.unmention(&room, of);
        }
        self.stage_change_event(&room, seq, &event);
        self.store_event(Event { room, seq, ts, json: event, uid, ack: Some(ack), msg_id });
        Ok(())
    }

    /// The webhook event for a stored `edit` or `delete` event (`json`, as seq `seq`):
    /// told by the instance that stored it, queued with the messages, so a receiver
    /// hears of a change after the message it changes.
    pub(super) fn stage_change_event(&mut self, room: &RoomName, seq: u64, json: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Stored<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            of: u64,
            #[serde(borrow)]
            user: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            uid: std::borrow::Cow<'a, str>,
            #[serde(borrow, default)]
            text: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow, default)]
            emoji: Option<std::borrow::Cow<'a, str>>,
            #[serde(default)]
            on: bool,
        }
        if !self.webhooks.enabled() {
            return;
        }
        let Ok(e) = serde_json::from_slice::<Stored>(json) else { return };
        let (room, user, uid, of) = (room.as_str(), &*e.user, &*e.uid, e.of);
        match (e.kind, e.text.as_deref()) {
            ("edit", Some(text)) => self.webhooks.stage(&HookEvent::Edit { room, seq, of, user, uid, text }),
            ("delete", _) => self.webhooks.stage(&HookEvent::Delete { room, seq, of, user, uid }),
            ("react", _) => {
                let (emoji, on) = (e.emoji.as_deref().unwrap_or_default(), e.on);
                self.webhooks.stage(&HookEvent::React { room, seq, of, user, uid, emoji, on })
            }
            _ => {}
        }
    }

    /// Stores an event that takes a seq (an edit, a deletion, a moderator's action) like
    /// a message: in the ring, the store's batch and the room's frames, acked to `conn`
    /// when it gave an id, and undone with the batch if the commit fails. `seq` must be
    /// the room's next.
    pub(super) fn store_event(&mut self, e: Event) {
        let Event { room, seq, ts, json, uid, ack, msg_id } = e;
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
        let sender = match &ack {
            Some(AckTo::Conn(id)) => self.clients.get(id).map(|c| c.conn.clone()),
            _ => None,
        };
        let ack = ack.and_then(|to| self.stage_ack(to, &room, msg_id.as_deref(), seq, false));
        self.stage_room(&room, &frame, None);
        let staged = self.staged.len() - 1;
        self.dirty_rooms.insert(room.clone());
        self.batch_posts.push(BatchPost { room, seq, uid, id: msg_id, conn: sender, ack, frame: staged });
    }

    /// The committed JSON of message `seq`: from the ring, else one row of the store.
    pub(super) fn original(
        &mut self,
        room: &RoomName,
        seq: u64,
    ) -> Result<Option<Bytes>, crate::store::sqlite::SqliteStoreError> {
        if let Some(m) = self.rooms.get(room).and_then(|r| r.history.get(seq)) {
            return Ok(Some(m.json()));
        }
        match &mut self.backend {
            Backend::Local(local) => local.store.message(room.as_str(), seq),
            Backend::Redis(_) => Ok(None),
        }
    }

    /// Redis mode: an `edit` or `delete` event came from the room's stream. The held
    /// message it changes (and on a deletion, the held edit events of it) take the
    /// change exactly as the append script made it in Redis: each instance applies it
    /// itself, in seq order, as it delivers the event.
    pub(super) fn apply_delivered_change(&mut self, room: &RoomName, event: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            of: u64,
            ts: u64,
            #[serde(default)]
            uid: String,
            #[serde(default)]
            emoji: String,
            #[serde(default)]
            on: bool,
        }
        let Ok(e) = serde_json::from_slice::<Event>(event) else { return };
        let Some(r) = self.rooms.get_mut(room) else { return };
        let held = r.history.get(e.of).map(Stored::json);
        let rewrite = match e.kind {
            "edit" => held.and_then(|m| redis::edited(&m, event, e.ts)),
            "delete" => held.and_then(|m| redis::deleted(&m)),
            "react" => held.and_then(|m| reactions::set(&m, &e.emoji, &e.uid, e.on).ok().map(Bytes::from)),
            _ => return,
        };
        if let Some(json) = rewrite {
            r.history.replace(e.of, wire::text_frame(&json));
        }
        if e.kind == "delete" {
            let scrub = |json: &[u8]| redis::deleted(json).map(|j| j.to_vec());
            let mut rewrites = edit_events_of(r.history.after(e.of), e.of, room, scrub);
            rewrites.extend(replies_to(r.history.after(e.of), e.of, room));
            for w in rewrites {
                r.history.replace(w.seq, w.frame);
            }
        }
    }

    /// The `reply` object of a reply to message `of` in `room` (local mode: from the
    /// ring or the store): `not_found` when `of` is not a message of the room.
    pub(super) fn reply_quote(&mut self, room: &RoomName, of: u64) -> Result<Vec<u8>, ProtocolError> {
        let original = self.original(room, of).map_err(|e| {
            log::warn!("reply to {room}/{of}: reading the original failed: {e}");
            ProtocolError::new(ErrorCode::Unavailable, "the message store cannot be read; retry")
        })?;
        crate::store::replies::quote(original.as_deref(), of).map_err(|_| no_reply_target(room, of))
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

/// The held replies to message `of`, their quote of it made the deleted one (it was
/// deleted), as the store rewrites them.
fn replies_to<'a>(held: impl Iterator<Item = &'a Stored>, of: u64, room: &RoomName) -> Vec<RingRewrite> {
    held.filter_map(|m| {
        let unquoted = crate::store::replies::unquote(&m.json(), of)?;
        Some(RingRewrite { room: room.clone(), seq: m.seq, frame: wire::text_frame(&unquoted) })
    })
    .collect()
}

/// The held edit events of message `of`, without their text (it was deleted): `scrub`
/// takes it out.
fn edit_events_of<'a>(
    held: impl Iterator<Item = &'a Stored>,
    of: u64,
    room: &RoomName,
    scrub: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Vec<RingRewrite> {
    held.filter_map(|m| {
        let json = m.json();
        let v: Value = serde_json::from_slice(&json).ok()?;
        (v["type"] == "edit" && v["of"] == of).then_some(())?;
        let scrubbed = scrub(&json)?;
        Some(RingRewrite { room: room.clone(), seq: m.seq, frame: wire::text_frame(&scrubbed) })
    })
    .collect()
}
