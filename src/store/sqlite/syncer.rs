//! The `interval` policy's background sync: once a second, when something was
//! committed, `fdatasync` the WAL file. SQLite's `synchronous=NORMAL` alone would
//! sync the WAL only at checkpoints; this keeps the promise that a power failure
//! loses at most about a second of acked messages. Touches nothing but that file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::StoreError;

#[derive(Debug)]
pub struct Syncer {
    dirty: Arc<AtomicBool>,
}

impl Syncer {
    pub fn start(db: &Path) -> Result<Syncer, StoreError> {
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let dirty = Arc::new(AtomicBool::new(false));
        let flag = Arc::downgrade(&dirty);
        thread::Builder::new()
            .name("store-fsync".into())
            .spawn(move || loop {
                thread::sleep(Duration::from_secs(1));
                let Some(flag) = flag.upgrade() else { return };
                if flag.swap(false, Ordering::AcqRel) {
                    if let Err(e) = File::open(&wal).and_then(|f| f.sync_data()) {
                        log::error!("store: syncing {} failed: {e}", wal.display());
                    }
                }
            })
            .map_err(|source| StoreError::Io { path: PathBuf::from("<store-fsync thread>"), source })?;
        Ok(Syncer { dirty })
    }

    pub fn dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}
