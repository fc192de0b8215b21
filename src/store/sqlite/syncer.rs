//! The store's background thread. It checkpoints — copies the WAL into the database
//! file — on a connection of its own, once [`CHECKPOINT_PAGES`] wait in the WAL and,
//! when the WAL nears [`schema::WAL_LIMIT_PAGES`], whatever waits; and under the
//! `interval` policy it `fdatasync`s the WAL once a second when something was
//! committed (`synchronous=NORMAL` alone would sync the WAL only at checkpoints; this
//! keeps the promise that a power failure loses at most about a second of acked
//! messages).
//!
//! Why checkpoints live here: SQLite's automatic checkpoint runs inside the commit that
//! crosses its threshold, on the dispatcher thread, and under `NORMAL`/`FULL` it fsyncs
//! the WAL and the database file there — every message behind that commit waits for
//! it (docs/PERFORMANCE.md). The writer has it off. A `PASSIVE` checkpoint neither
//! waits for nor blocks the writer or the readers. Only the writer restarts the WAL
//! from its beginning, at its first transaction after a checkpoint caught up; a writer
//! that commits every millisecond never leaves a checkpoint with its `fsync`s that
//! moment, so once the WAL is past its limit the dispatcher copies the last few frames
//! itself, between two batches ([`SqliteStore::after_batch`](super::SqliteStore::after_batch)),
//! and its next commit restarts the WAL. This thread keeps that tail short.
//!
//! Never writes a row and never touches rooms or sockets.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

use super::schema;
use super::{sql_err, SqliteStoreError};
use crate::config::FsyncPolicy;

/// How often the thread looks at the WAL: often enough that the tail the dispatcher
/// copies at the limit stays a few commits long (a read of the WAL-index header).
const TICK: Duration = Duration::from_millis(20);
/// Ticks between two syncs of the WAL under `interval`: once a second.
const SYNC_TICKS: u32 = 50;
/// WAL pages not yet copied at which a checkpoint starts: SQLite's own default.
pub const CHECKPOINT_PAGES: u32 = 1000;
/// Checkpoints in a row while commits keep adding to the WAL: each copies what came
/// during the one before (little), so one soon ends with nothing left behind.
const CATCH_UP_ROUNDS: usize = 4;

#[derive(Debug)]
pub struct Syncer {
    dirty: Arc<AtomicBool>,
}

/// The WAL-index (the `-shm` file), whose header says how long the WAL is and how
/// much of it was copied (<https://sqlite.org/walformat.html>: `mxFrame` at byte 16,
/// `nBackfill` at byte 96, native byte order). A read torn by a concurrent commit only
/// moves the next checkpoint by a tick or a batch.
#[derive(Debug)]
pub struct WalIndex {
    shm: Option<File>,
}

impl WalIndex {
    pub fn open(db: &Path) -> WalIndex {
        WalIndex { shm: File::open(format!("{}-shm", db.display())).ok() }
    }

    /// `(frames in the WAL, frames copied into the database)`; `None` if unreadable.
    pub fn read(&self) -> Option<(u32, u32)> {
        let field = |at| {
            let mut b = [0u8; 4];
            self.shm.as_ref()?.read_exact_at(&mut b, at).ok()?;
            Some(u32::from_ne_bytes(b))
        };
        Some((field(16)?, field(96)?))
    }
}

/// What the thread owns: its connection, the WAL and its index, whether it syncs.
struct Worker {
    conn: Connection,
    wal: PathBuf,
    index: WalIndex,
    /// WAL frames waiting at which a checkpoint starts ([`CHECKPOINT_PAGES`]).
    checkpoint_at: u32,
    sync_wal: bool,
    /// The last checkpoint failed (logged once, not every tick).
    failing: bool,
}

impl Syncer {
    /// Starts the thread on the database at `db`, which the writer has open in WAL mode;
    /// `checkpoints` false: the thread only syncs (tests of the writer's own behaviour).
    pub fn start(db: &Path, policy: FsyncPolicy, checkpoints: bool) -> Result<Syncer, SqliteStoreError> {
        let conn = Connection::open(db).map_err(sql_err(db))?;
        // A checkpoint syncs as its connection's `synchronous` says: as the writer's.
        conn.pragma_update(None, "synchronous", schema::synchronous(policy)).map_err(sql_err(db))?;
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let mut worker = Worker {
            conn,
            wal,
            index: WalIndex::open(db),
            checkpoint_at: if checkpoints { CHECKPOINT_PAGES } else { u32::MAX },
            sync_wal: policy == FsyncPolicy::Interval,
            failing: false,
        };
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = Arc::downgrade(&dirty);
        // Vital: without it the `interval` sync would stop silently (and checkpoints
        // would fall back on the dispatcher's, between batches, and grow its tail).
        crate::shutdown::spawn_vital("store-sync", move || {
            for tick in 1.. {
                thread::sleep(TICK);
                let Some(flag) = flag.upgrade() else { return };
                if worker.due() {
                    worker.checkpoint();
                }
                if tick % SYNC_TICKS == 0 && flag.swap(false, Ordering::AcqRel) {
                    worker.sync();
                }
            }
        })
        .map_err(|source| SqliteStoreError::Io { path: PathBuf::from("<store-sync thread>"), source })?;
        Ok(Syncer { dirty })
    }

    /// Something was committed: under `interval`, sync the WAL within a second.
    pub fn dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

impl Worker {
    /// Whether to checkpoint now: [`CHECKPOINT_PAGES`] wait, or the WAL is past half its
    /// limit and anything waits (so the dispatcher finds only a short tail at the
    /// limit). Unreadable index: yes, so checkpoints go on.
    fn due(&self) -> bool {
        match self.index.read() {
            Some((frames, copied)) => {
                let waiting = frames.saturating_sub(copied);
                waiting >= self.checkpoint_at
                    || (self.checkpoint_at != u32::MAX && frames >= schema::WAL_LIMIT_PAGES / 2 && waiting > 0)
            }
            None => true,
        }
    }

    fn uncopied(&self) -> u32 {
        self.index.read().map_or(0, |(frames, copied)| frames.saturating_sub(copied))
    }

    /// Copies the WAL into the database until it has caught up (the writer then
    /// restarts the WAL at its next transaction) or [`CATCH_UP_ROUNDS`] went by.
    fn checkpoint(&mut self) {
        for _ in 0..CATCH_UP_ROUNDS {
            // One row: (busy, pages in the WAL, pages copied); busy: the dispatcher
            // is copying the tail and holds the checkpoint lock.
            let busy = self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
            match busy {
                Ok(busy) => {
                    if std::mem::take(&mut self.failing) {
                        log::info!("store: background checkpoints work again");
                    }
                    if busy != 0 || self.uncopied() == 0 {
                        return;
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.failing, true) {
                        log::error!(
                            "store: background checkpoint failed (the dispatcher's between batches remains): {e}"
                        );
                    }
                    return;
                }
            }
        }
    }

    fn sync(&self) {
        if !self.sync_wal {
            return;
        }
        if let Err(e) = File::open(&self.wal).and_then(|f| f.sync_data()) {
            log::error!("store: syncing {} failed: {e}", self.wal.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::{db_path, SqliteStore};
    use crate::store::NewMessage;
    use bytes::Bytes;
    use std::time::Instant;

    fn message(seq: u64, text: &str) -> NewMessage {
        let json = format!(r#"{{"type":"msg","room":"r","seq":{seq},"text":"{text}"}}"#);
        NewMessage { room: "r".into(), epoch: "e".into(), seq, ts: seq, text: text.into(), json: Bytes::from(json) }
    }

    /// Messages in the database file alone (a copy without its WAL), if it reads.
    fn in_db_file(dir: &Path) -> Option<i64> {
        let copy = tempfile::tempdir().ok()?;
        std::fs::copy(db_path(dir), db_path(copy.path())).ok()?;
        let conn = Connection::open(db_path(copy.path())).ok()?;
        conn.query_row("SELECT count(*) FROM messages", [], |r| r.get(0)).ok()
    }

    #[test]
    fn the_sync_thread_checkpoints_what_the_writer_left_in_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        // One message a commit, as a quiet room commits: past CHECKPOINT_PAGES of WAL,
        // far below the WAL's limit.
        let text = "x".repeat(200);
        let mut seq = 0;
        while std::fs::metadata(dir.path().join("natter.db-wal")).map_or(0, |m| m.len())
            < u64::from(CHECKPOINT_PAGES + 200) * 4096
        {
            seq += 1;
            store.append(message(seq, &text));
            store.commit().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while in_db_file(dir.path()) < Some(seq as i64 - 200) {
            assert!(Instant::now() < deadline, "no checkpoint copied the WAL: {:?} of {seq}", in_db_file(dir.path()));
            thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn a_commit_never_checkpoints_however_long_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open_without_background_checkpoints(dir.path()).unwrap();
        let index = WalIndex::open(&db_path(dir.path()));
        let text = "z".repeat(400);
        let mut seq = 0;
        while index.read().unwrap().0 < schema::WAL_HARD_LIMIT_PAGES + 100 {
            for _ in 0..100 {
                seq += 1;
                store.append(message(seq, &text));
            }
            store.commit().unwrap();
            let (frames, copied) = index.read().unwrap();
            assert_eq!(copied, 0, "a commit copied the WAL ({frames} frames) while its acks waited");
        }
        // The dispatcher's call between batches copies it, and the next commit
        // restarts the WAL from its beginning.
        store.after_batch().unwrap();
        let (frames, copied) = index.read().unwrap();
        assert_eq!(copied, frames);
        store.append(message(seq + 1, &text));
        store.commit().unwrap();
        assert!(index.read().unwrap().0 < 100, "restarted: {:?}", index.read());
    }

    #[test]
    fn the_wal_stays_bounded_under_writes_without_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        let text = "y".repeat(400);
        let page = 4096 + 24;
        let batch = 100 * 4 * page;
        let bound = u64::from(schema::WAL_HARD_LIMIT_PAGES) * page + batch;
        let wal = dir.path().join("natter.db-wal");
        let mut written = 0u64;
        let mut seq = 0;
        // Three bounds' worth of WAL frames, in batches back to back, each followed by
        // the dispatcher's call between batches.
        while written < 3 * bound {
            for _ in 0..100 {
                seq += 1;
                store.append(message(seq, &text));
            }
            store.commit().unwrap();
            store.after_batch().unwrap();
            written += 100 * 600;
            let len = std::fs::metadata(&wal).unwrap().len();
            assert!(len <= bound, "the WAL grew to {len} bytes after {seq} messages (bound {bound})");
        }
    }
}
