//! Retention: deleting what `--retention-messages`, `--retention-days` and
//! `--max-store-bytes` say is no longer kept, a few hundred rows per step, so the
//! dispatcher that runs a step between batches never holds a live message for long.
//! A step says which deleted messages carried files, for the file store to remove
//! them once nothing else names them; uploaded files' bytes count toward the size cap
//! (the caller passes them in [`Policy`]).

use rusqlite::{params, Connection, OptionalExtension};

use super::{sql_err, SqliteStore, SqliteStoreError};

/// Rows deleted per step at most.
pub const STEP_ROWS: i64 = 200;

/// What is kept. `None`: no limit of that kind.
#[derive(Debug, Clone)]
pub struct Policy {
    pub messages_per_room: Option<u64>,
    pub max_age_ms: Option<u64>,
    pub max_bytes: u64,
    /// Bytes outside the database that count toward `max_bytes`: the files that
    /// stored messages name.
    pub file_bytes: u64,
    /// Over `max_bytes`, this room's oldest messages go first when it has any (the
    /// room whose messages name the most file bytes, when files take more than the
    /// database); else the largest room's.
    pub prefer_room: Option<String>,
}

/// The message (room, seq) a deleted row was, when it carried files.
pub type WithFiles = Vec<(String, u64)>;

/// What one step deleted, and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub by_count: u64,
    pub by_age: u64,
    /// Deleted because the store was over `max_bytes`, with the room they came from.
    pub by_size: u64,
    pub size_room: Option<String>,
    /// The deleted messages that carried files.
    pub with_files: WithFiles,
}

impl Deleted {
    pub fn total(&self) -> u64 {
        self.by_count + self.by_age + self.by_size
    }
}

impl SqliteStore {
    /// One retention step at time `now_ms`: at most [`STEP_ROWS`] rows of one kind.
    pub fn retention_step(&mut self, policy: &Policy, now_ms: u64) -> Result<Deleted, SqliteStoreError> {
        let path = self.path().to_owned();
        let deleted = step(self.conn(), policy, now_ms).map_err(sql_err(&path))?;
        if deleted.total() > 0 {
            self.wrote();
        }
        Ok(deleted)
    }

    /// Bytes the database's pages in use take (free pages are reused, not counted).
    pub fn used_bytes(&mut self) -> Result<u64, SqliteStoreError> {
        let path = self.path().to_owned();
        used_bytes(self.conn()).map_err(sql_err(&path))
    }
}

fn step(conn: &mut Connection, policy: &Policy, now_ms: u64) -> rusqlite::Result<Deleted> {
    let mut out = Deleted::default();
    if let Some(keep) = policy.messages_per_room {
        if let Some((room, head)) = room_over(conn, keep)? {
            out.by_count = delete_oldest(conn, room, Some(head.saturating_sub(keep)), &mut out.with_files)?;
            return Ok(out);
        }
    }
    if let Some(age) = policy.max_age_ms {
        let cutoff = now_ms.saturating_sub(age) as i64;
        // Oldest first in the order they were stored (ids grow with time): the rowid
        // b-tree, no index on `ts` that every commit would have to write.
        out.by_age = delete_returning(
            conn,
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages ORDER BY id LIMIT ?2) AND ts < ?1",
            params![cutoff, STEP_ROWS],
            &mut out.with_files,
        )?;
        if out.by_age > 0 {
            return Ok(out);
        }
    }
    if used_bytes(conn)?.saturating_add(policy.file_bytes) > policy.max_bytes {
        let preferred = match &policy.prefer_room {
            Some(name) => room_with_messages(conn, name)?,
            None => None,
        };
        if let Some((room, name)) = preferred.map_or_else(|| largest_room(conn), |r| Ok(Some(r)))? {
            out.by_size = delete_oldest(conn, room, None, &mut out.with_files)?;
            out.size_room = Some(name);
        }
    }
    Ok(out)
}

/// A room holding more than `keep` messages, with its head.
fn room_over(conn: &Connection, keep: u64) -> rusqlite::Result<Option<(i64, u64)>> {
    conn.query_row(
        "SELECT id, head FROM rooms WHERE head - (SELECT min(seq) FROM messages WHERE room = rooms.id) >= ?1 LIMIT 1",
        params![keep as i64],
        |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
    )
    .optional()
}

/// The room with the most stored messages.
fn largest_room(conn: &Connection) -> rusqlite::Result<Option<(i64, String)>> {
    conn.query_row(
        "SELECT id, name FROM rooms WHERE EXISTS (SELECT 1 FROM messages WHERE room = rooms.id)
         ORDER BY head - (SELECT min(seq) FROM messages WHERE room = rooms.id) DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Room `name` (id, name) if it has stored messages.
fn room_with_messages(conn: &Connection, name: &str) -> rusqlite::Result<Option<(i64, String)>> {
    conn.query_row(
        "SELECT id, name FROM rooms WHERE name = ?1 AND EXISTS (SELECT 1 FROM messages WHERE room = rooms.id)",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
}

/// Deletes up to a step of `room`'s oldest messages (only those with `seq <= upto`).
fn delete_oldest(conn: &Connection, room: i64, upto: Option<u64>, with_files: &mut WithFiles) -> rusqlite::Result<u64> {
    let upto = upto.map_or(i64::MAX, |u| u as i64);
    delete_returning(
        conn,
        "DELETE FROM messages WHERE id IN
         (SELECT id FROM messages WHERE room = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)",
        params![room, upto, STEP_ROWS],
        with_files,
    )
}

/// Runs `delete` (a `DELETE FROM messages`), adding the deleted messages that carried
/// files to `with_files`; how many rows it deleted.
fn delete_returning(
    conn: &Connection,
    delete: &str,
    args: impl rusqlite::Params,
    with_files: &mut WithFiles,
) -> rusqlite::Result<u64> {
    // A stored message with files has `"files":[` in its JSON (serde's compact form);
    // a text that merely contains those bytes costs the file store one lookup.
    let sql = format!(
        "{delete} RETURNING (SELECT name FROM rooms WHERE rooms.id = messages.room), seq, \
         instr(json, CAST('\"files\":[' AS BLOB)) > 0"
    );
    let mut q = conn.prepare(&sql)?;
    let mut rows = q.query(args)?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        n += 1;
        if r.get::<_, bool>(2)? {
            if let Some(room) = r.get::<_, Option<String>>(0)? {
                with_files.push((room, r.get::<_, i64>(1)? as u64));
            }
        }
    }
    Ok(n)
}

fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FsyncPolicy;
    use crate::store::sqlite::SqliteStore;
    use crate::store::NewMessage;

    const DAY_MS: u64 = 86_400_000;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path(), FsyncPolicy::Never).expect("open");
        (dir, store)
    }

    /// Stores `n` messages in `room` (seqs 1..=n) stamped `ts`, with `pad` bytes of text each.
    fn fill(store: &mut SqliteStore, room: &str, n: u64, ts: u64, pad: usize) {
        for seq in 1..=n {
            let text = format!("{seq} {}", "x".repeat(pad));
            store.append(NewMessage {
                room: room.into(),
                epoch: "e1".into(),
                seq,
                ts,
                json: serde_json::json!({"type": "msg", "seq": seq, "text": text}).to_string().into(),
                text,
            });
        }
        store.commit().expect("commit");
    }

    fn seqs(store: &mut SqliteStore, room: &str) -> Vec<u64> {
        let mut q = store
            .conn()
            .prepare("SELECT seq FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?1) ORDER BY seq")
            .expect("prepare");
        let rows = q.query_map([room], |r| r.get::<_, i64>(0)).expect("query");
        rows.map(|r| r.expect("row") as u64).collect()
    }

    /// Runs steps until one deletes nothing; every step stays within STEP_ROWS.
    fn drain(store: &mut SqliteStore, policy: &Policy, now: u64) -> Vec<Deleted> {
        let mut steps = Vec::new();
        loop {
            let d = store.retention_step(policy, now).expect("step");
            assert!(d.total() <= STEP_ROWS as u64, "a step deletes at most STEP_ROWS: {d:?}");
            if d.total() == 0 {
                return steps;
            }
            steps.push(d);
            assert!(steps.len() < 100, "retention ends");
        }
    }

    #[test]
    fn retention_by_age_deletes_only_what_is_older_in_small_steps() {
        let (_dir, mut store) = store();
        let now = 100 * DAY_MS;
        fill(&mut store, "old", 450, now - 40 * DAY_MS, 10);
        fill(&mut store, "fresh", 30, now - DAY_MS, 10);
        let policy = Policy {
            messages_per_room: None,
            max_age_ms: Some(30 * DAY_MS),
            max_bytes: u64::MAX,
            file_bytes: 0,
            prefer_room: None,
        };
        let steps = drain(&mut store, &policy, now);
        assert_eq!(steps.iter().map(|d| d.by_age).collect::<Vec<_>>(), [200, 200, 50]);
        assert!(seqs(&mut store, "old").is_empty());
        assert_eq!(seqs(&mut store, "fresh"), (1..=30).collect::<Vec<_>>(), "younger messages stay");
    }

    #[test]
    fn retention_by_size_takes_the_oldest_of_the_largest_room_until_under_the_cap() {
        let (_dir, mut store) = store();
        fill(&mut store, "big", 1500, 1, 1000);
        fill(&mut store, "small", 40, 1, 1000);
        let cap = store.used_bytes().expect("size") / 2;
        let policy =
            Policy { messages_per_room: None, max_age_ms: None, max_bytes: cap, file_bytes: 0, prefer_room: None };
        let steps = drain(&mut store, &policy, 2);
        assert!(!steps.is_empty());
        assert!(steps.iter().all(|d| d.by_size > 0 && d.size_room.as_deref() == Some("big")), "{steps:?}");
        assert!(store.used_bytes().expect("size") <= cap, "under the cap when retention stops");
        let big = seqs(&mut store, "big");
        let first = big[0];
        assert!(first > 1, "the oldest went first");
        assert_eq!(big, (first..=1500).collect::<Vec<_>>(), "what is left is the newest, without holes");
        assert_eq!(seqs(&mut store, "small").len(), 40, "the small room is untouched");
    }
}
