//! What a message carries besides its text — reactions, replies and mentions — and
//! their bad input, each scenario written once and run against one instance (SQLite)
//! and against two instances sharing Redis (the poster and the watcher on different
//! instances).

mod common;
mod common_redis;

use std::time::Duration;

use common::{Client, TestServer};
use common_redis::RedisServer;
use serde_json::{json, Value};

fn local() -> TestServer {
    TestServer::start_with(common::unlimited_rate)
}

fn on_redis(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::start_with(move |c| {
        c.redis = Some(url);
        c.redis_presence_ttl = Duration::from_millis(1500);
        common::unlimited_rate(c);
    })
}

/// The next `error` whose `ref` is `reference`, or the next frame of type `kind`.
fn answer(c: &mut Client, kind: &str, reference: &str) -> Value {
    loop {
        let v = c.recv();
        if v["type"] == kind || (v["type"] == "error" && v["ref"] == reference) {
            return v;
        }
    }
}

/// Toggles `c`'s reaction and returns the event it made (or the error).
fn react(c: &mut Client, room: &str, seq: u64, emoji: &str) -> Value {
    c.send(json!({"type": "react", "room": room, "seq": seq, "emoji": emoji}));
    let uid = c.uid();
    loop {
        let v = c.recv();
        if (v["type"] == "react" && v["uid"] == uid.as_str() && v["emoji"] == emoji) || v["type"] == "error" {
            return v;
        }
    }
}

fn refused(c: &mut Client, m: Value, reference: &str) -> (String, String) {
    c.send(m);
    let v = answer(c, "never", reference);
    (v["code"].as_str().unwrap_or("?").to_owned(), v["message"].as_str().unwrap_or("").to_owned())
}

/// The message `seq` of a history frame.
fn message(history: &Value, seq: u64) -> Value {
    let messages = history["messages"].as_array().expect("messages");
    messages.iter().find(|m| m["seq"] == seq).cloned().unwrap_or_else(|| panic!("no {seq} in {history}"))
}

/// Reactions are toggled, told to everyone as events with their own seq (a resume
/// replays them in order), and every kind of history shows each message's current
/// reactions (emoji → who reacted, in order); bad reactions get clear errors.
fn reactions_scenario(a: &TestServer, b: &TestServer) {
    let (mut alice, mut bob) = (a.connect("alice"), b.connect("bob"));
    let (ua, ub) = (alice.uid(), bob.uid());
    alice.join("r", None);
    bob.join("r", None);
    alice.post("r", "hello", "m1");
    alice.post("r", "bye", "m2");

    let on = react(&mut bob, "r", 1, "👍");
    assert_eq!(
        (on["seq"].as_u64(), on["of"].as_u64(), on["emoji"].as_str(), on["on"].as_bool(), on["uid"].as_str()),
        (Some(3), Some(1), Some("👍"), Some(true), Some(ub.as_str()))
    );
    let seen = alice.next_of("react");
    assert_eq!((seen["seq"].as_u64(), seen["on"].as_bool()), (Some(3), Some(true)), "the other member sees it");
    assert_eq!(react(&mut alice, "r", 1, "👍")["seq"], 4);
    assert_eq!(react(&mut alice, "r", 1, "🎉")["seq"], 5);
    let off = react(&mut bob, "r", 1, "👍");
    assert_eq!((off["seq"].as_u64(), off["on"].as_bool()), (Some(6), Some(false)), "a second toggle takes it off");

    let want = json!({"👍": [ua], "🎉": [ua]});
    let (joined, history) = b.connect("carol").join("r", None);
    assert_eq!(joined["head"], 6);
    assert_eq!(message(&history, 1)["reactions"], want, "a joiner sees the reactions as they are");
    assert_eq!(message(&history, 1)["text"], "hello");
    assert_eq!(message(&history, 2).get("reactions"), None, "no reactions, no field");
    let (_, resumed) = b.connect("carol").join("r", Some(2));
    let events: Vec<(u64, bool)> = resumed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["seq"].as_u64().unwrap(), m["on"].as_bool().unwrap()))
        .collect();
    assert_eq!(events, [(3, true), (4, true), (5, true), (6, false)], "a resume replays them in order");
    let older = common::history::ask(&mut bob, json!({"type": "history", "room": "r", "before": 3, "limit": 2}));
    assert_eq!(message(&older, 1)["reactions"], want, "scroll-back too");

    // An edit keeps the reactions; a deleted message takes none.
    alice.send(json!({"type": "edit", "room": "r", "seq": 1, "text": "hello all", "id": "e1"}));
    answer(&mut alice, "ack", "e1");
    let (_, history) = b.connect("dave").join("r", None);
    assert_eq!((message(&history, 1)["text"].as_str(), &message(&history, 1)["reactions"]), (Some("hello all"), &want));
    alice.send(json!({"type": "delete", "room": "r", "seq": 2, "id": "d1"}));
    answer(&mut alice, "ack", "d1");
    let r = |seq: u64, emoji: &str| json!({"type": "react", "room": "r", "seq": seq, "emoji": emoji});
    let (code, text) = refused(&mut bob, r(2, "👍"), "react");
    assert_eq!((code.as_str(), text.contains("deleted")), ("not_found", true), "{text}");
    let (code, text) = refused(&mut bob, r(99, "👍"), "react");
    assert_eq!((code.as_str(), text.as_str()), ("not_found", "no message 99 in `r`"));
    assert_eq!(refused(&mut bob, r(3, "👍"), "react").0, "not_found", "an event is not a message");
    assert_eq!(refused(&mut bob, r(1, "ok"), "react").0, "bad_field", "words are not emoji");
    assert_eq!(refused(&mut bob, r(1, "👍\"]}"), "react").0, "bad_field");
    let mut outsider = a.connect("outsider");
    assert_eq!(refused(&mut outsider, r(1, "👍"), "react").0, "not_joined");
    // At most 20 distinct emoji on a message (two are there).
    for i in 0..18 {
        react(&mut bob, "r", 1, &char::from_u32(0x1F600 + i).unwrap().to_string());
    }
    let (code, text) = refused(&mut bob, r(1, "🚀"), "react");
    assert_eq!((code.as_str(), text.contains("20 emoji")), ("bad_field", true), "{text}");
    assert_eq!(react(&mut bob, "r", 1, "👍")["on"], true, "an emoji already there still takes more");
}

#[test]
fn reactions_in_sqlite_mode() {
    let server = local();
    reactions_scenario(&server, &server);
}

#[test]
fn reactions_across_two_instances_on_redis() {
    let redis = RedisServer::start();
    let (a, b) = (on_redis(&redis), on_redis(&redis));
    reactions_scenario(&a, &b);
}

/// Reactions count against the connection's rate limit like every other frame.
#[test]
fn reactions_are_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.rate_per_s = 1;
        c.rate_burst = 3;
    });
    let mut alice = server.connect("alice");
    alice.join("r", None);
    alice.post("r", "hi", "m1");
    for _ in 0..3 {
        alice.send(json!({"type": "react", "room": "r", "seq": 1, "emoji": "👍"}));
    }
    assert_eq!(answer(&mut alice, "never", "react")["code"], "rate_limited");
}

/// The first `ack` or `error` about `id`.
fn acked(c: &mut Client, id: &str) -> Value {
    loop {
        let v = c.recv();
        if (v["type"] == "ack" && v["id"] == id) || (v["type"] == "error" && v["ref"] == id) {
            return v;
        }
    }
}

/// A reply carries a quote of its original (author and first characters, or
/// `deleted`) live and in every history; a reply to a seq that is not a message of the
/// room is refused. `b`'s ring holds only the newest messages, so a reply there to an
/// old message quotes it from the store.
fn replies_scenario(a: &TestServer, b: &TestServer) {
    let (mut alice, mut bob) = (a.connect("alice"), b.connect("bob"));
    let ua = alice.uid();
    alice.join("r", None);
    bob.join("r", None);
    let long = "x".repeat(150);
    alice.post("r", "the original", "m1");
    alice.post("r", "to be deleted", "m2");
    alice.post("r", &long, "m3");
    for i in 4..=12 {
        alice.post("r", &format!("filler {i}"), &format!("m{i}"));
    }
    alice.send(json!({"type": "delete", "room": "r", "seq": 2, "id": "d2"}));
    assert_eq!(acked(&mut alice, "d2")["seq"], 13);

    bob.send(json!({"type": "msg", "room": "r", "text": "yes!", "id": "r1", "reply_to": 1}));
    assert_eq!(acked(&mut bob, "r1")["type"], "ack");
    let seen = alice.next_of("msg");
    assert_eq!(seen["reply"], json!({"seq": 1, "uid": ua, "user": "alice", "quote": "the original"}), "{seen}");
    assert_eq!(seen["text"], "yes!");

    bob.send(json!({"type": "msg", "room": "r", "text": "gone?", "id": "r2", "reply_to": 2}));
    assert_eq!(acked(&mut bob, "r2")["type"], "ack");
    assert_eq!(alice.next_of("msg")["reply"], json!({"seq": 2, "deleted": true}));

    bob.send(json!({"type": "msg", "room": "r", "text": "long", "id": "r3", "reply_to": 3}));
    assert_eq!(acked(&mut bob, "r3")["type"], "ack");
    let quote = alice.next_of("msg")["reply"]["quote"].as_str().unwrap().to_owned();
    assert_eq!(quote, format!("{}…", "x".repeat(100)), "the first 100 characters");

    for (of, id) in [(99, "bad1"), (13, "bad2")] {
        bob.send(json!({"type": "msg", "room": "r", "text": "to nothing", "id": id, "reply_to": of}));
        let e = acked(&mut bob, id);
        assert_eq!(
            (e["code"].as_str(), e["message"].as_str()),
            (Some("not_found"), Some(format!("no message {of} in `r` to reply to").as_str())),
            "{e}"
        );
    }
    bob.send(json!({"type": "msg", "room": "r", "text": "x", "id": "bad3", "reply_to": 0}));
    assert_eq!(acked(&mut bob, "bad3")["code"], "bad_field");
    bob.send(json!({"type": "msg", "room": "r", "text": "x", "id": "bad4", "reply_to": "1"}));
    assert_eq!(acked(&mut bob, "bad4")["code"], "bad_field");

    let (joined, history) = b.connect("carol").join("r", Some(13));
    assert_eq!(joined["head"], 16, "the refused replies stored nothing");
    assert_eq!(message(&history, 14)["reply"]["quote"], "the original");
    assert_eq!(message(&history, 15)["reply"]["deleted"], true);
    let older = common::history::ask(&mut bob, json!({"type": "history", "room": "r", "before": 15, "limit": 1}));
    assert_eq!(message(&older, 14)["reply"]["user"], "alice", "scroll-back too");
}

#[test]
fn replies_in_sqlite_mode() {
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.history_per_room = 4; // the originals are read from the store
    });
    replies_scenario(&server, &server);
}

#[test]
fn replies_across_two_instances_on_redis() {
    let redis = RedisServer::start();
    let a = on_redis(&redis);
    let url = redis.url();
    let b = TestServer::start_with(move |c| {
        c.redis = Some(url);
        c.redis_presence_ttl = Duration::from_millis(1500);
        common::unlimited_rate(c);
        c.history_per_room = 4; // the originals are read from Redis
    });
    replies_scenario(&a, &b);
}

/// A mention is stored with the message as user ids; only users in the room can be
/// mentioned (anyone else: `bad_field`, nothing stored), at most 20, and every
/// history carries them.
fn mentions_scenario(a: &TestServer, b: &TestServer) {
    let (mut alice, mut bob) = (a.connect("alice"), b.connect("bob"));
    let (ua, ub) = (alice.uid(), bob.uid());
    let outsider = a.connect("carol").uid();
    alice.join("r", None);
    bob.join("r", None);
    loop {
        let v = alice.next_of("system");
        if v["event"] == "join" && v["user"]["id"] == ub.as_str() {
            break;
        }
    }
    alice.send(json!({"type": "msg", "room": "r", "text": "@bob look", "id": "m1", "mentions": [ub, ub]}));
    assert_eq!(acked(&mut alice, "m1")["seq"], 1);
    let seen = bob.next_of("msg");
    assert_eq!((seen["mentions"].clone(), seen["text"].as_str()), (json!([ub]), Some("@bob look")), "{seen}");

    alice.send(json!({"type": "msg", "room": "r", "text": "@carol?", "id": "m2", "mentions": [outsider]}));
    let e = acked(&mut alice, "m2");
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (Some("bad_field"), Some(format!("`{outsider}` is not in `r`: only its members can be mentioned").as_str()))
    );
    let many: Vec<String> = (0..21).map(|i| format!("u-{i}")).collect();
    for (bad, id) in [(json!(many), "m3"), (json!("u-x"), "m4"), (json!([5]), "m5")] {
        alice.send(json!({"type": "msg", "room": "r", "text": "x", "id": id, "mentions": bad}));
        assert_eq!(acked(&mut alice, id)["code"], "bad_field", "{bad}");
    }
    alice.send(json!({"type": "msg", "room": "r", "text": "me too", "id": "m6", "mentions": [ua, ub]}));
    assert_eq!(acked(&mut alice, "m6")["seq"], 2, "nothing refused was stored");
    assert_eq!(bob.next_of("msg")["seq"], 2, "b delivered it (a join there is answered from what b holds)");
    let (_, history) = b.connect("dave").join("r", None);
    assert_eq!(message(&history, 1)["mentions"], json!([ub]));
    assert_eq!(message(&history, 2)["mentions"], json!([ua, ub]));
}

#[test]
fn mentions_in_sqlite_mode() {
    let server = local();
    mentions_scenario(&server, &server);
}

#[test]
fn mentions_across_two_instances_on_redis() {
    let redis = RedisServer::start();
    let (a, b) = (on_redis(&redis), on_redis(&redis));
    mentions_scenario(&a, &b);
}

/// Each member's unread mentions per room come in `joined` next to `read_seq` and
/// follow the read marker on every device (each `read` frame says how many are left):
/// bob is mentioned three times, reads up to the second on one device, and his other
/// device hears that one is left, as does a later join; a mention of oneself never
/// counts, and a deleted message stops counting.
fn unread_mentions_scenario(a: &TestServer, b: &TestServer) {
    let (mut alice, mut bob) = (a.connect("alice"), b.connect("bob"));
    let (ua, ub) = (alice.uid(), bob.uid());
    let mut laptop = a.connect("bob");
    alice.join("m", None);
    bob.join("m", None);
    laptop.join("m", None);
    loop {
        let v = alice.next_of("system");
        if v["event"] == "join" && v["user"]["id"] == ub.as_str() {
            break;
        }
    }
    // 1 and 3 and 5 mention bob; 2 does not; 4 is bob's own, mentioning himself.
    for (i, mentions) in [json!([ub]), json!([]), json!([ua, ub]), json!(null), json!([ub])].into_iter().enumerate() {
        let (poster, id) = if i == 3 { (&mut bob, "b4".to_owned()) } else { (&mut alice, format!("a{i}")) };
        let mentions = if i == 3 { json!([ub]) } else { mentions };
        poster.send(json!({"type": "msg", "room": "m", "text": format!("hey {i}"), "id": id, "mentions": mentions}));
        let ack = acked(poster, &id);
        assert_eq!(ack["seq"], i as u64 + 1, "{ack}");
    }
    while laptop.next_of("msg")["seq"] != 5 {}
    while bob.next_of("msg")["seq"] != 5 {}

    let (joined, _) = b.connect("bob").join("m", None);
    assert_eq!((joined["read_seq"].as_u64(), joined["mentions_unread"].as_u64()), (Some(0), Some(3)), "{joined}");
    let (joined, _) = b.connect("alice").join("m", None);
    assert_eq!(joined["mentions_unread"], 0, "alice was mentioned by nobody else: {joined}");

    bob.send(json!({"type": "read", "room": "m", "seq": 3}));
    let left = json!({"type": "read", "room": "m", "seq": 3, "mentions_unread": 1});
    assert_eq!(bob.next_of("read"), left);
    assert_eq!(laptop.next_of("read"), left, "bob's other device hears how many are left");
    let (joined, _) = a.connect("bob").join("m", None);
    assert_eq!((joined["read_seq"].as_u64(), joined["mentions_unread"].as_u64()), (Some(3), Some(1)), "{joined}");

    alice.send(json!({"type": "delete", "room": "m", "seq": 5, "id": "d5"}));
    assert_eq!(acked(&mut alice, "d5")["type"], "ack");
    while bob.next_of("delete")["of"] != 5 {}
    let (joined, _) = b.connect("bob").join("m", None);
    assert_eq!(joined["mentions_unread"], 0, "a deleted message mentions nobody: {joined}");
}

#[test]
fn unread_mentions_follow_the_read_marker_in_sqlite_mode() {
    let server = local();
    unread_mentions_scenario(&server, &server);
}

#[test]
fn unread_mentions_follow_the_read_marker_across_two_instances_on_redis() {
    let redis = RedisServer::start();
    let (a, b) = (on_redis(&redis), on_redis(&redis));
    unread_mentions_scenario(&a, &b);
}

/// A reply stored before its original was deleted quotes it as deleted once it is:
/// live frames already held (the ring), a resume, scroll-back and search all show
/// `{"seq":1,"deleted":true}`, on the instance that deleted it and on the other one.
fn deleted_original_scenario(a: &TestServer, b: &TestServer) {
    let (mut alice, mut bob) = (a.connect("alice"), b.connect("bob"));
    alice.join("q", None);
    bob.join("q", None);
    alice.post("q", "zanzibarquokka plan", "o1");
    while bob.next_of("msg")["seq"] != 1 {}
    bob.send(json!({"type": "msg", "room": "q", "text": "agreed", "id": "r1", "reply_to": 1}));
    assert_eq!(acked(&mut bob, "r1")["seq"], 2);
    let seen = alice.next_of("msg");
    assert_eq!(seen["reply"]["quote"], "zanzibarquokka plan", "quoted while the original is there: {seen}");
    for i in 3..=8 {
        alice.post("q", &format!("filler {i}"), &format!("f{i}"));
    }
    alice.send(json!({"type": "delete", "room": "q", "seq": 1, "id": "d1"}));
    assert_eq!(acked(&mut alice, "d1")["seq"], 9);
    while bob.next_of("delete")["of"] != 1 {}

    let gone = json!({"seq": 1, "deleted": true});
    for server in [a, b] {
        let mut reader = server.connect("carol");
        let (_, history) = reader.join("q", Some(1));
        assert_eq!(message(&history, 2)["reply"], gone, "a resume: {history}");
        reader.send(json!({"type": "history", "room": "q", "before": 3, "limit": 10}));
        let page = reader.next_of("history");
        assert_eq!(message(&page, 2)["reply"], gone, "scroll-back: {page}");
        reader.send(json!({"type": "search", "room": "q", "q": "agreed"}));
        let hits = reader.next_of("search");
        assert_eq!(hits["messages"][0]["reply"], gone, "search: {hits}");
        let (_, recent) = server.connect("dave").join("q", None);
        let held = recent["messages"].as_array().unwrap().iter().find(|m| m["seq"] == 2).cloned();
        assert!(held.is_none_or(|m| m["reply"] == gone), "a fresh joiner's history: {recent}");
    }
}

#[test]
fn a_deleted_originals_quote_says_deleted_in_sqlite_mode_from_the_ring_and_the_store() {
    for ring in [1000, 4] {
        let server = TestServer::start_with(move |c| {
            common::unlimited_rate(c);
            c.history_per_room = ring;
        });
        deleted_original_scenario(&server, &server);
    }
}

#[test]
fn a_deleted_originals_quote_says_deleted_across_two_instances_on_redis() {
    for ring in [1000, 4] {
        let redis = RedisServer::start();
        let start = || {
            let url = redis.url();
            TestServer::start_with(move |c| {
                c.redis = Some(url);
                c.redis_presence_ttl = Duration::from_millis(1500);
                common::unlimited_rate(c);
                c.history_per_room = ring;
            })
        };
        let (a, b) = (start(), start());
        deleted_original_scenario(&a, &b);
    }
}
