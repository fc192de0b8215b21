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
