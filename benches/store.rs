//! The local store's write path: append + commit per message, in batches of 1, 100
//! and 1,000 messages (one transaction per batch, as the dispatcher commits), for
//! each `--fsync` policy. Uses the server's own `SqliteStore` and message JSON.
//!
//! `cargo bench -p natter --bench store`; criterion reports the time of one batch,
//! the group's throughput line gives it per message.

mod common;

use common::{sample_msg, TEXT};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use natter::config::FsyncPolicy;
use natter::store::sqlite::SqliteStore;
use natter::store::NewMessage;

fn message(seq: u64) -> NewMessage {
    let json = sample_msg(seq).to_json();
    NewMessage {
        room: "lobby".into(),
        epoch: "0123456789abcdef".into(),
        seq,
        ts: 1_790_000_000_000,
        text: TEXT.into(),
        json: Bytes::from(json),
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("store_commit");
    g.sample_size(20).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for policy in [FsyncPolicy::Never, FsyncPolicy::Interval, FsyncPolicy::Always] {
        for batch in [1u64, 100, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let mut store = SqliteStore::open(dir.path(), policy).unwrap();
            let mut seq = 0;
            g.throughput(Throughput::Elements(batch));
            let name = format!("{policy:?}").to_lowercase();
            g.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| {
                    for _ in 0..batch {
                        seq += 1;
                        store.append(message(seq));
                    }
                    store.commit().unwrap();
                })
            });
        }
    }
    g.finish();
    c.final_summary();
}
