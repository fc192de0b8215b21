//! The rooms accounting, end to end: natter-loadtest against a small
//! in-process rooms server (natter's join/msg protocol) that can be told to
//! lose one delivery per room or to reorder one per room. A clean server must
//! come out clean; each fault must be found in every room.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tungstenite::{Message, WebSocket};

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    /// The first message of every room never reaches that room's first member.
    DropOne,
    /// The first message of every room reaches its first member only after
    /// the next message from the same sender.
    ReorderOne,
}

#[derive(Default)]
struct Room {
    /// (connection id, its outbox), in join order.
    members: Vec<(usize, Sender<String>)>,
    messages: u64,
    /// ReorderOne: the held message and who sent it.
    held: Option<(usize, String)>,
}

type Rooms = Arc<Mutex<HashMap<String, Room>>>;

/// Start the server; returns its URL. Threads end with the test process.
fn start(fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let rooms = Rooms::default();
    std::thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let rooms = Arc::clone(&rooms);
            std::thread::spawn(move || serve(id, stream.unwrap(), &rooms, fault));
        }
    });
    url
}

/// One connection: read with a short timeout, and between reads write out
/// what other connections queued for it.
fn serve(id: usize, stream: TcpStream, rooms: &Rooms, fault: Fault) {
    stream.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
    let Ok(mut ws) = tungstenite::accept(stream) else { return };
    let (tx, rx) = channel::<String>();
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => on_message(id, t.as_str(), &tx, rooms, fault),
            Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
        if flush(&mut ws, &rx).is_err() {
            return;
        }
    }
}

fn flush(ws: &mut WebSocket<TcpStream>, rx: &Receiver<String>) -> tungstenite::Result<()> {
    while let Ok(out) = rx.try_recv() {
        ws.write(Message::text(out))?;
    }
    ws.flush()
}

fn on_message(id: usize, text: &str, me: &Sender<String>, rooms: &Rooms, fault: Fault) {
    let msg: Value = serde_json::from_str(text).unwrap();
    let name = msg["room"].as_str().unwrap().to_string();
    let mut rooms = rooms.lock().unwrap();
    let room = rooms.entry(name.clone()).or_default();
    match msg["type"].as_str() {
        Some("join") => {
            room.members.push((id, me.clone()));
            let _ = me.send(json!({"type":"joined","room":name}).to_string());
        }
        Some("msg") => {
            room.messages += 1;
            let out = json!({"type":"msg","room":name,"text":msg["text"]}).to_string();
            for (k, (_, member)) in room.members.iter().enumerate() {
                if k > 0 || fault == Fault::None {
                    let _ = member.send(out.clone());
                } else if fault == Fault::ReorderOne && room.messages == 1 {
                    room.held = Some((id, out.clone()));
                } else if fault == Fault::ReorderOne && room.held.as_ref().is_some_and(|(from, _)| *from == id) {
                    let _ = member.send(out.clone());
                    let _ = member.send(room.held.take().unwrap().1);
                } else if fault == Fault::ReorderOne || room.messages > 1 {
                    let _ = member.send(out.clone());
                }
            }
        }
        _ => {}
    }
}

fn loadtest(url: &str, args: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_natter-loadtest"))
        .args(["--url", url, "--await-joined", "--json", "--quiet", "--max-seconds", "60", "--settle-ms", "200"])
        .args(args.split_whitespace())
        .output()
        .expect("run natter-loadtest");
    assert!(out.status.success(), "natter-loadtest failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// 4 rooms of 3 clients, every client sending about 6 messages.
const ROOMS: &str = "rooms --clients 12 --rooms 4 --rate 72 --duration 1 --drain-ms 500";

#[test]
fn a_clean_server_loses_nothing_in_any_room() {
    let j = loadtest(&start(Fault::None), ROOMS);
    let sent = j["sent"].as_u64().unwrap();
    assert!(sent >= 60, "{j}");
    assert_eq!(j["expected"].as_u64(), Some(sent * 3), "each message to its room's 3 members: {j}");
    assert_eq!(j["delivered"], j["expected"]);
    assert_eq!(j["rooms"]["rooms_with_loss"], 0);
    assert_eq!((j["lost"].as_i64(), j["out_of_order"].as_u64(), j["misrouted"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(j["headline"]["tester_bound"], 0);
    assert!(j["witness"]["latency_ms"]["count"].as_u64().unwrap() >= 5, "the witness timed its posts: {j}");
}

#[test]
fn one_dropped_delivery_per_room_is_caught_in_every_room() {
    let j = loadtest(&start(Fault::DropOne), &format!("{ROOMS} --witness-rate 0"));
    assert_eq!(j["lost"], 4, "{j}");
    assert_eq!(j["rooms"]["rooms_with_loss"], 4, "{j}");
    assert_eq!(j["rooms"]["worst"], json!([[0, 1], [1, 1], [2, 1], [3, 1]]));
    assert_eq!(j["out_of_order"], 0);
}

#[test]
fn one_reordered_delivery_per_room_is_caught_in_every_room() {
    let j = loadtest(&start(Fault::ReorderOne), &format!("{ROOMS} --witness-rate 0"));
    assert_eq!(j["lost"], 0, "{j}");
    assert_eq!(j["out_of_order"], 4, "{j}");
    assert_eq!(j["rooms"]["rooms_out_of_order"], 4, "{j}");
}

#[test]
fn rooms_ramp_stops_at_the_first_lossy_step() {
    let url = start(Fault::DropOne);
    let j = loadtest(&url, "rooms-ramp --clients 8 --rooms 4 --ramp-start 40 --max-steps 3 --step-secs 0.5 --drain-ms 300 --ramp-retries 0");
    assert_eq!(j["headline"]["best_rate"].as_f64(), Some(0.0), "{j}");
    assert_eq!(j["steps"].as_array().unwrap().len(), 1);
    assert_eq!(j["steps"][0]["rooms_with_loss"], 4);
}
