//! Process-wide counters for `/metrics` (Prometheus text) and `/healthz`.
//!
//! Plain atomics: any thread may count, nobody waits. Chat state is not kept here,
//! only numbers about it that the dispatcher publishes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use std::sync::Arc;

use crate::protocol::{CloseReason, ErrorCode};
use crate::webhooks::WebhookStats;

mod redis;
pub use redis::{Beat, RedisStatus};

/// Upper bounds (seconds) of the fan-out histogram's buckets.
const FANOUT_BUCKETS: [f64; 12] =
    [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// Upper bounds (seconds) of the ack-time histogram's buckets: a local commit with
/// `--fsync interval` takes well under a millisecond, an fsync'd one or a Redis round
/// trip a few.
const ACK_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Why the HTTP guard refused or cut an HTTP connection (transport/guard.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// Past `--http-max-connections-per-ip`.
    PerIp,
    /// Past `--http-max-connections`.
    Total,
    /// The request head did not arrive within `--http-head-timeout-ms` (slowloris).
    HeadTimeout,
    /// A response the client did not read within the head timeout.
    WriteTimeout,
    /// A head that does not parse, or is larger than the guard reads.
    BadRequest,
    /// Plain text sent to the TLS port.
    PlainOnTls,
    /// The TLS handshake failed.
    TlsHandshake,
}

impl HttpRefusal {
    pub const ALL: [HttpRefusal; 7] = [
        HttpRefusal::PerIp,
        HttpRefusal::Total,
        HttpRefusal::HeadTimeout,
        HttpRefusal::WriteTimeout,
        HttpRefusal::BadRequest,
        HttpRefusal::PlainOnTls,
        HttpRefusal::TlsHandshake,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HttpRefusal::PerIp => "per_ip",
            HttpRefusal::Total => "total",
            HttpRefusal::HeadTimeout => "head_timeout",
            HttpRefusal::WriteTimeout => "write_timeout",
            HttpRefusal::BadRequest => "bad_request",
            HttpRefusal::PlainOnTls => "plain_on_tls",
            HttpRefusal::TlsHandshake => "tls_handshake",
        }
    }
}

/// All counters. One instance per server, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    pub connections: AtomicU64,
    pub rooms: AtomicU64,
    /// Rooms that left memory (idle, or to make space), and rooms read back from the store.
    pub rooms_evicted: AtomicU64,
    pub rooms_loaded: AtomicU64,
    pub handshakes_refused: AtomicU64,
    pub messages_accepted: AtomicU64,
    pub messages_duplicate: AtomicU64,
    pub deliveries: AtomicU64,
    /// Commands the dispatcher handled (connections registered and gone, client
    /// messages, API calls, store answers): how busy it is, and what tells the heap
    /// trimmer a burst is over (heap.rs).
    pub commands: AtomicU64,
    /// Times freed heap memory was handed back to the kernel after a burst (heap.rs).
    pub heap_trims: AtomicU64,
    /// Times accepting an HTTP connection failed (descriptors exhausted...).
    pub http_accept_errors: AtomicU64,
    /// Times a site's tiny_http had stopped accepting and was started again.
    pub http_restarts: AtomicU64,
    /// Open HTTP connections (page and admin listeners).
    pub http_connections: AtomicU64,
    /// Idle keep-alive HTTP connections closed by the guard.
    pub http_idle_closed: AtomicU64,
    http_refused: [AtomicU64; HttpRefusal::ALL.len()],
    /// Redis mode: 0 not configured, 1 reachable, 2 unreachable.
    redis: AtomicU64,
    /// Redis mode: the master in use and the delivering threads' beats.
    pub redis_status: Arc<RedisStatus>,
    /// Local mode: the last store commit failed and writes are refused.
    pub store_failing: AtomicBool,
    /// Store commits that failed.
    pub store_failures: AtomicU64,
    /// Messages deleted by `--retention-messages` / `--retention-days`.
    pub store_deleted: AtomicU64,
    /// Messages deleted because the store passed `--max-store-bytes`.
    pub store_evicted: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    closes: [AtomicU64; CloseReason::ALL.len()],
    fanout_buckets: [AtomicU64; FANOUT_BUCKETS.len()],
    fanout_count: AtomicU64,
    fanout_sum_ns: AtomicU64,
    ack_buckets: [AtomicU64; ACK_BUCKETS.len()],
    ack_count: AtomicU64,
    ack_sum_ns: AtomicU64,
    /// Webhook deliveries, failures, drops and queue length.
    pub webhooks: Arc<WebhookStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            connections: AtomicU64::new(0),
            rooms: AtomicU64::new(0),
            rooms_evicted: AtomicU64::new(0),
            rooms_loaded: AtomicU64::new(0),
            handshakes_refused: AtomicU64::new(0),
            messages_accepted: AtomicU64::new(0),
            messages_duplicate: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            heap_trims: AtomicU64::new(0),
            http_accept_errors: AtomicU64::new(0),
            http_restarts: AtomicU64::new(0),
            http_connections: AtomicU64::new(0),
            http_idle_closed: AtomicU64::new(0),
            http_refused: Default::default(),
            redis: AtomicU64::new(0),
            redis_status: Arc::default(),
            store_failing: AtomicBool::new(false),
            store_failures: AtomicU64::new(0),
            store_deleted: AtomicU64::new(0),
            store_evicted: AtomicU64::new(0),
            errors: Default::default(),
            closes: Default::default(),
            fanout_buckets: Default::default(),
            fanout_count: AtomicU64::new(0),
            fanout_sum_ns: AtomicU64::new(0),
            ack_buckets: Default::default(),
            ack_count: AtomicU64::new(0),
            ack_sum_ns: AtomicU64::new(0),
            webhooks: Arc::default(),
        }
    }
}

impl Metrics {
    pub fn error(&self, code: ErrorCode) {
        let i = ErrorCode::ALL.iter().position(|c| *c == code).expect("ALL lists every code");
        self.errors[i].fetch_add(1, Relaxed);
    }

    pub fn close(&self, reason: CloseReason) {
        let i = CloseReason::ALL.iter().position(|c| *c == reason).expect("ALL lists every reason");
        self.closes[i].fetch_add(1, Relaxed);
    }

    pub fn http_refused(&self, why: HttpRefusal) {
        let i = HttpRefusal::ALL.iter().position(|r| *r == why).expect("ALL lists every refusal");
        self.http_refused[i].fetch_add(1, Relaxed);
    }

    /// Records the time writer shard 0 spent writing one message to its receivers
    /// (per message of a batch: the batch's time divided by its messages).
    pub fn observe_fanout(&self, seconds: f64, messages: u64) {
        for (i, le) in FANOUT_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                self.fanout_buckets[i].fetch_add(messages, Relaxed);
                break;
            }
        }
        self.fanout_count.fetch_add(messages, Relaxed);
        self.fanout_sum_ns.fetch_add((seconds * 1e9 * messages as f64) as u64, Relaxed);
    }

    /// Records `acks` acks (and API replies) that waited `seconds` from the dispatcher
    /// taking their batch to being handed on after the store committed it.
    pub fn observe_acks(&self, seconds: f64, acks: u64) {
        if let Some(i) = ACK_BUCKETS.iter().position(|le| seconds <= *le) {
            self.ack_buckets[i].fetch_add(acks, Relaxed);
        }
        self.ack_count.fetch_add(acks, Relaxed);
        self.ack_sum_ns.fetch_add((seconds * 1e9 * acks as f64) as u64, Relaxed);
    }

    /// Redis mode: whether Redis is reachable (the last word of any Redis thread).
    pub fn set_redis(&self, up: bool) {
        self.redis.store(if up { 1 } else { 2 }, Relaxed);
    }

    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// `/healthz` body.
    pub fn health_json(&self) -> String {
        let mut v = serde_json::json!({
            "status": "ok",
            "uptime_s": self.uptime_s(),
            "connections": self.connections.load(Relaxed),
            "rooms": self.rooms.load(Relaxed),
        });
        match self.redis.load(Relaxed) {
            1 => v["redis"] = "up".into(),
            2 => {
                v["redis"] = "down".into();
                v["status"] = "degraded".into();
            }
            _ => {}
        }
        if self.redis.load(Relaxed) != 0 {
            let status = &self.redis_status;
            if let Some(master) = status.master() {
                v["redis_master"] = master.into();
            }
            v["redis_master_changed_at_ms"] = status.changed_at_ms().into();
            let stalled = status.stalled();
            if !stalled.is_empty() {
                v["delivery"] = "stalled".into();
                v["stalled"] = stalled.into();
                v["status"] = "failing".into();
            }
        }
        if self.store_failing.load(Relaxed) {
            v["store"] = "failing".into();
            v["status"] = "failing".into();
        }
        v.to_string()
    }

    /// Redis mode: a delivering thread has been silent past its bound
    /// ([`redis::DELIVERY_STALL`]): clients of this instance get no messages.
    fn redis_delivery_stalled(&self) -> bool {
        self.redis.load(Relaxed) != 0 && !self.redis_status.stalled().is_empty()
    }

    /// `/healthz` status code: 503 while the store refuses writes (the instance cannot
    /// take messages; a load balancer should send clients elsewhere).
    pub fn health_status(&self) -> u16 {
        if self.store_failing.load(Relaxed) || self.redis_delivery_stalled() {
            503
        } else {
            200
        }
    }

    /// `/metrics` body, Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut gauge = |name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge("natter_uptime_seconds", "Seconds since start.", "gauge", self.uptime_s());
        gauge("natter_connections", "Open WebSocket connections.", "gauge", self.connections.load(Relaxed));
        gauge("natter_rooms", "Rooms held in memory (at most --max-rooms).", "gauge", self.rooms.load(Relaxed));
        gauge(
            "natter_rooms_evicted_total",
            "Rooms that left memory: nobody in them (idle past --room-idle-secs, empty, or to make space).",
            "counter",
            self.rooms_evicted.load(Relaxed),
        );
        gauge(
            "natter_rooms_loaded_total",
            "Rooms read back from the store into memory when used again.",
            "counter",
            self.rooms_loaded.load(Relaxed),
        );
        gauge(
            "natter_handshakes_refused_total",
            "WebSocket handshakes refused before the upgrade.",
            "counter",
            self.handshakes_refused.load(Relaxed),
        );
        gauge(
            "natter_messages_accepted_total",
            "Chat messages stored and acked.",
            "counter",
            self.messages_accepted.load(Relaxed),
        );
        gauge(
            "natter_messages_duplicate_total",
            "Retried messages answered with ack dup:true.",
            "counter",
            self.messages_duplicate.load(Relaxed),
        );
        let redis = self.redis.load(Relaxed);
        if redis != 0 {
            gauge("natter_redis_up", "Redis mode: 1 when Redis is reachable.", "gauge", u64::from(redis == 1));
        }
        if self.redis.load(Relaxed) == 0 {
            gauge(
                "natter_store_failing",
                "Local store: 1 while commits fail and posts are refused.",
                "gauge",
                u64::from(self.store_failing.load(Relaxed)),
            );
            gauge(
                "natter_store_failures_total",
                "Local store commits that failed (their messages were refused, not acked).",
                "counter",
                self.store_failures.load(Relaxed),
            );
            gauge(
                "natter_store_retention_deleted_total",
                "Messages deleted by --retention-messages / --retention-days.",
                "counter",
                self.store_deleted.load(Relaxed),
            );
            gauge(
                "natter_store_evicted_total",
                "Messages deleted because the store passed --max-store-bytes (oldest of the largest rooms first).",
                "counter",
                self.store_evicted.load(Relaxed),
            );
        }
        gauge("natter_deliveries_total", "Frames handed to client sockets.", "counter", self.deliveries.load(Relaxed));
        gauge(
            "natter_dispatcher_commands_total",
            "Commands the dispatcher handled (registrations, client messages, API calls, store answers).",
            "counter",
            self.commands.load(Relaxed),
        );
        gauge(
            "natter_heap_trims_total",
            "Times freed heap memory was handed back to the kernel after a burst (--heap-trim-quiet-ms).",
            "counter",
            self.heap_trims.load(Relaxed),
        );
        gauge(
            "natter_http_accept_errors_total",
            "Failed accepts on the HTTP listeners (the guard pauses accepting and carries on).",
            "counter",
            self.http_accept_errors.load(Relaxed),
        );
        let hooks = &self.webhooks;
        for (name, help, kind, v) in [
            (
                "natter_webhook_events_delivered_total",
                "Webhook events a receiver accepted.",
                "counter",
                &hooks.delivered,
            ),
            (
                "natter_webhook_posts_failed_total",
                "Webhook POSTs that failed (retried).",
                "counter",
                &hooks.failed_posts,
            ),
            (
                "natter_webhook_events_dropped_total",
                "Webhook events dropped: queue full or retry window passed.",
                "counter",
                &hooks.dropped,
            ),
            ("natter_webhook_queue", "Webhook events waiting, over all receivers.", "gauge", &hooks.queued),
        ] {
            gauge(name, help, kind, v.load(Relaxed));
        }
        gauge(
            "natter_http_restarts_total",
            "Times a site's tiny_http (behind the guard) stopped accepting and was started again.",
            "counter",
            self.http_restarts.load(Relaxed),
        );
        gauge("natter_http_connections", "Open HTTP connections.", "gauge", self.http_connections.load(Relaxed));
        gauge(
            "natter_http_idle_closed_total",
            "Idle keep-alive HTTP connections closed.",
            "counter",
            self.http_idle_closed.load(Relaxed),
        );
        let refused = HttpRefusal::ALL.iter().zip(&self.http_refused).map(|(r, n)| (r.label(), n.load(Relaxed)));
        let errors = ErrorCode::ALL.iter().zip(&self.errors).map(|(c, n)| (c.as_str(), n.load(Relaxed)));
        let closes = CloseReason::ALL.iter().zip(&self.closes).map(|(r, n)| (r.label(), n.load(Relaxed)));
        counters_by(
            &mut s,
            "natter_http_refused_total",
            "HTTP connections refused or cut by the guard, by reason.",
            "reason",
            refused,
        );
        counters_by(&mut s, "natter_errors_total", "Error frames sent, by code.", "code", errors);
        counters_by(&mut s, "natter_closes_total", "Connections ended, by reason.", "reason", closes);
        histogram(
            &mut s,
            "natter_fanout_seconds",
            "Writer shard 0's time to write one message to all its receivers.",
            &FANOUT_BUCKETS,
            &self.fanout_buckets,
            self.fanout_count.load(Relaxed),
            self.fanout_sum_ns.load(Relaxed),
        );
        histogram(
            &mut s,
            "natter_ack_seconds",
            "Time from the dispatcher taking a post's batch to its ack (or API reply) handed on after the store committed.",
            &ACK_BUCKETS,
            &self.ack_buckets,
            self.ack_count.load(Relaxed),
            self.ack_sum_ns.load(Relaxed),
        );
        if redis != 0 {
            self.redis_status.render(&mut s);
        }
        s
    }
}

/// One histogram: cumulative buckets from per-bucket counts, then sum and count.
fn histogram(s: &mut String, name: &str, help: &str, les: &[f64], buckets: &[AtomicU64], count: u64, sum_ns: u64) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (le, n) in les.iter().zip(buckets) {
        cumulative += n.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(s, "{name}_sum {}", sum_ns as f64 / 1e9);
    let _ = writeln!(s, "{name}_count {count}");
}

/// One counter family with a label: its HELP and TYPE lines, then a line per value.
fn counters_by<'a>(s: &mut String, name: &str, help: &str, label: &str, values: impl Iterator<Item = (&'a str, u64)>) {
    let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, n) in values {
        let _ = writeln!(s, "{name}{{{label}=\"{value}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series() {
        let m = Metrics::default();
        m.error(ErrorCode::TooLong);
        m.close(CloseReason::SlowConsumer);
        m.observe_fanout(0.0003, 2);
        let text = m.render();
        assert!(text.contains("natter_errors_total{code=\"too_long\"} 1"));
        assert!(text.contains("natter_closes_total{reason=\"slow_consumer\"} 1"));
        assert!(text.contains("natter_fanout_seconds_bucket{le=\"0.0005\"} 2"));
        assert!(text.contains("natter_fanout_seconds_count 2"));
        m.observe_acks(0.003, 3);
        let text = m.render();
        assert!(text.contains("natter_ack_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("natter_ack_seconds_bucket{le=\"0.005\"} 3"));
        assert!(text.contains("natter_ack_seconds_count 3"));
    }
}
