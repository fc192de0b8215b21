//! The dispatcher in Redis mode (`--redis`): how joins, posts and deliveries go
//! through [`crate::cluster`] instead of the local journal and rings.
//!
//! Redis assigns `seq` and stores the message; the ack goes out when the store
//! answers; every instance, this one included, delivers a room's messages as its
//! reader thread sees them in the room's stream, so all instances deliver one order.
//! A joining client is not a member until its history has arrived: then it is given
//! the stored messages up to what the reader has delivered here (`live_head`), the
//! rest from the local ring, and becomes a member, so live delivery continues with
//! exactly the next seq. Still the only owner of room state; never waits on Redis.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::{now_ms, Dispatcher};
use crate::cluster::{split_msg_json, ClusterEvent, Request};
use crate::history::{History, Stored};
use crate::outbox::ConnId;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, SystemEvent, UserRef};
use crate::redis_store::{Appended, Delivery, Health};
use crate::wire;

/// The part of another instance's event this one reads.
#[derive(serde::Deserialize)]
struct RemoteEvent {
    #[serde(rename = "type")]
    kind: String,
    event: Option<SystemEvent>,
    user: Option<RemoteUser>,
}

#[derive(serde::Deserialize)]
struct RemoteUser {
    id: String,
    name: String,
}

impl Dispatcher {
    fn cluster(&self) -> &crate::cluster::Cluster {
        self.cluster.as_ref().expect("called in Redis mode only")
    }

    /// Asks Redis for what a joining client needs; membership follows the answer.
    pub(super) fn cluster_join(&mut self, id: ConnId, room: RoomName, since: Option<u64>, silent: bool) {
        let client = self.client(id);
        let request = Request::Join {
            conn: id,
            room,
            since,
            recent: self.cfg.join_history,
            uid: client.uid.clone(),
            name: client.name.clone(),
            silent,
        };
        self.cluster().send(request);
    }

    /// Hands a message to Redis, which assigns its seq; the ack follows the answer.
    pub(super) fn cluster_post(&mut self, id: ConnId, room: RoomName, text: &str, msg_id: Option<String>) {
        let client = self.client(id);
        let json = ServerMsg::Msg {
            room: room.as_str(),
            seq: 0,
            id: msg_id.as_deref(),
            ts: now_ms(),
            user: &client.name,
            uid: &client.uid,
            text,
        }
        .to_json();
        let (prefix, suffix) = split_msg_json(&json);
        let uid = client.uid.clone();
        self.cluster().send(Request::Append { conn: id, room, uid, id: msg_id, prefix, suffix });
    }

    /// The last local member left: stop reading the room's stream.
    pub(super) fn cluster_room_empty(&mut self, room: &RoomName) {
        let Some(cluster) = &self.cluster else { return };
        if let Some(r) = self.rooms.get_mut(room) {
            r.live_head = None;
            r.history = History::new(self.cfg.history_per_room, self.cfg.dedup_per_room);
        }
        cluster.unwatch(room);
    }

    pub(super) fn on_cluster(&mut self, ev: ClusterEvent) {
        match ev {
            ClusterEvent::Appended { conn, room, id, result } => self.on_appended(conn, &room, id, result),
            ClusterEvent::History { conn, room, since, silent, result } => match result {
                Ok((range, users)) => self.on_history(conn, room, since, silent, range, users),
                Err(message) => {
                    if let Some(c) = self.clients.get_mut(&conn) {
                        c.rooms.retain(|r| *r != room);
                    }
                    let e = ProtocolError::new(ErrorCode::Unavailable, message).with_ref(Some("join".into()));
                    self.reply_error(conn, &e);
                }
            },
            ClusterEvent::Delivery(d) => self.on_delivery(d),
            ClusterEvent::Arrived { room, uid, name } => self.remote_presence(&room, SystemEvent::Join, uid, name),
            ClusterEvent::Vanished { room, uid, name } => self.remote_presence(&room, SystemEvent::Leave, uid, name),
        }
    }

    /// A user on another instance arrived, left or was renamed: announced here once,
    /// whether heard first from the events channel or from presence polling, and never
    /// for a user who is also connected here.
    fn remote_presence(&mut self, room: &RoomName, event: SystemEvent, uid: String, name: String) {
        let limit = self.cfg.presence_limit;
        let Some(r) = self.rooms.get_mut(room) else { return };
        if r.live_head.is_none() || r.present.contains_key(uid.as_str()) {
            return;
        }
        let new = match event {
            SystemEvent::Join => r.remote.insert(uid.clone(), name.clone()).is_none(),
            SystemEvent::Leave => r.remote.remove(&uid).is_some(),
            SystemEvent::Nick => r.remote.insert(uid.clone(), name.clone()).as_ref() != Some(&name),
        };
        if !new || !r.announces(limit) {
            return;
        }
        let frame = wire::encode(&ServerMsg::System {
            room: room.as_str(),
            event,
            user: UserRef { id: &uid, name: &name },
            ts: now_ms(),
            old_name: None,
        });
        self.stage_room(room, &frame, None);
    }

    fn on_appended(&mut self, conn: ConnId, room: &RoomName, id: Option<String>, result: Result<Appended, String>) {
        let (seq, dup) = match result {
            Ok(Appended::Stored { seq, .. }) => {
                self.metrics.messages_accepted.fetch_add(1, Relaxed);
                (seq, false)
            }
            Ok(Appended::Duplicate { seq }) => {
                self.metrics.messages_duplicate.fetch_add(1, Relaxed);
                (seq, true)
            }
            Err(message) => {
                let e = ProtocolError::new(ErrorCode::Unavailable, message).with_ref(id.or(Some("msg".into())));
                self.reply_error(conn, &e);
                return;
            }
        };
        let (Some(id), Some(client)) = (id, self.clients.get(&conn)) else { return };
        let conn = client.conn.clone();
        self.stage(&conn, wire::encode(&ServerMsg::Ack { id: &id, room: room.as_str(), seq, dup }));
    }

    fn on_history(
        &mut self,
        conn: ConnId,
        room: RoomName,
        since: Option<u64>,
        silent: bool,
        range: crate::redis_store::Range,
        users: Vec<(String, String)>,
    ) {
        let Some(client) = self.clients.get(&conn) else { return };
        if !client.rooms.contains(&room) {
            return; // left before the answer came
        }
        let conn_arc = client.conn.clone();
        let client_uid = client.uid.clone();
        let r = self.rooms.get_mut(&room).expect("admitted rooms exist");
        if r.live_head.is_none() {
            // First local member: read the stream from right after what this history holds.
            r.live_head = Some(range.head);
            self.cluster.as_ref().expect("Redis mode").watch(&room, range.head);
        }
        let live = r.live_head.expect("set above");
        for (uid, name) in &users {
            if !r.present.contains_key(uid.as_str()) && uid.as_str() != &*client_uid {
                r.remote.insert(uid.clone(), name.clone());
            }
        }
        // Stored messages up to what the reader delivered here, then what it delivered
        // since the history was read (from the ring), so nothing is missed or repeated.
        let mut messages: Vec<Bytes> =
            range.messages.iter().filter(|m| m.seq <= live).map(|m| m.json.clone()).collect();
        let after = range.head.max(since.unwrap_or(0));
        let later: Vec<&Stored> = r.history.since(after).messages.into_iter().filter(|m| m.seq <= live).collect();
        if silent {
            for m in later {
                self.staged.push(crate::fanout::Out::One(conn_arc.clone(), m.frame.clone()));
            }
        } else {
            messages.extend(later.iter().map(|m| m.json()));
            let limit = self.cfg.presence_limit;
            let joined = wire::encode(&ServerMsg::Joined {
                room: room.as_str(),
                head: live,
                users: users.iter().take(limit).map(|(id, name)| UserRef { id, name }).collect(),
                users_total: users.len(),
            });
            let history = wire::history_frame(room.as_str(), range.complete, messages.iter().map(|m| &m[..]));
            self.stage(&conn_arc, joined);
            self.stage(&conn_arc, history);
        }
        if !self.rooms.get(&room).is_some_and(|r| r.members.contains_key(&conn)) {
            self.add_member(conn, &room);
        }
    }

    fn on_delivery(&mut self, d: Delivery) {
        match d {
            Delivery::Msg { room, seq, json } => {
                let Some(room) = RoomName::parse(&room) else { return };
                let Some(r) = self.rooms.get_mut(&room) else { return };
                match r.live_head {
                    Some(live) if seq > live => r.live_head = Some(seq),
                    _ => return, // not watched here, or already delivered
                }
                let frame = wire::text_frame(&json);
                r.history.push(Stored { seq, frame: frame.clone() }, "", None);
                self.staged_msgs += 1;
                self.stage_room(&room, &frame, None);
            }
            Delivery::Gap { room, from, to } => {
                log::warn!("redis: messages {from}..={to} of {room} were trimmed before delivery");
                let Some(room) = RoomName::parse(&room) else { return };
                if let Some(r) = self.rooms.get_mut(&room) {
                    if r.live_head.is_some() {
                        r.live_head = Some(to);
                        r.history = History::new(self.cfg.history_per_room, self.cfg.dedup_per_room);
                    }
                }
            }
            Delivery::Event { room, json, .. } => {
                let Some(room) = RoomName::parse(&room) else { return };
                if self.rooms.get(&room).is_none_or(|r| r.live_head.is_none()) {
                    return;
                }
                match serde_json::from_slice::<RemoteEvent>(&json) {
                    Ok(RemoteEvent { kind, event: Some(event), user: Some(user) }) if kind == "system" => {
                        self.remote_presence(&room, event, user.id, user.name)
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
