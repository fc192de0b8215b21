//! The client side of RFC 6455, written for non-blocking sockets: the
//! target URL, the HTTP Upgrade request and the check of its response, and
//! frame encoding (always masked, as a client must) and decoding.
//!
//! Everything here is pure byte work on buffers the caller owns; no socket,
//! no clock (a `wss://` target only carries its TLS side, which `tls`
//! drives). tungstenite supplies the key derivation so the accept check is
//! the one its server side uses.

use crate::tls;
use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed `ws://` or `wss://host:port/path?query` target.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub resource: String,
    pub addr: SocketAddr,
    /// `wss://`: the certificate check for this host.
    pub tls: Option<tls::Client>,
}

impl Target {
    /// Parse and resolve a URL. `wss://` needs `ca` (`--ca`), and `ca` needs
    /// `wss://`; non-loopback addresses are refused unless `allow_remote`.
    pub fn parse(url: &str, allow_remote: bool, ca: Option<&tls::Ca>) -> Result<Target, String> {
        let (rest, secure) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(format!("{url}: only ws:// and wss:// URLs are supported")),
        };
        let (authority, resource) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| format!("{url}: bad port {p:?}"))?)
            }
            _ => (authority, if secure { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let addr = (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .map_err(|e| format!("{url}: cannot resolve: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        if !allow_remote && !addr.ip().is_loopback() {
            return Err(format!("{url}: {} is not a loopback address (use --allow-remote)", addr.ip()));
        }
        let tls = match (secure, ca) {
            (true, Some(ca)) => Some(ca.client(host)?),
            (true, None) => return Err(format!("{url}: wss:// needs --ca FILE, the CA its certificate must chain to")),
            (false, Some(_)) => return Err(format!("{url}: --ca is for wss:// URLs; this one is plain ws://")),
            (false, None) => None,
        };
        Ok(Target { host: host.to_string(), port, resource, addr, tls })
    }

    /// The Upgrade request for this target and the key whose accept value
    /// the response must carry. With `deflate`, it offers permessage-deflate
    /// as browsers do (the client itself sends uncompressed frames, which the
    /// RFC allows; it inflates what the server compresses).
    pub fn upgrade_request(&self, deflate: bool) -> (Vec<u8>, String) {
        let key = tungstenite::handshake::client::generate_key();
        let offer = if deflate { DEFLATE_OFFER } else { "" };
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            self.resource, self.host, self.port
        );
        (req.into_bytes(), tungstenite::handshake::derive_accept_key(key.as_bytes()))
    }
}

/// The permessage-deflate offer: the client keeps no context (it sends
/// plain frames), and lets the server keep none either if it wishes.
pub const DEFLATE_OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n";

/// Inflates what a server compressed with permessage-deflate. Servers that
/// answer `server_no_context_takeover` (natter) compress each message on its
/// own; one inflater per worker thread, reset per message, reads them all.
pub struct Inflate(flate2::Decompress);

impl Default for Inflate {
    fn default() -> Self {
        Inflate(flate2::Decompress::new(false))
    }
}

impl Inflate {
    /// The payload of one compressed message (its frames joined), inflated
    /// up to `max` bytes.
    pub fn message(&mut self, data: &[u8], max: usize) -> Result<Vec<u8>, String> {
        let d = &mut self.0;
        d.reset(false);
        let input = [data, &[0, 0, 0xff, 0xff]].concat();
        let mut out = Vec::with_capacity((data.len() * 4).max(256).min(max + 1));
        loop {
            let consumed = d.total_in() as usize;
            d.decompress_vec(&input[consumed..], &mut out, flate2::FlushDecompress::Sync)
                .map_err(|e| format!("bad compressed data: {e}"))?;
            if out.len() > max {
                return Err("inflated message over the size limit".into());
            }
            if d.total_in() as usize == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().min(max + 1 - out.len()).max(1));
        }
    }
}

/// Outcome of looking at the bytes received so far during the handshake.
#[derive(Debug, PartialEq)]
pub enum Upgrade {
    /// The header block is not complete yet.
    Partial,
    /// 101 with the right accept key; frames start at this offset.
    Done(usize),
    /// Refused or malformed: the status line or the reason.
    Refused(String),
}

/// Check an HTTP response to the Upgrade request.
pub fn check_upgrade(buf: &[u8], expected_accept: &str) -> Upgrade {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 16 * 1024 {
            Upgrade::Refused("response header over 16 KiB".into())
        } else {
            Upgrade::Partial
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("101") {
        return Upgrade::Refused(status.to_string());
    }
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim());
    match accept {
        Some(a) if a == expected_accept => Upgrade::Done(end + 4),
        Some(a) => Upgrade::Refused(format!("wrong Sec-WebSocket-Accept {a:?}")),
        None => Upgrade::Refused("no Sec-WebSocket-Accept".into()),
    }
}

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Append one final, masked client frame to `out`.
pub fn encode_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

/// One frame read from the server.
#[derive(Debug, PartialEq)]
pub struct Frame<'a> {
    pub fin: bool,
    /// RSV1: the message is compressed (permessage-deflate).
    pub compressed: bool,
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// Result of decoding at the start of a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded<'a> {
    /// Not enough bytes for a whole frame yet.
    Partial,
    /// A frame and the number of bytes it took.
    Frame(Frame<'a>, usize),
    /// A protocol violation by the server (masked frame, reserved bits,
    /// oversized control frame, frame over the limit).
    Violation(&'static str),
}

/// Decode the frame at the start of `buf`. Server frames must be unmasked;
/// RSV1 is allowed when permessage-deflate was offered (`deflate`).
pub fn decode(buf: &[u8], max_payload: usize, deflate: bool) -> Decoded<'_> {
    if buf.len() < 2 {
        return Decoded::Partial;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let reserved = if deflate { 0x30 } else { 0x70 };
    if b0 & reserved != 0 {
        return Decoded::Violation("reserved bits set");
    }
    if b1 & 0x80 != 0 {
        return Decoded::Violation("masked frame from server");
    }
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    let (len, header) = match b1 & 0x7F {
        126 if buf.len() < 4 => return Decoded::Partial,
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() < 10 => return Decoded::Partial,
        127 => (u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")), 10),
        n => (n as u64, 2),
    };
    let compressed = b0 & 0x40 != 0;
    if compressed && !matches!(opcode, OP_TEXT | OP_BINARY) {
        return Decoded::Violation("RSV1 on a control or continuation frame");
    }
    if opcode >= 0x8 && (len > 125 || !fin) {
        return Decoded::Violation("bad control frame");
    }
    if matches!(opcode, 0x3..=0x7 | 0xB..=0xF) {
        return Decoded::Violation("unknown opcode");
    }
    if len > max_payload as u64 {
        return Decoded::Violation("frame over the size limit");
    }
    let total = header + len as usize;
    if buf.len() < total {
        return Decoded::Partial;
    }
    Decoded::Frame(Frame { fin, compressed, opcode, payload: &buf[header..total] }, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame as tungstenite's server side encodes it.
    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        use tungstenite::protocol::frame::{coding::OpCode, Frame};
        let mut out = Vec::new();
        Frame::message(payload.to_vec(), OpCode::from(opcode), fin).format(&mut out).unwrap();
        out
    }

    #[test]
    fn parses_urls_and_refuses_remote() {
        let t = Target::parse("ws://127.0.0.1:9001/ws?name=lt", false, None).unwrap();
        assert_eq!((t.port, t.resource.as_str()), (9001, "/ws?name=lt"));
        let t = Target::parse("ws://localhost:80", false, None).unwrap();
        assert_eq!(t.resource, "/");
        assert!(t.addr.ip().is_loopback() && t.tls.is_none());
        assert_eq!(Target::parse("ws://127.0.0.1:1?x=1", false, None).unwrap().resource, "/?x=1");
        assert!(Target::parse("ws://10.0.0.1:80/", false, None).unwrap_err().contains("loopback"));
        assert!(Target::parse("http://127.0.0.1/", false, None).is_err());
        assert!(Target::parse("ws://127.0.0.1:x/", false, None).is_err());
    }

    #[test]
    fn wss_urls_need_the_ca_and_only_they_take_it() {
        assert!(Target::parse("wss://127.0.0.1/", false, None).unwrap_err().contains("--ca"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap().cert.pem()).unwrap();
        let ca = tls::Ca::load(path.to_str().unwrap()).unwrap();
        let t = Target::parse("wss://127.0.0.1/ws", false, Some(&ca)).unwrap();
        assert_eq!((t.port, t.tls.is_some()), (443, true));
        assert!(Target::parse("ws://127.0.0.1/ws", false, Some(&ca)).unwrap_err().contains("plain ws://"));
    }

    #[test]
    fn masked_frames_unmask_to_the_payload() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            encode_masked(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            assert_eq!(out[0], 0x81);
            assert!(out[1] & 0x80 != 0, "client frames are masked");
            let (hlen, plen) = match out[1] & 0x7F {
                126 => (4, u16::from_be_bytes([out[2], out[3]]) as usize),
                127 => (10, u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize),
                n => (2, n as usize),
            };
            assert_eq!(plen, len);
            let mask = &out[hlen..hlen + 4];
            let back: Vec<u8> = out[hlen + 4..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn decodes_server_frames_of_every_length_form() {
        for len in [0usize, 125, 126, 65_535, 65_536] {
            let payload = vec![b'a'; len];
            let bytes = server_frame(OP_TEXT, true, &payload);
            match decode(&bytes, 1 << 20, false) {
                Decoded::Frame(f, used) => {
                    assert_eq!((f.opcode, f.fin, f.payload.len(), used), (OP_TEXT, true, len, bytes.len()))
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(decode(&bytes[..bytes.len() - 1], 1 << 20, false), Decoded::Partial);
        }
    }

    #[test]
    fn rejects_protocol_violations() {
        assert_eq!(decode(&[0x81, 0x81, 0, 0, 0, 0, b'x'], 100, false), Decoded::Violation("masked frame from server"));
        assert_eq!(decode(&[0xC1, 0x00], 100, false), Decoded::Violation("reserved bits set"));
        assert!(matches!(decode(&[0xC1, 0x00], 100, true), Decoded::Frame(Frame { compressed: true, .. }, 2)));
        assert_eq!(decode(&[0xC9, 0x00], 100, true), Decoded::Violation("RSV1 on a control or continuation frame"));
        assert_eq!(decode(&[OP_PING, 0x00], 100, false), Decoded::Violation("bad control frame"));
        assert_eq!(decode(&[0x83, 0x00], 100, false), Decoded::Violation("unknown opcode"));
        assert_eq!(
            decode(&server_frame(OP_TEXT, true, &[0; 200]), 100, false),
            Decoded::Violation("frame over the size limit")
        );
    }

    #[test]
    fn inflates_what_natter_compresses() {
        let json = br#"{"type":"msg","room":"lobby","text":"compressible, compressible, compressible text"}"#;
        let frame = natter::protocol::wire::deflated(&natter::protocol::wire::text_frame(json)).unwrap();
        let Decoded::Frame(f, _) = decode(&frame, 1 << 20, true) else { panic!("a frame") };
        assert!(f.compressed);
        let mut inflate = Inflate::default();
        for _ in 0..2 {
            assert_eq!(inflate.message(f.payload, 1 << 20).unwrap(), json);
        }
        assert!(inflate.message(f.payload, 10).is_err(), "bounded");
    }

    #[test]
    fn checks_the_upgrade_response() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nsec-websocket-accept: {accept}\r\n\r\n\x01\x00"
        );
        assert_eq!(check_upgrade(ok.as_bytes(), &accept), Upgrade::Done(ok.len() - 2));
        assert_eq!(check_upgrade(&ok.as_bytes()[..20], &accept), Upgrade::Partial);
        let refused = b"HTTP/1.1 503 Service Unavailable\r\n\r\nfull";
        assert_eq!(check_upgrade(refused, &accept), Upgrade::Refused("HTTP/1.1 503 Service Unavailable".into()));
        let wrong = b"HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert!(matches!(check_upgrade(wrong, &accept), Upgrade::Refused(_)));
    }
}
