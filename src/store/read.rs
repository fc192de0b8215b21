//! History reads, whichever store answers them: what the dispatcher asks ([`Query`]),
//! what comes back ([`Page`], [`Answer`]), and the pool of reader threads
//! ([`Readers`]) that answers off the dispatcher's thread, so no read ever holds up
//! its commits or its fan-out.
//!
//! Each store brings its own connections and says how one query runs on one of them
//! (`sqlite::reader`, `redis::query`); this module never touches a database itself.
//! The dispatcher asks with a tag of its own choosing and gets the tag back with the
//! answer through the callback it gave at start (a `Command` on its channel).

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

use crate::protocol::RoomName;

/// Queries waiting for a reader before new ones are refused.
const QUEUE: usize = 1024;
/// Most words of a search that are used.
const MAX_TERMS: usize = 16;

/// A stored message: its seq and its `msg` JSON, exactly as sent live.
#[derive(Debug, Clone)]
pub struct StoredMsg {
    pub seq: u64,
    pub json: Bytes,
}

/// What a reader is asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// The newest `limit` messages with `since < seq <= upto`, oldest first;
    /// complete when none in that range is missing.
    After { room: RoomName, since: u64, upto: u64, limit: usize },
    /// The newest `limit` messages with `seq < before`, oldest first; complete when
    /// nothing older is stored.
    Before { room: RoomName, before: u64, limit: usize },
    /// Messages whose text has every word of `q` (as a word prefix), `seq < before`,
    /// newest first; complete when no older match exists.
    Search { room: RoomName, q: String, before: u64, limit: usize },
}

/// A reader's answer to one query.
#[derive(Debug)]
pub struct Page {
    pub messages: Vec<StoredMsg>,
    pub complete: bool,
}

/// An answer with the tag the dispatcher asked with. The error text is for the client:
/// it never carries SQL or Redis text.
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
    /// Starts one thread per connection in `conns`, named `{name}-{i}`, each running
    /// `run` on its own connection for the queries it takes from the shared queue.
    pub fn start<C: Send + 'static>(
        name: &str,
        conns: Vec<C>,
        run: impl Fn(&mut C, &Query) -> Result<Page, &'static str> + Send + Clone + 'static,
        deliver: impl Fn(Answer<T>) + Send + Clone + 'static,
    ) -> std::io::Result<Readers<T>> {
        let (tx, rx) = crossbeam_channel::bounded::<(T, Query)>(QUEUE);
        for (i, mut conn) in conns.into_iter().enumerate() {
            let (rx, run, deliver) = (rx.clone(), run.clone(), deliver.clone());
            // A dead reader would leave joins and scroll-back waiting for ever: exit instead.
            crate::shutdown::spawn_vital(&format!("{name}-{i}"), move || {
                for (tag, query) in rx.iter() {
                    let result = run(&mut conn, &query);
                    deliver(Answer { tag, result });
                }
            })?;
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

/// The words of a search, as both stores take them: the runs of letters and digits
/// (any script), at most 16. Everything else — spaces, punctuation, quotes, `*`, `-`,
/// CJK punctuation — only separates words.
pub fn search_words(q: &str) -> impl Iterator<Item = &str> {
    q.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).take(MAX_TERMS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_are_runs_of_letters_and_digits() {
        let words: Vec<&str> = search_words("\"a\" * NEAR(b c) -d 你好，世界").collect();
        assert_eq!(words, ["a", "NEAR", "b", "c", "d", "你好", "世界"]);
        assert_eq!(search_words(&"w ".repeat(40)).count(), MAX_TERMS);
        assert_eq!(search_words("\"*-( )").count(), 0);
    }
}
