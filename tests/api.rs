//! The server API against the real server: every endpoint, keys (wrong, missing,
//! rotated, impersonation), dedup by id, an API post seen live and after resume, bad
//! input, and the same endpoints with two instances on Redis.

mod common;
mod common_redis;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{TestServer, WAIT};
use common_redis::RedisServer;
use natter::config::Config;
use serde_json::{json, Value};

const KEY: &str = "backend-key-0123456789";
const ADMIN_KEY: &str = "admin-key-abcdefghijkl";
/// A key that may delete messages as a moderator.
const MOD_KEY: &str = "moderator-key-mnopqrstuv";

/// One request; `body` is sent as JSON unless `content_type` says otherwise.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &[u8],
    content_type: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    call(addr, "GET", path, Some(KEY), b"", "application/json")
}

fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    call(addr, "POST", path, Some(KEY), body.to_string().as_bytes(), "application/json")
}

fn write_keys(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    // A later mtime than any earlier write, whatever the filesystem's granularity.
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() + Duration::from_secs(rand_secs())).unwrap();
}

fn rand_secs() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

fn with_api(dir: &Path) -> impl FnOnce(&mut Config) {
    let keys = dir.join("api.keys");
    write_keys(&keys, &format!("{KEY}\n{ADMIN_KEY} impersonate\n{MOD_KEY} moderate\n"));
    move |c: &mut Config| {
        c.api_key_file = Some(keys);
        common::unlimited_rate(c);
    }
}

/// A natter on `redis` with the API keys of [`with_api`] (written to `dir`).
fn api_on_redis(redis: &RedisServer, dir: &Path) -> TestServer {
    let (url, api) = (redis.url(), with_api(dir));
    TestServer::start_with(move |c| {
        api(c);
        c.redis = Some(url);
    })
}

/// The server API answers for the private room `room` exactly as for a `p.` name that
/// does not exist (the names swapped), and makes no public room of a `p.` name.
fn private_rooms_answer_as_none(admin: SocketAddr, room: &str) {
    let nothing = format!("p.{}", "a".repeat(26));
    for path in ["/api/v1/rooms/{}/presence", "/api/v1/rooms/{}/messages", "/api/v1/rooms/{}/messages?after=0"] {
        let (status, body) = get(admin, &path.replace("{}", room));
        let answer = (status, body.to_string().replace(room, &nothing));
        let (status, body) = get(admin, &path.replace("{}", &nothing));
        assert_eq!(answer, (status, body.to_string()), "{path}");
        assert_eq!(status, 404, "{path}");
    }
    let post_to = |room: &str| post(admin, &format!("/api/v1/rooms/{room}/messages"), json!({"text": "x"}));
    let (status, body) = post_to(room);
    let (none_status, none_body) = post_to(&nothing);
    assert_eq!((status, body.to_string().replace(room, &nothing)), (none_status, none_body.to_string()), "post");
    assert_eq!(status, 404);
}

/// Issue 23 item 7: the presence call answered 200 for a private room and 404 for
/// none, which told the room existed.
#[test]
fn a_private_room_is_answered_as_a_room_that_does_not_exist() {
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    let mut ann = server.connect("ann");
    ann.send(json!({"type": "join", "private": true, "title": "Team"}));
    let room = ann.expect("joined")["room"].as_str().unwrap().to_owned();
    ann.expect_history();
    ann.post(&room, "team only", "t1");
    private_rooms_answer_as_none(server.admin, &room);
}

#[test]
fn every_endpoint_answers_and_a_post_takes_the_client_path() {
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    let mut ann = server.connect("ann");
    ann.join("lobby", None);

    let (status, body) =
        post(server.admin, "/api/v1/rooms/lobby/messages", json!({"text": "from the backend", "id": "b-1"}));
    assert_eq!((status, &body), (201, &json!({"seq": 1, "dup": false})));
    let live = ann.expect("msg");
    assert_eq!(
        (live["text"].as_str(), live["uid"].as_str(), live["seq"].as_u64()),
        (Some("from the backend"), Some("system"), Some(1))
    );

    // The same id again: one message, dup:true with the original seq, nothing broadcast.
    let (status, body) =
        post(server.admin, "/api/v1/rooms/lobby/messages", json!({"text": "from the backend", "id": "b-1"}));
    assert_eq!((status, &body), (200, &json!({"seq": 1, "dup": true})));
    let (status, bot) = post(
        server.admin,
        "/api/v1/rooms/lobby/messages",
        json!({"text": "beep", "from": {"id": "bot7", "name": "Bot"}}),
    );
    assert_eq!((status, bot["seq"].as_u64()), (201, Some(2)));
    let live = ann.expect("msg");
    assert_eq!(
        (live["seq"].as_u64(), live["uid"].as_str(), live["user"].as_str()),
        (Some(2), Some("api:bot7"), Some("Bot"))
    );

    let (status, page) = get(server.admin, "/api/v1/rooms/lobby/messages?after=0&limit=10");
    assert_eq!(status, 200);
    let seqs: Vec<u64> = page["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, page["head"].as_u64(), page["complete"].as_bool()), (vec![1, 2], Some(2), Some(true)));
    let (_, older) = get(server.admin, "/api/v1/rooms/lobby/messages?before=2&limit=1");
    assert_eq!(older["messages"][0]["seq"], 1);

    let (status, rooms) = get(server.admin, "/api/v1/rooms");
    assert_eq!(status, 200);
    assert_eq!(rooms["rooms"], json!([{"room": "lobby", "users": 1, "head": 2}]));
    let (status, presence) = get(server.admin, "/api/v1/rooms/lobby/presence");
    assert_eq!((status, presence["users"][0]["id"].as_str()), (200, Some(ann.uid().as_str())));
    assert_eq!(get(server.admin, "/api/v1/rooms/nowhere/presence").0, 404);

    // A client away during the API post gets it on resume.
    let mut bob = server.connect("bob");
    bob.join("lobby", Some(2));
    post(server.admin, "/api/v1/rooms/lobby/messages", json!({"text": "while you were away"}));
    ann.expect("msg");
    let (_, history) = server.connect("bob2").join("lobby", Some(2));
    assert_eq!(history["messages"][0]["text"], "while you were away");

    let (status, closed) = call(
        server.admin,
        "POST",
        &format!("/api/v1/users/{}/disconnect", ann.uid()),
        Some(KEY),
        b"{}",
        "application/json",
    );
    assert_eq!((status, closed["closed"].as_u64()), (200, Some(1)));
    assert_eq!(ann.expect_close(), (1008, "disconnected by the server".into()));
}

fn delete(addr: SocketAddr, room: &str, seq: u64, key: &str) -> (u16, Value) {
    call(addr, "DELETE", &format!("/api/v1/rooms/{room}/messages/{seq}"), Some(key), b"", "application/json")
}

/// The API's DELETE is a moderator's delete: the room's members get the `delete` event
/// and the text leaves history and search. Without the `moderate` right: 403, and the
/// text stays.
fn a_moderating_key_deletes_any_message(api: &TestServer, watcher: &TestServer) {
    let mut ann = api.connect("ann");
    let mut bob = watcher.connect("bob");
    ann.join("lobby", None);
    bob.join("lobby", None);
    ann.post("lobby", "zanzibarquokka secret", "m1");
    ann.post("lobby", "keep me", "m2");
    bob.expect("msg");
    bob.expect("msg");

    let (status, body) = delete(api.admin, "lobby", 1, KEY);
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{body}");
    let (status, body) = delete(api.admin, "lobby", 1, ADMIN_KEY);
    assert_eq!(status, 403, "impersonate is not moderate: {body}");
    let (_, page) = get(api.admin, "/api/v1/rooms/lobby/messages?after=0");
    assert_eq!(page["messages"][0]["text"], "zanzibarquokka secret", "a refused delete changes nothing");

    let (status, body) = delete(api.admin, "lobby", 1, MOD_KEY);
    assert_eq!((status, &body), (200, &json!({"seq": 3, "dup": false})));
    for member in [&mut ann, &mut bob] {
        let event = member.expect("delete");
        assert_eq!(
            (event["seq"].as_u64(), event["of"].as_u64(), event["uid"].as_str()),
            (Some(3), Some(1), Some("system"))
        );
    }
    for server in [api, watcher] {
        let (_, page) = get(server.admin, "/api/v1/rooms/lobby/messages?after=0");
        let first = &page["messages"][0];
        assert_eq!((first.get("text"), first["deleted"].as_bool()), (None, Some(true)), "{page}");
        assert_eq!(page["messages"][1]["text"], "keep me");
    }
    bob.send(json!({"type": "search", "room": "lobby", "q": "zanzibarquokka"}));
    assert_eq!(bob.next_of("search")["messages"], json!([]), "search forgot the text");

    assert_eq!(delete(api.admin, "lobby", 1, MOD_KEY).0, 404, "already deleted");
    assert_eq!(delete(api.admin, "lobby", 99, MOD_KEY).0, 404, "no such message");
    assert_eq!(delete(api.admin, "nowhere", 1, MOD_KEY).0, 404, "no such room");
}

#[test]
fn a_key_marked_moderate_deletes_messages_like_a_moderator() {
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    a_moderating_key_deletes_any_message(&server, &server);
}

#[test]
fn a_key_marked_moderate_deletes_messages_on_two_instances_sharing_redis() {
    let redis = RedisServer::start();
    let keys_dir = tempfile::tempdir().unwrap();
    let (a, b) = (api_on_redis(&redis, keys_dir.path()), api_on_redis(&redis, keys_dir.path()));
    a_moderating_key_deletes_any_message(&a, &b);
}

#[test]
fn keys_are_checked_rotated_and_only_some_may_impersonate() {
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    let path = "/api/v1/rooms";
    assert_eq!(call(server.admin, "GET", path, None, b"", "application/json").0, 401);
    let (status, body) = call(server.admin, "GET", path, Some("not-a-key-at-all-nope"), b"", "application/json");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(get(server.admin, path).0, 200);

    // Rotation: the file now holds only a new key.
    let new_key = "rotated-key-zyxwvutsrq";
    write_keys(&keys_dir.path().join("api.keys"), &format!("{new_key}\n"));
    assert_eq!(get(server.admin, path).0, 401, "the old key is gone");
    assert_eq!(call(server.admin, "GET", path, Some(new_key), b"", "application/json").0, 200);
    // A broken file keeps the keys in force rather than locking everyone out.
    write_keys(&keys_dir.path().join("api.keys"), "short\n");
    assert_eq!(call(server.admin, "GET", path, Some(new_key), b"", "application/json").0, 200);

    write_keys(&keys_dir.path().join("api.keys"), &format!("{KEY}\n{ADMIN_KEY} impersonate\n"));
    let mut alice = server.connect("alice");
    alice.join("r", None);
    let as_alice = json!({"text": "I am alice", "from": {"id": alice.uid(), "name": "alice"}});
    post(server.admin, "/api/v1/rooms/r/messages", as_alice.clone());
    assert_eq!(alice.expect("msg")["uid"], format!("api:{}", alice.uid()), "an ordinary key cannot speak as a user");
    call(
        server.admin,
        "POST",
        "/api/v1/rooms/r/messages",
        Some(ADMIN_KEY),
        as_alice.to_string().as_bytes(),
        "application/json",
    );
    assert_eq!(alice.expect("msg")["uid"], alice.uid(), "a key marked impersonate can");
}

#[test]
fn bad_input_gets_a_json_error_and_changes_nothing() {
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    let room = "/api/v1/rooms/r/messages";
    // (method, path, body, content type, expected status, expected code)
    type Case<'a> = (&'a str, String, Vec<u8>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", room.into(), vec![b'x'; 10 * 1024 * 1024], "application/json", 413, "too_long"),
        ("POST", room.into(), b"[1,2]".to_vec(), "application/json", 400, "bad_json"),
        ("POST", room.into(), b"{\"text\":".to_vec(), "application/json", 400, "bad_json"),
        ("POST", room.into(), b"{\"text\":\"x\"}".to_vec(), "text/plain", 400, "bad_json"),
        ("POST", room.into(), b"{\"text\":7}".to_vec(), "application/json", 400, "bad_field"),
        ("POST", room.into(), b"{\"text\":\"   \"}".to_vec(), "application/json", 400, "bad_field"),
        ("GET", "/api/v1/rooms/a%2Fb/messages".into(), vec![], "application/json", 400, "bad_field"),
        ("GET", "/api/v1/rooms/../messages".into(), vec![], "application/json", 400, "bad_field"),
        ("GET", "/api/v1/rooms/a%00/messages".into(), vec![], "application/json", 400, "bad_field"),
        ("GET", format!("/api/v1/rooms/{}/messages", "r".repeat(1000)), vec![], "application/json", 400, "bad_field"),
        ("GET", format!("{room}?limit=-1"), vec![], "application/json", 400, "bad_field"),
        ("GET", format!("{room}?limit=1e9"), vec![], "application/json", 400, "bad_field"),
        ("GET", format!("{room}?after=18446744073709551615"), vec![], "application/json", 400, "bad_field"),
        ("GET", format!("{room}?after=9007199254740992"), vec![], "application/json", 400, "bad_field"),
        ("GET", format!("{room}?before=18446744073709551615"), vec![], "application/json", 400, "bad_field"),
        ("GET", "/api/v1/nothing".into(), vec![], "application/json", 404, "not_found"),
    ];
    for (method, path, body, ct, status, code) in cases {
        let (got, err) = call(server.admin, method, &path, Some(KEY), &body, ct);
        assert_eq!((got, err["error"]["code"].as_str()), (status, Some(code)), "{method} {path:.60}");
    }
    let (_, rooms) = get(server.admin, "/api/v1/rooms");
    assert_eq!(rooms["rooms"], json!([]), "nothing was created or stored");
}

#[test]
fn without_a_key_file_the_api_is_off_and_never_on_the_public_port() {
    let server = TestServer::start();
    assert_eq!(get(server.admin, "/api/v1/rooms").0, 404);
    let keys_dir = tempfile::tempdir().unwrap();
    let with_keys = TestServer::start_with(with_api(keys_dir.path()));
    let (status, body) = get(with_keys.http, "/api/v1/rooms");
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "the page port has no API");
    assert_eq!(get(with_keys.admin, "/api/v1/rooms").0, 200);
    // Every method, on the page port and on an admin listener without keys: a JSON 404.
    for (addr, method) in [
        (with_keys.http, "POST"),
        (with_keys.http, "PUT"),
        (with_keys.http, "DELETE"),
        (with_keys.http, "PATCH"),
        (with_keys.http, "OPTIONS"),
        (server.admin, "POST"),
        (server.admin, "DELETE"),
    ] {
        let (status, body) = call(addr, method, "/api/v1/rooms/r/messages", Some(KEY), b"{}", "application/json");
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{method} on {addr}");
    }
}

#[test]
fn the_api_works_the_same_on_two_instances_sharing_redis() {
    let redis = RedisServer::start();
    let keys_dir = tempfile::tempdir().unwrap();
    let (a, b) = (api_on_redis(&redis, keys_dir.path()), api_on_redis(&redis, keys_dir.path()));
    let mut on_b = b.connect("bea");
    on_b.join("shared", None);
    let (status, body) = post(a.admin, "/api/v1/rooms/shared/messages", json!({"text": "via a", "id": "x1"}));
    assert_eq!((status, body["seq"].as_u64()), (201, Some(1)));
    assert_eq!(on_b.expect("msg")["text"], "via a", "seen live on the other instance");
    let (status, body) = post(b.admin, "/api/v1/rooms/shared/messages", json!({"text": "via a", "id": "x1"}));
    assert_eq!((status, &body), (200, &json!({"seq": 1, "dup": true})), "dedup spans instances");

    // A private room, with a message, is never listed (Redis mode too).
    on_b.send(json!({"type": "join", "private": true, "title": "hidden"}));
    let joined = on_b.expect("joined");
    assert_eq!(joined["private"], true);
    let hidden = joined["room"].as_str().unwrap().to_owned();
    on_b.expect_history();
    on_b.post(&hidden, "between walls", "h1");
    for server in [&a, &b] {
        let (_, page) = get(server.admin, "/api/v1/rooms/shared/messages?after=0");
        assert_eq!(page["messages"][0]["text"], "via a");
        let (_, rooms) = get(server.admin, "/api/v1/rooms");
        assert_eq!(rooms["rooms"], json!([{"room": "shared", "users": 1, "head": 1}]));
        let (_, presence) = get(server.admin, "/api/v1/rooms/shared/presence");
        assert_eq!(presence["users"][0]["id"], on_b.uid());
        private_rooms_answer_as_none(server.admin, &hidden);
    }

    // Disconnect asked of A closes the user's connection on B.
    let path = format!("/api/v1/users/{}/disconnect", on_b.uid());
    let (status, closed) = call(a.admin, "POST", &path, Some(KEY), b"{}", "application/json");
    assert_eq!((status, closed["closed"].as_u64()), (200, Some(0)), "none of them was on A");
    assert_eq!(on_b.expect_close(), (1008, "disconnected by the server".into()));
}

/// A key file others may write is not read again: anyone could add an `impersonate`
/// key to it. The keys in force stay until the file is safe and changes again.
#[test]
fn a_key_file_others_may_write_is_not_reloaded() {
    use std::os::unix::fs::PermissionsExt;
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    let (file, intruder) = (keys_dir.path().join("api.keys"), "intruder-key-0123456789");
    let path = "/api/v1/rooms";
    assert_eq!(get(server.admin, path).0, 200, "started with a safe file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    write_keys(&file, &format!("{intruder} impersonate\n"));
    assert_eq!(call(server.admin, "GET", path, Some(intruder), b"", "application/json").0, 401, "not taken");
    assert_eq!(get(server.admin, path).0, 200, "the keys in force stay");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_keys(&file, &format!("{intruder}\n"));
    assert_eq!(call(server.admin, "GET", path, Some(intruder), b"", "application/json").0, 200, "safe again");
}

/// Callers without a key that send a body a byte at a time are answered 401 from the
/// head alone and never hold an API worker: a real call is answered meanwhile.
#[test]
fn slow_bodies_without_a_key_never_hold_the_api_workers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, answers) = std::sync::mpsc::channel();
    let (started, starts) = std::sync::mpsc::channel();
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let (stop, answered, started, addr) = (stop.clone(), answered.clone(), started.clone(), server.admin);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                let head = format!(
                    "POST /api/v1/rooms/r/messages HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                );
                s.write_all(head.as_bytes()).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                // A byte at a time, reading whatever comes back, until the test ends.
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(b"x").is_err() {
                        break;
                    }
                    sent += 1;
                    if sent == 3 {
                        // Well into its body: the guard has long handed it over.
                        let _ = started.send(());
                    }
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                let _ = answered.send(String::from_utf8_lossy(&got).into_owned());
            })
        })
        .collect();
    // Every slow caller is sending its body (or was answered) before the real call.
    drop(started);
    let _ = starts.iter().take(8).count();
    let mut s = TcpStream::connect(server.admin).unwrap();
    // Generous: the old code answered after the slow callers' 10 s per-read timeouts.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head =
        format!("GET /api/v1/rooms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let read = s.read_to_string(&mut out);
    stop.store(true, Ordering::Relaxed);
    assert!(read.is_ok() && out.starts_with("HTTP/1.1 200 "), "the real call waited: {read:?} {out}");
    for t in slow {
        t.join().unwrap();
    }
    drop(answered);
    for got in answers {
        assert!(got.starts_with("HTTP/1.1 401 "), "a caller without a key is told so at once: {got}");
    }
}

/// A caller that writes a body over the limit whole and only then reads gets the 413,
/// not a connection reset (Python's urllib does this).
#[test]
fn a_body_too_large_written_whole_then_read_gets_the_413() {
    let keys_dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(with_api(keys_dir.path()));
    for key in [Some(KEY), None] {
        let mut s = TcpStream::connect(server.admin).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        let body = vec![b'x'; 4 * 1024 * 1024];
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let head = format!(
            "POST /api/v1/rooms/r/messages HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).expect("the whole body is taken (and dropped), not reset");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("the answer, not a reset");
        let want = if key.is_some() { "HTTP/1.1 413 " } else { "HTTP/1.1 401 " };
        assert!(out.starts_with(want), "{key:?}: {out}");
    }
}
