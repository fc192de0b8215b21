//! The store's background thread. It checkpoints — copies the WAL into the database
//! file — once [`CHECKPOINT_PAGES`] wait in the WAL, on a connection of its own; and
//! under the `interval` policy it `fdatasync`s the WAL once a second when something was
//! committed (`synchronous=NORMAL` alone would sync the WAL only at checkpoints; this
//! keeps the promise that a power failure loses at most about a second of acked
//! messages).
//!
//! Why checkpoints live here: SQLite's automatic checkpoint runs inside the commit that
//! crosses its threshold, on the dispatcher thread, and under `NORMAL`/`FULL` it fsyncs
//! the WAL and the database file there — perf showed the dispatcher blocked in `fsync`
//! under `walCheckpoint`: the tail of a single message's ack (docs/PERFORMANCE.md). A
//! `PASSIVE` checkpoint neither waits for nor blocks the writer or the readers. Only the
//! writer restarts the WAL from its beginning, at its first transaction after a
//! checkpoint caught up (that costs it one small fsync of the new WAL header, as often
//! as SQLite's own checkpoint would); writes without a pause may never leave it that
//! moment, so the writer keeps SQLite's own checkpoint as a backstop at
//! [`schema::WRITER_CHECKPOINT_PAGES`]: the WAL stays bounded whatever this thread does.
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

/// How often the thread looks at the WAL.
const TICK: Duration = Duration::from_millis(250);
/// Ticks between two syncs of the WAL under `interval`: once a second.
const SYNC_TICKS: u32 = 4;
/// WAL pages not yet copied at which a checkpoint starts: SQLite's own default.
pub const CHECKPOINT_PAGES: u32 = 1000;
/// Checkpoints in a row while commits keep adding to the WAL: each copies what came
/// during the one before (little), so one soon ends with nothing left behind.
const CATCH_UP_ROUNDS: usize = 4;

#[derive(Debug)]
pub struct Syncer {
    dirty: Arc<AtomicBool>,
}

/// What the thread owns: its connection, the WAL and its index, whether it syncs.
struct Worker {
    conn: Connection,
    wal: PathBuf,
    /// The `-shm` file: the WAL-index, whose header says how long the WAL is.
    shm: Option<File>,
    sync_wal: bool,
    /// The last checkpoint failed (logged once, not every tick).
    failing: bool,
}

impl Syncer {
    /// Starts the thread on the database at `db`, which the writer has open in WAL mode.
    pub fn start(db: &Path, policy: FsyncPolicy) -> Result<Syncer, SqliteStoreError> {
        let conn = Connection::open(db).map_err(sql_err(db))?;
        // A checkpoint syncs as its connection's `synchronous` says: as the writer's.
        conn.pragma_update(None, "synchronous", schema::synchronous(policy)).map_err(sql_err(db))?;
        let shm = File::open(format!("{}-shm", db.display())).ok();
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let mut worker = Worker { conn, wal, shm, sync_wal: policy == FsyncPolicy::Interval, failing: false };
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = Arc::downgrade(&dirty);
        // Vital: without it the `interval` sync would stop silently (and checkpoints
        // would fall back on the writer's backstop, inside acked commits).
        crate::shutdown::spawn_vital("store-sync", move || {
            for tick in 1.. {
                thread::sleep(TICK);
                let Some(flag) = flag.upgrade() else { return };
                if worker.uncopied() >= CHECKPOINT_PAGES {
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
    /// WAL frames not yet copied into the database, from the WAL-index header
    /// (<https://sqlite.org/walformat.html>: `mxFrame` at byte 16, `nBackfill` at byte
    /// 96, native byte order). A read torn by a concurrent commit only moves the next
    /// checkpoint by a tick. Unreadable: [`CHECKPOINT_PAGES`], so checkpoints go on.
    fn uncopied(&self) -> u32 {
        let field = |at| {
            let mut b = [0u8; 4];
            self.shm.as_ref()?.read_exact_at(&mut b, at).ok()?;
            Some(u32::from_ne_bytes(b))
        };
        match (field(16), field(96)) {
            (Some(frames), Some(copied)) => frames.saturating_sub(copied),
            _ => CHECKPOINT_PAGES,
        }
    }

    /// Copies the WAL into the database until it has caught up (the writer then
    /// restarts the WAL at its next transaction) or [`CATCH_UP_ROUNDS`] went by.
    fn checkpoint(&mut self) {
        for _ in 0..CATCH_UP_ROUNDS {
            // One row: (busy, pages in the WAL, pages copied); busy: the writer's
            // backstop holds the checkpoint lock.
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
                        log::error!("store: background checkpoint failed (the writer's backstop remains): {e}");
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
        let auto: u32 = store.conn().query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
        assert_eq!(auto, schema::WRITER_CHECKPOINT_PAGES);
        // One message a commit, as a quiet room commits: past CHECKPOINT_PAGES of WAL,
        // far below the writer's own threshold.
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
    fn the_wal_stays_bounded_under_writes_without_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        let text = "y".repeat(400);
        let page = 4096 + 24;
        let bound = u64::from(schema::WRITER_CHECKPOINT_PAGES) * page * 3 / 2;
        let wal = dir.path().join("natter.db-wal");
        let mut written = 0u64;
        let mut seq = 0;
        // Three bounds' worth of WAL frames, in batches back to back.
        while written < 3 * bound {
            for _ in 0..100 {
                seq += 1;
                store.append(message(seq, &text));
            }
            store.commit().unwrap();
            written += 100 * 600;
            let len = std::fs::metadata(&wal).unwrap().len();
            assert!(len <= bound, "the WAL grew to {len} bytes after {seq} messages (bound {bound})");
        }
    }
}
