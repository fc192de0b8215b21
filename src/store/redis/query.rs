//! History reads in Redis mode ([`Query`]), answered from a room's stream: resume and
//! scroll-back pages with `XREVRANGE` by seq, and search by scanning the stream newest
//! first, [`SCAN_CHUNK`] entries per call, each text checked by the [`Matcher`].
//!
//! A search reads at most what Redis retains of the room (the stream is trimmed to
//! about `stream_cap` entries, and the scan stops at [`super::StoreOptions::most_held`]), so
//! its work is bounded; messages trimmed away are not found. Blocking, like every [`RedisStore`]
//! call: run only on a reader thread, never the dispatcher's — [`start_readers`] starts
//! those (`redis-history-N`), as `sqlite::reader::start` does in local mode.

use std::borrow::Cow;

use super::reply::Entry;
use super::search::Matcher;
use super::store::{Direction, Walk};
use super::{Master, RedisStore, RedisStoreError, StoreOptions};
use crate::protocol::RoomName;
use crate::store::read::{Answer, Page, Query, Readers, StoredMsg};

/// Entries a search reads per call: each `XREVRANGE` stays short for Redis, which
/// serves every instance's posts between them.
const SCAN_CHUNK: usize = 500;

/// Starts `threads` readers (`redis-history-N`), each on a connection of its own, so a
/// long scan never delays `redis-io`'s posts and joins; every answer goes to `deliver`.
pub fn start_readers<T: Send + 'static>(
    master: &Master,
    opts: &StoreOptions,
    threads: usize,
    deliver: impl Fn(Answer<T>) + Send + Clone + 'static,
) -> Result<Readers<T>, RedisStoreError> {
    let conns = (0..threads.max(1)).map(|_| RedisStore::on(master, opts.clone())).collect();
    let run = |store: &mut RedisStore, query: &Query| {
        store.query(query).map_err(|e| {
            if e.is_unavailable() {
                "the message store is unavailable; try again"
            } else {
                log::error!("redis history read: {query:?}: {e}");
                "the message store could not be read"
            }
        })
    };
    Ok(Readers::start("redis-history", conns, run, deliver)?)
}

impl RedisStore {
    /// Answers a history read as single-instance mode's readers do (the same [`Page`]
    /// for the same stored messages), from the room's stream.
    pub fn query(&mut self, query: &Query) -> Result<Page, RedisStoreError> {
        match query {
            Query::After { room, since, upto, limit } => {
                let mut messages = self.newest(room, *upto, since.saturating_add(1), *limit)?;
                messages.reverse();
                let complete = messages.len() as u64 == upto.saturating_sub(*since);
                Ok(page(messages, complete))
            }
            Query::Before { room, before, limit } => {
                let mut messages = self.newest(room, before.saturating_sub(1), 1, limit.saturating_add(1))?;
                let complete = messages.len() <= *limit;
                messages.truncate(*limit);
                messages.reverse();
                Ok(page(messages, complete))
            }
            Query::Search { room, q, before, limit } => self.search(room, q, *before, *limit),
        }
    }

    /// The matches of `q` with `seq < before`, newest first, at most `limit`; complete
    /// when the scan reached the oldest entry the stream holds.
    fn search(&mut self, room: &RoomName, q: &str, before: u64, limit: usize) -> Result<Page, RedisStoreError> {
        let Some(matcher) = Matcher::new(q) else { return Ok(page(Vec::new(), true)) };
        let mut budget = self.opts.most_held();
        let mut found = Vec::new();
        let mut below = before;
        while below > 1 {
            if budget == 0 {
                return Ok(page(found, false)); // the stream holds more than it should
            }
            let chunk = self.newest(room, below - 1, 1, SCAN_CHUNK.min(budget))?;
            let Some(oldest) = chunk.last().map(|e| e.seq) else { break };
            budget = budget.saturating_sub(chunk.len());
            below = oldest;
            for entry in chunk {
                if matcher.matches(&text_of(&entry.json)) {
                    found.push(entry);
                    if found.len() > limit {
                        found.truncate(limit);
                        return Ok(page(found, false));
                    }
                }
            }
        }
        Ok(page(found, true))
    }

    /// Up to `count` entries with `low <= seq <= high`, newest first.
    fn newest(&mut self, room: &RoomName, high: u64, low: u64, count: usize) -> Result<Vec<Entry>, RedisStoreError> {
        if high < low.max(1) || count == 0 {
            return Ok(Vec::new());
        }
        let (from, to) = (format!("{high}-0"), format!("{low}-0"));
        Ok(self.read(room, Walk { direction: Direction::Down, from: &from, to: &to, count }, None)?.messages)
    }
}

fn page(entries: Vec<Entry>, complete: bool) -> Page {
    Page { messages: entries.into_iter().map(|Entry { seq, json }| StoredMsg { seq, json }).collect(), complete }
}

/// The `text` of a stored `msg` JSON; empty for anything else (a deleted message, an
/// `edit` event: as in local mode, a search finds messages, never the events that
/// changed them).
fn text_of(json: &[u8]) -> Cow<'_, str> {
    #[derive(serde::Deserialize)]
    struct Text<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
        #[serde(borrow, default)]
        text: Cow<'a, str>,
    }
    match serde_json::from_slice::<Text>(json) {
        Ok(m) if m.kind == "msg" => m.text,
        _ => Cow::Borrowed(""),
    }
}
