//! The process log as a log shipper and an operator see it: `--log-format json` writes
//! one JSON object per line, and neither format ever holds a credential (tokens,
//! open-mode keys, SSE tickets and sessions, API keys, webhook secrets), whatever a
//! session in both auth modes made natter log.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, WAIT};
use natter::auth;
use serde_json::{json, Value};

const OPEN_KEY: &str = "ann-s-open-mode-key-9f8e7d6c";
const SSE_KEY: &str = "bob-s-open-mode-key-5a4b3c2d";
const API_KEY: &str = "backend-api-key-0123456789abcdef";
const WRONG_API_KEY: &str = "wrong-api-key-fedcba9876543210";
const WEBHOOK_SECRET: &str = "webhook-signing-secret-7777777777";
const JWT_SECRET: &str = "log-test-jwt-secret-log-test-jwt-secret!";

/// natter with stderr in a file, killed on drop.
struct Server {
    child: Child,
    ws: SocketAddr,
    admin: SocketAddr,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let mut child = Command::new(common::natter_bin())
            .args(["serve", "--bind", "127.0.0.1", "--http-port", "0", "--ws-port", "0", "--log-level", "debug"])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn natter");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = |key: &str| -> SocketAddr {
            let v = line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or_else(|| panic!("{line:?}"));
            v.split("://").last().unwrap().trim_end_matches("/ws").parse().unwrap()
        };
        Server { ws: addr("ws="), admin: addr("admin="), child }
    }

    /// SIGTERM, wait for the exit, and return the log lines.
    fn stop(mut self, dir: &Path) -> Vec<String> {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "natter did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
        text.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// An open-mode session that makes natter log: a WebSocket client with a key, a
/// refused handshake carrying a key, an SSE ticket bought, spent and replayed, a
/// session posting, API calls with a good and a wrong key, and a webhook that cannot
/// be delivered. Returns the credentials it used.
fn open_mode_session(format: &str) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("api.keys");
    std::fs::write(&keys, format!("{API_KEY}\n")).unwrap();
    let hook_secret = dir.path().join("webhook.secret");
    std::fs::write(&hook_secret, WEBHOOK_SECRET).unwrap();
    // A receiver that refuses: every delivery fails and is logged.
    let dead = common::free_port();
    let hook = format!("http://127.0.0.1:{dead}/hook");
    let server = Server::start(
        dir.path(),
        &[
            "--log-format",
            format,
            "--api-key-file",
            keys.to_str().unwrap(),
            "--webhook",
            &hook,
            "--webhook-secret-file",
            hook_secret.to_str().unwrap(),
        ],
    );
    let mut secrets: Vec<String> = [OPEN_KEY, SSE_KEY, API_KEY, WRONG_API_KEY, WEBHOOK_SECRET].map(String::from).into();

    let mut ann = Client::connect(&format!("ws://{}/ws?name=ann&key={OPEN_KEY}", server.ws));
    ann.join("lobby", None);
    ann.post("lobby", "hello from ann", "a1");
    // A wrong path, with the key in its query: refused, and logged.
    let (status, _) = http(server.ws, "GET", &format!("/nope?name=ann&key={OPEN_KEY}"), "", "");
    assert_ne!(status, 101);

    let (status, body) = http(server.ws, "POST", "/sse", "", &json!({"name": "bob", "key": SSE_KEY}).to_string());
    assert_eq!(status, 200, "{body}");
    let ticket = serde_json::from_str::<Value>(&body).unwrap()["ticket"].as_str().unwrap().to_owned();
    secrets.push(ticket.clone());
    let mut stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /sse?ticket={ticket} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let session = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended before its welcome");
        if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data.trim()).unwrap();
            if v["type"] == "welcome" {
                break v["session"].as_str().unwrap().to_owned();
            }
        }
    };
    secrets.push(session.clone());
    let join = json!({"type": "join", "room": "lobby"}).to_string();
    assert_eq!(http(server.ws, "POST", &format!("/send?session={session}"), "", &join).0, 200);
    // The ticket again: spent, refused, logged.
    assert_eq!(http(server.ws, "GET", &format!("/sse?ticket={ticket}"), "", "").0, 401);

    let bearer = |k: &str| format!("Authorization: Bearer {k}\r\nContent-Type: application/json\r\n");
    let msg = json!({"text": "from the backend", "id": "b-1"}).to_string();
    assert_eq!(http(server.admin, "POST", "/api/v1/rooms/lobby/messages", &bearer(API_KEY), &msg).0, 201);
    assert_eq!(http(server.admin, "GET", "/api/v1/rooms", &bearer(WRONG_API_KEY), "").0, 401);
    assert_eq!(http(server.admin, "GET", &format!("/api/v1/rooms?key={API_KEY}"), "", "").0, 401);

    // Wait until the webhook's failure is in the log (it retries in the background).
    let log = dir.path().join("stderr.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log).unwrap().contains("webhook") {
        assert!(Instant::now() < deadline, "no webhook line in the log");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(ann);
    drop(reader);
    (server.stop(dir.path()), secrets)
}

/// A token-mode session: a good token in the query, one in a hello frame, a forged
/// and an expired one refused.
fn token_mode_session(format: &str) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("jwt.secret");
    std::fs::write(&secret_file, JWT_SECRET).unwrap();
    let server = Server::start(
        dir.path(),
        &["--log-format", format, "--auth", "token", "--jwt-secret-file", secret_file.to_str().unwrap()],
    );
    let good = auth::mint(JWT_SECRET.as_bytes(), "user-42", &auth::Grants::default(), 600);
    let forged = auth::mint(b"some-other-secret-some-other-secret!", "user-42", &auth::Grants::default(), 600);
    let expired = {
        let claims = auth::Claims {
            sub: "user-43".into(),
            exp: auth::now_s() - 3600,
            name: None,
            nbf: None,
            rooms: None,
            role: None,
        };
        let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let secrets = vec![JWT_SECRET.to_owned(), good.clone(), forged.clone(), expired.clone()];

    let mut c = Client::connect(&format!("ws://{}/ws?token={good}", server.ws));
    c.join("lobby", None);
    c.post("lobby", "hi", "t1");
    for bad in [&forged, &expired, &"not.a.jwt".to_owned()] {
        let (status, _) = http(
            server.ws,
            "GET",
            &format!("/ws?token={bad}"),
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "",
        );
        assert_eq!(status, 401);
    }
    let (status, _) = http(server.ws, "POST", "/sse", "", &json!({"token": forged}).to_string());
    assert_eq!(status, 401);
    drop(c);
    (server.stop(dir.path()), secrets)
}

fn assert_no_secrets(lines: &[String], secrets: &[String]) {
    for line in lines {
        for s in secrets {
            assert!(!line.contains(s.as_str()), "a credential ({s}) in the log: {line}");
        }
    }
}

fn assert_json_lines(lines: &[String]) {
    assert!(lines.len() >= 5, "the session logged: {lines:#?}");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {line}"));
        for field in ["ts", "level", "target", "message"] {
            assert!(obj.get(field).is_some_and(Value::is_string), "no string `{field}`: {line}");
        }
        assert!(["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&v["level"].as_str().unwrap()), "{line}");
        // RFC 3339, UTC.
        let ts = v["ts"].as_str().unwrap();
        assert!(ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "ts {ts}");
    }
}

#[test]
fn json_logs_are_one_object_a_line_without_credentials_in_open_mode() {
    let (lines, secrets) = open_mode_session("json");
    assert_json_lines(&lines);
    assert_no_secrets(&lines, &secrets);
    let messages: Vec<&str> = lines.iter().map(|l| l.as_str()).collect();
    assert!(messages.iter().any(|l| l.contains("refused")), "refusals are logged: {messages:#?}");
    assert!(messages.iter().any(|l| l.contains("api:")), "API calls are logged: {messages:#?}");
    assert!(messages.iter().any(|l| l.contains("\"target\":\"natter")), "targets are module paths");
}

#[test]
fn json_logs_are_one_object_a_line_without_credentials_in_token_mode() {
    let (lines, secrets) = token_mode_session("json");
    assert_json_lines(&lines);
    assert_no_secrets(&lines, &secrets);
    assert!(lines.iter().any(|l| l.contains("refused")), "refusals are logged: {lines:#?}");
}

#[test]
fn text_logs_stay_the_default_and_hold_no_credentials_either() {
    let (lines, secrets) = open_mode_session("text");
    assert_no_secrets(&lines, &secrets);
    let (token_lines, token_secrets) = token_mode_session("text");
    assert_no_secrets(&token_lines, &token_secrets);
    for line in lines.iter().chain(&token_lines) {
        assert!(line.starts_with('['), "the human format: {line}");
        assert!(serde_json::from_str::<Value>(line).is_err(), "not JSON: {line}");
    }
}

#[test]
fn an_unknown_log_format_is_refused_with_the_choices() {
    let out = Command::new(common::natter_bin()).args(["serve", "--log-format", "xml"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}
