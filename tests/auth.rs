//! Token mode and abuse limits: JWTs checked before the upgrade, expiry enforced on
//! open connections, names from the token, secrets never on the command line, rate
//! limits, and slow handshakes dropped.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use natter::auth;
use natter::config::AuthMode;
use serde_json::json;
use tungstenite::client::IntoClientRequest;

const SECRET: &[u8] = b"test-secret-test-secret-test-secret!";

fn token_server() -> TestServer {
    TestServer::start_with(|c| {
        c.auth = AuthMode::Token { secret: SECRET.to_vec() };
        c.jwt_leeway_s = 0;
    })
}

fn status_of(server: &TestServer, request: tungstenite::handshake::client::Request) -> u16 {
    match tungstenite::client(request, TcpStream::connect(server.ws).unwrap()) {
        Ok(_) => 101,
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => r.status().as_u16(),
        Err(e) => panic!("unexpected handshake failure: {e}"),
    }
}

#[test]
fn token_mode_admits_valid_tokens_only() {
    let server = token_server();
    let url = |q: &str| format!("ws://{}/ws{q}", server.ws).into_client_request().unwrap();
    assert_eq!(status_of(&server, url("")), 401, "no token");
    assert_eq!(status_of(&server, url("?token=not.a.jwt")), 401);
    let forged = auth::mint(b"some-other-secret-some-other-secret!", "alice", &auth::Grants::default(), 60);
    assert_eq!(status_of(&server, url(&format!("?token={forged}"))), 401, "wrong signature");
    let expired = {
        let claims = auth::Claims {
            sub: "alice".into(),
            exp: auth::now_s() - 10,
            name: None,
            nbf: None,
            rooms: None,
            role: None,
        };
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET))
            .unwrap()
    };
    assert_eq!(status_of(&server, url(&format!("?token={expired}"))), 401, "expired");
    server.wait_metric("natter_handshakes_refused_total", 4);

    // A valid token in the query: identity and name come from it, not from ?name=.
    let good = auth::mint(SECRET, "user-42", &auth::Grants { name: Some("Alice".into()), ..Default::default() }, 60);
    let mut a = Client::connect(&format!("ws://{}/ws?token={good}&name=mallory", server.ws));
    assert_eq!(a.welcome["user"], json!({"id": "user-42", "name": "Alice"}));
    // The same in an Authorization header (as non-browser clients send it).
    let mut req = url("");
    let bob = auth::mint(SECRET, "user-7", &auth::Grants::default(), 60);
    req.headers_mut().insert("Authorization", format!("Bearer {bob}").parse().unwrap());
    let (mut b, _) = tungstenite::client(req, TcpStream::connect(server.ws).unwrap()).unwrap();
    let welcome: serde_json::Value = serde_json::from_str(b.read().unwrap().to_text().unwrap()).unwrap();
    assert_eq!(welcome["user"], json!({"id": "user-7", "name": "user-7"}), "name defaults to sub");

    // Renaming is refused in token mode.
    a.send(json!({"type": "nick", "name": "Mallory"}));
    assert_eq!(a.expect("error")["code"], "forbidden");
}

#[test]
fn an_expired_token_closes_the_connection_with_1008() {
    let server = token_server();
    let short = auth::mint(SECRET, "brief", &auth::Grants::default(), 2);
    let mut c = Client::connect(&format!("ws://{}/ws?token={short}", server.ws));
    c.join("lobby", None);
    let started = Instant::now();
    let (code, reason) = c.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn token_mode_needs_a_long_enough_secret_and_never_takes_it_as_a_flag() {
    let run = |env: Option<&str>| {
        let mut cmd = Command::new(common::natter_bin());
        cmd.args(["serve", "--auth", "token", "--http-port", "0", "--ws-port", "0", "--data-dir"])
            .arg(tempfile::tempdir().unwrap().path())
            .env_remove("NATTER_JWT_SECRET");
        if let Some(v) = env {
            cmd.env("NATTER_JWT_SECRET", v);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no JWT secret"));
    let out = run(Some("too-short"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
    let out = Command::new(common::natter_bin()).args(["serve", "--jwt-secret", "x"]).output().unwrap();
    assert!(!out.status.success(), "there is no flag that takes the secret itself");
}

#[test]
fn natter_token_mints_tokens_the_server_accepts() {
    let out = Command::new(common::natter_bin())
        .args(["token", "--sub", "alice", "--name", "Alice", "--ttl", "1h"])
        .env("NATTER_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = auth::verify(token.trim(), SECRET, 0).unwrap();
    assert_eq!((claims.sub.as_str(), claims.name.as_deref()), ("alice", Some("Alice")));
    assert!(claims.exp > auth::now_s() + 3500);
}

#[test]
fn flooding_gets_rate_limited_then_closed() {
    let server = TestServer::start_with(|c| {
        c.rate_per_s = 5;
        c.rate_burst = 5;
        c.rate_strikes = 10;
    });
    let mut f = server.connect("flooder");
    f.join("lobby", None);
    let mut other = server.connect("other");
    other.join("lobby", None);
    for i in 0..100 {
        if f.ws
            .send(tungstenite::Message::text(
                json!({"type":"msg","room":"lobby","text":"spam","id":format!("s{i}")}).to_string(),
            ))
            .is_err()
        {
            break;
        }
    }
    let mut limited = 0;
    let (code, reason) = loop {
        match f.ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["code"], "rate_limited");
                    limited += 1;
                }
            }
            Ok(tungstenite::Message::Close(Some(cf))) => break (u16::from(cf.code), cf.reason.to_string()),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!((code, reason.as_str()), (1008, "rate limit"));
    assert!(limited >= 10, "warned before being cut ({limited})");
    // The other client is unaffected and saw only what was accepted.
    other.send(json!({"type": "msg", "room": "lobby", "text": "calm", "id": "c1"}));
    let mut seen = 0;
    loop {
        let m = other.recv();
        if m["type"] != "msg" {
            continue;
        }
        if m["text"] == "calm" {
            break;
        }
        seen += 1;
    }
    assert!(seen <= 6, "only the burst got through ({seen})");
}

#[test]
fn a_handshake_that_never_finishes_is_dropped() {
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_millis(300));
    let mut s = TcpStream::connect(server.ws).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap(); // ...and never the rest
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() < Duration::from_secs(3));
    server.connect("fine");
}
