//! An online copy of a SQLite database file from one read snapshot (SQLite's backup
//! API, a few pages a step with a pause between, so the serving process goes on
//! writing): what `natter backup` does to `natter.db` and to the files store's
//! `files.db`.
//!
//! Only ever reads the source; never touches rooms, files or sockets.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

/// Busy or locked steps in a row after which the copy gives up (a step is retried
/// after the pause; in WAL mode a reader is only kept waiting during WAL recovery).
const MAX_BUSY_STEPS: u32 = 1_000;

/// Why an online copy failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {path}: {source}")]
    Sqlite { what: &'static str, path: PathBuf, source: rusqlite::Error },
    #[error("stayed busy for {0} steps in a row")]
    Busy(u32),
}

fn sql<'a>(what: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Sqlite { what, path: path.to_owned(), source }
}

/// Copies `source` to a new file `dest`, `pages_per_step` pages a step with `pause`
/// between steps, all from one read snapshot; returns the steps taken.
pub fn online_copy(source: &Path, dest: &Path, pages_per_step: u32, pause: Duration) -> Result<u64, SnapshotError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let src = Connection::open_with_flags(source, flags).map_err(sql("opening", source))?;
    src.busy_timeout(Duration::from_secs(5)).map_err(sql("opening", source))?;
    // The read transaction every step shares: backup steps open one of their own only
    // when none is open, and a new one per step would restart the copy after each
    // commit of the serving process.
    src.execute_batch("BEGIN").map_err(sql("reading", source))?;
    src.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())).map_err(sql("reading", source))?;
    let mut dst = Connection::open(dest).map_err(sql("creating", dest))?;
    let steps = {
        let backup = Backup::new(&src, &mut dst).map_err(sql("copying", source))?;
        let pages = i32::try_from(pages_per_step.max(1)).unwrap_or(i32::MAX);
        let (mut steps, mut busy) = (0u64, 0u32);
        loop {
            steps += 1;
            match backup.step(pages).map_err(sql("copying", source))? {
                StepResult::Done => break steps,
                StepResult::More => busy = 0,
                // Busy, locked, or a future variant: a pause, bounded.
                _ => busy += 1,
            }
            if busy >= MAX_BUSY_STEPS {
                return Err(SnapshotError::Busy(busy));
            }
            thread::sleep(pause);
        }
    };
    src.execute_batch("COMMIT").map_err(sql("reading", source))?;
    dst.close().map_err(|(_, e)| sql("writing", dest)(e))?;
    Ok(steps)
}
