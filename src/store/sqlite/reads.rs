//! Read markers in the store: how far each user has read each room. Written in the
//! batch's transaction (a marker only moves forward), read with a room when it comes
//! back into memory.
//!
//! Never decides whether a marker may move: the dispatcher checks that first.

use std::collections::HashMap;

use rusqlite::{params, Connection, Transaction};

use super::SqliteStore;

impl SqliteStore {
    /// Buffers a read marker for the next commit (the latest per user and room wins).
    pub fn set_read(&mut self, user: &str, room: &str, seq: u64) {
        let at = self.pending_reads.entry((user.to_owned(), room.to_owned())).or_insert(0);
        *at = (*at).max(seq);
    }
}

/// The stored markers of one room: (user, seq).
pub(super) fn of_room(conn: &Connection, room: &str) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut q = conn.prepare_cached("SELECT user, seq FROM reads WHERE room = ?1")?;
    let rows = q.query_map([room], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// The unread mentions of one room (room id): (user, seq), at most
/// [`MAX_UNREAD`](crate::store::mentions::MAX_UNREAD) newest per user.
pub(super) fn mentions_of_room(conn: &Connection, room: i64) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut q = conn.prepare_cached(
        "SELECT user, seq FROM (
             SELECT user, seq, row_number() OVER (PARTITION BY user ORDER BY seq DESC) AS n
             FROM mentions WHERE room = ?1)
         WHERE n <= ?2",
    )?;
    let max = crate::store::mentions::MAX_UNREAD as i64;
    let rows = q.query_map(params![room, max], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    rows.collect()
}

/// Writes the buffered markers inside the batch's transaction, never moving one back.
pub(super) fn write(tx: &Transaction<'_>, pending: &HashMap<(String, String), u64>) -> rusqlite::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO reads (user, room, seq) VALUES (?1, ?2, ?3)
         ON CONFLICT (user, room) DO UPDATE SET seq = max(seq, excluded.seq)",
    )?;
    // Mentions the marker passed are read: they leave the unread ones.
    let mut read = tx.prepare_cached(
        "DELETE FROM mentions WHERE room = (SELECT id FROM rooms WHERE name = ?2) AND user = ?1 AND seq <= ?3",
    )?;
    for ((user, room), seq) in pending {
        upsert.execute(params![user, room, *seq as i64])?;
        read.execute(params![user, room, *seq as i64])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::FsyncPolicy;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn read_markers_survive_a_reopen_and_never_move_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).expect("open");
            store.append(crate::store::NewMessage {
                room: "lobby".into(),
                epoch: "e".into(),
                seq: 1,
                ts: 1,
                text: "hi".into(),
                json: "{}".into(),
            });
            store.set_read("u-a", "lobby", 7);
            store.set_read("u-a", "lobby", 5);
            store.set_read("u-b", "lobby", 2);
            store.commit().expect("commit");
            store.set_read("u-a", "lobby", 3);
            store.commit().expect("commit");
        }
        let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).expect("reopen");
        let mut reads = store.load_room("lobby", 10).expect("read").expect("stored").reads;
        reads.sort();
        assert_eq!(reads, [("u-a".to_owned(), 7), ("u-b".to_owned(), 2)]);
    }
}
