//! Scroll-back under load, end to end: natter-seed fills a room through natter's
//! store writer, natter serves it in this process, and natter-loadtest runs `steady`
//! with pagers that page back as fast as answers come. Every pager must walk from its
//! start down to the room's first message (`complete:true`), reading each stored
//! message below its start exactly once, with no fault and no error.

use natter::config::Config;
use natter::{shutdown, Listeners};
use serde_json::Value;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

const ROOM: &str = "archive";
const MESSAGES: u64 = 3000;
const PAGERS: u64 = 4;

fn seed(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-seed"))
        .args(["--data-dir", &dir.display().to_string(), "--room", ROOM, "--messages", &MESSAGES.to_string()])
        .output()
        .expect("run natter-seed");
    assert!(out.status.success(), "natter-seed: {}", String::from_utf8_lossy(&out.stderr));
}

/// natter on `dir`, in this process, for as long as the test runs; its WebSocket URL.
fn serve(dir: &Path) -> String {
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let ws = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = Config {
        data_dir: dir.to_owned(),
        http_port: http.local_addr().unwrap().port(),
        ws_port: ws.local_addr().unwrap().port(),
        rate_per_s: 100_000,
        rate_burst: 100_000,
        ..Config::default()
    };
    let url = format!("ws://{}/ws?name=lt", ws.local_addr().unwrap());
    let (trigger, stop) = shutdown::channel();
    std::mem::forget(trigger); // never fired: the server ends with the test process
    std::thread::spawn(move || natter::serve(cfg, Listeners { http, ws, admin: None }, stop, || {}));
    url
}

#[test]
fn pagers_walk_the_whole_room_once_and_find_no_fault() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path());
    let url = serve(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(["steady", "--url", &url, "--room", ROOM, "--await-joined", "--clients", "20", "--senders", "2"])
        .args(["--rate", "20", "--duration", "1", "--settle-ms", "100", "--drain-ms", "500"])
        .args(["--pagers", &PAGERS.to_string(), "--page-rate", "0", "--page-limits", "100,37"])
        .args(["--json", "--quiet", "--max-seconds", "60"])
        .output()
        .expect("run natter-loadtest");
    assert!(out.status.success(), "natter-loadtest: {}", String::from_utf8_lossy(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let s = &j["scrollback"];
    assert_eq!(s["faults"], serde_json::json!({}), "{s}");
    assert_eq!(s["errors"], serde_json::json!({}), "{s}");
    assert_eq!(s["walks_done"], PAGERS, "every pager reached complete:true: {s}");
    // Pager i starts below seq MESSAGES + 1 - i * MESSAGES / PAGERS and reads everything under it.
    let below_starts: u64 = (0..PAGERS).map(|i| MESSAGES - i * MESSAGES / PAGERS).sum();
    assert_eq!(s["messages"], below_starts, "{s}");
    assert!(s["page_ms"]["p99"].as_f64().unwrap() > 0.0, "{s}");
    let h = &j["headline"];
    assert_eq!(h["lost"], 0, "{j}");
    for key in ["p99_without_pagers_ms", "p99_with_pagers_ms", "p99_ratio", "page_p99_ms", "pages_per_s"] {
        assert!(h[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {h}");
    }
}
