//! The database layout and the connection settings every connection shares.
//!
//! One table of rooms (name, epoch, head), one of messages (the live `msg` JSON, keyed
//! by room and seq), an FTS5 index over the message texts whose rowids are the
//! messages' ids, the users' read markers (user, room → seq) and unread mentions, which
//! replies quote which message, which edit events
//! belong to which message (so a deletion can take their text too), and who may join
//! what: lasting users, private rooms, invitations, direct-message rooms. Nothing here runs a query for a client.

use rusqlite::{Connection, OptionalExtension};

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
CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5 (
    text, content = '', tokenize = 'unicode61', columnsize = 0
);
CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text)
    SELECT 'delete', old.id, json_extract(CAST(old.json AS TEXT), '$.text')
    WHERE json_extract(CAST(old.json AS TEXT), '$.type') = 'msg'
      AND json_extract(CAST(old.json AS TEXT), '$.text') IS NOT NULL;
END;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS reads (
    user TEXT NOT NULL,
    room TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (user, room)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, name TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS private_rooms (room TEXT PRIMARY KEY, owner TEXT NOT NULL, title TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS invites (room TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (room, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dms (room TEXT PRIMARY KEY, a TEXT NOT NULL, b TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kicks (room TEXT NOT NULL, user TEXT NOT NULL, until INTEGER NOT NULL, PRIMARY KEY (room, user)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS address_kicks (room TEXT NOT NULL, addr TEXT NOT NULL, until INTEGER NOT NULL, PRIMARY KEY (room, addr)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS read_only (room TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bans (user TEXT PRIMARY KEY, until INTEGER NOT NULL, reason TEXT NOT NULL, by TEXT NOT NULL, at INTEGER NOT NULL, addrs TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    room   TEXT NOT NULL,
    detail TEXT NOT NULL,
    addr   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE TABLE IF NOT EXISTS edits (
    room INTEGER NOT NULL,
    of   INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (room, of, seq)
) WITHOUT ROWID;
";

/// WAL frames past which the dispatcher copies what is left of the WAL itself, between
/// two batches (never inside a commit an ack waits for), so that its next commit
/// restarts the WAL from its beginning; the store's sync thread has copied all but the
/// last few frames by then (see `syncer`). About 40 MiB of 4 KiB pages.
pub const WAL_LIMIT_PAGES: u32 = 10_000;
/// Past this the dispatcher copies the WAL between batches whatever the sync thread
/// left behind: the hard bound of the WAL file.
pub const WAL_HARD_LIMIT_PAGES: u32 = 2 * WAL_LIMIT_PAGES;
/// Bytes the WAL file is cut back to when it restarts, if it grew past its limit
/// (while a long read kept it from restarting): the limit's 4 KiB pages and headers.
const WAL_FILE_LIMIT: i64 = WAL_LIMIT_PAGES as i64 * (4096 + 24);

/// The writer's settings: WAL, the fsync policy, no checkpoint inside a commit, then
/// the schema.
pub fn prepare_writer(conn: &Connection, policy: FsyncPolicy) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", synchronous(policy))?;
    // SQLite's own checkpoint runs inside the commit that crosses its threshold, on the
    // dispatcher, and every message behind it waits: off. The sync thread and
    // `SqliteStore::after_batch` checkpoint instead.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", WAL_FILE_LIMIT)?;
    // A deleted or edited text is zeroed in the pages, not just unlinked.
    conn.pragma_update(None, "secure_delete", "ON")?;
    upgrade_search_index(conn)?;
    conn.execute_batch(SCHEMA)?;
    // Stores written before retention went by id kept an index on `ts`: one more page
    // in every commit, read only by retention. Dropped once.
    conn.execute_batch("DROP INDEX IF EXISTS messages_ts")?;
    conn.execute_batch(super::blocks::SCHEMA)?;
    add_private_titles(conn)?;
    add_mentions(conn)?;
    add_replies(conn)?;
    // …and a deleted message's words leave the search index, not just its results.
    conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('secure-delete', 1)", [])?;
    Ok(())
}

/// Data dirs written before edits and deletions have a `contentless_delete` index,
/// whose deletes leave the words in place (tombstones): rebuild it as a contentless
/// index whose `delete` command, with `secure-delete`, takes them out. Once.
fn upgrade_search_index(conn: &Connection) -> rusqlite::Result<()> {
    let old: Option<String> =
        conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'messages_fts'", [], |r| r.get(0)).optional()?;
    if !old.is_some_and(|sql| sql.contains("contentless_delete")) {
        return Ok(());
    }
    log::info!("store: rebuilding the search index (once, for edits and deletions)");
    conn.execute_batch(
        "BEGIN;
         DROP TRIGGER IF EXISTS messages_fts_delete;
         DROP TABLE messages_fts;",
    )?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(
        "INSERT INTO messages_fts (rowid, text)
             SELECT id, json_extract(CAST(json AS TEXT), '$.text') FROM messages
             WHERE json_extract(CAST(json AS TEXT), '$.type') = 'msg'
               AND json_extract(CAST(json AS TEXT), '$.text') IS NOT NULL;
         COMMIT;",
    )
}

/// The unread mentions: a row per stored message and user it mentions (not its
/// author) until that user's read marker passes it (`reads::write` takes it out), so
/// the table holds what `joined` counts and nothing that was read. A message that
/// leaves the store (retention, erasure) takes its rows along.
const MENTIONS: &str = "
CREATE TABLE IF NOT EXISTS mentions (
    room INTEGER NOT NULL,
    user TEXT NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (room, user, seq)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS mentions_gone AFTER DELETE ON messages BEGIN
    DELETE FROM mentions WHERE room = old.room AND seq = old.seq;
END;
";

/// Creates the mentions table; data dirs written before it get the unread mentions of
/// their stored messages once (those above each user's marker).
fn add_mentions(conn: &Connection) -> rusqlite::Result<()> {
    add_table(
        conn,
        "mentions",
        MENTIONS,
        "INSERT OR IGNORE INTO mentions (room, user, seq)
         SELECT m.room, j.value, m.seq
         FROM messages m JOIN rooms r ON r.id = m.room,
              json_each(json_extract(CAST(m.json AS TEXT), '$.mentions')) j
         WHERE json_extract(CAST(m.json AS TEXT), '$.type') = 'msg'
           AND json_extract(CAST(m.json AS TEXT), '$.mentions') IS NOT NULL
           AND json_extract(CAST(m.json AS TEXT), '$.deleted') IS NULL
           AND j.value != json_extract(CAST(m.json AS TEXT), '$.uid')
           AND m.seq > coalesce((SELECT seq FROM reads WHERE user = j.value AND room = r.name), 0)",
    )
}

/// Which stored replies quote which message (room id, the original's seq, the reply's
/// seq), so a deletion rewrites their quotes in its transaction without reading the
/// room. An original that leaves the store takes its rows along.
const REPLIES: &str = "
CREATE TABLE IF NOT EXISTS replies (
    room INTEGER NOT NULL,
    of   INTEGER NOT NULL,
    seq  INTEGER NOT NULL,
    PRIMARY KEY (room, of, seq)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS replies_gone AFTER DELETE ON messages BEGIN
    DELETE FROM replies WHERE room = old.room AND of = old.seq;
END;
";

/// Creates the replies table; data dirs written before it get the rows of the replies
/// they hold once.
fn add_replies(conn: &Connection) -> rusqlite::Result<()> {
    add_table(
        conn,
        "replies",
        REPLIES,
        "INSERT OR IGNORE INTO replies (room, of, seq)
         SELECT room, json_extract(CAST(json AS TEXT), '$.reply.seq'), seq FROM messages
         WHERE json_extract(CAST(json AS TEXT), '$.type') = 'msg'
           AND json_extract(CAST(json AS TEXT), '$.reply.seq') IS NOT NULL",
    )
}

/// Creates table `name` with `ddl`; when it did not exist yet, fills it from the
/// stored messages with `backfill` (once per data dir).
fn add_table(conn: &Connection, name: &str, ddl: &str, backfill: &str) -> rusqlite::Result<()> {
    let has: bool = conn.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE name = ?1", [name], |r| r.get(0))?;
    conn.execute_batch(ddl)?;
    if has {
        return Ok(());
    }
    conn.execute_batch(backfill)
}

/// Data dirs written before private rooms had titles: the column is added (old rooms
/// keep their names and have no title). Once.
fn add_private_titles(conn: &Connection) -> rusqlite::Result<()> {
    let has: bool =
        conn.query_row("SELECT count(*) > 0 FROM pragma_table_info('private_rooms') WHERE name = 'title'", [], |r| {
            r.get(0)
        })?;
    if !has {
        conn.execute_batch("ALTER TABLE private_rooms ADD COLUMN title TEXT")?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_contentless_delete_index_is_rebuilt_and_still_finds_every_message() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, room INTEGER, seq INTEGER, ts INTEGER, json BLOB);
             CREATE VIRTUAL TABLE messages_fts USING fts5 (text, content = '', contentless_delete = 1);
             INSERT INTO messages VALUES (1, 1, 1, 1, CAST('{\"type\":\"msg\",\"text\":\"old words\"}' AS BLOB));
             INSERT INTO messages_fts (rowid, text) VALUES (1, 'old words');",
        )
        .expect("an old store");
        prepare_writer(&conn, FsyncPolicy::Never).expect("upgrade");
        let sql: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'messages_fts'", [], |r| r.get(0)).unwrap();
        assert!(!sql.contains("contentless_delete"), "{sql}");
        let hit: i64 = conn
            .query_row("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'words'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(hit, 1);
        conn.execute("DELETE FROM messages WHERE id = 1", []).unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'words'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "the delete trigger takes the words out");
    }

    /// Search never ranks, so the index keeps no document sizes: one page less in
    /// every commit. Stores made before keep theirs (and keep working).
    #[test]
    fn a_new_search_index_keeps_no_document_sizes_and_still_forgets_deleted_words() {
        let conn = Connection::open_in_memory().expect("open");
        prepare_writer(&conn, FsyncPolicy::Never).expect("prepare");
        let sizes: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'messages_fts_docsize'", [], |r| r.get(0))
            .expect("schema");
        assert_eq!(sizes, 0);
        conn.execute_batch(
            "INSERT INTO messages VALUES (1, 1, 1, 1, CAST('{\"type\":\"msg\",\"text\":\"gone words\"}' AS BLOB));
             INSERT INTO messages_fts (rowid, text) VALUES (1, 'gone words');
             DELETE FROM messages WHERE id = 1;",
        )
        .expect("insert, delete");
        let left: i64 = conn
            .query_row("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'words'", [], |r| r.get(0))
            .expect("search");
        assert_eq!(left, 0);
    }

    #[test]
    fn a_data_dir_from_before_mentions_and_replies_gets_them_once() {
        let conn = Connection::open_in_memory().expect("open");
        prepare_writer(&conn, FsyncPolicy::Never).expect("prepare");
        // As written before the two tables: messages that mention and reply, a read marker.
        conn.execute_batch(
            r#"DROP TABLE mentions; DROP TABLE replies;
             INSERT INTO rooms VALUES (1, 'r', 'e', 3);
             INSERT INTO messages VALUES (1, 1, 1, 1, CAST('{"type":"msg","uid":"u-a","mentions":["u-b","u-c"],"text":"hi"}' AS BLOB));
             INSERT INTO messages VALUES (2, 1, 2, 2, CAST('{"type":"msg","uid":"u-a","mentions":["u-b","u-a"],"reply":{"seq":1},"text":"again"}' AS BLOB));
             INSERT INTO messages VALUES (3, 1, 3, 3, CAST('{"type":"msg","uid":"u-c","mentions":["u-b"],"deleted":true}' AS BLOB));
             INSERT INTO reads VALUES ('u-c', 'r', 1);"#,
        )
        .expect("old data");
        prepare_writer(&conn, FsyncPolicy::Never).expect("upgrade");
        let rows = |sql: &str| -> Vec<(String, i64)> {
            let mut q = conn.prepare(sql).expect("query");
            q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("rows").map(|r| r.expect("row")).collect()
        };
        // u-b both, u-c's is read, u-a's own and the deleted one never count.
        let unread = "SELECT user, seq FROM mentions ORDER BY user, seq";
        assert_eq!(rows(unread), [("u-b".to_owned(), 1), ("u-b".to_owned(), 2)]);
        assert_eq!(rows("SELECT CAST(of AS TEXT), seq FROM replies"), [("1".to_owned(), 2)]);
        // Once: a marker that moves is not undone by the next start.
        conn.execute_batch("DELETE FROM mentions WHERE seq = 1").expect("read");
        prepare_writer(&conn, FsyncPolicy::Never).expect("again");
        assert_eq!(rows(unread), [("u-b".to_owned(), 2)]);
    }

    #[test]
    fn an_old_ts_index_is_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join(DB_FILE);
        {
            let conn = Connection::open(&path).expect("open");
            prepare_writer(&conn, FsyncPolicy::Never).expect("prepare");
            conn.execute_batch("CREATE INDEX messages_ts ON messages (ts)").expect("the old index");
        }
        let mut store = super::super::SqliteStore::open(dir.path(), FsyncPolicy::Never).expect("reopen");
        let left: i64 = store
            .conn()
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = 'messages_ts'", [], |r| r.get(0))
            .expect("schema");
        assert_eq!(left, 0, "every commit would still write its pages");
    }

    #[test]
    fn old_private_rooms_keep_their_names_and_get_a_title_column() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE private_rooms (room TEXT PRIMARY KEY, owner TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO private_rooms VALUES ('club', 'u-ann');",
        )
        .expect("an old store");
        prepare_writer(&conn, FsyncPolicy::Never).expect("upgrade");
        prepare_writer(&conn, FsyncPolicy::Never).expect("upgraded once, then left alone");
        let loaded = super::super::access::load(&conn).expect("load");
        let private: Vec<_> =
            loaded.changes.iter().filter(|c| matches!(c, crate::store::AccessChange::Private { .. })).collect();
        assert_eq!(
            format!("{private:?}"),
            r#"[Private { room: "club", owner: "u-ann", title: None }]"#,
            "the old room, under its old name"
        );
    }
}
