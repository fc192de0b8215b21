//! One million stored rooms, most of them DMs: start-up and the join of a cold room
//! stay fast, because no room is read at start and a room comes back from the store
//! by name when it is used (`dispatcher::eviction`, `SqliteStore::load_room`).
//!
//! - `rooms_1m/open_store`: what start-up reads from the store (`SqliteStore::open`:
//!   schema, journal import check, who may join what), with 1,000,000 rooms stored;
//! - `rooms_1m/cold_join`: the store's part of joining a room that is not in memory
//!   (its head, epoch, newest `--history` messages and read markers), for a room picked
//!   at random among the million.
//!
//! The store is seeded once through the server's own write path (`SqliteStore::append`,
//! `change_access`, `commit`, 10,000 rooms per transaction: 9 in 10 are DM rooms with
//! their DM fact, each room has 2 messages) and kept in
//! `target/bench-rooms-1m/` for later runs; delete that directory to seed again.
//!
//! `cargo bench -p natter --bench rooms`

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TEXT;
use criterion::Criterion;
use natter::config::FsyncPolicy;
use natter::protocol::ServerMsg;
use natter::store::sqlite::SqliteStore;
use natter::store::{AccessChange, NewMessage};

const ROOMS: u64 = 1_000_000;
const MESSAGES_PER_ROOM: u64 = 2;
const ROOMS_PER_COMMIT: u64 = 10_000;
const HISTORY: usize = 1000;

/// Room `i`: nine in ten are DM rooms (named as the server names them: `dm.` and 20
/// hex digits), the rest public rooms.
fn room_name(i: u64) -> String {
    if i.is_multiple_of(10) {
        format!("room-{i}")
    } else {
        format!("dm.{:020x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
}

fn message(room: &str, seq: u64, uid: &str) -> NewMessage {
    let json = ServerMsg::Msg {
        room,
        seq,
        id: Some("c-0123456789"),
        ts: 1_790_000_000_000,
        user: uid,
        uid,
        text: TEXT,
        files: &[],
    }
    .to_json();
    NewMessage {
        room: room.to_owned(),
        epoch: "0123456789abcdef".into(),
        seq,
        ts: 1_790_000_000_000,
        text: TEXT.into(),
        json: Bytes::from(json),
    }
}

/// The seeded data dir, seeding it first when it is not there yet.
fn seeded() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-rooms-1m");
    let done = dir.join(format!("seeded-{ROOMS}"));
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let mut store = SqliteStore::open(&dir, FsyncPolicy::Never).expect("open the bench store");
    for i in 0..ROOMS {
        let room = room_name(i);
        let (a, b) = (format!("u-{}", i % 5000), format!("u-{}", (i / 5000) % 5000 + 5000));
        if !i.is_multiple_of(10) {
            store.change_access(AccessChange::Dm { room: room.clone(), a: a.clone(), b: b.clone() });
        }
        for seq in 1..=MESSAGES_PER_ROOM {
            store.append(message(&room, seq, if seq.is_multiple_of(2) { &b } else { &a }));
        }
        if (i + 1).is_multiple_of(ROOMS_PER_COMMIT) {
            store.commit().expect("commit");
        }
    }
    store.close().expect("close");
    std::fs::write(&done, b"").expect("mark the store seeded");
    eprintln!("rooms: seeded {ROOMS} rooms in {:.1} s", started.elapsed().as_secs_f64());
    dir
}

fn main() {
    let dir = seeded();
    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("rooms_1m");
    g.sample_size(10).measurement_time(Duration::from_secs(10)).warm_up_time(Duration::from_secs(1));
    g.bench_function("open_store", |b| {
        b.iter(|| SqliteStore::open(&dir, FsyncPolicy::Never).expect("open"));
    });
    let mut store = SqliteStore::open(&dir, FsyncPolicy::Never).expect("open");
    let mut pick = 0x2545_F491_4F6C_DD1Du64;
    g.sample_size(100).measurement_time(Duration::from_secs(5));
    g.bench_function("cold_join", |b| {
        b.iter(|| {
            pick = pick.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let room = room_name((pick >> 11) % ROOMS);
            let loaded = store.load_room(&room, HISTORY).expect("read").expect("a stored room");
            assert_eq!(loaded.head, MESSAGES_PER_ROOM);
            store.forget_room(&room);
            loaded
        });
    });
    g.finish();
    c.final_summary();
}
