//! The probe message: what a sending client puts on the wire and what a
//! receiving client recognises in what comes back.
//!
//! A probe's text is `lt <stream> <n> <send_ns>`: the stream it belongs to
//! (the sending client's index, or a broadcast slot in `shootout`), its
//! sequence number in that stream (from 1), and the send time on the
//! process clock ([`crate::sys::now_ns`]). It travels inside a configurable
//! JSON template; any server that echoes it back in a string `text` field
//! of a JSON object is measured — or of a Socket.IO event's object
//! (`42["msg",{…}]`), so that Socket.IO servers are measured too.

use serde::Deserialize;
use std::borrow::Cow;

/// Fields of an incoming frame the tester looks at; all others are ignored.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

/// One probe found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub stream: u32,
    pub n: u32,
    pub send_ns: u64,
}

/// What an incoming text frame turned out to be.
#[derive(Debug, PartialEq)]
pub enum Seen {
    Probe(Probe),
    /// `{"type":"error","code":...}` from the server.
    Error(String),
    /// The server answered a join: `{"type":"joined",…}` or `42["joined",…]`.
    Joined,
    /// Valid JSON without a probe (welcome, joined, ack, history, …).
    Other,
    /// Not a JSON object.
    NotJson,
}

/// Classify one text frame.
pub fn classify(frame: &[u8]) -> Seen {
    let msg = if let Some(event) = frame.strip_prefix(b"42") {
        // A Socket.IO event: `42["name",{…}]`; the name stands in for `type`.
        let Ok((name, mut msg)) = serde_json::from_slice::<(Cow<str>, Incoming)>(event) else {
            return Seen::NotJson;
        };
        msg.kind = msg.kind.or(Some(name));
        msg
    } else {
        let Ok(msg) = serde_json::from_slice::<Incoming>(frame) else {
            return Seen::NotJson;
        };
        msg
    };
    match msg.kind.as_deref() {
        Some("error") => return Seen::Error(msg.code.map(Cow::into_owned).unwrap_or_default()),
        Some("joined") => return Seen::Joined,
        _ => {}
    }
    match msg.text.as_deref().and_then(parse_text) {
        Some(p) => Seen::Probe(p),
        None => Seen::Other,
    }
}

/// Parse `lt <stream> <n> <send_ns>`.
pub fn parse_text(text: &str) -> Option<Probe> {
    let mut parts = text.strip_prefix("lt ")?.split(' ');
    let probe = Probe {
        stream: parts.next()?.parse().ok()?,
        n: parts.next()?.parse().ok()?,
        send_ns: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(probe)
}

/// A message template with `$TEXT`, `$ID` and `$ROOM` placeholders,
/// split once so that filling it is a few appends.
#[derive(Debug, Clone)]
pub struct Template {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone)]
enum Piece {
    Lit(String),
    Text,
    Id,
    Room,
}

impl Template {
    /// Split `template`. The probe text holds only ASCII letters, digits and
    /// spaces, and room names are the tester's own, so neither needs JSON
    /// escaping.
    pub fn new(template: &str) -> Template {
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(i) = rest.find('$') {
            let (piece, len) = if rest[i..].starts_with("$TEXT") {
                (Piece::Text, 5)
            } else if rest[i..].starts_with("$ID") {
                (Piece::Id, 3)
            } else if rest[i..].starts_with("$ROOM") {
                (Piece::Room, 5)
            } else {
                (Piece::Lit("$".into()), 1)
            };
            if i > 0 {
                pieces.push(Piece::Lit(rest[..i].to_string()));
            }
            pieces.push(piece);
            rest = &rest[i + len..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Lit(rest.to_string()));
        }
        Template { pieces }
    }

    /// Write the filled template for `probe` sent in `room` into `out`
    /// (cleared first). `run` makes ids unique across runs against the same
    /// server, `epoch` across the sending phases of one run (sequence numbers
    /// restart in each, and a server that de-duplicates ids must not merge
    /// them).
    pub fn fill(&self, out: &mut String, probe: Probe, run: u64, epoch: u32, room: &str) {
        use std::fmt::Write;
        out.clear();
        for piece in &self.pieces {
            let _ = match piece {
                Piece::Lit(s) => {
                    out.push_str(s);
                    Ok(())
                }
                Piece::Room => {
                    out.push_str(room);
                    Ok(())
                }
                Piece::Text => write!(out, "lt {} {} {}", probe.stream, probe.n, probe.send_ns),
                Piece::Id => write!(out, "{run:x}-{epoch}-{}-{}", probe.stream, probe.n),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filled_template_round_trips() {
        let t = Template::new(r#"{"type":"msg","room":"$ROOM","text":"$TEXT","id":"$ID","cost":"$5"}"#);
        let mut s = String::new();
        let p = Probe { stream: 3, n: 17, send_ns: 123456789 };
        t.fill(&mut s, p, 0xab, 2, "lobby");
        assert_eq!(s, r#"{"type":"msg","room":"lobby","text":"lt 3 17 123456789","id":"ab-2-3-17","cost":"$5"}"#);
        assert_eq!(classify(s.as_bytes()), Seen::Probe(p));
    }

    #[test]
    fn recognises_probes_in_any_server_shape() {
        let natter = br#"{"type":"msg","room":"lobby","seq":9,"user":"lt","uid":"u1","ts":1,"text":"lt 1 2 3"}"#;
        assert_eq!(classify(natter), Seen::Probe(Probe { stream: 1, n: 2, send_ns: 3 }));
        let node = br#"{"user":"lt","text":"lt 0 1 99"}"#;
        assert_eq!(classify(node), Seen::Probe(Probe { stream: 0, n: 1, send_ns: 99 }));
        let history =
            br#"{"type":"history","room":"lobby","messages":[{"type":"msg","text":"lt 1 2 3"}],"complete":true}"#;
        assert_eq!(classify(history), Seen::Other);
        assert_eq!(classify(br#"{"type":"welcome","text":"hello"}"#), Seen::Other);
        assert_eq!(
            classify(br#"{"type":"error","code":"rate_limited","message":"x"}"#),
            Seen::Error("rate_limited".into())
        );
        assert_eq!(classify(b"lt 1 2 3"), Seen::NotJson);
        assert_eq!(classify(br#"{"type":"joined","room":"r1","seq":0}"#), Seen::Joined);
    }

    #[test]
    fn recognises_socket_io_events() {
        let t = Template::new(r#"42["msg",{"room":"$ROOM","text":"$TEXT"}]"#);
        let mut s = String::new();
        let p = Probe { stream: 4, n: 2, send_ns: 7 };
        t.fill(&mut s, p, 0, 0, "r9");
        assert_eq!(s, r#"42["msg",{"room":"r9","text":"lt 4 2 7"}]"#);
        assert_eq!(classify(s.as_bytes()), Seen::Probe(p));
        assert_eq!(classify(br#"42["joined",{"room":"r9"}]"#), Seen::Joined);
        assert_eq!(classify(br#"42["msg","plain"]"#), Seen::NotJson);
        assert_eq!(classify(b"2"), Seen::NotJson);
        assert_eq!(parse_text("lt 1 2 3 4"), None);
        assert_eq!(parse_text("lt 1 x 3"), None);
    }
}
