//! The write path of a broadcast: hand every frame of a committed batch to its
//! connections' outboxes, then write each touched socket once, so everything pending
//! for a socket leaves in one `sendmsg`. Used by the writer shards and the benchmarks,
//! so that benchmarks measure what users run.
//!
//! A room's frame is staged once with a shared snapshot of its members, not once per
//! member: staging costs the same for 10 and 10,000 receivers. SSE receivers (the
//! fallback transport) share one SSE encoding of a room's frame, built by the first
//! shard that meets one; WebSocket receivers never pay for it. Likewise a room's
//! frame is compressed (permessage-deflate, without context) once, by the first shard
//! that meets a member that negotiated it, and those members all get the very same
//! compressed bytes; the others get the plain frame. Frames for one connection (acks,
//! `joined`, history pages) are compressed by the shard too, never by the dispatcher:
//! [`send_one`] and [`send_answer`], which run on the dispatcher and connection
//! threads, send plain frames. This module never
//! blocks and never decides policy: it reports which sockets are over the backlog
//! limit or still full, and the caller acts.

use std::sync::{Arc, OnceLock};

use crate::delivery::outbox::{Conn, ConnId, Flush, Refused};
use crate::delivery::sse::Parts;
use crate::protocol::sse::Event;
use crate::protocol::wire::{self, Frame};

/// One staged frame and who receives it.
#[derive(Debug, Clone)]
pub enum Out {
    /// To one connection (acks, errors, joined).
    One(Arc<Conn>, Frame),
    /// A page of an answer one connection asked for (history, search): its size does
    /// not make the client a slow consumer (up to `outbox::ANSWER_ALLOWANCE`).
    Answer(Arc<Conn>, Frame),
    /// To every member of a room as it was when the frame was staged, but `except`.
    /// `sse` is the frame as an SSE event and `deflated` its compressed form (None
    /// when compressing does not pay), each built on first use (see [`Out::room`]).
    Room {
        members: Arc<[Arc<Conn>]>,
        except: Option<ConnId>,
        frame: Frame,
        sse: OnceLock<Box<Event>>,
        deflated: OnceLock<Option<Frame>>,
    },
}

impl Out {
    /// A room's frame; its SSE encoding is built only if an SSE stream is a member,
    /// its compressed form only if a member negotiated permessage-deflate.
    pub fn room(members: Arc<[Arc<Conn>]>, except: Option<ConnId>, frame: Frame) -> Out {
        Out::Room { members, except, frame, sse: OnceLock::new(), deflated: OnceLock::new() }
    }
}

/// Whether a frame may be sent compressed, and where its compressed form comes from.
#[derive(Clone, Copy)]
enum Deflate<'a> {
    /// Always plain: the caller is the dispatcher or a connection thread.
    Never,
    /// Compressed for this one connection (a writer shard's `One` and `Answer`).
    Own,
    /// A room frame's compressed form, built once for every member.
    Shared(&'a OnceLock<Option<Frame>>),
}

/// The bytes `conn` is sent for `frame`: its compressed form when the connection
/// negotiated permessage-deflate and compressing pays, else the frame itself.
fn for_conn(conn: &Conn, frame: &Frame, deflate: Deflate<'_>) -> Frame {
    let Some(agreed) = conn.deflate() else { return frame.clone() };
    if !agreed.may_compress(wire::payload_len(frame)) {
        return frame.clone();
    }
    let z = match deflate {
        Deflate::Never => None,
        Deflate::Own => wire::deflated(frame),
        Deflate::Shared(cell) => cell.get_or_init(|| wire::deflated(frame)).clone(),
    };
    z.unwrap_or_else(|| frame.clone())
}

/// Queues `frame` on `conn`: as it is (or compressed) on a WebSocket, as an SSE event
/// on a stream (`shared` holds the event for every SSE receiver of a room frame).
fn push(
    conn: &Conn,
    frame: &Frame,
    shared: Option<&OnceLock<Box<Event>>>,
    answer: bool,
    deflate: Deflate<'_>,
) -> Result<usize, Refused> {
    let Some(stream) = conn.sse() else {
        let frame = for_conn(conn, frame, deflate);
        // A requested answer (history pages) is exempt, up to a bound, from the backlog
        // that marks a slow consumer; see `Conn::push_answer`.
        return if answer { conn.push_answer(frame) } else { conn.push(frame) };
    };
    let push = |parts: Parts| match parts {
        Parts::One(frame) => conn.push(frame),
        Parts::IdAndData(parts) => conn.push_parts(parts),
    };
    match shared {
        Some(cell) => stream.queue(cell.get_or_init(|| Box::new(Event::from_frame(frame))), push),
        None => stream.queue(&Event::from_frame(frame), push),
    }
}

/// Queues and writes one frame outside a batch (a connection thread's own replies),
/// in the connection's transport.
pub fn send_one(conn: &Conn, frame: &Frame) -> Result<Flush, Refused> {
    push(conn, frame, None, false, Deflate::Never)?;
    Ok(conn.flush())
}

/// Queues one frame for `conn`, compressed on this thread when the connection
/// negotiated permessage-deflate, and writes what the socket takes now. For the
/// conformance echo, whose connection thread is its only writer of answers.
pub fn send_compressed(conn: &Conn, frame: &Frame) -> Result<Flush, Refused> {
    push(conn, frame, None, false, Deflate::Own)?;
    Ok(conn.flush())
}

/// Queues the frames of an answer one connection asked for and writes what the socket
/// takes now, outside any batch, so the answer waits for no writer shard's broadcast
/// pass. Returns the backlog after the last frame (the caller judges slowness) and the
/// write's outcome.
pub fn send_answer(conn: &Conn, frames: impl IntoIterator<Item = Frame>) -> Result<(usize, Flush), Refused> {
    let mut backlog = 0;
    for frame in frames {
        backlog = push(conn, &frame, None, true, Deflate::Never)?;
    }
    Ok((backlog, conn.flush()))
}

/// Which slice of the connections a writer owns: those with `id % count == index`.
/// Each connection belongs to exactly one shard, so its frames keep their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole set (one writer).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn owns(self, id: ConnId) -> bool {
        self.count == 1 || id as usize % self.count == self.index
    }
}

/// What one delivery pass did.
#[derive(Debug, Default)]
pub struct Delivered {
    /// Frames queued (refused ones, to closing connections, are not counted).
    pub frames: u64,
    /// Connections whose backlog passed the limit: to be closed as slow consumers.
    pub slow: Vec<Arc<Conn>>,
    /// Connections whose socket could not take everything: to be retried.
    pub blocked: Vec<Arc<Conn>>,
}

/// Delivers `items`, in order, to the connections `shard` owns: every frame is queued
/// first, then each touched socket is written once. `max_backlog` is the
/// slow-consumer limit.
pub fn deliver<'a>(items: impl IntoIterator<Item = &'a Out>, shard: Shard, max_backlog: usize) -> Delivered {
    let mut out = Delivered::default();
    let mut dirty: Vec<Arc<Conn>> = Vec::new();
    let mut queue = |conn: &Arc<Conn>,
                     frame: &Frame,
                     shared: Option<&OnceLock<Box<Event>>>,
                     answer: bool,
                     deflate: Deflate<'_>,
                     out: &mut Delivered| {
        let Ok(backlog) = push(conn, frame, shared, answer, deflate) else { return };
        out.frames += 1;
        // Slow consumers are rare: a linear check keeps the common path allocation-free.
        if backlog > max_backlog && !out.slow.iter().any(|c| c.id == conn.id) {
            out.slow.push(conn.clone());
        }
        if conn.mark_dirty() {
            dirty.push(conn.clone());
        }
    };
    for item in items {
        match item {
            Out::One(conn, frame) | Out::Answer(conn, frame) => {
                if shard.owns(conn.id) {
                    queue(conn, frame, None, matches!(item, Out::Answer(..)), Deflate::Own, &mut out);
                }
            }
            Out::Room { members, except, frame, sse, deflated } => {
                for conn in members.iter() {
                    if shard.owns(conn.id) && Some(conn.id) != *except {
                        queue(conn, frame, Some(sse), false, Deflate::Shared(deflated), &mut out);
                    }
                }
            }
        }
    }
    for conn in dirty {
        conn.clear_dirty();
        if conn.flush() == Flush::Pending {
            out.blocked.push(conn);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn shards_split_the_room_and_each_socket_gets_every_frame_once_in_order() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        let mut conns = Vec::new();
        for id in 0..6u64 {
            clients.push(TcpStream::connect(l.local_addr().unwrap()).unwrap());
            let (s, peer) = l.accept().unwrap();
            conns.push(Arc::new(Conn::new(id, s, peer)));
        }
        let members: Arc<[Arc<Conn>]> = conns.iter().cloned().collect();
        let batch: Vec<Out> = vec![
            Out::room(members.clone(), Some(3), wire::text_frame(b"a")),
            Out::One(conns[3].clone(), wire::text_frame(b"b")),
            Out::room(members, None, wire::text_frame(b"c")),
        ];
        let mut total = 0;
        for index in 0..2 {
            let done = deliver(&batch, Shard { index, count: 2 }, usize::MAX);
            assert!(done.blocked.is_empty() && done.slow.is_empty());
            total += done.frames;
        }
        assert_eq!(total, 5 + 1 + 6);
        for (id, c) in clients.iter_mut().enumerate() {
            let mut buf = vec![0u8; 6];
            c.read_exact(&mut buf).unwrap();
            let expected: &[u8] = if id == 3 { b"\x81\x01b\x81\x01c" } else { b"\x81\x01a\x81\x01c" };
            assert_eq!(buf, expected, "socket {id}");
        }
    }

    #[test]
    fn slow_sockets_are_reported_once() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        let conn = Arc::new(Conn::new(1, s, peer));
        let big = wire::text_frame(&vec![b'x'; 60_000]);
        let batch: Vec<Out> = (0..200).map(|_| Out::One(conn.clone(), big.clone())).collect();
        let done = deliver(&batch, Shard::ALL, 1_000_000);
        assert_eq!(done.slow.len(), 1);
        assert_eq!(done.blocked.len(), 1);
    }
}
