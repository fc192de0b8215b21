//! The admin console's overview (`GET /api/v1/admin/overview`): the counters the
//! console charts (connections, rooms, messages and deliveries so far, from which it
//! draws per-second rates), the store's size and retention, webhook queues, the
//! process's memory and threads, and every plain series of `/metrics` (so Redis
//! master and reader health appear as the metrics name them).
//!
//! Answered on the API's worker thread from [`Metrics`] and small reads of `/proc` and
//! the store's file sizes; never asks the dispatcher and never touches chat state.

use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::metrics::Metrics;

/// The overview as JSON.
pub fn overview(metrics: &Metrics, cfg: &Config) -> Value {
    let store = match &cfg.redis {
        None => json!({
            "kind": "sqlite",
            "bytes": sqlite_bytes(&crate::store::sqlite::db_path(&cfg.data_dir)),
            "retention_days": cfg.retention_days,
            "retention_messages": cfg.retention_messages,
            "max_bytes": cfg.max_store_bytes,
            "audit_retention_days": cfg.audit_retention_days,
        }),
        Some(_) => json!({
            "kind": "redis",
            "bytes": null,
            "stream_cap": cfg.redis_stream_cap,
            "audit_retention_days": cfg.audit_retention_days,
        }),
    };
    let (rss, threads) = process();
    json!({
        "ts": crate::bans::now_ms(),
        "uptime_s": metrics.uptime_s(),
        "connections": metrics.connections.load(Relaxed),
        "rooms": metrics.rooms.load(Relaxed),
        "messages_total": metrics.messages_accepted.load(Relaxed),
        "deliveries_total": metrics.deliveries.load(Relaxed),
        "store": store,
        "process": { "rss_bytes": rss, "threads": threads },
        "metrics": plain_series(&metrics.render()),
    })
}

/// The database and its WAL, in bytes.
fn sqlite_bytes(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db) + size(Path::new(&wal))
}

/// Resident memory (bytes) and threads of this process, from `/proc/self/status`.
fn process() -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return (None, None) };
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
    };
    (field("VmRSS:").map(|kb| kb * 1024), field("Threads:"))
}

/// `name value` lines of a Prometheus text (labelled series and histograms skipped).
fn plain_series(text: &str) -> Map<String, Value> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            let n: f64 = value.trim().parse().ok()?;
            Some((name.to_owned(), serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)))
        })
        .collect()
}
