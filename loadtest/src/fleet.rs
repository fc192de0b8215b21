//! The coordinator's handle on the worker threads: it splits orders
//! (connect, send, broadcast) across them, waits for the shared counters
//! to reach a goal within a time bound while printing the progress line,
//! and gathers their stats into one.

use crate::probe::Probe;
use crate::rooms::Census;
use crate::stats::{Progress, Stats};
use crate::sys::now_ns;
use crate::worker::{self, Board, Cmd, Setup};
use crossbeam_channel::Sender;
use mio::Waker;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Handle {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    join: Option<JoinHandle<()>>,
}

pub struct Fleet {
    workers: Vec<Handle>,
    pub progress: Arc<Progress>,
    pub board: Arc<Board>,
    started: Instant,
    last_line: std::cell::Cell<Instant>,
    last_delivered: std::cell::Cell<u64>,
    /// Sending phases so far.
    epoch: std::cell::Cell<u32>,
    quiet: bool,
}

impl Fleet {
    /// Start `threads` workers sharing `setup`.
    pub fn start(setup: Setup, threads: usize, quiet: bool) -> std::io::Result<Fleet> {
        let progress = Arc::clone(&setup.progress);
        let board = Arc::clone(&setup.board);
        let setup = Arc::new(setup);
        let mut workers = Vec::new();
        for i in 0..threads {
            let (tx, waker, join) = worker::spawn(i, threads, Arc::clone(&setup))?;
            workers.push(Handle { tx, waker, join: Some(join) });
        }
        let now = Instant::now();
        Ok(Fleet {
            workers,
            progress,
            board,
            started: now,
            last_line: std::cell::Cell::new(now),
            last_delivered: std::cell::Cell::new(0),
            epoch: std::cell::Cell::new(0),
            quiet,
        })
    }

    fn tell(&self, w: usize, cmd: Cmd) {
        let h = &self.workers[w];
        if h.tx.send(cmd).is_ok() {
            let _ = h.waker.wake();
        }
    }

    fn tell_all(&self, make: impl Fn() -> Cmd) {
        for w in 0..self.workers.len() {
            self.tell(w, make());
        }
    }

    /// Share of `total` for worker `w`, the remainder going to the first ones.
    fn share(&self, total: u64, w: usize) -> u64 {
        let t = self.workers.len() as u64;
        total / t + u64::from((w as u64) < total % t)
    }

    /// Open `count` more clients at `per_s` in total (0 = as fast as allowed).
    pub fn connect(&self, count: u64, per_s: f64, counted: bool, life_ms: Option<(u64, u64)>) {
        for w in 0..self.workers.len() {
            let n = self.share(count, w);
            let per_s = per_s * n as f64 / count.max(1) as f64;
            self.tell(w, Cmd::Connect { count: n as u32, per_s, counted, life_ms });
        }
    }

    /// Streams `0..senders` send `rate` probes/s in total for `duration`.
    pub fn send(&self, senders: u32, rate: f64, duration: Duration) {
        self.send_streams((0..senders).collect(), rate, duration);
    }

    /// `streams` send `rate` probes/s in total for `duration`, dealt
    /// round-robin over the workers.
    pub fn send_streams(&self, streams: Vec<u32>, rate: f64, duration: Duration) {
        let until_ns = now_ns() + duration.as_nanos() as u64;
        let t = self.workers.len();
        let epoch = self.epoch.get() + 1;
        self.epoch.set(epoch);
        for w in 0..t {
            let mine: Vec<u32> = streams.iter().enumerate().filter(|(k, _)| k % t == w).map(|(_, &s)| s).collect();
            let per_s = rate * mine.len() as f64 / streams.len().max(1) as f64;
            self.tell(w, Cmd::Send { streams: Some(mine), per_s, until_ns, epoch });
        }
    }

    /// Every counted client sends in its own room, `rate` probes/s in total
    /// for `duration` (clients are dealt round-robin, so each worker has an
    /// equal share of them and of the rate).
    pub fn send_from_all(&self, rate: f64, duration: Duration) {
        let until_ns = now_ns() + duration.as_nanos() as u64;
        let epoch = self.epoch.get() + 1;
        self.epoch.set(epoch);
        let per_s = rate / self.workers.len() as f64;
        self.tell_all(|| Cmd::Send { streams: None, per_s, until_ns, epoch });
    }

    /// Members and probes sent per room, over all workers.
    pub fn census(&self) -> Census {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.tell_all(|| Cmd::Census(tx.clone()));
        let mut all = Census::default();
        for _ in 0..self.workers.len() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(c) => all.merge(&c),
                Err(_) => eprintln!("warning: a worker did not answer the census within 10 s"),
            }
        }
        all
    }

    /// `restart`: every probe the server acked since the last `reset_ledgers`, by
    /// room index: (stream, n).
    pub fn acked(&self, rooms: usize) -> Vec<Vec<(u32, u32)>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.tell_all(|| Cmd::Acked(tx.clone()));
        let mut by_room = vec![Vec::new(); rooms.max(1)];
        for _ in 0..self.workers.len() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(acked) => {
                    for (room, stream, n) in acked {
                        if let Some(v) = by_room.get_mut(room as usize) {
                            v.push((stream, n));
                        }
                    }
                }
                Err(_) => eprintln!("warning: a worker did not answer with its acks within 10 s"),
            }
        }
        by_room
    }

    /// `restart`: (checked, missing) over every counted client: each probe acked
    /// in its room that its ledger does not hold is missing.
    pub fn audit(&self, acked: Vec<Vec<(u32, u32)>>) -> (u64, u64) {
        let acked = Arc::new(acked);
        let (tx, rx) = crossbeam_channel::unbounded();
        self.tell_all(|| Cmd::Audit(Arc::clone(&acked), tx.clone()));
        let (mut checked, mut missing) = (0, 0);
        for _ in 0..self.workers.len() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((c, m)) => (checked, missing) = (checked + c, missing + m),
                Err(_) => eprintln!("warning: a worker did not answer the audit within 30 s"),
            }
        }
        (checked, missing)
    }

    /// One probe from a random client of a random worker.
    pub fn broadcast(&self, probe: Probe, pick: u64) {
        self.tell((pick % self.workers.len() as u64) as usize, Cmd::Broadcast(probe));
    }

    pub fn reset_ledgers(&self) {
        self.tell_all(|| Cmd::ResetLedgers);
    }

    pub fn close_all(&self) {
        self.tell_all(|| Cmd::CloseAll);
    }

    /// Wait (at most 10 s) until every worker has sent what is due.
    pub fn sync(&self) {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.tell_all(|| Cmd::Sync(tx.clone()));
        for _ in 0..self.workers.len() {
            if rx.recv_timeout(Duration::from_secs(10)).is_err() {
                eprintln!("warning: a worker did not answer within 10 s");
            }
        }
    }

    /// Everything measured since the last snapshot, merged over workers.
    pub fn snapshot(&self) -> Stats {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.tell_all(|| Cmd::Snapshot(tx.clone()));
        let mut all = Stats::default();
        for _ in 0..self.workers.len() {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(s) => all.merge(&s),
                Err(_) => eprintln!("warning: a worker did not answer the snapshot within 10 s"),
            }
        }
        all
    }

    /// Print the progress line to stderr if a second has passed.
    pub fn tick(&self, phase: &str) {
        let now = Instant::now();
        if self.quiet || now.duration_since(self.last_line.get()) < Duration::from_secs(1) {
            return;
        }
        let p = &self.progress;
        let delivered = Progress::get(&p.delivered);
        let rate =
            (delivered - self.last_delivered.get()) as f64 / now.duration_since(self.last_line.get()).as_secs_f64();
        self.last_line.set(now);
        self.last_delivered.set(delivered);
        eprintln!(
            "[{:6.1}s] {phase}: open {} (+{} churning, {} pending, {} failed)  sent {}  delivered {} ({:.0}/s)",
            self.started.elapsed().as_secs_f64(),
            Progress::get(&p.open),
            Progress::get(&p.open_uncounted),
            Progress::get(&p.pending),
            Progress::get(&p.failed),
            Progress::get(&p.sent),
            delivered,
            rate,
        );
    }

    /// Wait, ticking, until `done()` or `limit` has passed; true if done.
    pub fn wait_until(&self, phase: &str, limit: Duration, mut done: impl FnMut(&Progress) -> bool) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if done(&self.progress) {
                return true;
            }
            self.tick(phase);
            std::thread::sleep(Duration::from_millis(2));
        }
        done(&self.progress)
    }

    /// Wait until every client opened so far has had its join answered (`joined`), or
    /// `limit`. For servers with rooms: sending before the joins are done would count
    /// messages as lost that the late joiners get in their history instead.
    pub fn await_joined(&self, phase: &str, limit: Duration) {
        self.wait_until(phase, limit, |p| Progress::get(&p.joined) >= Progress::get(&p.opened));
    }

    /// Sleep `d`, ticking.
    pub fn hold(&self, phase: &str, d: Duration) {
        self.wait_until(phase, d, |_| false);
    }

    /// Open `count` more counted clients at `per_s` and wait until each has
    /// either opened or failed, or `limit`. Returns the time taken.
    pub fn open(&self, phase: &str, count: u64, per_s: f64, limit: Duration) -> Duration {
        let opened0 = Progress::get(&self.progress.opened);
        let failed0 = Progress::get(&self.progress.failed);
        let t0 = Instant::now();
        self.connect(count, per_s, true, None);
        self.wait_until(phase, limit, |p| {
            let opened = Progress::get(&p.opened) - opened0;
            opened >= count || (Progress::get(&p.pending) == 0 && opened + Progress::get(&p.failed) - failed0 >= count)
        });
        t0.elapsed()
    }

    /// After sending stops: wait until `expected` unique deliveries arrived
    /// (counting from `base`) or nothing arrived for `quiet`, within `limit`.
    pub fn drain(&self, phase: &str, base: u64, expected: u64, quiet: Duration, limit: Duration) {
        let mut last = Progress::get(&self.progress.delivered);
        let mut last_change = Instant::now();
        self.wait_until(phase, limit, |p| {
            let d = Progress::get(&p.delivered);
            if d != last {
                last = d;
                last_change = Instant::now();
            }
            d - base >= expected || last_change.elapsed() >= quiet
        });
    }

    /// Close every client, give the closes a moment, stop the workers.
    pub fn stop(mut self) {
        self.close_all();
        // Let the servers' close frames come back before the sockets go.
        std::thread::sleep(Duration::from_millis(500));
        self.tell_all(|| Cmd::Stop);
        for h in &mut self.workers {
            if let Some(j) = h.join.take() {
                let _ = j.join();
            }
        }
    }
}
