//! WebSocket framing for the server's own writes: a message is serialized and framed
//! once into shared bytes ([`Frame`]) that every receiver's outbox holds by reference.
//!
//! This is the one place that builds frames by hand (tungstenite frames the reader's
//! control replies), compressed ones (permessage-deflate, RSV1 set) included. It
//! never writes to a socket.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::ServerMsg;

/// A complete, unmasked server frame: header and payload, cheap to clone.
pub type Frame = Bytes;

const FIN: u8 = 0x80;
/// RSV1: the message is compressed (permessage-deflate, RFC 7692 §6).
const RSV1: u8 = 0x40;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

fn header(buf: &mut BytesMut, opcode: u8, len: usize) {
    buf.put_u8(FIN | opcode);
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
}

/// Length of the header `text_frame` puts before a payload of `len` bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// Frames a JSON payload as one final text frame.
pub fn text_frame(payload: &[u8]) -> Frame {
    data_frame(OP_TEXT, payload)
}

/// Frames a payload as one final binary frame (the conformance echo's replies).
pub fn binary_frame(payload: &[u8]) -> Frame {
    data_frame(OP_BINARY, payload)
}

fn data_frame(opcode: u8, payload: &[u8]) -> Frame {
    let mut buf = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    header(&mut buf, opcode, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

/// Length of the payload of a frame built here.
pub fn payload_len(frame: &Frame) -> usize {
    payload(frame).len()
}

/// The permessage-deflate form of a text or binary frame built here: the payload
/// compressed on its own (no context, so every receiver that negotiated the extension
/// can be sent these same bytes) and RSV1 set. None for control frames and when
/// compressing does not make the payload shorter.
pub fn deflated(frame: &Frame) -> Option<Frame> {
    let opcode = match frame.first() {
        Some(&b) if b == FIN | OP_TEXT || b == FIN | OP_BINARY => b & 0x0F,
        _ => return None,
    };
    let z = crate::protocol::deflate::compress(&payload(frame))?;
    let mut buf = BytesMut::with_capacity(header_len(z.len()) + z.len());
    header(&mut buf, opcode, z.len());
    buf[0] |= RSV1;
    buf.put_slice(&z);
    Some(buf.freeze())
}

/// Serializes and frames a server message.
pub fn encode(msg: &ServerMsg<'_>) -> Frame {
    text_frame(&msg.to_json())
}

/// The payload of a frame built here (uncompressed text or binary, or control).
pub fn payload(frame: &Frame) -> Bytes {
    let len = frame.len();
    // The payload length decides the header length; try each candidate.
    for h in [2usize, 4, 10] {
        if len >= h && header_len(len - h) == h {
            return frame.slice(h..);
        }
    }
    unreachable!("a frame built here always has a valid header")
}

/// A ping frame with an empty payload (the heartbeat).
pub fn ping_frame() -> Frame {
    let mut buf = BytesMut::with_capacity(2);
    header(&mut buf, OP_PING, 0);
    buf.freeze()
}

/// A pong frame echoing a ping's payload (at most 125 bytes, checked by tungstenite).
pub fn pong_frame(payload: &[u8]) -> Frame {
    let mut buf = BytesMut::with_capacity(2 + payload.len());
    header(&mut buf, OP_PONG, payload.len());
    buf.put_slice(payload);
    buf.freeze()
}

/// A close frame with a code and a short reason (at most 123 bytes, as RFC 6455 requires).
pub fn close_frame(code: u16, reason: &str) -> Frame {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut buf = BytesMut::with_capacity(4 + reason.len());
    header(&mut buf, OP_CLOSE, 2 + reason.len());
    buf.put_u16(code);
    buf.put_slice(reason);
    buf.freeze()
}

/// What a `history` frame says besides its messages (docs/PROTOCOL.md).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoryMeta {
    /// Nothing the request covered is missing.
    pub complete: bool,
    /// On an incomplete resume: the first seq this reply has (what is older than it
    /// and newer than `since` is not included).
    pub first: Option<u64>,
    /// On a scroll-back answer: the `before` it answers.
    pub before: Option<u64>,
    /// The client's `since` belongs to another epoch of the room: drop what it holds.
    pub reset: bool,
    /// Another `history` frame of the same answer follows.
    pub more: bool,
}

/// Builds a `history` frame by splicing the stored JSON of each message (already
/// server-encoded, so valid JSON) into one array: no message is re-serialized.
pub fn history_frame<'a>(room: &str, meta: &HistoryMeta, messages: impl Iterator<Item = &'a [u8]>) -> Frame {
    let mut json = Vec::with_capacity(256);
    json.extend_from_slice(br#"{"type":"history","room":"#);
    serde_json::to_writer(&mut json, room).expect("a string always serializes");
    splice(&mut json, messages);
    json.extend_from_slice(if meta.complete { br#","complete":true"# } else { br#","complete":false"# });
    let mut field = |name: &str, v: Option<u64>| {
        if let Some(v) = v {
            json.extend_from_slice(format!(r#","{name}":{v}"#).as_bytes());
        }
    };
    field("first", meta.first);
    field("before", meta.before);
    if meta.reset {
        json.extend_from_slice(br#","reset":true"#);
    }
    if meta.more {
        json.extend_from_slice(br#","more":true"#);
    }
    json.push(b'}');
    text_frame(&json)
}

/// Splits an answer into `history` frames of at most about `max_bytes` each (one
/// message per frame at least), every one but the last marked `more`.
pub fn history_pages(room: &str, meta: HistoryMeta, messages: &[Bytes], max_bytes: usize) -> Vec<Frame> {
    let budget = max_bytes.saturating_sub(256).max(1);
    let mut pages: Vec<&[Bytes]> = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, m) in messages.iter().enumerate() {
        if i > start && size + m.len() + 1 > budget {
            pages.push(&messages[start..i]);
            (start, size) = (i, 0);
        }
        size += m.len() + 1;
    }
    pages.push(&messages[start..]);
    let last = pages.len() - 1;
    pages
        .iter()
        .enumerate()
        .map(|(i, p)| history_frame(room, &HistoryMeta { more: i < last, ..meta }, p.iter().map(|m| &m[..])))
        .collect()
}

/// A `search` answer: the matching messages' stored JSON, newest first.
pub fn search_frame<'a>(
    room: &str,
    q: &str,
    before: Option<u64>,
    complete: bool,
    messages: impl Iterator<Item = &'a [u8]>,
) -> Frame {
    let mut json = Vec::with_capacity(256);
    json.extend_from_slice(br#"{"type":"search","room":"#);
    serde_json::to_writer(&mut json, room).expect("a string always serializes");
    json.extend_from_slice(br#","q":"#);
    serde_json::to_writer(&mut json, q).expect("a string always serializes");
    if let Some(b) = before {
        json.extend_from_slice(format!(r#","before":{b}"#).as_bytes());
    }
    splice(&mut json, messages);
    json.extend_from_slice(if complete { br#","complete":true}"# } else { br#","complete":false}"# });
    text_frame(&json)
}

fn splice<'a>(json: &mut Vec<u8>, messages: impl Iterator<Item = &'a [u8]>) {
    json.extend_from_slice(br#","messages":["#);
    for (i, m) in messages.enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(m);
    }
    json.push(b']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_rfc6455_headers() {
        assert_eq!(&text_frame(b"hi")[..], b"\x81\x02hi");
        let f = text_frame(&[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        let f = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(&f[..2], &[0x81, 127]);
        assert_eq!(f.len(), 70_010);
        assert_eq!(&ping_frame()[..], &[0x89, 0]);
        assert_eq!(&close_frame(1008, "slow consumer")[..4], &[0x88, 15, 0x03, 0xF0]);
    }

    #[test]
    fn deflated_frames_set_rsv1_and_inflate_back() {
        let json = br#"{"type":"message","room":"lobby","text":"so many words, so many words, so many words again"}"#;
        for frame in [text_frame(json), binary_frame(json)] {
            let z = deflated(&frame).expect("worth compressing");
            assert_eq!(z[0], frame[0] | RSV1, "FIN, RSV1 and the same opcode");
            assert!(z.len() < frame.len());
            let agreed = crate::protocol::deflate::negotiate(
                ["permessage-deflate"],
                crate::protocol::deflate::Policy { client_max_window_bits: 15 },
            )
            .unwrap();
            let mut inf = crate::protocol::deflate::Inflater::new(&agreed, 1 << 20);
            assert_eq!(inf.frame(&payload(&z), true).unwrap(), json);
        }
        assert_eq!(deflated(&ping_frame()), None, "control frames are never compressed");
        assert_eq!(deflated(&text_frame(b"{}")), None, "not shorter");
    }

    #[test]
    fn payload_recovers_the_json() {
        for n in [0usize, 1, 125, 126, 127, 65535, 65536, 100_000] {
            let body = vec![b'x'; n];
            assert_eq!(payload(&text_frame(&body)).len(), n, "n={n}");
        }
    }

    #[test]
    fn history_is_valid_json() {
        let msgs: Vec<&[u8]> = vec![br#"{"seq":1}"#, br#"{"seq":2}"#];
        let meta = HistoryMeta { first: Some(7), reset: true, ..HistoryMeta::default() };
        let f = history_frame("lobby", &meta, msgs.into_iter());
        let v: serde_json::Value = serde_json::from_slice(&payload(&f)).unwrap();
        assert_eq!(v["type"], "history");
        assert_eq!(v["messages"][1]["seq"], 2);
        assert_eq!(
            (v["complete"].as_bool(), v["first"].as_u64(), v["reset"].as_bool()),
            (Some(false), Some(7), Some(true))
        );
        let f = search_frame("r", "a\"b", Some(9), true, std::iter::once(&br#"{"seq":3}"#[..]));
        let v: serde_json::Value = serde_json::from_slice(&payload(&f)).unwrap();
        assert_eq!(
            (v["q"].as_str(), v["before"].as_u64(), v["messages"][0]["seq"].as_u64()),
            (Some("a\"b"), Some(9), Some(3))
        );
    }

    #[test]
    fn history_pages_stay_under_the_limit_and_lose_nothing() {
        let msgs: Vec<Bytes> =
            (1..=300).map(|s| Bytes::from(format!(r#"{{"seq":{s},"pad":"{}"}}"#, "x".repeat(90)))).collect();
        let pages = history_pages("r", HistoryMeta { complete: true, ..HistoryMeta::default() }, &msgs, 4096);
        assert!(pages.len() > 5);
        let mut seqs = Vec::new();
        for (i, p) in pages.iter().enumerate() {
            assert!(p.len() <= 4096, "page {i} is {} bytes", p.len());
            let v: serde_json::Value = serde_json::from_slice(&payload(p)).unwrap();
            assert_eq!(v["more"].as_bool().unwrap_or(false), i + 1 < pages.len());
            seqs.extend(v["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()));
        }
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
        assert_eq!(history_pages("r", HistoryMeta::default(), &[], 4096).len(), 1, "an empty answer is one frame");
    }
}
