//! permessage-deflate (RFC 7692): what an offer asks for and what natter answers
//! ([`negotiate`]), compressing a message's payload once for any number of receivers
//! ([`compress`]), and inflating one connection's compressed messages with bounded
//! memory ([`Inflater`]).
//!
//! The server always answers `server_no_context_takeover`: every message it sends is
//! compressed on its own, so the very same compressed bytes can go to every member of
//! a room that negotiated the extension. A client may keep its own context (the RFC's
//! default); its window is then kept as the last bytes it actually sent, at most the
//! window it agreed to, and the inflater itself exists only while a message is being
//! read. Pure code: no sockets, no policy about who gets compression (the handshake
//! decides that).

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The extension's token in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The four bytes a sync flush ends with; a sender strips them, a receiver adds them
/// back (RFC 7692 §7.2.1-2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Payloads shorter than this are sent plain: deflate's block header and a JSON
/// frame's few repeats make a small message no shorter (the RFC lets the sender
/// choose per message).
pub const MIN_COMPRESS_BYTES: usize = 96;

/// Compression level for outbound messages. A broadcast is compressed once whatever
/// the room's size, so a good ratio costs little; 6 is zlib's default.
const LEVEL: u32 = 6;

/// What the server decides about offers: the largest window it lets a client use
/// when the client offers `client_max_window_bits` (a smaller window is less for a
/// connection to keep between messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub client_max_window_bits: u8,
}

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The window the server's messages may use (`server_max_window_bits`, 15 when the
    /// client did not limit it). Messages are compressed without context, so a
    /// payload no longer than the window can never refer further back.
    pub server_window_bits: u8,
    /// The window the client compresses with (what the server must keep between
    /// messages when `client_takeover`).
    pub client_window_bits: u8,
    /// The client keeps its compression context from one message to the next.
    pub client_takeover: bool,
    /// The client offered `client_max_window_bits` (the answer then names one).
    client_bits_offered: bool,
    /// The client offered `server_max_window_bits` (the answer must name it).
    server_bits_offered: bool,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the answer.
    pub fn response(&self) -> String {
        let mut s = format!("{EXTENSION}; server_no_context_takeover");
        if !self.client_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_bits_offered {
            s.push_str(&format!("; server_max_window_bits={}", self.server_window_bits));
        }
        if self.client_bits_offered {
            s.push_str(&format!("; client_max_window_bits={}", self.client_window_bits));
        }
        s
    }

    /// Whether a payload of `len` bytes may be sent compressed to this client.
    pub fn may_compress(&self, len: usize) -> bool {
        len >= MIN_COMPRESS_BYTES && (self.server_window_bits >= 15 || len <= 1 << self.server_window_bits)
    }
}

/// Why one offer was declined (the next offer is tried; with none left the
/// connection goes on uncompressed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("unknown parameter {0:?}")]
    Unknown(String),
    #[error("parameter {0:?} given twice")]
    Repeated(String),
    #[error("parameter {0:?} has a bad value")]
    BadValue(String),
}

/// Picks the first acceptable `permessage-deflate` offer of the request's
/// `Sec-WebSocket-Extensions` values (RFC 7692 §5). None when there is no offer or
/// none is acceptable: the connection goes on uncompressed.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>, policy: Policy) -> Option<Agreed> {
    header_values
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            (parts.next()? == EXTENSION).then_some(parts)
        })
        .find_map(|params| accept(params, policy).ok())
}

/// Accepts one offer's parameters, or says why not.
fn accept<'a>(params: impl Iterator<Item = &'a str>, policy: Policy) -> Result<Agreed, OfferError> {
    let mut agreed = Agreed {
        server_window_bits: 15,
        client_window_bits: 15,
        client_takeover: true,
        client_bits_offered: false,
        server_bits_offered: false,
    };
    let mut seen: Vec<&str> = Vec::new();
    for param in params.filter(|p| !p.is_empty()) {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.contains(&name) {
            return Err(OfferError::Repeated(name.into()));
        }
        seen.push(name);
        let bits = || -> Result<u8, OfferError> {
            let v = value.ok_or_else(|| OfferError::BadValue(name.into()))?;
            // RFC 7692 §7.1.2: 1*DIGIT without leading zeros, 8 to 15.
            match v.parse::<u8>() {
                Ok(b @ 8..=15) if !v.starts_with('0') => Ok(b),
                _ => Err(OfferError::BadValue(name.into())),
            }
        };
        match name {
            "server_no_context_takeover" | "client_no_context_takeover" if value.is_some() => {
                return Err(OfferError::BadValue(name.into()))
            }
            // Always answered: natter never keeps a context of its own.
            "server_no_context_takeover" => {}
            "client_no_context_takeover" => agreed.client_takeover = false,
            "server_max_window_bits" => {
                agreed.server_window_bits = bits()?;
                agreed.server_bits_offered = true;
            }
            "client_max_window_bits" => {
                let offered = if value.is_some() { bits()? } else { 15 };
                agreed.client_window_bits = offered.min(policy.client_max_window_bits.clamp(9, 15));
                agreed.client_bits_offered = true;
            }
            _ => return Err(OfferError::Unknown(name.into())),
        }
    }
    Ok(agreed)
}

/// The outbound compressor: raw deflate, no context kept between messages.
struct Deflater(Compress);

thread_local! {
    /// One compressor per compressing thread (the writer shards), reset per message:
    /// its tables are allocated once, not once per broadcast.
    static DEFLATER: RefCell<Option<Deflater>> = const { RefCell::new(None) };
}

/// Compresses one message's payload on its own (no context), as a permessage-deflate
/// sender does: the result is the deflate data without the sync flush's tail. None
/// when compressing does not make it shorter.
pub fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    DEFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(Deflater::new()?);
        }
        cell.as_mut()?.compress(payload)
    })
}

impl Deflater {
    /// A compressor, built on a short-lived thread with an ordinary stack: the
    /// backend builds its tables (hundreds of KiB) on the stack before boxing them in
    /// unoptimized builds, more than a connection thread's small stack holds (the
    /// conformance echo compresses there). Once per compressing thread. None if that
    /// thread could not be started: the message then goes plain.
    fn new() -> Option<Deflater> {
        std::thread::Builder::new()
            .name("deflate-init".into())
            .spawn(|| Deflater(Compress::new(Compression::new(LEVEL), false)))
            .ok()?
            .join()
            .ok()
    }

    /// Each message ends with a full flush, which empties the compressor's
    /// dictionary: the next message refers to nothing before it (no context), with
    /// no `reset`, whose fresh tables the backend builds on the stack.
    fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let c = &mut self.0;
        let start = c.total_in();
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        loop {
            let consumed = (c.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Full).ok()?;
            // The flush is complete once all input is in and it left output room.
            if (c.total_in() - start) as usize == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        if !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        (out.len() < payload.len()).then_some(out)
    }
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the frame limit (a decompression bomb or just too big): 1009.
    #[error("the message inflates past {limit} bytes")]
    TooBig { limit: usize },
    /// Not valid deflate data.
    #[error("bad compressed data: {0}")]
    Corrupt(String),
}

/// One connection's inbound decompression. With client context takeover the client's
/// messages may refer back into what it sent before, up to its window: that is kept
/// as plain bytes (at most the window, and never more than what the client actually
/// sent), and a new inflater is primed with it for each message. Between messages
/// the connection holds only those bytes: no inflater, no 32 KiB window.
pub struct Inflater {
    /// Bytes of the client's window kept between messages (0: no context takeover).
    window: usize,
    /// The last `window` bytes the client sent, when it keeps its context.
    kept: Vec<u8>,
    /// The message being inflated, if one is under way.
    active: Option<Active>,
    /// Largest inflated message.
    limit: usize,
}

struct Active {
    inner: Box<Decompress>,
    produced: usize,
    ended: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").field("window", &self.window).field("kept", &self.kept.len()).finish()
    }
}

impl Inflater {
    /// An inflater for what `agreed` says the client sends; messages inflating past
    /// `limit` bytes are refused.
    pub fn new(agreed: &Agreed, limit: usize) -> Inflater {
        let window = if agreed.client_takeover { 1 << agreed.client_window_bits } else { 0 };
        Inflater { window, kept: Vec::new(), active: None, limit }
    }

    /// Inflates one frame of a compressed message (its unmasked payload); `fin` ends
    /// the message. Returns the frame's inflated bytes.
    pub fn frame(&mut self, data: &[u8], fin: bool) -> Result<Vec<u8>, InflateError> {
        let result = self.inflate(data, fin);
        if result.is_err() || fin {
            self.active = None;
            self.kept.shrink_to_fit();
        }
        result
    }

    fn inflate(&mut self, data: &[u8], fin: bool) -> Result<Vec<u8>, InflateError> {
        if self.active.is_none() {
            self.active = Some(self.start()?);
        }
        let active = self.active.as_mut().expect("started above");
        let mut out = Vec::new();
        run(active, data, &mut out, self.limit)?;
        if fin {
            run(active, &TAIL, &mut out, self.limit)?;
        }
        self.remember(&out);
        Ok(out)
    }

    /// A fresh inflater whose window holds the kept bytes: they are fed to it as a
    /// stored (uncompressed) deflate block, which works with any deflate backend.
    fn start(&self) -> Result<Active, InflateError> {
        let mut active = Active { inner: Box::new(Decompress::new(false)), produced: 0, ended: false };
        if !self.kept.is_empty() {
            let mut block = Vec::with_capacity(self.kept.len() + 5 * (self.kept.len() / 65535 + 1));
            for chunk in self.kept.chunks(65535) {
                let len = chunk.len() as u16;
                block.push(0x00); // BFINAL 0, BTYPE 00 (stored), byte-aligned
                block.extend_from_slice(&len.to_le_bytes());
                block.extend_from_slice(&(!len).to_le_bytes());
                block.extend_from_slice(chunk);
            }
            let mut sink = Vec::with_capacity(self.kept.len() + 1);
            active
                .inner
                .decompress_vec(&block, &mut sink, FlushDecompress::Sync)
                .map_err(|e| InflateError::Corrupt(e.to_string()))?;
            if sink.len() != self.kept.len() {
                return Err(InflateError::Corrupt("could not restore the window".into()));
            }
        }
        Ok(active)
    }

    /// Keeps the last `window` bytes of what the client sent.
    fn remember(&mut self, out: &[u8]) {
        if self.window == 0 {
            return;
        }
        if out.len() >= self.window {
            self.kept.clear();
            self.kept.extend_from_slice(&out[out.len() - self.window..]);
        } else {
            self.kept.extend_from_slice(out);
            if self.kept.len() > self.window {
                self.kept.drain(..self.kept.len() - self.window);
            }
        }
    }
}

/// Feeds `input` to the inflater, appending its output to `out`, never letting the
/// message grow past `limit` (the buffer is grown only up to one byte past it).
fn run(active: &mut Active, mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), InflateError> {
    let too_big = InflateError::TooBig { limit };
    while !active.ended {
        let room = (limit + 1).saturating_sub(active.produced + out.len());
        if room == 0 {
            return Err(too_big);
        }
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1024).min(room));
        }
        let (in_before, out_before) = (active.inner.total_in(), out.len());
        let status = active
            .inner
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|e| InflateError::Corrupt(e.to_string()))?;
        input = &input[(active.inner.total_in() - in_before) as usize..];
        if active.produced + out.len() > limit {
            return Err(too_big);
        }
        if status == Status::StreamEnd {
            // A final block ends the deflate stream; anything after it is ignored.
            active.ended = true;
        }
        let progressed = active.inner.total_in() != in_before || out.len() != out_before;
        if (input.is_empty() && out.len() < out.capacity()) || !progressed {
            break;
        }
    }
    active.produced += out.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { client_max_window_bits: 11 };

    fn offer(v: &str) -> Option<Agreed> {
        negotiate([v], POLICY)
    }

    #[test]
    fn a_plain_offer_is_accepted_with_server_no_context_takeover() {
        let a = offer("permessage-deflate").unwrap();
        assert_eq!(a.response(), "permessage-deflate; server_no_context_takeover");
        assert!(a.client_takeover);
        assert_eq!((a.server_window_bits, a.client_window_bits), (15, 15));
    }

    #[test]
    fn no_offer_means_no_compression() {
        assert_eq!(negotiate(std::iter::empty::<&str>(), POLICY), None);
        assert_eq!(offer("x-webkit-deflate-frame"), None);
        assert_eq!(offer(""), None);
    }

    #[test]
    fn chromes_offer_gets_a_small_client_window() {
        let a = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(a.response(), "permessage-deflate; server_no_context_takeover; client_max_window_bits=11");
        assert_eq!(a.client_window_bits, 11);
        let a = offer("permessage-deflate; client_max_window_bits=9").unwrap();
        assert_eq!(a.client_window_bits, 9, "never more than the client offered");
    }

    #[test]
    fn client_parameters_are_honoured() {
        let a = offer("permessage-deflate; client_no_context_takeover; server_max_window_bits=10").unwrap();
        assert!(!a.client_takeover);
        assert_eq!(a.server_window_bits, 10);
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        assert!(a.may_compress(1024) && !a.may_compress(1025), "a payload past the window goes plain");
        assert!(!a.may_compress(MIN_COMPRESS_BYTES - 1));
        let a = offer(r#"permessage-deflate; server_max_window_bits="12""#).unwrap();
        assert_eq!(a.server_window_bits, 12, "quoted values are allowed");
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_is_tried() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=abc",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        let a = negotiate(["permessage-deflate; foo=1, permessage-deflate; client_no_context_takeover"], POLICY);
        assert!(!a.unwrap().client_takeover, "the second, acceptable offer");
        let a = negotiate(["permessage-deflate; bar", "permessage-deflate"], POLICY);
        assert!(a.is_some(), "offers in separate header lines");
    }

    fn client_deflate(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn a_small_stack_thread_can_compress() {
        let msg = "a connection thread's stack is small, a connection thread's stack is small".repeat(3);
        let z = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || compress(msg.as_bytes()))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(z.is_some());
    }

    #[test]
    fn compress_then_inflate_round_trips_and_small_payloads_stay_plain() {
        let msg =
            br#"{"type":"message","room":"lobby","seq":1,"user":"alice","text":"hello hello hello hello hello hello"}"#;
        let z = compress(msg).unwrap();
        assert!(z.len() < msg.len());
        let agreed = offer("permessage-deflate").unwrap();
        let mut inf = Inflater::new(&agreed, 1 << 20);
        assert_eq!(inf.frame(&z, true).unwrap(), msg);
        assert_eq!(compress(b"ab"), None, "not shorter: sent plain");
        let again = compress(msg).unwrap();
        assert_eq!(z, again, "no context kept: the same payload compresses to the same bytes");
        let mut fresh = Inflater::new(&agreed, 1 << 20);
        assert_eq!(fresh.frame(&again, true).unwrap(), msg, "a fresh inflater reads a later message");
    }

    #[test]
    fn client_context_takeover_keeps_what_was_sent_and_no_inflater_while_idle() {
        let agreed = offer("permessage-deflate").unwrap();
        let mut inf = Inflater::new(&agreed, 1 << 20);
        let mut client = Compress::new(Compression::default(), false);
        let (mut sent, mut compressed) = (0, 0);
        for i in 0..50 {
            let m = format!(r#"{{"type":"send","room":"lobby","text":"message number {i} says hello to lobby"}}"#);
            let z = client_deflate(&mut client, m.as_bytes());
            compressed += z.len();
            // Split some messages over two frames, as fragmenting clients do.
            let got = if i % 3 == 0 && z.len() > 2 {
                let mut a = inf.frame(&z[..z.len() / 2], false).unwrap();
                a.extend(inf.frame(&z[z.len() / 2..], true).unwrap());
                a
            } else {
                inf.frame(&z, true).unwrap()
            };
            assert_eq!(got, m.as_bytes(), "message {i}");
            sent += m.len();
            assert!(inf.active.is_none(), "no inflater between messages");
            assert_eq!(inf.kept.capacity(), sent, "only what the client sent is kept");
        }
        assert!(compressed < sent / 3, "the context was used: {compressed} of {sent}");
    }

    #[test]
    fn a_small_client_window_bounds_what_is_kept() {
        let agreed = offer("permessage-deflate; client_max_window_bits=9").unwrap();
        let mut inf = Inflater::new(&agreed, 1 << 20);
        for i in 0..20 {
            // Each compressed on its own: valid whatever the window.
            let m = format!("{i}: {}", "the quick brown fox jumps over the lazy dog ".repeat(3));
            let z = client_deflate(&mut Compress::new(Compression::default(), false), m.as_bytes());
            assert_eq!(inf.frame(&z, true).unwrap(), m.as_bytes());
            assert!(inf.kept.capacity() <= 512, "at most the 512-byte window: {}", inf.kept.capacity());
        }
        assert_eq!(inf.kept.len(), 512);
    }

    #[test]
    fn a_decompression_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut c = Compress::new(Compression::best(), false);
        let bomb = client_deflate(&mut c, &zeros);
        assert!(bomb.len() < 20_000);
        let agreed = offer("permessage-deflate; client_no_context_takeover").unwrap();
        let mut inf = Inflater::new(&agreed, 64 * 1024);
        assert_eq!(inf.frame(&bomb, true), Err(InflateError::TooBig { limit: 64 * 1024 }));
        assert!(inf.active.is_none());
        // Spread over frames, the limit is the message's, not the frame's.
        let mut inf = Inflater::new(&agreed, 64 * 1024);
        let mut result = Ok(Vec::new());
        for chunk in bomb.chunks(16) {
            result = inf.frame(chunk, false);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(InflateError::TooBig { limit: 64 * 1024 }));
        assert!(matches!(inf.frame(b"\xff\xff\xff", true), Err(InflateError::Corrupt(_))), "garbage");
    }
}
