//! Server-Sent Events framing for the fallback transport (`GET /sse`): a server frame
//! (a WebSocket frame built by [`super::wire`]) becomes one SSE event, and a stream's
//! room cursors become its `id:` line, so `Last-Event-ID` can resume every room.
//!
//! An event is written as two parts: the stream's own `id:` line (its cursors, cached
//! and rebuilt only when a cursor moves) and the shared `data:` part, built once per
//! frame for every SSE receiver ([`Event::from_frame`]). A live message is also built
//! whole ([`Event::lone`]) for streams in its room alone, who share it as one part. This module never writes to a
//! socket and holds no connection state but [`Cursors`].

use std::collections::BTreeMap;
use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use super::wire::{self, Frame};
use super::RoomName;

/// What an event means for the stream that carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Nothing to remember.
    None,
    /// A live message: the room's cursor moves to `seq`. `line` is the `id:` line of
    /// a stream in this room alone (the common case), built once per frame
    /// ([`Mark::msg`]) so that such streams share it instead of each formatting its own.
    Msg { room: String, seq: u64, line: Bytes },
    /// A join's head: the cursor moves there once the history that follows is sent.
    Joined { room: String, head: u64 },
    /// A join's history; `last` is its newest message. `reset`: the room's history is
    /// a new one, so the cursor may move back.
    History { room: String, last: Option<u64>, reset: bool },
    /// An answer a waiting `POST /send` may want (ack, error), as JSON.
    Answer(Bytes),
    /// A pong; its `t` (as JSON text) may be a `POST /send`'s barrier.
    Pong { t: String, json: Bytes },
}

impl Mark {
    /// A live message's mark, with its shared one-room `id:` line.
    pub fn msg(room: String, seq: u64) -> Mark {
        let line = Bytes::from(format!("id: {room}={seq}\n"));
        Mark::Msg { room, seq, line }
    }
}

/// One server frame as an SSE event: `data: <json>\n\n` (or a comment, or the closing
/// event), shared by every SSE receiver of the frame.
#[derive(Debug, Clone)]
pub struct Event {
    pub data: Bytes,
    pub mark: Mark,
    /// A live message's whole event for a stream in its room alone: the mark's `id:`
    /// line and `data` in one buffer (`data` is a slice of it), queued as one part
    /// like a WebSocket frame.
    pub lone: Option<Bytes>,
}

/// The comment sent for a heartbeat Ping: it keeps proxies from timing the stream out.
const PING: &[u8] = b": ping\n\n";

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    seq: Option<u64>,
    head: Option<u64>,
    messages: Option<Vec<SeqOnly>>,
    t: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    reset: bool,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

impl Event {
    /// Translates a frame from [`wire`]: text → `data:`, ping → comment, close → an
    /// `event: close` with the code and reason.
    pub fn from_frame(frame: &Frame) -> Event {
        match frame.first().map(|b| b & 0x0F) {
            Some(0x1) => Self::data(wire::payload(frame)),
            Some(0x8) => {
                let p = wire::payload(frame);
                let code = p.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default());
                close_event(code, &reason)
            }
            _ => Event { data: Bytes::from_static(PING), mark: Mark::None, lone: None },
        }
    }

    /// A `data:` event for one JSON payload (a server frame's, never containing a raw
    /// newline: serde escapes them).
    pub fn data(json: Bytes) -> Event {
        let mark = mark(&json);
        let id: &[u8] = match &mark {
            Mark::Msg { line, .. } => line,
            _ => b"",
        };
        let mut buf = BytesMut::with_capacity(id.len() + json.len() + 8);
        buf.put_slice(id);
        buf.put_slice(b"data: ");
        buf.put_slice(&json);
        buf.put_slice(b"\n\n");
        let whole = buf.freeze();
        let data = whole.slice(id.len()..);
        let lone = (!id.is_empty()).then_some(whole);
        Event { data, mark, lone }
    }
}

/// The last event of a stream the server ends: `event: close` with the code and reason
/// a WebSocket close frame would carry.
pub fn close_event(code: u16, reason: &str) -> Event {
    let json = serde_json::json!({ "code": code, "reason": reason }).to_string();
    Event { data: Bytes::from(format!("event: close\ndata: {json}\n\n")), mark: Mark::None, lone: None }
}

/// True for the bytes that end an event (every part but an `id:` line does).
pub fn ends_event(part: &[u8]) -> bool {
    part.ends_with(b"\n\n")
}

/// Reads what a frame means for the stream's cursors and for waiting POSTs. Only the
/// frames that matter are parsed; the common live `msg` once per frame, not per receiver.
fn mark(json: &[u8]) -> Mark {
    const KINDS: [&[u8]; 9] =
        [b"msg\"", b"edit\"", b"delete\"", b"react\"", b"system\"", b"joined\"", b"history\"", b"ack\"", b"error\""];
    let Some(rest) = json.strip_prefix(br#"{"type":""#) else { return Mark::None };
    if !KINDS.iter().any(|k| rest.starts_with(k)) && !rest.starts_with(b"pong\"") {
        return Mark::None;
    }
    let Ok(h) = serde_json::from_slice::<Head>(json) else { return Mark::None };
    match (h.kind.as_str(), h.room) {
        // Edits and deletions are events with a seq of their own, like messages.
        // A moderator's `system` event has one too; presence events have none.
        ("msg" | "edit" | "delete" | "react" | "system", Some(room)) => {
            h.seq.map_or(Mark::None, |seq| Mark::msg(room, seq))
        }
        ("joined", Some(room)) => Mark::Joined { room, head: h.head.unwrap_or(0) },
        ("history", Some(room)) => {
            Mark::History { room, last: h.messages.and_then(|m| m.iter().map(|m| m.seq).max()), reset: h.reset }
        }
        ("ack" | "error", _) => Mark::Answer(Bytes::copy_from_slice(json)),
        ("pong", _) => Mark::Pong {
            t: h.t.map_or_else(|| "null".to_owned(), |t| t.get().to_owned()),
            json: Bytes::copy_from_slice(json),
        },
        _ => Mark::None,
    }
}

/// A stream's position in each room it has seen: the `id:` of its events.
#[derive(Debug, Default)]
pub struct Cursors {
    seqs: BTreeMap<String, u64>,
    /// Heads of joins whose history is not sent yet.
    heads: HashMap<String, u64>,
    /// `id: room=seq,…\n`, rebuilt when a cursor moves.
    line: Option<Bytes>,
}

impl Cursors {
    /// Starts from a resumed `Last-Event-ID`.
    pub fn resumed(rooms: &[(RoomName, u64)]) -> Cursors {
        let seqs = rooms.iter().map(|(r, s)| (r.as_str().to_owned(), *s)).collect();
        Cursors { seqs, ..Cursors::default() }
    }

    /// Moves the cursors past an event about to be queued. True when the stream's
    /// `id:` line is now the live message's own (a stream in that room alone, the
    /// common case): its [`Event::lone`] may then be queued whole.
    pub fn apply(&mut self, mark: &Mark) -> bool {
        let moved = match mark {
            Mark::Msg { room, seq, line } => {
                if !self.advance(room, *seq) {
                    return false;
                }
                // In this room alone, the cursors' line is the frame's shared one.
                let lone = self.seqs.len() == 1;
                self.line = lone.then(|| line.clone());
                return lone;
            }
            Mark::Joined { room, head } => {
                self.heads.insert(room.clone(), *head);
                false
            }
            Mark::History { room, last, reset } => {
                // History covers the room up to the joined head, even when it is empty.
                let to = self.heads.remove(room).max(*last);
                if *reset {
                    // A wiped store starts over: a cursor above the new head would
                    // have the next reconnect reset again, and skip what comes first.
                    self.seqs.insert(room.clone(), to.unwrap_or(0));
                    true
                } else {
                    to.is_some_and(|to| self.advance(room, to))
                }
            }
            _ => false,
        };
        if moved {
            self.line = None;
        }
        false
    }

    fn advance(&mut self, room: &str, seq: u64) -> bool {
        match self.seqs.get_mut(room) {
            Some(cursor) if *cursor >= seq => false,
            Some(cursor) => {
                *cursor = seq;
                true
            }
            None => {
                self.seqs.insert(room.to_owned(), seq);
                true
            }
        }
    }

    /// Drops a room the client left, so a resume does not join it again.
    pub fn forget(&mut self, room: &str) {
        if self.seqs.remove(room).is_some() {
            self.line = None;
        }
    }

    /// The `id:` line for the next event.
    pub fn id_line(&mut self) -> Bytes {
        self.line
            .get_or_insert_with(|| {
                let mut s = String::from("id: ");
                for (i, (room, seq)) in self.seqs.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(&format!("{room}={seq}"));
                }
                s.push('\n');
                Bytes::from(s)
            })
            .clone()
    }
}

/// Why a `Last-Event-ID` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadEventId {
    #[error("`{0}` is not room=seq")]
    Entry(String),
    #[error("more than {0} rooms")]
    TooManyRooms(usize),
}

/// Parses `room=seq,room2=seq` (empty: no rooms). Each room at most once.
pub fn parse_event_id(id: &str, max_rooms: usize) -> Result<Vec<(RoomName, u64)>, BadEventId> {
    let mut rooms: Vec<(RoomName, u64)> = Vec::new();
    for entry in id.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = || BadEventId::Entry(entry.chars().take(80).collect());
        let (room, seq) = entry.split_once('=').ok_or_else(bad)?;
        let room = RoomName::parse(room).ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        if rooms.iter().any(|(r, _)| *r == room) {
            return Err(bad());
        }
        rooms.push((room, seq));
        if rooms.len() > max_rooms {
            return Err(BadEventId::TooManyRooms(max_rooms));
        }
    }
    Ok(rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_frames_become_data_events_with_their_marks() {
        let f = wire::text_frame(br#"{"type":"msg","room":"lobby","seq":7,"text":"a\nb"}"#);
        let e = Event::from_frame(&f);
        assert_eq!(&e.data[..], b"data: {\"type\":\"msg\",\"room\":\"lobby\",\"seq\":7,\"text\":\"a\\nb\"}\n\n");
        assert_eq!(e.mark, Mark::msg("lobby".into(), 7));
        assert_eq!(&Event::from_frame(&wire::ping_frame()).data[..], PING);
        let close = Event::from_frame(&wire::close_frame(1008, "slow consumer"));
        assert_eq!(&close.data[..], b"event: close\ndata: {\"code\":1008,\"reason\":\"slow consumer\"}\n\n");
        let pong = Event::from_frame(&wire::text_frame(br#"{"type":"pong","t":"b-1"}"#));
        assert!(matches!(pong.mark, Mark::Pong { ref t, .. } if t == "\"b-1\""));
    }

    #[test]
    fn cursors_follow_messages_and_joins() {
        let mut c = Cursors::default();
        assert_eq!(&c.id_line()[..], b"id: \n");
        c.apply(&Mark::Joined { room: "b".into(), head: 9 });
        assert_eq!(&c.id_line()[..], b"id: \n", "the head counts only once the history is sent");
        c.apply(&Mark::History { room: "b".into(), last: Some(8), reset: false });
        assert_eq!(&c.id_line()[..], b"id: b=9\n");
        assert!(!c.apply(&Mark::msg("a".into(), 3)), "two rooms: not the message's own line");
        assert_eq!(&c.id_line()[..], b"id: a=3,b=9\n");
        assert!(!c.apply(&Mark::msg("a".into(), 2)));
        assert_eq!(&c.id_line()[..], b"id: a=3,b=9\n", "never backwards");
        c.apply(&Mark::Joined { room: "a".into(), head: 1 });
        c.apply(&Mark::History { room: "a".into(), last: Some(1), reset: true });
        assert_eq!(&c.id_line()[..], b"id: a=1,b=9\n", "a reset moves the cursor back to the new history");
        c.forget("b");
        assert_eq!(&c.id_line()[..], b"id: a=1\n");
        // A stream in one room takes the frame's line as it is: same bytes, not rebuilt.
        let e = Event::from_frame(&wire::text_frame(br#"{"type":"msg","room":"a","seq":4}"#));
        assert!(c.apply(&e.mark));
        let Mark::Msg { line, .. } = &e.mark else { unreachable!() };
        assert_eq!((c.id_line(), c.id_line().as_ptr()), (line.clone(), line.as_ptr()));
        let lone = e.lone.expect("a live message has its one-room event");
        assert_eq!(&lone[..], b"id: a=4\ndata: {\"type\":\"msg\",\"room\":\"a\",\"seq\":4}\n\n");
        assert_eq!(&lone[line.len()..], &e.data[..]);
        assert!(!c.apply(&e.mark), "seen: the cursor does not move, the line stays");
        assert_eq!(&c.id_line()[..], b"id: a=4\n");
    }

    #[test]
    fn event_ids_parse_strictly() {
        let ok = parse_event_id("lobby=4, dev.ops=0", 32).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].1, 0);
        assert!(parse_event_id("", 32).unwrap().is_empty());
        for bad in ["lobby", "lobby=x", "lob by=1", "a=1,a=2", "..=1", "a=-1", "a=99999999999999999999"] {
            assert!(parse_event_id(bad, 32).is_err(), "{bad}");
        }
        assert_eq!(parse_event_id("a=1,b=1,c=1", 2), Err(BadEventId::TooManyRooms(2)));
    }
}
