//! `files.db`: the metadata of every stored file (uploader, size, sniffed type,
//! sanitized name, image size, created) and where each was posted (`refs`), beside the
//! blobs in the files directory. Only the `files` thread ([`super::Files`]) opens it;
//! with `--redis` every instance's thread opens the same file in the shared directory,
//! and SQLite's locks order their writes.
//!
//! A file may be fetched for a room once it has a ref in that room. A ref with seq 0
//! is the grant made when a message naming the file was accepted for posting; a ref
//! with the message's seq follows once the message is stored. A file with no ref of a
//! stored message is removed an hour after its upload; a file whose last message was
//! deleted is removed at once (its blob when no other file has the same bytes).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use crate::protocol::FileDesc;

pub const DB_FILE: &str = "files.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    uploader TEXT NOT NULL,
    size INTEGER NOT NULL,
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_sha ON files (sha256);
CREATE INDEX IF NOT EXISTS files_uploader ON files (uploader);
CREATE TABLE IF NOT EXISTS refs (
    file TEXT NOT NULL,
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    PRIMARY KEY (file, room, seq)
);
CREATE INDEX IF NOT EXISTS refs_msg ON refs (room, seq);
";

/// The uploader of a file whose uploader was erased.
pub const ERASED_UPLOADER: &str = "deleted";

/// One stored file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub id: String,
    pub sha256: String,
    pub uploader: String,
    pub size: u64,
    pub kind: String,
    pub name: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Unix milliseconds.
    pub created: u64,
}

impl FileRecord {
    /// What a message frame says about the file.
    pub fn desc(&self) -> FileDesc {
        FileDesc {
            id: self.id.clone(),
            name: self.name.clone(),
            size: self.size,
            kind: self.kind.clone(),
            width: self.width,
            height: self.height,
        }
    }

    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
        Ok(FileRecord {
            id: r.get(0)?,
            sha256: r.get(1)?,
            uploader: r.get(2)?,
            size: r.get::<_, i64>(3)? as u64,
            kind: r.get(4)?,
            name: r.get(5)?,
            width: r.get(6)?,
            height: r.get(7)?,
            created: r.get::<_, i64>(8)? as u64,
        })
    }
}

const COLUMNS: &str = "id, sha256, uploader, size, type, name, width, height, created";

/// Why files named in a message cannot be posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// No such file, or another user's: the same answer, so ids cannot be probed.
    Unknown(String),
}

pub struct FileDb {
    conn: Connection,
    /// Set by every write: the sizes the `files` thread publishes are due again.
    changed: bool,
}

/// What the files take, for `--max-store-bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sizes {
    /// Bytes of distinct blobs.
    pub all: u64,
    /// Bytes of distinct blobs a stored message names.
    pub posted: u64,
    /// The room whose stored messages name the most file bytes.
    pub top_room: Option<String>,
}

impl FileDb {
    pub fn open(dir: &Path) -> rusqlite::Result<FileDb> {
        let conn = Connection::open(dir.join(DB_FILE))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(FileDb { conn, changed: true })
    }

    /// Runs `f` in a write transaction taken at once (`BEGIN IMMEDIATE`): instances
    /// sharing the directory take turns, so a blob is never removed by one while
    /// another links a new file to it.
    pub fn immediate<R>(&mut self, f: impl FnOnce(&Connection) -> rusqlite::Result<R>) -> rusqlite::Result<R> {
        self.changed = true;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let r = f(&tx)?;
        tx.commit()?;
        Ok(r)
    }

    pub fn insert(conn: &Connection, f: &FileRecord) -> rusqlite::Result<()> {
        conn.execute(
            &format!("INSERT INTO files ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
            params![f.id, f.sha256, f.uploader, f.size as i64, f.kind, f.name, f.width, f.height, f.created as i64],
        )?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> rusqlite::Result<Option<FileRecord>> {
        self.conn
            .query_row(&format!("SELECT {COLUMNS} FROM files WHERE id = ?1"), [id], FileRecord::from_row)
            .optional()
    }

    /// The file if it may be fetched for `room` (it was posted there).
    pub fn posted_in(&self, id: &str, room: &str) -> rusqlite::Result<Option<FileRecord>> {
        let posted: bool = self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM refs WHERE file = ?1 AND room = ?2)",
            params![id, room],
            |r| r.get(0),
        )?;
        if posted {
            self.get(id)
        } else {
            Ok(None)
        }
    }

    /// Checks that every file in `ids` is `uid`'s own and grants `room` access to
    /// them (a seq-0 ref); their descriptions in order.
    pub fn grant(
        &mut self,
        uid: &str,
        ids: &[String],
        room: &str,
        now: u64,
    ) -> rusqlite::Result<Result<Vec<FileDesc>, Unusable>> {
        self.immediate(|tx| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let f = tx
                    .query_row(&format!("SELECT {COLUMNS} FROM files WHERE id = ?1"), [id], FileRecord::from_row)
                    .optional()?;
                match f {
                    Some(f) if f.uploader == uid => out.push(f.desc()),
                    _ => return Ok(Err(Unusable::Unknown(id.clone()))),
                }
            }
            for id in ids {
                tx.execute(
                    // Renewed: a grant counts from the latest post that named the file.
                    "INSERT OR REPLACE INTO refs (file, room, seq, ts) VALUES (?1, ?2, 0, ?3)",
                    params![id, room, now as i64],
                )?;
            }
            Ok(Ok(out))
        })
    }

    /// Message `seq` of `room`, stored at `ts`, carries `ids`. The message's ref takes
    /// the place of the grant made for it: a grant left over means a message accepted
    /// for posting and not (yet) stored.
    pub fn posted(&mut self, room: &str, seq: u64, ids: &[String], ts: u64) -> rusqlite::Result<()> {
        self.immediate(|tx| {
            for id in ids {
                tx.execute(
                    "INSERT OR IGNORE INTO refs (file, room, seq, ts) VALUES (?1, ?2, ?3, ?4)",
                    params![id, room, seq as i64, ts as i64],
                )?;
                tx.execute("DELETE FROM refs WHERE file = ?1 AND room = ?2 AND seq = 0", params![id, room])?;
            }
            Ok(())
        })
    }

    /// The messages `msgs` (room, seq) are gone (deleted, erased, removed by retention);
    /// the files no stored message names any more are removed, unless a grant made at
    /// or after `granted_since` (ms) waits for its message to be stored. Returns how
    /// many files went; `unlink` is called (still in the transaction) with each blob
    /// (sha256) no file names any more.
    pub fn gone(
        &mut self,
        msgs: &[(String, u64)],
        granted_since: u64,
        unlink: impl Fn(&str),
    ) -> rusqlite::Result<usize> {
        self.immediate(|tx| {
            let mut files: Vec<String> = Vec::new();
            {
                let mut of_msg = tx.prepare_cached("SELECT file FROM refs WHERE room = ?1 AND seq = ?2")?;
                let mut unref = tx.prepare_cached("DELETE FROM refs WHERE room = ?1 AND seq = ?2")?;
                for (room, seq) in msgs.iter().filter(|m| m.1 > 0) {
                    let named = of_msg.query_map(params![room, *seq as i64], |r| r.get::<_, String>(0))?;
                    files.extend(named.collect::<rusqlite::Result<Vec<_>>>()?);
                    unref.execute(params![room, *seq as i64])?;
                }
            }
            files.sort();
            files.dedup();
            let mut removed = 0;
            for f in files {
                if !still_wanted(tx, &f, granted_since)? {
                    removed += remove(tx, &f, &unlink)?;
                }
            }
            Ok(removed)
        })
    }

    /// Removes files uploaded before `unposted_before` that no stored message names
    /// and no grant made since then waits for (so a file posted just before its hour
    /// ends, on this instance or another, is kept), and (`expired_before`, retention by
    /// age) refs of messages stored before it.
    pub fn sweep(
        &mut self,
        unposted_before: u64,
        expired_before: Option<u64>,
        unlink: impl Fn(&str),
    ) -> rusqlite::Result<usize> {
        self.immediate(|tx| {
            if let Some(t) = expired_before {
                tx.execute("DELETE FROM refs WHERE seq > 0 AND ts < ?1", [t as i64])?;
            }
            let stale: Vec<String> = tx
                .prepare(
                    "SELECT id FROM files WHERE created < ?1 \
                     AND NOT EXISTS (SELECT 1 FROM refs WHERE refs.file = files.id \
                                     AND (refs.seq > 0 OR refs.ts >= ?1))",
                )?
                .query_map([unposted_before as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut removed = 0;
            for f in stale {
                removed += remove(tx, &f, &unlink)?;
            }
            Ok(removed)
        })
    }

    /// Every file `uid` uploaded, oldest first (for a user's export).
    pub fn by_uploader(&self, uid: &str) -> rusqlite::Result<Vec<FileRecord>> {
        self.conn
            .prepare(&format!("SELECT {COLUMNS} FROM files WHERE uploader = ?1 ORDER BY created, id"))?
            .query_map([uid], FileRecord::from_row)?
            .collect()
    }

    /// The messages (room, seq) file `id` was posted in (grants without a message left out).
    pub fn posts_of(&self, id: &str) -> rusqlite::Result<Vec<(String, u64)>> {
        self.conn
            .prepare("SELECT room, seq FROM refs WHERE file = ?1 AND seq > 0 ORDER BY room, seq")?
            .query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect()
    }

    /// A user's erasure: the files they uploaded that are left (kept with kept
    /// messages, or not yet swept) name [`ERASED_UPLOADER`] instead; how many.
    pub fn forget_uploader(&mut self, uid: &str) -> rusqlite::Result<usize> {
        self.changed = true;
        self.conn.execute("UPDATE files SET uploader = ?1 WHERE uploader = ?2", params![ERASED_UPLOADER, uid])
    }

    /// Bytes of distinct blobs.
    pub fn stored_bytes(&self) -> rusqlite::Result<u64> {
        self.conn
            .query_row(
                "SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM files GROUP BY sha256)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
    }

    /// True once since the last call when something was written.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// What the files take now.
    pub fn sizes(&self) -> rusqlite::Result<Sizes> {
        let posted = self.conn.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM files \
             WHERE EXISTS (SELECT 1 FROM refs WHERE refs.file = files.id AND refs.seq > 0) GROUP BY sha256)",
            [],
            |r| r.get::<_, i64>(0),
        )?;
        let top_room = self
            .conn
            .query_row(
                "SELECT refs.room FROM refs JOIN files ON files.id = refs.file WHERE refs.seq > 0 \
                 GROUP BY refs.room ORDER BY SUM(files.size) DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Sizes { all: self.stored_bytes()?, posted: posted.max(0) as u64, top_room })
    }

    /// Every blob still named by a file (for a backup).
    pub fn blobs(&self) -> rusqlite::Result<Vec<String>> {
        self.conn.prepare("SELECT DISTINCT sha256 FROM files")?.query_map([], |r| r.get(0))?.collect()
    }
}

/// Whether a stored message names file `id`, or a grant made at or after
/// `granted_since` waits for its message.
fn still_wanted(tx: &Connection, id: &str, granted_since: u64) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM refs WHERE file = ?1 AND (seq > 0 OR ts >= ?2))",
        params![id, granted_since as i64],
        |r| r.get(0),
    )
}

/// Removes file `id` and its refs; unlinks its blob when no other file names it.
fn remove(tx: &Connection, id: &str, unlink: &impl Fn(&str)) -> rusqlite::Result<usize> {
    let sha: Option<String> = tx.query_row("SELECT sha256 FROM files WHERE id = ?1", [id], |r| r.get(0)).optional()?;
    tx.execute("DELETE FROM refs WHERE file = ?1", [id])?;
    let n = tx.execute("DELETE FROM files WHERE id = ?1", [id])?;
    if let Some(sha) = sha {
        let shared: bool =
            tx.query_row("SELECT EXISTS (SELECT 1 FROM files WHERE sha256 = ?1)", [&sha], |r| r.get(0))?;
        if !shared {
            unlink(&sha);
        }
    }
    Ok(n)
}
