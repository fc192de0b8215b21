//! Several natter instances on one Redis: order across instances, resume on another
//! instance, presence across instances and after a crash, a Redis outage that loses no
//! acked message and whose end the first post gets through, epochs and a Redis that
//! lost its data, and scroll-back and search answered from Redis (the scenarios of
//! tests/common/history.rs, which the local store runs too).

mod common;
mod common_redis;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Client, Proc, TestServer};
use common_redis::RedisServer;
use serde_json::json;

fn instance(redis: &RedisServer) -> TestServer {
    instance_with(redis, |_| {})
}

fn instance_with(redis: &RedisServer, tweak: impl FnOnce(&mut natter::config::Config)) -> TestServer {
    let url = redis.url();
    TestServer::start_with(move |c| {
        c.redis = Some(url);
        c.redis_presence_ttl = Duration::from_millis(1500);
        common::unlimited_rate(c);
        tweak(c);
    })
}

#[test]
fn clients_on_two_instances_chat_in_one_order() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let mut alice = a.connect("alice");
    let mut bob = b.connect("bob");
    alice.join("lobby", None);
    bob.join("lobby", None);
    for i in 0..20 {
        alice.send(json!({"type": "msg", "room": "lobby", "text": format!("a{i}"), "id": format!("a{i}")}));
        bob.send(json!({"type": "msg", "room": "lobby", "text": format!("b{i}"), "id": format!("b{i}")}));
    }
    // Both see the same 40 messages in the same gapless order.
    let seen = |c: &mut Client| -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while out.len() < 40 {
            let v = c.recv();
            if v["type"] == "msg" {
                out.push((v["seq"].as_u64().unwrap(), v["text"].as_str().unwrap().to_owned()));
            }
        }
        out
    };
    let (sa, sb) = (seen(&mut alice), seen(&mut bob));
    assert_eq!(sa, sb, "one order on both instances");
    assert_eq!(sa.iter().map(|m| m.0).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
}

#[test]
fn a_client_that_drops_from_a_resumes_on_b_and_misses_nothing() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let mut poster = b.connect("poster");
    poster.join("r", None);
    let mut reader = a.connect("reader");
    reader.join("r", None);
    poster.post("r", "m1", "p1");
    poster.post("r", "m2", "p2");
    let mut last = 0;
    while last < 2 {
        let v = reader.expect("msg");
        last = v["seq"].as_u64().unwrap();
    }
    drop(reader);
    for i in 3..=10 {
        poster.post("r", &format!("m{i}"), &format!("p{i}"));
    }
    let mut reader = b.connect("reader");
    let (joined, history) = reader.join("r", Some(last));
    assert_eq!(joined["head"], 10);
    let seqs = common::history_seqs(&history);
    assert_eq!(seqs, (3..=10).collect::<Vec<_>>());
    assert_eq!(history["complete"], true);
    poster.post("r", "live", "p11");
    assert_eq!(reader.expect("msg")["seq"], 11, "live continues right after the history");
    // A retry through the other instance is still recognised.
    let mut again = a.connect("poster");
    again.join("r", None);
    let dup = again.post("r", "m5", "p5");
    assert_eq!((dup["dup"].as_bool(), dup["seq"].as_u64()), (Some(true), Some(5)));
}

#[test]
fn presence_spans_instances_and_a_crashed_instance_s_users_leave() {
    let redis = RedisServer::start();
    let a = instance(&redis);
    let dir = tempfile::tempdir().unwrap();
    let mut b = Proc::start(dir.path(), None, &["--redis", &redis.url(), "--redis-presence-ttl-ms", "1500"]);
    let mut ann = a.connect("ann");
    ann.join("lobby", None);
    let mut ben = Client::connect(&b.url("ben"));
    let (joined, _) = ben.join("lobby", None);
    let names: HashSet<&str> =
        joined["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, HashSet::from(["ann", "ben"]), "presence from both instances");
    let sys = ann.expect("system");
    assert_eq!((sys["event"].as_str(), sys["user"]["name"].as_str()), (Some("join"), Some("ben")));
    ben.send(json!({"type": "typing", "room": "lobby"}));
    assert_eq!(ann.recv()["type"], "typing");

    // B dies without saying goodbye: ann sees ben leave within the presence expiry.
    b.signal(libc::SIGKILL);
    b.wait(Duration::from_secs(5));
    let started = Instant::now();
    let left = ann.expect("system");
    assert_eq!((left["event"].as_str(), left["user"]["id"].as_str()), (Some("leave"), Some(ben.uid().as_str())));
    assert!(started.elapsed() < Duration::from_secs(5), "within the expiry ({:?})", started.elapsed());
}

#[test]
fn a_redis_outage_loses_no_acked_message() {
    let mut redis = RedisServer::start_persistent();
    let a = instance(&redis);
    let mut c = a.connect("c");
    c.join("r", None);
    let mut acked = Vec::new();
    for i in 0..5 {
        acked.push(c.post("r", &format!("before{i}"), &format!("x{i}"))["seq"].as_u64().unwrap());
    }
    redis.stop();
    c.send(json!({"type": "msg", "room": "r", "text": "during", "id": "down-1"}));
    let e = c.expect("error");
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("unavailable"), Some("down-1")));
    common::wait_until(|| common::http_get(a.http, "/healthz").1.contains("\"redis\":\"down\""), "healthz to say down");
    assert!(a.metrics().contains("natter_redis_up 0"));
    redis.restart();
    // The client retries until the store is back; the same id is then stored once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ack = loop {
        c.send(json!({"type": "msg", "room": "r", "text": "during", "id": "down-1"}));
        let v = loop {
            let v = c.recv();
            if v["type"] == "ack" || v["type"] == "error" {
                break v;
            }
        };
        if v["type"] == "ack" {
            break v;
        }
        assert!(Instant::now() < deadline, "the store never came back");
        std::thread::sleep(Duration::from_millis(100));
    };
    acked.push(ack["seq"].as_u64().unwrap());
    common::wait_until(|| common::http_get(a.http, "/healthz").1.contains("\"redis\":\"up\""), "healthz to say up");
    let mut r = a.connect("reader");
    let (_, history) = r.join("r", Some(0));
    let seqs = common::history_seqs(&history);
    for s in &acked {
        assert!(seqs.contains(s), "acked seq {s} is in history {seqs:?}");
    }
    assert_eq!(seqs, (1..=acked.len() as u64).collect::<Vec<_>>(), "each once, in order");
}

#[test]
fn the_first_post_after_redis_comes_back_is_acked() {
    let mut redis = RedisServer::start_persistent();
    let a = instance(&redis);
    let mut c = a.connect("c");
    c.join("r", None);
    assert_eq!(c.post("r", "before", "b1")["seq"], 1);
    // The instance's command connection to Redis died with it; nothing used it since.
    redis.restart(); // returns once the new redis-server answers PING
    assert_eq!(c.post("r", "after", "a1")["seq"], 2, "acked, not `unavailable`");
    redis.restart();
    c.send(json!({"type": "msg", "room": "r", "text": "without an id"}));
    let m = c.expect("msg"); // an `error unavailable` would fail here
    assert_eq!((m["seq"].as_u64(), m["text"].as_str()), (Some(3), Some("without an id")));
}

/// Joins `room` resuming from `since` of `epoch`; returns (joined, history).
fn resume(c: &mut Client, room: &str, since: u64, epoch: &serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    c.send(json!({"type": "join", "room": room, "since": since, "epoch": epoch}));
    let joined = c.expect("joined");
    (joined, c.expect_history())
}

#[test]
fn when_redis_loses_its_data_rooms_get_a_new_epoch_and_clients_are_reset() {
    let mut redis = RedisServer::start(); // no persistence: a restart loses every room
    let (a, b) = (instance(&redis), instance(&redis));
    let (mut ann, mut ben) = (a.connect("ann"), b.connect("ben"));
    let (joined, _) = ann.join("r", None);
    assert!(joined["epoch"].is_null(), "no message yet, no epoch: {joined}");
    ben.join("r", None);
    assert_eq!(ann.post("r", "one", "a1")["seq"], 1);
    assert_eq!(ben.expect("msg")["seq"], 1);
    assert_eq!(ben.post("r", "two", "b1")["seq"], 2);
    assert_eq!(ann.expect("msg")["seq"], 2);
    // Newcomers on either instance are told one epoch.
    let (on_a, _) = a.connect("carl").join("r", None);
    let (on_b, _) = b.connect("dave").join("r", None);
    let old = on_a["epoch"].clone();
    assert!(old.as_str().is_some_and(|e| e.len() == 16), "{on_a}");
    assert_eq!(on_b["epoch"], old, "both instances agree");
    let (_, h) = resume(&mut b.connect("eve"), "r", 1, &old);
    assert_eq!((common::history_seqs(&h), h.get("reset")), (vec![2], None), "the same epoch resumes");

    redis.restart();
    // Members still connected are reset by their instance, not left waiting for seqs
    // the new history will not reach for a long time.
    for c in [&mut ann, &mut ben] {
        let joined = c.expect("joined");
        let h = c.expect_history();
        assert_eq!((joined["head"].as_u64(), h["reset"].as_bool()), (Some(0), Some(true)), "{joined} {h}");
        assert!(common::history_seqs(&h).is_empty());
    }
    assert_eq!(ann.post("r", "new", "a2")["seq"], 1, "the new history starts at 1");
    let m = ben.expect("msg");
    assert_eq!((m["seq"].as_u64(), m["text"].as_str()), (Some(1), Some("new")), "live across instances again");

    // A client coming back with the old epoch is reset, whether its since is past the
    // new head or not, on either instance, and both give the same new epoch.
    let (ja, ha) = resume(&mut a.connect("fay"), "r", 2, &old);
    let (jb, hb) = resume(&mut b.connect("gus"), "r", 1, &old);
    for h in [&ha, &hb] {
        assert_eq!((h["reset"].as_bool(), common::history_seqs(h)), (Some(true), vec![1]), "{h}");
    }
    assert!(ja["epoch"].is_string() && ja["epoch"] != old, "a new epoch: {ja}");
    assert_eq!(jb["epoch"], ja["epoch"]);
}

#[test]
fn scroll_back_on_another_instance_reaches_the_first_message_past_the_ring() {
    let redis = RedisServer::start();
    let small_ring = |c: &mut natter::config::Config| c.history_per_room = 10;
    let (a, b) = (instance_with(&redis, small_ring), instance_with(&redis, small_ring));
    let (mut poster, mut reader) = (a.connect("poster"), b.connect("reader"));
    common::history::scroll_back_reaches_the_first_message(&mut poster, &mut reader);
}

#[test]
fn search_on_another_instance_finds_words_in_any_language() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let (mut poster, mut searcher) = (a.connect("poster"), b.connect("searcher"));
    common::history::search_finds_words_in_any_language(&mut poster, &mut searcher);
}

#[test]
fn a_resume_past_what_redis_keeps_says_where_it_starts() {
    let redis = RedisServer::start();
    let small = |c: &mut natter::config::Config| c.redis_stream_cap = 10;
    let (a, b) = (instance_with(&redis, small), instance_with(&redis, small));
    let mut poster = a.connect("poster");
    poster.join("r", None);
    for i in 1..=300 {
        poster.post("r", &format!("m{i}"), &format!("p{i}"));
    }
    let mut late = b.connect("late");
    let (_, h) = late.join("r", Some(2));
    let first = h["first"].as_u64().expect("an incomplete resume names its first seq");
    assert_eq!(h["complete"], false);
    assert!(first > 3, "messages 3.. were trimmed: {h}");
    assert_eq!(common::history_seqs(&h), (first..=300).collect::<Vec<_>>());
    late.send(json!({"type": "history", "room": "r", "before": first, "limit": 200}));
    let older = late.expect_history();
    assert_eq!((common::history_seqs(&older), older["complete"].as_bool()), (vec![], Some(true)), "nothing older held");
    let (_, h) = b.connect("recent").join("r", Some(298));
    assert_eq!((common::history_seqs(&h), h["complete"].as_bool(), h.get("first")), (vec![299, 300], Some(true), None));
}
