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
//! - `reads`: the users' read markers;
//! - `privacy`: private rooms, invitations, direct messages: who may join what;
//! - `moderation`: kicks and read-only rooms;
//! - `dms`: what keeps DMs from harming a user: the DM rate, blocks, closed DMs, the
//!   DM slots of a connection;
//! - `edits`: edits and deletions of messages, and who may make them;
//! - `lifecycle`: registering, blocked sockets, heartbeats, closing;
//! - `eviction`: which rooms are in memory (`--max-rooms`), idle rooms leaving it and
//!   stored rooms coming back, and the per-connection rate of new rooms;
//! - [`history`]: the per-room rings (the cache of the newest messages) and
//!   de-duplication ids;
//! - [`scrollback`]: resume, scroll-back and search answered from the ring or by the
//!   store's reader threads;
//! - `durability`: commit-then-deliver, undoing a batch the store refused, the retry
//!   of a failing store, retention steps;
//! - [`heartbeat`]: which connections are due a ping;
//! - [`api`]: the server API's calls;
//! - `admin`: server-wide bans and the audit log;
//! - `backend`: which store runs ([`Backend`]), local SQLite or Redis;
//! - `cluster`: Redis mode (`--redis`), the dispatcher's side of it (the `redis-io`
//!   thread itself is [`crate::store::redis::io`]'s);
//! - `tags`: what goes with work handed to another thread and comes back with the
//!   answer (a post's ack, a history read's purpose, `redis-io`'s requests);
//! - `joined`: what a joining client is told.
//!
//! `tags`, `joined`, `history` and `heartbeat` import no other file of the dispatcher
//! (`state` only `history`); the handler files import those, `backend` and one another
//! without a circle: the only loop is this file with its children.

mod admin;
pub mod api;
mod backend;
mod cluster;
mod commands;
mod dms;
mod durability;
mod edits;
mod erasure;
mod eviction;
mod files;
pub mod heartbeat;
pub mod history;
mod joined;
mod lifecycle;
mod moderation;
mod presence;
mod privacy;
mod reads;
pub mod scrollback;
mod state;
mod tags;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

pub use admin::Actor;
use api::ApiCall;
pub use backend::{Backend, Cluster, Local};
use durability::{BatchPost, StoreHealth};
use heartbeat::Heartbeat;
use reads::ReadMarkers;
use state::{Client, Room};
use tags::{ClusterEvent, ReadFor};

use crate::auth::Identity;
use crate::config::Config;
use crate::delivery::fanout::Out;
use crate::delivery::outbox::{Conn, ConnId};
use crate::delivery::writer::Writers;
use crate::metrics::Metrics;
use crate::protocol::wire::{self, Frame};
use crate::protocol::{ApiResult, ClientMsg, CloseReason, RoomName};
use crate::shutdown::Shutdown;
use crate::store::read::Answer;
use crate::store::sqlite::SqliteStoreError;
use crate::webhooks::Webhooks;

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
    /// An answer from the local store's reader threads.
    Store(Answer<ReadFor>),
    /// An admin action taken outside the dispatcher (an API key file re-read), for the
    /// audit log.
    Audit { by: Actor, action: &'static str, detail: String },
}

/// The dispatcher's state. Built by [`Dispatcher::new`], consumed by [`Dispatcher::run`].
pub struct Dispatcher {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    backend: Backend,
    clients: HashMap<ConnId, Client>,
    /// The rooms in memory (at most `--max-rooms`; see `eviction`).
    rooms: HashMap<RoomName, Room>,
    /// The rooms in memory nobody is in, longest idle first.
    idle: eviction::IdleRooms,
    /// Frames produced by the current batch, written after the store commits.
    staged: Vec<Out>,
    /// The writer shards; `None` until started and once stopped.
    writers: Option<Writers>,
    /// Messages accepted in the current batch (for the fan-out histogram).
    staged_msgs: u64,
    /// Redis mode: users erased lately, so a message read from Redis before the
    /// erasure rewrote it, and delivered after, is made anonymous here too.
    recently_erased: erasure::RecentlyErased,
    /// Acks and API replies staged in this batch, and when the dispatcher took its
    /// first command: `natter_ack_seconds`.
    staged_acks: u64,
    batch_started: Instant,
    /// Sockets that could not take everything; retried when writable.
    blocked: HashMap<ConnId, Arc<Conn>>,
    /// Connections sent a close frame by the dispatcher, with their deadline.
    /// (connection, deadline, close frame fully written)
    closing: Vec<(Arc<Conn>, Instant, bool)>,
    ping: Frame,
    heartbeat: Heartbeat,
    last_sweep: Instant,
    /// This instance's name in the console's user list (`host:ws-port`).
    instance_label: String,
    /// Redis mode: when this instance's users were last written for the others'
    /// consoles ([`crate::store::redis::RedisStore::online_set`]).
    last_online: Instant,
    /// Webhook events of the batch, released to the receivers' queues after commit.
    webhooks: Webhooks,
    /// The file store, told of stored and deleted messages with files (never waited on).
    files: Option<Arc<crate::store::files::Files>>,
    /// Answers to API posts of the batch, sent after commit (or failed with it).
    api_replies: Vec<(Sender<ApiResult>, ApiResult)>,
    /// Messages of the current batch not yet committed, to undo if the commit fails.
    batch_posts: Vec<BatchPost>,
    /// Rooms with uncommitted messages: a read of one commits the batch first.
    dirty_rooms: HashSet<RoomName>,
    store_health: StoreHealth,
    reads: ReadMarkers,
    /// Each user's connections here (read markers, DMs and invitations reach them all).
    user_conns: state::UserConns,
    /// Private rooms, invitations, DM rooms and the users they may name.
    privacy: privacy::Privacy,
    moderation: moderation::Moderation,
    /// Blocks, closed DMs and the DM rate (local mode).
    dm_safety: dms::DmSafety,
    /// Edits and deletions of the batch, applied to the rings once it is committed.
    ring_rewrites: Vec<edits::RingRewrite>,
    /// Server-wide bans in force; connection threads check them at connect.
    bans: Arc<crate::bans::Bans>,
    /// Audit entries were buffered in the local store: the batch must commit.
    audit_pending: bool,
    /// Redis mode: moderators' deletions of others' messages asked of the append
    /// script, recorded once it stored them: (room, seq) → the entry's parts.
    mod_deletes: HashMap<(RoomName, u64), Actor>,
    /// Unit tests run without writer shards: committed batches are kept here.
    #[cfg(test)]
    delivered: Vec<crate::delivery::fanout::Out>,
}

impl Dispatcher {
    /// Builds the state. No room is read from the store here: each comes back when it
    /// is used (`eviction`).
    pub fn new(cfg: Arc<Config>, metrics: Arc<Metrics>, backend: Backend) -> Dispatcher {
        let heartbeat = Heartbeat::new(cfg.heartbeat_interval, TICK, Instant::now());
        let mut d = Dispatcher {
            cfg,
            metrics,
            backend,
            clients: HashMap::new(),
            rooms: HashMap::new(),
            idle: Default::default(),
            staged: Vec::new(),
            writers: None,
            staged_msgs: 0,
            recently_erased: erasure::RecentlyErased::default(),
            staged_acks: 0,
            batch_started: Instant::now(),
            blocked: HashMap::new(),
            closing: Vec::new(),
            ping: wire::ping_frame(),
            heartbeat,
            last_sweep: Instant::now(),
            instance_label: String::new(),
            last_online: Instant::now() - Duration::from_secs(3600),
            webhooks: Webhooks::none(),
            files: None,
            api_replies: Vec::new(),
            batch_posts: Vec::new(),
            dirty_rooms: HashSet::new(),
            store_health: StoreHealth::default(),
            reads: ReadMarkers::default(),
            user_conns: Default::default(),
            privacy: Default::default(),
            moderation: Default::default(),
            dm_safety: Default::default(),
            ring_rewrites: Vec::new(),
            bans: Default::default(),
            audit_pending: false,
            mod_deletes: HashMap::new(),
            #[cfg(test)]
            delivered: Vec::new(),
        };
        d.load_privacy();
        d
    }

    /// Sends room events to these webhook receivers.
    pub fn with_files(mut self, files: Arc<crate::store::files::Files>) -> Dispatcher {
        self.files = Some(files);
        self
    }

    /// Names this instance in the console's user list (`host:ws-port`).
    pub fn with_instance_label(mut self, label: String) -> Dispatcher {
        self.instance_label = label;
        self
    }

    pub fn with_webhooks(mut self, webhooks: Webhooks) -> Dispatcher {
        self.webhooks = webhooks;
        self
    }

    /// Runs until `shutdown` fires, then closes every connection with 1001 and makes
    /// the store durable. A store write failure refuses the batch's messages (no ack
    /// is ever sent for a message that is not stored) and the server goes on.
    pub fn run(mut self, commands: Receiver<Command>, shutdown: Shutdown) -> Result<(), SqliteStoreError> {
        let tick = crossbeam_channel::tick(TICK);
        let (events_tx, events) = crossbeam_channel::unbounded();
        match Writers::start(self.cfg.writers, self.cfg.max_backlog_bytes, self.metrics.clone(), events_tx) {
            Ok(w) => self.writers = Some(w),
            Err(e) => crate::shutdown::fatal(&format!("cannot start the writer threads: {e}")),
        }
        loop {
            select! {
                recv(commands) -> cmd => match cmd {
                    Ok(cmd) => self.handle(cmd),
                    Err(_) => break,
                },
                recv(events) -> ev => {
                    if let Ok(ev) = ev {
                        self.on_shard_event(ev);
                    }
                }
                recv(tick) -> _ => {
                    self.on_tick();
                    self.store_tick(Instant::now());
                }
                recv(shutdown.signal()) -> _ => break,
            }
            self.batch_started = Instant::now();
            for ev in events.try_iter() {
                self.on_shard_event(ev);
            }
            for cmd in commands.try_iter().take(MAX_BATCH) {
                self.handle(cmd);
            }
            self.commit_and_deliver();
            self.evict_idle(Instant::now());
        }
        // Let the writers put every committed batch on the wire before the close frames.
        if let Some(w) = self.writers.take() {
            w.finish();
        }
        self.close_all(CloseReason::Shutdown);
        self.backend.close()
    }

    /// One command; the frames it produces are staged, not sent.
    pub fn handle(&mut self, cmd: Command) {
        self.metrics.commands.fetch_add(1, Relaxed);
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
            Command::Store(answer) => self.on_store_answer(answer),
            Command::Audit { by, action, detail } => self.record(&by, action, "", "", detail),
        }
    }
}
