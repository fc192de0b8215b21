//! Writer shards: threads that put committed batches on the wire, so that writing to
//! thousands of sockets runs beside the dispatcher and across cores.
//!
//! Every shard receives every batch (shared by `Arc`) and writes only to the
//! connections it owns ([`Shard::owns`]); a connection's frames therefore always
//! leave from one shard, in batch order. Shards report slow and blocked connections
//! back to the dispatcher on their own unbounded channel (a bounded one could deadlock:
//! the dispatcher may be waiting for a shard's queue while the shard waits to report).
//! They never touch chat state.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::delivery::fanout::{self, Out, Shard};
use crate::delivery::outbox::Conn;
use crate::metrics::Metrics;

/// Batches waiting per shard before the dispatcher waits for the writers: when they
/// fall behind, back-pressure reaches the clients instead of memory growing.
const QUEUE: usize = 64;
/// Most batches a shard writes in one pass.
const COALESCE: usize = 64;

/// A committed batch: the frames and how many chat messages they carry.
#[derive(Debug)]
pub struct Batch {
    pub items: Vec<Out>,
    pub messages: u64,
}

/// What a shard tells the dispatcher about a connection.
#[derive(Debug)]
pub enum ShardEvent {
    /// The socket could not take everything; retry when it is writable.
    Blocked(Arc<Conn>),
    /// The backlog passed the limit; close it as a slow consumer.
    Slow(Arc<Conn>),
}

/// The running shards.
#[derive(Debug)]
pub struct Writers {
    senders: Vec<Sender<Arc<Batch>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Writers {
    /// Starts `count` shards. Slow and blocked connections are reported on `events`.
    pub fn start(
        count: usize,
        max_backlog: usize,
        metrics: Arc<Metrics>,
        events: Sender<ShardEvent>,
    ) -> std::io::Result<Writers> {
        let count = count.max(1);
        let mut senders = Vec::with_capacity(count);
        let mut handles = Vec::with_capacity(count);
        for index in 0..count {
            let (tx, rx) = crossbeam_channel::bounded(QUEUE);
            let shard = Shard { index, count };
            let (metrics, events) = (metrics.clone(), events.clone());
            // A dead shard would leave its slice of the sockets silent for good: exit instead.
            let handle = crate::shutdown::spawn_vital(&format!("writer-{index}"), move || {
                run(shard, rx, max_backlog, &metrics, &events)
            })?;
            senders.push(tx);
            handles.push(handle);
        }
        Ok(Writers { senders, handles })
    }

    /// Hands a committed batch to every shard (waits when they are all behind).
    pub fn submit(&self, batch: Batch) {
        let batch = Arc::new(batch);
        for tx in &self.senders {
            // A shard only stops at `finish`, so a send cannot fail before then.
            let _ = tx.send(batch.clone());
        }
    }

    /// Lets the shards write everything queued, then stops them.
    pub fn finish(self) {
        drop(self.senders);
        for h in self.handles {
            let _ = h.join();
        }
    }
}

fn run(
    shard: Shard,
    batches: Receiver<Arc<Batch>>,
    max_backlog: usize,
    metrics: &Metrics,
    events: &Sender<ShardEvent>,
) {
    let mut pending: Vec<Arc<Batch>> = Vec::new();
    for first in &batches {
        // Take every batch already waiting and write them in one pass: under load each
        // socket then gets all its pending frames in one sendmsg instead of one per
        // batch (one per message when the dispatcher keeps up).
        pending.push(first);
        pending.extend(batches.try_iter().take(COALESCE - 1));
        let started = Instant::now();
        let done = fanout::deliver(pending.iter().flat_map(|b| b.items.iter()), shard, max_backlog);
        metrics.deliveries.fetch_add(done.frames, Relaxed);
        let messages: u64 = pending.iter().map(|b| b.messages).sum();
        // Shard 0 speaks for the fan-out time (shards run side by side).
        if shard.index == 0 && messages > 0 {
            metrics.observe_fanout(started.elapsed().as_secs_f64() / messages as f64, messages);
        }
        pending.clear();
        for conn in done.blocked {
            let _ = events.send(ShardEvent::Blocked(conn));
        }
        for conn in done.slow {
            let _ = events.send(ShardEvent::Slow(conn));
        }
    }
}
