//! The write side of one SSE stream (the fallback transport): its room cursors, and
//! the `POST /send` requests waiting for their answers.
//!
//! An SSE stream is an ordinary connection (`outbox::Conn`) with this state attached: writer shards queue
//! it the same frames as a WebSocket, translated to SSE ([`Event`]) once per frame and
//! written with the same non-blocking writes, bounded backlog and slow-consumer rule.
//! Each event goes out as the stream's `id:` line plus the shared event bytes, queued
//! together; a live message to a stream in its room alone goes out as the frame's
//! shared whole event, one part, as a WebSocket frame does. This module never decides
//! policy and never touches chat state.

use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::protocol::sse::{Cursors, Event, Mark};
use crate::protocol::RoomName;

/// What one event puts on the stream's socket.
#[derive(Debug)]
pub enum Parts {
    /// One frame: a comment, or a whole event shared by every receiver.
    One(Bytes),
    /// The stream's own `id:` line and the shared event data, queued together.
    IdAndData([Bytes; 2]),
}

/// A `POST /send` in flight: it gets a copy of every ack and error queued to the
/// stream, and the pong whose `t` is its barrier instead of the stream.
#[derive(Debug)]
struct Tap {
    barrier: String,
    tx: Sender<Bytes>,
}

/// The SSE state of a stream's connection.
#[derive(Debug, Default)]
pub struct SseStream {
    cursors: Mutex<Cursors>,
    taps: Mutex<Vec<Tap>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SseStream {
    /// A stream resuming from `Last-Event-ID` rooms.
    pub fn resumed(rooms: &[(RoomName, u64)]) -> SseStream {
        SseStream { cursors: Mutex::new(Cursors::resumed(rooms)), taps: Mutex::default() }
    }

    /// Queues one event on this stream's connection without writing, through `push`
    /// (the connection's queue: one frame, or an `id:` line and its data that must stay
    /// together); returns what `push` returns, the backlog. Takes the queue as a
    /// function so that this module never imports the connection's type back.
    pub fn queue<E>(&self, event: &Event, push: impl FnOnce(Parts) -> Result<usize, E>) -> Result<usize, E> {
        match &event.mark {
            Mark::Answer(json) => {
                for tap in lock(&self.taps).iter() {
                    let _ = tap.tx.send(json.clone());
                }
            }
            Mark::Pong { t, json } => {
                if let Some(tap) = lock(&self.taps).iter().find(|tap| tap.barrier == *t) {
                    let _ = tap.tx.send(json.clone());
                    return Ok(0);
                }
            }
            _ => {}
        }
        if event.data.starts_with(b":") {
            // A comment (heartbeat) is no event: it needs no id.
            return push(Parts::One(event.data.clone()));
        }
        // Held while queueing, so `id:` lines go out in the order the cursors moved.
        let mut cursors = lock(&self.cursors);
        if let (true, Some(lone)) = (cursors.apply(&event.mark), &event.lone) {
            // In the message's room alone: the shared whole event, one part like a frame.
            return push(Parts::One(lone.clone()));
        }
        push(Parts::IdAndData([cursors.id_line(), event.data.clone()]))
    }

    /// Forgets a room the client left.
    pub fn forget(&self, room: &RoomName) {
        lock(&self.cursors).forget(room.as_str());
    }

    /// Starts copying answers to `tx` until [`SseStream::untap`]; `barrier` is the `t`
    /// (as JSON text) of the pong that ends the POST's wait.
    pub fn tap(&self, barrier: String, tx: Sender<Bytes>) {
        lock(&self.taps).push(Tap { barrier, tx });
    }

    pub fn untap(&self, barrier: &str) {
        lock(&self.taps).retain(|t| t.barrier != barrier);
    }
}
