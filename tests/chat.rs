//! Chat guarantees with real sockets: broadcast scope, gapless order under concurrent
//! senders, resume with `since`, and effectively-once retries.

mod common;

use std::collections::HashSet;

use common::{Client, TestServer};
use serde_json::json;

#[test]
fn broadcast_reaches_every_member_and_only_them() {
    let server = TestServer::start();
    let mut alice = server.connect("alice");
    let mut bob = server.connect("bob");
    let mut carol = server.connect("carol");
    alice.join("lobby", None);
    bob.join("lobby", None);
    carol.join("elsewhere", None);

    alice.send(json!({"type": "msg", "room": "lobby", "text": "hello all", "id": "a-1"}));
    let ack = alice.expect("ack");
    assert_eq!(ack, json!({"type": "ack", "id": "a-1", "room": "lobby", "seq": 1, "dup": false}));
    let own = alice.expect("msg");
    assert_eq!(
        (own["text"].as_str(), own["user"].as_str(), own["seq"].as_u64()),
        (Some("hello all"), Some("alice"), Some(1))
    );
    let got = bob.expect("msg");
    assert_eq!(got["text"], "hello all");
    assert_eq!(got["uid"].as_str(), Some(alice.uid().as_str()));
    assert_eq!(got["id"], "a-1");

    // carol is not in lobby: the next frame she gets is from her own room.
    bob.join("elsewhere", None);
    bob.post("elsewhere", "only here", "b-1");
    let next = carol.expect("msg");
    assert_eq!(next["room"], "elsewhere");
    assert_eq!(next["text"], "only here");
}

#[test]
fn identity_is_stamped_by_the_server() {
    let server = TestServer::start();
    let mut mallory = server.connect("mallory");
    let mut bob = server.connect("bob");
    mallory.join("lobby", None);
    bob.join("lobby", None);
    mallory.send(json!({"type": "msg", "room": "lobby", "text": "hi", "user": "bob", "uid": "u-bob"}));
    let m = bob.expect("msg");
    assert_eq!((m["user"].as_str(), m["uid"].as_str()), (Some("mallory"), Some(mallory.uid().as_str())));
}

#[test]
fn seed_tutorial_frames_post_to_lobby() {
    let server = TestServer::start();
    let mut seed = server.connect("seed");
    let mut bob = server.connect("bob");
    bob.join("lobby", None);
    seed.send(json!({"user": "someone-else", "text": "from the tutorial"}));
    let m = bob.expect("msg");
    assert_eq!((m["text"].as_str(), m["user"].as_str()), (Some("from the tutorial"), Some("seed")));
    let echo = seed.recv();
    assert_eq!(
        (echo["type"].as_str(), echo["text"].as_str()),
        (Some("msg"), Some("from the tutorial")),
        "joined to lobby silently"
    );
}

#[test]
fn seq_is_gapless_and_ordered_with_concurrent_senders() {
    const SENDERS: usize = 4;
    const EACH: usize = 150;
    let server = TestServer::start_with(common::unlimited_rate);
    let mut watchers: Vec<Client> = (0..3).map(|i| server.connect(&format!("w{i}"))).collect();
    for w in &mut watchers {
        w.join("race", None);
    }
    let url = server.url("s");
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&format!("{url}{s}"));
                c.join("race", None);
                for i in 0..EACH {
                    c.send(
                        json!({"type": "msg", "room": "race", "text": format!("{s}:{i}"), "id": format!("{s}-{i}")}),
                    );
                }
                let mut acks = 0;
                while acks < EACH {
                    if c.recv()["type"] == "ack" {
                        acks += 1;
                    }
                }
            })
        })
        .collect();
    for w in &mut watchers {
        let mut last_per_sender = [-1i64; SENDERS];
        for expected in 1..=(SENDERS * EACH) as u64 {
            let m = w.expect("msg");
            assert_eq!(m["seq"].as_u64(), Some(expected), "gapless, in order");
            let (s, i) = m["text"].as_str().unwrap().split_once(':').unwrap();
            let (s, i): (usize, i64) = (s.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, last_per_sender[s] + 1, "each sender's messages keep their order");
            last_per_sender[s] = i;
        }
    }
    for s in senders {
        s.join().unwrap();
    }
}

#[test]
fn resume_with_since_gives_exactly_the_missed_messages_before_live_ones() {
    let server = TestServer::start_with(common::unlimited_rate);
    let mut poster = server.connect("poster");
    poster.join("r", None);
    let mut reader = server.connect("reader");
    reader.join("r", None);
    for i in 1..=5 {
        poster.post("r", &format!("m{i}"), &format!("p{i}"));
    }
    let mut last = 0;
    for _ in 0..5 {
        last = reader.expect("msg")["seq"].as_u64().unwrap();
    }
    assert_eq!(last, 5);
    drop(reader);

    for i in 6..=20 {
        poster.post("r", &format!("m{i}"), &format!("p{i}"));
    }
    // A flood of live messages keeps coming while the reader resumes.
    let url = server.url("flooder");
    let flood = std::thread::spawn(move || {
        let mut f = Client::connect(&url);
        f.join("r", None);
        for i in 0..200 {
            f.send(json!({"type": "msg", "room": "r", "text": format!("live{i}"), "id": format!("f{i}")}));
        }
        let mut acks = 0;
        while acks < 200 {
            if f.recv()["type"] == "ack" {
                acks += 1;
            }
        }
    });
    let mut reader = server.connect("reader");
    reader.send(json!({"type": "join", "room": "r", "since": last}));
    let joined = reader.expect("joined");
    let head = joined["head"].as_u64().unwrap();
    // The next frame about room r must be the history, not a live message.
    let history = reader.expect("history");
    assert_eq!(history["complete"], true);
    let seqs = common::history_seqs(&history);
    assert_eq!(seqs, (6..=head).collect::<Vec<_>>(), "exactly the missed messages, oldest first");
    assert_eq!(history["messages"][0]["text"], "m6");
    flood.join().unwrap();
    // Live messages continue right after the history's last seq.
    let mut expected = head + 1;
    while expected <= 220 {
        let m = reader.expect("msg");
        assert_eq!(m["seq"].as_u64(), Some(expected));
        expected += 1;
    }
}

/// Posts m1..m30 into `room` (ids i1..i30).
fn post_thirty(server: &TestServer, room: &str) {
    let mut p = server.connect("p");
    p.join(room, None);
    for i in 1..=30 {
        p.post(room, &format!("m{i}"), &format!("i{i}"));
    }
}

#[test]
fn resume_past_the_ring_is_served_from_the_store() {
    let server = TestServer::start_with(|c| {
        c.history_per_room = 10;
        common::unlimited_rate(c);
    });
    post_thirty(&server, "r");
    let mut late = server.connect("late");
    let (_, history) = late.join("r", Some(3));
    assert_eq!(history["complete"], true, "the store still has all of it");
    assert_eq!(common::history_seqs(&history), (4..=30).collect::<Vec<_>>());
}

#[test]
fn a_resume_longer_than_max_resume_says_where_it_starts() {
    let server = TestServer::start_with(|c| {
        c.history_per_room = 10;
        c.max_resume = 5;
        common::unlimited_rate(c);
    });
    post_thirty(&server, "r");
    let mut late = server.connect("late");
    let (_, history) = late.join("r", Some(3));
    assert_eq!((history["complete"].as_bool(), history["first"].as_u64()), (Some(false), Some(16)));
    assert_eq!(common::history_seqs(&history), (16..=30).collect::<Vec<_>>(), "5 from the store, 10 from memory");
    // What was left out is there for scroll-back.
    late.send(json!({"type": "history", "room": "r", "before": 16, "limit": 200}));
    let older = late.expect_history();
    assert_eq!((common::history_seqs(&older), older["complete"].as_bool()), ((1..=15).collect(), Some(true)));
}

#[test]
fn a_retried_id_is_acked_as_duplicate_and_not_broadcast_again() {
    let server = TestServer::start();
    let mut sender = server.connect("sender");
    let mut watcher = server.connect("watcher");
    sender.join("lobby", None);
    watcher.join("lobby", None);
    let first = sender.post("lobby", "once", "retry-me");
    assert_eq!(first["dup"], false);
    let seq = first["seq"].clone();

    // The retry comes on a new connection, as after a reconnect.
    drop(sender);
    let mut sender = server.connect("sender");
    sender.join("lobby", None);
    let retry = sender.post("lobby", "once", "retry-me");
    assert_eq!(retry, json!({"type": "ack", "id": "retry-me", "room": "lobby", "seq": seq, "dup": true}));
    sender.post("lobby", "marker", "m-2");

    let mut texts = Vec::new();
    loop {
        let m = watcher.expect("msg");
        texts.push(m["text"].as_str().unwrap().to_owned());
        if m["text"] == "marker" {
            break;
        }
    }
    assert_eq!(texts, vec!["once", "marker"], "the retry was not broadcast");

    // The same id from another user is a different message.
    let other = watcher.post("lobby", "mine", "retry-me");
    assert_eq!(other["dup"], false);
}

#[test]
fn rooms_presence_typing_and_nick() {
    let server = TestServer::start();
    let mut a = server.connect("ann");
    let (joined, _) = a.join("lobby", None);
    assert_eq!(joined["users"], json!([{"id": a.uid(), "name": "ann"}]));
    let mut b = server.connect("ben");
    let (joined, _) = b.join("lobby", None);
    let names: HashSet<&str> =
        joined["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    assert_eq!(names, HashSet::from(["ann", "ben"]));
    let sys = a.recv();
    assert_eq!(
        (sys["type"].as_str(), sys["event"].as_str(), sys["user"]["name"].as_str()),
        (Some("system"), Some("join"), Some("ben"))
    );

    b.send(json!({"type": "typing", "room": "lobby"}));
    let t = a.recv();
    assert_eq!((t["type"].as_str(), t["user"]["name"].as_str()), (Some("typing"), Some("ben")));

    b.send(json!({"type": "nick", "name": "benjamin"}));
    let n = a.recv();
    assert_eq!(
        (n["event"].as_str(), n["user"]["name"].as_str(), n["user"]["id"].as_str()),
        (Some("nick"), Some("benjamin"), Some(b.uid().as_str()))
    );
    assert_eq!(b.recv()["event"], "nick", "the renamer sees its own rename");

    b.send(json!({"type": "leave", "room": "lobby"}));
    let l = a.recv();
    assert_eq!((l["event"].as_str(), l["user"]["name"].as_str()), (Some("leave"), Some("benjamin")));
    b.send(json!({"type": "msg", "room": "lobby", "text": "x", "id": "z"}));
    let e = b.expect("error");
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("not_joined"), Some("z")));

    // Closing the socket is a leave too.
    b.join("lobby", None);
    assert_eq!(a.recv()["event"], "join");
    let ben = b.uid();
    drop(b);
    let l = a.recv();
    assert_eq!((l["event"].as_str(), l["user"]["id"].as_str()), (Some("leave"), Some(ben.as_str())));
}

#[test]
fn room_limit_per_connection() {
    let server = TestServer::start_with(|c| c.max_rooms_per_conn = 2);
    let mut c = server.connect("c");
    c.join("a", None);
    c.join("b", None);
    c.send(json!({"type": "join", "room": "c"}));
    assert_eq!(c.expect("error")["code"], "room_limit");
    c.send(json!({"type": "leave", "room": "a"}));
    c.join("c", None);
}

#[test]
fn http_side_serves_page_config_health_and_metrics() {
    let server = TestServer::start();
    let (status, body) = common::http_get(server.http, "/");
    assert_eq!(status, 200);
    assert!(body.contains("<html") || body.contains("<!doctype") || body.contains("<!DOCTYPE"));
    let (status, body) = common::http_get(server.http, "/config.json");
    assert_eq!(status, 200);
    let cfg: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["auth"], "open");
    assert!(cfg["ws_url"].as_str().unwrap().ends_with(&format!(":{}/ws", server.ws.port())));
    let _c = server.connect("x");
    server.wait_metric("natter_connections", 1);
    let (_, body) = common::http_get(server.http, "/healthz");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["connections"], 1);
    assert!(h["uptime_s"].is_u64());
    let (status, _) = common::http_get(server.http, "/nope");
    assert_eq!(status, 404);
    // /metrics moved off the public port (--admin-bind).
    assert_eq!(common::http_get(server.http, "/metrics").0, 404);
    let (status, body) = common::http_get(server.admin, "/metrics");
    assert!(status == 200 && body.contains("natter_connections 1"));
}

#[test]
fn large_rooms_list_a_sample_and_stop_announcing_presence() {
    let server = TestServer::start_with(|c| c.presence_limit = 2);
    let mut a = server.connect("a");
    a.join("big", None);
    let mut b = server.connect("b");
    let (joined, _) = b.join("big", None);
    assert_eq!((joined["users"].as_array().unwrap().len(), joined["users_total"].as_u64()), (2, Some(2)));
    assert_eq!(a.recv()["event"], "join", "small rooms announce");
    let mut c = server.connect("c");
    let (joined, _) = c.join("big", None);
    assert_eq!((joined["users"].as_array().unwrap().len(), joined["users_total"].as_u64()), (2, Some(3)));
    // Past the limit: no join, leave or rename reaches the others, but the renamer
    // still sees its own rename; messages flow as always.
    c.send(json!({"type": "nick", "name": "cee"}));
    assert_eq!(c.recv()["event"], "nick");
    drop(c);
    b.post("big", "after the crowd", "b1");
    let next = a.recv();
    assert_eq!((next["type"].as_str(), next["text"].as_str()), (Some("msg"), Some("after the crowd")));
}
