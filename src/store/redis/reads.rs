//! Read markers in Redis: how far each user has read each room, one hash per user
//! (`{p}:reads:{uid}`, room → seq). A marker only moves forward; a move is published on
//! the room's events channel in the same script, so every instance with the user's
//! connections in the room hears of it, in the order the moves were made. A join reads
//! the marker with the room's history (`RedisStore::range_for`). The user's unread
//! mentions of the room (the room's `mentions` hash) follow the marker in the same
//! script.
//!
//! Never decides whether a marker may move past what a client has seen: the dispatcher
//! checks that first.

use super::store::envelope;
use super::{read_marks, RedisStore, RedisStoreError};
use crate::protocol::RoomName;
use crate::store::mentions::parse_seqs;

impl RedisStore {
    /// Moves `uid`'s marker of `room` to `seq` unless it is there or further already,
    /// and then publishes `event` (stamped with this instance, whose own events thread
    /// skips it; the script adds the unread mentions left, `"unread":"3 7"`) to the
    /// other instances watching the room. When it moved: the seqs of the user's unread
    /// mentions left above it.
    pub fn mark_read(
        &mut self,
        room: &RoomName,
        uid: &str,
        seq: u64,
        event: &[u8],
    ) -> Result<Option<Vec<u64>>, RedisStoreError> {
        let marks = read_marks(&self.opts.prefix, uid);
        let keys = self.keys(room);
        let (channel, mentions) = (keys.events(), keys.mentions());
        let payload = envelope(&self.opts.instance, event);
        let (moved, unread): (u8, String) = self.call(|con, scripts| {
            let mut run = scripts.mark_read.key(&marks);
            run.key(&mentions).arg(room.as_str()).arg(seq).arg(&channel).arg(&payload).arg(uid);
            run.invoke(con)
        })?;
        Ok((moved == 1).then(|| parse_seqs(&unread)))
    }
}
