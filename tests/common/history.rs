//! History scenarios every mode must pass — scroll-back past the ring and search, with
//! their bad input — written once and run against a single instance (tests/store.rs)
//! and against two instances sharing Redis (tests/redis_cluster.rs). The poster and
//! the reader may be connected to different instances.

use serde_json::{json, Value};

use super::{history_seqs, Client};

/// Sends `msg` and returns the next `history`, `search` or `error` frame (pages merged).
pub fn ask(c: &mut Client, msg: Value) -> Value {
    c.send(msg);
    loop {
        let v = c.recv();
        match v["type"].as_str() {
            Some("history") if v["more"] == true => {
                let mut rest = c.expect_history();
                let mut messages = v["messages"].as_array().expect("messages").clone();
                messages.extend(rest["messages"].as_array().expect("messages").iter().cloned());
                rest["messages"] = Value::Array(messages);
                return rest;
            }
            Some("history" | "search" | "error") => return v,
            _ => {}
        }
    }
}

fn texts(v: &Value) -> Vec<&str> {
    v["messages"].as_array().expect("messages").iter().map(|m| m["text"].as_str().expect("text")).collect()
}

/// `reader` has seen every message up to `seq` live.
fn seen_up_to(reader: &mut Client, seq: u64) {
    loop {
        let m = reader.expect("msg");
        if m["seq"].as_u64() == Some(seq) {
            return;
        }
    }
}

/// Posts m1..m30 (the servers keep 10 messages per room in memory), then pages back to
/// the first message, and checks the bad inputs of `history`.
pub fn scroll_back_reaches_the_first_message(poster: &mut Client, reader: &mut Client) {
    poster.join("past", None);
    reader.join("past", None);
    for i in 1..=30 {
        poster.post("past", &format!("m{i}"), &format!("p{i}"));
    }
    seen_up_to(reader, 30);
    let page = |c: &mut Client, before: u64, limit: u64| {
        let v = ask(c, json!({"type": "history", "room": "past", "before": before, "limit": limit}));
        assert_eq!((v["type"].as_str(), v["before"].as_u64()), (Some("history"), Some(before)), "{v}");
        (history_seqs(&v), v["complete"].as_bool().expect("complete"))
    };
    assert_eq!(page(reader, 31, 5), ((26..=30).collect(), false), "oldest first");
    assert_eq!(page(reader, 16, 200), ((1..=15).collect(), true), "past the ring, to the beginning");
    assert_eq!(page(reader, 4, 2), (vec![2, 3], false));
    assert_eq!(page(reader, 2, 200), (vec![1], true));
    assert_eq!(page(reader, 1, 200), (vec![], true));
    assert_eq!(page(reader, (1 << 53) - 1, 200), ((1..=30).collect(), true), "never past what was delivered");
    let v = ask(reader, json!({"type": "history", "room": "past", "before": 26, "limit": 3}));
    assert_eq!(texts(&v), ["m23", "m24", "m25"], "the messages as they were sent live");
    // Live delivery goes on, and what arrives live is there to scroll back to.
    poster.post("past", "m31", "p31");
    assert_eq!(reader.expect("msg")["seq"], 31);
    assert_eq!(page(reader, 32, 1), (vec![31], false));

    for bad in [
        json!({"before": 0}),
        json!({"before": -1}),
        json!({"before": 9007199254740992u64}),
        json!({"before": 1e300}),
        json!({"before": "5"}),
        json!({}),
        json!({"before": 5, "limit": 0}),
        json!({"before": 5, "limit": 201}),
        json!({"before": 5, "limit": -1}),
        json!({"before": 5, "room": "bad room"}),
        json!({"before": 5, "room": "x".repeat(10 * 1024)}),
    ] {
        let mut m = json!({"type": "history", "room": "past"});
        for (k, v) in bad.as_object().expect("object") {
            m[k] = v.clone();
        }
        let v = ask(reader, m);
        assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some("bad_field")), "{bad}: {v}");
    }
    let v = ask(reader, json!({"type": "history", "room": "elsewhere", "before": 5}));
    assert_eq!(v["code"], "not_joined");
}

fn search(c: &mut Client, q: Value) -> Value {
    let mut m = json!({"type": "search", "room": "s"});
    for (k, v) in q.as_object().expect("object") {
        m[k] = v.clone();
    }
    ask(c, m)
}

/// Searches in several languages, pages through matches, and checks the bad inputs of
/// `search`.
pub fn search_finds_words_in_any_language(poster: &mut Client, searcher: &mut Client) {
    poster.join("s", None);
    searcher.join("s", None);
    let posted = ["Hello world", "你好，世界", "中文聊天记录", "hello again", "Grüße aus Köln", "nothing"];
    for (i, t) in posted.iter().enumerate() {
        poster.post("s", t, &format!("s{i}"));
    }
    seen_up_to(searcher, posted.len() as u64);
    let c = searcher;
    assert_eq!(texts(&search(c, json!({"q": "hello"}))), ["hello again", "Hello world"], "newest first, any case");
    assert_eq!(texts(&search(c, json!({"q": "你好"}))), ["你好，世界"]);
    assert_eq!(texts(&search(c, json!({"q": "世"}))), ["你好，世界"], "a word's beginning matches");
    assert_eq!(texts(&search(c, json!({"q": "中文"}))), ["中文聊天记录"]);
    assert!(texts(&search(c, json!({"q": "聊天"}))).is_empty(), "the middle of a CJK run is not a word start");
    assert_eq!(texts(&search(c, json!({"q": "koln"}))), ["Grüße aus Köln"], "diacritics folded");
    assert_eq!(texts(&search(c, json!({"q": "wor hel"}))), ["Hello world"], "every word, any order");
    let page = search(c, json!({"q": "hello", "limit": 1}));
    assert_eq!((texts(&page), page["complete"].as_bool()), (vec!["hello again"], Some(false)));
    let older = search(c, json!({"q": "hello", "before": page["messages"][0]["seq"]}));
    assert_eq!((texts(&older), older["complete"].as_bool()), (vec!["Hello world"], Some(true)));
    // Query syntax is never syntax: these search for the words in them.
    for q in ["\"hello", "hello*", "NEAR(hello world)", "-hello", "hello OR nothing", "s:hello", "^hello"] {
        let v = search(c, json!({"q": q}));
        assert_eq!(v["type"], "search", "{q}: {v}");
    }
    let huge = "a".repeat(10 * 1024);
    for bad in [
        json!({"q": huge}),
        json!({"q": "\" * - ("}),
        json!({"q": ""}),
        json!({"q": 5}),
        json!({}),
        json!({"q": "x", "limit": 201}),
        json!({"q": "x", "limit": -1}),
        json!({"q": "x", "limit": 0}),
        json!({"q": "x", "before": -5}),
        json!({"q": "x", "before": 0}),
        json!({"q": "x", "before": 1e300}),
        json!({"q": "x", "room": "bad room"}),
    ] {
        let v = search(c, bad.clone());
        assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some("bad_field")), "{bad}: {v}");
    }
    let v = search(c, json!({"q": "x", "room": "elsewhere"}));
    assert_eq!(v["code"], "not_joined");
}
