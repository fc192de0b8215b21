//! The dispatcher: the single owner of chat state — rooms, members, presence, per-room
//! `seq`, history rings, de-duplication ids and the journal — and the only thread that
//! fans messages out.
//!
//! Connection threads send it [`Command`]s over a crossbeam channel and never touch
//! its state. It works in batches: it takes every command waiting (up to a bound),
//! stages each outgoing frame (a room's frame once, with a snapshot of its members),
//! appends accepted messages to the journal, commits the journal in one write, and
//! only then hands the batch to the writer shards ([`crate::writer`]). So no ack, live
//! message or history reaches a client before the journal holds it. Writes never
//! block: a socket that is full keeps a bounded backlog, retried when it drains; past
//! the bound the client is closed as a slow consumer. It must never wait on a client.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver};

use crate::cluster::{Cluster, ClusterEvent, Request};
use crate::config::Config;
use crate::fanout::Out;
use crate::heartbeat::Heartbeat;
use crate::history::{History, Stored};
use crate::journal::{Journal, JournalError, Replayed};
use crate::metrics::{CloseReason, Metrics};
use crate::outbox::{self, Conn, ConnId, Flush};
use crate::protocol::{ClientMsg, ErrorCode, ProtocolError, RoomName, ServerMsg, SystemEvent, UserRef};
use crate::shutdown::Shutdown;
use crate::wire::{self, Frame};

mod redis;
use crate::writer::{Batch, ShardEvent, Writers};

/// Most commands handled before the journal is committed and frames are written.
const MAX_BATCH: usize = 4096;
/// How often blocked sockets, closing connections and timers are looked at.
const TICK: Duration = Duration::from_millis(20);
/// How long a closing connection gets to take its close frame before it is cut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits for close frames to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long a client that has its close frame gets to answer before the socket is cut.
const LINGER: Duration = Duration::from_secs(2);

/// Who is on the other end of a connection, fixed at the handshake.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Stable user id (`sub` in token mode, derived from the name in open mode).
    pub id: Arc<str>,
    /// Display name.
    pub name: String,
    /// Whether `nick` is allowed (open mode only).
    pub can_rename: bool,
}

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
}

struct Client {
    conn: Arc<Conn>,
    uid: Arc<str>,
    name: String,
    can_rename: bool,
    rooms: Vec<RoomName>,
}

struct Present {
    connections: u32,
    name: String,
}

struct Room {
    members: HashMap<ConnId, Arc<Conn>>,
    /// `members` as a shared slice for staging; rebuilt after a membership change.
    snapshot: Option<Arc<[Arc<Conn>]>>,
    present: HashMap<Arc<str>, Present>,
    history: History,
    /// Redis mode: the last seq the reader delivered for this room; `None` while the
    /// room is not watched (no local member yet).
    live_head: Option<u64>,
    /// Redis mode: users present through other instances, as known here (uid → name),
    /// so each arrival and departure is announced once whether it is heard from the
    /// events channel or from presence polling.
    remote: HashMap<String, String>,
}

/// The dispatcher's state. Built by [`Dispatcher::new`], consumed by [`Dispatcher::run`].
pub struct Dispatcher {
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    /// The local journal; `None` in Redis mode, where Redis stores the messages.
    journal: Option<Journal>,
    /// Redis mode: the threads that talk to Redis.
    cluster: Option<Cluster>,
    clients: HashMap<ConnId, Client>,
    rooms: HashMap<RoomName, Room>,
    /// Frames produced by the current batch, written after the journal commit.
    staged: Vec<Out>,
    /// The writer shards; `None` once stopped.
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
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Room {
    fn new(cfg: &Config) -> Room {
        Room {
            members: HashMap::new(),
            snapshot: None,
            present: HashMap::new(),
            history: History::new(cfg.history_per_room, cfg.dedup_per_room),
            live_head: None,
            remote: HashMap::new(),
        }
    }
    fn members(&mut self) -> Arc<[Arc<Conn>]> {
        self.snapshot.get_or_insert_with(|| self.members.values().cloned().collect()).clone()
    }
    fn add(&mut self, id: ConnId, conn: Arc<Conn>) {
        self.members.insert(id, conn);
        self.snapshot = None;
    }
    fn remove(&mut self, id: ConnId) -> bool {
        self.snapshot = None;
        self.members.remove(&id).is_some()
    }
    /// Up to `limit` present users, sorted by name (a large room lists a sample).
    fn users(&self, limit: usize) -> Vec<UserRef<'_>> {
        let mut users: Vec<UserRef> =
            self.present.iter().take(limit).map(|(id, p)| UserRef { id, name: &p.name }).collect();
        users.sort_by(|a, b| a.name.cmp(b.name).then(a.id.cmp(b.id)));
        users
    }

    /// Whether presence changes are announced to everyone: in a room larger than
    /// `limit`, one join would cost a frame per member, and a crowd arriving would cost
    /// members², so large rooms stay quiet.
    fn announces(&self, limit: usize) -> bool {
        self.present.len() <= limit
    }
}

impl Dispatcher {
    /// Builds the state, replaying the journal's messages into the rooms' rings.
    pub fn new(
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        journal: Option<Journal>,
        replayed: Vec<Replayed>,
    ) -> Dispatcher {
        let heartbeat = Heartbeat::new(cfg.heartbeat_interval, TICK, Instant::now());
        let mut d = Dispatcher {
            cfg,
            metrics,
            journal,
            cluster: None,
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
        };
        let count = replayed.len();
        for m in replayed {
            let Some(name) = RoomName::parse(&m.record.room) else {
                continue;
            };
            let cfg = &d.cfg;
            let room = d.rooms.entry(name).or_insert_with(|| Room::new(cfg));
            // A crash during compaction can leave a message in two segments: keep one.
            if m.record.seq <= room.history.head() {
                continue;
            }
            let stored = Stored { seq: m.record.seq, frame: wire::text_frame(&m.json) };
            room.history.push(stored, &m.record.uid, m.record.id.as_deref());
        }
        if count > 0 {
            log::info!("journal: replayed {count} messages into {} rooms", d.rooms.len());
        }
        d.metrics.rooms.store(d.rooms.len() as u64, Relaxed);
        d
    }

    /// Redis mode: messages, history and presence go through `cluster`.
    pub fn with_cluster(mut self, cluster: Cluster) -> Dispatcher {
        self.cluster = Some(cluster);
        self
    }

    /// Runs until `shutdown` fires, then closes every connection with 1001 and makes
    /// the journal durable. A journal write failure stops the server (no ack is ever
    /// sent for a message that is not in the journal).
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
        if let Some(j) = self.journal.as_mut() {
            j.close()?;
        }
        result
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Register { conn, user } => {
                self.metrics.connections.fetch_add(1, Relaxed);
                let client = Client {
                    conn: conn.clone(),
                    uid: user.id,
                    name: user.name,
                    can_rename: user.can_rename,
                    rooms: vec![],
                };
                self.heartbeat.add(conn.id);
                self.clients.insert(conn.id, client);
            }
            Command::Client { conn, msg } => {
                if let Err(e) = self.on_client(conn, msg) {
                    self.reply_error(conn, &e);
                }
            }
            Command::Gone { conn } => self.forget(conn),
            Command::Cluster(ev) => self.on_cluster(ev),
        }
    }

    fn on_client(&mut self, id: ConnId, msg: ClientMsg) -> Result<(), ProtocolError> {
        if !self.clients.contains_key(&id) {
            return Ok(()); // already gone (slow consumer, shutdown): drop quietly
        }
        match msg {
            ClientMsg::Join { room, since } => self.join(id, room, since),
            ClientMsg::Leave { room } => self.leave(id, &room),
            ClientMsg::Msg { room, text, id: msg_id } => self.post(id, room, &text, msg_id),
            ClientMsg::LegacyMsg { text } => {
                let lobby = RoomName::lobby();
                if !self.client(id).rooms.contains(&lobby) {
                    self.admit_to_room(id, &lobby)?;
                    if self.cluster.is_some() {
                        self.cluster_join(id, lobby.clone(), None, true);
                    } else {
                        self.add_member(id, &lobby);
                    }
                }
                self.post(id, lobby, &text, None)
            }
            ClientMsg::Typing { room } => self.typing(id, &room),
            ClientMsg::Nick { name } => self.nick(id, name),
            // Answered by the connection thread; nothing to do here.
            ClientMsg::Ping { .. } => Ok(()),
        }
    }

    fn client(&self, id: ConnId) -> &Client {
        self.clients.get(&id).expect("on_client checked the client exists")
    }

    fn stage(&mut self, conn: &Arc<Conn>, frame: Frame) {
        self.staged.push(Out::One(conn.clone(), frame));
    }

    fn stage_room(&mut self, room: &RoomName, frame: &Frame, except: Option<ConnId>) {
        if let Some(r) = self.rooms.get_mut(room) {
            self.staged.push(Out::Room { members: r.members(), except, frame: frame.clone() });
        }
    }

    fn reply_error(&mut self, id: ConnId, e: &ProtocolError) {
        self.metrics.error(e.code);
        if let Some(c) = self.clients.get(&id) {
            let conn = c.conn.clone();
            self.stage(&conn, wire::encode(&e.to_server_msg()));
        }
    }

    fn not_joined(room: &RoomName, reference: Option<String>) -> ProtocolError {
        ProtocolError::new(ErrorCode::NotJoined, format!("join `{room}` first")).with_ref(reference)
    }

    fn join(&mut self, id: ConnId, room: RoomName, since: Option<u64>) -> Result<(), ProtocolError> {
        if !self.client(id).rooms.contains(&room) {
            self.admit_to_room(id, &room)?;
            if self.cluster.is_none() {
                self.add_member(id, &room);
            }
        }
        if self.cluster.is_some() {
            self.cluster_join(id, room, since, false);
            return Ok(());
        }
        let conn = self.client(id).conn.clone();
        let r = self.rooms.get(&room).expect("entered above");
        let joined = wire::encode(&ServerMsg::Joined {
            room: room.as_str(),
            head: r.history.head(),
            users: r.users(self.cfg.presence_limit),
            users_total: r.present.len(),
        });
        let (messages, complete) = match since {
            Some(since) => {
                let replay = r.history.since(since);
                (replay.messages, replay.complete)
            }
            // Without `since` the client asked for nothing in particular: complete.
            None => (r.history.recent(self.cfg.join_history), true),
        };
        let json: Vec<_> = messages.iter().map(|m| m.json()).collect();
        let history = wire::history_frame(room.as_str(), complete, json.iter().map(|j| &j[..]));
        // Staged in this order, after every earlier frame of the room: the history
        // always precedes the live messages that follow it.
        self.stage(&conn, joined);
        self.stage(&conn, history);
        Ok(())
    }

    /// Checks the room limits and counts `room` among the client's rooms (creating
    /// the room). Membership — receiving its messages — is [`Self::add_member`].
    fn admit_to_room(&mut self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let client = self.client(id);
        if client.rooms.len() >= self.cfg.max_rooms_per_conn {
            let message = format!("at most {} rooms per connection", self.cfg.max_rooms_per_conn);
            return Err(ProtocolError::new(ErrorCode::RoomLimit, message).with_ref(Some("join".into())));
        }
        if !self.rooms.contains_key(room) {
            if self.rooms.len() >= self.cfg.max_rooms {
                return Err(ProtocolError::new(ErrorCode::RoomLimit, "the server holds its maximum of rooms")
                    .with_ref(Some("join".into())));
            }
            self.rooms.insert(room.clone(), Room::new(&self.cfg));
            self.metrics.rooms.store(self.rooms.len() as u64, Relaxed);
        }
        self.clients.get_mut(&id).expect("checked").rooms.push(room.clone());
        Ok(())
    }

    /// Makes `id` a member of `room`, announcing the user's arrival to the others when
    /// this is the user's first connection there.
    fn add_member(&mut self, id: ConnId, room: &RoomName) {
        let client = self.client(id);
        let (conn, uid, name) = (client.conn.clone(), client.uid.clone(), client.name.clone());
        let r = self.rooms.get_mut(room).expect("admitted rooms exist");
        r.add(id, conn);
        let p = r.present.entry(uid.clone()).or_insert(Present { connections: 0, name: name.clone() });
        p.connections += 1;
        let first = p.connections == 1;
        let announce = first && r.announces(self.cfg.presence_limit);
        if announce {
            let frame = wire::encode(&ServerMsg::System {
                room: room.as_str(),
                event: SystemEvent::Join,
                user: UserRef { id: &uid, name: &name },
                ts: now_ms(),
                old_name: None,
            });
            self.stage_room(room, &frame, Some(id));
            self.publish(room, &frame);
        }
    }

    /// Redis mode: passes a system or typing frame to the other instances.
    fn publish(&self, room: &RoomName, frame: &Frame) {
        if let Some(c) = &self.cluster {
            c.send(Request::Publish { room: room.clone(), json: wire::payload(frame).to_vec() });
        }
    }

    fn leave(&mut self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let client = self.clients.get_mut(&id).expect("checked");
        let Some(pos) = client.rooms.iter().position(|r| r == room) else {
            return Err(Self::not_joined(room, Some("leave".into())));
        };
        client.rooms.swap_remove(pos);
        self.remove_member(id, room);
        Ok(())
    }

    /// Takes `id` out of `room`'s members and presence, announcing a leave when it
    /// was the user's last connection there.
    fn remove_member(&mut self, id: ConnId, room: &RoomName) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let uid = client.uid.clone();
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if !r.remove(id) {
            return;
        }
        let Some(p) = r.present.get_mut(&uid) else {
            return;
        };
        p.connections -= 1;
        let last_here = r.members.is_empty();
        if p.connections == 0 {
            // Judged with the leaver still counted, as its join was.
            let announce = r.announces(self.cfg.presence_limit);
            let p = r.present.remove(&uid).expect("just seen");
            if let Some(c) = &self.cluster {
                c.send(Request::Leave { room: room.clone(), uid: uid.clone() });
            }
            if announce {
                let frame = wire::encode(&ServerMsg::System {
                    room: room.as_str(),
                    event: SystemEvent::Leave,
                    user: UserRef { id: &uid, name: &p.name },
                    ts: now_ms(),
                    old_name: None,
                });
                self.stage_room(room, &frame, None);
                self.publish(room, &frame);
            }
        }
        if last_here {
            self.cluster_room_empty(room);
        }
    }

    fn post(&mut self, id: ConnId, room: RoomName, text: &str, msg_id: Option<String>) -> Result<(), ProtocolError> {
        let client = self.client(id);
        let (conn, uid, name) = (client.conn.clone(), client.uid.clone(), client.name.clone());
        if !client.rooms.contains(&room) {
            return Err(Self::not_joined(&room, msg_id.or(Some("msg".into()))));
        }
        if self.cluster.is_some() {
            self.cluster_post(id, room, text, msg_id);
            return Ok(());
        }
        let r = self.rooms.get_mut(&room).expect("members' rooms exist");
        if let Some(seq) = msg_id.as_deref().and_then(|m| r.history.seen(&uid, m)) {
            self.metrics.messages_duplicate.fetch_add(1, Relaxed);
            let ack = ServerMsg::Ack {
                id: msg_id.as_deref().expect("seen needs an id"),
                room: room.as_str(),
                seq,
                dup: true,
            };
            self.stage(&conn, wire::encode(&ack));
            return Ok(());
        }
        let seq = r.history.next_seq();
        let json = ServerMsg::Msg {
            room: room.as_str(),
            seq,
            id: msg_id.as_deref(),
            ts: now_ms(),
            user: &name,
            uid: &uid,
            text,
        }
        .to_json();
        self.journal.as_mut().expect("local mode has a journal").append(&json);
        let frame = wire::text_frame(&json);
        r.history.push(Stored { seq, frame: frame.clone() }, &uid, msg_id.as_deref());
        self.metrics.messages_accepted.fetch_add(1, Relaxed);
        self.staged_msgs += 1;
        if let Some(mid) = msg_id.as_deref() {
            let ack = wire::encode(&ServerMsg::Ack { id: mid, room: room.as_str(), seq, dup: false });
            self.stage(&conn, ack);
        }
        self.stage_room(&room, &frame, None);
        Ok(())
    }

    fn typing(&mut self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let client = self.client(id);
        if !client.rooms.contains(room) {
            return Err(Self::not_joined(room, Some("typing".into())));
        }
        let frame = wire::encode(&ServerMsg::Typing {
            room: room.as_str(),
            user: UserRef { id: &client.uid, name: &client.name },
        });
        self.stage_room(room, &frame, Some(id));
        self.publish(room, &frame);
        Ok(())
    }

    fn nick(&mut self, id: ConnId, name: String) -> Result<(), ProtocolError> {
        let client = self.clients.get_mut(&id).expect("checked");
        if !client.can_rename {
            return Err(ProtocolError::new(ErrorCode::Forbidden, "names come from the token in token mode")
                .with_ref(Some("nick".into())));
        }
        let old = std::mem::replace(&mut client.name, name.clone());
        let (uid, rooms, conn) = (client.uid.clone(), client.rooms.clone(), client.conn.clone());
        let ts = now_ms();
        for room in rooms {
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            if let Some(p) = r.present.get_mut(&uid) {
                p.name = name.clone();
            }
            let frame = wire::encode(&ServerMsg::System {
                room: room.as_str(),
                event: SystemEvent::Nick,
                user: UserRef { id: &uid, name: &name },
                ts,
                old_name: Some(&old),
            });
            if let Some(c) = &self.cluster {
                c.send(Request::Rename { room: room.clone(), uid: uid.clone(), name: name.clone() });
            }
            if r.announces(self.cfg.presence_limit) {
                self.stage_room(&room, &frame, None);
                self.publish(&room, &frame);
            } else {
                self.stage(&conn, frame);
            }
        }
        Ok(())
    }

    /// Removes a connection from every room and from the dispatcher's books.
    fn forget(&mut self, id: ConnId) {
        let Some(client) = self.clients.get(&id) else {
            return;
        };
        let uid = client.uid.clone();
        for room in client.rooms.clone() {
            let member = self.rooms.get(&room).is_some_and(|r| r.members.contains_key(&id));
            if member {
                self.remove_member(id, &room);
            } else if let Some(c) = &self.cluster {
                // Gone while its Redis join was in flight: take back the presence it set.
                if !self.rooms.get(&room).is_some_and(|r| r.present.contains_key(&uid)) {
                    c.send(Request::Leave { room, uid: uid.clone() });
                }
            }
        }
        self.clients.remove(&id);
        self.blocked.remove(&id);
        self.metrics.connections.fetch_sub(1, Relaxed);
    }

    /// Commits the journal, then hands the batch to the writer shards, which write each
    /// touched socket once (coalescing everything staged for it).
    fn commit_and_deliver(&mut self) -> Result<(), JournalError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        if let Some(j) = self.journal.as_mut() {
            j.commit()?;
        }
        let batch = Batch { items: std::mem::take(&mut self.staged), messages: std::mem::take(&mut self.staged_msgs) };
        self.writers.as_ref().expect("writers run while the dispatcher runs").submit(batch);
        if self.journal.as_ref().is_some_and(|j| j.wants_compaction()) {
            let lines: Vec<_> = self.rooms.values().flat_map(|r| r.history.all().map(|m| m.json())).collect();
            self.journal.as_mut().expect("checked above").compact(lines.into_iter())?;
        }
        Ok(())
    }

    fn on_shard_event(&mut self, ev: ShardEvent) {
        match ev {
            ShardEvent::Blocked(conn) => {
                if self.clients.contains_key(&conn.id) {
                    self.blocked.insert(conn.id, conn);
                }
            }
            ShardEvent::Slow(conn) => self.close_conn(&conn, CloseReason::SlowConsumer),
        }
    }

    /// Sends a close frame (dropping the backlog when the client is too slow for it),
    /// removes the connection from its rooms, and watches it until it is gone.
    fn close_conn(&mut self, conn: &Arc<Conn>, reason: CloseReason) {
        conn.set_reason(reason);
        let (code, text) = reason.close_frame().expect("dispatcher closes always send a frame");
        if conn.close(code, text, reason == CloseReason::SlowConsumer) {
            log::info!("closing connection {} ({}): {}", conn.id, conn.peer, reason.label());
            if let Some(c) = self.clients.get(&conn.id) {
                for room in c.rooms.clone() {
                    self.remove_member(conn.id, &room);
                }
                self.clients.get_mut(&conn.id).expect("just seen").rooms.clear();
            }
            self.blocked.remove(&conn.id);
            conn.flush();
            self.closing.push((conn.clone(), Instant::now() + CLOSE_GRACE, false));
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.retry_blocked();
        self.drive_closing(now);
        let clients = &self.clients;
        for id in self.heartbeat.due(now, |id| clients.contains_key(&id)) {
            self.staged.push(Out::One(clients[&id].conn.clone(), self.ping.clone()));
        }
        // Connection threads write too (pongs, errors); catch any backlog they left.
        if now.duration_since(self.last_sweep) >= Duration::from_secs(1) {
            self.last_sweep = now;
            for c in self.clients.values() {
                if c.conn.backlog() > 0 {
                    self.blocked.insert(c.conn.id, c.conn.clone());
                }
            }
        }
    }

    fn retry_blocked(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        let conns: Vec<Arc<Conn>> = self.blocked.values().cloned().collect();
        let fds: Vec<i32> = conns.iter().map(|c| c.raw_fd()).collect();
        for i in outbox::wait_writable(&fds, Duration::ZERO) {
            let conn = &conns[i];
            if conn.flush() != Flush::Pending {
                self.blocked.remove(&conn.id);
            }
        }
    }

    /// Moves closing connections along: once the close frame is out, the client gets
    /// `LINGER` to answer before the socket is cut (which also ends its thread); a
    /// client that never takes the close frame is cut at its deadline.
    fn drive_closing(&mut self, now: Instant) {
        self.closing.retain_mut(|(conn, deadline, flushed)| {
            if *flushed || now >= *deadline {
                if now >= *deadline {
                    conn.abort();
                    return false;
                }
                return true;
            }
            match conn.flush() {
                Flush::Pending => true,
                Flush::Done => {
                    conn.shutdown_write();
                    *flushed = true;
                    *deadline = now + LINGER;
                    true
                }
                Flush::Failed => false,
            }
        });
    }

    /// Shutdown: close frame to everyone, a short grace for them to drain, then cut.
    fn close_all(&mut self, reason: CloseReason) {
        let (code, text) = reason.close_frame().expect("shutdown sends a frame");
        // Anything staged by the last batch was never committed: do not send it.
        self.staged.clear();
        let conns: Vec<Arc<Conn>> = self.clients.values().map(|c| c.conn.clone()).collect();
        for conn in &conns {
            conn.set_reason(reason);
            conn.close(code, text, false);
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut pending: Vec<&Arc<Conn>> = conns.iter().collect();
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|c| c.flush() == Flush::Pending);
            if !pending.is_empty() {
                let fds: Vec<i32> = pending.iter().map(|c| c.raw_fd()).collect();
                outbox::wait_writable(&fds, Duration::from_millis(50));
            }
        }
        for conn in &conns {
            conn.shutdown_write();
        }
        log::info!("dispatcher: closed {} connections", conns.len());
    }
}
