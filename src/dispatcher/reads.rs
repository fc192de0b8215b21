//! Read markers: how far each user has read each room, and the `read` command that
//! moves one forward. The dispatcher keeps every marker in memory (loaded from the
//! store with the rooms), writes a moved one with the batch, and tells each of the
//! user's connections, so a room read on one device is read on all of them.
//!
//! Checked per `read` and per join, never per delivered message. Never moves a marker
//! back, past the room's head, or for a room the connection has not joined.

use std::collections::HashMap;

use super::backend::Backend;
use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, UserId};

/// Every user's markers.
#[derive(Debug, Default)]
pub(super) struct ReadMarkers {
    seqs: HashMap<UserId, HashMap<RoomName, u64>>,
}

impl ReadMarkers {
    /// How far `user` has read `room` (0: nothing).
    pub fn get(&self, user: &str, room: &RoomName) -> u64 {
        self.seqs.get(user).and_then(|rooms| rooms.get(room)).copied().unwrap_or(0)
    }

    /// Moves the marker to `seq`; false when it was there or further already.
    pub fn advance(&mut self, user: &UserId, room: &RoomName, seq: u64) -> bool {
        let at = self.seqs.entry(user.clone()).or_default().entry(room.clone()).or_insert(0);
        let moved = seq > *at;
        *at = (*at).max(seq);
        moved
    }
}

impl Dispatcher {
    /// `read {room, seq}`: the marker moves forward (stored with the batch) and every
    /// connection of the user hears of it; a marker already there is a no-op.
    pub(super) fn read(&mut self, id: ConnId, room: RoomName, seq: u64) -> Result<(), ProtocolError> {
        let refer = |e: ProtocolError| e.with_ref(Some("read".into()));
        let client = &self.clients[&id];
        if !client.rooms.contains(&room) {
            return Err(refer(ProtocolError::new(ErrorCode::NotJoined, format!("join `{room}` first"))));
        }
        let Backend::Local(local) = &mut self.backend else {
            return Err(refer(ProtocolError::new(
                ErrorCode::Unavailable,
                "read markers are not kept in Redis mode yet",
            )));
        };
        let head = self.rooms.get(&room).map_or(0, |r| r.history.head());
        if seq > head {
            return Err(refer(ProtocolError::new(
                ErrorCode::BadField,
                format!("`seq` {seq} is past the room's head {head}"),
            )));
        }
        let uid = client.uid.clone();
        if !self.reads.advance(&uid, &room, seq) {
            return Ok(());
        }
        local.store.set_read(&uid, room.as_str(), seq);
        let frame = wire::encode(&ServerMsg::Read { room: room.as_str(), seq });
        self.stage_user(&uid, &frame);
        Ok(())
    }
}
