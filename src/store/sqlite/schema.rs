//! The database layout and the connection settings every connection shares.
//!
//! One table of rooms (name, epoch, head), one of messages (the live `msg` JSON, keyed
//! by room and seq) and an FTS5 index over the message texts whose rowids are the
//! messages' ids. Nothing here runs a query for a client.

use rusqlite::Connection;

use crate::config::FsyncPolicy;

/// File name of the database inside `--data-dir` (plus its `-wal` and `-shm`).
pub const DB_FILE: &str = "natter.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rooms (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE,
    epoch TEXT NOT NULL,
    head  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id   INTEGER PRIMARY KEY,
    room INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    ts   INTEGER NOT NULL,
    json BLOB NOT NULL,
    UNIQUE (room, seq)
);
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5 (
    text, content = '', contentless_delete = 1, tokenize = 'unicode61'
);
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    DELETE FROM messages_fts WHERE rowid = old.id;
END;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
";

/// WAL pages past which the writer checkpoints on its own commit (SQLite's default is
/// 1,000). The store's sync thread checkpoints once a second, off the dispatcher's
/// path; this is the backstop that bounds the WAL (about 40 MiB of 4 KiB pages) when
/// writes leave the writer no moment to restart it (see `syncer`).
pub const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// The writer's settings: WAL, the fsync policy, the checkpoint backstop, then the schema.
pub fn prepare_writer(conn: &Connection, policy: FsyncPolicy) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous(policy))?;
    conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// `synchronous` for each policy. In WAL mode FULL syncs the WAL at every commit;
/// NORMAL syncs only at checkpoints (the `interval` policy adds a once-a-second sync of
/// the WAL, see `Syncer`); OFF never syncs. Checkpoints sync as their connection says.
pub fn synchronous(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "FULL",
        FsyncPolicy::Interval => "NORMAL",
        FsyncPolicy::Never => "OFF",
    }
}
