//! Uploads and files: `POST /upload` on the WebSocket port with credentials in
//! headers, `msg {files}`, `file_urls` and the signed `GET /files/…`, safe serving,
//! the bad inputs (over the limit, a lying type, a fake image, a foreign id), private
//! rooms kept private, a slow upload streaming to disk while everyone else goes on,
//! and the lifecycle (deleted with their message, unposted uploads swept, removed
//! with the messages retention removes, counted toward `--max-store-bytes`); two
//! instances on one Redis sharing one files directory.

mod common;
mod common_redis;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use common::{wait_until, Client, TestServer, WAIT};
use serde_json::{json, Value};

/// A small real PNG: 3×2 pixels.
fn png() -> Vec<u8> {
    let hex = "89504e470d0a1a0a0000000d49484452000000030000000208020000001216f14d0000001049444154789c6338212707410c701600410006193c4541960000000049454e44ae426082";
    hex::decode(hex).unwrap()
}

/// One HTTP request on its own connection; (status, headers in lower case, body).
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body); // refused early: the server may close before taking it all
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, out[end..].to_vec())
}

/// Uploads `body` as `name` for the test client named `who`; (status, JSON answer).
fn upload_as(addr: SocketAddr, who: &str, name: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nX-Natter-Key: test-identity-key-for-{who}\r\nX-Natter-Name: {name}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, _, body) = request(addr, &head, body);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    request(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n"), b"")
}

/// Asks for the signed URL of file `id` in `room`.
fn url_of(c: &mut Client, room: &str, id: &str) -> String {
    c.send(json!({"type": "file_urls", "room": room, "files": [id]}));
    let v = c.next_of("file_urls");
    assert_eq!(v["room"], room);
    v["urls"][id].as_str().expect("a URL for the file").to_owned()
}

fn blob_of(dir: &Path, bytes: &[u8]) -> std::path::PathBuf {
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    dir.join("files/blobs").join(&sha[..2]).join(sha)
}

#[test]
fn an_image_is_uploaded_posted_described_and_fetched_inline() {
    let server = TestServer::start();
    let (status, file) = upload_as(server.ws, "alice", "cat%20pic.png", "image/png", &png());
    assert_eq!(status, 201, "{file}");
    assert_eq!(
        (&file["name"], &file["size"], &file["type"]),
        (&json!("cat pic.png"), &json!(png().len()), &json!("image/png"))
    );
    assert_eq!((&file["width"], &file["height"]), (&json!(3), &json!(2)));
    let id = file["id"].as_str().unwrap().to_owned();

    let (mut alice, mut bob) = (server.connect("alice"), server.connect("bob"));
    alice.join("pics", None);
    bob.join("pics", None);
    alice.send(json!({"type": "msg", "room": "pics", "text": "", "id": "m1", "files": [id]}));
    alice.expect("ack");
    let m = bob.expect("msg");
    assert_eq!(
        m["files"],
        json!([{"id": id, "name": "cat pic.png", "size": png().len(), "type": "image/png", "width": 3, "height": 2}])
    );
    assert_eq!(m["text"], "");

    let url = url_of(&mut bob, "pics", &id);
    assert!(url.starts_with(&format!("/files/{id}?room=pics&exp=")), "{url}");
    let (status, head, body) = get(server.ws, &url, "");
    assert_eq!((status, body), (200, png()));
    for h in [
        "content-type: image/png\r\n",
        "x-content-type-options: nosniff\r\n",
        "content-disposition: inline; filename=\"cat pic.png\"",
        "content-security-policy: default-src 'none'",
        "accept-ranges: bytes\r\n",
    ] {
        assert!(head.contains(h), "{h} in {head}");
    }
    assert!(head.contains("sandbox"), "{head}");

    let (status, head, body) = get(server.ws, &url, "Range: bytes=8-15\r\n");
    assert_eq!((status, &body[..]), (206, &png()[8..16]));
    assert!(head.contains(&format!("content-range: bytes 8-15/{}\r\n", png().len())), "{head}");
    let (status, _, body) = get(server.ws, &url, "Range: bytes=-4\r\n");
    assert_eq!((status, &body[..]), (206, &png()[png().len() - 4..]));
    let (status, head, _) = get(server.ws, &url, "Range: bytes=9999-\r\n");
    assert_eq!(status, 416);
    assert!(head.contains(&format!("content-range: bytes */{}", png().len())));

    // History carries the same description.
    let mut carol = server.connect("carol");
    let (_, history) = carol.join("pics", None);
    assert_eq!(history["messages"][0]["files"][0]["id"], json!(id));
}

#[test]
fn html_and_svg_are_attachments_whatever_they_are_called() {
    let server = TestServer::start();
    let mut alice = server.connect("alice");
    alice.join("docs", None);
    for (name, bytes, sniffed) in [
        ("page.html", &b"<!doctype html><script>alert(1)</script>"[..], "text/html"),
        ("logo.svg", &b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>"[..], "image/svg+xml"),
        ("notes", &b"plain words"[..], "text/plain"),
    ] {
        let (status, file) = upload_as(server.ws, "alice", name, "text/plain", bytes);
        assert_eq!((status, file["type"].as_str()), (201, Some(sniffed)), "{file}");
        let id = file["id"].as_str().unwrap();
        alice.send(json!({"type": "msg", "room": "docs", "text": name, "id": name, "files": [id]}));
        alice.expect("ack");
        alice.expect("msg");
        let (status, head, body) = get(server.ws, &url_of(&mut alice, "docs", id), "");
        assert_eq!((status, &body[..]), (200, bytes));
        assert!(head.contains("content-type: application/octet-stream\r\n"), "{head}");
        assert!(head.contains(&format!("content-disposition: attachment; filename=\"{name}\"")), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    }
}

#[test]
fn a_private_rooms_files_stay_private() {
    let server = TestServer::start();
    let mut ann = server.connect("ann");
    ann.send(json!({"type": "join", "private": true, "title": "Club"}));
    let club = ann.expect("joined")["room"].as_str().unwrap().to_owned();
    ann.expect("history");
    let (_, file) = upload_as(server.ws, "ann", "secret.png", "image/png", &png());
    let id = file["id"].as_str().unwrap().to_owned();
    ann.send(json!({"type": "msg", "room": club, "text": "plans", "id": "p1", "files": [id]}));
    ann.expect("ack");
    let url = url_of(&mut ann, &club, &id);
    assert_eq!(get(server.ws, &url, "").0, 200);

    // An outsider cannot get a URL for the room, nor use one for a room it is in.
    let mut eve = server.connect("eve");
    eve.send(json!({"type": "file_urls", "room": club, "files": [id]}));
    assert_eq!(eve.expect("error")["code"], "not_joined");
    eve.join("lobby", None);
    let lobby_url = url_of(&mut eve, "lobby", &id);
    assert_eq!(get(server.ws, &lobby_url, "").0, 404, "never posted in lobby");
    // Nor can it bend a URL it saw: another room, a later expiry, no signature.
    let forged = url.replace(&format!("room={club}"), "room=lobby");
    assert_eq!(get(server.ws, &forged, "").0, 403);
    let exp = url.split("exp=").nth(1).unwrap().split('&').next().unwrap();
    let later = url.replace(&format!("exp={exp}"), &format!("exp={}", exp.parse::<u64>().unwrap() + 1000));
    assert_eq!(get(server.ws, &later, "").0, 403);
    assert_eq!(get(server.ws, &format!("/files/{id}"), "").0, 403);
    assert_eq!(get(server.ws, "/files/nosuchfile?room=lobby&exp=1&sig=x", "").0, 403);

    // Nor post ann's file somewhere it could read it.
    eve.send(json!({"type": "msg", "room": "lobby", "text": "mine now", "id": "e1", "files": [id]}));
    let e = eve.expect("error");
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("not_found"), Some("e1")), "{e}");
    assert_eq!(get(server.ws, &lobby_url, "").0, 404, "the refused post granted nothing");
}

#[test]
fn bad_uploads_are_refused_clearly_and_leave_nothing() {
    let server = TestServer::start_with(|c| c.max_upload_bytes = 1000);
    let tmp = server.dir.path().join("files/tmp");
    let big = vec![b'a'; 1001];
    let (status, e) = upload_as(server.ws, "alice", "big.txt", "text/plain", &big);
    assert_eq!((status, e["error"]["code"].as_str()), (413, Some("too_large")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("at most 1000 bytes"), "{e}");

    let (status, e) = upload_as(server.ws, "alice", "x.bin", "image/png", b"<html><script>alert(1)</script></html>");
    assert_eq!((status, e["error"]["code"].as_str()), (415, Some("bad_type")), "{e}");
    assert_eq!(e["error"]["message"], "Content-Type says image/png but the bytes are text/html");

    let (status, e) = upload_as(server.ws, "alice", "cat.jpg", "application/octet-stream", b"just text");
    assert_eq!(status, 415);
    assert_eq!(e["error"]["message"], "the name says image/jpeg but the bytes are text/plain");

    let mut fake = b"\x89PNG\r\n\x1a\n".to_vec();
    fake.extend_from_slice(&[0u8; 40]);
    let (status, e) = upload_as(server.ws, "alice", "fake.png", "image/png", &fake);
    assert_eq!(status, 415);
    assert_eq!(e["error"]["message"], "not a valid PNG image: its header cannot be read");

    let (status, e) = upload_as(server.ws, "nobody", "x.txt", "text/plain", b"hi");
    assert_eq!(status, 201, "{e}");
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n";
    assert_eq!(request(server.ws, head, b"hi").0, 401, "open mode needs the identity key");

    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "no temporary file left");
    let blobs: usize = std::fs::read_dir(server.dir.path().join("files/blobs")).unwrap().count();
    assert_eq!(blobs, 1, "only the one good upload is kept");

    let mut alice = server.connect("alice");
    alice.join("r", None);
    alice.send(json!({"type": "msg", "room": "r", "text": "see", "id": "m1", "files": ["f0000000000000000"]}));
    let e = alice.expect("error");
    assert_eq!((e["code"].as_str(), e["ref"].as_str()), (Some("not_found"), Some("m1")));
    assert!(e["message"].as_str().unwrap().contains("upload it first"), "{e}");
    alice.send(json!({"type": "msg", "room": "r", "text": "x", "id": "m2", "files": ["../etc"]}));
    assert_eq!(alice.expect("error")["code"], "bad_field");
    alice.post("r", "still fine", "m3");
}

#[test]
fn uploads_are_rate_limited_per_user() {
    let server = TestServer::start_with(|c| c.uploads_per_min = 2);
    for _ in 0..2 {
        assert_eq!(upload_as(server.ws, "alice", "a.txt", "text/plain", b"x").0, 201);
    }
    let (status, e) = upload_as(server.ws, "alice", "a.txt", "text/plain", b"x");
    assert_eq!((status, e["error"]["code"].as_str()), (429, Some("rate_limited")));
    assert_eq!(upload_as(server.ws, "bob", "a.txt", "text/plain", b"x").0, 201, "another user's own rate");
}

#[test]
fn deleting_the_message_deletes_its_file_and_unposted_uploads_expire() {
    let server = TestServer::start_with(|c| c.upload_ttl = Duration::from_millis(400));
    let dir = server.dir.path().to_owned();
    let (_, file) = upload_as(server.ws, "alice", "a.png", "image/png", &png());
    let id = file["id"].as_str().unwrap().to_owned();
    let mut alice = server.connect("alice");
    alice.join("r", None);
    alice.send(json!({"type": "msg", "room": "r", "text": "pic", "id": "m1", "files": [id]}));
    let seq = alice.expect("ack")["seq"].as_u64().unwrap();
    let url = url_of(&mut alice, "r", &id);
    assert_eq!(get(server.ws, &url, "").0, 200);

    // Unposted: swept after the TTL; posted: kept past it.
    let unposted = b"never posted".to_vec();
    assert_eq!(upload_as(server.ws, "alice", "n.txt", "text/plain", &unposted).0, 201);
    assert!(blob_of(&dir, &unposted).exists());
    wait_until(|| !blob_of(&dir, &unposted).exists(), "the unposted upload to be swept");
    assert!(blob_of(&dir, &png()).exists(), "a posted file is kept past the TTL");
    assert_eq!(get(server.ws, &url, "").0, 200);

    alice.send(json!({"type": "delete", "room": "r", "seq": seq, "id": "d1"}));
    alice.expect("ack");
    wait_until(|| !blob_of(&dir, &png()).exists(), "the deleted message's file to go");
    assert_eq!(get(server.ws, &url, "").0, 404);
    let (_, history) = server.connect("carol").join("r", None);
    let m = &history["messages"][0];
    assert_eq!((m["deleted"].as_bool(), m.get("files")), (Some(true), None), "{m}");
}

#[test]
fn a_slow_upload_streams_to_disk_and_holds_only_its_own_connection() {
    let server = TestServer::start_with(|c| c.max_upload_bytes = 8 << 20);
    let tmp = server.dir.path().join("files/tmp");
    // A 6 MiB upload that sends 2 MiB and then stalls, as a phone on a bad link does.
    let total = 6usize << 20;
    let mut slow = TcpStream::connect(server.ws).unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nX-Natter-Key: test-identity-key-for-slowpoke\r\nX-Natter-Name: big.bin\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n",
        server.ws
    );
    slow.write_all(head.as_bytes()).unwrap();
    let part = vec![7u8; 2 << 20];
    slow.write_all(&part).unwrap();
    // Streamed: what came so far is on disk while the upload is unfinished.
    let on_disk = || -> u64 {
        std::fs::read_dir(&tmp)
            .map_or(0, |d| d.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
    };
    wait_until(|| on_disk() >= (1 << 20), "the unfinished upload's bytes on disk");

    // Meanwhile everyone else goes on: chat (stored and acked), another upload, the page.
    let mut alice = server.connect("alice");
    let mut bob = server.connect("bob");
    alice.join("r", None);
    bob.join("r", None);
    let (status, f) = upload_as(server.ws, "alice", "cat.png", "image/png", &png());
    assert_eq!(status, 201, "{f}");
    let id = f["id"].as_str().unwrap();
    alice.send(json!({"type": "msg", "room": "r", "text": "while someone uploads", "id": "m1", "files": [id]}));
    assert_eq!(alice.expect("ack")["id"], "m1");
    assert_eq!(bob.expect("msg")["files"][0]["id"], id);
    assert_eq!(common::http_get(server.http, "/").0, 200, "the page port answers");

    // The slow one finishes and is stored whole.
    slow.write_all(&vec![7u8; total - part.len()]).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out);
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains(&format!("\"size\":{total}")), "{answer}");
    assert_eq!(on_disk(), 0, "no temporary file left");
}

/// Posts a message carrying file `file` and reads its ack and echo; the seq.
fn post_file(c: &mut Client, room: &str, id: &str, file: &str) -> u64 {
    c.send(json!({"type": "msg", "room": room, "text": id, "id": id, "files": [file]}));
    let (mut ack, mut echo) = (None::<Value>, false);
    while ack.is_none() || !echo {
        let v = c.recv();
        match v["type"].as_str() {
            Some("ack") if v["id"] == id => ack = Some(v),
            Some("msg") if v["id"] == id => echo = true,
            Some("error") => panic!("while posting {id}: {v}"),
            // Others' messages and events (with --redis, a delete through the other
            // instance may reach this client now).
            _ => {}
        }
    }
    ack.and_then(|a| a["seq"].as_u64()).expect("the ack has a seq")
}

/// `n` bytes no other call returns: a text file of its own content.
fn distinct_text(tag: &str, n: usize) -> Vec<u8> {
    let mut v = format!("{tag} ").into_bytes();
    v.resize(n, b'.');
    v
}

#[test]
fn a_file_goes_with_the_message_retention_removes() {
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.retention_messages = Some(3);
    });
    let dir = server.dir.path().to_owned();
    let (_, file) = upload_as(server.ws, "alice", "a.png", "image/png", &png());
    let id = file["id"].as_str().unwrap().to_owned();
    let mut alice = server.connect("alice");
    alice.join("r", None);
    assert_eq!(post_file(&mut alice, "r", "with-file", &id), 1);
    let url = url_of(&mut alice, "r", &id);
    assert_eq!(get(server.ws, &url, "").0, 200);
    let kept = distinct_text("kept", 100);
    let (_, k) = upload_as(server.ws, "alice", "k.txt", "text/plain", &kept);
    let kid = k["id"].as_str().unwrap().to_owned();
    for i in 2..=5 {
        alice.post("r", &format!("m{i}"), &format!("m{i}"));
    }
    post_file(&mut alice, "r", "newest", &kid);
    // Seqs 1..=3 go (at most 3 kept): the file of seq 1 with them.
    wait_until(|| !blob_of(&dir, &png()).exists(), "the file of the message retention removed to go");
    assert_eq!(get(server.ws, &url, "").0, 404);
    assert!(blob_of(&dir, &kept).exists(), "a kept message's file stays");
    assert_eq!(get(server.ws, &url_of(&mut alice, "r", &kid), "").0, 200);
}

#[test]
fn files_count_toward_max_store_bytes_and_the_oldest_messages_go_with_their_files() {
    const MIB: usize = 1 << 20;
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.max_store_bytes = 4 * MIB as u64;
    });
    let dir = server.dir.path().to_owned();
    let mut alice = server.connect("alice");
    alice.join("pics", None);
    alice.join("chat", None);
    // The room with the most messages holds no files: it is not the one to go first.
    for i in 0..250 {
        alice.post("chat", &format!("c{i}"), &format!("c{i}"));
    }
    // Each upload waits until the one before counts as posted (the store's sizes
    // follow a post within a moment): uploads not posted yet may take a quarter.
    let upload = |tag: &str| {
        let bytes = distinct_text(tag, MIB - 1000);
        let mut answer = Value::Null;
        wait_until(
            || {
                let (status, f) = upload_as(server.ws, "alice", &format!("{tag}.txt"), "text/plain", &bytes);
                answer = f;
                status == 201
            },
            "the upload to be taken",
        );
        (answer["id"].as_str().unwrap().to_owned(), bytes)
    };
    let (oldest, oldest_bytes) = upload("oldest");
    post_file(&mut alice, "pics", "oldest", &oldest);
    let url = url_of(&mut alice, "pics", &oldest);
    for i in 0..200 {
        alice.post("pics", &format!("p{i}"), &format!("p{i}"));
    }
    let mut newer = Vec::new();
    for tag in ["b", "c", "d"] {
        let (id, bytes) = upload(tag);
        post_file(&mut alice, "pics", tag, &id);
        newer.push((id, bytes));
    }
    // About 4 MiB of posted files and the messages: over the cap, so the oldest
    // messages of the room whose files take the most go, and their file with them.
    wait_until(|| !blob_of(&dir, &oldest_bytes).exists(), "the oldest file to go with its message");
    assert_eq!(get(server.ws, &url, "").0, 404);
    let m = server.metrics();
    assert_eq!(common::metric_value(&m, "natter_store_evicted_total"), Some(200), "one step of pics");
    for (id, bytes) in &newer {
        assert!(blob_of(&dir, bytes).exists());
        let (status, _, body) = get(server.ws, &url_of(&mut alice, "pics", id), "");
        assert_eq!((status, &body == bytes), (200, true));
    }
    alice.send(json!({"type": "history", "room": "chat", "before": 251, "limit": 200}));
    assert_eq!(alice.expect_history()["messages"].as_array().map(Vec::len), Some(200), "chat is untouched");

    // Uploads not posted yet may take a quarter of the cap: past it, 507 and nothing kept.
    upload("waiting");
    let more = distinct_text("more", 2000);
    let (status, e) = upload_as(server.ws, "alice", "more.txt", "text/plain", &more);
    assert_eq!((status, e["error"]["code"].as_str()), (507, Some("store_full")), "{e}");
    assert!(!blob_of(&dir, &more).exists());
}

/// Two instances on one Redis and one files directory: a file uploaded and posted
/// through A is fetched through B by B's signed URL; the message deleted through B (by
/// its author, and another by B's server API, a moderator's delete) takes the file off
/// the shared disk, and both instances answer 404 for it. Each instance sweeps unposted
/// uploads; neither removes a posted file.
#[test]
fn two_instances_on_one_redis_share_one_files_dir() {
    let redis = common_redis::RedisServer::start();
    let shared = tempfile::tempdir().unwrap();
    const MOD_KEY: &str = "moderator-key-for-the-files-test";
    let keys = shared.path().join("api.keys");
    std::fs::write(&keys, format!("{MOD_KEY} moderate\n")).unwrap();
    let on = |redis: &common_redis::RedisServer| {
        let (url, files, keys) = (redis.url(), shared.path().join("files"), keys.clone());
        TestServer::start_with(move |c| {
            c.api_key_file = Some(keys);
            c.redis = Some(url);
            c.redis_presence_ttl = Duration::from_millis(1500);
            c.files_dir = Some(files);
            c.upload_ttl = Duration::from_millis(1500);
            // Retention is the SQLite store's: Redis keeps these messages, so their
            // files stay too, however old (0 days would take every posted file).
            c.retention_days = Some(0);
        })
    };
    let (a, b) = (on(&redis), on(&redis));
    let blob = |bytes: &[u8]| {
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
        shared.path().join("files/blobs").join(&sha[..2]).join(sha)
    };

    let (status, file) = upload_as(a.ws, "alice", "a.png", "image/png", &png());
    assert_eq!(status, 201, "{file}");
    let id = file["id"].as_str().unwrap().to_owned();
    let mut alice = a.connect("alice");
    alice.join("shared", None);
    let mut bob = b.connect("bob");
    bob.join("shared", None);
    let seq = post_file(&mut alice, "shared", "m1", &id);
    let m = bob.next_of("msg");
    assert_eq!((m["seq"].as_u64(), m["files"][0]["id"].as_str()), (Some(seq), Some(id.as_str())), "{m}");
    let (status, _, body) = get(b.ws, &url_of(&mut bob, "shared", &id), "");
    assert_eq!((status, body), (200, png()), "posted through A, fetched through B");

    // Both instances sweep the one directory: an upload never posted goes after its
    // TTL, whichever instance took it; the posted file stays past it.
    let unposted = distinct_text("never posted", 100);
    assert_eq!(upload_as(b.ws, "bob", "n.txt", "text/plain", &unposted).0, 201);
    assert!(blob(&unposted).exists(), "a fresh upload is not swept");
    wait_until(|| !blob(&unposted).exists(), "the unposted upload to be swept");
    assert!(blob(&png()).exists(), "a posted file outlives the TTL and --retention-days on both instances");
    assert_eq!(get(a.ws, &url_of(&mut alice, "shared", &id), "").0, 200);

    // Deleted through B (by its author, connected there).
    let mut alice_on_b = b.connect("alice");
    alice_on_b.join("shared", None);
    alice_on_b.send(json!({"type": "delete", "room": "shared", "seq": seq, "id": "d1"}));
    // With --redis the delete event may come before the ack.
    assert_eq!(alice_on_b.next_of("ack")["id"], "d1");
    wait_until(|| !blob(&png()).exists(), "the deleted message's file to leave the shared dir");
    assert_eq!(get(b.ws, &url_of(&mut bob, "shared", &id), "").0, 404, "through B");
    assert_eq!(get(a.ws, &url_of(&mut alice, "shared", &id), "").0, 404, "through A");

    // Posted through A, deleted by B's server API.
    let other = distinct_text("deleted by the API", 100);
    let (_, f) = upload_as(a.ws, "alice", "o.txt", "text/plain", &other);
    let other_id = f["id"].as_str().unwrap().to_owned();
    let seq = post_file(&mut alice, "shared", "m2", &other_id);
    assert_eq!(get(b.ws, &url_of(&mut bob, "shared", &other_id), "").0, 200);
    let head = format!(
        "DELETE /api/v1/rooms/shared/messages/{seq} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {MOD_KEY}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        b.admin
    );
    let (status, _, body) = request(b.admin, &head, b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    wait_until(|| !blob(&other).exists(), "the file of the message B's API deleted to go");
    assert_eq!(get(a.ws, &url_of(&mut alice, "shared", &other_id), "").0, 404, "through A");
    assert_eq!(get(b.ws, &url_of(&mut bob, "shared", &other_id), "").0, 404, "through B");
}
