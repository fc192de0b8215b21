//! The client side of natter's HTTP fallback transport (docs/PROTOCOL.md,
//! "Fallback transport"), written for non-blocking sockets like [`crate::ws`]:
//! the `GET /sse` and `POST /send` requests, the check of a response head,
//! an incremental de-chunker and an incremental Server-Sent Events parser.
//!
//! Everything here is pure byte work on buffers the caller owns; no socket,
//! no clock. Bytes may arrive split anywhere: every parser keeps what it has
//! not finished and takes the rest with the next read.

use crate::ws::Target;
use std::io::Write;

/// Headers parsed in a response head.
const MAX_HEADERS: usize = 32;
/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Longest chunk-size or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

/// `GET /sse` with the query of the target's `/ws` URL (`?name=`, `?token=`).
pub fn stream_request(t: &Target) -> Vec<u8> {
    let query = t.resource.find('?').map_or("", |i| &t.resource[i..]);
    format!(
        "GET /sse{query} HTTP/1.1\r\nHost: {}:{}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
        t.host, t.port
    )
    .into_bytes()
}

/// Append a keep-alive `POST /send?session=…` to `out`, its body the
/// concatenation of `body`.
pub fn post_request(out: &mut Vec<u8>, t: &Target, session: &str, body: &[&[u8]]) {
    let _ = write!(
        out,
        "POST /send?session={session} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        t.host,
        t.port,
        body.iter().map(|b| b.len()).sum::<usize>()
    );
    for part in body {
        out.extend_from_slice(part);
    }
}

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    /// No length: the body is everything until the server closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// The status line, for refusals.
    pub line: String,
    /// Bytes of the head, blank line included: the body starts here.
    pub len: usize,
    pub framing: Framing,
    /// The server will close the connection after this response.
    pub close: bool,
    /// `Content-Type: text/event-stream`.
    pub event_stream: bool,
}

/// Outcome of looking at the bytes of a response received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Partial,
    Head(Head),
    /// Not HTTP, or a head over the size limit.
    Bad(String),
}

/// Parse the response head at the start of `buf`.
pub fn parse_head(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Bad(format!("response head over {} KiB", MAX_HEAD / 1024))
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(e) => return Parsed::Bad(format!("bad response head: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let mut head = Head {
        status,
        line: format!("HTTP/1.{} {status} {}", r.version.unwrap_or(1), r.reason.unwrap_or("")).trim_end().to_string(),
        len,
        framing: Framing::UntilClose,
        close: r.version == Some(0),
        event_stream: false,
    };
    for h in r.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        let value = value.trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) if head.framing != Framing::Chunked => head.framing = Framing::Length(n),
                Ok(_) => {}
                Err(_) => return Parsed::Bad(format!("bad Content-Length {value:?}")),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked is always the last coding; it decides the framing (RFC 9112 §6.3).
            if value.to_ascii_lowercase().ends_with("chunked") {
                head.framing = Framing::Chunked;
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            head.close |= value.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            head.event_stream = value.to_ascii_lowercase().starts_with("text/event-stream");
        }
    }
    Parsed::Head(head)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// This many data bytes of the chunk are still to come.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk, until an empty one.
    Trailer,
    Done,
}

/// An incremental decoder of a chunked body (RFC 9112 §7.1).
#[derive(Debug, Default)]
pub struct Dechunk {
    state: Chunk,
    /// A size or trailer line not yet complete.
    line: Vec<u8>,
}

impl Dechunk {
    /// Decode `input` into `out`; true once the last chunk and its trailer
    /// have been read (anything after them is not this body's).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<bool, &'static str> {
        while !input.is_empty() && self.state != Chunk::Done {
            if let Chunk::Data(left) = self.state {
                let n = left.min(input.len());
                out.extend_from_slice(&input[..n]);
                input = &input[n..];
                self.state = if n == left { Chunk::DataEnd } else { Chunk::Data(left - n) };
                continue;
            }
            let Some(end) = input.iter().position(|&b| b == b'\n') else {
                self.push_line(input)?;
                break;
            };
            self.push_line(&input[..end])?;
            input = &input[end + 1..];
            let line = std::mem::take(&mut self.line);
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            self.state = match self.state {
                Chunk::Size => match chunk_size(line)? {
                    0 => Chunk::Trailer,
                    n => Chunk::Data(n),
                },
                Chunk::DataEnd if line.is_empty() => Chunk::Size,
                Chunk::DataEnd => return Err("chunk data longer than its size"),
                Chunk::Trailer if line.is_empty() => Chunk::Done,
                other => other,
            };
        }
        Ok(self.state == Chunk::Done)
    }

    fn push_line(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        if self.line.len() + bytes.len() > MAX_CHUNK_LINE {
            return Err("chunk line too long");
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }
}

/// The hex size of a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<usize, &'static str> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = std::str::from_utf8(hex).map_err(|_| "bad chunk size")?.trim();
    usize::from_str_radix(hex, 16).map_err(|_| "bad chunk size")
}

/// One thing an event stream carried.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A dispatched event: its type (`message` when it named none) and its
    /// data lines joined by `\n`.
    Event { kind: &'a [u8], data: &'a [u8] },
    /// A comment line (`: ping`, natter's heartbeat).
    Comment,
}

/// An incremental `text/event-stream` parser (the WHATWG HTML standard's
/// "event stream interpretation"): lines end in CRLF, LF or CR; `data`
/// lines accumulate; a blank line dispatches an event that has data; `id`,
/// `retry` and unknown fields are ignored — the tester resumes nothing.
#[derive(Debug, Default)]
pub struct Parser {
    /// A line not yet complete.
    line: Vec<u8>,
    data: Vec<u8>,
    kind: Vec<u8>,
    has_data: bool,
    /// The last line ended in CR: a LF first thing next is part of it.
    skip_lf: bool,
    /// The event returned last; cleared when the next call starts.
    dispatched: bool,
}

impl Parser {
    /// The next item in `input` (consuming what it read), or None when
    /// `input` is used up; a line or event longer than `max` is an error.
    pub fn next<'s, 'b: 's>(&'s mut self, input: &mut &'b [u8], max: usize) -> Result<Option<Item<'s>>, &'static str> {
        if std::mem::take(&mut self.dispatched) {
            self.data.clear();
            self.kind.clear();
            self.has_data = false;
        }
        loop {
            let bytes: &'b [u8] = input;
            if self.skip_lf && !bytes.is_empty() {
                self.skip_lf = false;
                if bytes[0] == b'\n' {
                    *input = &bytes[1..];
                    continue;
                }
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else {
                if self.line.len() + bytes.len() > max {
                    return Err("event over the size limit");
                }
                self.line.extend_from_slice(bytes);
                *input = &[];
                return Ok(None);
            };
            if let Some(data) = self.whole_event(bytes, end, max)? {
                *input = &bytes[end + 2..];
                self.dispatched = true;
                let kind = if self.kind.is_empty() { &b"message"[..] } else { &self.kind };
                return Ok(Some(Item::Event { kind, data }));
            }
            self.skip_lf = bytes[end] == b'\r';
            let whole = &bytes[..end];
            *input = &bytes[end + 1..];
            let ready = if self.line.is_empty() {
                self.take_line(whole, max)?
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(whole);
                let ready = self.take_line(&line, max);
                line.clear();
                self.line = line;
                ready?
            };
            match ready {
                Ready::No => {}
                Ready::Comment => return Ok(Some(Item::Comment)),
                Ready::Event => {
                    self.dispatched = true;
                    let kind = if self.kind.is_empty() { &b"message"[..] } else { &self.kind };
                    return Ok(Some(Item::Event { kind, data: &self.data }));
                }
            }
        }
    }

    /// The common case without a copy: a lone `data` line whose event ends
    /// right after it (`data: …\n\n`), all of it in `bytes` (the line ends
    /// at `end`): its value, read in place.
    fn whole_event<'b>(&self, bytes: &'b [u8], end: usize, max: usize) -> Result<Option<&'b [u8]>, &'static str> {
        if !self.line.is_empty() || self.has_data || bytes[end] != b'\n' || bytes.get(end + 1) != Some(&b'\n') {
            return Ok(None);
        }
        let Some(value) = bytes[..end].strip_prefix(b"data:") else {
            return Ok(None);
        };
        if value.len() + 1 > max {
            return Err("event over the size limit");
        }
        Ok(Some(value.strip_prefix(b" ").unwrap_or(value)))
    }

    /// Interpret one whole line.
    fn take_line(&mut self, line: &[u8], max: usize) -> Result<Ready, &'static str> {
        if line.is_empty() {
            if self.has_data {
                return Ok(Ready::Event);
            }
            // An event without data is not dispatched; its type is forgotten.
            self.kind.clear();
            return Ok(Ready::No);
        }
        if line[0] == b':' {
            return Ok(Ready::Comment);
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > max {
                    return Err("event over the size limit");
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.kind.clear();
                self.kind.extend_from_slice(value);
            }
            _ => {}
        }
        Ok(Ready::No)
    }
}

enum Ready {
    No,
    Comment,
    Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything `parser` makes of `chunks` fed one after another, as
    /// (type, data) pairs and "comment".
    fn parse_all(parser: &mut Parser, chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            while let Some(item) = parser.next(&mut input, 1 << 20).unwrap() {
                out.push(match item {
                    Item::Event { kind, data } => {
                        format!("{}|{}", String::from_utf8_lossy(kind), String::from_utf8_lossy(data))
                    }
                    Item::Comment => "comment".into(),
                });
            }
            assert!(input.is_empty());
        }
        out
    }

    /// What natter sends: an `id:` line, one `data:` line, a blank line.
    const NATTER: &[u8] = b"id: \ndata: {\"type\":\"welcome\",\"session\":\"s-1\"}\n\n\
        : ping\n\n\
        id: lobby=1\ndata: {\"type\":\"msg\",\"text\":\"lt 1 2 3\"}\n\n\
        event: close\ndata: {\"code\":1008,\"reason\":\"slow consumer\"}\n\n";

    fn natter_items() -> Vec<String> {
        vec![
            r#"message|{"type":"welcome","session":"s-1"}"#.to_string(),
            "comment".into(),
            r#"message|{"type":"msg","text":"lt 1 2 3"}"#.into(),
            r#"close|{"code":1008,"reason":"slow consumer"}"#.into(),
        ]
    }

    #[test]
    fn parses_natter_events_whole_and_split_at_every_byte() {
        assert_eq!(parse_all(&mut Parser::default(), &[NATTER]), natter_items());
        for at in 0..NATTER.len() {
            let (a, b) = NATTER.split_at(at);
            assert_eq!(parse_all(&mut Parser::default(), &[a, b]), natter_items(), "split at {at}");
        }
        let bytes: Vec<&[u8]> = NATTER.chunks(1).collect();
        assert_eq!(parse_all(&mut Parser::default(), &bytes), natter_items());
    }

    #[test]
    fn joins_data_lines_and_honours_every_line_ending() {
        let crlf =
            NATTER.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect::<Vec<_>>();
        let cr = NATTER.iter().map(|&b| if b == b'\n' { b'\r' } else { b }).collect::<Vec<_>>();
        for stream in [crlf, cr] {
            for at in 0..stream.len() {
                let (a, b) = stream.split_at(at);
                assert_eq!(parse_all(&mut Parser::default(), &[a, b]), natter_items(), "split at {at}");
            }
        }
        let multi = b"data: {\"a\":\ndata:1}\nid: 7\nretry: 10\nnoise\n\ndata\n\n";
        assert_eq!(parse_all(&mut Parser::default(), &[multi]), ["message|{\"a\":\n1}", "message|"]);
    }

    #[test]
    fn skips_events_without_data_and_refuses_oversized_ones() {
        assert!(parse_all(&mut Parser::default(), &[b"event: close\nid: 1\n\n\n"]).is_empty());
        assert_eq!(parse_all(&mut Parser::default(), &[b"event: x\n\ndata: y\n\n"]), ["message|y"]);
        let mut p = Parser::default();
        let mut long: &[u8] = &[b'x'; 100];
        assert_eq!(p.next(&mut long, 64), Err("event over the size limit"));
        let mut p = Parser::default();
        let mut lines: &[u8] = b"data: 0123456789\ndata: 0123456789\ndata: 0123456789\n";
        assert_eq!(p.next(&mut lines, 30), Err("event over the size limit"));
    }

    #[test]
    fn dechunks_across_any_split() {
        let body = b"4\r\ndata\r\n17;ext=1\r\n: ping\n\ndata: {\"a\":1}\n\n\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for at in 0..body.len() {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            let first = d.feed(&body[..at], &mut out).unwrap();
            let done = d.feed(&body[at..], &mut out).unwrap();
            assert!(done && !(first && at < body.len() - 4), "split at {at}");
            assert_eq!(out, b"data: ping\n\ndata: {\"a\":1}\n\n", "split at {at}");
        }
        assert_eq!(Dechunk::default().feed(b"zz\r\n", &mut Vec::new()), Err("bad chunk size"));
        assert_eq!(Dechunk::default().feed(b"1\r\nab\r\n", &mut Vec::new()), Err("chunk data longer than its size"));
    }

    #[test]
    fn parses_response_heads() {
        let sse =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nConnection: close\r\n\r\nid: \n";
        let Parsed::Head(h) = parse_head(sse) else { panic!() };
        assert_eq!((h.status, h.framing, h.close, h.event_stream), (200, Framing::UntilClose, true, true));
        assert_eq!(&sse[h.len..], b"id: \n");
        assert_eq!(parse_head(&sse[..20]), Parsed::Partial);
        let post = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]";
        let Parsed::Head(h) = parse_head(post) else { panic!() };
        assert_eq!((h.framing, h.close, h.event_stream), (Framing::Length(2), false, false));
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let Parsed::Head(h) = parse_head(chunked) else { panic!() };
        assert_eq!((h.status, h.line.as_str(), h.framing), (404, "HTTP/1.1 404 Not Found", Framing::Chunked));
        assert!(matches!(parse_head(b"SSH-2.0-x\r\n\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), Parsed::Bad(_)));
    }

    #[test]
    fn builds_requests_from_the_websocket_url() {
        let t = Target::parse("ws://127.0.0.1:9001/ws?name=lt", false, None).unwrap();
        let get = String::from_utf8(stream_request(&t)).unwrap();
        assert!(get.starts_with("GET /sse?name=lt HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n"), "{get}");
        assert!(get.ends_with("\r\n\r\n"));
        let mut post = Vec::new();
        post_request(&mut post, &t, "s-ab", &[b"[", b"{}", b"]"]);
        let post = String::from_utf8(post).unwrap();
        assert!(post.starts_with("POST /send?session=s-ab HTTP/1.1\r\n"), "{post}");
        assert!(post.ends_with("Content-Length: 4\r\n\r\n[{}]"), "{post}");
    }
}
