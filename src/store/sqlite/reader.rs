//! History readers: threads with read-only connections that answer scroll-back,
//! resume and search queries from WAL snapshots, so no read ever holds up the
//! dispatcher's commits or its fan-out.
//!
//! The dispatcher asks with a tag of its own choosing and gets the tag back with the
//! answer through the callback it gave at start (a `Command` on its channel). Every
//! query binds its parameters; a client's search words are turned into quoted FTS5
//! prefix terms here, so no client text is ever read as query syntax, and a failure is
//! logged here and answered with a message that carries no SQL text.

use std::path::Path;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::{params, Connection, OpenFlags};

use super::{sql_err, StoreError, StoredMsg};

/// Queries waiting for a reader before new ones are refused.
const QUEUE: usize = 1024;
/// Most words of a search that are used.
const MAX_TERMS: usize = 16;

/// What a reader is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// The newest `limit` messages with `since < seq <= upto`, oldest first;
    /// complete when none in that range is missing.
    After { room: String, since: u64, upto: u64, limit: usize },
    /// The newest `limit` messages with `seq < before`, oldest first; complete when
    /// nothing older is stored.
    Before { room: String, before: u64, limit: usize },
    /// Messages whose text has every word of `q` (as a word prefix), `seq < before`,
    /// newest first; complete when no older match exists.
    Search { room: String, q: String, before: u64, limit: usize },
}

/// A reader's answer to one query.
#[derive(Debug)]
pub struct Page {
    pub messages: Vec<StoredMsg>,
    pub complete: bool,
}

/// An answer with the tag the dispatcher asked with. The error text is for the client:
/// it never carries SQL.
#[derive(Debug)]
pub struct Answer<T> {
    pub tag: T,
    pub result: Result<Page, &'static str>,
}

/// The readers' queue.
pub struct Readers<T> {
    tx: Sender<(T, Query)>,
}

impl<T: Send + 'static> Readers<T> {
    /// Starts `threads` readers on the database at `db` (which must exist).
    pub fn start(
        db: &Path,
        threads: usize,
        deliver: impl Fn(Answer<T>) + Send + Clone + 'static,
    ) -> Result<Readers<T>, StoreError> {
        let (tx, rx) = crossbeam_channel::bounded::<(T, Query)>(QUEUE);
        for i in 0..threads.max(1) {
            let conn = open_read_only(db)?;
            let (rx, deliver) = (rx.clone(), deliver.clone());
            // A dead reader would leave joins waiting for ever: exit instead.
            crate::shutdown::spawn_vital(&format!("store-reader-{i}"), move || serve(&conn, &rx, &deliver))
                .map_err(|source| StoreError::Io { path: db.to_owned(), source })?;
        }
        Ok(Readers { tx })
    }

    /// Queues a query; gives the tag back when the readers are too far behind.
    pub fn ask(&self, tag: T, query: Query) -> Result<(), T> {
        self.tx.try_send((tag, query)).map_err(|e| match e {
            TrySendError::Full((t, _)) | TrySendError::Disconnected((t, _)) => t,
        })
    }
}

fn open_read_only(db: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(sql_err(db))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err(db))?;
    Ok(conn)
}

fn serve<T>(conn: &Connection, rx: &Receiver<(T, Query)>, deliver: &impl Fn(Answer<T>)) {
    for (tag, query) in rx.iter() {
        let result = run(conn, &query).map_err(|e| {
            log::error!("store reader: {query:?}: {e}");
            "the message store could not be read"
        });
        deliver(Answer { tag, result });
    }
}

/// Runs one query on `conn` (also used by tests and benches directly).
pub fn run(conn: &Connection, query: &Query) -> rusqlite::Result<Page> {
    match query {
        Query::After { room, since, upto, limit } => {
            let mut messages = rows(
                conn,
                "SELECT seq, json FROM messages WHERE room = (SELECT id FROM rooms WHERE name = ?1)
                 AND seq > ?2 AND seq <= ?3 ORDER BY seq DESC LIMIT ?4",
                params![room, *since as i64, *upto as i64, *limit as i64],
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
                params![room, *before as i64, *limit as i64 + 1],
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
                params![matcher, room, *before as i64, *limit as i64 + 1],
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
    let terms: Vec<String> = q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(MAX_TERMS)
        .map(|w| format!("\"{w}\"*"))
        .collect();
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
