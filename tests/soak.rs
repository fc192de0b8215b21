//! Soak: many clients join, chat, leave, reconnect and resume (some never read) while
//! the server is SIGKILLed and restarted twice. Afterwards every acked message is in
//! history exactly once and in order, every resuming client saw a gapless sequence,
//! the server's memory stayed flat, and no thread or descriptor leaked.
//!
//! `make test` runs a short version; `make soak` runs it for NATTER_SOAK_SECS (120).

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{free_port, Proc};
use rand::Rng;
use serde_json::{json, Value};
use tungstenite::Message;

const ROOMS: usize = 4;

fn proc_count(pid: u32, what: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/{what}")).map_or(0, |d| d.count())
}

/// Threads named `conn-N`: one per live WebSocket connection.
fn conn_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("conn-"))
        .count()
}

/// Socket descriptors an idle server holds: the WebSocket, HTTP and admin listeners,
/// the accept watcher's duplicate of the WebSocket one (so it never shuts down a
/// descriptor number that may have been reused), and for each of the two HTTP
/// listeners its tiny_http's Unix listener and the relays' wake-up socket pair.
const IDLE_SOCKETS: usize = 4 + 2 * 3;

/// Open socket descriptors.
fn sockets(pid: u32) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    fds.filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Shared {
    stop: AtomicBool,
    /// (room, id) → seq for every ack received.
    acked: Mutex<HashMap<(String, String), u64>>,
    resumes: AtomicU64,
    reconnects: AtomicU64,
}

/// One chatting client: posts, reads, sometimes leaves or drops; on any failure it
/// reconnects, resumes each room with `since`, and retries its unacked posts.
fn chatter(url: String, me: usize, shared: Arc<Shared>) {
    let mut rng = rand::rng();
    let mut last_seen: HashMap<String, u64> = HashMap::new();
    let mut pending: Vec<(String, String, String)> = Vec::new(); // (room, id, text)
    let mut next_id = 0u64;
    let home = format!("room{}", me % ROOMS);
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok(stream) = std::net::TcpStream::connect(url.trim_start_matches("ws://").split('/').next().unwrap())
        else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let Ok((mut ws, _)) = tungstenite::client(format!("{url}?name=soak{me}&key=soak-identity-key-{me:08}"), stream)
        else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        let since = last_seen.get(&home).copied();
        let mut join = json!({"type": "join", "room": home});
        if let Some(s) = since {
            join["since"] = json!(s);
            shared.resumes.fetch_add(1, Ordering::Relaxed);
        }
        if ws.send(Message::text(join.to_string())).is_err() {
            continue;
        }
        let mut joined = false;
        let session_end = Instant::now() + Duration::from_millis(rng.random_range(500..4000));
        let mut next_post = Instant::now();
        loop {
            if shared.stop.load(Ordering::Relaxed) || Instant::now() > session_end {
                let _ = ws.close(None);
                let _ = ws.flush();
                break;
            }
            if joined && Instant::now() >= next_post {
                next_post = Instant::now() + Duration::from_millis(rng.random_range(100..600));
                next_id += 1;
                let id = format!("s{me}-{next_id}");
                pending.push((home.clone(), id.clone(), format!("hello {me} {next_id}")));
                // Retry everything unacked, oldest first, same ids: effectively once.
                let mut failed = false;
                for (room, id, text) in &pending {
                    let m = json!({"type": "msg", "room": room, "text": text, "id": id});
                    failed |= ws.send(Message::text(m.to_string())).is_err();
                }
                if failed {
                    break;
                }
            }
            let frame = match ws.read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => break, // killed server, slow-consumer cut, ...: reconnect
            };
            let v: Value = serde_json::from_str(frame.as_str()).unwrap();
            match v["type"].as_str().unwrap() {
                "history" => {
                    let room = v["room"].as_str().unwrap().to_owned();
                    assert_eq!(v["complete"], true, "the soak keeps all history");
                    for m in v["messages"].as_array().unwrap() {
                        see(&mut last_seen, &room, m, since.is_some());
                    }
                    joined = true;
                }
                "msg" => {
                    let room = v["room"].as_str().unwrap().to_owned();
                    see(&mut last_seen, &room, &v, true);
                }
                "ack" => {
                    let key = (v["room"].as_str().unwrap().to_owned(), v["id"].as_str().unwrap().to_owned());
                    let seq = v["seq"].as_u64().unwrap();
                    let mut acked = shared.acked.lock().unwrap();
                    if let Some(prev) = acked.insert(key.clone(), seq) {
                        assert_eq!(prev, seq, "a retried id keeps its seq");
                    }
                    pending.retain(|(r, i, _)| (r, i) != (&key.0, &key.1));
                }
                "error" => assert_eq!(v["code"], "rate_limited", "unexpected error {v}"),
                _ => {}
            }
        }
    }
}

/// Records a message; once a client has seen a room, every later seq must follow the
/// last one with no gap and no repeat.
fn see(last_seen: &mut HashMap<String, u64>, room: &str, m: &Value, strict: bool) {
    let seq = m["seq"].as_u64().unwrap();
    match last_seen.get(room) {
        Some(&last) if strict => assert_eq!(seq, last + 1, "gapless resume in {room}"),
        _ => {}
    }
    last_seen.insert(room.to_owned(), seq);
}

/// A client that joins and never reads again.
fn sleeper(url: String, me: usize, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        if let Ok(stream) = std::net::TcpStream::connect(url.trim_start_matches("ws://").split('/').next().unwrap()) {
            if let Ok((mut ws, _)) = tungstenite::client(format!("{url}?name=sleeper{me}"), stream) {
                let _ =
                    ws.send(Message::text(json!({"type":"join","room": format!("room{}", me % ROOMS)}).to_string()));
                while !shared.stop.load(Ordering::Relaxed) && ws.get_ref().peer_addr().is_ok() {
                    std::thread::sleep(Duration::from_millis(200));
                    // Detect a dead socket without reading any data.
                    let mut b = [0u8; 1];
                    ws.get_ref().set_nonblocking(true).unwrap();
                    if let Ok(0) = ws.get_ref().peek(&mut b) {
                        break;
                    }
                    ws.get_ref().set_nonblocking(false).unwrap();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Thread and descriptor counts of a server that has served one WebSocket client and
/// one HTTP request (so every lazily started thread exists) and is idle again.
fn idle_counts(server: &Proc, url: &str) -> (usize, usize) {
    let pid = server.child.id();
    drop(common::Client::connect(&format!("{url}?name=probe")));
    common::http_get(server.http, "/healthz");
    common::wait_until(|| conn_threads(pid) == 0 && sockets(pid) == IDLE_SOCKETS, "the probe to be gone");
    (proc_count(pid, "task"), proc_count(pid, "fd"))
}

fn start(dir: &Path, ports: (u16, u16)) -> Proc {
    Proc::start(
        dir,
        Some(ports),
        &["--history", "1000000", "--max-backlog-bytes", "262144", "--heartbeat-interval-ms", "1000"],
    )
}

#[test]
fn soak_with_kills_loses_nothing_and_leaks_nothing() {
    let secs: u64 = std::env::var("NATTER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(9);
    let chatters: usize = std::env::var("NATTER_SOAK_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    natter::limits::raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let mut server = start(dir.path(), ports);
    let url = format!("ws://{}/ws", server.ws);
    let baseline = idle_counts(&server, &url);

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        acked: Mutex::new(HashMap::new()),
        resumes: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
    });
    let mut handles = Vec::new();
    for i in 0..chatters {
        let (u, s) = (url.clone(), shared.clone());
        handles.push(std::thread::spawn(move || chatter(u, i, s)));
    }
    for i in 0..chatters / 10 {
        let (u, s) = (url.clone(), shared.clone());
        handles.push(std::thread::spawn(move || sleeper(u, i, s)));
    }

    let started = Instant::now();
    let third = Duration::from_secs(secs) / 3;
    for _ in 0..2 {
        std::thread::sleep(third);
        server.signal(libc::SIGKILL);
        server.wait(Duration::from_secs(5));
        server = start(dir.path(), ports);
    }
    // Memory in the last incarnation: after clients are back, and at the end.
    std::thread::sleep(third / 3);
    let rss_early = rss_kib(server.child.id());
    std::thread::sleep(third * 2 / 3);
    let rss_late = rss_kib(server.child.id());
    shared.stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("a client thread failed its checks");
    }

    // Every acked message is in history exactly once, in seq order, gapless.
    let acked = shared.acked.lock().unwrap().clone();
    let mut verifier = common::Client::connect(&format!("{url}?name=verifier"));
    let mut total = 0;
    for r in 0..ROOMS {
        let room = format!("room{r}");
        let (joined, history) = verifier.join(&room, Some(0));
        let msgs = history["messages"].as_array().unwrap();
        let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=joined["head"].as_u64().unwrap()).collect::<Vec<_>>(), "gapless history in {room}");
        let ids: HashMap<String, u64> =
            msgs.iter().map(|m| (m["id"].as_str().unwrap().to_owned(), m["seq"].as_u64().unwrap())).collect();
        assert_eq!(ids.len(), msgs.len(), "no message stored twice in {room}");
        for ((ar, id), seq) in acked.iter().filter(|((ar, _), _)| *ar == room) {
            assert_eq!(ids.get(id), Some(seq), "acked {ar}/{id} is in history at its seq");
            total += 1;
        }
    }
    drop(verifier);
    assert_eq!(total, acked.len());
    let unique_rooms: HashSet<&String> = acked.keys().map(|(r, _)| r).collect();
    assert!(!unique_rooms.is_empty() && total > 0);

    // Nothing leaked: once everyone is gone the server is back to its idle counts.
    let pid = server.child.id();
    common::wait_until(|| conn_threads(pid) == 0, "every connection thread to end");
    common::wait_until(|| sockets(pid) == IDLE_SOCKETS, "every socket but the listeners to close");
    // And the whole process is back to the counts of a fresh idle server (tiny_http
    // retires its extra pool threads after 5 s idle).
    let end = std::time::Instant::now() + Duration::from_secs(30);
    while (proc_count(pid, "task"), proc_count(pid, "fd")) > baseline {
        assert!(
            std::time::Instant::now() < end,
            "threads/fds {:?} never came back to {baseline:?}",
            (proc_count(pid, "task"), proc_count(pid, "fd"))
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let grew = rss_late as f64 / rss_early.max(1) as f64;
    println!(
        "soak: {secs}s, {chatters} chatters + {} sleepers, 2 kills, {total} acked messages verified, {} connects, {} resumes, \
         threads {}→{} ({} conn-), fds {}→{} ({} sockets), RSS {rss_early}→{rss_late} KiB ({:.2}x), elapsed {:?}",
        chatters / 10,
        shared.reconnects.load(Ordering::Relaxed),
        shared.resumes.load(Ordering::Relaxed),
        baseline.0,
        proc_count(pid, "task"),
        conn_threads(pid),
        baseline.1,
        proc_count(pid, "fd"),
        sockets(pid),
        grew,
        started.elapsed()
    );
    assert!(rss_late < rss_early + rss_early / 2 + 4096, "memory stays flat: {rss_early} → {rss_late} KiB");
}
