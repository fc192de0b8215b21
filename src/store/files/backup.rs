//! The files part of `natter backup`: a copy of the files directory (`files.db`, the
//! blobs it names, the URL-signing `secret`) made while natter serves it, and made to
//! agree with the copy of the message store taken just before it.
//!
//! `files.db` is copied with SQLite's online backup API from one read snapshot, like
//! `natter.db` (store/sqlite/backup.rs, which calls [`copy_files`] after its own copy).
//! The two snapshots are moments apart, so the copy is then reconciled with the
//! message store's copy: each file's refs become exactly the copied messages that name
//! it (a message stored after the store's snapshot names nothing in the backup, and a
//! message in it whose ref was still on its way gets it), so a restored natter neither
//! keeps a file for a message it lost nor sweeps one a restored message shows. Blobs
//! are immutable and named by their SHA-256: each one the copy names is copied; one
//! removed meanwhile (its last message deleted after the snapshot) leaves its files out
//! of the copy, and is counted.
//!
//! Never writes to the live files directory; never touches rooms, members or sockets.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::db::DB_FILE;
use super::SECRET_FILE;
use crate::store::snapshot::{online_copy, SnapshotError};

/// What the files part of a backup holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FilesReport {
    pub files: u64,
    pub blobs: u64,
    pub bytes: u64,
    /// Files left out: their blob went (their last message was deleted) during the copy.
    pub gone: u64,
}

/// Why the files part of a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesBackupError {
    #[error("{what} {path}: {source}")]
    Sqlite { what: &'static str, path: PathBuf, source: rusqlite::Error },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error("the copy of files.db failed PRAGMA integrity_check: {0}")]
    Integrity(String),
    #[error("copying files.db: {0}")]
    Copy(#[from] SnapshotError),
}

fn sql<'a>(what: &'static str, path: &'a Path) -> impl Fn(rusqlite::Error) -> FilesBackupError + 'a {
    move |source| FilesBackupError::Sqlite { what, path: path.to_owned(), source }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(io::Error) -> FilesBackupError + 'a {
    move |source| FilesBackupError::Io { what, path: path.to_owned(), source }
}

/// Whether `dir` holds a files store to back up.
pub fn is_files_dir(dir: &Path) -> bool {
    dir.join(DB_FILE).is_file()
}

/// Copies the files store in `source` into the new directory `dest` (which must not
/// exist), agreeing with `messages` (the finished copy of the message store); see the
/// module doc. `pages_per_step` and `pause` pace the copy of `files.db`.
pub fn copy_files(
    source: &Path,
    messages: &Path,
    dest: &Path,
    pages_per_step: u32,
    pause: Duration,
) -> Result<FilesReport, FilesBackupError> {
    fs::create_dir(dest).map_err(io_err("creating", dest))?;
    let db = dest.join(DB_FILE);
    online_copy(&source.join(DB_FILE), &db, pages_per_step, pause)?;
    let conn = Connection::open(&db).map_err(sql("opening the copy", &db))?;
    conn.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(())).map_err(sql("writing", &db))?;
    agree_with(&conn, messages).map_err(sql("reconciling", &db))?;
    let mut report = copy_blobs(&conn, &source.join("blobs"), &dest.join("blobs"))?;
    report.files =
        conn.query_row("SELECT count(*) FROM files", [], |r| r.get::<_, i64>(0)).map_err(sql("counting", &db))? as u64;
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut q| q.query_map([], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sql("checking", &db))?
        .into_iter()
        .filter(|r| r != "ok")
        .collect();
    if !problems.is_empty() {
        return Err(FilesBackupError::Integrity(problems.join("; ")));
    }
    conn.close().map_err(|(_, e)| sql("writing", &db)(e))?;
    fs::File::open(&db).and_then(|f| f.sync_all()).map_err(io_err("syncing", &db))?;
    let secret = source.join(SECRET_FILE);
    if secret.is_file() {
        copy_private(&secret, &dest.join(SECRET_FILE))?;
    }
    for dir in [dest.join("blobs"), dest.to_owned()] {
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err("syncing", &dir))?;
    }
    Ok(report)
}

/// Makes the refs of the copy on `conn` exactly the messages in the message store's
/// copy at `messages` that name each file (grants a stored message took over go too).
fn agree_with(conn: &Connection, messages: &Path) -> rusqlite::Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS msgs", [messages.to_string_lossy()])?;
    conn.execute_batch(
        "BEGIN;
         CREATE TEMP TABLE posted AS
           SELECT DISTINCT json_extract(f.value, '$.id') AS file, r.name AS room, m.seq AS seq, m.ts AS ts
           FROM msgs.messages m JOIN msgs.rooms r ON r.id = m.room,
                json_each(CAST(m.json AS TEXT), '$.files') f
           WHERE instr(m.json, CAST('\"files\":[' AS BLOB)) > 0 AND json_valid(CAST(m.json AS TEXT));
         DELETE FROM refs WHERE seq > 0 AND NOT EXISTS
           (SELECT 1 FROM temp.posted p WHERE p.file = refs.file AND p.room = refs.room AND p.seq = refs.seq);
         INSERT OR IGNORE INTO refs (file, room, seq, ts)
           SELECT file, room, seq, ts FROM temp.posted WHERE file IN (SELECT id FROM files);
         DELETE FROM refs WHERE seq = 0 AND EXISTS
           (SELECT 1 FROM refs r2 WHERE r2.file = refs.file AND r2.room = refs.room AND r2.seq > 0);
         DROP TABLE temp.posted;
         COMMIT;",
    )?;
    conn.execute("DETACH DATABASE msgs", [])?;
    Ok(())
}

/// Copies every blob the copy names; files whose blob is gone leave the copy.
fn copy_blobs(conn: &Connection, from: &Path, to: &Path) -> Result<FilesReport, FilesBackupError> {
    let db = Path::new(DB_FILE);
    fs::create_dir_all(to).map_err(io_err("creating", to))?;
    let blobs: Vec<String> = conn
        .prepare("SELECT DISTINCT sha256 FROM files")
        .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
        .map_err(sql("reading", db))?;
    let mut report = FilesReport::default();
    for sha in blobs {
        let (src, dst) = (super::blob_path(from, &sha), super::blob_path(to, &sha));
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        match fs::copy(&src, &dst) {
            Ok(n) => {
                fs::File::open(&dst).and_then(|f| f.sync_all()).map_err(io_err("syncing", &dst))?;
                report.blobs += 1;
                report.bytes += n;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let ids: Vec<String> = conn
                    .prepare("SELECT id FROM files WHERE sha256 = ?1")
                    .and_then(|mut q| q.query_map([&sha], |r| r.get(0))?.collect())
                    .map_err(sql("reading", db))?;
                for id in &ids {
                    conn.execute("DELETE FROM refs WHERE file = ?1", [id]).map_err(sql("writing", db))?;
                    conn.execute("DELETE FROM files WHERE id = ?1", [id]).map_err(sql("writing", db))?;
                }
                report.gone += ids.len() as u64;
            }
            Err(e) => return Err(io_err("copying", &src)(e)),
        }
    }
    Ok(report)
}

/// Copies the secret, readable by its owner only.
fn copy_private(from: &Path, to: &Path) -> Result<(), FilesBackupError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = fs::read(from).map_err(io_err("reading", from))?;
    let mut f =
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(to).map_err(io_err("writing", to))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(io_err("writing", to))
}
