//! The `bytes` scenario: bytes on the wire per delivered message, with and without
//! permessage-deflate, for what users pay for: live messages of realistic chat text,
//! a join's history page and a resume of many messages. natter's protocol only.
//!
//! A few blocking clients on one thread, in a room of the run's own: senders post
//! `--bytes-messages` messages of varied sentences (one at a time, each acked), two
//! receivers (one that offered permessage-deflate, one that did not) count the bytes
//! of every frame that carries one (header included); then a plain and a deflating
//! client each join without `since` (the join's history) and with `since` the last
//! `--bytes-resume` messages back (a resume), and count the bytes of the `history`
//! frames against the messages in them. Bounded: every read has a timeout, and the
//! whole run the tester's `--max-seconds`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::ws::{self, Decoded, Target, Upgrade};

/// Longest wait for any one frame.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame a client accepts (natter's history pages are at most its frame limit).
const MAX_FRAME: usize = 16 << 20;

/// One row: bytes per delivered message, plain and compressed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub case: String,
    pub messages: u64,
    pub plain: f64,
    pub deflate: f64,
}

impl Row {
    fn new(case: &str, messages: u64, plain: (u64, u64), deflate: (u64, u64)) -> Row {
        let per = |(bytes, n): (u64, u64)| if n == 0 { 0.0 } else { bytes as f64 / n as f64 };
        Row { case: case.into(), messages, plain: per(plain), deflate: per(deflate) }
    }

    /// Compressed over plain.
    pub fn ratio(&self) -> f64 {
        if self.plain > 0.0 {
            self.deflate / self.plain
        } else {
            0.0
        }
    }
}

/// A blocking natter client that counts what it reads.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    deflate: bool,
    inflate: ws::Inflate,
    mask: u32,
}

impl Client {
    fn connect(target: &Target, deflate: bool) -> Result<Client, String> {
        if target.tls.is_some() {
            return Err("bytes: ws:// targets only".into());
        }
        let mut stream = TcpStream::connect(target.addr).map_err(|e| format!("connect: {e}"))?;
        stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (request, accept) = target.upgrade_request(deflate);
        stream.write_all(&request).map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let offset = loop {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err("handshake: closed".into());
            }
            buf.extend_from_slice(&chunk[..n]);
            match ws::check_upgrade(&buf, &accept) {
                Upgrade::Partial => continue,
                Upgrade::Done(at) => break at,
                Upgrade::Refused(why) => return Err(format!("handshake refused: {why}")),
            }
        };
        let head = String::from_utf8_lossy(&buf[..offset]).to_ascii_lowercase();
        if deflate && !head.contains("permessage-deflate") {
            return Err("the server did not accept permessage-deflate".into());
        }
        buf.drain(..offset);
        let mut c = Client { stream, buf, deflate, inflate: ws::Inflate::default(), mask: 0x9e37_79b9 };
        let welcome = c.next()?.0;
        if welcome["type"] != "welcome" {
            return Err(format!("expected welcome, got {welcome}"));
        }
        Ok(c)
    }

    /// The next text frame as JSON, and its bytes on the wire (pings answered).
    fn next(&mut self) -> Result<(Value, u64), String> {
        loop {
            let step = match ws::decode(&self.buf, MAX_FRAME, self.deflate) {
                Decoded::Partial => None,
                Decoded::Violation(why) => return Err(format!("violation: {why}")),
                Decoded::Frame(f, used) => {
                    let payload =
                        if f.compressed { self.inflate.message(f.payload, MAX_FRAME)? } else { f.payload.to_vec() };
                    Some((f.opcode, f.fin, payload, used))
                }
            };
            let Some((opcode, fin, payload, used)) = step else {
                let mut chunk = [0u8; 64 * 1024];
                let n = self.stream.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed by the server".into());
                }
                self.buf.extend_from_slice(&chunk[..n]);
                continue;
            };
            self.buf.drain(..used);
            match opcode {
                ws::OP_TEXT if fin => {
                    let v = serde_json::from_slice(&payload).map_err(|e| format!("bad JSON: {e}"))?;
                    return Ok((v, used as u64));
                }
                ws::OP_PING => self.send_frame(ws::OP_PONG, &payload)?,
                ws::OP_CLOSE => return Err("closed by the server".into()),
                ws::OP_TEXT => return Err("natter never fragments".into()),
                _ => {}
            }
        }
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        self.mask = self.mask.rotate_left(7).wrapping_mul(0x2545_f491);
        let mut out = Vec::with_capacity(payload.len() + 14);
        ws::encode_masked(&mut out, opcode, payload, self.mask.to_be_bytes());
        self.stream.write_all(&out).map_err(|e| format!("write: {e}"))
    }

    fn send(&mut self, v: &Value) -> Result<(), String> {
        self.send_frame(ws::OP_TEXT, v.to_string().as_bytes())
    }

    /// Joins `room` (from `since`), returning the `history` frames' bytes and messages.
    fn join(&mut self, room: &str, since: Option<u64>) -> Result<(u64, u64), String> {
        let mut m = json!({"type": "join", "room": room});
        if let Some(s) = since {
            m["since"] = json!(s);
        }
        self.send(&m)?;
        let (mut bytes, mut messages) = (0, 0);
        loop {
            let (v, len) = self.next()?;
            match v["type"].as_str() {
                Some("history") => {
                    bytes += len;
                    messages += v["messages"].as_array().map_or(0, |a| a.len() as u64);
                    if v["more"] != true {
                        return Ok((bytes, messages));
                    }
                }
                Some("error") => return Err(format!("join refused: {v}")),
                _ => {}
            }
        }
    }

    /// Reads until the message with id `last`; returns the bytes and count of `msg` frames.
    fn drain_until(&mut self, last: &str) -> Result<(u64, u64), String> {
        let (mut bytes, mut messages) = (0, 0);
        loop {
            let (v, len) = self.next()?;
            if v["type"] == "msg" {
                bytes += len;
                messages += 1;
                if v["id"] == last {
                    return Ok((bytes, messages));
                }
            }
        }
    }
}

/// Varied chat text: sentences of different shapes and lengths from a small
/// vocabulary, as people write them (not one repeated string).
pub struct Chatter(u64);

const OPENERS: &[&str] = &[
    "hey",
    "ok so",
    "honestly",
    "wait",
    "lol",
    "morning all",
    "quick question:",
    "fyi",
    "btw",
    "hmm",
    "right,",
    "good news:",
    "update:",
    "agreed,",
    "no worries,",
];
const SUBJECTS: &[&str] = &[
    "the build",
    "my laptop",
    "the deploy",
    "our standup",
    "the coffee machine",
    "that PR",
    "the new intern",
    "the staging server",
    "the release",
    "the meeting",
    "this weather",
    "the design review",
    "the client",
    "the database",
    "lunch",
];
const VERBS: &[&str] = &[
    "is broken again",
    "looks fine to me",
    "got moved to thursday",
    "needs another review",
    "was merged an hour ago",
    "keeps timing out",
    "is way faster now",
    "crashed twice this morning",
    "should be ready by friday",
    "went surprisingly well",
    "is blocked on legal",
    "made everyone late",
    "passed all the tests",
];
const TAILS: &[&str] = &[
    "",
    "",
    "",
    " :)",
    " !!",
    " — can someone take a look?",
    ", not sure why",
    " so we can ship it",
    " again",
    " if that helps",
    ", will check after lunch",
    " 🎉",
    " (see the ticket)",
    ", thanks everyone",
    " but I might be wrong",
];

impl Chatter {
    pub fn new(seed: u64) -> Chatter {
        Chatter(seed | 1)
    }

    /// xorshift64.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[(self.next() % list.len() as u64) as usize]
    }

    /// One chat line: one to three sentences.
    pub fn line(&mut self) -> String {
        let sentences = [1, 1, 2, 3][(self.next() % 4) as usize];
        let mut s = String::new();
        for i in 0..sentences {
            if i > 0 {
                s.push(' ');
            }
            let opener = self.pick(OPENERS);
            let (subject, verb, tail) = (self.pick(SUBJECTS), self.pick(VERBS), self.pick(TAILS));
            s.push_str(&format!("{opener} {subject} {verb}{tail}"));
        }
        s
    }
}

/// Runs the scenario against `target`: `messages` live messages from `senders`
/// clients, then a join's history and a resume of `resume` messages.
pub fn run(target: &Target, room: &str, messages: u64, senders: usize, resume: u64) -> Result<Vec<Row>, String> {
    let mut plain_rx = Client::connect(target, false)?;
    let mut deflate_rx = Client::connect(target, true)?;
    plain_rx.join(room, None)?;
    deflate_rx.join(room, None)?;
    let mut senders = (0..senders.max(1)).map(|_| Client::connect(target, false)).collect::<Result<Vec<_>, _>>()?;
    for s in &mut senders {
        s.join(room, None)?;
    }
    let mut chatter = Chatter::new(0x5eed_1234_abcd_ef01);
    let mut last_seq = 0;
    let mut last_id = String::new();
    for i in 0..messages {
        let n = senders.len();
        let sender = &mut senders[i as usize % n];
        let id = format!("b{i}");
        let msg = json!({"type": "msg", "room": room, "text": chatter.line(), "id": id});
        loop {
            sender.send(&msg)?;
            let (ack, _) = loop {
                let (v, len) = sender.next()?;
                if (v["type"] == "ack" && v["id"] == id.as_str()) || v["type"] == "error" {
                    break (v, len);
                }
            };
            if ack["type"] == "ack" {
                last_seq = ack["seq"].as_u64().unwrap_or(last_seq);
                break;
            }
            if ack["code"] != "rate_limited" {
                return Err(format!("post refused: {ack}"));
            }
            // The server's per-connection rate limit: wait for a token.
            std::thread::sleep(Duration::from_millis(60));
        }
        last_id = id;
    }
    let live_plain = plain_rx.drain_until(&last_id)?;
    let live_deflate = deflate_rx.drain_until(&last_id)?;
    let mut rows = vec![Row::new("live messages", live_plain.1, live_plain, live_deflate)];

    let hist_plain = Client::connect(target, false)?.join(room, None)?;
    let hist_deflate = Client::connect(target, true)?.join(room, None)?;
    rows.push(Row::new("join history", hist_plain.1, hist_plain, hist_deflate));

    let since = last_seq.saturating_sub(resume);
    let res_plain = Client::connect(target, false)?.join(room, Some(since))?;
    let res_deflate = Client::connect(target, true)?.join(room, Some(since))?;
    rows.push(Row::new("resume", res_plain.1, res_plain, res_deflate));
    for r in &rows {
        if r.messages == 0 {
            return Err(format!("{}: no messages delivered", r.case));
        }
    }
    Ok(rows)
}

/// The rows as a small table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from("bytes on the wire per delivered message (frame header included)\n");
    s.push_str(&format!("{:<16} {:>9} {:>10} {:>10} {:>9}\n", "case", "messages", "plain", "deflate", "ratio"));
    for r in rows {
        s.push_str(&format!(
            "{:<16} {:>9} {:>10.1} {:>10.1} {:>9.3}\n",
            r.case,
            r.messages,
            r.plain,
            r.deflate,
            r.ratio()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatter_varies() {
        let mut c = Chatter::new(1);
        let lines: std::collections::HashSet<String> = (0..200).map(|_| c.line()).collect();
        assert!(lines.len() > 150, "mostly different lines: {}", lines.len());
        let r = Row::new("x", 10, (1000, 10), (250, 10));
        assert_eq!((r.plain, r.deflate, r.ratio()), (100.0, 25.0, 0.25));
    }
}
