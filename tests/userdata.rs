//! A user's data over the server API, against the real server: the export of a user
//! who wrote 1,000 messages in 3 rooms (with an edit, a read marker and a block) holds
//! all of it, as NDJSON and as a zip; an erasure, either choice, leaves none of what it
//! removes in natter.db, natter.db-wal or natter.db-shm (scanned byte by byte, as
//! `strings` would), while what it keeps and other users' messages stay; members see
//! the deletions live. With `--redis`, two instances on one Redis: the export from
//! either holds what the user wrote through both, and an erasure (either choice) leaves
//! no key of Redis naming them (by name or in its bytes), nor their texts when removed;
//! joiners and rings on the other instance show the result. The user's upload is in
//! their export (its `file` line, and its exact bytes in the zip), never another
//! user's, and goes with their messages.

mod common;
mod common_redis;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{wait_until, Client, TestServer, WAIT};
use serde_json::{json, Value};

const KEY: &str = "userdata-moderator-key-0123456789";
const PLAIN_KEY: &str = "userdata-plain-key-0123456789";
const ROOMS: [&str; 3] = ["alpha", "beta", "gamma"];
const MESSAGES: usize = 1000;
/// The erased user's name: a word found nowhere else.
const NAME: &str = "Zorblaxname";

fn server(dir: &Path, redis: Option<String>) -> TestServer {
    let keys = dir.join("api.keys");
    std::fs::write(&keys, format!("{KEY} admin\n{PLAIN_KEY} moderate\n")).unwrap();
    TestServer::start_with(move |c| {
        c.api_key_file = Some(keys);
        c.redis = redis;
        common::unlimited_rate(c);
    })
}

/// One request: the status, the head and the (de-chunked) body.
fn call(addr: SocketAddr, method: &str, path: &str, key: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let at = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a head");
    let head = String::from_utf8_lossy(&out[..at]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut body = out[at + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).expect("a whole chunked body (ends with the 0 chunk)");
    }
    (status, head, body)
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?, 16).ok()?;
        b = &b[eol + 2..];
        if n == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..n)?);
        b = b.get(n + 2..)?;
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// A small real PNG: 3×2 pixels.
fn png() -> Vec<u8> {
    let hex = "89504e470d0a1a0a0000000d49484452000000030000000208020000001216f14d0000001049444154789c6338212707410c701600410006193c4541960000000049454e44ae426082";
    hex::decode(hex).unwrap()
}

/// Uploads `body` as `name` (`POST /upload` on the WebSocket port) for the test client
/// named `who`; the file's description.
fn upload_as(addr: SocketAddr, who: &str, name: &str, content_type: &str, body: &[u8]) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nX-Natter-Key: test-identity-key-for-{who}\r\nX-Natter-Name: {name}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    assert!(out.starts_with(b"HTTP/1.1 201"), "{}", String::from_utf8_lossy(&out));
    serde_json::from_slice(&out[end..]).unwrap()
}

fn blob_of(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    dir.join("files/blobs").join(&sha[..2]).join(sha)
}

/// The bytes of zip entry `name` (stored, its sizes in the data descriptor after it).
fn zip_entry<'a>(zip: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let at = zip.windows(name.len()).position(|w| w == name.as_bytes())?;
    let header = at.checked_sub(30).filter(|h| zip[*h..].starts_with(b"PK\x03\x04"))?;
    let data = header + 30 + name.len();
    let end = data + zip[data..].windows(4).position(|w| w == b"PK\x07\x08")?;
    Some(&zip[data..end])
}

/// natter.db, its WAL and its shared-memory index, as bytes.
fn store_bytes(dir: &Path) -> Vec<u8> {
    ["natter.db", "natter.db-wal", "natter.db-shm"]
        .iter()
        .flat_map(|f| std::fs::read(dir.join(f)).unwrap_or_default())
        .collect()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Waits until none of `gone` is in the store's files (the WAL is truncated right
/// after the erasure's commit, or on the next tick when a reader held it).
fn wait_gone(dir: &Path, gone: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let bytes = store_bytes(dir);
        let left: Vec<&&str> = gone.iter().filter(|w| contains(&bytes, w)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still in natter.db*: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `zed` writes 1,000 messages over three rooms (pipelined, then every ack); `bob`
/// writes one message in alpha and replies to one of zed's (quoting it); zed reacts to
/// `bob`'s message, edits one of theirs, moves a read marker and blocks `bob`.
fn seed(zed: &mut Client, bob: &mut Client) {
    for room in ROOMS {
        zed.join(room, None);
    }
    bob.join("alpha", None);
    for i in 0..MESSAGES {
        let text = format!("quuxword{i:04} from zed");
        zed.send(json!({"type": "msg", "room": ROOMS[i % 3], "text": text, "id": format!("m{i}")}));
    }
    let mut acks = 0;
    while acks < MESSAGES {
        if zed.recv()["type"] == "ack" {
            acks += 1;
        }
    }
    bob.send(json!({"type": "msg", "room": "alpha", "text": "bobsays hello", "id": "b1"}));
    let bobs = loop {
        let v = bob.recv();
        if v["type"] == "ack" {
            break v["seq"].as_u64().unwrap();
        }
    };
    bob.send(json!({"type": "msg", "room": "alpha", "text": "bobsays indeed", "id": "b2", "reply_to": 4}));
    while bob.recv()["type"] != "ack" {}
    zed.send(json!({"type": "react", "room": "alpha", "seq": bobs, "emoji": "👍"}));
    zed.next_of("react");
    zed.send(json!({"type": "edit", "room": "alpha", "seq": 1, "text": "quuxedit changed", "id": "e1"}));
    zed.send(json!({"type": "read", "room": "alpha", "seq": 5}));
    zed.send(json!({"type": "block", "user": bob.uid()}));
    zed.next_of("blocked");
}

fn export_lines(admin: SocketAddr, uid: &str) -> Vec<Value> {
    let (status, head, body) = call(admin, "GET", &format!("/api/v1/users/{uid}/export"), KEY);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("application/x-ndjson"), "{head}");
    body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
}

#[test]
fn an_export_holds_all_a_user_wrote_and_an_erasure_that_removes_leaves_none_of_it_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), None);
    let (mut zed, mut bob) = (server.connect(NAME), server.connect("bob"));
    let uid = zed.uid();
    seed(&mut zed, &mut bob);
    // zed posts a picture; bob uploads one of his own, which is not zed's to export.
    let file = upload_as(server.ws, NAME, "my%20cat!.png", "image/png", &png());
    let file_id = file["id"].as_str().unwrap().to_owned();
    zed.send(json!({"type": "msg", "room": "alpha", "text": "quuxfile here", "id": "f1", "files": [file_id]}));
    let file_seq = zed.next_of("ack")["seq"].as_u64().unwrap();
    let bobs_file = upload_as(server.ws, "bob", "bob.txt", "text/plain", b"bobsfile bytes");
    let written = MESSAGES + 1;

    let lines = export_lines(server.admin, &uid);
    let of = |kind: &str| lines.iter().filter(|l| l["type"] == kind).collect::<Vec<_>>();
    assert_eq!(lines[0]["type"], "export");
    assert_eq!(lines.last().unwrap()["type"], "end", "the last line says the export is whole");
    assert_eq!(lines.last().unwrap()["messages"], written);
    let messages = of("message");
    assert_eq!(messages.len(), written);
    let mut texts: Vec<&str> = messages.iter().filter_map(|m| m["stored"]["text"].as_str()).collect();
    texts.sort();
    assert_eq!(texts[0], "quuxedit changed", "the edited text");
    for i in 1..MESSAGES {
        assert!(texts.binary_search(&format!("quuxword{i:04} from zed").as_str()).is_ok(), "message {i} is in it");
    }
    let rooms: std::collections::BTreeSet<&str> = messages.iter().filter_map(|m| m["room"].as_str()).collect();
    assert_eq!(rooms.into_iter().collect::<Vec<_>>(), ROOMS);
    assert!(messages.iter().all(|m| m["seq"].as_u64().is_some_and(|s| s >= 1)), "with seq");
    assert_eq!(of("edit").len(), 1);
    assert_eq!((of("reaction")[0]["emoji"].as_str(), of("react").len()), (Some("👍"), 1), "their reaction");
    assert_eq!(of("read_marker")[0]["room"], "alpha");
    assert_eq!(of("block")[0]["user"], bob.uid());
    assert!(!lines.iter().any(|l| l.to_string().contains("bobsays")), "nobody else's messages");
    let files = of("file");
    assert_eq!(files.len(), 1, "their one upload, not bob's: {files:?}");
    assert_eq!(
        (&files[0]["id"], &files[0]["name"], &files[0]["size"], &files[0]["content_type"]),
        (&json!(file_id), &json!("my cat!.png"), &json!(png().len()), &json!("image/png"))
    );
    assert_eq!((&files[0]["width"], &files[0]["height"]), (&json!(3), &json!(2)));
    assert_eq!(files[0]["posted"], json!([{"room": "alpha", "seq": file_seq}]));
    assert!(!lines.iter().any(|l| l.to_string().contains(bobs_file["id"].as_str().unwrap())), "never bob's file");

    let (status, head, zip) = call(server.admin, "GET", &format!("/api/v1/users/{uid}/export?format=zip"), KEY);
    assert_eq!((status, head.contains("application/zip")), (200, true), "{head}");
    assert_eq!(&zip[..4], b"PK\x03\x04");
    assert!(contains(&zip, "export.ndjson") && contains(&zip, "quuxword0999"));
    let ndjson = zip_entry(&zip, "export.ndjson").expect("export.ndjson in the zip");
    assert!(contains(ndjson, &format!("\"id\":\"{file_id}\"")), "the file line in the zip's NDJSON too");
    let entry = format!("files/{file_id}-my_cat_.png");
    assert_eq!(zip_entry(&zip, &entry), Some(&png()[..]), "{entry}: the upload's exact bytes");
    assert!(!contains(&zip, "bobsfile bytes"), "never bob's file");

    let (status, _, body) = call(server.admin, "DELETE", &format!("/api/v1/users/{uid}?messages=remove"), PLAIN_KEY);
    assert_eq!(status, 403, "only a key marked admin erases");
    let (status, _, body2) = call(server.admin, "DELETE", &format!("/api/v1/users/{uid}"), KEY);
    assert_eq!((status, json_of(&body2)["error"]["code"].as_str()), (400, Some("bad_field")), "the choice is explicit");
    drop(body);
    let bytes = store_bytes(server.dir.path());
    assert!(contains(&bytes, "quuxword0999") && contains(&bytes, &uid), "the check can see what is there");

    let (status, _, body) = call(server.admin, "DELETE", &format!("/api/v1/users/{uid}?messages=remove"), KEY);
    let answer = json_of(&body);
    assert_eq!((status, answer["deleted"].as_u64()), (200, Some(written as u64)), "{answer}");
    // bob, in alpha, sees every one of zed's messages there deleted, live.
    let mut deletes = 0;
    while deletes < MESSAGES.div_ceil(3) {
        let v = bob.recv();
        if v["type"] == "delete" {
            deletes += 1;
        }
    }
    wait_gone(server.dir.path(), &["quuxword", "quuxedit", "quuxfile", &uid, NAME]);
    wait_until(|| !blob_of(server.dir.path(), &png()).exists(), "the erased user's file to go with their message");
    assert!(blob_of(server.dir.path(), b"bobsfile bytes").exists(), "bob's upload stays");
    assert!(contains(&store_bytes(server.dir.path()), "bobsays hello"), "other users' messages stay");
    assert_eq!(zed.expect_close().0, 1008, "the erased user is disconnected");

    let lines = export_lines(server.admin, &uid);
    assert_eq!(lines.iter().filter(|l| l["type"] == "message" || l["type"] == "file").count(), 0, "nothing left");
    bob.send(json!({"type": "search", "room": "alpha", "q": "quuxword0003"}));
    assert_eq!(bob.next_of("search")["messages"], json!([]), "search forgot them");
    server.stop();
}

#[test]
fn an_erasure_that_keeps_the_messages_shows_them_as_a_deleted_users_and_forgets_who_wrote_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), None);
    let (mut zed, mut bob) = (server.connect(NAME), server.connect("bob"));
    let uid = zed.uid();
    seed(&mut zed, &mut bob);
    let file = upload_as(server.ws, NAME, "kept.png", "image/png", &png());
    zed.send(json!({"type": "msg", "room": "alpha", "text": "a picture", "id": "f1", "files": [file["id"]]}));
    zed.next_of("ack");

    let (status, _, body) = call(server.admin, "DELETE", &format!("/api/v1/users/{uid}?messages=keep"), KEY);
    let answer = json_of(&body);
    assert_eq!((status, answer["deleted"].as_u64()), (200, Some(0)), "{answer}");
    assert_eq!(answer["files_renamed"], 1, "their file is kept, no longer theirs: {answer}");
    assert!(blob_of(server.dir.path(), &png()).exists(), "a kept message's file stays");
    assert!(answer["renamed"].as_u64().is_some_and(|n| n >= MESSAGES as u64), "{answer}");
    wait_gone(server.dir.path(), &[&uid, NAME]);
    let bytes = store_bytes(server.dir.path());
    assert!(contains(&bytes, "quuxword0999 from zed"), "the kept texts stay");

    // Old messages (from the store) and recent ones (from the ring) alike.
    for q in ["after=0&limit=3", "limit=3"] {
        let (_, _, page) = call(server.admin, "GET", &format!("/api/v1/rooms/beta/messages?{q}"), KEY);
        let page = json_of(&page);
        for m in page["messages"].as_array().unwrap() {
            assert_eq!((m["uid"].as_str(), m["user"].as_str()), (Some("deleted"), Some("deleted user")), "{m}");
        }
    }
    bob.send(json!({"type": "search", "room": "alpha", "q": "quuxword0003"}));
    assert_eq!(bob.next_of("search")["messages"].as_array().map(Vec::len), Some(1), "kept texts are still found");
    server.stop();
}

/// Messages the erased user writes in Redis mode: fewer than the single-instance
/// test's 1,000, over two instances.
const REDIS_MESSAGES: usize = 300;

/// `zed` on instance `a` writes in alpha and beta, `zed` on `b` (the same user) in
/// gamma and beta; bob (on `b`) writes in alpha and replies to zed's seq 2, mentioning zed; zed reacts to
/// bob's message, edits their beta/1, moves a read marker and blocks bob. Returns how
/// many messages zed wrote.
fn seed_two(zed_a: &mut Client, zed_b: &mut Client, bob: &mut Client) -> usize {
    for room in ["alpha", "beta"] {
        zed_a.join(room, None);
    }
    for room in ["gamma", "beta"] {
        zed_b.join(room, None);
    }
    bob.join("alpha", None);
    for i in 0..REDIS_MESSAGES {
        let (zed, room) = match i % 4 {
            0 => (&mut *zed_a, "alpha"),
            1 => (&mut *zed_a, "beta"),
            2 => (&mut *zed_b, "gamma"),
            _ => (&mut *zed_b, "beta"),
        };
        zed.send(
            json!({"type": "msg", "room": room, "text": format!("quuxword{i:04} from zed"), "id": format!("m{i}")}),
        );
    }
    for (zed, n) in [(&mut *zed_a, REDIS_MESSAGES / 2), (&mut *zed_b, REDIS_MESSAGES / 2)] {
        let mut acks = 0;
        while acks < n {
            if zed.recv()["type"] == "ack" {
                acks += 1;
            }
        }
    }
    bob.send(json!({"type": "msg", "room": "alpha", "text": "bobsays hello", "id": "b1"}));
    let bobs = loop {
        let v = bob.recv();
        if v["type"] == "ack" {
            break v["seq"].as_u64().unwrap();
        }
    };
    let mention = json!({"type": "msg", "room": "alpha", "text": "bobsays indeed", "id": "b2", "reply_to": 2, "mentions": [zed_a.uid()]});
    bob.send(mention);
    while bob.recv()["type"] != "ack" {}
    zed_a.send(json!({"type": "react", "room": "alpha", "seq": bobs, "emoji": "👍"}));
    zed_a.next_of("react");
    zed_b.send(json!({"type": "edit", "room": "beta", "seq": 1, "text": "quuxedit changed", "id": "e1"}));
    zed_b.next_of("ack");
    zed_b.send(json!({"type": "read", "room": "beta", "seq": 5}));
    zed_b.send(json!({"type": "block", "user": bob.uid()}));
    zed_b.next_of("blocked");
    REDIS_MESSAGES
}

/// The key names in Redis that hold `needle` (the check of values is `keys_holding`).
fn key_names_holding(redis: &common_redis::RedisServer, needle: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    keys.into_iter().filter(|k| k.contains(needle)).collect()
}

/// Waits until no key of Redis holds any of `gone`, by name or in its `DUMP`. The
/// `{p}:disconnects` set is left out: it names a user whose connections every instance
/// is asked to close for about a minute (the erasure's own request among them).
fn wait_gone_from_redis(redis: &common_redis::RedisServer, gone: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left: Vec<(String, Vec<String>)> = gone
            .iter()
            .map(|w| {
                let mut keys = redis.keys_holding(w);
                keys.extend(key_names_holding(redis, w));
                keys.retain(|k| k != "natter:disconnects");
                (w.to_string(), keys)
            })
            .filter(|(_, keys)| !keys.is_empty())
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still in Redis: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The room's messages as a scroll-back from its head shows them: from the ring of the
/// client's instance (it proves the answer when it holds one message older than the
/// page; the first ask, past the head, goes to the store and finds the head).
fn scroll_back(c: &mut Client, room: &str) -> Vec<Value> {
    let newest = history_page(c, room, 100_000, 1);
    let head = newest.last().and_then(|m| m["seq"].as_u64()).expect("the room has messages");
    assert!(head > 2 && head <= 201, "one page covers the room: head {head}");
    history_page(c, room, head + 1, head as usize - 1)
}

fn history_page(c: &mut Client, room: &str, before: u64, limit: usize) -> Vec<Value> {
    c.send(json!({"type": "history", "room": room, "before": before, "limit": limit}));
    let mut messages = Vec::new();
    loop {
        let page = c.next_of("history");
        messages.extend(page["messages"].as_array().unwrap().iter().cloned());
        if page["more"] != true {
            return messages;
        }
    }
}

#[test]
fn with_redis_an_export_from_either_instance_holds_all_and_an_erasure_that_removes_leaves_none_in_redis() {
    let redis = common_redis::RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (server(dir_a.path(), Some(redis.url())), server(dir_b.path(), Some(redis.url())));
    let (mut zed_a, mut zed_b, mut bob) = (a.connect(NAME), b.connect(NAME), b.connect("bob"));
    let mut carol = a.connect("carol");
    carol.join("alpha", None);
    let uid = zed_a.uid();
    assert_eq!(zed_b.uid(), uid, "one user on both instances");
    let written = seed_two(&mut zed_a, &mut zed_b, &mut bob);
    let file = upload_as(a.ws, NAME, "my%20cat!.png", "image/png", &png());
    let file_id = file["id"].as_str().unwrap().to_owned();
    zed_a.send(json!({"type": "msg", "room": "alpha", "text": "quuxfile here", "id": "f1", "files": [file_id]}));
    zed_a.next_of("ack");
    let written = written + 1;

    for admin in [a.admin, b.admin] {
        let lines = export_lines(admin, &uid);
        let of = |kind: &str| lines.iter().filter(|l| l["type"] == kind).collect::<Vec<_>>();
        assert_eq!((lines[0]["type"].as_str(), lines.last().unwrap()["type"].as_str()), (Some("export"), Some("end")));
        assert_eq!(lines.last().unwrap()["messages"], written);
        assert_eq!(of("profile")[0]["id"], json!(uid));
        let messages = of("message");
        assert_eq!(messages.len(), written);
        let texts: std::collections::HashSet<&str> =
            messages.iter().filter_map(|m| m["stored"]["text"].as_str()).collect();
        assert!(texts.contains("quuxedit changed") && texts.contains("quuxfile here"), "the edit, the file's message");
        for i in 4..REDIS_MESSAGES {
            assert!(texts.contains(format!("quuxword{i:04} from zed").as_str()), "message {i} is in it: {texts:?}");
        }
        let rooms: std::collections::BTreeSet<&str> = messages.iter().filter_map(|m| m["room"].as_str()).collect();
        assert_eq!(rooms.into_iter().collect::<Vec<_>>(), ROOMS, "every room, whichever instance it was written on");
        assert!(messages.iter().all(|m| m["ts"].as_u64().is_some() && m["seq"].as_u64().is_some()), "with seq and ts");
        assert_eq!(of("edit").len(), 1);
        assert_eq!((of("reaction")[0]["emoji"].as_str(), of("react").len()), (Some("👍"), 1), "their reaction");
        assert_eq!(of("read_marker")[0]["room"], "beta");
        assert_eq!(of("block")[0]["user"], bob.uid());
        assert!(!lines.iter().any(|l| l.to_string().contains("bobsays")), "nobody else's messages");
    }
    let (status, head, zip) = call(a.admin, "GET", &format!("/api/v1/users/{uid}/export?format=zip"), KEY);
    assert_eq!((status, head.contains("application/zip")), (200, true), "{head}");
    assert!(contains(zip_entry(&zip, "export.ndjson").unwrap(), "quuxword0299"), "the NDJSON in the zip");
    assert_eq!(zip_entry(&zip, &format!("files/{file_id}-my_cat_.png")), Some(&png()[..]), "the upload's bytes");

    assert!(!redis.keys_holding("quuxword0299").is_empty(), "the check sees the text that is there");
    let (status, _, body) = call(b.admin, "DELETE", &format!("/api/v1/users/{uid}?messages=remove"), KEY);
    let answer = json_of(&body);
    assert_eq!((status, answer["deleted"].as_u64()), (200, Some(written as u64)), "{answer}");
    // carol, in alpha on the other instance, sees zed's messages there deleted, live.
    let mut deletes = 0;
    while deletes < REDIS_MESSAGES / 4 + 1 {
        if carol.recv()["type"] == "delete" {
            deletes += 1;
        }
    }
    wait_gone_from_redis(&redis, &["quuxword", "quuxedit", "quuxfile", &uid, NAME]);
    assert!(!redis.keys_holding("bobsays hello").is_empty(), "other users' messages stay");
    for zed in [&mut zed_a, &mut zed_b] {
        assert_eq!(zed.expect_close().0, 1008, "the erased user is disconnected on both instances");
    }
    // A new joiner on the other instance, and carol's scroll-back from its ring.
    let mut dave = a.connect("dave");
    let (_, history) = dave.join("alpha", None);
    let held = history["messages"].as_array().unwrap();
    let (_, _, page) = call(b.admin, "GET", "/api/v1/rooms/alpha/messages?after=0&limit=200", KEY);
    let stored = json_of(&page)["messages"].as_array().unwrap().clone();
    assert!(stored.iter().any(|m| m["text"] == "bobsays hello"), "other users' messages stay");
    let quote = stored.iter().find(|m| m["text"] == "bobsays indeed").expect("bob's reply");
    assert_eq!(quote["reply"], json!({"seq": 2, "deleted": true}), "the reply no longer quotes zed");
    wait_until(
        || {
            let page = scroll_back(&mut carol, "alpha");
            !page.iter().any(|m| m.to_string().contains(&uid) || m.to_string().contains(NAME))
        },
        "carol's ring to forget who wrote them",
    );
    for m in held.iter().chain(&stored).chain(scroll_back(&mut carol, "alpha").iter()) {
        let m = m.to_string();
        assert!(!m.contains("quuxword") && !m.contains(&uid) && !m.contains(NAME), "{m}");
    }
    let lines = export_lines(a.admin, &uid);
    assert_eq!(lines.iter().filter(|l| l["type"] == "message").count(), 0, "nothing left");
    a.stop();
    b.stop();
}

#[test]
fn with_redis_an_erasure_that_keeps_the_messages_names_no_one_in_redis_or_any_ring() {
    let redis = common_redis::RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (server(dir_a.path(), Some(redis.url())), server(dir_b.path(), Some(redis.url())));
    let (mut zed_a, mut zed_b, mut bob) = (a.connect(NAME), b.connect(NAME), b.connect("bob"));
    let uid = zed_a.uid();
    seed_two(&mut zed_a, &mut zed_b, &mut bob);

    let (status, _, body) = call(a.admin, "DELETE", &format!("/api/v1/users/{uid}?messages=keep"), KEY);
    let answer = json_of(&body);
    assert_eq!((status, answer["deleted"].as_u64()), (200, Some(0)), "{answer}");
    assert!(answer["renamed"].as_u64().is_some_and(|n| n >= REDIS_MESSAGES as u64), "{answer}");
    wait_gone_from_redis(&redis, &[&uid, NAME]);
    assert!(!redis.keys_holding("quuxword0299 from zed").is_empty(), "the kept texts stay");
    // bob, on the other instance: a new join (from Redis) and a scroll-back (from its ring).
    let mut eve = b.connect("eve");
    let (_, history) = eve.join("gamma", None);
    wait_until(
        || !scroll_back(&mut bob, "alpha").iter().any(|m| m.to_string().contains(&uid)),
        "bob's instance's ring to forget who wrote them",
    );
    let page = scroll_back(&mut bob, "alpha");
    for m in history["messages"].as_array().unwrap().iter().chain(page.iter().filter(|m| m["uid"] != bob.uid())) {
        assert_eq!((m["uid"].as_str(), m["user"].as_str()), (Some("deleted"), Some("deleted user")), "{m}");
    }
    assert!(page.iter().any(|m| m["text"].as_str().is_some_and(|t| t.starts_with("quuxword"))), "kept texts");
    a.stop();
    b.stop();
}
