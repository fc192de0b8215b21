//! One-time import of the JSON-lines journal earlier versions wrote
//! (`journal-NNNNNN.log` in the data dir): every complete line becomes a stored
//! message, then the files are renamed `*.log.imported` (kept, not deleted).
//!
//! The import commits before the renames, and skips messages at or below a room's
//! stored head, so a crash between the two only repeats a harmless import.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::{sql_err, SqliteStoreError};

/// The fields of a journal line the store needs.
#[derive(serde::Deserialize)]
struct Line {
    room: String,
    seq: u64,
    #[serde(default)]
    ts: u64,
    #[serde(default)]
    text: String,
}

/// Journal segment files in `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("journal-")?.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort_unstable();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Imports every journal segment in `dir` into `conn`, then renames the segments.
pub fn import_journal(dir: &Path, conn: &mut Connection) -> Result<(), SqliteStoreError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SqliteStoreError::Io { path, source }
    };
    let files = segments(dir).map_err(io_err(dir))?;
    if files.is_empty() {
        return Ok(());
    }
    let db = super::db_path(dir);
    let tx = conn.transaction().map_err(sql_err(&db))?;
    let mut rooms: HashMap<String, (i64, u64)> = HashMap::new();
    let mut count = 0u64;
    for path in &files {
        let reader = BufReader::new(File::open(path).map_err(io_err(path))?);
        for line in reader.split(b'\n') {
            let line = line.map_err(io_err(path))?;
            let Ok(m) = serde_json::from_slice::<Line>(&line) else {
                // A torn or damaged line can only be the end of what was written.
                log::warn!("import {}: skipping an unreadable line", path.display());
                break;
            };
            if insert(&tx, &mut rooms, &m, &line).map_err(sql_err(&db))? {
                count += 1;
            }
        }
    }
    tx.commit().map_err(sql_err(&db))?;
    for path in &files {
        let to = PathBuf::from(format!("{}.imported", path.display()));
        fs::rename(path, &to).map_err(io_err(path))?;
    }
    log::info!("imported {count} messages of {} rooms from {} journal file(s)", rooms.len(), files.len());
    Ok(())
}

/// Inserts one journal line unless its room already holds that seq; true if inserted.
fn insert(
    tx: &rusqlite::Transaction<'_>,
    rooms: &mut HashMap<String, (i64, u64)>,
    m: &Line,
    json: &[u8],
) -> rusqlite::Result<bool> {
    if !rooms.contains_key(&m.room) {
        tx.execute(
            "INSERT INTO rooms (name, epoch, head) VALUES (?1, ?2, 0) ON CONFLICT (name) DO NOTHING",
            params![m.room, crate::store::new_epoch()],
        )?;
        let row = tx
            .query_row("SELECT id, head FROM rooms WHERE name = ?1", params![m.room], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (id, head): (i64, i64) = row;
        rooms.insert(m.room.clone(), (id, head as u64));
    }
    let (id, head) = rooms.get_mut(&m.room).expect("inserted above");
    if m.seq <= *head {
        return Ok(false); // a compaction interrupted by a crash can repeat lines
    }
    tx.execute(
        "INSERT INTO messages (room, seq, ts, json) VALUES (?1, ?2, ?3, ?4)",
        params![*id, m.seq as i64, m.ts as i64, json],
    )?;
    tx.execute("INSERT INTO messages_fts (rowid, text) VALUES (?1, ?2)", params![tx.last_insert_rowid(), m.text])?;
    tx.execute("UPDATE rooms SET head = ?2 WHERE id = ?1", params![*id, m.seq as i64])?;
    *head = m.seq;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::super::{FsyncPolicy, SqliteStore};

    /// The fixture was written by natter's own `Journal` (before this store replaced
    /// it): 25 messages in lobby, 7 in tea.room, then a record torn by a crash.
    #[test]
    fn a_journal_written_by_the_old_code_is_imported_once_and_kept_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal-v1");
        for e in std::fs::read_dir(&fixture).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        let get = |store: &mut SqliteStore, n: &str| {
            let r = store.load_room(n, 1000).unwrap().unwrap();
            (r.head, r.recent.iter().map(|m| m.seq).collect::<Vec<_>>(), r.epoch.clone(), r.recent[0].json.clone())
        };
        let (head, seqs, epoch, first) = get(&mut store, "lobby");
        assert_eq!((head, seqs), (25, (1..=25).collect::<Vec<_>>()));
        assert_eq!(get(&mut store, "tea.room").0, 7);
        assert!(dir.path().join("journal-000001.log.imported").exists(), "kept, renamed");
        assert!(!dir.path().join("journal-000001.log").exists());
        // The JSON is the live frame's, byte for byte.
        let first: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(first["type"], "msg");
        // A second start imports nothing again and keeps the epoch.
        drop(store);
        let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(get(&mut store, "lobby").0, 25);
        assert_eq!(get(&mut store, "lobby").2, epoch);
    }
}
