//! What rights cost per join with a large `rooms` claim: the check a join makes
//! against a 100-pattern claim (a room matching the last pattern, and one matching
//! none: both scan every pattern), and reading such a claim from a token (once per
//! connection, at the handshake).
//!
//! `cargo bench -p natter --bench access`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use natter::access::{Access, RoomPatterns, RoomsDefault};
use natter::protocol::RoomName;
use serde_json::{json, Value};

/// 100 patterns: 50 exact names and 50 `prefix*` patterns.
fn claim() -> Value {
    let exact = (0..50).map(|i| format!("room-{i:03}"));
    let prefixes = (0..50).map(|i| format!("team-{i:03}-*"));
    json!(exact.chain(prefixes).collect::<Vec<_>>())
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("join_rights");
    g.sample_size(50).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    let claim = claim();
    let access = Access { rooms: Some(RoomPatterns::from_claim(&claim).unwrap()), ..Access::default() };
    let last = RoomName::parse("team-049-general").unwrap();
    let none = RoomName::parse("elsewhere").unwrap();
    g.bench_function("check_100_patterns_last_matches", |b| {
        b.iter(|| access.may_join(black_box(&last), RoomsDefault::Open))
    });
    g.bench_function("check_100_patterns_none_matches", |b| {
        b.iter(|| access.may_join(black_box(&none), RoomsDefault::Open))
    });
    g.bench_function("parse_100_pattern_claim", |b| b.iter(|| RoomPatterns::from_claim(black_box(&claim))));
    g.finish();
}
