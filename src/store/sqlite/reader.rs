//! Single-instance mode's history readers: read-only connections that answer
//! scroll-back, resume and search queries ([`crate::store::read`]) from WAL snapshots,
//! so no read ever holds up the dispatcher's commits or its fan-out.
//!
//! Every query binds its parameters; a client's search words are turned into quoted
//! FTS5 prefix terms here, so no client text is ever read as query syntax, and a failure
//! is logged here and answered with a message that carries no SQL text.

use std::path::Path;

use bytes::Bytes;
use rusqlite::{params, Connection, OpenFlags};

use super::{sql_err, SqliteStoreError};
use crate::store::read::{search_words, Answer, Page, Query, Readers, StoredMsg};

/// Starts `threads` readers on the database at `db` (which must exist).
pub fn start<T: Send + 'static>(
    db: &Path,
    threads: usize,
    deliver: impl Fn(Answer<T>) + Send + Clone + 'static,
) -> Result<Readers<T>, SqliteStoreError> {
    let conns = (0..threads.max(1)).map(|_| open_read_only(db)).collect::<Result<Vec<_>, _>>()?;
    let logged = |conn: &mut Connection, query: &Query| {
        run(conn, query).map_err(|e| {
            log::error!("store reader: {query:?}: {e}");
            "the message store could not be read"
        })
    };
    Readers::start("store-reader", conns, logged, deliver)
        .map_err(|source| SqliteStoreError::Io { path: db.to_owned(), source })
}

fn open_read_only(db: &Path) -> Result<Connection, SqliteStoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(sql_err(db))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err(db))?;
    Ok(conn)
}

/// Runs one query on `conn` (also used by tests and benches directly).
pub fn run(conn: &Connection, query: &Query) -> rusqlite::Result<Page> {
    match query {
        Query::After { room, since, upto, limit } => {
            let mut messages = rows(
                conn,
                "SELECT seq, json FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?1)
                 AND seq > ?2 AND seq <= ?3 ORDER BY seq DESC LIMIT ?4",
                params![room.as_str(), *since as i64, *upto as i64, *limit as i64],
            )?;
            messages.reverse();
            let complete = messages.len() as u64 == upto.saturating_sub(*since);
            Ok(Page { messages, complete })
        }
        Query::Before { room, before, limit } => {
            let mut messages = rows(
                conn,
                "SELECT seq, json FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?1)
                 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                params![room.as_str(), *before as i64, *limit as i64 + 1],
            )?;
            let complete = messages.len() <= *limit;
            messages.truncate(*limit);
            messages.reverse();
            Ok(Page { messages, complete })
        }
        Query::Search { room, q, before, limit } => {
            let Some(matcher) = fts_query(q) else {
                return Ok(Page { messages: Vec::new(), complete: true });
            };
            let mut messages = rows(
                conn,
                "SELECT m.seq, m.json FROM messages_fts f JOIN messages m ON m.id = f.rowid
                 WHERE messages_fts MATCH ?1 AND m.room = (SELECT id FROM rooms WHERE name = ?2) AND m.seq < ?3
                 ORDER BY m.seq DESC LIMIT ?4",
                params![matcher, room.as_str(), *before as i64, *limit as i64 + 1],
            )?;
            let complete = messages.len() <= *limit;
            messages.truncate(*limit);
            Ok(Page { messages, complete })
        }
    }
}

fn rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<StoredMsg>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let found = stmt.query_map(params, |r| {
        Ok(StoredMsg { seq: r.get::<_, i64>(0)? as u64, json: Bytes::from(r.get::<_, Vec<u8>>(1)?) })
    })?;
    found.collect()
}

/// A client's search text as an FTS5 query: each run of letters and digits becomes a
/// quoted prefix term (`"word"*`), every term required. Quotes, `*`, `-`, `NEAR(`,
/// column filters and the like are separators here, never syntax. `None` when no
/// word is left.
pub fn fts_query(q: &str) -> Option<String> {
    let terms: Vec<String> = search_words(q).map(|w| format!("\"{w}\"*")).collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_never_become_syntax() {
        assert_eq!(fts_query("hello world").as_deref(), Some("\"hello\"* \"world\"*"));
        assert_eq!(fts_query("\"a\" * NEAR(b c) -d").as_deref(), Some("\"a\"* \"NEAR\"* \"b\"* \"c\"* \"d\"*"));
        assert_eq!(fts_query("你好，世界").as_deref(), Some("\"你好\"* \"世界\"*"));
        assert_eq!(fts_query("\"*-( )"), None);
    }
}
