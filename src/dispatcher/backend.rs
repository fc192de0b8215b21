//! Where accepted messages are stored and ordered: the one value that says which mode
//! natter runs in. Every difference between the modes is a `match` on it.

use super::tags::{AckTo, ReadFor, Request};
use crate::delivery::outbox::ConnId;
use crate::protocol::wire::Frame;
use crate::protocol::{wire, RoomName};
use crate::store::read::{Query, Readers};
use crate::store::redis::io::RedisIo;
use crate::store::sqlite::{SqliteStore, SqliteStoreError};

pub enum Backend {
    /// One instance: the dispatcher assigns `seq` and commits to the local SQLite
    /// store; reader threads answer history reads. Boxed: the store's buffers make it
    /// far larger than the Redis handle, and the value lives once, in the dispatcher.
    Local(Box<Local>),
    /// Several instances (`--redis`): Redis assigns `seq` and stores, through the
    /// `redis-io` thread; Redis's own reader threads answer history reads.
    Redis(Cluster),
}

/// Single-instance mode's store: the writer (the dispatcher's alone) and the readers.
pub struct Local {
    pub store: SqliteStore,
    pub readers: Readers<ReadFor>,
}

/// Redis mode's threads, as the dispatcher holds them: `redis-io`, which performs its
/// requests in order, and the readers.
pub struct Cluster {
    pub io: RedisIo<ConnId, AckTo>,
    pub readers: Readers<ReadFor>,
}

impl Backend {
    /// Redis mode: hands a request to the cluster threads; nothing to do locally.
    pub fn tell_cluster(&self, request: impl FnOnce() -> Request) {
        if let Backend::Redis(c) = self {
            c.io.send(request());
        }
    }

    /// Redis mode: passes a system or typing frame to the other instances.
    pub fn publish(&self, room: &RoomName, frame: &Frame) {
        self.tell_cluster(|| Request::Publish { room: room.clone(), json: wire::payload(frame).to_vec() });
    }

    /// Makes everything appended in this batch durable as the fsync policy promises;
    /// called before any of the batch's frames are handed to the writers.
    pub fn commit(&mut self) -> Result<(), SqliteStoreError> {
        match self {
            Backend::Local(local) => local.store.commit(),
            Backend::Redis(_) => Ok(()), // every append was acked by Redis already
        }
    }

    /// After a batch was handed to the writers: the local store's WAL upkeep, which
    /// must never sit inside a commit an ack waits for.
    pub fn after_batch(&mut self) {
        if let Backend::Local(local) = self {
            if let Err(e) = local.store.after_batch() {
                log::warn!("store: copying the WAL between batches failed: {e}");
            }
        }
    }

    /// Asks the store's reader threads (never the dispatcher's) for a history read; the
    /// answer comes back as a `Command::Store` with `tag`. Gives the tag back when the
    /// readers are too far behind.
    pub fn read(&self, tag: ReadFor, query: Query) -> Result<(), ReadFor> {
        match self {
            Backend::Local(local) => local.readers.ask(tag, query),
            Backend::Redis(cluster) => cluster.readers.ask(tag, query),
        }
    }

    /// Shutdown: commit and checkpoint what the store holds.
    pub fn close(&mut self) -> Result<(), SqliteStoreError> {
        match self {
            Backend::Local(local) => local.store.close(),
            Backend::Redis(_) => Ok(()),
        }
    }
}
