//! `natter backup`: a consistent copy of the SQLite store while natter serves it, and
//! what start-up does with a store restored from such a copy.
//!
//! The copy is made with SQLite's online backup API from a read-only connection that
//! holds one read transaction from the first page to the last. In WAL mode that pins
//! one snapshot: the serving process's commits go on (into the WAL, past the snapshot),
//! the copy never restarts because of them, and it is the store exactly as one commit
//! left it. Pages are copied a few at a time with a pause between steps, so the copy's
//! reads leave the disk to the writer. The copy is then stamped [`RESTORE_MARK`],
//! checked with `PRAGMA integrity_check`, synced and linked into place: FILE is the
//! whole checked copy or it is not there.
//!
//! A restored store has lost what was committed after its backup, so it would hand out
//! seqs again that clients already saw for other messages. [`renew_epochs_if_restored`]
//! runs when the store opens, before rooms load: a stamped store gives every room a new
//! epoch (clients that resume from the old history get `reset:true`) and loses the
//! stamp, in one transaction.
//!
//! The files store (uploads: `files.db`, blobs, the URL-signing secret) is copied
//! after the message store, into the directory `FILE.files` beside FILE, by
//! store/files/backup.rs, which makes it agree with the message store's copy. Restore
//! puts FILE back as `natter.db` and `FILE.files` as the files directory.
//!
//! Never writes to the live store; never touches rooms, members or sockets.

use std::fmt;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use super::db_path;
use crate::store::files::backup::{copy_files, is_files_dir, FilesBackupError, FilesReport};
use crate::store::new_epoch;
use crate::store::snapshot::{online_copy, SnapshotError};

/// The `meta` row a backup carries until the first start from it: its value says
/// what the copy was taken from, and when.
pub const RESTORE_MARK: &str = "restore_pending";

/// How a backup copies.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Pages copied per step (4 KiB each by default): 256 is 1 MiB.
    pub pages_per_step: u32,
    /// Pause between two steps, so the copy's reads leave the disk to the writer.
    pub pause: Duration,
    /// Replace FILE (and `FILE.files`) when it exists (else: [`BackupError::Exists`]).
    pub overwrite: bool,
    /// The files directory natter serves with (`--files-dir`); `None`: `files/` in the
    /// data dir, left out when it holds no files store.
    pub files_dir: Option<PathBuf>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions { pages_per_step: 256, pause: Duration::from_millis(5), overwrite: false, files_dir: None }
    }
}

/// Where the files store's copy goes for a backup to `file`: `FILE.files` beside it.
pub fn files_beside(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_owned();
    name.push(".files");
    file.with_file_name(name)
}

/// What a finished backup copied.
#[derive(Debug)]
pub struct BackupReport {
    pub source: PathBuf,
    pub file: PathBuf,
    pub rooms: u64,
    pub messages: u64,
    pub bytes: u64,
    pub pages: u64,
    /// Steps the copy took; more than `pages / pages_per_step + 1` would mean it
    /// restarted.
    pub steps: u64,
    pub took: Duration,
    /// The files store's copy and what it holds (`None`: there was none to copy).
    pub files: Option<(PathBuf, FilesReport)>,
}

impl fmt::Display for BackupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "copied {} to {}: {} rooms, {} messages, {} bytes ({} pages in {} steps, {:.2} s); integrity_check ok",
            self.source.display(),
            self.file.display(),
            self.rooms,
            self.messages,
            self.bytes,
            self.pages,
            self.steps,
            self.took.as_secs_f64()
        )?;
        match &self.files {
            Some((dir, r)) => write!(
                f,
                "; {} files ({} bytes in {} blobs) to {}{}",
                r.files,
                r.bytes,
                r.blobs,
                dir.display(),
                if r.gone > 0 { format!(" ({} deleted during the copy left out)", r.gone) } else { String::new() }
            ),
            None => write!(f, "; no files store to copy"),
        }
    }
}

/// Why a backup did not produce FILE (nothing is left behind: the temporary copy is
/// removed).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no store at {0} (is --data-dir the one natter serves with?)")]
    NoStore(PathBuf),
    #[error("{0} exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("{0} is the live store itself; back up to another file")]
    SameFile(PathBuf),
    #[error("{what} {path}: {source}")]
    Sqlite { what: &'static str, path: PathBuf, source: rusqlite::Error },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("the copy failed PRAGMA integrity_check: {0}")]
    Integrity(String),
    #[error("copying the store: {0}")]
    Copy(#[from] SnapshotError),
    #[error("no files store at {0} (is --files-dir the one natter serves with?)")]
    NoFiles(PathBuf),
    #[error("copying the files store: {0}")]
    Files(#[from] FilesBackupError),
}

/// Copies the store in `data_dir` to `file`; see the module doc.
pub fn backup(data_dir: &Path, file: &Path, opts: &BackupOptions) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let source = db_path(data_dir);
    if !source.is_file() {
        return Err(BackupError::NoStore(source));
    }
    if file.exists() {
        if same_file(&source, file) {
            return Err(BackupError::SameFile(file.to_owned()));
        }
        if !opts.overwrite {
            return Err(BackupError::Exists(file.to_owned()));
        }
    }
    let files_dest = files_beside(file);
    let files_source = match &opts.files_dir {
        Some(dir) if !is_files_dir(dir) => return Err(BackupError::NoFiles(dir.clone())),
        Some(dir) => Some(dir.clone()),
        None => Some(data_dir.join("files")).filter(|d| is_files_dir(d)),
    };
    if files_source.is_some() && files_dest.exists() && !opts.overwrite {
        return Err(BackupError::Exists(files_dest));
    }
    let tmp = Temp::beside(file)?;
    // A stopped store has no WAL files; reading it creates them, owned by whoever runs
    // the backup: hand them to the store's owner, so natter (another user, say) can
    // still open its store after a backup run as root.
    let side = [format!("{}-wal", source.display()), format!("{}-shm", source.display())].map(PathBuf::from);
    let missing: Vec<PathBuf> = side.into_iter().filter(|p| !p.exists()).collect();
    let copied = online_copy(&source, &tmp.path, opts.pages_per_step, opts.pause);
    give_to_owner_of(&source, &missing);
    let steps = copied?;
    let mut report = finish_copy(&source, &tmp.path)?;
    report.steps = steps;
    // After the message store's snapshot, and made to agree with its copy.
    if let Some(source) = files_source {
        let dir = TempDir::beside(&files_dest)?;
        let copied = copy_files(&source, &tmp.path, &dir.path, opts.pages_per_step, opts.pause)?;
        dir.place(&files_dest, opts.overwrite)?;
        report.files = Some((files_dest, copied));
    }
    tmp.place(file, opts.overwrite)?;
    report.file = file.to_owned();
    report.took = started.elapsed();
    Ok(report)
}

/// Turns the fresh copy at `dest` into a restorable file: out of WAL mode (one file,
/// no `-wal` beside it), stamped, checked, synced. Counts what it holds.
fn finish_copy(source: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    let sql = |what| sql(what, dest);
    let conn = Connection::open(dest).map_err(sql("opening the copy"))?;
    conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(())).map_err(sql("writing"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mark = format!("backup of {} taken at {now} ms", source.display());
    conn.execute("INSERT OR REPLACE INTO meta (k, v) VALUES (?1, ?2)", params![RESTORE_MARK, mark])
        .map_err(sql("stamping"))?;
    let problems = integrity_problems(&conn).map_err(sql("checking"))?;
    if !problems.is_empty() {
        return Err(BackupError::Integrity(problems.join("; ")));
    }
    let count = |q: &str| conn.query_row(q, [], |r| r.get::<_, i64>(0)).map(|n| n.max(0) as u64);
    let rooms = count("SELECT count(*) FROM rooms").map_err(sql("counting"))?;
    let messages = count("SELECT count(*) FROM messages").map_err(sql("counting"))?;
    let pages = count("PRAGMA page_count").map_err(sql("counting"))?;
    let page_size = count("PRAGMA page_size").map_err(sql("counting"))?;
    conn.close().map_err(|(_, e)| sql("writing")(e))?;
    let io = |source| BackupError::Io { what: "syncing", path: dest.to_owned(), source };
    File::open(dest).and_then(|f| f.sync_all()).map_err(io)?;
    Ok(BackupReport {
        source: source.to_owned(),
        file: PathBuf::new(),
        rooms,
        messages,
        bytes: pages * page_size,
        pages,
        steps: 0,
        took: Duration::ZERO,
        files: None,
    })
}

/// What `PRAGMA integrity_check` found wrong with the database on `conn` (none: empty).
pub fn integrity_problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut q = conn.prepare("PRAGMA integrity_check")?;
    let rows = q.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().filter(|r| r != "ok").collect())
}

fn sql<'a>(what: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> BackupError + 'a {
    move |source| BackupError::Sqlite { what, path: path.to_owned(), source }
}

/// Makes `created` (files this backup made beside the store) owned as `store` is; a
/// failure is harmless when the backup runs as the store's owner, so it is ignored.
fn give_to_owner_of(store: &Path, created: &[PathBuf]) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(store) else { return };
    for path in created.iter().filter(|p| p.exists()) {
        let _ = std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()));
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((fs::canonicalize(a), fs::canonicalize(b)), (Ok(a), Ok(b)) if a == b)
}

/// The copy while it is made: a hidden file beside FILE (same file system, so the
/// final link or rename is atomic), removed unless it was placed.
struct Temp {
    path: PathBuf,
    placed: bool,
}

impl Temp {
    fn beside(file: &Path) -> Result<Temp, BackupError> {
        let name = file.file_name().ok_or_else(|| BackupError::Io {
            what: "naming",
            path: file.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "FILE must name a file"),
        })?;
        let path = file.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory");
            return Err(BackupError::Io { what: "writing into", path: dir.to_owned(), source });
        }
        // Left behind by a backup of this pid that was killed: never a live file.
        let _ = fs::remove_file(&path);
        Ok(Temp { path, placed: false })
    }

    /// Puts the copy at `file`. Without `overwrite` a hard link, which fails if `file`
    /// appeared meanwhile, so nothing is ever replaced silently.
    fn place(mut self, file: &Path, overwrite: bool) -> Result<(), BackupError> {
        let io = |what| move |source| BackupError::Io { what, path: file.to_owned(), source };
        if overwrite {
            fs::rename(&self.path, file).map_err(io("renaming the copy to"))?;
        } else {
            match fs::hard_link(&self.path, file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(BackupError::Exists(file.to_owned()))
                }
                Err(e) => return Err(io("linking the copy to")(e)),
            }
            fs::remove_file(&self.path).map_err(io("removing the temporary copy beside"))?;
        }
        self.placed = true;
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing the directory of"))
    }
}

/// The files store's copy while it is made: a hidden directory beside `FILE.files`,
/// removed unless it was placed.
struct TempDir {
    path: PathBuf,
    placed: bool,
}

impl TempDir {
    fn beside(dest: &Path) -> Result<TempDir, BackupError> {
        let name = dest.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let path = dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
        // Left behind by a backup of this pid that was killed: never a live directory.
        let _ = fs::remove_dir_all(&path);
        Ok(TempDir { path, placed: false })
    }

    /// Renames the copy to `dest`; with `overwrite` an old `dest` is moved aside first
    /// and removed after, so `dest` is always one whole copy.
    fn place(mut self, dest: &Path, overwrite: bool) -> Result<(), BackupError> {
        let io = |what| move |source| BackupError::Io { what, path: dest.to_owned(), source };
        let old = self.path.with_extension("old");
        if dest.exists() {
            if !overwrite {
                return Err(BackupError::Exists(dest.to_owned()));
            }
            fs::rename(dest, &old).map_err(io("moving aside the old"))?;
        }
        fs::rename(&self.path, dest).map_err(io("renaming the copy to"))?;
        self.placed = true;
        let _ = fs::remove_dir_all(&old);
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing the directory of"))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_file(format!("{}-journal", self.path.display()));
        }
    }
}

/// Start-up: when the store is a restored backup (it carries [`RESTORE_MARK`]), every
/// room gets a new epoch, read markers past a room's restored head come back to it, and
/// the mark goes, in one transaction. Returns how many rooms got a new epoch (None: not
/// a restored store).
pub fn renew_epochs_if_restored(conn: &mut Connection) -> rusqlite::Result<Option<usize>> {
    let tx = conn.transaction()?;
    let mark: Option<String> =
        tx.query_row("SELECT v FROM meta WHERE k = ?1", [RESTORE_MARK], |r| r.get(0)).optional()?;
    let Some(mark) = mark else { return Ok(None) };
    let ids =
        tx.prepare("SELECT id FROM rooms")?.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
    {
        let mut renew = tx.prepare("UPDATE rooms SET epoch = ?2 WHERE id = ?1")?;
        for id in &ids {
            renew.execute(params![id, new_epoch()])?;
        }
    }
    // A marker past the head would count the new history's first messages as read.
    tx.execute(
        "UPDATE reads SET seq = (SELECT head FROM rooms WHERE rooms.name = reads.room)
         WHERE seq > (SELECT head FROM rooms WHERE rooms.name = reads.room)",
        [],
    )?;
    tx.execute("DELETE FROM meta WHERE k = ?1", [RESTORE_MARK])?;
    tx.commit()?;
    log::warn!(
        "store: restored from a {mark}: {} rooms start a new epoch (clients resuming from before get reset)",
        ids.len()
    );
    Ok(Some(ids.len()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::config::FsyncPolicy;
    use crate::store::sqlite::SqliteStore;
    use crate::store::NewMessage;

    fn post(store: &mut SqliteStore, room: &str, seq: u64) {
        let json = format!(r#"{{"type":"msg","room":"{room}","seq":{seq},"text":"m{seq}"}}"#);
        store.append(NewMessage {
            room: room.into(),
            epoch: "e0".into(),
            seq,
            ts: seq,
            text: format!("m{seq}"),
            json: Bytes::from(json),
        });
    }

    /// Rooms `a` and `b` as a start from `dir` loads them: (name, epoch, head).
    fn epochs(dir: &Path) -> Vec<(String, String, u64)> {
        let mut store = SqliteStore::open(dir, FsyncPolicy::Never).expect("open");
        ["a", "b"]
            .map(|name| store.load_room(name, 10).expect("load").expect("stored"))
            .into_iter()
            .map(|r| (r.name, r.epoch, r.head))
            .collect()
    }

    #[test]
    fn a_backup_opens_once_with_new_epochs_then_keeps_them() {
        let (live, restored) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        {
            let mut store = SqliteStore::open(live.path(), FsyncPolicy::Never).expect("open");
            for seq in 1..=3 {
                post(&mut store, "a", seq);
                post(&mut store, "b", seq);
            }
            store.set_read("u", "a", 3);
            store.commit().expect("commit");
            let file = restored.path().join("natter.db");
            let report = backup(live.path(), &file, &BackupOptions::default()).expect("backup");
            assert_eq!((report.rooms, report.messages), (2, 6), "{report}");
            // Written after the backup: gone from the copy.
            post(&mut store, "a", 4);
            store.set_read("u", "a", 4);
            store.commit().expect("commit");
        }
        let before = epochs(live.path());
        assert_eq!(before.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(), ["e0", "e0"]);
        let first = epochs(restored.path());
        assert_eq!(first.iter().map(|r| r.2).collect::<Vec<_>>(), [3, 3], "heads as backed up");
        assert!(first.iter().all(|r| r.1 != "e0"), "every room starts a new epoch: {first:?}");
        assert_ne!(first[0].1, first[1].1, "each its own");
        assert_eq!(epochs(restored.path()), first, "once: a second start keeps them");
        let conn = Connection::open(db_path(restored.path())).unwrap();
        let read: i64 = conn.query_row("SELECT seq FROM reads WHERE user = 'u'", [], |r| r.get(0)).unwrap();
        assert_eq!(read, 3);
        assert!(integrity_problems(&conn).unwrap().is_empty());
        assert_eq!(epochs(live.path()), before, "the live store is not touched");
    }

    #[test]
    fn the_files_copy_names_exactly_the_copied_messages_files() {
        use crate::store::files::{Files, Lifecycle, UploadMeta};
        let (live, copies) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let lifecycle = Lifecycle { unposted_ttl: Duration::from_secs(3600), retention: None, max_store_bytes: None };
        let files = Files::open(&live.path().join("files"), lifecycle).expect("files");
        let up = |bytes: &[u8]| {
            let mut u = files.begin().unwrap();
            u.write(bytes).unwrap();
            u.finish(UploadMeta { uploader: "u".into(), name: "f.txt".into(), content_type: None }).unwrap().id
        };
        let (stored, late, on_its_way) = (up(b"one"), up(b"two"), up(b"three"));
        let mut store = SqliteStore::open(live.path(), FsyncPolicy::Never).expect("open");
        for (seq, id) in [(1, &stored), (3, &on_its_way)] {
            let json = format!(r#"{{"type":"msg","room":"r","seq":{seq},"text":"","files":[{{"id":"{id}"}}]}}"#);
            store.append(NewMessage {
                room: "r".into(),
                epoch: "e0".into(),
                seq,
                ts: seq,
                text: String::new(),
                json: Bytes::from(json),
            });
        }
        store.commit().expect("commit");
        // The files store as it is a moment later: the ref of seq 1; seq 2 stored after
        // the message store's snapshot; seq 3's ref still on its way (only its grant).
        let ids = [stored.clone(), late.clone(), on_its_way.clone()];
        files
            .call(move |db| {
                db.posted("r", 1, &ids[..1], 1)?;
                db.posted("r", 2, &ids[1..2], 2)?;
                db.grant("u", &ids[2..], "r", 3).map(|_| ())
            })
            .unwrap();
        let file = copies.path().join("b.db");
        let report = backup(live.path(), &file, &BackupOptions::default()).expect("backup");
        let (dir, copied) = report.files.expect("the files store is copied");
        assert_eq!((dir.clone(), copied.files, copied.blobs, copied.gone), (files_beside(&file), 3, 3, 0));
        let conn = Connection::open(dir.join("files.db")).unwrap();
        let refs: Vec<(String, u64)> = conn
            .prepare("SELECT file, seq FROM refs ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(refs, [(stored, 1), (on_its_way, 3)], "seq 2 is not in the copy; seq 3's ref is");
        assert!(dir.join("secret").is_file());
    }

    #[test]
    fn a_backup_never_replaces_a_file_unasked_nor_the_live_store() {
        let dir = tempfile::tempdir().unwrap();
        let missing = backup(dir.path(), &dir.path().join("x.db"), &BackupOptions::default());
        assert!(matches!(missing, Err(BackupError::NoStore(_))), "{missing:?}");
        drop(SqliteStore::open(dir.path(), FsyncPolicy::Never).expect("open"));
        let file = dir.path().join("copy.db");
        fs::write(&file, b"keep me").unwrap();
        let refused = backup(dir.path(), &file, &BackupOptions::default());
        assert!(matches!(refused, Err(BackupError::Exists(_))), "{refused:?}");
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
        let forced = BackupOptions { overwrite: true, ..BackupOptions::default() };
        backup(dir.path(), &file, &forced).expect("--force replaces it");
        assert_ne!(fs::read(&file).unwrap(), b"keep me");
        let live = backup(dir.path(), &db_path(dir.path()), &forced);
        assert!(matches!(live, Err(BackupError::SameFile(_))), "{live:?}");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
