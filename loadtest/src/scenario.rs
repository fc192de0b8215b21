//! The scenarios: each drives a [`Fleet`] through its phases and returns an
//! [`Outcome`] — the measured stats plus what only that scenario knows
//! (steps of a ramp, memory per idle connection, the shootout's largest
//! passing client count, every room's accounting), with what the witness
//! measured meanwhile. `restart` lives in its own file (`scenario/restart.rs`).

use crate::cli::{Args, Scenario};
use crate::fleet::Fleet;
use crate::probe::Probe;
use crate::rooms::{self, Census, RoomReport};
use crate::scrollback::{self, PageStats, Pagers};
use crate::stats::{latency_histogram, ms, Progress, Stats, TICK_NS};
use crate::sys::{cgroup_memory_current, kernel_mem, now_ns, rss_kib, thread_count, KernelMem};
use crate::witness::{self, Witness};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

mod restart;

/// `steady --pagers`: seconds of unmeasured sending before the run without pagers.
const WARM_UP_SECS: f64 = 5.0;

/// What a run found.
pub struct Outcome {
    pub scenario: Scenario,
    pub clients: u64,
    /// Stats of the measured phase (connects included).
    pub stats: Stats,
    /// Counted clients open when sending started.
    pub receivers: u64,
    /// Unique deliveries that should have arrived.
    pub expected: u64,
    /// Process-clock window of the sending, ns.
    pub window: (u64, u64),
    /// Seconds from the first connect to all open.
    pub connect_secs: f64,
    /// Server VmRSS before and after, KiB.
    pub rss: Option<(u64, u64)>,
    /// Ramp or shootout steps.
    pub steps: Vec<Value>,
    /// The numbers that go in the comparison table.
    pub headline: Map<String, Value>,
    pub notes: Vec<String>,
    /// What the witness measured in the same windows.
    pub witness: Option<Stats>,
    /// Every room's accounting (rooms scenarios; a ramp's last step).
    pub rooms: Option<RoomReport>,
    /// Kernel memory growth per idle connection, filled by `idle`.
    pub kernel: Option<Value>,
    /// `steady --pagers`: the pages and the live latency without and with them.
    pub scrollback: Option<Value>,
}

/// What every scenario works with.
pub struct Run<'a> {
    pub fleet: &'a Fleet,
    pub witness: Option<&'a Witness>,
    pub pagers: Option<&'a Pagers>,
    pub args: &'a Args,
}

impl Outcome {
    fn new(scenario: Scenario, clients: u64) -> Outcome {
        Outcome {
            scenario,
            clients,
            stats: Stats::default(),
            receivers: 0,
            expected: 0,
            window: (0, 0),
            connect_secs: 0.0,
            rss: None,
            steps: Vec::new(),
            headline: Map::new(),
            notes: Vec::new(),
            witness: None,
            rooms: None,
            kernel: None,
            scrollback: None,
        }
    }

    fn add_witness(&mut self, w: Option<Stats>) {
        match (&mut self.witness, w) {
            (Some(mine), Some(w)) => mine.merge(&w),
            (mine @ None, w) => *mine = w,
            _ => {}
        }
    }

    pub fn lost(&self) -> i64 {
        self.expected as i64 - self.stats.unique() as i64
    }
}

/// Deliveries per second while sending: whole ticks of the timeline
/// inside the window (the first second left out as warm-up when the window
/// is long enough), or the plain average for short windows.
pub fn deliveries_per_s(stats: &Stats, window: (u64, u64)) -> f64 {
    let (a, b) = window;
    let warm_up = if b - a >= 3_000_000_000 { 1_000_000_000 } else { 0 };
    let first = (a + warm_up).div_ceil(TICK_NS) as u32;
    let last = (b / TICK_NS) as u32; // exclusive
    if last >= first + 4 {
        let n: u64 = (first..last).filter_map(|s| stats.timeline.get(&s)).map(|h| h.len()).sum();
        return n as f64 / (f64::from(last - first) * TICK_NS as f64 / 1e9);
    }
    stats.unique() as f64 / ((b - a) as f64 / 1e9).max(1e-3)
}

/// Open `count` counted clients; returns seconds until all were open.
fn open_clients(fleet: &Fleet, args: &Args, count: u64, phase: &str) -> f64 {
    let limit = Duration::from_secs(30) + Duration::from_secs_f64(count as f64 / args.connect_rate.max(100.0));
    fleet.open(phase, count, args.connect_rate, limit).as_secs_f64()
}

/// One sending phase, measured.
struct Sending {
    stats: Stats,
    /// Counted clients open when it started.
    receivers: u64,
    /// Unique deliveries that should have arrived.
    expected: u64,
    /// Process-clock window of the sending, ns.
    window: (u64, u64),
    /// Share of the worker threads' capacity the tester used, sending and
    /// draining.
    tester_load: f64,
    witness: Option<Stats>,
    rooms: Option<RoomReport>,
}

impl Sending {
    fn tester_bound(&self) -> bool {
        let p50 = ms(self.stats.latency_us.value_at_quantile(0.5));
        let w = self.witness.as_ref().filter(|w| !w.latency_us.is_empty());
        let w50 = w.map(|w| ms(w.latency_us.value_at_quantile(0.5)));
        witness::tester_bound(p50, w50, self.tester_load, self.stats.send_behind > 0)
    }
}

/// Send at `rate` for `secs` — from `--senders` streams, or with
/// `everyone` from every client in its room — drain, and measure.
/// Ledgers are reset first, so each call is its own measurement.
fn measure_sending(r: &Run, rate: f64, secs: f64, phase: &str, everyone: bool) -> Sending {
    let (fleet, args) = (r.fleet, r.args);
    fleet.reset_ledgers();
    if args.await_joined {
        fleet.await_joined(phase, Duration::from_secs(60));
    }
    fleet.hold(phase, Duration::from_millis(args.settle_ms));
    let _ = fleet.snapshot();
    r.witness.inspect(|w| w.begin());
    let t0 = Instant::now();
    let receivers = Progress::get(&fleet.progress.open);
    let sent0 = Progress::get(&fleet.progress.sent);
    let delivered0 = Progress::get(&fleet.progress.delivered);
    let start = now_ns();
    if everyone {
        fleet.send_from_all(rate, Duration::from_secs_f64(secs));
    } else {
        fleet.send(args.senders, rate, Duration::from_secs_f64(secs));
    }
    fleet.hold(phase, Duration::from_secs_f64(secs));
    let end = now_ns();
    fleet.sync();
    let sent = Progress::get(&fleet.progress.sent) - sent0;
    // Each room's probes go to that room's members only.
    let census = everyone.then(|| fleet.census());
    let expected = census.as_ref().map_or(sent * receivers, Census::expected);
    let quiet = Duration::from_millis(args.drain_ms);
    fleet.drain(phase, delivered0, expected, quiet, quiet * 5);
    let stats = fleet.snapshot();
    let witness = r.witness.map(Witness::take);
    let tester_load = stats.cpu.as_secs_f64() / (t0.elapsed().as_secs_f64() * args.threads.max(1) as f64);
    let rooms = census.map(|c| rooms::account(&c, &stats.rooms));
    Sending { stats, receivers, expected, window: (start, end), tester_load, witness, rooms }
}

/// The witness's p50 and p99, ms, if it measured anything.
fn witness_ms(w: Option<&Stats>) -> Option<(f64, f64)> {
    let h = &w.filter(|w| !w.latency_us.is_empty())?.latency_us;
    Some((ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99))))
}

fn delivery_headline(o: &mut Outcome, m: &Sending) {
    let h = &o.stats.latency_us;
    let dps = deliveries_per_s(&o.stats, o.window);
    o.headline.insert("deliveries_per_s".into(), json!(dps.round()));
    o.headline.insert("p50_ms".into(), json!(ms(h.value_at_quantile(0.5))));
    o.headline.insert("p99_ms".into(), json!(ms(h.value_at_quantile(0.99))));
    o.headline.insert("lost".into(), json!(o.lost()));
    if let Some((p50, p99)) = witness_ms(m.witness.as_ref()) {
        o.headline.insert("witness_p50_ms".into(), json!(p50));
        o.headline.insert("witness_p99_ms".into(), json!(p99));
    }
    o.headline.insert("tester_bound".into(), json!(u8::from(m.tester_bound())));
}

/// `steady`, or with `everyone` the `rooms` scenario.
fn steady(r: &Run, everyone: bool) -> Outcome {
    let (fleet, args) = (r.fleet, r.args);
    let scenario = if everyone { Scenario::Rooms } else { Scenario::Steady };
    let mut o = Outcome::new(scenario, args.clients);
    o.connect_secs = open_clients(fleet, args, args.clients, "connect");
    let connects = fleet.snapshot();
    if r.pagers.is_some() {
        // The runs without and with pagers must both start warm: the first seconds of
        // sending to fresh clients are slower (measured: the second of two runs without
        // paging had a 12-25% lower p99), which would flatter the run with pagers.
        let _ = measure_sending(r, args.rate, WARM_UP_SECS.min(args.duration), "warm-up", false);
    }
    let m = measure_sending(r, args.rate, args.duration, scenario.name(), everyone);
    o.stats = connects;
    o.stats.merge(&m.stats);
    (o.receivers, o.expected, o.window) = (m.receivers, m.expected, m.window);
    delivery_headline(&mut o, &m);
    if let Some(rooms) = &m.rooms {
        let secs = (m.window.1 - m.window.0) as f64 / 1e9;
        o.headline.insert("msgs_per_s".into(), json!((m.stats.sent as f64 / secs.max(1e-3)).round()));
        o.headline.insert("rooms_with_loss".into(), json!(rooms.rooms_with_loss));
        o.headline.insert("out_of_order".into(), json!(rooms.out_of_order));
    }
    o.add_witness(m.witness.clone());
    if let Some(pagers) = r.pagers {
        with_pagers(r, pagers, &mut o, &m);
    }
    o.rooms = m.rooms;
    o
}

/// `steady` again on the same clients and server with the pagers paging back, and with
/// `--pager-rounds` above 1 without and with them in turn: the live latency of the runs
/// without them (`first` and the later ones) beside that of the runs with them. Taking
/// turns spreads whatever else the machine does over both sides.
fn with_pagers(r: &Run, pagers: &Pagers, o: &mut Outcome, first: &Sending) {
    let args = r.args;
    let mut without = first.stats.latency_us.clone();
    let mut with = latency_histogram();
    let mut pages = PageStats::default();
    let mut tester_bound = first.tester_bound();
    let p99 = |m: &Sending| ms(m.stats.latency_us.value_at_quantile(0.99));
    // Each round's p99 without and with the pagers, to tell a round some other work
    // disturbed from a difference every round shows.
    let mut rounds = vec![(p99(first), 0.0)];
    for round in 0..args.paging.pager_rounds.max(1) {
        if round > 0 {
            let m = measure_sending(r, args.rate, args.duration, "steady without pagers", false);
            without.add(&m.stats.latency_us).expect("same histogram bounds");
            rounds.push((p99(&m), 0.0));
            tester_bound |= absorb(o, &m);
        }
        pagers.begin();
        let m = measure_sending(r, args.rate, args.duration, "steady with pagers", false);
        pages.merge(&pagers.take());
        with.add(&m.stats.latency_us).expect("same histogram bounds");
        rounds.last_mut().expect("a round was pushed").1 = p99(&m);
        tester_bound |= absorb(o, &m);
    }
    o.headline.insert("lost".into(), json!(o.lost()));
    o.headline.insert("tester_bound".into(), json!(u8::from(tester_bound)));
    let mut report = scrollback::report(&args.paging, &pages, &without, &with, &mut o.headline);
    report["rounds_p99_ms"] = json!(rounds);
    o.scrollback = Some(report);
}

/// Folds one more measured run into the outcome; whether the tester bound it.
fn absorb(o: &mut Outcome, m: &Sending) -> bool {
    o.stats.merge(&m.stats);
    o.expected += m.expected;
    o.add_witness(m.witness.clone());
    m.tester_bound()
}

/// One ramp step as a JSON row.
fn step_row(rate: f64, m: &Sending, lost: i64, p99: f64, pass: bool) -> Value {
    let mut row = json!({
        "rate": rate, "receivers": m.receivers, "sent": m.stats.sent, "expected": m.expected,
        "lost": lost, "duplicated": m.stats.duplicates, "out_of_order": m.stats.late,
        "p50_ms": ms(m.stats.latency_us.value_at_quantile(0.5)), "p99_ms": p99,
        "deliveries_per_s": deliveries_per_s(&m.stats, m.window).round(),
        "tester_load": (m.tester_load * 100.0).round() / 100.0, "pass": pass,
    });
    if let Some((p50, p99)) = witness_ms(m.witness.as_ref()) {
        row["witness_p50_ms"] = json!(p50);
        row["witness_p99_ms"] = json!(p99);
    }
    if let Some(rooms) = &m.rooms {
        row["rooms_with_loss"] = json!(rooms.rooms_with_loss);
    }
    row
}

/// `ramp`, or with `everyone` `rooms-ramp`.
fn ramp(r: &Run, everyone: bool) -> Outcome {
    let (fleet, args) = (r.fleet, r.args);
    let mut o = Outcome::new(if everyone { Scenario::RoomsRamp } else { Scenario::Ramp }, args.clients);
    o.connect_secs = open_clients(fleet, args, args.clients, "connect");
    let mut all = fleet.snapshot();
    let mut best: Option<(f64, f64)> = None;
    let mut rate = args.ramp_start;
    o.headline.insert("tester_bound".into(), json!(0));
    let mut retries_left = args.ramp_retries;
    let mut stopped = false;
    for step in 0..args.max_steps {
        let phase = format!("ramp step {} at {rate:.0} msg/s", step + 1);
        let m = measure_sending(r, rate, args.step_secs, &phase, everyone);
        let lost = m.expected as i64 - m.stats.unique() as i64;
        let p99 = ms(m.stats.latency_us.value_at_quantile(0.99));
        let dps = deliveries_per_s(&m.stats, m.window);
        let tester_bound = m.tester_bound();
        let rooms_clean = m.rooms.as_ref().is_none_or(|r| r.rooms_with_loss == 0);
        let pass = p99 <= args.p99_bound_ms
            && lost == 0
            && rooms_clean
            && m.stats.duplicates == 0
            && m.stats.send_skipped == 0;
        o.steps.push(step_row(rate, &m, lost, p99, pass));
        all.merge(&m.stats);
        o.add_witness(m.witness.clone());
        o.rooms = m.rooms;
        o.expected += m.expected;
        o.receivers = m.receivers;
        o.window = (if step == 0 { m.window.0 } else { o.window.0 }, m.window.1);
        if tester_bound {
            // A saturated tester can only add latency, never hide a loss:
            // a step that passed anyway is a lower bound on the server.
            o.notes.push(format!(
                "step {} at {rate:.0} msg/s: the tester used {:.0}% of its threads and its p50 was over {}× the witness's; stopped there, the server's limit is {} (add --threads)",
                step + 1,
                m.tester_load * 100.0,
                witness::RATIO,
                if pass { "at least this" } else { "unknown" },
            ));
            if pass {
                best = Some((rate, dps));
            }
            o.headline.insert("tester_bound".into(), json!(1));
            stopped = true;
            break;
        }
        if !pass {
            // One bad step on a shared machine can be a hiccup elsewhere:
            // repeat the same rate before calling it the limit.
            if retries_left > 0 {
                retries_left -= 1;
                continue;
            }
            stopped = true;
            break;
        }
        retries_left = args.ramp_retries;
        best = Some((rate, dps));
        rate *= args.ramp_factor;
    }
    o.stats = all;
    let (best_rate, best_dps) = best.unwrap_or((0.0, 0.0));
    o.headline.insert("best_rate".into(), json!(best_rate.round()));
    o.headline.insert("best_deliveries_per_s".into(), json!(best_dps.round()));
    if !stopped {
        o.notes.push(format!("ramp never failed within {} steps: the ceiling is higher", args.max_steps));
    }
    o
}

fn connect_or_idle(r: &Run, scenario: Scenario) -> Outcome {
    let (fleet, args) = (r.fleet, r.args);
    let mut o = Outcome::new(scenario, args.clients);
    let before = args.server_pid.and_then(rss_kib);
    let kernel_before = kernel_mem();
    let cgroup_before = args.server_pid.and_then(cgroup_memory_current);
    o.connect_secs = open_clients(fleet, args, args.clients, "connect");
    let open = Progress::get(&fleet.progress.open);
    o.headline.insert("connected".into(), json!(open));
    o.headline.insert("connect_secs".into(), json!(o.connect_secs));
    o.headline.insert("connects_per_s".into(), json!((open as f64 / o.connect_secs.max(1e-3)).round()));
    if scenario == Scenario::Idle {
        fleet.hold("idle", Duration::from_secs_f64(args.hold));
    }
    o.stats = fleet.snapshot();
    o.headline.insert("connect_p99_ms".into(), json!(ms(o.stats.connect_us.value_at_quantile(0.99))));
    if let (Some(pid), Some(before)) = (args.server_pid, before) {
        let after = rss_kib(pid).unwrap_or(before);
        o.rss = Some((before, after));
        let per = (after as f64 - before as f64) / open.max(1) as f64;
        o.headline.insert("kib_per_conn".into(), json!(round1(per)));
        if let Some(t) = thread_count(pid) {
            o.headline.insert("server_threads".into(), json!(t));
        }
        let cgroup = cgroup_before.zip(cgroup_memory_current(pid));
        if let Some(k) = kernel_per_conn(kernel_before, cgroup, per, open) {
            let kernel = k["kib_per_conn"].as_f64().unwrap_or(0.0);
            o.headline.insert("kernel_kib_per_conn".into(), json!(kernel));
            o.headline.insert("total_kib_per_conn".into(), json!(round1(per + kernel)));
            o.kernel = Some(k);
        }
    }
    o
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The kernel's memory per connection: from the server's cgroup v2
/// (`memory.current` growth less the RSS growth) when it has one, else the
/// machine's KernelStack and Slab growth — which also holds the tester's
/// own client sockets (the same for every server) and anything else the
/// machine did meanwhile.
fn kernel_per_conn(before: Option<KernelMem>, cgroup: Option<(u64, u64)>, rss_per: f64, open: u64) -> Option<Value> {
    let n = open.max(1) as f64;
    let after = kernel_mem();
    let (stack, slab) = match (before, after) {
        (Some(b), Some(a)) => {
            (Some((a.kernel_stack as f64 - b.kernel_stack as f64) / n), Some((a.slab as f64 - b.slab as f64) / n))
        }
        _ => (None, None),
    };
    let (kernel, source) = match (cgroup, stack.zip(slab)) {
        (Some((b, a)), _) => ((a as f64 - b as f64) / 1024.0 / n - rss_per, "cgroup memory.current less RSS"),
        (None, Some((stack, slab))) => (stack + slab, "/proc/meminfo KernelStack + Slab, machine-wide"),
        (None, None) => return None,
    };
    Some(json!({
        "kib_per_conn": round1(kernel), "source": source,
        "kernel_stack_kib_per_conn": stack.map(round1), "slab_kib_per_conn": slab.map(round1),
    }))
}

fn churn(r: &Run) -> Outcome {
    let (fleet, args) = (r.fleet, r.args);
    let mut o = Outcome::new(Scenario::Churn, args.clients);
    o.connect_secs = open_clients(fleet, args, args.clients, "connect");
    let connects = fleet.snapshot();
    let pool = args.churners.unwrap_or(args.clients / 10).max(1);
    let (lo, hi) = (args.churn_life_ms[0], args.churn_life_ms[1].max(args.churn_life_ms[0]));
    let mean_life_s = (lo + hi) as f64 / 2000.0;
    let per_s = pool as f64 / mean_life_s.max(0.01);
    let total = (per_s * (args.duration + args.settle_ms as f64 / 1000.0)).ceil() as u64;
    fleet.connect(total, per_s, false, Some((lo, hi)));
    let m = measure_sending(r, args.rate, args.duration, "churn", false);
    o.stats = connects;
    o.stats.merge(&m.stats);
    (o.receivers, o.expected, o.window) = (m.receivers, m.expected, m.window);
    delivery_headline(&mut o, &m);
    o.add_witness(m.witness);
    o.headline.insert("churn_connects".into(), json!(m.stats.connected));
    o.headline.insert("churn_per_s".into(), json!(per_s.round()));
    o
}

fn shootout(r: &Run) -> Outcome {
    let (fleet, args) = (r.fleet, r.args);
    let mut o = Outcome::new(Scenario::Shootout, args.max_clients);
    let slots = args.in_flight.max(1) as usize;
    let board = &fleet.board;
    let mut next_n = vec![0u32; slots];
    let mut best = 0u64;
    let mut all = Stats::default();
    let mut clients = 0;
    while clients + args.step <= args.max_clients {
        clients += args.step;
        let phase = format!("shootout {clients} clients");
        o.connect_secs += open_clients(fleet, args, args.step, &phase);
        fleet.reset_ledgers();
        fleet.hold(&phase, Duration::from_millis(args.settle_ms));
        all.merge(&fleet.snapshot());
        let receivers = Progress::get(&fleet.progress.open);
        let delivered0 = Progress::get(&fleet.progress.delivered);
        let mut last_receiver = latency_histogram();
        let mut timeouts = 0u64;
        let mut started: Vec<Option<Instant>> = vec![None; slots];
        let mut launched = 0u32;
        let mut rng = now_ns() | 1;
        board.active.store(true, Relaxed);
        let step_start = now_ns();
        let step_limit = Instant::now() + Duration::from_secs(60);
        while (launched < args.broadcasts || started.iter().any(Option::is_some)) && Instant::now() < step_limit {
            for (k, slot) in board.slots.iter().enumerate() {
                if let Some(t0) = started[k] {
                    let done = slot.remaining.load(Relaxed) <= 0;
                    if done || t0.elapsed() > Duration::from_secs(5) {
                        let lat = if done { slot.max_latency_ns.load(Relaxed) } else { 5_000_000_000 };
                        timeouts += u64::from(!done);
                        last_receiver.saturating_record((lat / 1000).max(1));
                        started[k] = None;
                    }
                }
                if started[k].is_none() && launched < args.broadcasts {
                    next_n[k] += 1;
                    slot.max_latency_ns.store(0, Relaxed);
                    slot.remaining.store(receivers as i64, Relaxed);
                    slot.n.store(next_n[k], Relaxed);
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    fleet.broadcast(Probe { stream: k as u32, n: next_n[k], send_ns: 0 }, rng);
                    started[k] = Some(Instant::now());
                    launched += 1;
                }
            }
            fleet.tick(&phase);
            std::thread::sleep(Duration::from_micros(200));
        }
        let end = now_ns();
        let quiet = Duration::from_millis(args.drain_ms.min(1000));
        let sent_this_step = u64::from(launched);
        fleet.drain(&phase, delivered0, sent_this_step * receivers, quiet, quiet * 3);
        board.active.store(false, Relaxed);
        let stats = fleet.snapshot();
        let expected = stats.sent * receivers;
        let p95 = ms(last_receiver.value_at_quantile(0.95));
        let pass = p95 <= args.bound_ms && timeouts == 0;
        o.steps.push(json!({
            "clients": receivers, "broadcasts": stats.sent, "expected": expected,
            "lost": expected as i64 - stats.unique() as i64, "duplicated": stats.duplicates,
            "out_of_order": stats.late, "timeouts": timeouts,
            "last_receiver_p50_ms": ms(last_receiver.value_at_quantile(0.5)),
            "last_receiver_p95_ms": p95, "last_receiver_max_ms": ms(last_receiver.max()),
            "delivery_p99_ms": ms(stats.latency_us.value_at_quantile(0.99)), "pass": pass,
        }));
        o.expected += expected;
        o.receivers = receivers;
        o.window = (if o.window.0 == 0 { step_start } else { o.window.0 }, end);
        all.merge(&stats);
        if !pass {
            break;
        }
        best = receivers;
    }
    o.stats = all;
    o.headline.insert("max_clients_passing".into(), json!(best));
    if best == args.max_clients {
        o.notes.push(format!("every step passed up to --max-clients {}: the limit is higher", args.max_clients));
    }
    o
}

/// Run the scenario `args` asks for.
pub fn run(r: &Run) -> Outcome {
    let mut o = match r.args.scenario() {
        Scenario::Steady => steady(r, false),
        Scenario::Rooms => steady(r, true),
        Scenario::Ramp => ramp(r, false),
        Scenario::RoomsRamp => ramp(r, true),
        s @ (Scenario::Connect | Scenario::Idle) => connect_or_idle(r, s),
        Scenario::Churn => churn(r),
        Scenario::Shootout => shootout(r),
        Scenario::Restart => restart::restart(r),
        Scenario::Compare | Scenario::Bytes => unreachable!("compare and bytes run no fleet"),
    };
    if o.witness.is_none() {
        // Scenarios without sending windows: the witness over the whole run.
        o.witness = r.witness.map(Witness::take);
    }
    o
}
