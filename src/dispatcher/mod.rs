//! The dispatcher: the single owner of chat state — rooms, members, presence, per-room
//! `seq`, history rings, de-duplication ids and the store ([`Backend`]).
//!
//! Connection threads send it [`Command`]s over a crossbeam channel and never touch
//! its state. It works in batches: it takes every command waiting (up to a bound),
//! stages each outgoing frame (a room's frame once, with a snapshot of its members),
//! appends accepted messages to the store, commits the store once, and only then hands
//! the batch to the writer shards ([`crate::delivery::writer`]), which do the writing.
//! So no ack, live message or history reaches a client before the store holds it. It
//! must never wait on a client or on Redis.
//!
//! - `state`: clients, rooms and presence records;
//! - `commands`: join, leave, post, typing and nick;
//! - `presence`: members arriving and leaving, and their `system` events;
//! - `lifecycle`: registering, blocked sockets, heartbeats, closing;
//! - [`history`]: the per-room rings and de-duplication ids;
//! - [`heartbeat`]: which connections are due a ping;
//! - [`cluster`]: Redis mode (`--redis`): its threads and the dispatcher's side of it.

pub mod api;
mod backend;
pub mod cluster;
mod commands;
pub mod heartbeat;
pub mod history;
mod lifecycle;
mod presence;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use api::{ApiCall, ApiResult};
pub use backend::Backend;
use cluster::ClusterEvent;
use heartbeat::Heartbeat;
use history::Stored;
use state::{Client, Room};

use crate::api::webhooks::Webhooks;
use crate::auth::Identity;
use crate::config::Config;
use crate::delivery::fanout::Out;
use crate::delivery::outbox::{Conn, ConnId};
use crate::delivery::writer::{Batch, Writers};
use crate::metrics::Metrics;
use crate::protocol::wire::{self, Frame};
use crate::protocol::{ClientMsg, CloseReason, ErrorCode, ProtocolError, RoomName};
use crate::shutdown::Shutdown;
use crate::store::journal::{JournalError, Replayed};

/// Most commands handled before the store is committed and frames are written.
const MAX_BATCH: usize = 4096;
/// How often blocked sockets, closing connections and timers are looked at.
const TICK: Duration = Duration::from_millis(20);
/// How long a closing connection gets to take its close frame before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for close frames to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What connection threads tell the dispatcher.
#[derive(Debug)]
pub enum Command {
    /// A connection finished its handshake and has been sent `welcome`.
    Register { conn: Arc<Conn>, user: Identity },
    /// A validated client message.
    Client { conn: ConnId, msg: ClientMsg },
    /// The connection ended; forget it.
    Gone { conn: ConnId },
    /// A result from the Redis threads (`--redis`).
    Cluster(ClusterEvent),
    /// A server API call; the answer goes to `reply`.
    Api { call: ApiCall, reply: Sender<ApiResult> },
}

/// The dispatcher's state. Built by [`Dispatcher::new`], consumed by [`Dispatcher::run`].
pub struct Dispatcher {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    backend: Backend,
    clients: HashMap<ConnId, Client>,
    rooms: HashMap<RoomName, Room>,
    /// Frames produced by the current batch, written after the store commits.
    staged: Vec<Out>,
    /// The writer shards; `None` until started and once stopped.
    writers: Option<Writers>,
    /// Messages accepted in the current batch (for the fan-out histogram).
    staged_msgs: u64,
    /// Sockets that could not take everything; retried when writable.
    blocked: HashMap<ConnId, Arc<Conn>>,
    /// Connections sent a close frame by the dispatcher, with their deadline.
    /// (connection, deadline, close frame fully written)
    closing: Vec<(Arc<Conn>, Instant, bool)>,
    ping: Frame,
    heartbeat: Heartbeat,
    last_sweep: Instant,
    /// Webhook events of the batch, released to the receivers' queues after commit.
    webhooks: Webhooks,
    /// Answers to API posts of the batch, sent after commit (or failed with it).
    api_replies: Vec<(Sender<ApiResult>, ApiResult)>,
}

impl Dispatcher {
    /// Builds the state, replaying the journal's messages (local mode) into the rings.
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>, backend: Backend, replayed: Vec<Replayed>) -> Dispatcher {
        let heartbeat = Heartbeat::new(cfg.heartbeat_interval, TICK, Instant::now());
        let mut d = Dispatcher {
            cfg,
            metrics,
            backend,
            clients: HashMap::new(),
            rooms: HashMap::new(),
            staged: Vec::new(),
            writers: None,
            staged_msgs: 0,
            blocked: HashMap::new(),
            closing: Vec::new(),
            ping: wire::ping_frame(),
            heartbeat,
            last_sweep: Instant::now(),
            webhooks: Webhooks::none(),
            api_replies: Vec::new(),
        };
        d.replay(replayed);
        d
    }

    /// Sends room events to these webhook receivers.
    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Dispatcher {
        self.webhooks = webhooks;
        self
    }

    fn replay(&mut self, replayed: Vec<Replayed>) {
        let count = replayed.len();
        for m in replayed {
            let Some(name) = RoomName::parse(&m.record.room) else {
                continue;
            };
            let room = self.rooms.entry(name).or_insert_with(|| Room::new(&self.cfg));
            // A crash during compaction can leave a message in two segments: keep one.
            if m.record.seq <= room.history.head() {
                continue;
            }
            let stored = Stored { seq: m.record.seq, frame: wire::text_frame(&m.json) };
            room.history.push(stored, &m.record.uid, m.record.id.as_deref());
        }
        if count > 0 {
            log::info!("journal: replayed {count} messages into {} rooms", self.rooms.len());
        }
        self.metrics.rooms.store(self.rooms.len() as u64, Relaxed);
    }

    /// Runs until `shutdown` fires, then closes every connection with 1001 and makes
    /// the store durable. A store write failure stops the server (no ack is ever sent
    /// for a message that is not stored).
    pub fn run(mut self, commands: Receiver<Command>, shutdown: Shutdown) -> Result<(), JournalError> {
        let tick = crossbeam_channel::tick(TICK);
        let (events_tx, events) = crossbeam_channel::unbounded();
        match Writers::start(self.cfg.writers, self.cfg.max_backlog_bytes, self.metrics.clone(), events_tx) {
            Ok(w) => self.writers = Some(w),
            Err(e) => {
                log::error!("cannot start the writer threads: {e}");
                self.close_all(CloseReason::Internal);
                return Ok(());
            }
        }
        let result = loop {
            select! {
                recv(commands) -> cmd => match cmd {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break Ok(()),
                },
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        self.on_shard_event(ev);
                    }
                }
                recv(tick) -> _ => self.on_tick(),
                recv(shutdown.signal()) -> _ => break Ok(()),
            }
            for ev in events.try_iter() {
                self.on_shard_event(ev);
            }
            for cmd in commands.try_iter().take(MAX_BATCH) {
                self.handle(cmd);
            }
            if let Err(e) = self.commit_and_deliver() {
                log::error!("{e}: stopping, nothing unjournaled was acked");
                break Err(e);
            }
        };
        // Let the writers put every committed batch on the wire before the close frames.
        if let Some(w) = self.writers.take() {
            w.finish();
        }
        self.close_all(if result.is_ok() { CloseReason::Shutdown } else { CloseReason::Internal });
        self.backend.close()?;
        result
    }

    /// One command; the frames it produces are staged, not sent.
    pub fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Register { conn, user } => self.register(conn, user),
            Command::Client { conn, msg } => {
                if let Err(e) = self.on_client(conn, msg) {
                    self.reply_error(conn, &e);
                }
            }
            Command::Gone { conn } => self.forget(conn),
            Command::Cluster(ev) => self.on_cluster(ev),
            Command::Api { call, reply } => self.on_api(call, reply),
        }
    }

    /// Commits the store, then hands the batch to the writer shards, which write each
    /// touched socket once (coalescing everything staged for it).
    fn commit_and_deliver(&mut self) -> Result<(), JournalError> {
        if self.staged.is_empty() && self.api_replies.is_empty() {
            // Nothing appended locally (Redis mode acks without frames to stage).
            self.webhooks.release();
            return Ok(());
        }
        if let Err(e) = self.backend.commit() {
            self.webhooks.discard();
            for (reply, _) in self.api_replies.drain(..) {
                let _ = reply.send(Err(ProtocolError::new(ErrorCode::Unavailable, "the message store failed")));
            }
            return Err(e);
        }
        self.webhooks.release();
        for (reply, answer) in self.api_replies.drain(..) {
            let _ = reply.send(answer);
        }
        let batch = Batch { items: std::mem::take(&mut self.staged), messages: std::mem::take(&mut self.staged_msgs) };
        if let Some(w) = &self.writers {
            w.submit(batch);
        }
        if let Backend::Local(journal) = &mut self.backend {
            if journal.wants_compaction() {
                let lines: Vec<_> = self.rooms.values().flat_map(|r| r.history.all().map(|m| m.json())).collect();
                journal.compact(lines.into_iter())?;
            }
        }
        Ok(())
    }
}
