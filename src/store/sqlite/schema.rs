//! The database layout and the connection settings every connection shares.
//!
//! One table of rooms (name, epoch, head), one of messages (the live `msg` JSON, keyed
//! by room and seq), an FTS5 index over the message texts whose rowids are the
//! messages' ids, and the users' read markers (user, room → seq). Nothing here runs a query for a client.

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
CREATE TABLE IF NOT EXISTS reads (
    user TEXT NOT NULL,
    room TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (user, room)
) WITHOUT ROWID;
";

/// The writer's settings: WAL, the fsync policy, then the schema.
pub fn prepare_writer(conn: &Connection, policy: FsyncPolicy) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous(policy))?;
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

/// `synchronous` for each policy. In WAL mode FULL syncs the WAL at every commit;
/// NORMAL syncs only at checkpoints (the `interval` policy adds a once-a-second sync of
/// the WAL, see `Syncer`); OFF never syncs.
pub fn synchronous(policy: FsyncPolicy) -> &'static str {
    match policy {
        FsyncPolicy::Always => "FULL",
        FsyncPolicy::Interval => "NORMAL",
        FsyncPolicy::Never => "OFF",
    }
}
