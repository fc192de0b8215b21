//! Read markers in Redis: how far each user has read each room, one hash per user
//! (`{p}:reads:{uid}`, room → seq). A marker only moves forward; a move is published on
//! the room's events channel in the same script, so every instance with the user's
//! connections in the room hears of it, in the order the moves were made. A join reads
//! the marker with the room's history (`RedisStore::range_for`).
//!
//! Never decides whether a marker may move past what a client has seen: the dispatcher
//! checks that first.

use super::store::envelope;
use super::{read_marks, RedisStore, RedisStoreError};
use crate::protocol::RoomName;

impl RedisStore {
    /// Moves `uid`'s marker of `room` to `seq` unless it is there or further already,
    /// and then publishes `event` (stamped with this instance, whose own events thread
    /// skips it) to the other instances watching the room. True when it moved.
    pub fn mark_read(&mut self, room: &RoomName, uid: &str, seq: u64, event: &[u8]) -> Result<bool, RedisStoreError> {
        let marks = read_marks(&self.opts.prefix, uid);
        let channel = self.keys(room).events();
        let payload = envelope(&self.opts.instance, event);
        self.call(|con, scripts| {
            scripts.mark_read.key(&marks).arg(room.as_str()).arg(seq).arg(&channel).arg(&payload).invoke(con)
        })
    }
}
