//! permessage-deflate against the real server: what the handshake answers (offered,
//! not offered, bad parameters, `--no-deflate`), a compressed broadcast to a room
//! where one member negotiated it and one did not, compressed history, compressed
//! client messages, and a decompression bomb (close 1009).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

use common::{TestServer, WAIT};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameSocket};

/// A client speaking frames itself, so it can offer permessage-deflate and see each
/// frame's RSV1 (tungstenite's own client refuses compressed frames).
struct Deflating {
    socket: FrameSocket<TcpStream>,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    extensions: Option<String>,
    /// The client's compressor (it keeps its context, as browsers do).
    compress: Compress,
}

/// What one server frame was.
struct Got {
    compressed: bool,
    json: Value,
    /// Its bytes on the wire (header and payload).
    wire_len: usize,
}

impl Deflating {
    fn connect(addr: SocketAddr, path: &str, offer: Option<&str>) -> Deflating {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let ext = offer.map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).unwrap_or_default();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        )
        .unwrap();
        // Read the response head byte by byte: nothing after it may be consumed here.
        let mut reader = BufReader::with_capacity(1, stream.try_clone().unwrap());
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 101"), "{status}");
        let mut extensions = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("sec-websocket-extensions") {
                    extensions = Some(v.trim().to_owned());
                }
            }
        }
        Deflating {
            socket: FrameSocket::new(stream),
            extensions,
            compress: Compress::new(Compression::default(), false),
        }
    }

    /// The next text frame, inflated if it came compressed (pings are skipped).
    fn recv(&mut self) -> Got {
        loop {
            let frame = self.socket.read(None).expect("read a frame").expect("a frame, not the end");
            let wire_len = frame.len();
            let compressed = frame.header().rsv1;
            match frame.header().opcode {
                OpCode::Data(Data::Text) => {}
                OpCode::Control(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
            assert!(frame.header().is_final, "natter never fragments");
            let payload = if compressed { inflate(frame.payload()) } else { frame.payload().to_vec() };
            let json = serde_json::from_slice(&payload).expect("JSON");
            return Got { compressed, json, wire_len };
        }
    }

    fn expect(&mut self, kind: &str) -> Got {
        loop {
            let got = self.recv();
            if got.json["type"] == kind {
                return got;
            }
        }
    }

    /// Sends a text message, compressed or not.
    fn send(&mut self, v: &Value, compressed: bool) {
        let text = v.to_string();
        let payload = if compressed { deflate(&mut self.compress, text.as_bytes()) } else { text.into_bytes() };
        self.send_frame(payload, compressed);
    }

    fn send_frame(&mut self, payload: Vec<u8>, compressed: bool) {
        let mut frame = Frame::message(payload, OpCode::Data(Data::Text), true);
        frame.header_mut().rsv1 = compressed;
        frame.header_mut().mask = Some([7, 1, 8, 2]);
        self.socket.send(frame).expect("send");
    }

    /// Reads until the server's close frame; returns its code.
    fn expect_close(&mut self) -> u16 {
        loop {
            let frame = self.socket.read(None).expect("read").expect("a close frame before the end");
            if frame.header().opcode == OpCode::Control(tungstenite::protocol::frame::coding::Control::Close) {
                let p = frame.payload();
                return u16::from_be_bytes([p[0], p[1]]);
            }
        }
    }
}

fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let start = c.total_in();
    loop {
        let done = (c.total_in() - start) as usize;
        c.compress_vec(&data[done..], &mut out, FlushCompress::Sync).unwrap();
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A server message: compressed on its own (server_no_context_takeover), so a fresh
/// inflater reads it.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(data.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).expect("valid deflate data");
    assert_eq!(d.total_in() as usize, input.len(), "all input read");
    out
}

fn path(name: &str) -> String {
    format!("/ws?name={name}")
}

fn chatty(i: usize) -> String {
    format!("message {i}: the rain in Spain stays mainly in the plain, and the plain stays mainly in the rain")
}

#[test]
fn the_handshake_answers_an_offer_and_declines_a_bad_one() {
    let server = TestServer::start();
    let chrome = Deflating::connect(server.ws, &path("a"), Some("permessage-deflate; client_max_window_bits"));
    assert_eq!(
        chrome.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=11")
    );
    let takeover_off = Deflating::connect(
        server.ws,
        &path("b"),
        Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10"),
    );
    assert_eq!(
        takeover_off.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10")
    );
    let mut plain = Deflating::connect(server.ws, &path("c"), None);
    assert_eq!(plain.extensions, None, "not offered: not answered");
    assert!(!plain.recv().compressed);
    // Bad parameters: declined, and the connection goes on uncompressed.
    let mut bad = Deflating::connect(server.ws, &path("d"), Some("permessage-deflate; client_max_window_bits=99"));
    assert_eq!(bad.extensions, None);
    let unknown = Deflating::connect(server.ws, &path("e"), Some("permessage-deflate; x_unknown_parameter"));
    assert_eq!(unknown.extensions, None, "an unknown parameter: declined");
    let welcome = bad.recv();
    assert_eq!(welcome.json["type"], "welcome");
    bad.send(&json!({"type": "join", "room": "r"}), false);
    assert!(!bad.expect("joined").compressed);
}

#[test]
fn no_deflate_turns_it_off() {
    let server = TestServer::start_with(|c| c.deflate = false);
    let mut c = Deflating::connect(server.ws, &path("a"), Some("permessage-deflate"));
    assert_eq!(c.extensions, None);
    c.send(&json!({"type": "join", "room": "r"}), false);
    c.expect("joined");
    c.send(&json!({"type": "msg", "room": "r", "text": chatty(1), "id": "m1"}), false);
    assert!(!c.expect("msg").compressed);
}

#[test]
fn a_broadcast_is_compressed_for_members_that_negotiated_it_and_plain_for_others() {
    let server = TestServer::start();
    let mut z = Deflating::connect(server.ws, &path("zed"), Some("permessage-deflate"));
    let mut z2 = Deflating::connect(server.ws, &path("zoe"), Some("permessage-deflate; client_max_window_bits"));
    let mut plain = server.connect("pat");
    for c in [&mut z, &mut z2] {
        c.send(&json!({"type": "join", "room": "mixed"}), false);
        c.expect("history");
    }
    plain.join("mixed", None);

    // From the plain member: the deflating members get it compressed, byte for byte the
    // same frame, and it says what the plain member got.
    plain.send(json!({"type": "msg", "room": "mixed", "text": chatty(1), "id": "p1"}));
    let plain_got = plain.next_of("msg");
    let a = z.expect("msg");
    let b = z2.expect("msg");
    assert!(a.compressed && b.compressed, "compressed for both deflating members");
    assert_eq!(a.json, plain_got);
    assert_eq!(b.json, plain_got);
    assert_eq!(a.wire_len, b.wire_len);
    let plain_len = serde_json::to_vec(&plain_got).unwrap().len();
    assert!(a.wire_len < plain_len, "{} on the wire against {plain_len} plain", a.wire_len);

    // From a deflating member, compressed (inbound), twice so the second refers back
    // into the first (the client keeps its context): everyone reads it.
    for (i, id) in [(2, "z2"), (3, "z3")] {
        z.send(&json!({"type": "msg", "room": "mixed", "text": chatty(i), "id": id}), true);
        assert_eq!(plain.next_of("msg")["text"], chatty(i));
        assert_eq!(z2.expect("msg").json["text"], chatty(i));
        let echo = z.expect("msg");
        assert_eq!(echo.json["text"], chatty(i));
    }

    // A join's history page is compressed too.
    let mut late = Deflating::connect(server.ws, &path("late"), Some("permessage-deflate"));
    late.send(&json!({"type": "join", "room": "mixed"}), true);
    let history = late.expect("history");
    assert!(history.compressed);
    assert_eq!(history.json["messages"].as_array().unwrap().len(), 3);
}

#[test]
fn a_decompression_bomb_is_closed_with_1009() {
    let server = TestServer::start_with(|c| c.max_frame_bytes = 16 * 1024);
    let mut c = Deflating::connect(server.ws, &path("bomber"), Some("permessage-deflate"));
    c.recv();
    // 10 MB of one repeated JSON message, a few KB compressed: far under the frame limit
    // on the wire, far over it inflated.
    let bomb = format!(r#"{{"type":"msg","room":"r","text":"{}"}}"#, "a".repeat(10 << 20));
    let z = deflate(&mut Compress::new(Compression::best(), false), bomb.as_bytes());
    assert!(z.len() < 16 * 1024);
    c.send_frame(z, true);
    assert_eq!(c.expect_close(), u16::from(CloseCode::Size));
    server.wait_metric(r#"natter_closes_total{reason="too_big"}"#, 1);
}

#[test]
fn the_conformance_echo_sends_each_message_back_through_the_same_deflate() {
    let server = TestServer::start_with(|c| c.autobahn_echo = true);
    let mut c = Deflating::connect(server.ws, "/echo", Some("permessage-deflate"));
    assert!(c.extensions.is_some(), "the echo negotiates as /ws does");
    let m = json!({"text": chatty(1)});
    c.send(&m, true);
    let back = c.recv();
    assert!(back.compressed, "sent back compressed");
    assert_eq!(back.json, m, "no welcome first, nothing but the echo");
    c.send(&json!({"short": 1}), false);
    let back = c.recv();
    assert!(!back.compressed, "too short to compress");
    assert_eq!(back.json, json!({"short": 1}));

    let off = TestServer::start();
    let mut stream = TcpStream::connect(off.ws).unwrap();
    write!(
        stream,
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 404"), "no echo without --autobahn-echo: {status}");
}
