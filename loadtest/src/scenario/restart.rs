//! The `restart` scenario: the server is restarted under connected clients and what
//! users feel is measured — the time from the restart until every client is back and
//! has resumed (the last history page of its `join {since, epoch}`), each client's
//! own time away, and whether anything the server acked was lost or came twice.
//!
//! The restart is `--restart-cmd`, one shell command (SIGTERM the old server, start
//! the new binary on the same port: loadtest/run.sh). Every client sends in its room
//! throughout, at `--rate` in total; clients come back with natter-client.js's
//! backoff (`worker/resume.rs`). A probe counts as lost when the server acked it and
//! a member of its room never got it, live or in its resume.

use super::{open_clients, Outcome, Run};
use crate::stats::{ms, Progress};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// Longest wait for every client to be back.
const BACK_LIMIT: Duration = Duration::from_secs(60);

pub fn restart(r: &Run) -> Outcome {
    let (fleet, args) = (r.fleet, r.args);
    let mut o = Outcome::new(args.scenario(), args.clients);
    o.connect_secs = open_clients(fleet, args, args.clients, "connect");
    fleet.await_joined("connect", Duration::from_secs(60));
    fleet.reset_ledgers();
    let _ = fleet.snapshot();
    let clients = Progress::get(&fleet.progress.open);
    let delivered0 = Progress::get(&fleet.progress.delivered);
    fleet.send_from_all(args.rate, Duration::from_secs(args.max_seconds));
    fleet.hold("before", Duration::from_secs_f64(args.duration));

    let t0 = Instant::now();
    let status = match &args.restart_cmd {
        Some(cmd) => Command::new("sh").arg("-c").arg(cmd).status().map_err(|e| e.to_string()),
        None => Err("--restart-cmd is required".into()),
    };
    let cmd_secs = t0.elapsed().as_secs_f64();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => o.notes.push(format!("--restart-cmd failed: {s}")),
        Err(e) => o.notes.push(format!("--restart-cmd failed: {e}")),
    }
    let all_back = fleet.wait_until("restart", BACK_LIMIT, |p| Progress::get(&p.resumed) >= clients);
    let back_secs = t0.elapsed().as_secs_f64();
    fleet.hold("after", Duration::from_secs_f64(args.duration));
    fleet.send_from_all(0.0, Duration::ZERO);
    fleet.sync();
    let quiet = Duration::from_millis(args.drain_ms);
    fleet.drain("drain", delivered0, u64::MAX, quiet, quiet * 5);
    o.stats = fleet.snapshot();
    let acked = fleet.acked(args.rooms);
    let acked_count: usize = acked.iter().map(Vec::len).sum();
    let (checked, missing) = fleet.audit(acked);
    o.receivers = clients;
    o.expected = checked;

    let h = &o.stats.resume_us;
    let head = &mut o.headline;
    head.insert("back_secs".into(), json!((back_secs * 100.0).round() / 100.0));
    head.insert("all_back".into(), json!(u8::from(all_back)));
    head.insert("resumed".into(), json!(Progress::get(&fleet.progress.resumed)));
    head.insert("resume_p50_ms".into(), json!(ms(h.value_at_quantile(0.5))));
    head.insert("resume_p99_ms".into(), json!(ms(h.value_at_quantile(0.99))));
    head.insert("restart_cmd_secs".into(), json!((cmd_secs * 100.0).round() / 100.0));
    head.insert("acked".into(), json!(acked_count));
    head.insert("lost".into(), json!(missing));
    head.insert("duplicated".into(), json!(o.stats.duplicates));
    head.insert("resets".into(), json!(o.stats.resets));
    head.insert("tls_resumed".into(), json!(o.stats.tls_resumed));
    o.notes.push(format!(
        "{clients} clients; {acked_count} probes acked; {checked} (member, acked probe) pairs checked, {missing} missing"
    ));
    o
}
