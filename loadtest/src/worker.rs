//! One load-generating thread: a mio event loop that owns thousands of
//! non-blocking client connections, drives their handshakes, sends probes
//! on a schedule, and accounts for every frame that comes back.
//!
//! A worker never blocks on a socket and never shares a connection with
//! another thread; the coordinator talks to it only through [`Cmd`]s and the
//! shared [`Progress`] counters. Every loop it runs is bounded: reads per
//! wake-up, sends per tick, connects in flight, handshake and close time.

use crate::cli::Transport;
use crate::ledger::{Arrival, Ledger};
use crate::probe::{classify, Probe, Seen, Template};
use crate::rooms::{room_of, Census, RoomTally};
use crate::stats::{tally, Progress, Stats};
use crate::sys::{defer_next_ack, now_ns, thread_cpu};
use crate::tls::{self, Stream};
use crate::ws::{self, check_upgrade, decode, Decoded, Target, Upgrade};
use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

mod fallback;
mod resume;
use fallback::{Fallback, POST_BIT};
use resume::{Natter, Resume};

const WAKER: Token = Token(usize::MAX);
/// Reads of one socket per wake-up before it yields to the others.
const READS_PER_WAKE: usize = 32;
/// A client's unsent bytes past which probes are skipped, not queued.
const MAX_BACKLOG: usize = 64 * 1024;
/// Connects in flight per worker (SYN sent or handshake pending).
const MAX_PENDING: usize = 256;
/// Longest accepted server frame.
const MAX_FRAME: usize = 1 << 20;
const HANDSHAKE_TIMEOUT_NS: u64 = 10_000_000_000;
const CLOSE_GRACE_NS: u64 = 2_000_000_000;
/// Most probes one tick sends, so a late tick cannot burst without bound.
const SENDS_PER_TICK: usize = 2_000;

/// Which probes a client counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// The fleet: every probe but the witness's stream (counted apart).
    Except(u32),
    /// The witness: only its own stream.
    Only(u32),
    /// The witness of a server without rooms: every probe it hears.
    All,
}

/// What every worker of a run shares, fixed for the run.
pub struct Setup {
    pub targets: Vec<Target>,
    /// Join frame, or None for servers that need none.
    pub join: Option<Template>,
    pub template: Template,
    /// Room names. With more than one, counted client i joins room i mod
    /// len and, when everyone sends, sends as stream i.
    pub rooms: Vec<String>,
    /// Counted clients numbered so far (rooms and stream ids).
    pub next_index: AtomicU32,
    pub filter: Filter,
    /// Speak Engine.IO/Socket.IO inside the WebSocket: `40` to connect,
    /// the join only after the server's `40`, `3` for every ping `2`.
    pub engine_io: bool,
    /// WebSocket, or natter's HTTP fallback (`worker/fallback.rs`).
    pub transport: Transport,
    pub run_id: u64,
    pub progress: Arc<Progress>,
    pub board: Arc<Board>,
    /// Defer each client's ACKs to the delayed-ACK timer (see `--immediate-acks`).
    pub delayed_acks: bool,
    /// `restart`: a counted client the server hangs up on comes back and resumes
    /// (`worker/resume.rs`) instead of being gone.
    pub resume: bool,
    /// Offer permessage-deflate and inflate what comes compressed (see `--no-deflate`).
    pub deflate: bool,
}

/// Orders from the coordinator.
pub enum Cmd {
    /// Open `count` clients at `per_s` per second (0 = as fast as the
    /// in-flight bound allows). Uncounted clients are churners that live
    /// `life_ms` (a random time in the range) and then leave.
    Connect {
        count: u32,
        per_s: f64,
        counted: bool,
        life_ms: Option<(u64, u64)>,
    },
    /// Counted clients of this worker become the senders of `streams`
    /// (None: every counted client, each its own stream in its room),
    /// sending at `per_s` in total until `until_ns`.
    /// `epoch` numbers the sending phase, for unique message ids.
    Send {
        streams: Option<Vec<u32>>,
        per_s: f64,
        until_ns: u64,
        epoch: u32,
    },
    /// One probe now from a random counted client (shootout).
    Broadcast(Probe),
    /// Forget every client's ledger: a new measurement starts, and probes
    /// sent before now are stale.
    ResetLedgers,
    /// Send what is due now, then answer: after this, `Progress::sent` holds
    /// every probe of a finished sending phase.
    Sync(Sender<()>),
    /// Close every client (close frame 1000, then drop).
    CloseAll,
    /// Send the stats gathered since the last snapshot, and start afresh.
    Snapshot(Sender<Stats>),
    /// Members and probes sent per room since the last `ResetLedgers`.
    Census(Sender<Census>),
    /// `restart`: the probes the server acked since the last `ResetLedgers`, as
    /// (room, stream, n).
    Acked(Sender<Vec<(u32, u32, u32)>>),
    /// `restart`: check every counted client's ledger against the acked probes of
    /// its room (indexed by room); answers (probes checked, probes missing).
    Audit(Arc<Vec<Vec<(u32, u32)>>>, Sender<(u64, u64)>),
    Stop,
}

/// Shootout broadcasts in flight: receivers tick off the slot whose
/// stream and sequence number match.
#[derive(Default)]
pub struct Board {
    pub active: std::sync::atomic::AtomicBool,
    pub slots: Vec<Slot>,
}

#[derive(Default)]
pub struct Slot {
    pub n: AtomicU32,
    pub remaining: AtomicI64,
    pub max_latency_ns: AtomicU64,
}

impl Board {
    pub fn new(slots: usize) -> Board {
        Board { active: Default::default(), slots: (0..slots).map(|_| Slot::default()).collect() }
    }

    fn arrive(&self, p: Probe, latency_ns: u64) {
        if !self.active.load(Relaxed) {
            return;
        }
        if let Some(slot) = self.slots.get(p.stream as usize) {
            if slot.n.load(Relaxed) == p.n {
                slot.max_latency_ns.fetch_max(latency_ns, Relaxed);
                slot.remaining.fetch_sub(1, Relaxed);
            }
        }
    }
}

enum State {
    Connecting,
    Handshaking {
        accept: String,
        buf: Vec<u8>,
    },
    Open,
    /// We sent a close frame; waiting for the server's, until the deadline.
    Closing {
        deadline_ns: u64,
    },
    /// `restart`: the server went away; connecting again at `due_ns`.
    Waiting {
        due_ns: u64,
    },
}

struct Conn {
    stream: Stream,
    state: State,
    /// Index into [`Setup::targets`].
    target: usize,
    started_ns: u64,
    counted: bool,
    /// Churners leave at this time.
    leave_at_ns: Option<u64>,
    /// Bytes of a frame not yet complete.
    inbuf: Vec<u8>,
    /// A fragmented text message being reassembled.
    frag: Option<Vec<u8>>,
    /// Bytes the socket would not take yet.
    out: Vec<u8>,
    ledger: Ledger,
    /// The server has answered the join (`{"type":"joined"…}`).
    joined: bool,
    /// Counted clients' number (their stream when everyone sends).
    index: u32,
    /// Index into [`Setup::rooms`].
    room: u32,
    /// `--transport sse`: the stream's parser and the POST connection.
    fallback: Option<Box<Fallback>>,
    /// `restart`: what the client needs to come back (counted clients only).
    resume: Option<Box<Resume>>,
    /// `restart`: the socket of a connect again, until it connects; then it becomes
    /// `stream` (TLS starting only then).
    dialing: Option<mio::net::TcpStream>,
}

struct SendPlan {
    /// (client slot, stream, next n)
    senders: Vec<(usize, u32, u32)>,
    interval_ns: u64,
    next_ns: u64,
    until_ns: u64,
    turn: usize,
}

struct ConnectPlan {
    remaining: u32,
    interval_ns: u64,
    next_ns: u64,
    counted: bool,
    life_ms: Option<(u64, u64)>,
}

/// Per-worker state other than the connections, borrowed beside them.
struct Ctx {
    stats: Stats,
    setup: Arc<Setup>,
    rng: u64,
    /// Sending phase, part of every message id.
    epoch: u32,
    /// Probes sent before this (process clock) belong to an earlier
    /// measurement: late stragglers, counted apart.
    phase_start_ns: u64,
    text: String,
    /// Probes sent per room since the last `ResetLedgers`.
    room_sent: Vec<u64>,
    /// The worker's poll, for connections opened while handling others.
    registry: Registry,
    /// `restart`: probes the server acked, (room, stream, n).
    acked: Vec<(u32, u32, u32)>,
    /// Inflates compressed server messages (permessage-deflate).
    inflate: ws::Inflate,
}

pub struct Worker {
    index: usize,
    threads: usize,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Slots with reads left over from a bounded wake-up.
    again: Vec<usize>,
    /// Handshake deadlines in connect order: (deadline, slot).
    deadlines: VecDeque<(u64, usize)>,
    /// `restart`: clients waiting to connect again, soonest first: (due, slot).
    waiting: BinaryHeap<Reverse<(u64, usize)>>,
    /// Connects started and not yet open or failed.
    in_flight: usize,
    opened: u64,
    last_sweep_ns: u64,
    connect: Vec<ConnectPlan>,
    send: Option<SendPlan>,
    rx: Receiver<Cmd>,
    readbuf: Box<[u8]>,
    ctx: Ctx,
    cpu_start: Duration,
}

/// Start worker `index` of `threads`; returns its command sender and waker.
pub fn spawn(
    index: usize,
    threads: usize,
    setup: Arc<Setup>,
) -> std::io::Result<(Sender<Cmd>, Arc<Waker>, std::thread::JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let registry = poll.registry().try_clone()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    let seed = now_ns() ^ ((index as u64 + 1) << 40) | 1;
    let mut worker = Worker {
        index,
        threads,
        poll,
        conns: Vec::new(),
        free: Vec::new(),
        again: Vec::new(),
        deadlines: VecDeque::new(),
        waiting: BinaryHeap::new(),
        in_flight: 0,
        opened: 0,
        last_sweep_ns: 0,
        connect: Vec::new(),
        send: None,
        rx,
        readbuf: vec![0u8; 64 * 1024].into_boxed_slice(),
        ctx: Ctx {
            stats: Stats::default(),
            setup,
            rng: seed,
            epoch: 0,
            phase_start_ns: 0,
            text: String::new(),
            room_sent: Vec::new(),
            registry,
            acked: Vec::new(),
            inflate: ws::Inflate::default(),
        },
        cpu_start: Duration::ZERO,
    };
    let handle = std::thread::Builder::new().name(format!("lt-worker-{index}")).spawn(move || worker.run())?;
    Ok((tx, waker, handle))
}

impl Ctx {
    fn random(&mut self) -> u64 {
        // xorshift64*: masks and choices need speed, not secrecy.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545F4914F6CDD1D)
    }

    fn mask(&mut self) -> [u8; 4] {
        (self.random() as u32).to_ne_bytes()
    }

    fn progress(&self) -> &Progress {
        &self.setup.progress
    }
}

impl Worker {
    fn run(&mut self) {
        self.cpu_start = thread_cpu();
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    eprintln!("worker {}: poll failed: {e}", self.index);
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let slot = ev.token().0;
                if slot & POST_BIT != 0 {
                    self.on_post_event(slot & !POST_BIT, ev);
                    continue;
                }
                if ev.is_writable() || ev.is_write_closed() {
                    self.on_writable(slot);
                }
                let closing = ev.is_read_closed() || ev.is_error();
                if ev.is_readable() || closing {
                    self.on_readable(slot, closing);
                }
            }
            for slot in std::mem::take(&mut self.again) {
                self.on_readable(slot, true);
            }
            while let Ok(cmd) = self.rx.try_recv() {
                if !self.command(cmd) {
                    self.close_all();
                    return;
                }
            }
            let now = now_ns();
            self.run_connects(now);
            self.run_reconnects(now);
            self.run_sends(now);
            self.expire(now);
        }
    }

    fn next_timeout(&self) -> Duration {
        if !self.again.is_empty() {
            return Duration::ZERO;
        }
        let now = now_ns();
        let mut next = now + 20_000_000;
        if let Some(p) = &self.send {
            next = next.min(p.next_ns);
        }
        // With the in-flight bound reached, the next connect waits for a
        // handshake to finish (an event), not for the clock: no busy loop.
        if self.in_flight < MAX_PENDING {
            for c in &self.connect {
                next = next.min(c.next_ns);
            }
            if let Some(Reverse((due, _))) = self.waiting.peek() {
                next = next.min(*due);
            }
        }
        Duration::from_nanos(next.saturating_sub(now))
    }

    /// Handle one command; false means stop.
    fn command(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Connect { count, per_s, counted, life_ms } => {
                let interval_ns = if per_s > 0.0 { (1e9 / per_s) as u64 } else { 0 };
                self.connect.push(ConnectPlan { remaining: count, interval_ns, next_ns: now_ns(), counted, life_ms });
            }
            Cmd::Send { streams, per_s, until_ns, epoch } => {
                self.ctx.epoch = epoch;
                self.plan_sends(streams, per_s, until_ns)
            }
            Cmd::Broadcast(probe) => self.broadcast(probe),
            Cmd::ResetLedgers => {
                self.ctx.phase_start_ns = now_ns();
                self.ctx.room_sent.clear();
                self.ctx.acked.clear();
                for c in self.conns.iter_mut().flatten() {
                    c.ledger.clear();
                }
            }
            Cmd::Sync(reply) => {
                self.run_sends(now_ns());
                let _ = reply.send(());
            }
            Cmd::CloseAll => self.close_all(),
            Cmd::Snapshot(reply) => {
                let mut stats = std::mem::take(&mut self.ctx.stats);
                let cpu = thread_cpu();
                stats.cpu = cpu.saturating_sub(self.cpu_start);
                self.cpu_start = cpu;
                stats.gaps_forgotten = self.conns.iter().flatten().map(|c| c.ledger.gaps_forgotten).sum();
                let _ = reply.send(stats);
            }
            Cmd::Census(reply) => {
                let mut members = vec![0; self.ctx.setup.rooms.len()];
                for c in self.conns.iter().flatten().filter(|c| c.counted && matches!(c.state, State::Open)) {
                    members[c.room as usize] += 1;
                }
                let mut sent = self.ctx.room_sent.clone();
                sent.resize(members.len(), 0);
                let _ = reply.send(Census { members, sent });
            }
            Cmd::Acked(reply) => {
                let _ = reply.send(self.ctx.acked.clone());
            }
            Cmd::Audit(acked, reply) => {
                let (mut checked, mut missing) = (0, 0);
                for c in self.conns.iter().flatten().filter(|c| c.counted) {
                    for &(stream, n) in acked.get(c.room as usize).map_or(&[][..], |v| &v[..]) {
                        checked += 1;
                        missing += u64::from(!c.ledger.has(stream, n));
                    }
                }
                let _ = reply.send((checked, missing));
            }
            Cmd::Stop => return false,
        }
        true
    }

    fn plan_sends(&mut self, streams: Option<Vec<u32>>, per_s: f64, until_ns: u64) {
        let open: Vec<usize> = self
            .conns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Some(c) if c.counted && matches!(c.state, State::Open)))
            .map(|(i, _)| i)
            .collect();
        let senders: Vec<(usize, u32, u32)> = match streams {
            Some(streams) if !open.is_empty() => {
                streams.iter().enumerate().map(|(k, &s)| (open[k % open.len()], s, 1)).collect()
            }
            Some(_) => Vec::new(),
            None => open.iter().filter_map(|&i| Some((i, self.conns[i].as_ref()?.index, 1))).collect(),
        };
        if senders.is_empty() || per_s <= 0.0 {
            self.send = None;
            return;
        }
        let interval_ns = (1e9 / per_s).max(1.0) as u64;
        self.send = Some(SendPlan { senders, interval_ns, next_ns: now_ns(), until_ns, turn: 0 });
    }

    fn run_sends(&mut self, now: u64) {
        let Some(plan) = self.send.as_mut() else {
            return;
        };
        let mut budget = SENDS_PER_TICK;
        while plan.next_ns <= now && plan.next_ns < plan.until_ns && budget > 0 {
            budget -= 1;
            plan.next_ns += plan.interval_ns;
            let k = plan.turn % plan.senders.len();
            plan.turn += 1;
            let (slot, stream, n) = plan.senders[k];
            plan.senders[k].2 += 1;
            let probe = Probe { stream, n, send_ns: 0 };
            send_probe(&mut self.conns, slot, probe, &mut self.ctx);
        }
        if plan.next_ns >= plan.until_ns {
            self.send = None;
        } else if plan.next_ns + 1_000_000_000 < now {
            // More than a second behind: drop the backlog rather than burst,
            // and say so — the tester, not the server, fell short.
            self.ctx.stats.send_behind += (now - plan.next_ns) / plan.interval_ns;
            plan.next_ns = now;
        }
    }

    fn broadcast(&mut self, probe: Probe) {
        let open: Vec<usize> = (0..self.conns.len())
            .filter(|&i| matches!(&self.conns[i], Some(c) if c.counted && matches!(c.state, State::Open)))
            .collect();
        if open.is_empty() {
            self.ctx.stats.send_skipped += 1;
            return;
        }
        let slot = open[(self.ctx.random() % open.len() as u64) as usize];
        send_probe(&mut self.conns, slot, probe, &mut self.ctx);
    }

    fn run_connects(&mut self, now: u64) {
        let mut plans = std::mem::take(&mut self.connect);
        for plan in plans.iter_mut() {
            while plan.remaining > 0 && plan.next_ns <= now && self.in_flight < MAX_PENDING {
                plan.remaining -= 1;
                plan.next_ns = if plan.interval_ns == 0 { now } else { plan.next_ns + plan.interval_ns };
                let life = plan.life_ms.map(|(lo, hi)| lo + self.ctx.random() % (hi - lo + 1));
                self.open_one(plan.counted, life);
            }
        }
        plans.retain(|p| p.remaining > 0);
        self.connect.append(&mut plans);
    }

    fn open_one(&mut self, counted: bool, life_ms: Option<u64>) {
        let targets = &self.ctx.setup.targets;
        let target_index = (self.index + self.opened as usize * self.threads) % targets.len();
        let target = &targets[target_index];
        self.opened += 1;
        self.ctx.stats.connect_attempts += 1;
        let now = now_ns();
        let resume = (self.ctx.setup.resume && counted)
            .then(|| Box::new(Resume::new(target.tls.as_ref().map(tls::Client::with_own_sessions))));
        let tls = resume.as_ref().map_or(target.tls.as_ref(), |r| r.tls.as_ref());
        let mut stream = match Stream::connect(target.addr, tls) {
            Ok(s) => s,
            Err(e) => return self.fail_connect(None, &format!("connect: {}", e.kind())),
        };
        let setup = &self.ctx.setup;
        let index = if counted { setup.next_index.fetch_add(1, Relaxed) } else { 0 };
        let room = room_of(index, setup.rooms.len());
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
        {
            self.free.push(slot);
            return self.fail_connect(None, &format!("register: {e}"));
        }
        self.conns[slot] = Some(Conn {
            stream,
            state: State::Connecting,
            target: target_index,
            started_ns: now,
            counted,
            leave_at_ns: life_ms.map(|ms| now + ms * 1_000_000),
            inbuf: Vec::new(),
            frag: None,
            out: Vec::new(),
            ledger: Ledger::default(),
            joined: false,
            index,
            room,
            fallback: (setup.transport == Transport::Sse).then(|| Box::new(Fallback::new(slot))),
            resume,
            dialing: None,
        });
        self.deadlines.push_back((now + HANDSHAKE_TIMEOUT_NS, slot));
        self.in_flight += 1;
        Progress::add(&self.ctx.progress().pending, 1);
    }

    fn fail_connect(&mut self, slot: Option<usize>, reason: &str) {
        tally(&mut self.ctx.stats.connect_failed, reason);
        if let Some(slot) = slot {
            self.in_flight -= 1;
            Progress::sub(&self.ctx.progress().pending, 1);
            if self.is_away(slot) {
                // A client coming back tries again (the server may still be starting).
                return self.wait(slot);
            }
            self.drop_conn(slot);
        }
        Progress::add(&self.ctx.progress().failed, 1);
    }

    /// A counted client of a `restart` run whose server went away.
    fn is_away(&self, slot: usize) -> bool {
        matches!(&self.conns[slot], Some(c) if c.resume.as_ref().is_some_and(|r| r.away_since_ns.is_some()))
    }

    /// The server ended an open `restart` client: it waits its backoff and comes back.
    fn go_away(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let Some(resume) = conn.resume.as_mut() else {
            return;
        };
        resume.away_since_ns = Some(now_ns());
        resume.attempt = 0;
        resume.awaiting_history = false;
        Progress::sub(&self.ctx.setup.progress.open, 1);
        Progress::add(&self.ctx.setup.progress.away, 1);
        self.wait(slot);
    }

    /// Park `slot` until its next connect is due.
    fn wait(&mut self, slot: usize) {
        let random = self.ctx.random();
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        let _ = conn.stream.shutdown(std::net::Shutdown::Both);
        if let Some(mut d) = conn.dialing.take() {
            let _ = self.poll.registry().deregister(&mut d);
        }
        let delay = conn.resume.as_mut().map_or(0, |r| r.next_delay_ns(random));
        let due_ns = now_ns() + delay;
        conn.state = State::Waiting { due_ns };
        (conn.inbuf, conn.frag, conn.out) = (Vec::new(), None, Vec::new());
        self.waiting.push(Reverse((due_ns, slot)));
    }

    /// Connect again every waiting client whose time has come.
    fn run_reconnects(&mut self, now: u64) {
        while self.in_flight < MAX_PENDING {
            match self.waiting.peek() {
                Some(Reverse((due, _))) if *due <= now => {}
                _ => return,
            }
            let Some(Reverse((due, slot))) = self.waiting.pop() else {
                return;
            };
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            if !matches!(conn.state, State::Waiting { due_ns } if due_ns == due) {
                continue; // a stale entry: the slot moved on
            }
            self.ctx.stats.connect_attempts += 1;
            let target = &self.ctx.setup.targets[conn.target];
            let dialing = mio::net::TcpStream::connect(target.addr).and_then(|mut s| {
                self.poll.registry().register(&mut s, Token(slot), Interest::READABLE | Interest::WRITABLE)?;
                Ok(s)
            });
            match dialing {
                Ok(s) => {
                    conn.dialing = Some(s);
                    conn.state = State::Connecting;
                    conn.started_ns = now;
                    self.deadlines.push_back((now + HANDSHAKE_TIMEOUT_NS, slot));
                    self.in_flight += 1;
                    Progress::add(&self.ctx.progress().pending, 1);
                }
                Err(e) => {
                    tally(&mut self.ctx.stats.connect_failed, &format!("connect: {}", e.kind()));
                    self.wait(slot);
                }
            }
        }
    }

    fn drop_conn(&mut self, slot: usize) {
        if let Some(mut c) = self.conns[slot].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
            if let Some(mut d) = c.dialing.take() {
                let _ = self.poll.registry().deregister(&mut d);
            }
            if let Some(f) = c.fallback.as_mut() {
                f.close(self.poll.registry());
            }
            if matches!(c.state, State::Open) {
                let open = if c.counted { &self.ctx.progress().open } else { &self.ctx.progress().open_uncounted };
                Progress::sub(open, 1);
            }
            self.free.push(slot);
        }
    }

    fn on_writable(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if let Some(tcp) = conn.dialing.as_ref() {
            // Connecting again (`restart`): the stream is made once the socket connects.
            match tcp.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.fail_connect(Some(slot), &format!("connect: {}", e.kind())),
            }
            if tcp.peer_addr().is_err() {
                return; // not connected yet
            }
            let tcp = conn.dialing.take().expect("checked above");
            match Stream::over(tcp, conn.resume.as_ref().and_then(|r| r.tls.as_ref())) {
                Ok(s) => conn.stream = s,
                Err(e) => return self.fail_connect(Some(slot), &format!("tls: {e}")),
            }
        }
        if matches!(conn.state, State::Connecting) {
            match conn.stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.fail_connect(Some(slot), &format!("connect: {}", e.kind())),
            }
            if conn.stream.peer_addr().is_err() {
                return; // not connected yet
            }

            let target = &self.ctx.setup.targets[conn.target];
            let (request, accept) = match conn.fallback {
                Some(_) => (crate::sse::stream_request(target), String::new()),
                None => target.upgrade_request(self.ctx.setup.deflate),
            };
            conn.out.extend_from_slice(&request);
            conn.state = State::Handshaking { accept, buf: Vec::new() };
        }
        if let Err(e) = flush(conn) {
            self.lost(slot, &format!("write: {}", e.kind()));
        }
    }

    /// Read what the socket holds. A read shorter than the buffer emptied
    /// the socket's queue, and any later byte raises a new edge, so that
    /// read is the last — unless the peer also hung up (`closing`), whose
    /// FIN raises no new edge of its own: then read on to the EOF. This
    /// halves the tester's read calls when each wake-up brings one frame.
    fn on_readable(&mut self, slot: usize, closing: bool) {
        if self.conns[slot].as_ref().is_some_and(|c| c.dialing.is_some()) {
            return self.on_writable(slot); // a connect again that failed, or is done
        }
        for _ in 0..READS_PER_WAKE {
            let Some(conn) = self.conns[slot].as_mut() else {
                return;
            };
            if self.ctx.setup.delayed_acks {
                defer_next_ack(&conn.stream);
            }
            let n = match conn.stream.read(&mut self.readbuf) {
                Ok(0) => return self.lost(slot, "eof"),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => return self.lost(slot, &format!("read: {}", tls::reason(&e))),
            };
            let arrival = now_ns();
            if let Err(why) = self.absorb(slot, n, arrival) {
                return self.lost(slot, &why);
            }
            let pending = self.conns[slot].as_ref().is_some_and(|c| c.stream.pending());
            if n < self.readbuf.len() && !closing && !pending {
                return;
            }
        }
        self.again.push(slot);
    }

    /// Take `n` fresh bytes from the read buffer into connection `slot`.
    fn absorb(&mut self, slot: usize, n: usize, arrival: u64) -> Result<(), String> {
        let conn = self.conns[slot].as_mut().expect("slot is live");
        let bytes = &self.readbuf[..n];
        if let State::Handshaking { accept, buf } = &mut conn.state {
            buf.extend_from_slice(bytes);
            let verdict = match conn.fallback.as_deref_mut() {
                Some(f) => f.check_head(buf),
                None => check_upgrade(buf, accept),
            };
            match verdict {
                Upgrade::Partial => return Ok(()),
                Upgrade::Refused(status) => {
                    let reason = format!("refused: {status}");
                    self.fail_connect(Some(slot), &reason);
                    return Ok(());
                }
                Upgrade::Done(at) => {
                    conn.inbuf = buf.split_off(at);
                    conn.state = State::Open;
                    self.ctx.stats.connected += 1;
                    self.ctx.stats.connect_us.saturating_record(((arrival - conn.started_ns) / 1000).max(1));
                    let p = self.ctx.progress();
                    Progress::sub(&p.pending, 1);
                    self.in_flight -= 1;
                    Progress::add(if conn.counted { &p.open } else { &p.open_uncounted }, 1);
                    let back = conn.resume.as_mut().filter(|r| r.away_since_ns.is_some()).map(|r| {
                        // Back after the server went away: resume from the last seq seen.
                        r.awaiting_history = true;
                        r.join(&self.ctx.setup.rooms[conn.room as usize])
                    });
                    if back.is_none() && conn.counted {
                        Progress::add(&p.opened, 1);
                    }
                    if let Some(join) = back {
                        self.ctx.stats.tls_resumed += u64::from(conn.stream.resumed() == Some(true));
                        send_text(conn, &join, &mut self.ctx);
                    } else if self.ctx.setup.engine_io {
                        // Socket.IO's connect to the default namespace; the join waits for its answer.
                        send_frame(conn, ws::OP_TEXT, b"40", &mut self.ctx);
                    } else {
                        send_join(conn, &mut self.ctx);
                    }
                    let rest = std::mem::take(&mut conn.inbuf);
                    return frames(conn, &rest, arrival, &mut self.ctx);
                }
            }
        }
        if matches!(conn.state, State::Connecting) {
            return Ok(());
        }
        if conn.inbuf.is_empty() {
            frames(conn, bytes, arrival, &mut self.ctx)
        } else {
            let mut buf = std::mem::take(&mut conn.inbuf);
            buf.extend_from_slice(bytes);
            frames(conn, &buf, arrival, &mut self.ctx)
        }
    }

    /// A connection ended without our asking (or we finished closing).
    fn lost(&mut self, slot: usize, why: &str) {
        let Some(conn) = self.conns[slot].as_ref() else {
            return;
        };
        if matches!(conn.state, State::Waiting { .. }) {
            return; // an event of the socket it had before it went away
        }
        if conn.resume.is_some() && matches!(conn.state, State::Open) {
            tally(&mut self.ctx.stats.dropped, why);
            return self.go_away(slot);
        }
        match conn.state {
            State::Connecting | State::Handshaking { .. } => return self.fail_connect(Some(slot), why),
            State::Open if why != "closed" => tally(&mut self.ctx.stats.dropped, why),
            _ => {}
        }
        self.drop_conn(slot);
    }

    /// Handshake timeouts, churners whose time is up, closes that linger.
    fn expire(&mut self, now: u64) {
        while let Some(&(deadline, slot)) = self.deadlines.front() {
            let still_pending = matches!(&self.conns[slot], Some(c) if matches!(c.state, State::Connecting | State::Handshaking { .. }) && c.started_ns + HANDSHAKE_TIMEOUT_NS == deadline);
            if still_pending && deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if still_pending {
                self.fail_connect(Some(slot), "handshake timeout");
            }
        }
        // Lingering closes and leaving churners are found by a sweep every 100 ms.
        if now < self.last_sweep_ns + 100_000_000 {
            return;
        }
        self.last_sweep_ns = now;
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            match conn.state {
                State::Closing { deadline_ns } if deadline_ns <= now => self.lost(slot, "closed"),
                State::Open if conn.leave_at_ns.is_some_and(|t| t <= now) => {
                    start_close(conn, &mut self.ctx);
                    if !conn.counted {
                        Progress::sub(&self.ctx.progress().open_uncounted, 1);
                    }
                }
                _ => {}
            }
        }
    }

    fn close_all(&mut self) {
        self.send = None;
        self.connect.clear();
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_mut() else {
                continue;
            };
            match conn.state {
                State::Open => {
                    let open = if conn.counted {
                        &self.ctx.setup.progress.open
                    } else {
                        &self.ctx.setup.progress.open_uncounted
                    };
                    Progress::sub(open, 1);
                    start_close(conn, &mut self.ctx);
                }
                State::Closing { .. } => {}
                State::Waiting { .. } => {
                    Progress::sub(&self.ctx.setup.progress.away, 1);
                    self.drop_conn(slot);
                }
                _ => self.fail_connect(Some(slot), "closed before open"),
            }
        }
    }
}

/// Writes as much of `out` as `w` takes without blocking, draining what went.
fn write_out(w: &mut impl Write, out: &mut Vec<u8>) -> std::io::Result<()> {
    while !out.is_empty() {
        match w.write(out) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                out.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write as much of the backlog as the socket takes.
fn flush(conn: &mut Conn) -> std::io::Result<()> {
    conn.stream.flush()?; // TLS records sealed earlier, waiting for room
    write_out(&mut conn.stream, &mut conn.out)?;
    if conn.out.capacity() > 4096 {
        conn.out = Vec::new();
    }
    Ok(())
}

/// Queue a masked frame and push it out.
fn send_frame(conn: &mut Conn, opcode: u8, payload: &[u8], ctx: &mut Ctx) {
    let mask = ctx.mask();
    ws::encode_masked(&mut conn.out, opcode, payload, mask);
    if let Err(e) = flush(conn) {
        tally(&mut ctx.stats.dropped, &format!("write: {}", e.kind()));
        conn.out.clear();
    }
}

fn start_close(conn: &mut Conn, ctx: &mut Ctx) {
    if conn.fallback.is_some() {
        return fallback::hang_up(conn);
    }
    send_frame(conn, ws::OP_CLOSE, &1000u16.to_be_bytes(), ctx);
    conn.state = State::Closing { deadline_ns: now_ns() + CLOSE_GRACE_NS };
}

fn send_probe(conns: &mut [Option<Conn>], slot: usize, mut probe: Probe, ctx: &mut Ctx) {
    let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
        ctx.stats.send_skipped += 1;
        return;
    };
    let backlog = conn.out.len().saturating_add(conn.fallback.as_ref().map_or(0, |f| f.backlog()));
    if !matches!(conn.state, State::Open) || backlog > MAX_BACKLOG {
        ctx.stats.send_skipped += 1;
        return;
    }
    probe.send_ns = now_ns();
    let mut text = std::mem::take(&mut ctx.text);
    let setup = Arc::clone(&ctx.setup);
    setup.template.fill(&mut text, probe, setup.run_id, ctx.epoch, &setup.rooms[conn.room as usize]);
    send_text(conn, &text, ctx);
    ctx.text = text;
    ctx.stats.sent += 1;
    let room = conn.room as usize;
    if ctx.room_sent.len() <= room {
        ctx.room_sent.resize(room + 1, 0);
    }
    ctx.room_sent[room] += 1;
    Progress::add(&ctx.progress().sent, 1);
}

/// Send the join frame for the client's room, if the server has joins;
/// without one the client counts as joined at once.
fn send_join(conn: &mut Conn, ctx: &mut Ctx) {
    let setup = Arc::clone(&ctx.setup);
    let Some(join) = &setup.join else {
        return;
    };
    let mut text = String::new();
    join.fill(&mut text, Probe { stream: 0, n: 0, send_ns: 0 }, setup.run_id, 0, &setup.rooms[conn.room as usize]);
    send_text(conn, &text, ctx);
}

/// One client message: a text frame, or over the fallback a POST.
fn send_text(conn: &mut Conn, text: &str, ctx: &mut Ctx) {
    match conn.fallback.as_deref_mut() {
        Some(f) => f.post(text.as_bytes(), &Arc::clone(&ctx.setup).targets[conn.target], ctx),
        None => send_frame(conn, ws::OP_TEXT, text.as_bytes(), ctx),
    }
}

/// Engine.IO's own packets inside a text frame: true if `payload` was one
/// (and is handled), false for a Socket.IO event (`42…`) or anything else.
fn engine_io_packet(conn: &mut Conn, payload: &[u8], ctx: &mut Ctx) -> bool {
    match payload {
        b"2" => {
            ctx.stats.pings += 1;
            send_frame(conn, ws::OP_TEXT, b"3", ctx);
        }
        [b'4', b'0', ..] => send_join(conn, ctx),
        [b'4', b'1', ..] => tally(&mut ctx.stats.server_closes, "socket.io disconnect"),
        [b'4', b'4', ..] => tally(&mut ctx.stats.server_errors, "socket.io connect_error"),
        [b'0', ..] | [b'6', ..] => {} // open, noop
        [b'1', ..] => tally(&mut ctx.stats.server_closes, "engine.io close"),
        _ => return false,
    }
    true
}

/// Decode every whole frame in `bytes`; keep the partial tail in the
/// connection.
fn frames(conn: &mut Conn, bytes: &[u8], arrival: u64, ctx: &mut Ctx) -> Result<(), String> {
    if conn.fallback.is_some() {
        return fallback::events(conn, bytes, arrival, ctx);
    }
    let mut at = 0;
    while at < bytes.len() {
        match decode(&bytes[at..], MAX_FRAME, ctx.setup.deflate) {
            Decoded::Partial => break,
            Decoded::Violation(why) => {
                tally(&mut ctx.stats.violations, why);
                return Err(format!("violation: {why}"));
            }
            Decoded::Frame(f, used) => {
                at += used;
                on_frame(conn, f, arrival, ctx)?;
            }
        }
    }
    conn.inbuf.clear();
    conn.inbuf.extend_from_slice(&bytes[at..]);
    if conn.inbuf.is_empty() && conn.inbuf.capacity() > 0 {
        conn.inbuf = Vec::new();
    }
    Ok(())
}

fn on_frame(conn: &mut Conn, f: ws::Frame, arrival: u64, ctx: &mut Ctx) -> Result<(), String> {
    if f.compressed {
        // natter compresses whole messages and never fragments them.
        if !f.fin {
            tally(&mut ctx.stats.violations, "fragmented compressed message");
            return Err("violation: fragmented compressed message".into());
        }
        let plain = ctx.inflate.message(f.payload, MAX_FRAME)?;
        if f.opcode == ws::OP_TEXT {
            on_text(conn, &plain, arrival, ctx);
        } else {
            ctx.stats.binary += 1;
        }
        return Ok(());
    }
    match f.opcode {
        ws::OP_TEXT if f.fin => on_text(conn, f.payload, arrival, ctx),
        ws::OP_TEXT => conn.frag = Some(f.payload.to_vec()),
        ws::OP_CONT => {
            let Some(buf) = conn.frag.as_mut() else {
                tally(&mut ctx.stats.violations, "continuation without start");
                return Err("violation: continuation without start".into());
            };
            buf.extend_from_slice(f.payload);
            if buf.len() > MAX_FRAME {
                return Err("message over the size limit".into());
            }
            if f.fin {
                let whole = conn.frag.take().expect("checked above");
                on_text(conn, &whole, arrival, ctx);
            }
        }
        ws::OP_BINARY => ctx.stats.binary += 1,
        ws::OP_PING => {
            ctx.stats.pings += 1;
            send_frame(conn, ws::OP_PONG, f.payload, ctx);
        }
        ws::OP_PONG => {}
        ws::OP_CLOSE => {
            let code = f.payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            let reason = String::from_utf8_lossy(f.payload.get(2..).unwrap_or(&[]));
            if matches!(conn.state, State::Open) {
                let key = match code {
                    Some(c) => format!("{c} {reason}").trim_end().to_string(),
                    None => "no code".into(),
                };
                tally(&mut ctx.stats.server_closes, &key);
                // Echo the code, as RFC 6455 §5.5.1 asks.
                let echo = code.map(u16::to_be_bytes);
                send_frame(conn, ws::OP_CLOSE, echo.as_ref().map_or(&[][..], |c| &c[..]), ctx);
                return Err("closed".into());
            }
            return Err("closed".into());
        }
        _ => {}
    }
    Ok(())
}

fn on_text(conn: &mut Conn, payload: &[u8], arrival: u64, ctx: &mut Ctx) {
    if ctx.setup.engine_io && engine_io_packet(conn, payload, ctx) {
        return;
    }
    if conn.resume.is_some() && resumed_frame(conn, payload, arrival, ctx) {
        return;
    }
    match classify(payload) {
        Seen::Probe(p) => on_probe(conn, p, arrival, ctx),
        Seen::Error(code) => tally(&mut ctx.stats.server_errors, &code),
        Seen::Joined => {
            // Counted once per client, so that sending can wait for every join to be done.
            if !conn.joined && conn.counted {
                conn.joined = true;
                Progress::add(&ctx.progress().joined, 1);
            }
        }
        Seen::Other => {}
        Seen::NotJson => ctx.stats.not_json += 1,
    }
}

fn on_probe(conn: &mut Conn, p: Probe, arrival: u64, ctx: &mut Ctx) {
    if !conn.counted {
        ctx.stats.uncounted += 1;
        return;
    }
    match ctx.setup.filter {
        Filter::Except(w) if p.stream == w => return ctx.stats.witness_probes += 1,
        Filter::Only(w) if p.stream != w => return ctx.stats.foreign += 1,
        _ => {}
    }
    if p.send_ns < ctx.phase_start_ns {
        ctx.stats.stale += 1;
        return;
    }
    let rooms = ctx.setup.rooms.len();
    if rooms > 1 && room_of(p.stream, rooms) != conn.room {
        // Sent in another room: the server leaked it across rooms.
        return ctx.stats.misrouted += 1;
    }
    let latency = arrival.saturating_sub(p.send_ns);
    let arrived = conn.ledger.record(p.stream, p.n);
    {
        let room = conn.room as usize;
        if ctx.stats.rooms.len() <= room {
            ctx.stats.rooms.resize(room + 1, RoomTally::default());
        }
        let t = &mut ctx.stats.rooms[room];
        match arrived {
            Arrival::New => t.delivered += 1,
            Arrival::Late => (t.delivered, t.late) = (t.delivered + 1, t.late + 1),
            Arrival::Duplicate => t.duplicated += 1,
            Arrival::Foreign => {}
        }
    }
    match arrived {
        Arrival::New => ctx.stats.fresh += 1,
        Arrival::Late => ctx.stats.late += 1,
        Arrival::Duplicate => return ctx.stats.duplicates += 1,
        Arrival::Foreign => return ctx.stats.foreign += 1,
    }
    ctx.stats.record_latency(latency, arrival);
    Progress::add(&ctx.progress().delivered, 1);
    ctx.setup.board.arrive(p, latency);
}

/// A `restart` client's view of natter's frames: keep the seq and epoch, note acks,
/// and count a resume's history pages as deliveries. True if the frame is handled.
fn resumed_frame(conn: &mut Conn, payload: &[u8], arrival: u64, ctx: &mut Ctx) -> bool {
    let frame = resume::read(payload);
    let Some(r) = conn.resume.as_mut() else {
        return false;
    };
    match frame {
        Natter::Msg { seq } => r.seq = r.seq.max(seq),
        Natter::Ack { stream, n } => ctx.acked.push((conn.room, stream, n)),
        Natter::Joined { epoch } => r.epoch = epoch.map(String::into_boxed_str).or(r.epoch.take()),
        Natter::History { messages, more, reset } => {
            if !r.awaiting_history {
                return true; // a first join's history: older than the measurement
            }
            if reset {
                ctx.stats.resets += 1;
                r.seq = 0;
            }
            let (mut seq, done) = (r.seq, !more);
            for (s, probe) in messages {
                seq = seq.max(s);
                if let Some(p) = probe {
                    on_probe(conn, p, arrival, ctx);
                }
            }
            let Some(r) = conn.resume.as_mut() else {
                return true;
            };
            r.seq = seq;
            if done {
                r.awaiting_history = false;
                if let Some(away) = r.away_since_ns.take() {
                    ctx.stats.resume_us.saturating_record(((arrival - away) / 1000).max(1));
                    let p = ctx.progress();
                    Progress::sub(&p.away, 1);
                    Progress::add(&p.resumed, 1);
                }
            }
            return true;
        }
        Natter::Other => {}
    }
    false
}
