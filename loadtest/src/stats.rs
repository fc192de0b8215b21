//! What a worker measured, in a form that merges: counters, the latency
//! and connect-time HDR histograms, a per-second latency timeline, and
//! tallies of what servers said when things went wrong (error codes, close
//! codes, protocol violations). Plus the live [`Progress`] counters the
//! progress line reads while a run goes on.

use crate::rooms::{self, RoomTally};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Microseconds (the histograms' unit) as milliseconds, for reports.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// A histogram's quantiles in milliseconds, for reports (null when empty).
pub fn quantiles_ms(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": ms(h.value_at_quantile(0.5)), "p90": ms(h.value_at_quantile(0.9)),
        "p99": ms(h.value_at_quantile(0.99)), "p99_9": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()), "mean": h.mean() / 1000.0, "count": h.len(),
    })
}

/// Latencies are recorded in microseconds, 1 µs .. 10 min, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Width of one timeline bucket.
pub const TICK_NS: u64 = 250_000_000;

/// Coarse histogram (2 significant digits, 32-bit counts, a few KiB) for
/// one tick of the timeline, so that long runs stay small.
fn timeline_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

/// Everything one worker counted since its last snapshot.
#[derive(Debug, Clone)]
pub struct Stats {
    pub connect_attempts: u64,
    pub connected: u64,
    /// Failed connects by reason (refused status line, reset, timeout…).
    pub connect_failed: BTreeMap<String, u64>,
    /// TCP connect → 101 response, µs.
    pub connect_us: Histogram<u64>,
    pub sent: u64,
    /// Sends skipped because the client's unsent backlog was over its bound
    /// (the server stopped reading it) or the sender had gone.
    pub send_skipped: u64,
    /// Sends the tester dropped because it was more than a second behind
    /// its schedule: the tester was the bottleneck.
    pub send_behind: u64,
    /// Probe arrivals at counted clients, by class.
    pub fresh: u64,
    pub late: u64,
    pub duplicates: u64,
    pub foreign: u64,
    /// Probes of an earlier measurement that arrived during this one.
    pub stale: u64,
    /// Probe arrivals at uncounted clients (churners).
    pub uncounted: u64,
    /// Probes that arrived in a room other than the one they were sent in.
    pub misrouted: u64,
    /// The witness's probes heard by the fleet (servers without rooms).
    pub witness_probes: u64,
    /// What each room's members received (rooms scenarios only).
    pub rooms: Vec<RoomTally>,
    /// Send → arrival, µs, for fresh and late arrivals.
    pub latency_us: Histogram<u64>,
    /// Arrival tick ([`TICK_NS`] on the process clock) → latencies then.
    pub timeline: BTreeMap<u32, Histogram<u32>>,
    /// `error` frames from the server, by code.
    pub server_errors: BTreeMap<String, u64>,
    /// Close frames from the server, by "code reason".
    pub server_closes: BTreeMap<String, u64>,
    /// Connections that ended without a close frame (EOF, reset), by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Protocol violations by the server, by kind.
    pub violations: BTreeMap<String, u64>,
    /// Heartbeats: WebSocket pings, or SSE comments.
    pub pings: u64,
    /// `--transport sse`: POSTs answered 2xx, and POSTs that failed (their
    /// status in `server_errors`, a broken connection in `dropped`).
    pub posts: u64,
    pub posts_failed: u64,
    pub not_json: u64,
    pub binary: u64,
    /// Ledger gap ranges forgotten (bounded memory); 0 in any sane run.
    pub gaps_forgotten: u64,
    /// `restart`: server hang-up → that client's resume done, µs.
    pub resume_us: Histogram<u64>,
    /// `restart`: resumes answered `reset` (the room's history changed epoch).
    pub resets: u64,
    /// `restart`: reconnects over TLS that resumed their session (no full handshake).
    pub tls_resumed: u64,
    /// CPU time of the worker threads.
    pub cpu: Duration,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connect_attempts: 0,
            connected: 0,
            connect_failed: BTreeMap::new(),
            connect_us: latency_histogram(),
            sent: 0,
            send_skipped: 0,
            send_behind: 0,
            fresh: 0,
            late: 0,
            duplicates: 0,
            foreign: 0,
            stale: 0,
            uncounted: 0,
            misrouted: 0,
            witness_probes: 0,
            rooms: Vec::new(),
            latency_us: latency_histogram(),
            timeline: BTreeMap::new(),
            server_errors: BTreeMap::new(),
            server_closes: BTreeMap::new(),
            dropped: BTreeMap::new(),
            violations: BTreeMap::new(),
            pings: 0,
            posts: 0,
            posts_failed: 0,
            not_json: 0,
            binary: 0,
            gaps_forgotten: 0,
            resume_us: latency_histogram(),
            resets: 0,
            tls_resumed: 0,
            cpu: Duration::ZERO,
        }
    }
}

/// Add one to a tally.
pub fn tally(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_string()).or_default() += 1;
}

/// Add another tally's counts to one.
pub fn merge_tallies(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl Stats {
    /// Record one measured latency that arrived at `arrival_ns`.
    pub fn record_latency(&mut self, latency_ns: u64, arrival_ns: u64) {
        let us = (latency_ns / 1000).max(1);
        self.latency_us.saturating_record(us);
        let tick = (arrival_ns / TICK_NS) as u32;
        self.timeline.entry(tick).or_insert_with(timeline_histogram).saturating_record(us);
    }

    /// Unique probe arrivals at counted clients.
    pub fn unique(&self) -> u64 {
        self.fresh + self.late
    }

    /// Fold another worker's numbers into these.
    pub fn merge(&mut self, o: &Stats) {
        self.connect_attempts += o.connect_attempts;
        self.connected += o.connected;
        merge_tallies(&mut self.connect_failed, &o.connect_failed);
        self.connect_us.add(&o.connect_us).expect("same histogram bounds");
        self.sent += o.sent;
        self.send_skipped += o.send_skipped;
        self.send_behind += o.send_behind;
        self.fresh += o.fresh;
        self.late += o.late;
        self.duplicates += o.duplicates;
        self.foreign += o.foreign;
        self.stale += o.stale;
        self.uncounted += o.uncounted;
        self.misrouted += o.misrouted;
        self.witness_probes += o.witness_probes;
        rooms::merge(&mut self.rooms, &o.rooms);
        self.latency_us.add(&o.latency_us).expect("same histogram bounds");
        for (s, h) in &o.timeline {
            self.timeline.entry(*s).or_insert_with(timeline_histogram).add(h).expect("same histogram bounds");
        }
        merge_tallies(&mut self.server_errors, &o.server_errors);
        merge_tallies(&mut self.server_closes, &o.server_closes);
        merge_tallies(&mut self.dropped, &o.dropped);
        merge_tallies(&mut self.violations, &o.violations);
        self.pings += o.pings;
        self.posts += o.posts;
        self.posts_failed += o.posts_failed;
        self.not_json += o.not_json;
        self.binary += o.binary;
        self.gaps_forgotten += o.gaps_forgotten;
        self.resume_us.add(&o.resume_us).expect("same histogram bounds");
        self.resets += o.resets;
        self.tls_resumed += o.tls_resumed;
        self.cpu += o.cpu;
    }
}

/// Live counters shared by the workers and the progress line.
#[derive(Debug, Default)]
pub struct Progress {
    /// Counted clients whose handshake is done and that are still open.
    pub open: AtomicU64,
    /// Uncounted (churning) clients open.
    pub open_uncounted: AtomicU64,
    /// Connects started but not yet open or failed.
    pub pending: AtomicU64,
    /// Handshakes completed, ever (counted clients only).
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    pub sent: AtomicU64,
    /// Unique probe arrivals at counted clients.
    pub delivered: AtomicU64,
    /// Counted clients whose join the server has answered with `joined`, ever.
    pub joined: AtomicU64,
    /// `restart`: clients the server hung up on that have not resumed yet.
    pub away: AtomicU64,
    /// `restart`: resumes done (a resume's last history page arrived), ever.
    pub resumed: AtomicU64,
}

impl Progress {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        a.record_latency(2_000_000, 1_500_000_000);
        b.record_latency(4_000_000, 2_500_000_000);
        b.sent = 3;
        tally(&mut b.server_errors, "rate_limited");
        a.merge(&b);
        assert_eq!(a.latency_us.len(), 2);
        assert_eq!(a.timeline.len(), 2);
        assert_eq!(a.sent, 3);
        assert_eq!(a.server_errors["rate_limited"], 1);
        assert!(a.latency_us.value_at_quantile(1.0) >= 3990);
    }
}
