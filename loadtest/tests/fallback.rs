//! `--transport sse` end to end: natter-loadtest's fallback clients against the
//! real natter (in this process, on port 0) must count every delivery with
//! nothing lost; and against a scripted fallback server that chunks its
//! streams, splits events across writes, sends comments and multi-line data
//! and drops one delivery on purpose, the tester must find exactly that loss.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// natter serving in this process until dropped.
struct Natter {
    ws: SocketAddr,
    trigger: natter::shutdown::ShutdownTrigger,
    handle: Option<JoinHandle<Result<(), natter::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl Natter {
    fn start() -> Natter {
        let dir = tempfile::tempdir().expect("temp dir");
        let bind = || TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let (http, ws) = (bind(), bind());
        let ws_addr = ws.local_addr().unwrap();
        let cfg = natter::config::Config {
            data_dir: dir.path().to_owned(),
            http_port: http.local_addr().unwrap().port(),
            ws_port: ws_addr.port(),
            // Every sender's rate is the test's to choose, as in run.sh.
            rate_per_s: 100_000,
            rate_burst: 100_000,
            ..natter::config::Config::default()
        };
        let (trigger, shutdown) = natter::shutdown::channel();
        let listeners = natter::Listeners { http, ws, admin: None };
        let handle = std::thread::spawn(move || natter::serve(cfg, listeners, shutdown, || {}));
        Natter { ws: ws_addr, trigger, handle: Some(handle), _dir: dir }
    }
}

impl Drop for Natter {
    fn drop(&mut self) {
        self.trigger.fire();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn loadtest(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(args)
        .args(["--transport", "sse", "--json", "--quiet", "--max-seconds", "60"])
        .output()
        .expect("run natter-loadtest");
    assert!(out.status.success(), "natter-loadtest failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn steady_over_sse_against_natter_loses_nothing() {
    let natter = Natter::start();
    let url = format!("ws://{}/ws?name=lt", natter.ws);
    let flags = "steady --clients 60 --senders 6 --rate 60 --duration 1 --settle-ms 200 --await-joined --threads 2";
    let mut args = vec!["--url", url.as_str()];
    args.extend(flags.split_whitespace());
    let j = loadtest(&args);
    let sent = j["sent"].as_u64().unwrap();
    assert!(sent >= 50, "{j}");
    assert_eq!((j["connected"].as_u64(), j["receivers"].as_u64()), (Some(60), Some(60)), "{j}");
    assert_eq!(j["expected"].as_u64().unwrap(), sent * 60);
    assert_eq!(j["delivered"].as_u64().unwrap(), sent * 60, "{j}");
    assert_eq!((j["lost"].as_i64(), j["duplicated"].as_u64(), j["out_of_order"].as_u64()), (Some(0), Some(0), Some(0)));
    // Every probe went up by a POST that natter answered 200.
    assert!(j["posts"].as_u64().unwrap() >= sent, "{j}");
    assert_eq!(j["posts_failed"], 0, "{j}");
    assert_eq!((j["dropped"].clone(), j["server_errors"].clone()), (json!({}), json!({})), "{j}");
    assert_eq!(j["transport"], "sse");
    assert!(j["witness"]["latency_ms"]["count"].as_u64().unwrap() > 0, "the witness posts over SSE too: {j}");
}

/// The scripted server's streams, by session: the socket and its rooms.
type Streams = Arc<Mutex<HashMap<String, (TcpStream, Vec<String>)>>>;

/// A fallback server in natter's wire format but written to be awkward: chunked
/// streams, every event split in two writes, a comment before each event, `data`
/// over two lines, JSON keys in another order; keep-alive POSTs. With
/// `drop_first`, the first probe never reaches the lowest-numbered stream.
/// Threads end with the test process.
fn scripted_server(drop_first: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws?name=lt", listener.local_addr().unwrap());
    let streams = Streams::default();
    let done_dropping = Arc::new(Mutex::new(!drop_first));
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let (streams, done) = (Arc::clone(&streams), Arc::clone(&done_dropping));
            std::thread::spawn(move || serve(n, conn.unwrap(), &streams, &done));
        }
    });
    url
}

/// Requests on one connection until it ends or becomes a stream.
fn serve(n: usize, mut conn: TcpStream, streams: &Streams, done_dropping: &Mutex<bool>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        if line.starts_with("GET /sse?") {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
            conn.write_all(head.as_bytes()).unwrap();
            let session = format!("s-{n}");
            event(&mut conn, &json!({"type": "welcome", "session": session}));
            streams.lock().unwrap().insert(session, (conn, Vec::new()));
            return;
        }
        let session = line.split("session=").nth(1).unwrap().split(' ').next().unwrap().to_owned();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        for m in body.as_array().cloned().unwrap_or_else(|| vec![body]) {
            deliver(&session, &m, streams, done_dropping);
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]").unwrap();
    }
}

fn deliver(session: &str, m: &Value, streams: &Streams, done_dropping: &Mutex<bool>) {
    let room = m["room"].as_str().unwrap().to_owned();
    let mut streams = streams.lock().unwrap();
    if m["type"] == "join" {
        let (s, rooms) = streams.get_mut(session).unwrap();
        rooms.push(room.clone());
        return event(s, &json!({"type": "joined", "room": room}));
    }
    let mut members: Vec<_> = streams.iter_mut().filter(|(_, (_, rooms))| rooms.contains(&room)).collect();
    members.sort_by_key(|(id, _)| id[2..].parse::<usize>().unwrap());
    let mut done = done_dropping.lock().unwrap();
    for (i, (_, (s, _))) in members.into_iter().enumerate() {
        if i == 0 && !*done {
            *done = true;
            continue;
        }
        event(s, &json!({"type": "msg", "room": room, "user": "lt", "text": m["text"]}));
    }
}

/// One event as awkwardly as the format allows, in two chunks written apart.
fn event(s: &mut TcpStream, v: &Value) {
    let text = v.to_string();
    // Two data lines, cut after a comma: joined with '\n' they are still JSON.
    let cut = text.find(',').map_or(text.len(), |i| i + 1);
    let bytes = format!(": keep-alive\r\n\r\nid: 1\r\ndata: {}\r\ndata:{}\r\n\r\n", &text[..cut], &text[cut..]);
    let (x, y) = bytes.as_bytes().split_at(bytes.len() / 2);
    for part in [x, y] {
        let _ = write!(s, "{:x}\r\n", part.len());
        let _ = s.write_all(part);
        let _ = s.write_all(b"\r\n");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_dropped_event_is_found_through_chunks_and_split_writes() {
    let args = |url: &str| -> Vec<String> {
        let flags =
            "steady --clients 8 --senders 2 --rate 20 --duration 1 --settle-ms 200 --await-joined --witness-rate 0";
        let mut a = vec!["--url".to_string(), url.to_string()];
        a.extend(flags.split_whitespace().map(str::to_owned));
        a
    };
    let run = |url: &str| {
        let a = args(url);
        loadtest(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let clean = run(&scripted_server(false));
    let sent = clean["sent"].as_u64().unwrap();
    assert!(sent >= 15, "{clean}");
    assert_eq!((clean["delivered"].as_u64(), clean["lost"].as_i64()), (Some(sent * 8), Some(0)), "{clean}");
    assert!(clean["pings"].as_u64().unwrap() >= sent * 8, "every comment counted: {clean}");
    assert_eq!(clean["violations"], json!({}), "{clean}");
    let lossy = run(&scripted_server(true));
    let sent = lossy["sent"].as_u64().unwrap();
    assert_eq!((lossy["delivered"].as_u64(), lossy["lost"].as_i64()), (Some(sent * 8 - 1), Some(1)), "{lossy}");
}
