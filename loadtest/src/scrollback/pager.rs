//! One pager: a blocking tungstenite client on a thread of its own. It joins the room,
//! then, while the run's phase says so, asks `history {before, limit}` on its schedule,
//! times each answer from the request to the last frame of it, and checks it with its
//! [`Walk`]. Between requests, and whenever the phase is idle, it reads and drops what
//! the room sends (live messages, presence), so the server never sees it stop reading.
//!
//! Never shares its socket; it tells the coordinator only through [`Shared`].

use super::walk::Walk;
use super::{Phase, Shared};
use serde::Deserialize;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// Read timeout: how soon an idle pager sees the phase change.
const POLL: Duration = Duration::from_millis(250);
/// Connect, handshake and join each get this long.
const SETUP_LIMIT: Duration = Duration::from_secs(30);
/// An answer that takes longer is counted as missing, and the pager stops.
pub const ANSWER_LIMIT: Duration = Duration::from_secs(10);

type Socket = WebSocket<TcpStream>;

/// What one pager is told.
pub struct Conf {
    pub url: String,
    pub addr: SocketAddr,
    pub room: String,
    /// This pager's number of `count`: where in the room it starts, and when.
    pub index: u32,
    pub count: u32,
    /// Between two requests (None: the next as soon as an answer is in).
    pub interval: Option<Duration>,
    /// Page sizes, used in turn.
    pub limits: Vec<usize>,
}

/// One page's answer, as the coordinator records it.
pub enum Outcome {
    /// Answered in `took`: how many messages, and the walk's verdict.
    Page { took: Duration, messages: usize, fault: Option<&'static str>, walk_done: bool },
    /// An `error` frame answered the request (its code), or no answer came.
    Failed(String),
}

/// The fields of a server frame a pager looks at.
#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: String,
    room: Option<String>,
    head: Option<u64>,
    before: Option<u64>,
    #[serde(default)]
    messages: Vec<Seq>,
    #[serde(default)]
    complete: bool,
    #[serde(default)]
    more: bool,
    code: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
}

#[derive(Deserialize)]
struct Seq {
    seq: u64,
}

/// The pager's thread: set up, then follow the phase until it says stop.
pub fn run(conf: &Conf, shared: &Shared) {
    let (mut ws, head) = match connect(conf).and_then(|mut ws| join(&mut ws, &conf.room).map(|head| (ws, head))) {
        Ok(x) => x,
        Err(why) => return shared.setup_failed(why),
    };
    shared.joined();
    // Pagers start spread over the room, the first at its newest message: people
    // scroll back from where they are, not all from the same page.
    let span = head * u64::from(conf.index) / u64::from(conf.count.max(1));
    let mut walk = Walk::new(head + 1 - span);
    let mut due: Option<Instant> = None;
    let mut turn = 0;
    loop {
        let phase = shared.phase();
        if phase == Phase::Stop {
            let _ = ws.close(None);
            let _ = ws.flush();
            return;
        }
        if phase == Phase::Idle || walk.done() {
            due = None;
            if let Err(why) = drop_what_comes(&mut ws) {
                return shared.lost(why);
            }
            continue;
        }
        let now = Instant::now();
        let next = *due.get_or_insert_with(|| now + first_offset(conf));
        if now < next {
            // Until then, read what the room sends.
            if let Err(why) = drop_what_comes(&mut ws) {
                return shared.lost(why);
            }
            continue;
        }
        due = Some(conf.interval.map_or(now, |i| (next + i).max(now)));
        let limit = conf.limits[turn % conf.limits.len()];
        turn += 1;
        let busy = shared.busy();
        let outcome = match page(&mut ws, &conf.room, walk.before(), limit) {
            Ok(Ok((took, seqs, complete))) => {
                let fault = walk.page(limit, &seqs, complete).err().map(|f| f.name());
                Outcome::Page { took, messages: seqs.len(), fault, walk_done: walk.done() }
            }
            Ok(Err(code)) => Outcome::Failed(code),
            Err(why) => return shared.lost(why),
        };
        shared.record(outcome);
        drop(busy);
    }
}

/// Spread the pagers' first requests over one interval, so they do not ask in step.
fn first_offset(conf: &Conf) -> Duration {
    conf.interval.map_or(Duration::ZERO, |i| i * conf.index / conf.count.max(1))
}

fn connect(conf: &Conf) -> Result<Socket, String> {
    let stream = TcpStream::connect_timeout(&conf.addr, SETUP_LIMIT).map_err(|e| format!("connect: {}", e.kind()))?;
    stream.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    stream.set_read_timeout(Some(SETUP_LIMIT)).map_err(|e| format!("timeout: {e}"))?;
    let (ws, _) = tungstenite::client(conf.url.as_str(), stream).map_err(|e| format!("handshake: {e}"))?;
    ws.get_ref().set_read_timeout(Some(POLL)).map_err(|e| format!("timeout: {e}"))?;
    Ok(ws)
}

/// Join `room`; its `head` once the server answered `joined`.
fn join(ws: &mut Socket, room: &str) -> Result<u64, String> {
    let join = serde_json::json!({ "type": "join", "room": room }).to_string();
    ws.send(Message::text(join)).map_err(|e| format!("join: {e}"))?;
    let until = Instant::now() + SETUP_LIMIT;
    while Instant::now() < until {
        let Some(text) = read_text(ws)? else { continue };
        match serde_json::from_str::<Frame>(&text) {
            Ok(f) if f.kind == "joined" && f.room.as_deref() == Some(room) => return Ok(f.head.unwrap_or(0)),
            Ok(f) if f.kind == "error" => return Err(format!("join: error {}", f.code.unwrap_or_default())),
            _ => {}
        }
    }
    Err("join: no `joined` within 30 s".into())
}

/// A page: (time to its last frame, its seqs in order, complete), or the code of the
/// `error` that answered the request.
type Answer = Result<(Duration, Vec<u64>, bool), String>;

/// Ask one page and read its answer. Err: the connection is of no further use.
fn page(ws: &mut Socket, room: &str, before: u64, limit: usize) -> Result<Answer, String> {
    let ask = serde_json::json!({ "type": "history", "room": room, "before": before, "limit": limit }).to_string();
    let t0 = Instant::now();
    ws.send(Message::text(ask)).map_err(|e| format!("send: {e}"))?;
    let mut seqs = Vec::with_capacity(limit);
    while t0.elapsed() < ANSWER_LIMIT {
        let Some(text) = read_text(ws)? else { continue };
        let took = t0.elapsed();
        let Ok(f) = serde_json::from_str::<Frame>(&text) else { continue };
        match f.kind.as_str() {
            "history" if f.before == Some(before) && f.room.as_deref() == Some(room) => {
                seqs.extend(f.messages.iter().map(|m| m.seq));
                if !f.more {
                    return Ok(Ok((took, seqs, f.complete)));
                }
            }
            "error" if f.reference.as_deref() == Some("history") => {
                return Ok(Err(f.code.unwrap_or_else(|| "error without code".into())))
            }
            _ => {}
        }
    }
    Err("no answer within 10 s".into())
}

/// Read for at most [`POLL`] and drop what came.
fn drop_what_comes(ws: &mut Socket) -> Result<(), String> {
    read_text(ws).map(drop)
}

/// The next text message, or None when [`POLL`] passed without one (other messages are
/// handled by tungstenite: pings answered, pongs dropped). Err: the connection ended.
fn read_text(ws: &mut Socket) -> Result<Option<String>, String> {
    match ws.read() {
        Ok(Message::Text(t)) => Ok(Some(t.as_str().to_owned())),
        Ok(Message::Close(c)) => {
            Err(format!("closed by the server: {}", c.map_or("no code".into(), |c| c.to_string())))
        }
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(e)) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
        Err(e) => Err(format!("read: {e}")),
    }
}
