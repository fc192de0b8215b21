//! One stored room read back into memory: its epoch, head, newest messages and read
//! markers, by name, on the writer's connection (so it sees every committed batch).
//! The dispatcher calls it when a room that is not in memory is used again; nothing
//! reads every room at once.
//!
//! Never decides which rooms are in memory: the dispatcher's `eviction` does.

use bytes::Bytes;
use rusqlite::{params, OptionalExtension};

use super::{reads, sql_err, SqliteStore, SqliteStoreError};
use crate::store::read::StoredMsg;
use crate::store::LoadedRoom;

impl SqliteStore {
    /// Room `name` with its newest `ring` messages (oldest first) and its read
    /// markers; `None` when the store has never held a message of it. Three indexed
    /// lookups, whatever the number of rooms stored.
    pub fn load_room(&mut self, name: &str, ring: usize) -> Result<Option<LoadedRoom>, SqliteStoreError> {
        self.read_room(name, ring).map_err(sql_err(&self.path))
    }

    fn read_room(&mut self, name: &str, ring: usize) -> rusqlite::Result<Option<LoadedRoom>> {
        let found = self
            .conn
            .prepare_cached("SELECT id, epoch, head FROM rooms WHERE name = ?1")?
            .query_row([name], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))
            .optional()?;
        let Some((id, epoch, head)) = found else { return Ok(None) };
        let mut recent = self.conn.prepare_cached(
            "SELECT seq, json FROM (SELECT seq, json FROM messages WHERE room = ?1 ORDER BY seq DESC LIMIT ?2)
             ORDER BY seq",
        )?;
        let msgs = recent
            .query_map(params![id, ring as i64], |r| {
                Ok(StoredMsg { seq: r.get::<_, i64>(0)? as u64, json: Bytes::from(r.get::<_, Vec<u8>>(1)?) })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.room_ids.insert(name.to_owned(), id);
        let reads = reads::of_room(&self.conn, name)?;
        let mentions = reads::mentions_of_room(&self.conn, id)?;
        Ok(Some(LoadedRoom { name: name.to_owned(), epoch, head: head as u64, recent: msgs, reads, mentions }))
    }

    /// The room left memory: its row id need not be cached any longer.
    pub fn forget_room(&mut self, name: &str) {
        self.room_ids.remove(name);
    }
}
