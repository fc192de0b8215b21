//! Credentials out of URLs: a WebSocket opened at `/ws?auth=hello` signs in with its
//! first frame (good, bad, missing within the deadline, oversized, not a hello), and
//! the fallback's stream is opened with a single-use ticket bought by `POST /sse`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Stream, TestServer, WAIT};
use natter::auth;
use natter::config::AuthMode;
use serde_json::{json, Value};
use tungstenite::Message;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";
const DEADLINE: Duration = Duration::from_millis(700);

/// Which auth mode a test server runs in.
#[derive(Clone, Copy)]
enum Mode {
    Open,
    Token,
}

fn server(mode: Mode) -> TestServer {
    TestServer::start_with(|c| {
        c.auth = match mode {
            Mode::Open => AuthMode::Open,
            Mode::Token => AuthMode::Token { secret: SECRET.to_vec() },
        };
        c.jwt_leeway_s = 0;
        c.handshake_timeout = DEADLINE;
    })
}

/// An upgraded `/ws?auth=hello` socket that has not said anything yet.
fn upgraded(server: &TestServer) -> tungstenite::WebSocket<Stream> {
    let stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("ws://{}/ws?auth=hello", server.ws);
    tungstenite::client(url, Stream::Plain(stream)).expect("upgraded without credentials").0
}

/// Signs in with `hello` and returns the welcomed client.
fn hello(server: &TestServer, hello: Value) -> Client {
    let mut ws = upgraded(server);
    ws.send(Message::text(hello.to_string())).unwrap();
    let mut c = Client { ws, welcome: Value::Null };
    c.welcome = c.recv();
    assert_eq!(c.welcome["type"], "welcome", "{}", c.welcome);
    c
}

/// What a refused hello gets: the error frame's code and the close frame.
fn refused(mut ws: tungstenite::WebSocket<Stream>) -> (String, u16, String) {
    let error = match ws.read().expect("an error frame") {
        Message::Text(t) => serde_json::from_str::<Value>(t.as_str()).unwrap(),
        other => panic!("expected the error frame, got {other:?}"),
    };
    assert_eq!(error["type"], "error", "{error}");
    let mut c = Client { ws, welcome: Value::Null };
    let (code, reason) = c.expect_close();
    (error["code"].as_str().unwrap().to_owned(), code, reason)
}

fn token(sub: &str, ttl_s: u64) -> String {
    auth::mint(SECRET, sub, &auth::Grants { name: Some(sub.to_uppercase()), ..Default::default() }, ttl_s)
}

#[test]
fn a_hello_with_a_good_token_signs_in_and_chats() {
    let server = server(Mode::Token);
    let mut ann = hello(&server, json!({"type": "hello", "token": token("ann", 600)}));
    assert_eq!(ann.welcome["user"], json!({"id": "ann", "name": "ANN"}));
    let mut bob = Client::connect(&format!("ws://{}/ws?token={}", server.ws, token("bob", 600)));
    ann.join("lobby", None);
    bob.join("lobby", None);
    ann.post("lobby", "signed in by hello", "h1");
    assert_eq!(bob.expect("msg")["text"], "signed in by hello");
}

#[test]
fn a_hello_in_open_mode_is_the_same_user_as_the_same_key_in_the_url() {
    let server = server(Mode::Open);
    let key = "0123456789abcdef-hello-user";
    let by_hello = hello(&server, json!({"type": "hello", "name": "hal", "key": key}));
    let by_url = Client::connect(&format!("ws://{}/ws?name=hal&key={key}", server.ws));
    assert_eq!(by_hello.welcome["user"], by_url.welcome["user"]);
    assert_eq!(by_hello.welcome["user"]["name"], "hal");
}

#[test]
fn a_bad_or_expired_token_is_refused_with_an_error_and_close_1008() {
    let server = server(Mode::Token);
    for bad in [json!({"type": "hello", "token": "not.a.jwt"}), json!({"type": "hello"})] {
        let mut ws = upgraded(&server);
        ws.send(Message::text(bad.to_string())).unwrap();
        let (code, close, reason) = refused(ws);
        assert_eq!((code.as_str(), close), ("unauthorized", 1008), "{bad}");
        assert!(reason.starts_with("unauthorized: "), "{reason}");
    }
    let expired = auth::mint(SECRET, "old", &auth::Grants::default(), 0);
    std::thread::sleep(Duration::from_millis(1100)); // `exp` counts in whole seconds
    let mut ws = upgraded(&server);
    ws.send(Message::text(json!({"type": "hello", "token": expired}).to_string())).unwrap();
    assert_eq!(refused(ws).2, "unauthorized: bad or expired token");
    server.wait_metric("natter_handshakes_refused_total", 3);
}

#[test]
fn a_first_frame_that_is_not_a_hello_is_refused() {
    let server = server(Mode::Open);
    let mut ws = upgraded(&server);
    ws.send(Message::text(json!({"type": "join", "room": "lobby"}).to_string())).unwrap();
    let (code, close, reason) = refused(ws);
    assert_eq!((code.as_str(), close), ("unauthorized", 1008));
    assert_eq!(reason, "hello expected: the first frame was `join`, not `hello`");
}

#[test]
fn no_hello_within_the_deadline_closes_with_1008() {
    let server = server(Mode::Token);
    let ws = upgraded(&server);
    let started = Instant::now();
    let (code, close, reason) = refused(ws);
    let waited = started.elapsed();
    assert_eq!((code.as_str(), close), ("unauthorized", 1008));
    assert!(reason.starts_with("hello expected: no sign-in frame within 700 ms"), "{reason}");
    assert!(waited >= DEADLINE - Duration::from_millis(50) && waited < WAIT, "{waited:?}");
}

#[test]
fn an_oversized_hello_is_refused_with_1009() {
    let server = server(Mode::Token);
    let mut ws = upgraded(&server);
    let huge = json!({"type": "hello", "token": "x".repeat(natter::transport::hello::MAX_HELLO_BYTES)});
    ws.send(Message::text(huge.to_string())).unwrap();
    let (code, close, reason) = refused(ws);
    assert_eq!((code.as_str(), close), ("too_long", 1009), "{reason}");
}

/// One HTTP/1.1 request on a new connection; the status and body of the answer.
fn http(server: &TestServer, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(server.ws).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    // A stream never ends by itself: read its first event only.
    let mut body = vec![0u8; 4096];
    let n = s.read(&mut body).unwrap_or(0);
    (status, String::from_utf8_lossy(&body[..n]).to_string())
}

#[test]
fn an_sse_ticket_is_bought_by_post_and_opens_one_stream_only() {
    let server = server(Mode::Token);
    let (status, answer) = http(&server, "POST", "/sse", &json!({"token": token("tia", 600)}).to_string());
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let ticket = answer["ticket"].as_str().unwrap().to_owned();
    assert_eq!(answer["expires_in_ms"], 30000);
    let (status, stream) = http(&server, "GET", &format!("/sse?ticket={ticket}"), "");
    assert_eq!(status, 200);
    assert!(stream.contains("\"welcome\"") && stream.contains("\"id\":\"tia\""), "{stream}");
    let (again, body) = http(&server, "GET", &format!("/sse?ticket={ticket}"), "");
    assert_eq!(again, 401, "single use: {body}");
    assert!(body.contains("POST /sse"), "{body}");
    let (bad, body) = http(&server, "POST", "/sse", &json!({"token": "not.a.jwt"}).to_string());
    assert_eq!(bad, 401, "{body}");
    let (garbage, _) = http(&server, "POST", "/sse", "token=abc");
    assert_eq!(garbage, 400);
}
