//! Read markers: how far each user has read each room, and the `read` command that
//! moves one forward. In local mode the dispatcher keeps the markers of the rooms in
//! memory (read from the store with a room, dropped when it leaves memory) and writes
//! a moved one with the batch; in
//! Redis mode Redis keeps them and tells the other instances
//! ([`Dispatcher::cluster_read`]). Either way each of the user's connections in the
//! room hears of a move, so a room read on one device is read on all of them.
//!
//! Checked per `read` and per join, never per delivered message. Never moves a marker
//! back, past the room's head, or for a room the connection has not joined.

use std::collections::HashMap;

use super::backend::Backend;
use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, UserId};

/// The users' markers of the rooms in memory, by room.
#[derive(Debug, Default)]
pub(super) struct ReadMarkers {
    seqs: HashMap<RoomName, HashMap<UserId, u64>>,
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
        moved
    }

    /// The room left memory (its markers are stored; they come back with it).
    pub fn forget_room(&mut self, room: &RoomName) {
        self.seqs.remove(room);
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
                    self.tell_read(&uid, &room, seq);
                }
            }
            Backend::Redis(_) => self.cluster_read(id, room, uid, seq),
        }
        Ok(())
    }

    /// `uid`'s marker of `room` moved to `seq`: each of the user's connections in the
    /// room (here) gets a `read` frame.
    pub(super) fn tell_read(&mut self, uid: &str, room: &RoomName, seq: u64) {
        let Some(r) = self.rooms.get(room) else { return };
        let conns: Vec<_> = self.user_conns.of(uid).iter().filter_map(|c| r.members.get(c).cloned()).collect();
        let frame = wire::encode(&ServerMsg::Read { room: room.as_str(), seq });
        for conn in conns {
            self.stage(&conn, frame.clone());
        }
    }
}
