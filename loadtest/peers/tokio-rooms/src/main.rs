//! tokio-rooms: the chat server a Rust developer would write on tokio and
//! tokio-tungstenite, as a peer for natter-loadtest. The idiomatic shape,
//! as the crates' own examples have it and with no tuning: the default
//! multi-threaded runtime, one task per connection, a shared map of rooms
//! to their members' unbounded mpsc senders behind a mutex, JSON in and out
//! with serde. Speaks natter's wire shape for the two frames the tester
//! uses: `{"type":"join","room"}` → `{"type":"joined","room"}`, and
//! `{"type":"msg","room","text"}` → `{"type":"msg","room","user","text"}` to
//! every member of the room, the sender too.
//!
//! `tokio-rooms [PORT [READ_BUFFER]]` (port 0 = any free port) prints one
//! ready line with the URL. READ_BUFFER (bytes) sets tungstenite's read
//! buffer, 128 KiB by default: the one knob natter turned for its memory
//! (to 2 KiB), offered here too so that the memory rows can show both.

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// A member's outbox.
type Tx = UnboundedSender<Message>;
/// Room name → its members' outboxes, by peer address.
type Rooms = Arc<Mutex<HashMap<String, HashMap<SocketAddr, Tx>>>>;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum In {
    Join { room: String },
    Msg { room: String, text: String },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    Joined { room: &'a str },
    Msg { room: &'a str, user: String, text: &'a str },
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::args().nth(1).unwrap_or_else(|| "8092".into());
    let config = match std::env::args().nth(2).map(|n| n.parse::<usize>()) {
        Some(Ok(bytes)) => Some(WebSocketConfig::default().read_buffer_size(bytes)),
        Some(Err(e)) => panic!("READ_BUFFER: {e}"),
        None => None,
    };
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("tokio-rooms listening ws://{}/", listener.local_addr()?);
    let rooms = Rooms::default();
    loop {
        let (stream, addr) = listener.accept().await?;
        tokio::spawn(connection(stream, addr, rooms.clone(), config));
    }
}

/// One client, from handshake to goodbye: read its frames, and write
/// what the room sends it.
async fn connection(stream: TcpStream, addr: SocketAddr, rooms: Rooms, config: Option<WebSocketConfig>) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, config).await else {
        return;
    };
    let (mut outgoing, mut incoming) = ws.split();
    let (tx, mut rx) = unbounded_channel();
    let mut joined = Vec::new();
    loop {
        tokio::select! {
            frame = incoming.next() => match frame {
                Some(Ok(Message::Text(text))) => on_text(&text, addr, &tx, &rooms, &mut joined),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
            Some(out) = rx.recv() => {
                if outgoing.send(out).await.is_err() {
                    break;
                }
            }
        }
    }
    let mut rooms = rooms.lock().unwrap();
    for room in joined {
        if let Some(members) = rooms.get_mut(&room) {
            members.remove(&addr);
            if members.is_empty() {
                rooms.remove(&room);
            }
        }
    }
}

fn on_text(text: &str, addr: SocketAddr, me: &Tx, rooms: &Rooms, joined: &mut Vec<String>) {
    match serde_json::from_str::<In>(text) {
        Ok(In::Join { room }) => {
            rooms.lock().unwrap().entry(room.clone()).or_default().insert(addr, me.clone());
            let _ = me.send(Message::text(serde_json::to_string(&Out::Joined { room: &room }).unwrap()));
            joined.push(room);
        }
        Ok(In::Msg { room, text }) => {
            let out = Out::Msg { room: &room, user: addr.to_string(), text: &text };
            let frame = Message::text(serde_json::to_string(&out).unwrap());
            let rooms = rooms.lock().unwrap();
            if let Some(members) = rooms.get(&room).filter(|m| m.contains_key(&addr)) {
                for member in members.values() {
                    let _ = member.send(frame.clone());
                }
            }
        }
        Err(_) => {}
    }
}
