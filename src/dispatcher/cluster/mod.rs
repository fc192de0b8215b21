//! Redis mode (`--redis`), the dispatcher's side: how joins, posts and deliveries go
//! through Redis instead of the local store.
//!
//! The blocking Redis calls run on the `redis-io` thread ([`crate::store::redis::io`]),
//! which `lib.rs` starts with a callback that hands every result back as a
//! [`super::Command::Cluster`]; this folder turns those results into room state and
//! staged frames. `rights` holds private rooms, DMs, invitations, kicks and read-only
//! rooms, whose facts live in Redis; `dms` blocks, closed DMs and the DM rate.
//!
//! Redis assigns `seq` and stores the message; the ack goes out when the store
//! answers; every instance, this one included, delivers a room's messages as its
//! reader thread sees them in the room's stream, so all instances deliver one order.
//! A joining client is not a member until its history has arrived: then it is given
//! the stored messages up to what the reader has delivered here (`live_head`), the
//! rest from the local ring, and becomes a member, so live delivery continues with
//! exactly the next seq. When the reader finds a room's history gone (Redis came back
//! without its data), each local member is answered again with `reset:true`.
//! Scroll-back and search go to Redis's own reader threads through
//! [`super::Backend::read`], as in local mode. An edit or deletion is checked and
//! applied by the append script that stores its event; each instance rewrites its ring
//! when the event arrives from the stream. Still the only owner of room state;
//! never waits on Redis.

mod dms;
mod rights;

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::backend::Backend;
use super::edits::{refusal, Change, Changer, EventOf};
use super::history::Stored;
use super::joined::JoinReply;
use super::state::{new_history, now_ms};
use super::tags::{AckTo, ClusterEvent, NewPost, Request};
use super::Dispatcher;
use crate::access::JoinRule;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, SystemEvent, User, UserId};
use crate::store::redis::io::{split_msg_json, Changed, HistoryFrom, JoinRead};
use crate::store::redis::{Appended, ChangeOf, Delivery, Entry, Health};
use crate::store::AccessChange;
use crate::webhooks::Event;

/// The part of another instance's event this one reads.
#[derive(serde::Deserialize)]
struct RemoteEvent {
    #[serde(rename = "type")]
    kind: String,
    event: Option<SystemEvent>,
    user: Option<RemoteUser>,
    /// A read marker's move: whose, and to where.
    uid: Option<String>,
    seq: Option<u64>,
    /// With a read marker's move: the seqs of the user's unread mentions left ("3 7").
    unread: Option<String>,
    /// An erasure's `erased` event: whether the user's messages are kept.
    keep: Option<bool>,
}

/// A read marker's move as the instances tell each other: the `read` frame's fields
/// and whose marker it is (never sent to a client as it is).
#[derive(serde::Serialize)]
struct MarkerMoved<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    seq: u64,
    uid: &'a str,
}

#[derive(serde::Deserialize)]
struct RemoteUser {
    id: String,
    name: String,
}

impl Dispatcher {
    /// Asks Redis for what a joining client needs; membership follows the answer.
    /// Redis checks who may join with the read (`private`: the room must be private;
    /// `create`: make the new room private, with this title).
    pub(super) fn cluster_join(
        &mut self,
        id: ConnId,
        room: RoomName,
        from: HistoryFrom,
        silent: bool,
        private: bool,
        create: Option<String>,
    ) {
        let Some(client) = self.clients.get(&id) else { return };
        let claim = client.access.rooms.as_ref().is_some_and(|c| c.allows(&room));
        let open = client.access.may_join(&room, self.cfg.rooms_default);
        let rule = JoinRule { claim, open, private, create, addr: self.kick_address(id) };
        self.backend.tell_cluster(|| Request::Join {
            rule,
            conn: id,
            room,
            from,
            recent: self.cfg.join_history,
            uid: client.uid.clone(),
            name: client.name.clone(),
            silent,
        });
    }

    /// Hands a message to Redis, which assigns its seq; the ack follows the answer.
    pub(super) fn cluster_post(&mut self, post: NewPost<'_>) -> Result<(), ProtocolError> {
        let NewPost { poster, ack, room, text, msg_id, reply_to, files, mentions } = post;
        let mut json = ServerMsg::Msg {
            room: room.as_str(),
            seq: 0,
            id: msg_id.as_deref(),
            ts: now_ms(),
            user: &poster.name,
            uid: &poster.id,
            text,
            files,
        }
        .to_json();
        // A reply quotes its original from the ring when it is there; else the I/O
        // thread reads it from Redis and fills the placeholder (`quote_of`).
        let mut quote_of = None;
        if let Some(of) = reply_to {
            let held = self.rooms.get(&room).and_then(|r| r.history.get(of)).map(Stored::json);
            let reply = match held {
                Some(original) => crate::store::replies::quote(Some(&original), of).map_err(|_| {
                    super::edits::no_reply_target(&room, of).with_ref(msg_id.clone().or(Some("msg".into())))
                })?,
                None => {
                    quote_of = Some(of);
                    crate::store::replies::placeholder(of)
                }
            };
            json = crate::store::replies::with_reply(&json, &reply);
        }
        if !mentions.is_empty() {
            let ids = serde_json::to_vec(mentions).expect("ids serialize");
            json = crate::store::replies::with_field(&json, "mentions", &ids);
        }
        let (prefix, suffix) = split_msg_json(&json);
        let uid = poster.id.clone();
        // The server API posts as the server: never refused by a read-only room.
        let by_mod = match &ack {
            AckTo::Conn(conn) => self.clients.get(conn).is_some_and(|c| c.access.is_mod()),
            AckTo::Api(_) => true,
        };
        self.backend.tell_cluster(|| Request::Append { ack, room, uid, id: msg_id, prefix, suffix, by_mod, quote_of });
        Ok(())
    }

    /// Hands an edit or deletion to Redis, whose append script checks it against the
    /// message as stored (whichever instance changed it last) and applies it with the
    /// event; the ack or the refusal follows the answer, the event comes from the stream.
    pub(super) fn cluster_change(
        &mut self,
        changer: Changer,
        room: RoomName,
        of: u64,
        change: Change,
        id: Option<String>,
    ) {
        let Changer { user, is_mod, ack, actor } = changer;
        let ts = now_ms();
        if let (Change::Delete, Some(by)) = (&change, actor) {
            // Recorded once the append script stored it (`on_changed`).
            self.mod_deletes.insert((room.clone(), of), by);
        }
        let about = EventOf { room: &room, of, id: id.as_deref(), ts, user: &user.name, uid: &user.id };
        let (prefix, suffix) = split_msg_json(&change.event(0, &about));
        let change = match change {
            Change::Edit(_) => ChangeOf::Edit { of, ts },
            Change::Delete => ChangeOf::Delete { of, by_mod: is_mod },
            Change::React { .. } => ChangeOf::React { of },
        };
        self.backend.tell_cluster(|| Request::Change { ack, room, uid: user.id, id, prefix, suffix, change });
    }

    /// The answer to [`Self::cluster_change`]: an ack (the event itself arrives from the
    /// stream, like every message), or the refusal. The instance that stored the event
    /// tells the webhook receivers.
    fn on_changed(
        &mut self,
        ack: AckTo,
        room: &RoomName,
        (uid, id): (&str, Option<String>),
        change: ChangeOf,
        result: Changed,
        author: Option<String>,
    ) {
        let (kind, of) = match change {
            ChangeOf::Edit { of, .. } => ("edit", of),
            ChangeOf::Delete { of, .. } => ("delete", of),
            ChangeOf::React { of } => ("react", of),
        };
        let deleted_by = match change {
            ChangeOf::Delete { .. } => self.mod_deletes.remove(&(room.clone(), of)),
            ChangeOf::Edit { .. } | ChangeOf::React { .. } => None,
        };
        let (seq, dup) = match result {
            Ok(Ok(Appended::Stored { seq, json })) => {
                // A moderator's deletion of someone else's message, as single-instance
                // mode records it: whose message it was, where (room, seq).
                if let Some(by) = deleted_by.filter(|_| author.as_deref() != Some(uid)) {
                    let author = author.unwrap_or_default();
                    self.record(&by, "delete", &author, room.as_str(), format!("message {of}"));
                }
                log::info!("{kind} of message {of} in {room} by {uid} (event {seq})");
                self.metrics.messages_accepted.fetch_add(1, Relaxed);
                self.stage_change_event(room, seq, &json);
                if let (ChangeOf::Delete { .. }, Some(files)) = (&change, &self.files) {
                    files.tell_deleted(room.as_str(), of);
                }
                (seq, false)
            }
            Ok(Ok(Appended::Duplicate { seq })) => {
                self.metrics.messages_duplicate.fetch_add(1, Relaxed);
                (seq, true)
            }
            Ok(Err(why)) => return self.refuse(ack, refusal(kind, room, of, why), id.as_deref().unwrap_or(kind)),
            Err(message) => {
                return self.refuse(
                    ack,
                    ProtocolError::new(ErrorCode::Unavailable, message),
                    id.as_deref().unwrap_or(kind),
                )
            }
        };
        self.stage_ack(ack, room, id.as_deref(), seq, dup);
    }

    /// Answers a refused post or change: an error frame to a client (referring to
    /// `reference`), or the error to an API caller.
    fn refuse(&mut self, ack: AckTo, e: ProtocolError, reference: &str) {
        let e = e.with_ref(Some(reference.to_owned()));
        match ack {
            AckTo::Conn(conn) => self.reply_error(conn, &e),
            AckTo::Api(reply) => self.api_replies.push((reply, Err(e))),
        }
    }

    /// Hands a read marker's move to Redis, which keeps it if it moves forward and tells
    /// the other instances; this instance's connections hear of it with the answer.
    pub(super) fn cluster_read(&mut self, conn: ConnId, room: RoomName, uid: UserId, seq: u64) {
        let moved = MarkerMoved { kind: "read", room: room.as_str(), seq, uid: &uid };
        let event = serde_json::to_vec(&moved).expect("a marker's move always serializes");
        self.backend.tell_cluster(|| Request::Read { conn, room, uid, seq, event });
    }

    /// How many of a user's unread mentions (`seqs`, from Redis) this instance has
    /// delivered in `room`: a client counts those it gets later from their live frames,
    /// so a count that held them too would count them twice.
    fn delivered_mentions(&self, room: &RoomName, seqs: &[u64]) -> u32 {
        let live = self.rooms.get(room).and_then(|r| r.live_head).unwrap_or(0);
        seqs.iter().filter(|s| **s <= live).count() as u32
    }

    /// The last local member left: stop reading the room's stream.
    pub(super) fn cluster_room_empty(&mut self, room: &RoomName) {
        let Backend::Redis(cluster) = &self.backend else { return };
        if let Some(r) = self.rooms.get_mut(room) {
            r.live_head = None;
            r.history = new_history(&self.cfg);
        }
        cluster.io.unwatch(room);
    }

    pub(super) fn on_cluster(&mut self, ev: ClusterEvent) {
        match ev {
            ClusterEvent::Appended { ack, room, id, result } => self.on_appended(ack, &room, id, result),
            ClusterEvent::Changed { ack, room, uid, id, change, result, author } => {
                self.on_changed(ack, &room, (&uid, id), change, result, author)
            }
            ClusterEvent::Read { conn, room, uid, seq, result } => match result {
                Ok(moved) => {
                    if let Some(unread) = moved {
                        let count = self.delivered_mentions(&room, &unread);
                        self.tell_read(&uid, &room, seq, count);
                    }
                }
                Err(message) => {
                    let e = ProtocolError::new(ErrorCode::Unavailable, message).with_ref(Some("read".into()));
                    self.reply_error(conn, &e);
                }
            },
            ClusterEvent::History { conn, room, since, silent, result } => match result {
                Ok(read) => self.on_history(conn, room, since, silent, read),
                Err(e) => {
                    if let Some(c) = self.clients.get_mut(&conn) {
                        c.rooms.retain(|r| *r != room);
                    }
                    self.release_room(conn, &room);
                    self.reply_error(conn, &e);
                }
            },
            ClusterEvent::Welcome { conn, frames } => {
                if let Some(c) = self.clients.get(&conn).map(|c| c.conn.clone()) {
                    for frame in frames {
                        self.stage(&c, frame);
                    }
                }
            }
            ClusterEvent::Told { conn, result } => self.on_told(conn, result),
            ClusterEvent::Delivery(d) => self.on_delivery(d),
            ClusterEvent::Arrived { room, user } => self.remote_presence(&room, SystemEvent::Join, user),
            ClusterEvent::Vanished { room, user } => self.remote_presence(&room, SystemEvent::Leave, user),
            ClusterEvent::Disconnect { uid } => {
                self.disconnect(&uid);
            }
            ClusterEvent::Bans(bans) => self.on_bans(bans),
        }
    }

    /// A user on another instance arrived, left or was renamed: announced here once,
    /// whether heard first from the events channel or from presence polling, and never
    /// for a user who is also connected here.
    fn remote_presence(&mut self, room: &RoomName, event: SystemEvent, user: User) {
        let limit = self.cfg.presence_limit;
        let Some(r) = self.rooms.get_mut(room) else { return };
        if r.live_head.is_none() || r.present.contains_key(&user.id) {
            return;
        }
        let new = match event {
            SystemEvent::Join => r.remote.insert(user.id.clone(), user.name.clone()).is_none(),
            SystemEvent::Leave => r.remote.remove(&user.id).is_some(),
            SystemEvent::Nick => r.remote.insert(user.id.clone(), user.name.clone()).as_ref() != Some(&user.name),
        };
        if !new || !r.announces(limit) {
            return;
        }
        let frame = Self::system_frame(room, event, user.as_ref(), None);
        self.stage_room(room, &frame, None);
    }

    fn on_appended(
        &mut self,
        ack: AckTo,
        room: &RoomName,
        id: Option<String>,
        result: Result<Appended, ProtocolError>,
    ) {
        let (seq, dup) = match result {
            Ok(Appended::Stored { seq, json }) => {
                self.metrics.messages_accepted.fetch_add(1, Relaxed);
                self.stage_message_event(room, seq, &json);
                self.files_posted(room, seq, &json);
                if crate::access::is_dm(room) {
                    self.reopen_after_post(&ack, room, &json);
                }
                (seq, false)
            }
            Ok(Appended::Duplicate { seq }) => {
                self.metrics.messages_duplicate.fetch_add(1, Relaxed);
                (seq, true)
            }
            Err(e) => return self.refuse(ack, e, id.as_deref().unwrap_or("msg")),
        };
        self.stage_ack(ack, room, id.as_deref(), seq, dup);
    }

    /// Webhook events for a message this instance stored: only the instance that
    /// stored it tells the receivers, so each is told once however many instances run.
    fn stage_message_event(&mut self, room: &RoomName, seq: u64, json: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Stored<'a> {
            #[serde(borrow)]
            user: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            uid: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            text: std::borrow::Cow<'a, str>,
            #[serde(default)]
            mentions: Vec<String>,
        }
        if !self.webhooks.enabled() {
            return;
        }
        let Ok(m) = serde_json::from_slice::<Stored>(json) else { return };
        if seq == 1 {
            self.webhooks.stage(&Event::RoomCreated { room: room.as_str() });
        }
        self.webhooks.stage(&Event::Message { room: room.as_str(), seq, user: &m.user, uid: &m.uid, text: &m.text });
        if !m.mentions.is_empty() {
            let (user, uid, text, users) = (&m.user, &m.uid, &m.text, &m.mentions[..]);
            self.webhooks.stage(&Event::Mention { room: room.as_str(), seq, user, uid, text, users });
        }
    }

    fn on_history(&mut self, conn: ConnId, room: RoomName, since: Option<u64>, silent: bool, read: JoinRead) {
        let JoinRead { range, users, reset, private, title, read_only } = read;
        let Some(client) = self.clients.get(&conn) else { return };
        if !client.rooms.contains(&room) {
            return; // left before the answer came
        }
        let conn_arc = client.conn.clone();
        let client_uid = client.uid.clone();
        if self.rooms.get(&room).is_some_and(|r| r.live_head.is_none()) {
            // From here on the room's events keep this up to date.
            self.moderation.apply(&AccessChange::ReadOnly { room: room.to_string(), on: read_only });
        }
        let (Some(r), Backend::Redis(cluster)) = (self.rooms.get_mut(&room), &self.backend) else { return };
        let live = *r.live_head.get_or_insert_with(|| {
            // First local member: read the stream from right after what this history holds.
            cluster.io.watch(&room, range.head, range.epoch.clone());
            range.head
        });
        for u in &users {
            if !r.present.contains_key(&u.id) && u.id != client_uid {
                r.remote.insert(u.id.clone(), u.name.clone());
            }
        }
        // Stored messages up to what the reader delivered here, then what it delivered
        // since the history was read (from the ring), so nothing is missed or repeated.
        let stored: Vec<&Entry> = range.messages.iter().filter(|m| m.seq <= live).collect();
        let mut messages: Vec<Bytes> = stored.iter().map(|m| m.json.clone()).collect();
        let after = range.head.max(since.unwrap_or(0));
        let later: Vec<&Stored> = r.history.since(after).messages.into_iter().filter(|m| m.seq <= live).collect();
        if silent {
            for m in later {
                self.staged.push(crate::delivery::fanout::Out::One(conn_arc.clone(), m.frame.clone()));
            }
        } else {
            // An incomplete resume says where it starts (what is older was trimmed).
            let first = stored.first().map(|m| m.seq).or(later.first().map(|m| m.seq)).unwrap_or(live + 1);
            messages.extend(later.iter().map(|m| m.json()));
            let reply = JoinReply {
                head: live,
                epoch: range.epoch.as_deref(),
                users: users.iter().take(self.cfg.presence_limit).map(User::as_ref).collect(),
                users_total: users.len(),
                complete: range.complete,
                read_seq: range.read_seq,
                // Those up to what this history holds: later ones come as live frames.
                mentions_unread: range.mentions.iter().filter(|s| **s <= live).count() as u32,
                private,
                title: title.as_deref(),
                read_only,
            };
            let meta = wire::HistoryMeta { reset, first: (!range.complete).then_some(first), ..Default::default() };
            for frame in reply.frames(&room, meta, &messages, self.cfg.max_frame_bytes) {
                self.staged.push(crate::delivery::fanout::Out::Answer(conn_arc.clone(), frame));
            }
        }
        match self.rooms.get_mut(&room) {
            Some(r) if r.members.contains_key(&conn) => {
                r.unmute(conn);
            }
            _ => self.add_member(conn, &room),
        }
    }

    /// Redis lost the room's history (it came back without its data, or older): the
    /// room goes on from `head` of the new one, and each local member is sent `joined`
    /// and the new history with `reset:true`, as a resume from the old epoch would be.
    /// Until its answer is staged a member gets no live frame of the room: a message of
    /// the new history must not reach it as if it were the old one's.
    fn history_lost(&mut self, room: &RoomName, head: u64) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        if r.live_head.is_none() {
            return;
        }
        r.live_head = Some(head);
        r.history = new_history(&self.cfg);
        r.mute_all();
        let members: Vec<ConnId> = r.members.keys().copied().collect();
        for conn in members {
            self.cluster_join(conn, room.clone(), HistoryFrom::Lost, false, false, None);
        }
    }

    fn on_delivery(&mut self, d: Delivery) {
        match d {
            Delivery::Msg { room, seq, json } => {
                let Some(r) = self.rooms.get_mut(&room) else { return };
                match r.live_head {
                    Some(live) if seq > live => r.live_head = Some(seq),
                    _ => return, // not watched here, or already delivered
                }
                let scrubbed = self.recently_erased.scrub(&json);
                let json = scrubbed.as_deref().unwrap_or(&json);
                let frame = wire::text_frame(json);
                let Some(r) = self.rooms.get_mut(&room) else { return };
                r.history.push(Stored { seq, frame: frame.clone() }, "", None);
                self.staged_msgs += 1;
                self.stage_room(&room, &frame, None);
                if !json.starts_with(br#"{"type":"msg","#) {
                    self.apply_delivered_change(&room, json);
                    self.apply_delivered_moderation(&room, json);
                }
            }
            Delivery::Reset { room, head } => self.history_lost(&room, head),
            Delivery::User { json } => self.on_user_frame(&json),
            Delivery::Gap { room, from, to } => {
                log::warn!("redis: messages {from}..={to} of {room} were trimmed before delivery");
                if let Some(r) = self.rooms.get_mut(&room) {
                    if r.live_head.is_some() {
                        r.live_head = Some(to);
                        r.history = new_history(&self.cfg);
                    }
                }
            }
            Delivery::Event { room, json, .. } => {
                if self.rooms.get(&room).is_none_or(|r| r.live_head.is_none()) {
                    return;
                }
                match serde_json::from_slice::<RemoteEvent>(&json) {
                    Ok(RemoteEvent { kind, event: Some(event), user: Some(user), .. }) if kind == "system" => {
                        self.remote_presence(&room, event, User { id: user.id.into(), name: user.name })
                    }
                    // An erasure from an instance of an earlier version, which told each
                    // room's channel (now the users channel: cluster/rights.rs).
                    Ok(RemoteEvent { kind, uid: Some(uid), keep: Some(keep), .. }) if kind == "erased" => {
                        self.anonymize_rings(&uid, keep, vec![room])
                    }
                    Ok(RemoteEvent { kind, uid: Some(uid), seq: Some(seq), unread, .. }) if kind == "read" => {
                        let unread = crate::store::mentions::parse_seqs(unread.as_deref().unwrap_or_default());
                        let count = self.delivered_mentions(&room, &unread);
                        self.tell_read(&uid, &room, seq, count)
                    }
                    Ok(_) => self.stage_room(&room, &wire::text_frame(&json), None),
                    Err(e) => log::warn!("redis: skipping an event that does not parse: {e}"),
                }
            }
            Delivery::Status { link, health } => {
                let up = health == Health::Available;
                log::info!("redis {link:?} link {}", if up { "up" } else { "down" });
                self.metrics.set_redis(up);
            }
        }
    }
}
