//! A client of natter's HTTP fallback inside a worker (`--transport sse`):
//! the `GET /sse` stream in place of the WebSocket, and beside it a
//! `POST /send` connection for what the client sends (its join, its probes).
//!
//! The stream is the client's ordinary [`Conn`] — socket, state, ledger —
//! and its events are counted by the very code that counts WebSocket text
//! frames ([`on_text`]), so both transports are measured alike. The POST
//! connection is a second socket in the worker's poll, under the client's
//! slot with [`POST_BIT`] set. It carries one request at a time: what the
//! client sends meanwhile waits, bounded, and goes out as one JSON array in
//! the next request, as a browser's fallback would batch. The connection is
//! kept alive unless the server says `Connection: close` (then the next POST
//! opens its own). Every answer is counted; a failed POST's messages are not
//! retried — the ledger shows them lost.

use super::{on_text, write_out, Conn, Ctx, State, Worker, CLOSE_GRACE_NS, MAX_FRAME};
use crate::sse::{self, Dechunk, Framing, Head, Item, Parsed, Parser};
use crate::stats::tally;
use crate::sys::now_ns;
use crate::ws::{Target, Upgrade};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use serde::Deserialize;
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::sync::Arc;

/// Set in the token of a client's POST connection (its stream's token is the
/// bare slot; the worker's waker is `usize::MAX`, never a slot).
pub const POST_BIT: usize = 1 << (usize::BITS - 2);
/// Most messages in one POST (natter refuses more with 413).
const MAX_BATCH: usize = 100;
/// Longest POST answer read.
const MAX_ANSWER: usize = 1 << 20;

/// The fallback side of one client.
#[derive(Debug)]
pub struct Fallback {
    slot: usize,
    parser: Parser,
    /// The stream's body is chunked: decoded through this first.
    dechunk: Option<Dechunk>,
    /// Decoded bytes of a chunked stream (reused).
    decoded: Vec<u8>,
    /// From `welcome`; nothing can be posted before it.
    session: Option<String>,
    post: Post,
}

/// The POST connection and what waits for it.
#[derive(Debug, Default)]
struct Post {
    stream: Option<TcpStream>,
    connected: bool,
    /// Request bytes the socket would not take yet.
    out: Vec<u8>,
    /// Answer bytes after the head, or of a head not complete yet.
    inbuf: Vec<u8>,
    head: Option<Head>,
    /// Messages waiting for the next request, comma-separated.
    batch: Vec<u8>,
    batched: usize,
    /// Messages in the request in flight (0: none in flight).
    in_flight: usize,
}

#[derive(Deserialize)]
struct Welcome {
    #[serde(rename = "type")]
    kind: String,
    session: Option<String>,
}

#[derive(Deserialize)]
struct Close {
    code: Option<u16>,
    #[serde(default)]
    reason: String,
}

impl Fallback {
    pub fn new(slot: usize) -> Fallback {
        Fallback {
            slot,
            parser: Parser::default(),
            dechunk: None,
            decoded: Vec::new(),
            session: None,
            post: Post::default(),
        }
    }

    /// Check the stream's response head: like a WebSocket's 101, a 200 with
    /// `text/event-stream` opens the client; events start at the offset.
    pub fn check_head(&mut self, buf: &[u8]) -> Upgrade {
        match sse::parse_head(buf) {
            Parsed::Partial => Upgrade::Partial,
            Parsed::Bad(why) => Upgrade::Refused(why),
            Parsed::Head(h) if h.status != 200 => Upgrade::Refused(h.line),
            Parsed::Head(h) if !h.event_stream => Upgrade::Refused(format!("{}: not text/event-stream", h.line)),
            Parsed::Head(h) => {
                self.dechunk = (h.framing == Framing::Chunked).then(Dechunk::default);
                Upgrade::Done(h.len)
            }
        }
    }

    /// Messages the client sent that wait or are in flight, in bytes; past
    /// [`MAX_BATCH`] messages, more than any bound.
    pub fn backlog(&self) -> usize {
        let p = &self.post;
        if p.batched >= MAX_BATCH {
            return usize::MAX;
        }
        p.batch.len() + p.out.len()
    }

    /// Send one client message (JSON) by POST: now, or with the next request.
    pub fn post(&mut self, text: &[u8], target: &Target, ctx: &mut Ctx) {
        let p = &mut self.post;
        if p.batched > 0 {
            p.batch.push(b',');
        }
        p.batch.extend_from_slice(text);
        p.batched += 1;
        self.pump(target, ctx);
    }

    /// Start a request with what is batched, unless one is in flight or the
    /// session is not known yet.
    fn pump(&mut self, target: &Target, ctx: &mut Ctx) {
        let (Some(session), p) = (&self.session, &mut self.post) else {
            return;
        };
        if p.in_flight > 0 || p.batched == 0 {
            return;
        }
        let array = p.batched > 1;
        let (open, close): (&[u8], &[u8]) = if array { (b"[", b"]") } else { (b"", b"") };
        sse::post_request(&mut p.out, target, session, &[open, &p.batch, close]);
        p.in_flight = std::mem::take(&mut p.batched);
        p.batch.clear();
        if p.stream.is_none() {
            // The writable event of the new connection sends the request.
            if let Err(why) = p.connect(target, Token(self.slot | POST_BIT), &ctx.registry) {
                p.fail(&why, ctx);
            }
        } else if p.connected {
            if let Err(e) = p.flush() {
                p.fail(&format!("post write: {}", e.kind()), ctx);
            }
        }
    }

    /// The client is gone: its POST connection too.
    pub fn close(&mut self, registry: &Registry) {
        self.post.close(registry);
    }
}

impl Post {
    fn connect(&mut self, target: &Target, token: Token, registry: &Registry) -> Result<(), String> {
        let mut s = TcpStream::connect(target.addr).map_err(|e| format!("post connect: {}", e.kind()))?;
        // A browser's requests go out at once; so do these.
        let _ = s.set_nodelay(true);
        registry
            .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("post register: {e}"))?;
        self.stream = Some(s);
        self.connected = false;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.stream.as_mut() {
            Some(s) => write_out(s, &mut self.out),
            None => Ok(()),
        }
    }

    /// The socket can be written: the connect finished (or failed).
    fn on_writable(&mut self) -> Result<(), String> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        if !self.connected {
            match s.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return Err(format!("post connect: {}", e.kind())),
            }
            if s.peer_addr().is_err() {
                return Ok(()); // not connected yet
            }
            self.connected = true;
        }
        self.flush().map_err(|e| format!("post write: {}", e.kind()))
    }

    /// Read what came; the status of an answer once it is whole.
    fn on_readable(&mut self, registry: &Registry) -> Result<Option<u16>, String> {
        let Some(s) = self.stream.as_mut() else {
            return Ok(None);
        };
        let mut buf = [0u8; 4096];
        let eof = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) if self.inbuf.len() + n > MAX_ANSWER => return Err("post answer over 1 MiB".into()),
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("post read: {}", e.kind())),
            }
        };
        if self.in_flight == 0 {
            // The server ended an idle keep-alive connection.
            if eof {
                self.close(registry);
            }
            return Ok(None);
        }
        if self.head.is_none() {
            match sse::parse_head(&self.inbuf) {
                Parsed::Partial if eof => return Err("post: eof before the answer".into()),
                Parsed::Partial => return Ok(None),
                Parsed::Bad(why) => return Err(format!("post: {why}")),
                Parsed::Head(h) => {
                    self.inbuf.drain(..h.len);
                    self.head = Some(h);
                }
            }
        }
        let h = self.head.as_ref().expect("parsed above");
        let whole = match h.framing {
            Framing::Length(n) => self.inbuf.len() >= n,
            Framing::UntilClose => eof,
            // Answers are small: decode from the start each time.
            Framing::Chunked => {
                Dechunk::default().feed(&self.inbuf, &mut Vec::new()).map_err(|w| format!("post: {w}"))?
            }
        };
        if !whole {
            return if eof { Err("post: eof inside the answer".into()) } else { Ok(None) };
        }
        let (status, close) = (h.status, h.close || eof);
        self.head = None;
        self.inbuf.clear();
        self.in_flight = 0;
        if close {
            self.close(registry);
        }
        Ok(Some(status))
    }

    /// The request in flight failed: its messages are lost, not retried.
    fn fail(&mut self, why: &str, ctx: &mut Ctx) {
        if self.in_flight > 0 {
            tally(&mut ctx.stats.dropped, why);
            ctx.stats.posts_failed += 1;
        }
        self.close(&ctx.registry);
    }

    fn close(&mut self, registry: &Registry) {
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        self.connected = false;
        self.out.clear();
        self.inbuf.clear();
        self.head = None;
        self.in_flight = 0;
    }
}

impl Worker {
    /// An event on the POST connection of the client in `slot`.
    pub(super) fn on_post_event(&mut self, slot: usize, ev: &Event) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let setup = Arc::clone(&self.ctx.setup);
        let target = &setup.targets[conn.target];
        let ctx = &mut self.ctx;
        let Some(f) = conn.fallback.as_deref_mut() else {
            return;
        };
        if ev.is_writable() || ev.is_write_closed() {
            if let Err(why) = f.post.on_writable() {
                f.post.fail(&why, ctx);
                return f.pump(target, ctx);
            }
        }
        if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
            return;
        }
        match f.post.on_readable(&ctx.registry) {
            Ok(Some(status)) => {
                if (200..300).contains(&status) {
                    ctx.stats.posts += 1;
                } else {
                    ctx.stats.posts_failed += 1;
                    tally(&mut ctx.stats.server_errors, &format!("POST {status}"));
                }
                f.pump(target, ctx);
            }
            Ok(None) => {}
            Err(why) => {
                f.post.fail(&why, ctx);
                f.pump(target, ctx);
            }
        }
    }
}

/// Hang up the stream: that is how an SSE client leaves. The server's end
/// of it (EOF) or the grace time drops the connection.
pub fn hang_up(conn: &mut Conn) {
    let _ = conn.stream.shutdown(Shutdown::Write);
    conn.state = State::Closing { deadline_ns: now_ns() + CLOSE_GRACE_NS };
}

/// Count every event in the stream's fresh `bytes`, as WebSocket text
/// frames are counted; the partial tail stays in the parser.
pub fn events(conn: &mut Conn, bytes: &[u8], arrival: u64, ctx: &mut Ctx) -> Result<(), String> {
    let f = conn.fallback.as_deref_mut().expect("fallback clients only");
    let mut parser = std::mem::take(&mut f.parser);
    let mut decoded = std::mem::take(&mut f.decoded);
    let dechunked = f.dechunk.as_mut().map(|d| {
        decoded.clear();
        // The end of a chunked stream is followed by the server's EOF.
        d.feed(bytes, &mut decoded)
    });
    let result = match dechunked {
        Some(Err(why)) => Err(violation(ctx, why)),
        Some(Ok(_)) => each_event(conn, &mut parser, &decoded, arrival, ctx),
        None => each_event(conn, &mut parser, bytes, arrival, ctx),
    };
    let f = conn.fallback.as_deref_mut().expect("fallback clients only");
    (f.parser, f.decoded) = (parser, decoded);
    result
}

fn each_event(
    conn: &mut Conn,
    parser: &mut Parser,
    mut input: &[u8],
    arrival: u64,
    ctx: &mut Ctx,
) -> Result<(), String> {
    loop {
        let item = match parser.next(&mut input, MAX_FRAME) {
            Ok(Some(item)) => item,
            Ok(None) => return Ok(()),
            Err(why) => return Err(violation(ctx, why)),
        };
        match item {
            Item::Comment => ctx.stats.pings += 1,
            Item::Event { kind: b"message", data } => {
                if conn.fallback.as_ref().is_some_and(|f| f.session.is_none()) {
                    welcome(conn, data, ctx);
                }
                on_text(conn, data, arrival, ctx);
            }
            Item::Event { kind: b"close", data } => {
                let key = match serde_json::from_slice::<Close>(data) {
                    Ok(Close { code: Some(code), reason }) => format!("{code} {reason}").trim_end().to_string(),
                    _ => "no code".into(),
                };
                tally(&mut ctx.stats.server_closes, &key);
                return Err("closed".into());
            }
            Item::Event { .. } => {}
        }
    }
}

/// An event before the session is known: if it is the welcome, it names the
/// session, and what waited to be posted (the join) goes.
fn welcome(conn: &mut Conn, data: &[u8], ctx: &mut Ctx) {
    let Ok(w) = serde_json::from_slice::<Welcome>(data) else {
        return;
    };
    if w.kind != "welcome" {
        return;
    }
    let Some(session) = w.session else {
        return tally(&mut ctx.stats.violations, "welcome without a session");
    };
    let setup = Arc::clone(&ctx.setup);
    let f = conn.fallback.as_deref_mut().expect("fallback clients only");
    f.session = Some(session);
    f.pump(&setup.targets[conn.target], ctx);
}

fn violation(ctx: &mut Ctx, why: &'static str) -> String {
    tally(&mut ctx.stats.violations, why);
    format!("violation: {why}")
}
