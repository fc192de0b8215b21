//! The embedded store of single-instance mode: SQLite in WAL mode, one file in
//! `--data-dir`.
//!
//! [`SqliteStore`] is the only writer and belongs to the dispatcher: it buffers the
//! messages of a batch and commits them in one transaction (group commit) before any
//! of the batch's acks leave. History reads never go through it: [`reader`] threads
//! answer them from read-only connections (WAL snapshots), so a long read never stalls
//! a commit. [`migrate`] imports the journal of earlier versions once; [`retention`]
//! deletes old messages in small steps; `syncer` checkpoints the WAL on a thread of its
//! own, so the dispatcher's commits never wait for a checkpoint's fsyncs. [`backup`]
//! copies a live store (`natter backup`), and gives every room of a store restored from
//! such a copy a new epoch when it opens.
//!
//! Never touches rooms, members or sockets.

pub mod access;
pub mod audit;
pub mod backup;
mod blocks;
pub mod edits;
pub mod migrate;
pub mod reader;
pub mod reads;
pub mod retention;
mod rooms;
mod schema;
mod syncer;
pub mod userdata;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::config::FsyncPolicy;
use crate::store::audit::AuditEntry;
use crate::store::{AccessChange, AccessSnapshot, NewMessage};
pub use schema::DB_FILE;
use syncer::{Syncer, WalIndex};

/// A store failure; the dispatcher acks nothing of the batch it concerns.
#[derive(Debug, thiserror::Error)]
pub enum SqliteStoreError {
    #[error("store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    pending: Vec<NewMessage>,
    /// Read markers not yet written: (user, room) → seq. Kept when a commit fails, so
    /// the next commit writes them (a marker only ever moves forward).
    pending_reads: HashMap<(String, String), u64>,
    /// Access changes not yet written (kept when a commit fails, like read markers).
    pending_access: Vec<AccessChange>,
    /// Audit entries not yet written (kept when a commit fails, like access changes).
    pending_audit: Vec<AuditEntry>,
    /// What the store held about access when it opened, until the dispatcher takes it.
    loaded_access: AccessSnapshot,
    /// Edits and deletions of committed messages, written after the batch's new rows.
    rewrites: Vec<edits::Rewrite>,
    /// Stored rows whose author is made anonymous (an erased user's): room, seq, JSON.
    renames: Vec<(String, u64, bytes::Bytes)>,
    /// Erased users whose other rows (name, markers, blocks…) go with the next commit.
    forgotten: Vec<String>,
    /// A deletion was committed: the WAL still holds the old text until truncated.
    scrub_due: bool,
    /// Room name → row id, for rows known to be committed.
    room_ids: HashMap<String, i64>,
    /// The background checkpoint (and `interval` sync): told after every write.
    syncer: Syncer,
    /// How long the WAL is and how much of it the sync thread copied.
    wal: WalIndex,
}

/// Frames the sync thread may leave behind for the dispatcher to copy at the WAL's
/// limit (a few commits' worth; at most about a megabyte to copy and sync).
const TAIL_PAGES: u32 = 256;

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).field("pending", &self.pending.len()).finish()
    }
}

/// The database path inside a data dir.
pub fn db_path(dir: &Path) -> PathBuf {
    dir.join(DB_FILE)
}

impl SqliteStore {
    /// Opens (creating) the store in `dir` and imports an old journal found there.
    /// No room is read here: each comes back when it is first used
    /// ([`load_room`](Self::load_room)), so start-up does not grow with the rooms stored.
    pub fn open(dir: &Path, policy: FsyncPolicy) -> Result<SqliteStore, SqliteStoreError> {
        Self::open_with(dir, policy, true)
    }

    /// [`open`](Self::open), with the sync thread's checkpoints off: what the writer
    /// does on its own.
    #[cfg(test)]
    pub(crate) fn open_without_background_checkpoints(dir: &Path) -> Result<SqliteStore, SqliteStoreError> {
        Self::open_with(dir, FsyncPolicy::Never, false)
    }

    fn open_with(dir: &Path, policy: FsyncPolicy, checkpoints: bool) -> Result<SqliteStore, SqliteStoreError> {
        fs::create_dir_all(dir).map_err(|source| SqliteStoreError::Io { path: dir.to_owned(), source })?;
        let path = db_path(dir);
        let mut conn = Connection::open(&path).map_err(sql_err(&path))?;
        schema::prepare_writer(&conn, policy).map_err(sql_err(&path))?;
        migrate::import_journal(dir, &mut conn)?;
        // Before rooms load: they must load with the new epochs.
        backup::renew_epochs_if_restored(&mut conn).map_err(sql_err(&path))?;
        let syncer = Syncer::start(&path, policy, checkpoints)?;
        let wal = WalIndex::open(&path);
        let mut store = SqliteStore {
            conn,
            path,
            pending: Vec::new(),
            pending_reads: HashMap::new(),
            rewrites: Vec::new(),
            renames: Vec::new(),
            forgotten: Vec::new(),
            scrub_due: false,
            pending_access: Vec::new(),
            pending_audit: Vec::new(),
            loaded_access: AccessSnapshot::default(),
            room_ids: HashMap::new(),
            syncer,
            wal,
        };
        store.loaded_access = access::load(&store.conn).map_err(sql_err(&db_path(dir)))?;
        Ok(store)
    }

    /// Buffers one message; nothing reaches the database before [`commit`](Self::commit).
    pub fn append(&mut self, msg: NewMessage) {
        self.pending.push(msg);
    }

    /// Writes everything appended since the last commit in one transaction. After it
    /// returns Ok the messages survive a process crash (and, under `always`, a power
    /// failure). On error nothing of the batch is stored and the buffer is dropped.
    pub fn commit(&mut self) -> Result<(), SqliteStoreError> {
        let idle = self.pending_reads.is_empty()
            && self.pending_access.is_empty()
            && self.pending_audit.is_empty()
            && self.rewrites.is_empty()
            && self.renames.is_empty()
            && self.forgotten.is_empty();
        if self.pending.is_empty() && idle {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let rewrites = std::mem::take(&mut self.rewrites);
        match self.write(&pending, &rewrites) {
            Ok(()) => {
                self.pending_reads.clear();
                self.pending_access.clear();
                self.pending_audit.clear();
                self.renames.clear();
                self.forgotten.clear();
                self.syncer.dirty();
                Ok(())
            }
            Err(e) => {
                // Rows created by the failed transaction were rolled back with it.
                self.room_ids.clear();
                Err(sql_err(&self.path)(e))
            }
        }
    }

    fn write(&mut self, pending: &[NewMessage], rewrites: &[edits::Rewrite]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        let mut heads: HashMap<i64, u64> = HashMap::new();
        {
            let mut insert = tx.prepare_cached("INSERT INTO messages (room, seq, ts, json) VALUES (?1, ?2, ?3, ?4)")?;
            let mut index = tx.prepare_cached("INSERT INTO messages_fts (rowid, text) VALUES (?1, ?2)")?;
            let mut mention =
                tx.prepare_cached("INSERT OR IGNORE INTO mentions (room, user, seq) VALUES (?1, ?2, ?3)")?;
            let mut reply = tx.prepare_cached("INSERT OR IGNORE INTO replies (room, of, seq) VALUES (?1, ?2, ?3)")?;
            for m in pending {
                let room = match self.room_ids.get(&m.room) {
                    Some(id) => *id,
                    None => room_id(&tx, &m.room, &m.epoch)?,
                };
                self.room_ids.insert(m.room.clone(), room);
                insert.execute(params![room, m.seq as i64, m.ts as i64, &m.json[..]])?;
                // Edit and delete events carry no text of their own to find.
                if !m.text.is_empty() {
                    index.execute(params![tx.last_insert_rowid(), m.text])?;
                }
                for user in crate::store::mentions::mentioned(&m.json) {
                    mention.execute(params![room, user, m.seq as i64])?;
                }
                if let Some(of) = crate::store::replies::quoted(&m.json) {
                    reply.execute(params![room, of as i64, m.seq as i64])?;
                }
                heads.insert(room, m.seq);
            }
            let mut head = tx.prepare_cached("UPDATE rooms SET head = ?2 WHERE id = ?1 AND head < ?2")?;
            for (room, seq) in heads {
                head.execute(params![room, seq as i64])?;
            }
            reads::write(&tx, &self.pending_reads)?;
            access::write(&tx, &self.pending_access)?;
            audit::write(&tx, &self.pending_audit)?;
        }
        edits::write(&tx, rewrites)?;
        // After the rewrites: a deletion marker made in this batch is renamed too.
        userdata::write(&tx, &self.renames, &self.forgotten)?;
        tx.commit()
    }

    /// Called by the dispatcher after a batch's acks and frames were handed on, never
    /// inside a commit: once the WAL is past [`schema::WAL_LIMIT_PAGES`] and the sync
    /// thread left at most [`TAIL_PAGES`] behind (or the WAL is past its hard limit,
    /// whatever is left), copies the rest, so that the next commit restarts the WAL
    /// from its beginning. Otherwise it only reads the WAL-index header.
    pub fn after_batch(&mut self) -> Result<(), SqliteStoreError> {
        let Some((frames, copied)) = self.wal.read() else { return Ok(()) };
        let tail = frames.saturating_sub(copied);
        if frames < schema::WAL_LIMIT_PAGES || tail == 0 {
            return Ok(());
        }
        if tail > TAIL_PAGES && frames < schema::WAL_HARD_LIMIT_PAGES {
            return Ok(());
        }
        // Busy (the sync thread is copying): the next batch looks again.
        self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(sql_err(&self.path))
    }

    /// Writes one small row: whether the disk takes writes again after a failure.
    pub fn probe(&mut self) -> Result<(), SqliteStoreError> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        self.conn
            .execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('probe', ?1)", params![now.to_string()])
            .map_err(sql_err(&self.path))?;
        self.syncer.dirty();
        Ok(())
    }

    /// The writer's connection, for retention's small delete steps.
    pub(crate) fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Something was written outside [`commit`](Self::commit) (a retention step).
    pub(crate) fn wrote(&self) {
        self.syncer.dirty();
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Shutdown: checkpoint the WAL into the database file and sync it.
    pub fn close(&mut self) -> Result<(), SqliteStoreError> {
        self.commit()?;
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").map_err(sql_err(&self.path))
    }
}

/// The id of room `name`, creating its row with `epoch` when it has none.
fn room_id(tx: &rusqlite::Transaction<'_>, name: &str, epoch: &str) -> rusqlite::Result<i64> {
    let found =
        tx.query_row("SELECT id FROM rooms WHERE name = ?1", params![name], |r| r.get::<_, i64>(0)).optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    tx.execute("INSERT INTO rooms (name, epoch, head) VALUES (?1, ?2, 0)", params![name, epoch])?;
    Ok(tx.last_insert_rowid())
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> SqliteStoreError + '_ {
    move |source| SqliteStoreError::Sqlite { path: path.to_owned(), source }
}
