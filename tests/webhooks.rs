//! Webhooks against a real HTTP receiver: every event arrives signed, in seq order per
//! room, after the receiver's failures; and events a receiver never takes are dropped
//! after the retry window, counted and logged.

mod common;
mod common_redis;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{http_get, wait_until, TestServer};
use crossbeam_channel::{unbounded, Receiver};
use natter::webhooks::{signature, WebhookConfig};
use serde_json::Value;

const SECRET: &[u8] = b"test-webhook-secret";

/// A receiver on port 0 that answers 500 to its first `fail_first` POSTs, then 204,
/// and passes on each accepted body with whether its signature was valid.
fn receiver(fail_first: usize) -> (String, Receiver<(bool, Value)>, Arc<AtomicUsize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("receiver");
    let url = format!("http://{}/hook", server.server_addr().to_ip().unwrap());
    let (tx, rx) = unbounded();
    let posts = Arc::new(AtomicUsize::new(0));
    let seen = posts.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            if n < fail_first {
                let _ = req.respond(tiny_http::Response::empty(500));
                continue;
            }
            let headers: Vec<(String, String)> =
                req.headers().iter().map(|h| (h.field.to_string().to_ascii_lowercase(), h.value.to_string())).collect();
            let header = |name: &str| headers.iter().find(|(f, _)| f == name).map(|(_, v)| v.clone());
            let (ts, sig) = (header("x-natter-timestamp"), header("x-natter-signature"));
            let mut body = Vec::new();
            req.as_reader().read_to_end(&mut body).unwrap();
            let valid = match (ts.and_then(|t| t.parse::<u64>().ok()), sig) {
                (Some(ts), Some(sig)) => signature(SECRET, ts, &body) == sig,
                _ => false,
            };
            let _ = req.respond(tiny_http::Response::empty(204));
            let _ = tx.send((valid, serde_json::from_slice(&body).expect("a JSON body")));
        }
    });
    (url, rx, posts)
}

fn hooks(url: &str, retry: Duration) -> WebhookConfig {
    WebhookConfig { urls: vec![url.to_owned()], secret: SECRET.to_vec(), retry, queue: 10_000 }
}

#[test]
fn every_event_arrives_signed_and_in_order_per_room_after_failures() {
    let (url, bodies, posts) = receiver(3);
    let server = TestServer::start_with(|c| c.webhooks = hooks(&url, Duration::from_secs(60)));
    let mut a = server.connect("ann");
    let mut b = server.connect("bob");
    a.join("alpha", None);
    b.join("beta", None);
    for i in 0..20 {
        a.post("alpha", &format!("a{i}"), &format!("a-{i}"));
        b.post("beta", &format!("b{i}"), &format!("b-{i}"));
    }

    let mut events: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.iter().filter(|e| e["type"] == "message").count() < 40 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (valid, body) = bodies.recv_timeout(left).expect("all 40 message events within 20 s");
        assert!(valid, "every delivery carries a valid signature");
        events.extend(body["events"].as_array().expect("events array").iter().cloned());
    }
    assert!(posts.load(Ordering::SeqCst) > 3, "the first three deliveries were refused and retried");

    let mut seqs: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for e in &events {
        assert!(ids.insert(e["id"].as_str().expect("an id").to_owned()), "each event is delivered once: {e}");
        assert!(e["ts"].as_u64().is_some());
        if e["type"] == "message" {
            seqs.entry(e["room"].as_str().unwrap()).or_default().push(e["seq"].as_u64().unwrap());
        }
    }
    let in_order: Vec<u64> = (1..=20).collect();
    assert_eq!(seqs["alpha"], in_order);
    assert_eq!(seqs["beta"], in_order);
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] != "message")
        .map(|e| (e["type"].as_str().unwrap(), e["room"].as_str().unwrap()))
        .collect();
    for expected in [("join", "alpha"), ("join", "beta"), ("room.created", "alpha"), ("room.created", "beta")] {
        assert!(kinds.contains(&expected), "{expected:?} in {kinds:?}");
    }
    let first_alpha_msg = events.iter().position(|e| e["type"] == "message" && e["room"] == "alpha").unwrap();
    let created = events.iter().position(|e| e["type"] == "room.created" && e["room"] == "alpha").unwrap();
    assert!(created < first_alpha_msg, "room.created precedes the room's first message");

    // A leave is told too.
    let bob = b.uid();
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = bodies.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("a leave");
        if body["events"].as_array().unwrap().iter().any(|e| e["type"] == "leave" && e["uid"] == bob.as_str()) {
            break;
        }
    }
    let metrics = server.metrics();
    assert!(metrics.contains("natter_webhook_events_dropped_total 0"), "{metrics}");
    assert!(!metrics.contains("natter_webhook_posts_failed_total 0\n"), "the failures were counted");
}

#[test]
fn a_slow_receiver_never_slows_the_chat() {
    // A receiver that takes 3 s per POST: posts and their acks must not wait for it.
    let server_http = tiny_http::Server::http("127.0.0.1:0").expect("receiver");
    let url = format!("http://{}/hook", server_http.server_addr().to_ip().unwrap());
    std::thread::spawn(move || {
        for req in server_http.incoming_requests() {
            std::thread::sleep(Duration::from_secs(3));
            let _ = req.respond(tiny_http::Response::empty(204));
        }
    });
    let server = TestServer::start_with(|c| c.webhooks = hooks(&url, Duration::from_secs(60)));
    let mut a = server.connect("ann");
    a.join("r", None);
    let started = Instant::now();
    for i in 0..20 {
        let ack = a.post("r", "hello", &format!("m{i}"));
        assert_eq!(ack["seq"], i + 1);
    }
    // Twenty acks behind a 3 s receiver would take a minute if they waited on it.
    assert!(started.elapsed() < Duration::from_secs(3), "acks did not wait for the receiver");
}

/// A child natter that is killed when the test ends, failing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn events_past_the_retry_window_are_dropped_counted_and_logged() {
    // Nothing listens on this port: every POST fails at once.
    let dead = format!("http://127.0.0.1:{}/hook", common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let mut child = KillOnDrop(
        Command::new(common::natter_bin())
            .args(["serve", "--bind", "127.0.0.1", "--http-port", "0", "--ws-port", "0", "--log-level", "info"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--webhook", &dead, "--webhook-retry-minutes", "0.02"])
            .arg("--webhook-secret-file")
            .arg(&secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn natter"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = |key: &str| -> std::net::SocketAddr {
        let v = line.split_whitespace().find_map(|w| w.strip_prefix(key)).expect("address");
        v.trim_start_matches("http://").trim_start_matches("ws://").trim_end_matches("/ws").parse().unwrap()
    };
    let (admin, ws) = (addr("admin="), addr("ws="));
    let (log_tx, log) = unbounded();
    let stderr = child.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = log_tx.send(l);
        }
    });

    let mut c = common::Client::connect(&format!("ws://{ws}/ws?name=ann"));
    c.join("r", None);
    c.post("r", "into the void", "v1");
    wait_until(
        || {
            http_get(admin, "/metrics")
                .1
                .lines()
                .any(|l| l.starts_with("natter_webhook_events_dropped_total ") && !l.ends_with(" 0"))
        },
        "the undeliverable events to be dropped",
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let logged = std::iter::from_fn(|| log.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok())
        .any(|l| l.contains("dropped") && l.contains("undelivered"));
    assert!(logged, "the drop is logged");
}

#[test]
fn a_webhook_url_that_is_not_http_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let out = Command::new(common::natter_bin())
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--http-port",
            "0",
            "--ws-port",
            "0",
            "--webhook",
            "ftp://example.com/x",
        ])
        .arg("--webhook-secret-file")
        .arg(&secret)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run natter");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only http:// and https://"), "{err}");
}

/// A natter on `redis` posting its events to the receiver at `url`; `more` sets the rest.
fn hooked_on_redis(redis: &common_redis::RedisServer, url: &str, more: fn(&mut natter::config::Config)) -> TestServer {
    let (redis_url, hook) = (redis.url(), url.to_owned());
    TestServer::start_with(move |c| {
        c.redis = Some(redis_url);
        c.webhooks = hooks(&hook, Duration::from_secs(60));
        more(c);
    })
}

#[test]
fn with_redis_each_event_is_sent_by_one_instance() {
    let redis = common_redis::RedisServer::start();
    let (url, bodies, _) = receiver(0);
    let start = || hooked_on_redis(&redis, &url, |_| {});
    let (a, b) = (start(), start());
    let mut on_a = a.connect("ann");
    let mut on_b = b.connect("bob");
    on_a.join("both", None);
    on_b.join("both", None);
    for i in 0..10 {
        let poster = if i % 2 == 0 { &mut on_a } else { &mut on_b };
        poster.send(serde_json::json!({"type": "msg", "room": "both", "text": "hello", "id": format!("m{i}")}));
    }
    // Both instances deliver every message to their clients, but only the one that
    // stored it tells the receiver: ten message events, each seq once.
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seqs.len() < 10 {
        let (valid, body) = bodies.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("events");
        assert!(valid);
        for e in body["events"].as_array().unwrap().iter().filter(|e| e["type"] == "message") {
            seqs.push(e["seq"].as_u64().unwrap());
        }
    }
    // Anything sent twice would arrive by now too.
    while let Ok((_, body)) = bodies.recv_timeout(Duration::from_millis(500)) {
        seqs.extend(
            body["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "message")
                .map(|e| e["seq"].as_u64().unwrap()),
        );
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

#[test]
fn a_redirect_is_a_failure_retried_and_never_followed() {
    // The redirect target counts every request it gets: it must get none.
    let target = tiny_http::Server::http("127.0.0.1:0").expect("target");
    let target_url = format!("http://{}/elsewhere", target.server_addr().to_ip().unwrap());
    let target_hits = Arc::new(AtomicUsize::new(0));
    let hits = target_hits.clone();
    std::thread::spawn(move || {
        for req in target.incoming_requests() {
            hits.fetch_add(1, Ordering::SeqCst);
            let _ = req.respond(tiny_http::Response::empty(204));
        }
    });
    // The receiver answers every POST with a 302 to the target.
    let receiver = tiny_http::Server::http("127.0.0.1:0").expect("receiver");
    let url = format!("http://{}/hook", receiver.server_addr().to_ip().unwrap());
    let (posts_tx, posts) = unbounded();
    std::thread::spawn(move || {
        for mut req in receiver.incoming_requests() {
            let mut body = Vec::new();
            req.as_reader().read_to_end(&mut body).unwrap();
            let location = tiny_http::Header::from_bytes("Location", target_url.as_bytes()).unwrap();
            let _ = req.respond(tiny_http::Response::empty(302).with_header(location));
            let _ = posts_tx.send(serde_json::from_slice::<Value>(&body).expect("a JSON body"));
        }
    });
    let server = TestServer::start_with(|c| c.webhooks = hooks(&url, Duration::from_secs(60)));
    let mut a = server.connect("ann");
    a.join("r", None);
    a.post("r", "hello", "m1");
    // The message event is posted again: the 302 was a failure, retried.
    let mut message_posts = 0;
    while message_posts < 2 {
        let body = posts.recv_timeout(Duration::from_secs(10)).expect("the message event is posted, then again");
        message_posts += body["events"].as_array().unwrap().iter().filter(|e| e["type"] == "message").count();
    }
    let metrics = server.metrics();
    assert!(metrics.contains("natter_webhook_events_delivered_total 0\n"), "nothing counted delivered: {metrics}");
    assert!(!metrics.contains("natter_webhook_posts_failed_total 0\n"), "the 302s counted as failures: {metrics}");
    assert!(!metrics.contains("natter_webhook_queue 0\n"), "the events are still queued: {metrics}");
    assert_eq!(target_hits.load(Ordering::SeqCst), 0, "the redirect target never got a request");
}

/// A key file with one key that may delete messages, for the API's DELETE.
const MOD_KEY: &str = "moderator-key-0123456789";

fn with_moderating_key(c: &mut natter::config::Config) {
    let path = c.data_dir.join("api.keys");
    std::fs::write(&path, format!("{MOD_KEY} moderate\n")).unwrap();
    c.api_key_file = Some(path);
}

fn api_delete(admin: std::net::SocketAddr, room: &str, seq: u64) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let req = format!(
        "DELETE /api/v1/rooms/{room}/messages/{seq} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {MOD_KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Edits and deletions reach the receiver after the messages they change, in one
/// order: a client's edit and delete, and the server API's delete. Each event once.
fn changes_follow_their_messages(server: &TestServer, bodies: &Receiver<(bool, Value)>) {
    let mut a = server.connect("ann");
    a.join("log", None);
    a.post("log", "tpyo", "m1");
    a.post("log", "secret plans", "m2");
    a.send(serde_json::json!({"type": "edit", "room": "log", "seq": 1, "text": "typo", "id": "e1"}));
    a.next_of("ack");
    a.send(serde_json::json!({"type": "delete", "room": "log", "seq": 1, "id": "d1"}));
    a.next_of("ack");
    assert_eq!(api_delete(server.admin, "log", 2), 200);

    let wanted = 5; // two messages, an edit, two deletions
    let mut events: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let counted =
        |events: &Vec<Value>| events.iter().filter(|e| e["type"] != "join" && e["type"] != "room.created").count();
    while counted(&events) < wanted {
        let (valid, body) = bodies.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("events");
        assert!(valid, "changes are signed like messages");
        events.extend(body["events"].as_array().unwrap().iter().cloned());
    }
    // Anything sent twice would arrive by now too.
    while let Ok((_, body)) = bodies.recv_timeout(Duration::from_millis(500)) {
        events.extend(body["events"].as_array().unwrap().iter().cloned());
    }
    // (type, seq, of, text, uid) of each message, edit and delete, as received.
    let seen: Vec<Value> = events
        .iter()
        .filter(|e| e["type"] != "join" && e["type"] != "room.created")
        .map(|e| serde_json::json!([e["type"], e["seq"], e["of"], e["text"], e["uid"]]))
        .collect();
    let ann = a.uid();
    let expected = [
        serde_json::json!(["message", 1, null, "tpyo", ann]),
        serde_json::json!(["message", 2, null, "secret plans", ann]),
        serde_json::json!(["edit", 3, 1, "typo", ann]),
        serde_json::json!(["delete", 4, 1, null, ann]),
        serde_json::json!(["delete", 5, 2, null, "system"]),
    ];
    assert_eq!(seen, expected);
}

#[test]
fn edits_and_deletions_reach_receivers_in_order_with_the_messages() {
    let (url, bodies, _) = receiver(0);
    let server = TestServer::start_with(|c| {
        c.webhooks = hooks(&url, Duration::from_secs(60));
        with_moderating_key(c);
    });
    changes_follow_their_messages(&server, &bodies);
}

#[test]
fn with_redis_edits_and_deletions_reach_receivers_once_in_order() {
    let redis = common_redis::RedisServer::start();
    let (url, bodies, _) = receiver(0);
    let start = || hooked_on_redis(&redis, &url, with_moderating_key);
    // The other instance delivers every event to its own member, and must tell the
    // receiver none of them.
    let (a, b) = (start(), start());
    let mut watcher = b.connect("bob");
    watcher.join("log", None);
    changes_follow_their_messages(&a, &bodies);
    watcher.next_of("delete");
}

/// A user's erasure (`DELETE /api/v1/users/{id}?messages=remove`): receivers get a
/// `delete` event for each of their messages, then `user.erased`.
#[test]
fn an_erasure_tells_receivers_each_deletion_then_the_erasure() {
    const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
    let (url, bodies, _) = receiver(0);
    let server = TestServer::start_with(|c| {
        c.webhooks = hooks(&url, Duration::from_secs(60));
        let path = c.data_dir.join("api.keys");
        std::fs::write(&path, format!("{ADMIN_KEY} admin\n")).unwrap();
        c.api_key_file = Some(path);
    });
    let mut zed = server.connect("zed");
    zed.join("log", None);
    zed.post("log", "first words", "m1");
    zed.post("log", "second words", "m2");
    let uid = zed.uid();

    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server.admin).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let req = format!(
        "DELETE /api/v1/users/{uid}?messages=remove HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    let mut events: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !events.iter().any(|e| e["type"] == "user.erased") {
        let (valid, body) = bodies.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("events");
        assert!(valid);
        events.extend(body["events"].as_array().unwrap().iter().cloned());
    }
    let seen: Vec<Value> = events
        .iter()
        .filter(|e| e["type"] == "delete" || e["type"] == "user.erased")
        .map(|e| serde_json::json!([e["type"], e["of"], e["uid"], e["messages"]]))
        .collect();
    let expected = [
        serde_json::json!(["delete", 1, "system", null]),
        serde_json::json!(["delete", 2, "system", null]),
        serde_json::json!(["user.erased", null, uid, "remove"]),
    ];
    assert_eq!(seen, expected);
}
