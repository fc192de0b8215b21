//! The read side of permessage-deflate: between a connection's plaintext input and
//! tungstenite, compressed client frames (RSV1 set on a message's first frame) are
//! inflated and handed on as the plain frames the client would have sent without the
//! extension. tungstenite then checks everything else as it does for any client:
//! masking, control frames, fragmentation, UTF-8, sizes. A frame that is not part of a
//! compressed message passes through untouched, bytes as they came, and so does one
//! that misuses RSV1 (on a control frame or a continuation), which tungstenite then
//! refuses.
//!
//! Memory is bounded per connection: a compressed frame is collected only up to the
//! frame limit, its message inflates at most to that limit
//! ([`crate::protocol::deflate::Inflater`], close 1009 past it), and buffers are
//! freed as soon as tungstenite has read them: an idle connection keeps no buffer
//! here, only the client's window when it keeps its context.
//!
//! It never writes and never decides policy: the handshake decided the extension.

use std::io::{self, Cursor};

use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::protocol::deflate::{Agreed, InflateError, Inflater};

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// A compressed frame being collected: `payload` is the frame's full length from the
/// start, `filled` how much of it has arrived (so a frame that trickles in a byte at
/// a time costs its length once, not once per read).
struct Collecting {
    header: FrameHeader,
    filled: usize,
    payload: Vec<u8>,
}

/// One connection's inbound frame rewriter (see the module doc).
pub struct Unwrap {
    inflater: Inflater,
    max_frame: usize,
    /// A frame header being read.
    head: [u8; MAX_HEADER],
    head_len: usize,
    /// Bytes of the current frame still to pass through as they are.
    passthrough: u64,
    collecting: Option<Collecting>,
    /// Rewritten bytes tungstenite has not read yet, and how far it has read.
    out: Vec<u8>,
    out_at: usize,
    /// Inside a compressed message whose continuation frames are still to come.
    in_message: bool,
}

impl std::fmt::Debug for Unwrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwrap").field("inflater", &self.inflater).field("in_message", &self.in_message).finish()
    }
}

/// The error a read returns when a compressed message cannot be read: its
/// [`InflateError`] is inside (see [`inflate_error`]).
fn error(e: InflateError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The [`InflateError`] a read failed with, if that is why.
pub fn inflate_error(e: &io::Error) -> Option<&InflateError> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<InflateError>())
}

impl Unwrap {
    /// A rewriter for a client with whom `agreed` was negotiated; `max_frame` bounds
    /// a compressed frame and its inflated message.
    pub fn new(agreed: &Agreed, max_frame: usize) -> Unwrap {
        Unwrap {
            inflater: Inflater::new(agreed, max_frame),
            max_frame,
            head: [0; MAX_HEADER],
            head_len: 0,
            passthrough: 0,
            collecting: None,
            out: Vec::new(),
            out_at: 0,
            in_message: false,
        }
    }

    /// Reads plain frames into `buf`, reading the client's frames from `src`. A
    /// `WouldBlock` from `src` is passed on with the rewriter's state kept; `Ok(0)` only
    /// when `src` ended.
    pub fn read(&mut self, src: &mut dyn FnMut(&mut [u8]) -> io::Result<usize>, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_at < self.out.len() {
                let n = (self.out.len() - self.out_at).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.out_at..self.out_at + n]);
                self.out_at += n;
                if self.out_at == self.out.len() {
                    // Read out: an idle connection keeps no buffer.
                    self.out = Vec::new();
                    self.out_at = 0;
                }
                return Ok(n);
            }
            if self.passthrough > 0 {
                let want = buf.len().min(usize::try_from(self.passthrough).unwrap_or(usize::MAX));
                let n = src(&mut buf[..want])?;
                self.passthrough -= n as u64;
                return Ok(n);
            }
            if let Some(c) = &mut self.collecting {
                if c.filled < c.payload.len() {
                    let n = src(&mut c.payload[c.filled..])?;
                    c.filled += n;
                    if n == 0 {
                        return Ok(0);
                    }
                    continue;
                }
                let c = self.collecting.take().expect("checked above");
                self.inflate(c)?;
                continue;
            }
            // A header: read exactly its bytes, never into the payload.
            let need = header_len(&self.head[..self.head_len]);
            if self.head_len < need {
                let n = src(&mut self.head[self.head_len..need])?;
                if n == 0 {
                    return Ok(0);
                }
                self.head_len += n;
                continue;
            }
            self.on_header()?;
        }
    }

    /// A whole header is in `head`: pass the frame through, or start collecting it.
    fn on_header(&mut self) -> io::Result<()> {
        let raw = self.head;
        let raw = &raw[..self.head_len];
        self.head_len = 0;
        let parsed = FrameHeader::parse(&mut Cursor::new(raw)).ok().flatten();
        let Some((header, len)) = parsed else {
            // Not parseable: hand it on raw, tungstenite says what is wrong.
            self.pass(raw, u64::MAX);
            return Ok(());
        };
        let compressed = match header.opcode {
            OpCode::Data(Data::Text | Data::Binary) => header.rsv1 && !self.in_message,
            OpCode::Data(Data::Continue) => self.in_message && !header.rsv1,
            _ => false,
        };
        if !compressed {
            self.pass(raw, len);
            return Ok(());
        }
        if len > self.max_frame as u64 {
            // Too big to collect: hand on the header without RSV1, and tungstenite
            // refuses the frame's size (close 1009) before reading its payload.
            let mut head = raw.to_vec();
            head[0] &= !0x40;
            self.pass(&head, len);
            return Ok(());
        }
        self.in_message = !header.is_final;
        let len = len as usize;
        self.collecting = Some(Collecting { header, filled: 0, payload: vec![0; len] });
        Ok(())
    }

    fn pass(&mut self, head: &[u8], payload: u64) {
        self.out.clear();
        self.out.extend_from_slice(head);
        self.out_at = 0;
        self.passthrough = payload;
    }

    /// Inflates a collected frame and queues it, plain, for tungstenite.
    fn inflate(&mut self, c: Collecting) -> io::Result<()> {
        let Collecting { header, mut payload, .. } = c;
        if let Some(mask) = header.mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
        }
        let fin = header.is_final;
        let plain = self.inflater.frame(&payload, fin).map_err(error)?;
        drop(payload);
        // Masked with a zero key, as a client frame must be: the payload reads as is.
        let rewritten = FrameHeader { rsv1: false, mask: Some([0; 4]), ..header };
        self.out = Vec::with_capacity(rewritten.len(plain.len() as u64) + plain.len());
        rewritten.format(plain.len() as u64, &mut self.out).map_err(io::Error::other)?;
        self.out.extend_from_slice(&plain);
        self.out_at = 0;
        Ok(())
    }
}

/// The length of the header that starts with `head` (2 until its first two bytes
/// are known).
fn header_len(head: &[u8]) -> usize {
    if head.len() < 2 {
        return 2;
    }
    let ext = match head[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::{negotiate, Policy};
    use flate2::{Compress, Compression, FlushCompress};

    fn agreed(offer: &str) -> Agreed {
        negotiate([offer], Policy { client_max_window_bits: 15 }).unwrap()
    }

    /// A masked client frame, as a browser sends it.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    fn deflate(c: &mut Compress, msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(msg.len() + 64);
        c.compress_vec(msg, &mut out, FlushCompress::Sync).unwrap();
        out.truncate(out.len() - 4);
        out
    }

    /// Reads everything `input` turns into, `chunk` bytes of input at a time with a
    /// WouldBlock between chunks, as a non-blocking socket gives it.
    fn rewrite(u: &mut Unwrap, input: &[u8], chunk: usize) -> io::Result<Vec<u8>> {
        let mut pos = 0;
        let mut budget = 0;
        let mut got = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let mut src = |b: &mut [u8]| -> io::Result<usize> {
                if budget == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = b.len().min(budget).min(input.len() - pos);
                b[..n].copy_from_slice(&input[pos..pos + n]);
                pos += n;
                budget -= n;
                Ok(n)
            };
            match u.read(&mut src, &mut buf) {
                Ok(0) => return Ok(got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if pos == input.len() && u.out_at >= u.out.len() {
                        return Ok(got);
                    }
                    budget = chunk;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What tungstenite makes of the rewritten bytes.
    fn messages(bytes: Vec<u8>) -> Vec<tungstenite::Message> {
        let mut ws =
            tungstenite::WebSocket::from_raw_socket(Cursor::new(bytes), tungstenite::protocol::Role::Server, None);
        let mut out = Vec::new();
        while let Ok(m) = ws.read() {
            out.push(m);
        }
        out
    }

    #[test]
    fn compressed_fragmented_and_plain_frames_come_out_as_plain_messages() {
        let a = agreed("permessage-deflate");
        let mut c = Compress::new(Compression::default(), false);
        let hello = br#"{"type":"send","room":"lobby","text":"hello hello hello hello"}"#;
        let z1 = deflate(&mut c, hello);
        let z2 = deflate(&mut c, hello); // refers back into the first message
        let mut input = client_frame(0xC1, &z1);
        input.extend(client_frame(0x81, b"plain"));
        input.extend(client_frame(0x41, &z2[..3])); // compressed, not final
        input.extend(client_frame(0x89, b"ping in between"));
        input.extend(client_frame(0x80, &z2[3..])); // its continuation, no RSV1
        for chunk in [1, 5, 1000] {
            let mut u = Unwrap::new(&a, 1 << 16);
            let got = messages(rewrite(&mut u, &input, chunk).unwrap());
            let texts: Vec<String> = got.iter().filter_map(|m| m.to_text().ok()).map(str::to_owned).collect();
            let hello = String::from_utf8(hello.to_vec()).unwrap();
            assert_eq!(texts, [hello.clone(), "plain".into(), "ping in between".into(), hello], "chunk {chunk}");
            assert_eq!(u.out.capacity(), 0, "nothing buffered once read");
        }
    }

    #[test]
    fn rsv1_where_it_does_not_belong_reaches_tungstenite_which_refuses_it() {
        let a = agreed("permessage-deflate");
        let mut u = Unwrap::new(&a, 1 << 16);
        let bytes = rewrite(&mut u, &client_frame(0xC9, b"x"), 100).unwrap();
        assert_eq!(bytes[0], 0xC9, "a control frame with RSV1 passes as it is");
        let mut ws =
            tungstenite::WebSocket::from_raw_socket(Cursor::new(bytes), tungstenite::protocol::Role::Server, None);
        assert!(matches!(ws.read(), Err(tungstenite::Error::Protocol(_))));
    }

    #[test]
    fn a_bomb_is_refused_at_the_frame_limit() {
        let a = agreed("permessage-deflate");
        let mut u = Unwrap::new(&a, 64 * 1024);
        let bomb = deflate(&mut Compress::new(Compression::best(), false), &vec![b'a'; 8 << 20]);
        let e = rewrite(&mut u, &client_frame(0xC1, &bomb), 4096).unwrap_err();
        assert_eq!(inflate_error(&e), Some(&InflateError::TooBig { limit: 64 * 1024 }));
    }
}
