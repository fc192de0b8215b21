//! Server-wide bans and the audit log against the real server (issue 26 items 2 and
//! 3): a ban closes the user everywhere and refuses them at connect over WebSocket
//! (URL form and `hello`), SSE (stream and ticket) and `/send`; it survives a restart,
//! expires, and is lifted by an unban; only `admin` keys may ban or read the log. Every
//! moderator and admin action is in the audit log, paged and filtered, trimmed by
//! `--audit-retention-days`; the same with two instances on one Redis.

mod common;
mod common_redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{wait_until, Client, Stream, TestServer, WAIT};
use common_redis::RedisServer;
use natter::config::Config;
use serde_json::{json, Value};
use tungstenite::Message;

const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
const PLAIN_KEY: &str = "plain-key-0123456789abcdef";
const MOD_KEY: &str = "moderate-key-0123456789abc";

fn call(addr: SocketAddr, method: &str, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn ban(server: &TestServer, uid: &str, minutes: f64, reason: &str) -> (u16, Value) {
    let body = json!({"minutes": minutes, "reason": reason});
    call(server.admin, "POST", &format!("/api/v1/users/{uid}/ban"), ADMIN_KEY, Some(body))
}

fn audit(server: &TestServer, query: &str) -> Value {
    let (status, body) = call(server.admin, "GET", &format!("/api/v1/audit?{query}"), ADMIN_KEY, None);
    assert_eq!(status, 200, "{body}");
    body
}

fn actions(page: &Value) -> Vec<String> {
    page["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap().to_owned()).collect()
}

fn write_keys(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let later = SystemTime::now() + Duration::from_secs(N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    std::fs::File::options().write(true).open(path).unwrap().set_modified(later).unwrap();
}

/// The API keys (written to `dir`), and `tweak`.
fn configured(dir: &Path, tweak: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    let keys = dir.join("api.keys");
    write_keys(&keys, &format!("{ADMIN_KEY} admin\n{PLAIN_KEY}\n{MOD_KEY} moderate\n"));
    move |c: &mut Config| {
        c.api_key_file = Some(keys);
        common::unlimited_rate(c);
        tweak(c);
    }
}

/// The WebSocket URL form: refused before the upgrade, with the HTTP status.
fn ws_status(server: &TestServer, name: &str) -> u16 {
    let url = common::with_identity_key(&server.url(name));
    match tungstenite::connect(url.as_str()) {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

/// `hello`: the error frame's code and the close frame, or the welcome.
fn hello(server: &TestServer, name: &str) -> Result<Client, (String, u16, String)> {
    let stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("ws://{}/ws?auth=hello", server.ws);
    let (mut ws, _) = tungstenite::client(url, Stream::Plain(stream)).unwrap();
    let hello = json!({"type": "hello", "name": name, "key": format!("test-identity-key-for-{name}")});
    ws.send(Message::text(hello.to_string())).unwrap();
    let first: Value = match ws.read().unwrap() {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        other => panic!("{other:?}"),
    };
    let mut c = Client { ws, welcome: first.clone() };
    if first["type"] == "welcome" {
        return Ok(c);
    }
    let (code, reason) = c.expect_close();
    Err((first["code"].as_str().unwrap_or_default().to_owned(), code, reason))
}

/// An HTTP request on the WebSocket port (SSE and `/send`): (status, head, body).
fn http(server: &TestServer, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(server.ws).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("{head}Host: {}\r\nContent-Length: {}\r\n\r\n{body}", server.ws, body.len()).as_bytes())
        .unwrap();
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut rest = String::new();
    if status != 200 {
        let _ = reader.read_to_string(&mut rest);
    }
    (status, rest)
}

fn sse_status(server: &TestServer, name: &str) -> u16 {
    http(server, &format!("GET /sse?name={name}&key=test-identity-key-for-{name} HTTP/1.1\r\n"), "").0
}

fn ticket_status(server: &TestServer, name: &str) -> u16 {
    let body = json!({"name": name, "key": format!("test-identity-key-for-{name}")}).to_string();
    http(server, "POST /sse HTTP/1.1\r\nContent-Type: application/json\r\n", &body).0
}

/// An open SSE stream of `name`: its session id, and the stream to read on.
fn sse_session(server: &TestServer, name: &str) -> (String, BufReader<TcpStream>) {
    let mut s = TcpStream::connect(server.ws).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let head = format!("GET /sse?name={name}&key=test-identity-key-for-{name} HTTP/1.1\r\nHost: {}\r\n\r\n", server.ws);
    s.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(s);
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended before its welcome");
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            if v["type"] == "welcome" {
                return (v["session"].as_str().unwrap().to_owned(), reader);
            }
        }
    }
}

/// Reads the stream until its closing event; its data.
fn sse_close(reader: &mut BufReader<TcpStream>) -> Value {
    let mut closing = false;
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended without a close event");
        if line.trim() == "event: close" {
            closing = true;
        } else if let (true, Some(data)) = (closing, line.strip_prefix("data: ")) {
            return serde_json::from_str(data.trim()).unwrap();
        }
    }
}

fn send_status(server: &TestServer, session: &str) -> u16 {
    let body = json!({"type": "join", "room": "lobby"}).to_string();
    http(server, &format!("POST /send?session={session} HTTP/1.1\r\n"), &body).0
}

/// `a` bans a user connected to `b`: cut at once, refused at connect over every
/// transport on `b` (and `a`), listed, audited, then let back in by an unban.
fn a_ban_cuts_refuses_and_lifts(a: &TestServer, b: &TestServer) {
    let mut ann = b.connect("ann");
    let uid = ann.uid();
    let (session, mut stream) = sse_session(b, "ann");
    let mut bob = b.connect("bob");
    bob.join("lobby", None);

    let (status, body) =
        call(a.admin, "POST", &format!("/api/v1/users/{uid}/ban"), PLAIN_KEY, Some(json!({"minutes": 5})));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "only admin keys ban");
    for bad in [json!({"minutes": 0}), json!({"minutes": -1}), json!({"minutes": 1e9}), json!({"reason": "x"})] {
        let (status, _) = call(a.admin, "POST", &format!("/api/v1/users/{uid}/ban"), ADMIN_KEY, Some(bad.clone()));
        assert_eq!(status, 400, "{bad}");
    }

    let (status, body) = ban(a, &uid, 10.0, "spam links");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], uid.as_str());
    assert_eq!(ann.expect_close(), (1008, "banned from this server".into()));
    assert_eq!(sse_close(&mut stream)["reason"], "banned from this server");
    assert_eq!(send_status(b, &session), 403, "/send into the closed session posts nothing");

    for server in [a, b] {
        wait_until(|| ws_status(server, "ann") == 403, "the URL form refused with 403");
        let (code, close, reason) = hello(server, "ann").err().expect("hello refused");
        assert_eq!((code.as_str(), close), ("forbidden", 1008));
        assert!(reason.starts_with("banned from this server: 10 more minute(s): spam links"), "{reason}");
        assert_eq!(sse_status(server, "ann"), 403, "an SSE stream");
        assert_eq!(ticket_status(server, "ann"), 403, "an SSE ticket");
        let (status, body) = call(server.admin, "GET", "/api/v1/bans", ADMIN_KEY, None);
        assert_eq!(status, 200);
        assert_eq!(body["bans"][0]["user"], uid.as_str());
        assert_eq!(body["bans"][0]["reason"], "spam links");
    }
    bob.post("lobby", "bob is not banned", "b1");

    let entry = &audit(b, "action=ban")["entries"][0];
    assert_eq!((entry["target"].as_str(), entry["addr"].as_str()), (Some(uid.as_str()), Some("127.0.0.1")));
    assert!(entry["actor"].as_str().unwrap().starts_with("key-"), "{entry}");
    assert!(entry["detail"].as_str().unwrap().contains("spam links"), "{entry}");

    let (status, body) = call(b.admin, "DELETE", &format!("/api/v1/users/{uid}/ban"), ADMIN_KEY, None);
    assert_eq!((status, &body["lifted"]), (200, &json!(true)));
    for server in [a, b] {
        wait_until(|| ws_status(server, "ann") == 101, "let back in after the unban");
        assert!(hello(server, "ann").is_ok());
    }
    wait_until(|| actions(&audit(a, &format!("target={uid}"))).contains(&"unban".to_owned()), "the unban in the log");
}

#[test]
fn a_banned_user_is_cut_and_refused_over_every_transport_until_unbanned() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(configured(dir.path(), |_| {}));
    a_ban_cuts_refuses_and_lifts(&server, &server);
}

#[test]
fn a_ban_on_one_instance_cuts_and_refuses_on_every_instance() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let url = redis.url();
        TestServer::start_with(configured(dir.path(), move |c| c.redis = Some(url)))
    };
    let (a, b) = (start(), start());
    a_ban_cuts_refuses_and_lifts(&a, &b);
}

#[test]
fn a_ban_survives_a_restart_and_expires_by_itself() {
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let on_data = |c: &mut Config| c.data_dir = data.path().to_owned();
    let server = TestServer::start_with(configured(keys.path(), on_data));
    let uid = server.connect("ann").uid();
    assert_eq!(ban(&server, &uid, 60.0, "").0, 200);
    let short = server.connect("bob").uid();
    assert_eq!(ban(&server, &short, 0.05, "three seconds").0, 200);
    server.stop();

    let server = TestServer::start_with(configured(keys.path(), on_data));
    assert_eq!(ws_status(&server, "ann"), 403, "the ban was stored");
    assert_eq!(ws_status(&server, "bob"), 403);
    wait_until(|| ws_status(&server, "bob") == 101, "a ban expires by itself");
    assert_eq!(ws_status(&server, "ann"), 403, "the longer ban still holds");
}

/// Open mode, behind a trusted proxy: a ban also covers the address the user came
/// from, so a new identity from there is refused too; another address is not.
#[test]
fn in_open_mode_a_ban_covers_the_address_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(configured(dir.path(), |c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    }));
    let via = |key: &str, ip: &str| {
        let url = format!("ws://{}/ws?name=x&key={key}", server.ws);
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        req.headers_mut().insert("x-forwarded-for", ip.parse().unwrap());
        let stream = TcpStream::connect(server.ws).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        match tungstenite::client(req, Stream::Plain(stream)) {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => Err(resp.status().as_u16()),
            Err(e) => panic!("{e}"),
        }
    };
    let mut troll =
        Client { ws: via("troll-identity-key-0001", "203.0.113.7").expect("connected"), welcome: Value::Null };
    let uid = troll.recv()["user"]["id"].as_str().unwrap().to_owned();
    let (status, body) = ban(&server, &uid, 10.0, "");
    assert_eq!((status, &body["addresses"]), (200, &json!(1)));
    assert_eq!(troll.expect_close().0, 1008);
    assert_eq!(via("a-brand-new-identity-key", "203.0.113.7").err(), Some(403), "a new identity from there");
    assert!(via("someone-else-entirely-key", "198.51.100.8").is_ok(), "another address is not affected");
    assert!(via("a-brand-new-identity-key", "127.0.0.1").is_ok(), "the proxy's own address is never covered");
}

/// Kicks, modes, deletions (by a moderator and by the API), disconnects and key file
/// re-reads are all in the log; it pages back with `before` and filters.
fn every_action_is_audited_and_pages(server: &TestServer, keys: &Path, moderator: &str) {
    let mut m = server.connect("moderator");
    assert_eq!(m.uid(), moderator);
    let mut ann = server.connect("ann");
    m.join("r", None);
    ann.join("r", None);
    let seq = ann.post("r", "delete me", "a1")["seq"].as_u64().unwrap();
    let seq2 = ann.post("r", "and me", "a2")["seq"].as_u64().unwrap();
    m.send(json!({"type": "delete", "room": "r", "seq": seq}));
    m.next_of("delete");
    let (status, _) = call(server.admin, "DELETE", &format!("/api/v1/rooms/r/messages/{seq2}"), MOD_KEY, None);
    assert_eq!(status, 200);
    m.send(json!({"type": "mode", "room": "r", "read_only": true}));
    m.next_of("system");
    m.send(json!({"type": "kick", "room": "r", "user": ann.uid(), "minutes": 5}));
    m.next_of("system");
    let (status, _) = call(server.admin, "POST", &format!("/api/v1/users/{}/disconnect", ann.uid()), MOD_KEY, None);
    assert_eq!(status, 200);
    write_keys(&keys.join("api.keys"), &format!("{ADMIN_KEY} admin\n{MOD_KEY} moderate\n"));
    let want = ["keys.reload", "disconnect", "kick", "mode", "delete", "delete"];
    wait_until(|| actions(&audit(server, "limit=50")) == want, "every action in the log, newest first");

    let first = audit(server, "limit=4");
    assert_eq!(actions(&first), want[..4]);
    let next = first["next_before"].as_u64().expect("a next page");
    let rest = audit(server, &format!("limit=4&before={next}"));
    assert_eq!(actions(&rest), want[4..]);
    assert!(rest["next_before"].is_null(), "the last page");

    let kicks = audit(server, "action=kick");
    let kick = &kicks["entries"][0];
    assert_eq!((kick["actor"].as_str(), kick["room"].as_str()), (Some(moderator), Some("r")));
    assert_eq!((kick["target"].as_str(), kick["addr"].as_str()), (Some(ann.uid().as_str()), Some("127.0.0.1")));
    assert_eq!(actions(&audit(server, &format!("actor={moderator}"))), ["kick", "mode", "delete"]);
    let deletes = audit(server, "room=r&action=delete");
    let targets: Vec<(&str, &str)> = deletes["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["target"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    let (api, by_mod) = (format!("message {seq2}"), format!("message {seq}"));
    assert_eq!(
        targets,
        [(ann.uid().as_str(), api.as_str()), (ann.uid().as_str(), by_mod.as_str())],
        "whose message, which"
    );
    assert_eq!(actions(&audit(server, "since=99999999999999")).len(), 0);
    for bad in ["limit=0", "limit=501", "before=x", "colour=red"] {
        assert_eq!(call(server.admin, "GET", &format!("/api/v1/audit?{bad}"), ADMIN_KEY, None).0, 400, "{bad}");
    }
    assert_eq!(call(server.admin, "GET", "/api/v1/audit", MOD_KEY, None).0, 403, "only admin keys read it");
}

fn moderator_uid() -> String {
    TestServer::start().connect("moderator").uid()
}

#[test]
fn every_moderator_and_admin_action_is_in_the_audit_log() {
    let moderator = moderator_uid();
    let dir = tempfile::tempdir().unwrap();
    let m = moderator.clone();
    let server = TestServer::start_with(configured(dir.path(), move |c| c.mods = vec![m]));
    every_action_is_audited_and_pages(&server, dir.path(), &moderator);
}

#[test]
fn every_moderator_and_admin_action_is_in_the_audit_log_with_redis() {
    let redis = RedisServer::start();
    let moderator = moderator_uid();
    let dir = tempfile::tempdir().unwrap();
    let (m, url) = (moderator.clone(), redis.url());
    let server = TestServer::start_with(configured(dir.path(), move |c| {
        c.mods = vec![m];
        c.redis = Some(url);
    }));
    every_action_is_audited_and_pages(&server, dir.path(), &moderator);
}

/// With Redis a kick or mode change is in the log once Redis stored it, never when it
/// was only asked for: while the room's seq key is broken (a wrong type, so the append
/// script fails before writing anything) both fail and the log stays empty; once it is
/// whole they are stored, and logged with who, what, whom, where, when and from where.
#[test]
fn with_redis_a_kick_or_mode_is_audited_once_stored_and_only_then() {
    let redis = RedisServer::start();
    let moderator = moderator_uid();
    let dir = tempfile::tempdir().unwrap();
    let (m, url) = (moderator.clone(), redis.url());
    let server = TestServer::start_with(configured(dir.path(), move |c| {
        c.mods = vec![m];
        c.redis = Some(url);
    }));
    let mut mo = server.connect("moderator");
    let mut ann = server.connect("ann");
    mo.join("q", None);
    ann.join("q", None);
    let head = ann.post("q", "hello", "a1")["seq"].as_u64().unwrap();
    let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    redis::cmd("DEL").arg("natter:room:q:seq").exec(&mut con).unwrap();
    redis::cmd("HSET").arg("natter:room:q:seq").arg("broken").arg(1).exec(&mut con).unwrap();
    mo.send(json!({"type": "mode", "room": "q", "read_only": true}));
    assert_eq!(mo.next_of("error")["code"], "unavailable", "the mode change is not stored");
    mo.send(json!({"type": "kick", "room": "q", "user": ann.uid(), "minutes": 5}));
    assert_eq!(mo.next_of("error")["code"], "unavailable", "the kick is not stored");
    // A later action goes through the same thread: once it is logged, so would the two be.
    let (status, _) = call(server.admin, "POST", "/api/v1/users/nobody/disconnect", ADMIN_KEY, None);
    assert_eq!(status, 200);
    wait_until(|| actions(&audit(&server, "")).contains(&"disconnect".to_owned()), "the disconnect in the log");
    assert_eq!(actions(&audit(&server, "room=q")), Vec::<String>::new(), "nothing stored, nothing logged");

    redis::cmd("DEL").arg("natter:room:q:seq").exec(&mut con).unwrap();
    redis::cmd("SET").arg("natter:room:q:seq").arg(head).exec(&mut con).unwrap();
    let before = now_ms();
    mo.send(json!({"type": "mode", "room": "q", "read_only": true}));
    mo.next_of("system");
    mo.send(json!({"type": "kick", "room": "q", "user": ann.uid(), "minutes": 5}));
    mo.next_of("system");
    wait_until(|| actions(&audit(&server, "room=q")) == ["kick", "mode"], "both in the log once stored");
    let page = audit(&server, "room=q");
    let (kick, mode) = (&page["entries"][0], &page["entries"][1]);
    assert_eq!((kick["actor"].as_str(), kick["target"].as_str()), (Some(moderator.as_str()), Some(ann.uid().as_str())));
    assert_eq!((kick["detail"].as_str(), kick["addr"].as_str()), (Some("5 minute(s)"), Some("127.0.0.1")));
    assert_eq!((mode["actor"].as_str(), mode["detail"].as_str()), (Some(moderator.as_str()), Some("read-only")));
    assert!(kick["ts"].as_u64().is_some_and(|ts| ts >= before) && mode["ts"].as_u64().is_some_and(|ts| ts >= before));
}

const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Entries older than `--audit-retention-days` go; younger ones stay.
#[test]
fn audit_entries_past_their_retention_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(configured(dir.path(), |c| c.audit_retention_days = Some(30)));
    audit(&server, ""); // the store is open
    let db = rusqlite::Connection::open(server.dir.path().join("natter.db")).unwrap();
    db.busy_timeout(WAIT).unwrap();
    for (age_days, target) in [(400, "ancient"), (31, "old"), (29, "recent")] {
        db.execute(
            "INSERT INTO audit (ts, actor, action, target, room, detail, addr) VALUES (?1, 'key-x', 'ban', ?2, '', '', '')",
            rusqlite::params![(now_ms() - age_days * DAY_MS) as i64, target],
        )
        .unwrap();
    }
    let targets = || -> Vec<String> {
        audit(&server, "").get("entries").unwrap().as_array().unwrap().iter().map(|e| e["target"].to_string()).collect()
    };
    wait_until(|| targets() == ["\"recent\""], "only the entry younger than 30 days is kept");
}

#[test]
fn audit_entries_past_their_retention_are_deleted_with_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let server = TestServer::start_with(configured(dir.path(), move |c| {
        c.audit_retention_days = Some(30);
        c.redis = Some(url);
    }));
    let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    for (id, age_days, target) in [(1, 400, "ancient"), (2, 31, "old"), (3, 29, "recent")] {
        let entry =
            json!({"id": id, "ts": now_ms() - age_days * DAY_MS, "actor": "key-x", "action": "ban", "target": target});
        redis::cmd("ZADD").arg("natter:audit").arg(id).arg(entry.to_string()).exec(&mut con).unwrap();
    }
    redis::cmd("SET").arg("natter:audit:id").arg(3).exec(&mut con).unwrap();
    // Trimmed as new entries are written.
    let (status, _) = call(server.admin, "POST", "/api/v1/users/nobody/disconnect", ADMIN_KEY, None);
    assert_eq!(status, 200);
    let targets = || -> Vec<String> {
        audit(&server, "").get("entries").unwrap().as_array().unwrap().iter().map(|e| e["target"].to_string()).collect()
    };
    wait_until(|| targets() == ["\"nobody\"", "\"recent\""], "only entries younger than 30 days are kept");
}

/// What the admin console reads and does: the overview, rooms (DMs only counted,
/// private ones flagged), users with their transport, and kick and mode by an admin
/// key (audited); all refused to keys without `admin`.
#[test]
fn the_console_endpoints_answer_and_act() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(configured(dir.path(), |_| {}));
    let mut ann = server.connect("ann");
    let mut bob = server.connect("bob");
    ann.join("support", None);
    bob.join("support", None);
    ann.post("support", "hello", "s1");
    ann.send(json!({"type": "dm", "user": bob.uid()}));
    ann.next_of("dm");
    ann.send(json!({"type": "join", "private": true, "title": "Team"}));
    let private = ann.next_of("joined")["room"].as_str().unwrap().to_owned();
    let get = |path: &str| {
        let (status, body) = call(server.admin, "GET", path, ADMIN_KEY, None);
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let o = get("/api/v1/admin/overview");
    assert_eq!((o["connections"].as_u64(), o["store"]["kind"].as_str()), (Some(2), Some("sqlite")));
    assert!(o["messages_total"].as_u64() >= Some(1) && o["process"]["threads"].as_u64() > Some(1), "{o}");
    assert!(o["store"]["bytes"].as_u64() > Some(0) && o["metrics"]["natter_connections"] == 2.0, "{o}");

    let rooms = get("/api/v1/admin/rooms");
    let names: Vec<&str> = rooms["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap()).collect();
    assert!(names.contains(&"support") && names.contains(&private.as_str()), "{rooms}");
    assert!(!names.iter().any(|n| n.starts_with("dm.")), "DM rooms are never listed: {rooms}");
    let dms = rooms["dm_rooms"].as_u64().unwrap();
    assert!(dms <= 1, "the DM room is counted when held: {rooms}");
    let support = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "support").unwrap();
    assert_eq!((support["users"].as_u64(), support["private"].as_bool()), (Some(2), Some(false)));
    assert!(support["last_activity"].as_u64().is_some());
    let private_row = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == private.as_str()).unwrap();
    assert_eq!(private_row["private"], true);
    assert_eq!(get("/api/v1/admin/rooms?q=supp")["rooms"].as_array().unwrap().len(), 1);
    let (status, _) = call(server.admin, "GET", &format!("/api/v1/rooms/{private}/messages"), ADMIN_KEY, None);
    assert_eq!(status, 404, "a private room's messages are never shown, not even to an admin key");

    let users = get("/api/v1/admin/users");
    let row = users["users"].as_array().unwrap().iter().find(|u| u["id"] == ann.uid().as_str()).unwrap().clone();
    assert_eq!((row["transport"].as_str(), row["addr"].as_str()), (Some("websocket"), Some("127.0.0.1")));
    assert!(row["instance"].as_str().unwrap().ends_with(&format!(":{}", server.ws.port())), "{row}");
    assert!(!row["rooms"].to_string().contains("dm."), "{row}");

    let kick = json!({"user": bob.uid(), "minutes": 5});
    assert_eq!(call(server.admin, "POST", "/api/v1/rooms/support/kick", PLAIN_KEY, Some(kick.clone())).0, 403);
    let (status, body) = call(server.admin, "POST", "/api/v1/rooms/support/kick", ADMIN_KEY, Some(kick));
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob.next_of("system")["event"], "kick");
    let (status, _) =
        call(server.admin, "POST", "/api/v1/rooms/support/mode", ADMIN_KEY, Some(json!({"read_only": true})));
    assert_eq!(status, 200);
    wait_until(|| ann.next_of("system")["read_only"] == true, "ann hears of the read-only room");
    ann.send(json!({"type": "msg", "room": "support", "text": "no", "id": "n1"}));
    assert_eq!(ann.next_of("error")["code"], "forbidden", "the room is read-only now");
    let nobody = json!({"user": "u-nobody", "minutes": 5});
    assert_eq!(call(server.admin, "POST", "/api/v1/rooms/support/kick", ADMIN_KEY, Some(nobody)).0, 404);
    wait_until(|| actions(&audit(&server, "room=support")) == ["mode", "kick"], "both in the log");
    for path in ["/api/v1/admin/overview", "/api/v1/admin/rooms", "/api/v1/admin/users"] {
        assert_eq!(call(server.admin, "GET", path, PLAIN_KEY, None).0, 403, "{path}");
    }
}

/// With Redis the console's user list on one instance shows every instance's users,
/// each with its instance and transport, and acts on them from there: a kick from a
/// room only the other instance holds, and a disconnect.
#[test]
fn with_redis_the_console_lists_and_acts_on_users_of_every_instance() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| {
        let url = redis.url();
        TestServer::start_with(configured(dir, move |c| {
            c.redis = Some(url);
            c.redis_presence_ttl = Duration::from_millis(1500);
        }))
    };
    let (a, b) = (start(dir.path()), start(dir.path()));
    let mut ann = b.connect("ann");
    ann.join("far", None);
    let mut carl = a.connect("carl");
    carl.join("near", None);
    let get = |server: &TestServer| {
        let (status, body) = call(server.admin, "GET", "/api/v1/admin/users", ADMIN_KEY, None);
        assert_eq!(status, 200, "{body}");
        body
    };
    let row_of = |users: &Value, uid: &str| users["users"].as_array().unwrap().iter().find(|u| u["id"] == uid).cloned();
    wait_until(|| row_of(&get(&a), &ann.uid()).is_some(), "ann (on b) in a's list");
    let users = get(&a);
    let row = row_of(&users, &ann.uid()).unwrap();
    assert_eq!((row["transport"].as_str(), row["addr"].as_str()), (Some("websocket"), Some("127.0.0.1")));
    assert!(row["instance"].as_str().unwrap().ends_with(&format!(":{}", b.ws.port())), "b's: {row}");
    assert_eq!(row["rooms"], json!(["far"]));
    let carl_row = row_of(&users, &carl.uid()).expect("a's own user");
    assert!(carl_row["instance"].as_str().unwrap().ends_with(&format!(":{}", a.ws.port())), "{carl_row}");
    assert_eq!(users["connections"], 1, "connections counts this instance's");

    // Kick ann (on b) from a room only b holds, through a's API.
    let kick = json!({"user": ann.uid(), "minutes": 5});
    let (status, body) = call(a.admin, "POST", "/api/v1/rooms/far/kick", ADMIN_KEY, Some(kick));
    assert_eq!(status, 200, "{body}");
    let event = ann.next_of("system");
    assert_eq!((event["event"].as_str(), event["user"]["id"].as_str()), (Some("kick"), Some(ann.uid().as_str())));
    ann.send(json!({"type": "join", "room": "far"}));
    assert_eq!(ann.next_of("error")["code"], "forbidden", "kicked for 5 minutes");
    // Disconnect ann from a: closed on b.
    let (status, _) = call(a.admin, "POST", &format!("/api/v1/users/{}/disconnect", ann.uid()), ADMIN_KEY, None);
    assert_eq!(status, 200);
    assert_eq!(ann.expect_close().0, 1008);
    wait_until(|| row_of(&get(&a), &ann.uid()).is_none(), "ann gone from a's list once disconnected");
}
