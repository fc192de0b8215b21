//! The room table cannot be filled: rooms nobody is in leave memory (at once when they
//! never held a message), `--max-rooms` bounds the rooms in memory and never the rooms
//! that ever existed, an evicted room comes back from the store as it was, and a
//! connection creates new rooms at `--room-creates` a minute at most.

mod common;

use common::TestServer;
use serde_json::json;

/// `natter_rooms` as /metrics reports it.
fn rooms_in_memory(server: &TestServer) -> u64 {
    let metrics = server.metrics();
    let line = metrics.lines().find(|l| l.starts_with("natter_rooms ")).expect("natter_rooms in /metrics");
    line["natter_rooms ".len()..].parse().expect("a number")
}

#[test]
fn junk_rooms_joined_and_left_never_fill_a_small_table() {
    let server = TestServer::start_with(|c| {
        c.max_rooms = 5;
        c.room_creates_per_min = 10_000;
        common::unlimited_rate(c);
    });
    let mut junk: Vec<_> = (0..4).map(|i| server.connect(&format!("junk{i}"))).collect();
    for n in 0..60 {
        let c = &mut junk[n % 4];
        let room = format!("junk-{n}");
        let (joined, _) = c.join(&room, None);
        assert_eq!(joined["room"], room.as_str(), "junk-{n} is joined, never room_limit");
        c.send(json!({"type": "leave", "room": room}));
        assert!(rooms_in_memory(&server) <= 5);
    }
    // Afterwards anyone can still make a room, a private room and a DM.
    let mut alice = server.connect("alice");
    let mut bob = server.connect("bob");
    alice.join("real", None);
    alice.send(json!({"type": "join", "private": true, "title": "secret"}));
    assert_eq!(alice.expect("joined")["private"], true);
    alice.expect_history();
    alice.send(json!({"type": "dm", "user": bob.uid()}));
    let dm = alice.expect("dm");
    bob.expect("dm");
    let (joined, _) = bob.join(dm["room"].as_str().unwrap(), None);
    assert_eq!(joined["private"], true);
}

#[test]
fn an_evicted_room_comes_back_with_its_seq_history_and_resume() {
    let server = TestServer::start_with(|c| {
        c.max_rooms = 2;
        c.history_per_room = 4;
        common::unlimited_rate(c);
    });
    let mut alice = server.connect("alice");
    let (joined, _) = alice.join("keep", None);
    assert_eq!(joined["head"], 0);
    for i in 1..=6 {
        alice.post("keep", &format!("m{i}"), &format!("k{i}"));
    }
    let (joined, _) = alice.join("keep", None);
    let epoch = joined["epoch"].clone();
    alice.send(json!({"type": "leave", "room": "keep"}));
    // Two rooms in use push `keep` (idle) out of memory.
    alice.join("a", None);
    alice.post("a", "x", "a1");
    alice.join("b", None);
    alice.post("b", "x", "b1");
    server.wait_metric("natter_rooms_evicted_total", 1);
    assert!(rooms_in_memory(&server) <= 2);
    alice.send(json!({"type": "leave", "room": "a"}));
    // A resume older than the reloaded ring (3..=6) reads the rest from the store.
    let mut bob = server.connect("bob");
    bob.send(json!({"type": "join", "room": "keep", "since": 1, "epoch": epoch}));
    let joined = bob.expect("joined");
    let history = bob.expect_history();
    assert_eq!((joined["head"].as_u64(), &joined["epoch"]), (Some(6), &epoch));
    assert_eq!(common::history_seqs(&history), [2, 3, 4, 5, 6]);
    assert_eq!(history["complete"], true);
    // The same id again is a duplicate; a new one continues at 7.
    let (joined, _) = alice.join("keep", None);
    assert_eq!(joined["head"], 6);
    assert_eq!(alice.post("keep", "m6", "k6")["dup"], true);
    assert_eq!(alice.post("keep", "m7", "k7")["seq"], 7);
    assert!(rooms_in_memory(&server) <= 2);
}

#[test]
fn a_connection_creating_rooms_too_fast_gets_create_limited() {
    let server = TestServer::start_with(|c| {
        c.room_creates_per_min = 2;
        common::unlimited_rate(c);
    });
    let mut mallory = server.connect("mallory");
    mallory.join("n1", None);
    mallory.join("n2", None);
    mallory.send(json!({"type": "join", "room": "n3"}));
    let e = mallory.expect("error");
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("create_limited"), Some("join")));
    assert!(server.metrics().contains("natter_errors_total{code=\"create_limited\"} 1"));
    // Rooms that exist are still joined.
    let mut alice = server.connect("alice");
    alice.join("lobby", None);
    let (joined, _) = mallory.join("lobby", None);
    assert_eq!(joined["room"], "lobby");
}
