//! Ack only after the store committed, and what happens when it cannot: the batch's
//! messages are taken back (rings, dedup ids, staged acks and live frames) and their
//! senders told `unavailable`; posts are refused while the store is failing; a probe
//! write with backoff finds out when the disk takes writes again. Also the small
//! retention steps run between batches.
//!
//! Reading, presence and typing never depend on the store being writable.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::state::now_ms;
use super::Dispatcher;
use crate::delivery::fanout::Out;
use crate::delivery::outbox::Conn;
use crate::delivery::writer::Batch;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, UserId};
use crate::store::sqlite::retention::Policy;
use crate::store::sqlite::SqliteStoreError;

/// First pause before the store is probed again after a failure; doubles to the max.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often a retention step runs.
const RETENTION_EVERY: Duration = Duration::from_millis(500);

/// A message of the current batch, with where its frames sit in `staged`.
pub(super) struct BatchPost {
    pub room: RoomName,
    pub seq: u64,
    pub uid: UserId,
    pub id: Option<String>,
    /// The sender's connection; `None` for a server API post (answered through its
    /// own reply, see `api_replies`).
    pub conn: Option<Arc<Conn>>,
    /// Index of the sender's ack in `staged`, when it asked for one.
    pub ack: Option<usize>,
    /// Index of the room's live frame in `staged`.
    pub frame: usize,
}

/// Whether the store takes writes, and when to try again if not.
#[derive(Debug)]
pub(super) struct StoreHealth {
    failing: bool,
    retry_at: Instant,
    backoff: Duration,
    next_retention: Instant,
}

impl StoreHealth {
    /// Whether the last commit failed (and writes may still be buffered).
    pub fn failing(&self) -> bool {
        self.failing
    }
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth { failing: false, retry_at: Instant::now(), backoff: RETRY_FIRST, next_retention: Instant::now() }
    }
}

impl Dispatcher {
    /// Commits the store, then hands the batch to the writer shards, which write each
    /// touched socket once (coalescing everything staged for it).
    pub(super) fn commit_and_deliver(&mut self) {
        let audit = std::mem::take(&mut self.audit_pending);
        if self.staged.is_empty() && self.api_replies.is_empty() && !audit {
            // Nothing appended locally (Redis mode acks without frames to stage).
            self.webhooks.release();
            return;
        }
        match self.backend.commit() {
            Ok(()) => {
                let waited = self.batch_started.elapsed().as_secs_f64();
                self.metrics.observe_acks(waited, std::mem::take(&mut self.staged_acks));
                self.apply_ring_rewrites();
                self.webhooks.release();
                for (reply, answer) in self.api_replies.drain(..) {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                self.ring_rewrites.clear();
                self.refuse_batch(&e);
                self.webhooks.discard();
                for (reply, _) in self.api_replies.drain(..) {
                    let e = ProtocolError::new(ErrorCode::Unavailable, "the message store could not write it; retry");
                    let _ = reply.send(Err(e));
                }
            }
        }
        self.staged_acks = 0;
        self.batch_posts.clear();
        self.dirty_rooms.clear();
        let batch = Batch { items: std::mem::take(&mut self.staged), messages: std::mem::take(&mut self.staged_msgs) };
        match &self.writers {
            Some(w) => w.submit(batch),
            #[cfg(test)]
            None => self.delivered.extend(batch.items),
            #[cfg(not(test))]
            None => {}
        }
        self.backend.after_batch();
    }

    /// Commits first when `room` has messages not yet committed, so that what a read
    /// returns (ring or store) never holds a message that could still be refused.
    pub(super) fn settle(&mut self, room: &RoomName) {
        if self.dirty_rooms.contains(room) {
            self.commit_and_deliver();
        }
    }

    /// Whether posts may be accepted now.
    pub(super) fn check_writable(&self, reference: Option<String>) -> Result<(), ProtocolError> {
        if !self.store_health.failing {
            return Ok(());
        }
        Err(ProtocolError::new(ErrorCode::Unavailable, "the message store cannot write; nothing was stored, retry")
            .with_ref(reference))
    }

    /// The commit failed: nothing of the batch's messages may reach anyone.
    fn refuse_batch(&mut self, e: &SqliteStoreError) {
        let posts = std::mem::take(&mut self.batch_posts);
        log::error!("store commit failed, {} message(s) refused and not acked: {e}", posts.len());
        self.metrics.store_failures.fetch_add(1, Relaxed);
        self.metrics.store_failing.store(true, Relaxed);
        let now = Instant::now();
        let h = &mut self.store_health;
        if !h.failing {
            h.backoff = RETRY_FIRST;
        }
        h.failing = true;
        h.retry_at = now + h.backoff;
        let mut replace: HashMap<usize, Option<Out>> = HashMap::new();
        for p in posts.iter().rev() {
            if let Some(r) = self.rooms.get_mut(&p.room) {
                r.history.rollback(p.seq, &p.uid, p.id.as_deref());
            }
            self.reads.unmention(&p.room, p.seq);
            let e = ProtocolError::new(ErrorCode::Unavailable, "the message store could not write it; retry")
                .with_ref(p.id.clone().or(Some("msg".into())));
            self.metrics.error(ErrorCode::Unavailable);
            let error = p.conn.as_ref().map(|conn| Out::One(conn.clone(), wire::encode(&e.to_server_msg())));
            match p.ack {
                Some(ack) => {
                    replace.insert(ack, error);
                    replace.insert(p.frame, None);
                }
                None => {
                    replace.insert(p.frame, error);
                }
            }
        }
        self.metrics.messages_accepted.fetch_sub(posts.len() as u64, Relaxed);
        self.staged_msgs = self.staged_msgs.saturating_sub(posts.len() as u64);
        let staged = std::mem::take(&mut self.staged);
        self.staged = staged
            .into_iter()
            .enumerate()
            .filter_map(|(i, out)| match replace.remove(&i) {
                Some(instead) => instead,
                None => Some(out),
            })
            .collect();
    }

    /// Every tick: probe a failing store when due; otherwise a retention step when due.
    pub(super) fn store_tick(&mut self, now: Instant) {
        let Backend::Local(local) = &mut self.backend else { return };
        let h = &mut self.store_health;
        if h.failing {
            if now < h.retry_at {
                return;
            }
            match local.store.probe() {
                Ok(()) => {
                    log::info!("store takes writes again");
                    h.failing = false;
                    self.metrics.store_failing.store(false, Relaxed);
                }
                Err(e) => {
                    h.backoff = (h.backoff * 2).min(RETRY_MAX);
                    h.retry_at = now + h.backoff;
                    log::warn!("store still failing (next try in {:?}): {e}", h.backoff);
                }
            }
            return;
        }
        if let Err(e) = local.store.scrub_wal() {
            log::warn!("truncating the WAL after a deletion failed: {e}");
        }
        if now < h.next_retention {
            return;
        }
        h.next_retention = now + RETENTION_EVERY;
        // Files count toward the cap: those stored messages name (uploads never posted
        // are bounded apart, so they never push messages out).
        let (file_bytes, top_room) = self.files.as_ref().map_or((0, None), |f| (f.posted_bytes(), f.top_room()));
        // The files of the last step's messages still count until they are removed:
        // no size check before, or it would take more messages than it must.
        let size_known = self.files.as_ref().is_none_or(|f| !f.removing());
        let db_bytes = local.store.used_bytes().unwrap_or(0);
        let policy = Policy {
            messages_per_room: self.cfg.retention_messages,
            max_age_ms: self.cfg.retention_days.map(|d| d * 86_400_000),
            max_bytes: if size_known { self.cfg.max_store_bytes } else { u64::MAX },
            file_bytes,
            prefer_room: top_room.filter(|_| file_bytes > db_bytes),
        };
        match local.store.retention_step(&policy, now_ms()) {
            Ok(mut d) => {
                if let Some(files) = &self.files {
                    files.tell_gone(std::mem::take(&mut d.with_files), "retention's");
                }
                self.metrics.store_deleted.fetch_add(d.by_count + d.by_age, Relaxed);
                if let Some(room) = d.size_room.filter(|_| d.by_size > 0) {
                    self.metrics.store_evicted.fetch_add(d.by_size, Relaxed);
                    log::warn!("store over --max-store-bytes: deleted the {} oldest messages of {room}", d.by_size);
                }
            }
            Err(e) => log::warn!("retention step failed: {e}"),
        }
        if let Some(days) = self.cfg.audit_retention_days {
            if let Err(e) = local.store.audit_retention_step(now_ms().saturating_sub(days * 86_400_000)) {
                log::warn!("audit retention step failed: {e}");
            }
        }
    }
}
