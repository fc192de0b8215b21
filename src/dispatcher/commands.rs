//! Client commands: join, leave, post, typing and nick, checked against the client's
//! rooms and the server's limits, each staging the frames it produces.
//!
//! Staged frames go out only after the batch is committed
//! ([`super::Dispatcher::commit_and_deliver`]); nothing here writes to a socket.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use super::backend::Backend;
use super::durability::BatchPost;
use super::history::Stored;
use super::state::now_ms;
use super::tags::{AckTo, NewPost};
use super::Dispatcher;
use crate::delivery::fanout::Out;
use crate::delivery::outbox::{Conn, ConnId};
use crate::protocol::wire::{self, Frame, HistoryMeta};
use crate::protocol::{ClientMsg, ErrorCode, ProtocolError, RoomName, ServerMsg, SystemEvent, User, UserRef};
use crate::store::redis::io::HistoryFrom;
use crate::store::NewMessage;
use crate::store::{new_epoch, resume_resets};
use crate::webhooks::Event;

impl Dispatcher {
    pub(super) fn on_client(&mut self, id: ConnId, msg: ClientMsg) -> Result<(), ProtocolError> {
        if !self.clients.contains_key(&id) {
            return Ok(()); // already gone (slow consumer, shutdown): drop quietly
        }
        match msg {
            ClientMsg::Join { room, since, epoch, private } => self.join(id, room, since, epoch, private),
            ClientMsg::CreatePrivate { title } => self.create_private(id, title),
            ClientMsg::Dm { user } => self.dm(id, &user),
            ClientMsg::Block { user } => self.set_block(id, &user, true),
            ClientMsg::Unblock { user } => self.set_block(id, &user, false),
            ClientMsg::CloseDm { room } => self.close_dm(id, &room),
            ClientMsg::Invite { room, user } => self.invite(id, &room, &user),
            ClientMsg::Kick { room, user, minutes } => self.kick(id, room, &user, minutes),
            ClientMsg::Mode { room, read_only } => self.set_mode(id, room, read_only),
            ClientMsg::History { room, before, limit } => self.scroll_back(id, room, before, limit),
            ClientMsg::Search { room, q, before, limit } => self.search(id, room, q, before, limit),
            ClientMsg::Leave { room } => self.leave(id, &room),
            ClientMsg::Msg { room, text, id: msg_id, reply_to, files, mentions } => {
                self.post(id, room, &text, msg_id, (reply_to, &mentions), &files)
            }
            ClientMsg::FileUrls { room, files } => self.file_urls(id, &room, &files),
            ClientMsg::LegacyMsg { text } => {
                let lobby = RoomName::lobby();
                if !self.clients[&id].rooms.contains(&lobby) {
                    self.admit_to_room(id, &lobby)?;
                    match &self.backend {
                        Backend::Local(_) => self.add_member(id, &lobby),
                        Backend::Redis(_) => {
                            self.cluster_join(id, lobby.clone(), HistoryFrom::Recent, true, false, None)
                        }
                    }
                }
                self.post(id, lobby, &text, None, (None, &[]), &[])
            }
            ClientMsg::Typing { room } => self.typing(id, &room),
            ClientMsg::Nick { name } => self.nick(id, name),
            ClientMsg::Read { room, seq } => self.read(id, room, seq),
            ClientMsg::Edit { room, seq, text, id: msg_id } => {
                self.change_message(id, room, seq, super::edits::Change::Edit(text), msg_id)
            }
            ClientMsg::Delete { room, seq, id: msg_id } => {
                self.change_message(id, room, seq, super::edits::Change::Delete, msg_id)
            }
            ClientMsg::React { room, seq, emoji } => {
                self.change_message(id, room, seq, super::edits::Change::React { emoji, on: true }, None)
            }
            // A WebSocket's pings are answered by its thread. `POST /send` sends one
            // after what it carried: the pong, staged behind their answers, ends its wait.
            ClientMsg::Ping { t } => {
                let conn = self.clients[&id].conn.clone();
                self.stage(&conn, wire::encode(&ServerMsg::Pong { t: t.as_ref().map(|t| &*t.0) }));
                Ok(())
            }
        }
    }

    pub(super) fn stage(&mut self, conn: &Arc<Conn>, frame: Frame) {
        self.staged.push(Out::One(conn.clone(), frame));
    }

    /// Stages `frame` for every connection of `user` on this instance.
    pub(super) fn stage_user(&mut self, user: &str, frame: &Frame) {
        let conns: Vec<Arc<Conn>> =
            self.user_conns.of(user).iter().filter_map(|c| self.clients.get(c)).map(|c| c.conn.clone()).collect();
        for conn in conns {
            self.stage(&conn, frame.clone());
        }
    }

    pub(super) fn stage_room(&mut self, room: &RoomName, frame: &Frame, except: Option<ConnId>) {
        if let Some(r) = self.rooms.get_mut(room) {
            self.staged.push(Out::room(r.members(), except, frame.clone()));
        }
    }

    pub(super) fn reply_error(&mut self, id: ConnId, e: &ProtocolError) {
        self.metrics.error(e.code);
        if let Some(c) = self.clients.get(&id) {
            let conn = c.conn.clone();
            self.stage(&conn, wire::encode(&e.to_server_msg()));
        }
    }

    pub(super) fn not_joined(room: &RoomName, reference: Option<String>) -> ProtocolError {
        ProtocolError::new(ErrorCode::NotJoined, format!("join `{room}` first")).with_ref(reference)
    }

    pub(super) fn join(
        &mut self,
        id: ConnId,
        room: RoomName,
        since: Option<u64>,
        epoch: Option<String>,
        private: bool,
    ) -> Result<(), ProtocolError> {
        if private {
            self.join_private(&room)?;
        }
        let joining = !self.clients[&id].rooms.contains(&room);
        if joining {
            self.admit_to_room(id, &room)?;
        }
        if let Backend::Redis(_) = self.backend {
            let from = since.map_or(HistoryFrom::Recent, |since| HistoryFrom::Since { since, epoch });
            self.cluster_join(id, room, from, false, private, None);
            return Ok(());
        }
        self.settle(&room);
        let r = &self.rooms[&room];
        let reset = since.is_some_and(|s| resume_resets(s, epoch.as_deref(), r.history.head(), r.epoch.as_deref()));
        if let Some(since) = since.filter(|_| !reset && joining) {
            if !r.history.since(since).complete && self.resume_from_store(id, &room, since) {
                return Ok(()); // answered, and membership given, when the store has read
            }
        }
        let r = &self.rooms[&room];
        let (messages, complete, first) = match since.filter(|_| !reset) {
            Some(since) => {
                let replay = r.history.since(since);
                let first = (!replay.complete).then(|| r.history.oldest().unwrap_or(r.history.head() + 1));
                (replay.messages, replay.complete, first)
            }
            // Without `since` the client asked for nothing in particular: complete.
            None => (r.history.recent(self.cfg.join_history), true, None),
        };
        let json: Vec<Bytes> = messages.iter().map(|m| m.json()).collect();
        self.stage_join(id, &room, HistoryMeta { complete, first, reset, ..HistoryMeta::default() }, &json);
        Ok(())
    }

    /// Checks the room limits and counts `room` among the client's rooms (creating
    /// the room). Membership — receiving its messages — is [`Self::add_member`].
    pub(super) fn admit_to_room(&mut self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let client = &self.clients[&id];
        // Checked at every join, reconnects included: a token that no longer lists a
        // room no longer gets in. Never checked per delivered message.
        // Redis mode checks these with the join's read (`access::JoinRule`).
        if let Backend::Local(_) = self.backend {
            self.check_kick(room, id)?;
            if !self.privacy.may_join(room, &client.uid, &client.access, self.cfg.rooms_default) {
                return Err(crate::access::may_not_join(room));
            }
        }
        self.check_room_slots(id, room)?;
        self.ensure_room(room, Some(id)).map_err(|e| e.with_ref(Some("join".into())))?;
        if let Some(c) = self.clients.get_mut(&id) {
            c.rooms.push(room.clone());
        }
        self.hold_room(id, room);
        Ok(())
    }

    fn leave(&mut self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let Some(client) = self.clients.get_mut(&id) else { return Ok(()) };
        let Some(pos) = client.rooms.iter().position(|r| r == room) else {
            return Err(Self::not_joined(room, Some("leave".into())));
        };
        client.rooms.swap_remove(pos);
        self.remove_member(id, room);
        self.release_room(id, room);
        Ok(())
    }

    fn post(
        &mut self,
        id: ConnId,
        room: RoomName,
        text: &str,
        msg_id: Option<String>,
        (reply_to, mentions): (Option<u64>, &[String]),
        files: &[crate::protocol::FileDesc],
    ) -> Result<(), ProtocolError> {
        if files.iter().any(|f| !f.is_resolved()) {
            // Only a connection's thread fills files in; anything else names ids unchecked.
            let e = ProtocolError::new(ErrorCode::BadField, "files can be posted over a connection only");
            return Err(e.with_ref(msg_id.or(Some("msg".into()))));
        }
        let client = &self.clients[&id];
        if !client.rooms.contains(&room) {
            return Err(Self::not_joined(&room, msg_id.or(Some("msg".into()))));
        }
        self.check_writable_room(id, &room, msg_id.clone().or(Some("msg".into())))?;
        // Only users in the room (here or, with --redis, on another instance) can be
        // mentioned: a mention of anyone else is refused, so it is never silently lost.
        let present = |uid: &str| {
            self.rooms.get(&room).is_some_and(|r| r.present.contains_key(uid) || r.remote.contains_key(uid))
        };
        if let Some(outsider) = mentions.iter().find(|uid| !present(uid)) {
            let e = ProtocolError::new(
                ErrorCode::BadField,
                format!("`{outsider}` is not in `{room}`: only its members can be mentioned"),
            );
            return Err(e.with_ref(msg_id.or(Some("msg".into()))));
        }
        let client = &self.clients[&id];
        let poster = User { id: client.uid.clone(), name: client.name.clone() };
        self.store_message(NewPost {
            poster: &poster,
            ack: AckTo::Conn(id),
            room,
            text,
            msg_id,
            reply_to,
            files,
            mentions,
        })
    }

    /// Assigns the next seq (locally, or through Redis), stores the message and stages
    /// it for the room; the answer goes to `ack` once the store committed it. A repeated
    /// id from the same user is answered with the original seq and stores nothing.
    pub(super) fn store_message(&mut self, post: NewPost<'_>) -> Result<(), ProtocolError> {
        if let Backend::Redis(_) = self.backend {
            return self.cluster_post(post);
        }
        let NewPost { poster, ack, room, text, msg_id, reply_to, files, mentions } = post;
        if msg_id.is_some() {
            self.settle(&room); // a retry's dup ack must name a committed seq
        }
        self.check_writable(msg_id.clone().or(Some("msg".into())))?;
        // Only a reply pays for a lookup: the plain post's path stays as it was.
        let reply = match reply_to {
            Some(of) => {
                Some(self.reply_quote(&room, of).map_err(|e| e.with_ref(msg_id.clone().or(Some("msg".into()))))?)
            }
            None => None,
        };
        let Backend::Local(local) = &mut self.backend else { return Ok(()) };
        let Some(r) = self.rooms.get_mut(&room) else { return Ok(()) };
        let (uid, name) = (&poster.id, &poster.name);
        if let Some(seq) = msg_id.as_deref().and_then(|mid| r.history.seen(uid, mid)) {
            self.metrics.messages_duplicate.fetch_add(1, Relaxed);
            self.stage_ack(ack, &room, msg_id.as_deref(), seq, true);
            return Ok(());
        }
        let seq = r.history.next_seq();
        let ts = now_ms();
        let mut json =
            ServerMsg::Msg { room: room.as_str(), seq, id: msg_id.as_deref(), ts, user: name, uid, text, files }
                .to_json();
        if let (Some(store), false) = (&self.files, files.is_empty()) {
            store.tell_posted(room.as_str(), seq, files.iter().map(|f| f.id.clone()).collect(), ts);
        }
        if let Some(reply) = &reply {
            json = crate::store::replies::with_reply(&json, reply);
        }
        if !mentions.is_empty() {
            let ids = serde_json::to_vec(mentions).expect("ids serialize");
            json = crate::store::replies::with_field(&json, "mentions", &ids);
        }
        let frame = wire::text_frame(&json);
        let epoch = r.epoch.get_or_insert_with(new_epoch).clone();
        let payload = wire::payload(&frame);
        local.store.append(NewMessage { room: room.to_string(), epoch, seq, ts, text: text.to_owned(), json: payload });
        r.history.push(Stored { seq, frame: frame.clone() }, uid, msg_id.as_deref());
        if !mentions.is_empty() {
            let others: Vec<String> = mentions.iter().filter(|m| m.as_str() != &**uid).cloned().collect();
            self.reads.mentioned(&room, &others, seq);
        }
        if seq == 1 {
            self.webhooks.stage(&Event::RoomCreated { room: room.as_str() });
        }
        if crate::access::is_dm(&room) {
            let uid = uid.clone();
            self.reopen_dm(&room, &uid);
        }
        self.webhooks.stage(&Event::Message { room: room.as_str(), seq, user: name, uid, text });
        if !mentions.is_empty() {
            self.webhooks.stage(&Event::Mention { room: room.as_str(), seq, user: name, uid, text, users: mentions });
        }
        self.metrics.messages_accepted.fetch_add(1, Relaxed);
        self.staged_msgs += 1;
        let conn = match &ack {
            AckTo::Conn(id) => self.clients.get(id).map(|c| c.conn.clone()),
            AckTo::Api(_) => None,
        };
        let ack = self.stage_ack(ack, &room, msg_id.as_deref(), seq, false);
        self.stage_room(&room, &frame, None);
        let frame = self.staged.len() - 1;
        self.dirty_rooms.insert(room.clone());
        self.batch_posts.push(BatchPost { room, seq, uid: uid.clone(), id: msg_id, conn, ack, frame });
        Ok(())
    }

    /// Stages the answer to a post: an `ack` frame for a client that gave an id (its
    /// index in `staged` is returned), or the API caller's reply; either leaves only
    /// after the batch is committed.
    pub(super) fn stage_ack(
        &mut self,
        ack: AckTo,
        room: &RoomName,
        msg_id: Option<&str>,
        seq: u64,
        dup: bool,
    ) -> Option<usize> {
        match ack {
            AckTo::Conn(id) => {
                let (Some(mid), Some(c)) = (msg_id, self.clients.get(&id)) else { return None };
                self.staged_acks += 1;
                let conn = c.conn.clone();
                self.stage(&conn, wire::encode(&ServerMsg::Ack { id: mid, room: room.as_str(), seq, dup }));
                Some(self.staged.len() - 1)
            }
            AckTo::Api(reply) => {
                self.staged_acks += 1;
                self.api_replies.push((reply, Ok(serde_json::json!({ "seq": seq, "dup": dup }))));
                None
            }
        }
    }

    fn typing(&mut self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let client = &self.clients[&id];
        if !client.rooms.contains(room) {
            return Err(Self::not_joined(room, Some("typing".into())));
        }
        let frame = wire::encode(&ServerMsg::Typing {
            room: room.as_str(),
            user: UserRef { id: &client.uid, name: &client.name },
        });
        self.stage_room(room, &frame, Some(id));
        self.backend.publish(room, &frame);
        Ok(())
    }

    fn nick(&mut self, id: ConnId, name: String) -> Result<(), ProtocolError> {
        let Some(client) = self.clients.get_mut(&id) else { return Ok(()) };
        if !client.can_rename {
            return Err(ProtocolError::new(ErrorCode::Forbidden, "names come from the token in token mode")
                .with_ref(Some("nick".into())));
        }
        let old = std::mem::replace(&mut client.name, name.clone());
        let (uid, rooms, conn) = (client.uid.clone(), client.rooms.clone(), client.conn.clone());
        for room in rooms {
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            if let Some(p) = r.present.get_mut(&uid) {
                p.name = name.clone();
            }
            let announces = r.announces(self.cfg.presence_limit);
            let frame = Self::system_frame(&room, SystemEvent::Nick, UserRef { id: &uid, name: &name }, Some(&old));
            self.backend.tell_cluster(|| super::tags::Request::Rename {
                room: room.clone(),
                uid: uid.clone(),
                name: name.clone(),
            });
            if announces {
                self.stage_room(&room, &frame, None);
                self.backend.publish(&room, &frame);
            } else {
                self.stage(&conn, frame);
            }
        }
        Ok(())
    }
}
