//! Scroll-back under load (`--pagers N`, with `steady`): N clients beside the fleet,
//! each a blocking tungstenite client on a thread of its own ([`pager`]), join the
//! fleet's room and page back through its history with `history {before, limit}`.
//! Each page is timed from the request to the last frame of its answer (an HDR
//! histogram) and checked ([`walk`]): pages join up, oldest first, nothing missing or
//! twice, until `complete:true` or the phase ends.
//!
//! The scenario opens a paging window with [`Pagers::begin`] and closes it with
//! [`Pagers::take`]; outside windows the pagers stay joined and read what the room
//! sends, so the run without paging has the same members. [`report`] puts the live
//! p99 without and with the pagers, their ratio and the page latency in the run's
//! headline. Never touches the fleet or its accounting.

mod pager;
mod walk;

use crate::stats::{latency_histogram, merge_tallies, ms, quantiles_ms, tally};
use crate::ws::Target;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Small stacks: a pager parses one page at a time.
const STACK: usize = 256 * 1024;

/// The pagers' flags (flattened into the tester's own).
#[derive(Debug, Clone, clap::Args)]
pub struct PagerArgs {
    /// steady: clients that page back through --room's history beside the fleet; the
    /// run then measures the fleet without them, then with them paging.
    #[arg(long, default_value_t = 0)]
    pub pagers: u32,
    /// Pages a second per pager (0: each asks again as soon as its answer is in).
    #[arg(long, default_value_t = 2.0)]
    pub page_rate: f64,
    /// Page sizes (`limit`, 1–200) each pager uses in turn.
    #[arg(long, value_delimiter = ',', default_values_t = [50, 100])]
    pub page_limits: Vec<usize>,
    /// Runs without and with the pagers, in turn, each --duration seconds: on a
    /// shared machine more rounds spread what else it does over both sides.
    #[arg(long, default_value_t = 1)]
    pub pager_rounds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle = 0,
    Paging = 1,
    Stop = 2,
}

/// What the pagers measured in one window.
#[derive(Debug, Clone)]
pub struct PageStats {
    /// Request → last frame of the answer, µs.
    pub latency_us: Histogram<u64>,
    pub pages: u64,
    pub messages: u64,
    /// Pages that failed their check, by fault.
    pub faults: BTreeMap<String, u64>,
    /// Requests answered with an `error` (by code) or not at all.
    pub errors: BTreeMap<String, u64>,
    /// Pagers that reached the room's beginning (or a page that brought them no further).
    pub walks_done: u64,
    /// Pagers whose connection ended during the run.
    pub lost: u64,
    pub secs: f64,
}

impl Default for PageStats {
    fn default() -> Self {
        PageStats {
            latency_us: latency_histogram(),
            pages: 0,
            messages: 0,
            faults: BTreeMap::new(),
            errors: BTreeMap::new(),
            walks_done: 0,
            lost: 0,
            secs: 0.0,
        }
    }
}

impl PageStats {
    /// Fold another window's pages into these.
    pub fn merge(&mut self, o: &PageStats) {
        self.latency_us.add(&o.latency_us).expect("same histogram bounds");
        self.pages += o.pages;
        self.messages += o.messages;
        merge_tallies(&mut self.faults, &o.faults);
        merge_tallies(&mut self.errors, &o.errors);
        self.walks_done += o.walks_done;
        self.lost += o.lost;
        self.secs += o.secs;
    }
}

/// What the coordinator and the pager threads share.
struct Shared {
    phase: AtomicU8,
    joined: AtomicU32,
    /// Pagers in the middle of a request.
    busy: AtomicU32,
    setup_failures: Mutex<Vec<String>>,
    stats: Mutex<PageStats>,
}

/// Marks a pager busy with a request while it lives.
struct Busy<'a>(&'a AtomicU32);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Shared {
    fn phase(&self) -> Phase {
        match self.phase.load(Relaxed) {
            1 => Phase::Paging,
            2 => Phase::Stop,
            _ => Phase::Idle,
        }
    }

    fn stats(&self) -> MutexGuard<'_, PageStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn joined(&self) {
        self.joined.fetch_add(1, Relaxed);
    }

    fn setup_failed(&self, why: String) {
        self.setup_failures.lock().unwrap_or_else(|e| e.into_inner()).push(why);
    }

    fn lost(&self, why: String) {
        let mut s = self.stats();
        s.lost += 1;
        tally(&mut s.errors, &why);
    }

    fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Relaxed);
        Busy(&self.busy)
    }

    fn record(&self, outcome: pager::Outcome) {
        let mut s = self.stats();
        match outcome {
            pager::Outcome::Page { took, messages, fault, walk_done } => {
                s.latency_us.saturating_record((took.as_micros() as u64).max(1));
                s.pages += 1;
                s.messages += messages as u64;
                if let Some(f) = fault {
                    tally(&mut s.faults, f);
                }
                s.walks_done += u64::from(walk_done);
            }
            pager::Outcome::Failed(why) => tally(&mut s.errors, &why),
        }
    }
}

/// The running pagers.
pub struct Pagers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    started: Mutex<Instant>,
}

impl Pagers {
    /// Connect `args.pagers` pagers to `target` and join `room`; None when there are
    /// none. An error when not one of them could join.
    pub fn start(args: &PagerArgs, target: &Target, room: &str) -> Result<Option<Pagers>, String> {
        if args.pagers == 0 {
            return Ok(None);
        }
        if args.page_limits.is_empty() || args.page_limits.iter().any(|l| !(1..=200).contains(l)) {
            return Err("--page-limits: each 1 to 200".into());
        }
        let shared = Arc::new(Shared {
            phase: AtomicU8::new(Phase::Idle as u8),
            joined: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            setup_failures: Mutex::new(Vec::new()),
            stats: Mutex::new(PageStats::default()),
        });
        let url = format!("ws://{}:{}{}", target.host, target.port, target.resource);
        let interval = (args.page_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.page_rate));
        let mut threads = Vec::new();
        for index in 0..args.pagers {
            let conf = pager::Conf {
                url: url.clone(),
                addr: target.addr,
                room: room.to_owned(),
                index,
                count: args.pagers,
                interval,
                limits: args.page_limits.clone(),
            };
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("lt-pager-{index}"))
                .stack_size(STACK)
                .spawn(move || pager::run(&conf, &shared))
                .map_err(|e| format!("starting pager {index}: {e}"))?;
            threads.push(spawned);
        }
        let pagers = Pagers { shared, threads, started: Mutex::new(Instant::now()) };
        pagers.await_setup(args.pagers)?;
        Ok(Some(pagers))
    }

    /// Wait until every pager joined or failed; an error if none joined.
    fn await_setup(&self, count: u32) -> Result<(), String> {
        let until = Instant::now() + Duration::from_secs(60);
        let failed = || self.shared.setup_failures.lock().unwrap_or_else(|e| e.into_inner()).clone();
        while self.shared.joined.load(Relaxed) + (failed().len() as u32) < count && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (joined, failures) = (self.shared.joined.load(Relaxed), failed());
        if !failures.is_empty() {
            eprintln!("natter-loadtest: {} of {count} pagers failed to join: {}", failures.len(), failures[0]);
        }
        if joined == 0 {
            return Err(format!("no pager could join ({})", failures.first().map_or("timed out", String::as_str)));
        }
        Ok(())
    }

    /// A paging window opens: stats start afresh.
    pub fn begin(&self) {
        *self.shared.stats() = PageStats::default();
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.shared.phase.store(Phase::Paging as u8, Relaxed);
    }

    /// The window closes: no new requests; the answers in flight are waited for (at
    /// most [`pager::ANSWER_LIMIT`]); what the window measured.
    pub fn take(&self) -> PageStats {
        self.shared.phase.store(Phase::Idle as u8, Relaxed);
        let until = Instant::now() + pager::ANSWER_LIMIT;
        while self.shared.busy.load(Relaxed) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut s = std::mem::take(&mut *self.shared.stats());
        s.secs = self.started.lock().unwrap_or_else(|e| e.into_inner()).elapsed().as_secs_f64();
        s
    }

    /// Close every pager's connection and end its thread.
    pub fn stop(self) {
        self.shared.phase.store(Phase::Stop as u8, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The run's `scrollback` object, and its figures in `headline`: the fleet's live p99
/// without the pagers (`without`, also the headline's `p50_ms` and `p99_ms`) and with
/// them paging (`with`), their ratio, and the page latency.
pub fn report(
    args: &PagerArgs,
    pages: &PageStats,
    without: &Histogram<u64>,
    with: &Histogram<u64>,
    headline: &mut Map<String, Value>,
) -> Value {
    let p99 = |h: &Histogram<u64>| ms(h.value_at_quantile(0.99));
    let ratio = if without.is_empty() { None } else { Some(round2(p99(with) / p99(without).max(1e-3))) };
    let pages_per_s = (pages.pages as f64 / pages.secs.max(1e-3)).round();
    let faults: u64 = pages.faults.values().sum();
    let errors: u64 = pages.errors.values().sum();
    for (k, v) in [
        ("p50_ms", json!(ms(without.value_at_quantile(0.5)))),
        ("p99_ms", json!(p99(without))),
        ("p99_without_pagers_ms", json!(p99(without))),
        ("p99_with_pagers_ms", json!(p99(with))),
        ("p99_ratio", json!(ratio)),
        ("page_p50_ms", json!(ms(pages.latency_us.value_at_quantile(0.5)))),
        ("page_p99_ms", json!(ms(pages.latency_us.value_at_quantile(0.99)))),
        ("pages_per_s", json!(pages_per_s)),
        ("page_faults", json!(faults)),
        ("page_errors", json!(errors)),
    ] {
        headline.insert(k.into(), v);
    }
    json!({
        "pagers": args.pagers, "page_rate": args.page_rate, "page_limits": args.page_limits,
        "rounds": args.pager_rounds,
        "pages": pages.pages, "messages": pages.messages, "pages_per_s": pages_per_s, "secs": pages.secs,
        "page_ms": quantiles_ms(&pages.latency_us), "faults": pages.faults, "errors": pages.errors,
        "walks_done": pages.walks_done, "pagers_lost": pages.lost,
        "live_without_ms": quantiles_ms(without), "live_with_ms": quantiles_ms(with), "p99_ratio": ratio,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The summary's line for a run with pagers.
pub fn summary(j: &Value) -> Option<String> {
    let s = j["scrollback"].as_object()?;
    let q = |v: &Value, k: &str| v[k].as_f64().map_or("-".into(), |x| format!("{x:.2}"));
    Some(format!(
        "scroll-back   {} pagers: {} pages ({}/s, {} messages), page ms p50 {} p99 {}; faults {}; errors {}; walks done {}\n\
         live p99 ms   without pagers {}, with {} (ratio {}); by round (without, with): {}\n",
        s["pagers"],
        s["pages"],
        s["pages_per_s"],
        s["messages"],
        q(&s["page_ms"], "p50"),
        q(&s["page_ms"], "p99"),
        s["faults"],
        s["errors"],
        s["walks_done"],
        q(&s["live_without_ms"], "p99"),
        q(&s["live_with_ms"], "p99"),
        s["p99_ratio"],
        s["rounds_p99_ms"],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_merge_into_one_account() {
        let mut a = PageStats { pages: 2, messages: 150, walks_done: 1, secs: 5.0, ..PageStats::default() };
        a.latency_us.record(900).unwrap();
        tally(&mut a.faults, "gap");
        let mut b = PageStats { pages: 1, messages: 50, lost: 1, secs: 5.0, ..PageStats::default() };
        b.latency_us.record(30_000).unwrap();
        tally(&mut b.faults, "gap");
        tally(&mut b.errors, "unavailable");
        a.merge(&b);
        assert_eq!((a.pages, a.messages, a.walks_done, a.lost, a.secs), (3, 200, 1, 1, 10.0));
        assert_eq!((a.faults["gap"], a.errors["unavailable"]), (2, 1));
        assert_eq!(a.latency_us.len(), 2);
        assert!(a.latency_us.max() >= 29_990);
    }
}
