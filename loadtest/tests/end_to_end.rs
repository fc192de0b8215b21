//! End-to-end checks of natter-loadtest as a user runs it: the real binary
//! against the real ceiling server (exact accounting, nothing lost), and
//! against a scripted tungstenite server that pings and closes (pongs and
//! close echoes are correct, client frames masked — tungstenite's server
//! refuses unmasked ones).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// A child process killed when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ceiling() -> (Server, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_natter-ceiling"))
        .args(["--bind", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start natter-ceiling");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("ws://")).expect("ready line has the URL").to_string();
    (Server(child), url)
}

fn loadtest(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(args)
        .args(["--json", "--quiet", "--max-seconds", "60"])
        .output()
        .expect("run natter-loadtest");
    assert!(out.status.success(), "natter-loadtest failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Run `flags` (space-separated) against the ceiling at `url`.
fn against_ceiling(url: &str, flags: &str) -> Value {
    let mut args = vec!["--url", url, "--join", "", "--msg", r#"{"text":"$TEXT"}"#];
    args.extend(flags.split_whitespace());
    loadtest(&args)
}

#[test]
fn steady_against_the_ceiling_counts_every_delivery() {
    let (_server, url) = start_ceiling();
    let j = against_ceiling(&url, "steady --clients 50 --senders 5 --rate 50 --duration 1 --settle-ms 200 --threads 2");
    let sent = j["sent"].as_u64().unwrap();
    assert!(sent >= 45, "{j}");
    assert_eq!(j["connected"], 50);
    assert_eq!(j["expected"].as_u64().unwrap(), sent * 50);
    assert_eq!(j["delivered"].as_u64().unwrap(), sent * 50, "{j}");
    assert_eq!((j["lost"].as_i64(), j["duplicated"].as_u64()), (Some(0), Some(0)));
    assert!(j["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn shootout_steps_until_the_limit() {
    let (_server, url) = start_ceiling();
    let j = against_ceiling(&url, "shootout --step 20 --max-clients 40 --broadcasts 8 --settle-ms 100");
    let steps = j["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{j}");
    assert_eq!(steps[1]["clients"], 40);
    assert_eq!(steps[1]["lost"], 0);
    assert_eq!(j["headline"]["max_clients_passing"], 40);
}

#[test]
fn refuses_remote_targets() {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(["steady", "--url", "ws://192.0.2.1:80/", "--max-seconds", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn answers_pings_and_echoes_close() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        ws.send(Message::Ping(b"hb-1".to_vec().into())).unwrap();
        let pong = match ws.read().unwrap() {
            Message::Pong(p) => p.to_vec(),
            other => panic!("expected a pong, got {other:?}"),
        };
        let close = CloseFrame { code: CloseCode::Policy, reason: "slow consumer".into() };
        ws.close(Some(close)).unwrap();
        let echo = loop {
            match ws.read() {
                Ok(Message::Close(c)) => break c.map(|c| u16::from(c.code)),
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => break None,
                Err(e) => panic!("reading the close echo: {e}"),
            }
        };
        (pong, echo)
    });
    let j = loadtest(&["idle", "--url", &url, "--join", "", "--clients", "1", "--hold", "1", "--witness-rate", "0"]);
    let (pong, echo) = server.join().unwrap();
    assert_eq!(pong, b"hb-1");
    assert_eq!(echo, Some(1008));
    assert_eq!(j["pings"], 1);
    assert_eq!(j["server_closes"]["1008 slow consumer"], 1, "{j}");
    assert_eq!(j["violations"], serde_json::json!({}));
}

#[test]
fn speaks_engine_io_to_a_socket_io_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        // What a Socket.IO 4 server and client say, in order.
        let first = read_text(&mut ws);
        ws.send(Message::text(r#"0{"sid":"s1","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#)).unwrap();
        ws.send(Message::text(r#"40{"sid":"n1"}"#)).unwrap();
        let join = read_text(&mut ws);
        ws.send(Message::text(r#"42["joined",{"room":"lobby"}]"#)).unwrap();
        ws.send(Message::text("2")).unwrap();
        let pong = read_text(&mut ws);
        let _ = ws.close(None);
        (first, join, pong)
    });
    let j = loadtest(&[
        "idle",
        "--url",
        &url,
        "--engine-io",
        "--await-joined",
        "--join",
        r#"42["join",{"room":"$ROOM"}]"#,
        "--clients",
        "1",
        "--hold",
        "1",
        "--witness-rate",
        "0",
    ]);
    let (first, join, pong) = server.join().unwrap();
    assert_eq!(first, "40", "the namespace connect comes first");
    assert_eq!(join, r#"42["join",{"room":"lobby"}]"#, "the join waits for the server's 40");
    assert_eq!(pong, "3", "an Engine.IO ping is answered");
    assert_eq!(j["pings"], 1, "{j}");
    assert_eq!(j["not_json"], 0, "{j}");
}

/// The next text frame from the client.
fn read_text(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> String {
    loop {
        if let Message::Text(t) = ws.read().unwrap() {
            return t.to_string();
        }
    }
}
