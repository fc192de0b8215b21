//! Several natter instances on one Redis: order across instances, resume on another
//! instance, presence across instances and after a crash, a Redis outage that loses no
//! acked message and whose end the first post gets through, epochs and a Redis that
//! lost its data or came back older (no seq names two messages in one epoch), and scroll-back and search answered from Redis (the scenarios of
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
    // A join's history reaches as far as this instance's reader has delivered; an
    // acked message the reader has not delivered yet follows live (ARCHITECTURE.md).
    let mut r = a.connect("reader");
    let (_, history) = r.join("r", Some(0));
    let mut seqs = common::history_seqs(&history);
    while seqs.len() < acked.len() {
        seqs.push(r.expect("msg")["seq"].as_u64().unwrap());
    }
    for s in &acked {
        assert!(seqs.contains(s), "acked seq {s} reached the reader: {seqs:?}");
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

/// Makes room `room` look as a replica promoted without its newest appends does (a
/// Sentinel failover with asynchronous replication): the messages after `keep` are gone
/// (order, bodies, counter), the epoch is the same; then every connection breaks, as a
/// failover breaks them.
fn fail_over_losing(redis: &RedisServer, room: &str, keep: u64, head: u64) {
    for seq in keep + 1..=head {
        redis.command(&format!("XDEL natter:room:{room}:stream {seq}-0"));
        redis.command(&format!("HDEL natter:room:{room}:msgs {seq}"));
    }
    redis.command(&format!("XSETID natter:room:{room}:stream {keep}-0"));
    redis.command(&format!("SET natter:room:{room}:seq {keep}"));
    redis.command("CLIENT KILL TYPE normal");
}

#[test]
fn when_redis_comes_back_older_no_seq_names_two_messages_in_one_epoch() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let (mut ann, mut ben) = (a.connect("ann"), b.connect("ben"));
    ann.join("r", None);
    ben.join("r", None);
    for i in 1..=5 {
        assert_eq!(ann.post("r", &format!("old {i}"), &format!("a{i}"))["seq"], i);
        assert_eq!(ben.expect("msg")["seq"], i);
    }
    let (old, _) = a.connect("carl").join("r", None);
    let old = old["epoch"].clone();

    fail_over_losing(&redis, "r", 3, 5);
    // Both instances delivered 4 and 5: each member is reset into a new epoch whose
    // history ends at 3, before any message of it.
    for c in [&mut ann, &mut ben] {
        let joined = c.expect("joined");
        let h = c.expect_history();
        assert_eq!((joined["head"].as_u64(), h["reset"].as_bool()), (Some(3), Some(true)), "{joined} {h}");
        assert!(joined["epoch"].is_string() && joined["epoch"] != old, "a new epoch: {joined}");
        assert_eq!(common::history_seqs(&h), [1, 2, 3]);
    }
    let m = ben.post("r", "new 4", "b1");
    assert_eq!(m["seq"], 4);
    let m = ann.expect("msg");
    assert_eq!((m["seq"].as_u64(), m["text"].as_str()), (Some(4), Some("new 4")));
    // A client that saw the old 4 and 5 is reset, never resumed into the new 4.
    for (since, server) in [(5, &a), (3, &b)] {
        let (joined, h) = resume(&mut server.connect("dora"), "r", since, &old);
        assert_eq!((h["reset"].as_bool(), common::history_seqs(&h)), (Some(true), vec![1, 2, 3, 4]), "{h}");
        assert_ne!(joined["epoch"], old);
    }
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

/// The next `ack` or `error` about `id` (an `ack`'s `id`, an error's `ref`).
fn answer(c: &mut Client, id: &str) -> serde_json::Value {
    loop {
        let v = c.recv();
        if (v["type"] == "ack" && v["id"] == id) || (v["type"] == "error" && v["ref"] == id) {
            return v;
        }
    }
}

/// The next frame of type `kind`, whatever comes before it.
fn next_of(c: &mut Client, kind: &str) -> serde_json::Value {
    loop {
        let v = c.recv();
        if v["type"] == kind {
            return v;
        }
    }
}

/// (type, of) of each message of a history, in order.
fn changes(history: &serde_json::Value) -> Vec<(String, u64)> {
    let messages = history["messages"].as_array().expect("messages");
    messages.iter().map(|m| (m["type"].as_str().unwrap().to_owned(), m["of"].as_u64().unwrap_or(0))).collect()
}

/// Edits and a deletion made on A reach B's members live and a client of B that was
/// away on resume, in seq order; B's ring and Redis both give the changed messages back
/// (scroll-back; the deleted message's edit event loses its text too), search forgets
/// the words, and no key of Redis holds them any more.
#[test]
fn edits_and_deletions_on_one_instance_reach_the_other_live_on_resume_and_in_history() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let (mut author, mut watcher) = (a.connect("author"), b.connect("watcher"));
    author.join("log", None);
    watcher.join("log", None); // B's ring holds the room from its first message
    author.post("log", "filler 1", "m1");
    author.post("log", "tpyo here", "m2");
    author.post("log", "xylophonequartz launch code", "m3");
    for i in 4..=10 {
        author.post("log", &format!("filler {i}"), &format!("m{i}"));
    }
    let mut away = b.connect("away");
    assert_eq!(away.join("log", None).0["head"], 10);
    drop(away);

    author.send(json!({"type": "edit", "room": "log", "seq": 2, "text": "typo fixed", "id": "e1"}));
    assert_eq!(answer(&mut author, "e1")["seq"], 11);
    author.send(json!({"type": "edit", "room": "log", "seq": 3, "text": "xylophonequartz v2", "id": "e2"}));
    assert_eq!(answer(&mut author, "e2")["seq"], 12);
    author.send(json!({"type": "delete", "room": "log", "seq": 3, "id": "d1"}));
    assert_eq!(answer(&mut author, "d1")["seq"], 13);
    let edit = next_of(&mut watcher, "edit");
    assert_eq!(
        (edit["seq"].as_u64(), edit["of"].as_u64(), edit["text"].as_str()),
        (Some(11), Some(2), Some("typo fixed"))
    );
    let delete = next_of(&mut watcher, "delete");
    assert_eq!((delete["seq"].as_u64(), delete["of"].as_u64(), delete.get("text")), (Some(13), Some(3), None));

    let mut back = b.connect("away");
    let (_, history) = back.join("log", Some(10));
    let expected = [("edit".into(), 2), ("edit".into(), 3), ("delete".into(), 3)];
    assert_eq!(changes(&history), expected, "every change, in seq order");
    let scrubbed = &history["messages"][1];
    assert_eq!((scrubbed.get("text"), scrubbed["deleted"].as_bool()), (None, Some(true)), "{scrubbed}");

    let page = |c: &mut Client, before: u64, limit: u64| {
        let v = common::history::ask(c, json!({"type": "history", "room": "log", "before": before, "limit": limit}));
        v["messages"].as_array().expect("a history page").clone()
    };
    let check = |from: &str, m: &[serde_json::Value]| {
        assert_eq!((m[0]["text"].as_str(), m[0]["edited"].is_u64()), (Some("typo fixed"), true), "{from}: {m:?}");
        assert_eq!((m[1].get("text"), m[1]["deleted"].as_bool()), (None, Some(true)), "{from}: {m:?}");
    };
    // Read from Redis (the ring cannot prove it holds all of it), then from B's ring.
    check("redis", &page(&mut back, 4, 10)[1..]);
    check("ring", &[page(&mut back, 3, 1), page(&mut back, 4, 1)].concat());
    let event = &page(&mut back, 13, 1)[0]; // the edit of the deleted message, from B's ring
    assert_eq!((event["seq"].as_u64(), event.get("text"), event["deleted"].as_bool()), (Some(12), None, Some(true)));
    let (_, history) = b.connect("newcomer").join("log", Some(1));
    check("a join", &history["messages"].as_array().unwrap()[..2]);
    let hits = common::history::ask(&mut back, json!({"type": "search", "room": "log", "q": "xylophonequartz"}));
    assert_eq!(hits["messages"], json!([]), "a deleted message is not found");
    let hits = common::history::ask(&mut back, json!({"type": "search", "room": "log", "q": "typo fixed"}));
    assert_eq!(common::history_seqs(&hits), [2], "the edited message, never the edit event");

    for gone in ["xylophonequartz", "tpyo"] {
        assert_eq!(redis.keys_holding(gone), Vec::<String>::new(), "`{gone}` is still in Redis");
    }
    assert_eq!(redis.keys_holding("typo fixed"), ["natter:room:log:msgs"], "the check sees text that is there");
}

/// The rules hold across instances: only the author edits; the author or a moderator
/// (of another instance than the author's) deletes; a deleted message stays deleted;
/// a retried change is answered `dup:true`.
#[test]
fn only_the_author_edits_and_the_author_or_a_moderator_deletes_across_instances() {
    let redis = RedisServer::start();
    let a = instance(&redis);
    let mod_uid = a.connect("moderator").uid();
    let b = instance_with(&redis, |c| c.mods = vec![mod_uid.clone()]);
    let (mut author, mut other, mut moderator) = (a.connect("author"), b.connect("other"), b.connect("moderator"));
    assert_eq!(moderator.welcome["role"], "mod");
    for c in [&mut author, &mut other, &mut moderator] {
        c.join("r", None);
    }
    assert_eq!(author.post("r", "mine", "m1")["seq"], 1);
    let refused = |c: &mut Client, m: serde_json::Value| {
        let id = m["id"].as_str().unwrap().to_owned();
        c.send(m);
        answer(c, &id)["code"].as_str().unwrap_or("an ack").to_owned()
    };
    let edit = |seq: u64, id: &str| json!({"type": "edit", "room": "r", "seq": seq, "text": "changed", "id": id});
    let delete = |seq: u64, id: &str| json!({"type": "delete", "room": "r", "seq": seq, "id": id});
    assert_eq!(refused(&mut other, edit(1, "x1")), "forbidden");
    assert_eq!(refused(&mut other, delete(1, "x2")), "forbidden");
    assert_eq!(refused(&mut moderator, edit(1, "x3")), "forbidden", "a moderator never edits others' messages");
    assert_eq!(refused(&mut author, edit(9, "x4")), "not_found");

    moderator.send(delete(1, "d1"));
    assert_eq!(answer(&mut moderator, "d1")["seq"], 2);
    let seen = next_of(&mut author, "delete");
    assert_eq!((seen["of"].as_u64(), seen["uid"].as_str()), (Some(1), Some(mod_uid.as_str())));
    assert_eq!(refused(&mut author, edit(1, "x5")), "not_found", "a deleted message stays deleted");
    assert_eq!(refused(&mut author, delete(1, "x6")), "not_found");
    assert_eq!(refused(&mut author, edit(2, "x7")), "not_found", "an event is not a message");
    moderator.send(delete(1, "d1"));
    let dup = answer(&mut moderator, "d1");
    assert_eq!((dup["seq"].as_u64(), dup["dup"].as_bool()), (Some(2), Some(true)), "a retry is a duplicate");
}

/// A read marker moved on A reaches the same user's connection in the room on B, comes
/// back as `read_seq` on a later join on B, never moves back, and never past what was
/// delivered; nobody else hears of it.
#[test]
fn a_read_marker_moved_on_one_instance_reaches_the_other_and_comes_back_in_joined() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let (mut phone, mut laptop, mut bob) = (a.connect("ann"), b.connect("ann"), a.connect("bob"));
    for c in [&mut phone, &mut laptop, &mut bob] {
        c.join("notes", None);
    }
    for i in 1..=3 {
        phone.post("notes", &format!("n{i}"), &format!("r{i}"));
    }
    phone.send(json!({"type": "read", "room": "notes", "seq": 3}));
    let read = json!({"type": "read", "room": "notes", "seq": 3, "mentions_unread": 0});
    assert_eq!(next_of(&mut phone, "read"), read);
    assert_eq!(next_of(&mut laptop, "read"), read, "the same user on the other instance hears it");

    phone.send(json!({"type": "read", "room": "notes", "seq": 2}));
    phone.send(json!({"type": "read", "room": "notes", "seq": 9}));
    let refused = phone.expect("error"); // a `read` first would fail here: 2 is no move
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("bad_field"), Some("read")), "past the head");
    phone.post("notes", "after", "r4");
    while bob.expect("msg")["seq"] != 4 {} // a `read` frame would fail `expect`: not bob's marker

    let (joined, _) = b.connect("ann").join("notes", None);
    assert_eq!(joined["read_seq"], 3, "a later join on B carries the marker");
    let (joined, _) = b.connect("bob").join("notes", Some(1));
    assert_eq!(joined["read_seq"], 0, "markers are per user");
}

/// A lasting user (a name with a key): the same uid on every instance.
fn lasting(server: &TestServer, name: &str) -> Client {
    Client::connect(&format!("{}&key={name}-secret-key-123456", server.url(name)))
}

/// The answer to a join: `Ok(joined)`, or the error's code.
fn try_join(c: &mut Client, m: serde_json::Value) -> Result<serde_json::Value, String> {
    c.send(m);
    loop {
        let v = c.recv();
        match v["type"].as_str() {
            Some("joined") => {
                c.expect_history();
                return Ok(v);
            }
            Some("error") => return Err(v["code"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
}

/// A private room made on A keeps out a non-member on both instances (a `private`
/// join included); its owner's invitation reaches the user on B live, who then joins there.
#[test]
fn a_private_room_admits_only_its_owner_and_invited_users_on_every_instance() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let mut ann = lasting(&a, "ann");
    let joined = try_join(&mut ann, json!({"type": "join", "private": true, "title": "Club"})).unwrap();
    assert_eq!((&joined["private"], &joined["title"]), (&json!(true), &json!("Club")));
    let club = joined["room"].as_str().unwrap().to_owned();
    let club = club.as_str();
    let (mut cid_b, mut cid_a) = (lasting(&b, "cid"), lasting(&a, "cid"));
    for private in [false, true] {
        let m = json!({"type": "join", "room": club, "private": private});
        assert_eq!(try_join(&mut cid_b, m.clone()).unwrap_err(), "forbidden");
        assert_eq!(try_join(&mut cid_a, m).unwrap_err(), "forbidden");
    }
    assert_eq!(
        try_join(&mut cid_b, json!({"type": "join", "room": "ann-s", "private": true})).unwrap_err(),
        "bad_field",
        "a public name is never made private, on B neither"
    );
    assert_eq!(
        try_join(&mut lasting(&a, "eve"), json!({"type": "join", "room": "ann-s"})).unwrap().get("private"),
        None
    );
    ann.send(json!({"type": "invite", "room": club, "user": cid_b.uid()}));
    let invited = next_of(&mut cid_b, "invited");
    assert_eq!((invited["room"].as_str(), invited["by"]["name"].as_str()), (Some(club), Some("ann")));
    assert_eq!(try_join(&mut cid_b, json!({"type": "join", "room": club})).unwrap()["private"], true);
    // Only the owner (or a moderator) invites, on any instance.
    let mut dan = lasting(&b, "dan");
    cid_b.send(json!({"type": "invite", "room": club, "user": dan.uid()}));
    assert_eq!(next_of(&mut cid_b, "error")["code"], "forbidden");
    assert_eq!(try_join(&mut dan, json!({"type": "join", "room": club})).unwrap_err(), "forbidden");
}

/// A DM opened on A reaches the other user's connection on B live, and that user's
/// connections on any instance at connect; a third user reads it by no means on either
/// instance (join, since, private join, history, search, a guessed name).
#[test]
fn a_dm_reaches_the_other_instance_and_no_third_user_reads_it() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis), instance(&redis));
    let (mut ann, mut bea) = (lasting(&a, "ann"), lasting(&b, "bea"));
    bea.join("lobby", None); // B's Redis requests go in order: bea is remembered by now
    ann.send(json!({"type": "dm", "user": bea.uid()}));
    let room = ann.expect("dm")["room"].as_str().unwrap().to_owned();
    let to_bea = next_of(&mut bea, "dm");
    assert_eq!((to_bea["room"].as_str(), to_bea["user"]["name"].as_str()), (Some(&*room), Some("ann")));
    ann.join(&room, None);
    bea.join(&room, None);
    ann.post(&room, "between us", "d1");
    assert_eq!(next_of(&mut bea, "msg")["text"], "between us");
    let mut back = lasting(&a, "bea");
    assert_eq!(back.expect("dm")["room"], room.as_str(), "told at connect on the other instance");

    for server in [&a, &b] {
        common::kept_out(&mut lasting(server, "cid"), &room, "between us", "dm.00112233445566778899");
    }
}

/// Only moderators kick or make a room read-only; a kick on A takes the user on B out of
/// the room and keeps it out on both instances; read-only made on A refuses a
/// non-moderator's post on B and takes a moderator's.
#[test]
fn kicks_and_read_only_made_on_one_instance_hold_on_the_other() {
    let redis = RedisServer::start();
    let mod_uid = instance(&redis).connect("moderator").uid();
    let a = instance_with(&redis, |c| c.mods = vec![mod_uid.clone()]);
    let b = instance_with(&redis, |c| c.mods = vec![mod_uid.clone()]);
    let (mut target, mut other, mut mod_b) = (b.connect("target"), b.connect("other"), b.connect("moderator"));
    for c in [&mut target, &mut other, &mut mod_b] {
        c.join("r", None);
    }
    let mut moderator = a.connect("moderator");
    moderator.join("r", None);
    for m in [
        json!({"type": "kick", "room": "r", "user": target.uid(), "minutes": 5}),
        json!({"type": "mode", "room": "r", "read_only": true}),
    ] {
        other.send(m);
        assert_eq!(next_of(&mut other, "error")["code"], "forbidden");
    }

    moderator.send(json!({"type": "kick", "room": "r", "user": target.uid(), "minutes": 5}));
    let kicked = loop {
        let v = target.recv();
        if v["type"] == "system" && v["event"] == "kick" {
            break v;
        }
    };
    assert!(kicked["seq"].as_u64().is_some(), "a kick has a seq: {kicked}");
    target.send(json!({"type": "msg", "room": "r", "text": "still here?", "id": "t1"}));
    assert_eq!(answer(&mut target, "t1")["code"], "not_joined", "out of the room on B");
    assert_eq!(try_join(&mut target, json!({"type": "join", "room": "r"})).unwrap_err(), "forbidden");
    let mut target_a = a.connect("target");
    assert_eq!(try_join(&mut target_a, json!({"type": "join", "room": "r"})).unwrap_err(), "forbidden");

    moderator.send(json!({"type": "mode", "room": "r", "read_only": true}));
    let made = loop {
        let v = other.recv();
        if v["type"] == "system" && v["event"] == "read_only" {
            break v;
        }
    };
    assert_eq!(made["read_only"], true);
    other.send(json!({"type": "msg", "room": "r", "text": "x", "id": "o1"}));
    assert_eq!(answer(&mut other, "o1")["code"], "forbidden");
    next_of(&mut mod_b, "system");
    assert!(mod_b.post("r", "announcement", "m1")["seq"].as_u64().is_some(), "a moderator still posts");
    let mut late = b.connect("late");
    assert_eq!(try_join(&mut late, json!({"type": "join", "room": "r"})).unwrap()["read_only"], true);
}

/// Blocks, closed DMs and the DM rate hold across instances (Redis keeps them): a
/// block made on A stops a DM opened on B and reaches the blocker's connection on B;
/// a DM closed on B is not told of at connect on A until a message posted on A opens
/// it again; new DMs to one user are counted once for all instances.
#[test]
fn blocks_closed_dms_and_the_dm_rate_hold_on_every_instance() {
    let redis = RedisServer::start();
    let (a, b) = (instance_with(&redis, |c| c.dm_open_rate = 3), instance_with(&redis, |c| c.dm_open_rate = 3));
    let mut ann = lasting(&a, "ann");
    let mut ann_b = lasting(&b, "ann");
    let mut mal = lasting(&b, "mal");
    mal.join("lobby", None);
    ann.join("lobby", None);
    ann.send(json!({"type": "block", "user": mal.uid()}));
    assert_eq!(next_of(&mut ann, "blocked")["users"], json!([mal.uid()]));
    assert_eq!(next_of(&mut ann_b, "blocked")["users"], json!([mal.uid()]), "on the other instance too");
    mal.send(json!({"type": "dm", "user": ann.uid()}));
    assert_eq!(next_of(&mut mal, "error")["code"], "not_found", "a block made on A holds on B");
    let mut later = lasting(&b, "ann");
    assert_eq!(next_of(&mut later, "blocked")["users"], json!([mal.uid()]), "told at connect");

    let mut bea = lasting(&b, "bea");
    bea.join("lobby", None);
    ann.send(json!({"type": "dm", "user": bea.uid()}));
    let room = next_of(&mut ann, "dm")["room"].as_str().unwrap().to_owned();
    assert_eq!(next_of(&mut bea, "dm")["room"], room.as_str());
    bea.send(json!({"type": "close_dm", "room": room}));
    assert_eq!(next_of(&mut bea, "dm_closed")["room"], room.as_str());
    let mut bea_a = lasting(&a, "bea");
    bea_a.send(json!({"type": "join", "room": "probe"}));
    let mut told = Vec::new();
    loop {
        let v = bea_a.recv();
        if v["type"] == "joined" {
            break;
        }
        told.push(v);
    }
    assert!(told.iter().all(|v| v["type"] != "dm"), "closed on B, hidden on A: {told:?}");
    ann.join(&room, None);
    ann.post(&room, "still there?", "s1");
    assert_eq!(next_of(&mut bea_a, "dm")["room"], room.as_str(), "a message opens it again on every instance");
    assert_eq!(next_of(&mut bea, "dm")["room"], room.as_str());

    // ann has opened one new DM (bea): two more on A or B, then `dm_rate` on either.
    let mut answers = Vec::new();
    for (i, server) in [&a, &b, &a, &b].into_iter().enumerate() {
        let mut other = lasting(server, &format!("friend{i}"));
        other.join("lobby", None);
        let mut asker = if i % 2 == 0 { lasting(&a, "ann") } else { lasting(&b, "ann") };
        asker.send(json!({"type": "dm", "user": other.uid()}));
        loop {
            let v = asker.recv();
            if v["type"] == "dm" && v["user"]["id"] == other.uid().as_str() {
                answers.push("dm".to_owned());
                break;
            }
            if v["type"] == "error" {
                answers.push(v["code"].as_str().unwrap().to_owned());
                break;
            }
        }
    }
    assert_eq!(answers, ["dm", "dm", "dm_rate", "dm_rate"]);
}

#[test]
fn a_room_that_left_an_instance_s_memory_is_joined_again_from_redis() {
    let redis = RedisServer::start();
    let a = instance_with(&redis, |c| c.max_rooms = 2);
    let mut alice = a.connect("alice");
    alice.join("keep", None);
    for i in 1..=3 {
        alice.post("keep", &format!("m{i}"), &format!("k{i}"));
    }
    let (joined, _) = alice.join("keep", None);
    let epoch = joined["epoch"].clone();
    alice.send(json!({"type": "leave", "room": "keep"}));
    // Nobody is in `keep` here: it leaves this instance's memory, so two other rooms fit.
    for room in ["a", "b"] {
        let (joined, _) = alice.join(room, None);
        assert_eq!(joined["room"], room, "never room_limit for a room nobody is in");
    }
    a.wait_metric("natter_rooms_evicted_total", 1);
    alice.send(json!({"type": "leave", "room": "a"}));
    // A room that went idle in a batch stays for that batch: wait until `a` is gone.
    a.wait_metric("natter_rooms_evicted_total", 2);
    let mut bob = a.connect("bob");
    let (joined, history) = resume(&mut bob, "keep", 1, &epoch);
    assert_eq!((joined["head"].as_u64(), &joined["epoch"]), (Some(3), &epoch));
    assert_eq!(common::history_seqs(&history), [2, 3]);
    assert_eq!(bob.post("keep", "m1 again", "k1")["seq"], 4, "a new message goes on from the head");
    let (_, history) = alice.join("keep", None);
    assert_eq!(common::history_seqs(&history), [1, 2, 3, 4]);
    assert_eq!(alice.post("keep", "m3", "k3")["dup"], true, "dedup is Redis's, across the eviction");
}
