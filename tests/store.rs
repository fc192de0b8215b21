//! The SQLite store through the real server: a full disk (RLIMIT_FSIZE) refuses
//! posts without losing or duplicating anything and recovers by itself; scroll-back
//! and search in several languages and their bad input (the scenarios Redis mode runs
//! too, tests/common/history.rs); retention.

mod common;

use std::time::Duration;

use common::{Client, Proc, TestServer};
use serde_json::{json, Value};

const FAST: &[&str] = &["--rate-per-s", "100000", "--rate-burst", "100000"];

/// Posts and waits for this id's ack or error (skipping the echo and others' frames).
fn try_post(c: &mut Client, room: &str, text: &str, id: &str) -> Value {
    c.send(json!({"type": "msg", "room": room, "text": text, "id": id}));
    answer_to(c, id)
}

/// The ack or error that answers the frame sent with client id `id`.
fn answer_to(c: &mut Client, id: &str) -> Value {
    loop {
        let v = c.recv();
        let mine = v["id"] == id || v["ref"] == id;
        if mine && (v["type"] == "ack" || v["type"] == "error") {
            return v;
        }
    }
}

#[test]
fn a_full_disk_refuses_posts_keeps_reading_and_recovers_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Proc::start_with_fsize(dir.path(), FAST, 512 * 1024);
    let mut a = Client::connect(&server.url("writer"));
    let mut b = Client::connect(&server.url("watcher"));
    a.join("disk", None);
    b.join("disk", None);
    let text = "x".repeat(2000);
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let id = format!("p{i}");
        let v = try_post(&mut a, "disk", &text, &id);
        if v["type"] == "ack" {
            acked.push((id, v["seq"].as_u64().unwrap()));
        } else {
            assert_eq!(v["code"], "unavailable", "{v}");
            assert!(!v["message"].as_str().unwrap().to_lowercase().contains("sql"), "no SQL text: {v}");
            refused = Some(id);
            break;
        }
    }
    let refused = refused.expect("the file-size limit was reached");
    assert!(!acked.is_empty());
    let (status, body) = common::http_get(server.http, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(r#""store":"failing""#), "{body}");
    let (_, metrics) = common::http_get(server.admin, "/metrics");
    assert!(metrics.contains("natter_store_failing 1"), "{metrics}");
    // Presence, typing and reading go on.
    a.send(json!({"type": "typing", "room": "disk"}));
    let typing = loop {
        let v = b.recv();
        if v["type"] != "msg" {
            break v; // the watcher saw the acked messages, then this
        }
    };
    assert_eq!((typing["type"].as_str(), typing["user"]["name"].as_str()), (Some("typing"), Some("writer")));
    let mut reader = Client::connect(&server.url("reader"));
    let (_, history) = reader.join("disk", Some(0));
    let got: Vec<u64> = common::history_seqs(&history);
    assert_eq!(got, acked.iter().map(|(_, s)| *s).collect::<Vec<_>>(), "every acked message, and only those");
    // Space again: the store notices by itself, and the refused post goes through.
    server.lift_fsize();
    common::wait_until(|| common::http_get(server.http, "/healthz").0 == 200, "/healthz 200 again");
    let v = try_post(&mut a, "disk", &text, &refused);
    assert_eq!((v["type"].as_str(), v["dup"].as_bool()), (Some("ack"), Some(false)), "{v}");
    assert_eq!(v["seq"].as_u64(), Some(acked.last().unwrap().1 + 1), "no gap where the refused post was");
    acked.push((refused, v["seq"].as_u64().unwrap()));
    // Everything acked survives a crash, once each.
    server.signal(libc::SIGKILL);
    server.wait(Duration::from_secs(5));
    let server = Proc::start(dir.path(), None, FAST);
    let mut r = Client::connect(&server.url("after"));
    let (_, history) = r.join("disk", Some(0));
    let stored: Vec<(String, u64)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m["seq"].as_u64().unwrap()))
        .collect();
    assert_eq!(stored, acked);
}

#[test]
fn search_finds_words_in_any_language_newest_first_and_refuses_bad_input() {
    let server = TestServer::start_with(common::unlimited_rate);
    let (mut poster, mut searcher) = (server.connect("poster"), server.connect("searcher"));
    common::history::search_finds_words_in_any_language(&mut poster, &mut searcher);
}

#[test]
fn scroll_back_reaches_the_first_message_past_the_ring() {
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.history_per_room = 10;
    });
    let (mut poster, mut reader) = (server.connect("poster"), server.connect("reader"));
    common::history::scroll_back_reaches_the_first_message(&mut poster, &mut reader);
}

#[test]
fn retention_by_count_deletes_the_oldest_and_scroll_back_meets_the_new_beginning() {
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.retention_messages = Some(10);
        c.history_per_room = 5;
    });
    let mut c = server.connect("keeper");
    c.join("kept", None);
    for i in 1..=30 {
        c.post("kept", &format!("m{i}"), &format!("k{i}"));
    }
    server.wait_metric("natter_store_retention_deleted_total", 20);
    c.send(json!({"type": "history", "room": "kept", "before": 26, "limit": 200}));
    let page = c.expect_history();
    assert_eq!((common::history_seqs(&page), page["complete"].as_bool()), ((21..=25).collect(), Some(true)));
    let mut late = server.connect("late");
    let (_, h) = late.join("kept", Some(2));
    assert_eq!(
        (h["complete"].as_bool(), h["first"].as_u64()),
        (Some(false), Some(21)),
        "lost ones are said to be lost"
    );
    assert_eq!(common::history_seqs(&h), (21..=30).collect::<Vec<_>>());
}

/// Read markers live in the store: one device reads, the other hears it live, and
/// after a restart `joined` still carries the marker.
#[test]
fn a_read_marker_reaches_the_users_other_connection_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Proc::start(dir.path(), None, FAST);
    let me = |s: &Proc| format!("{}&key=read-marker-test-key-1", s.url("ann"));
    let mut phone = Client::connect(&me(&server));
    let mut laptop = Client::connect(&me(&server));
    phone.join("notes", None);
    laptop.join("notes", None);
    for i in 1..=3 {
        phone.post("notes", &format!("n{i}"), &format!("r{i}"));
    }
    phone.send(json!({"type": "read", "room": "notes", "seq": 3}));
    let seen = laptop.next_of("read");
    assert_eq!(seen, json!({"type": "read", "room": "notes", "seq": 3, "mentions_unread": 0}));
    phone.send(json!({"type": "read", "room": "notes", "seq": 9}));
    let refused = phone.next_of("error");
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("bad_field"), Some("read")));
    drop(server);

    let server = Proc::start(dir.path(), None, FAST);
    let mut again = Client::connect(&me(&server));
    let (joined, _) = again.join("notes", None);
    assert_eq!(joined["read_seq"], 3);
    let mut stranger = Client::connect(&server.url("bob"));
    let (joined, _) = stranger.join("notes", None);
    assert_eq!(joined["read_seq"], 0, "markers are per user");
}

/// Reads the data dir's database and WAL as bytes.
fn store_bytes(dir: &std::path::Path) -> Vec<u8> {
    ["natter.db", "natter.db-wal"].iter().flat_map(|f| std::fs::read(dir.join(f)).unwrap_or_default()).collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Edits and deletions through the real server, of messages older than the ring: a
/// client that was away gets both events on resume, in seq order; scroll-back shows
/// the new text and the deletion marker; the deleted words, and an edited message's
/// old words, leave the files (database and WAL, search index included).
#[test]
fn edits_and_deletions_reach_a_returning_client_and_deleted_words_leave_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let args = [FAST, &["--history", "5"]].concat();
    let server = Proc::start(dir.path(), None, &args);
    let mut author = Client::connect(&server.url("author"));
    author.join("log", None);
    author.post("log", "tpyo here", "m1");
    author.post("log", "xylophonequartz launch code", "m2");
    for i in 3..=10 {
        author.post("log", &format!("filler {i}"), &format!("m{i}"));
    }
    let mut away = Client::connect(&server.url("away"));
    let (joined, _) = away.join("log", None);
    assert_eq!(joined["head"], 10);
    drop(away);

    author.send(json!({"type": "edit", "room": "log", "seq": 1, "text": "typo fixed", "id": "e1"}));
    assert_eq!(answer_to(&mut author, "e1")["seq"], 11);
    author.send(json!({"type": "delete", "room": "log", "seq": 2, "id": "d1"}));
    assert_eq!(answer_to(&mut author, "d1")["seq"], 12);

    let mut back = Client::connect(&server.url("away"));
    let (_, history) = back.join("log", Some(10));
    let events: Vec<(String, u64)> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["type"].as_str().unwrap().to_owned(), m["of"].as_u64().unwrap()))
        .collect();
    assert_eq!(events, [("edit".to_owned(), 1), ("delete".to_owned(), 2)], "both changes, in seq order");
    back.send(json!({"type": "history", "room": "log", "before": 3, "limit": 10}));
    let page = back.next_of("history");
    let old = page["messages"].as_array().unwrap();
    assert_eq!((old[0]["text"].as_str(), old[0]["edited"].is_u64()), (Some("typo fixed"), true));
    assert_eq!((old[1].get("text"), old[1]["deleted"].as_bool()), (None, Some(true)));
    let mut found = Client::connect(&server.url("finder"));
    found.join("log", None);
    found.send(json!({"type": "search", "room": "log", "q": "xylophonequartz"}));
    let hits = found.next_of("search");
    assert_eq!(hits["messages"], json!([]), "the search index forgot it");

    // The WAL is truncated on the dispatcher's next tick after the commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ["xylophonequartz", "tpyo"].iter().any(|w| contains(&store_bytes(dir.path()), w)) {
        if std::time::Instant::now() > deadline {
            let at: Vec<(&str, Vec<usize>)> = ["natter.db", "natter.db-wal"]
                .iter()
                .map(|f| {
                    let b = std::fs::read(dir.path().join(f)).unwrap_or_default();
                    (
                        *f,
                        b.windows(4)
                            .enumerate()
                            .filter(|(_, w)| *w == b"xylo" || *w == b"tpyo")
                            .map(|(i, _)| i)
                            .collect(),
                    )
                })
                .collect();
            panic!("the deleted words are still in the database files: {at:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(contains(&store_bytes(dir.path()), "typo fixed"), "the check can see text that is there");
}

/// A reply quotes the first characters of its original; deleting the original rewrites
/// that quote as deleted in the same transaction, so the original's words leave the
/// files (database and WAL) from the reply too, and a fresh joiner's scroll-back shows
/// the reply quoting a deleted message.
#[test]
fn a_deleted_originals_words_leave_the_disk_from_the_replies_that_quoted_it() {
    let dir = tempfile::tempdir().unwrap();
    let args = [FAST, &["--history", "3"]].concat();
    let server = Proc::start(dir.path(), None, &args);
    let mut author = Client::connect(&server.url("author"));
    author.join("log", None);
    author.post("log", "quagmirezephyr launch code", "m1");
    let mut other = Client::connect(&server.url("other"));
    other.join("log", None);
    other.send(json!({"type": "msg", "room": "log", "text": "noted", "id": "r1", "reply_to": 1}));
    assert_eq!(answer_to(&mut other, "r1")["seq"], 2);
    while author.next_of("msg")["seq"] != 2 {}
    for i in 3..=8 {
        author.post("log", &format!("filler {i}"), &format!("m{i}"));
    }
    author.send(json!({"type": "delete", "room": "log", "seq": 1, "id": "d1"}));
    assert_eq!(answer_to(&mut author, "d1")["seq"], 9);

    let mut fresh = Client::connect(&server.url("fresh"));
    fresh.join("log", None);
    fresh.send(json!({"type": "history", "room": "log", "before": 3, "limit": 10}));
    let page = fresh.next_of("history");
    let reply = page["messages"].as_array().unwrap().iter().find(|m| m["seq"] == 2).cloned().unwrap();
    assert_eq!(reply["reply"], json!({"seq": 1, "deleted": true}), "{page}");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while contains(&store_bytes(dir.path()), "quagmirezephyr") {
        assert!(std::time::Instant::now() < deadline, "the deleted original's words are still in natter.db*");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(contains(&store_bytes(dir.path()), "noted"), "the check can see text that is there");
}
