//! Read markers: how far each user has read each room, and the `read` command that
//! moves one forward. In local mode the dispatcher keeps the markers of the rooms in
//! memory (read from the store with a room, dropped when it leaves memory) and writes
//! a moved one with the batch; in
//! Redis mode Redis keeps them and tells the other instances
//! ([`Dispatcher::cluster_read`]). Either way each of the user's connections in the
//! room hears of a move, so a room read on one device is read on all of them.
//!
//! Each marker comes with the user's unread mentions in the room (`mentions_unread` on
//! `joined` and `read`): in local mode the dispatcher keeps the newest few seqs above
//! the marker of each user mentioned in each room in memory (read with the room, one
//! pushed per mention it stores, dropped as the marker passes them); in Redis mode the
//! scripts keep them beside the room's messages and hand them over with the marker.
//! Either way a client is told only of mentions it has been sent: it counts later ones
//! from the live `msg` frames that name it.
//!
//! Checked per `read` and per join, never per delivered message. Never moves a marker
//! back, past the room's head, or for a room the connection has not joined.

use std::collections::HashMap;

use crate::store::mentions::Unread;

use super::backend::Backend;
use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, UserId};

/// The users' markers of the rooms in memory, by room, and (local mode) their unread
/// mentions.
#[derive(Debug, Default)]
pub(super) struct ReadMarkers {
    seqs: HashMap<RoomName, HashMap<UserId, u64>>,
    mentions: HashMap<RoomName, HashMap<UserId, Unread>>,
}

impl ReadMarkers {
    /// How far `user` has read `room` (0: nothing).
    pub fn get(&self, user: &str, room: &RoomName) -> u64 {
        self.seqs.get(room).and_then(|users| users.get(user)).copied().unwrap_or(0)
    }

    /// Moves the marker to `seq`; false when it was there or further already.
    pub fn advance(&mut self, user: &UserId, room: &RoomName, seq: u64) -> bool {
        let at = self.seqs.entry(room.clone()).or_default().entry(user.clone()).or_insert(0);
        let moved = seq > *at;
        *at = (*at).max(seq);
        if let Some(unread) = self.mentions.get_mut(room).and_then(|users| users.get_mut(user)) {
            unread.read_to(seq);
        }
        moved
    }

    /// The room left memory (its markers are stored; they come back with it).
    pub fn forget_room(&mut self, room: &RoomName) {
        self.seqs.remove(room);
        self.mentions.remove(room);
    }

    /// `user`'s unread mentions in `room` as stored (a room coming back into memory).
    pub fn load_mentions(&mut self, room: &RoomName, user: &UserId, seqs: Vec<u64>) {
        let unread = Unread::from_seqs(seqs, self.get(user, room));
        if !unread.is_empty() {
            self.mentions.entry(room.clone()).or_default().insert(user.clone(), unread);
        }
    }

    /// Message `seq` of `room` mentions `users`.
    pub fn mentioned(&mut self, room: &RoomName, users: &[String], seq: u64) {
        for user in users {
            let users = self.mentions.entry(room.clone()).or_default();
            users.entry(UserId::from(user.as_str())).or_default().push(seq);
        }
    }

    /// Message `seq` of `room` was deleted, or its post taken back: it counts for no one.
    pub fn unmention(&mut self, room: &RoomName, seq: u64) {
        if let Some(users) = self.mentions.get_mut(room) {
            users.values_mut().for_each(|u| u.remove(seq));
            users.retain(|_, u| !u.is_empty());
        }
    }

    /// How many messages of `room` above `user`'s marker mention them (at most
    /// `mentions::MAX_UNREAD`).
    pub fn unread_mentions(&self, user: &str, room: &RoomName) -> u32 {
        self.mentions.get(room).and_then(|users| users.get(user)).map_or(0, Unread::count)
    }
}

impl Dispatcher {
    /// `read {room, seq}`: the marker moves forward (stored with the batch, or by Redis)
    /// and the user's connections in the room hear of it; a marker already there is a
    /// no-op.
    pub(super) fn read(&mut self, id: ConnId, room: RoomName, seq: u64) -> Result<(), ProtocolError> {
        let refer = |e: ProtocolError| e.with_ref(Some("read".into()));
        let client = &self.clients[&id];
        if !client.rooms.contains(&room) {
            return Err(refer(ProtocolError::new(ErrorCode::NotJoined, format!("join `{room}` first"))));
        }
        // What the client can have seen: the room's head here (in Redis mode, what this
        // instance delivered; Redis may hold more that has not arrived yet).
        let r = self.rooms.get(&room);
        let head = match &self.backend {
            Backend::Local(_) => r.map_or(0, |r| r.history.head()),
            Backend::Redis(_) => r.and_then(|r| r.live_head).unwrap_or(0),
        };
        if seq > head {
            return Err(refer(ProtocolError::new(
                ErrorCode::BadField,
                format!("`seq` {seq} is past the room's head {head}"),
            )));
        }
        let uid = client.uid.clone();
        match &mut self.backend {
            Backend::Local(local) => {
                if self.reads.advance(&uid, &room, seq) {
                    local.store.set_read(&uid, room.as_str(), seq);
                    let unread = self.reads.unread_mentions(&uid, &room);
                    self.tell_read(&uid, &room, seq, unread);
                }
            }
            Backend::Redis(_) => self.cluster_read(id, room, uid, seq),
        }
        Ok(())
    }

    /// `uid`'s marker of `room` moved to `seq`, leaving `mentions_unread` mentions
    /// above it: each of the user's connections in the room (here) gets a `read` frame.
    pub(super) fn tell_read(&mut self, uid: &str, room: &RoomName, seq: u64, mentions_unread: u32) {
        let Some(r) = self.rooms.get(room) else { return };
        let conns: Vec<_> = self.user_conns.of(uid).iter().filter_map(|c| r.members.get(c).cloned()).collect();
        let frame = wire::encode(&ServerMsg::Read { room: room.as_str(), seq, mentions_unread });
        for conn in conns {
            self.stage(&conn, frame.clone());
        }
    }
}
