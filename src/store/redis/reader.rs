//! [`Reader`]: the one thread per instance that follows the streams of the watched
//! rooms with `XREAD BLOCK` and delivers every new message, in `seq` order per room,
//! each exactly once.
//!
//! It owns its connection and, per watched room, the last seq it delivered; it never
//! touches rooms or sockets, only sends [`Delivery`]s. After an outage it reconnects
//! with exponential backoff and reads on from each room's last delivered seq, so
//! nothing is lost or repeated (provided Redis kept its data: a Redis restarted without
//! persistence starts every room again at seq 1, which this thread cannot tell apart
//! from a quiet room until the new seqs pass the old ones).

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, RedisResult, Value};

use super::reply::{self, Entry};
use super::{
    connect, follow_watch, room_of, spawn, Delivery, Hangup, Link, RoomKeys, StoreError, StoreOptions, Supervisor,
    Watch,
};
use crate::protocol::RoomName;

/// Starts the reader thread (see the module doc).
pub struct Reader;

impl Reader {
    /// Spawns the thread `redis-reader`. It runs until `watch` disconnects (or `out`
    /// does), and reports outages as [`Delivery::Status`] with [`Link::Reader`].
    ///
    /// `out` may be bounded: the thread then waits for the caller, which slows reading
    /// but loses nothing.
    pub fn spawn(
        url: &str,
        opts: StoreOptions,
        watch: Receiver<Watch>,
        out: Sender<Delivery>,
    ) -> Result<JoinHandle<()>, StoreError> {
        let sup = Supervisor::new(Link::Reader, url, opts, watch, out)?;
        let mut reader = ReaderLoop { sup, rooms: BTreeMap::new(), con: None };
        spawn("redis-reader", move || reader.run())
    }
}

/// A watched room: its stream key and the last seq delivered (or skipped).
struct Position {
    stream: String,
    last: u64,
}

struct ReaderLoop {
    sup: Supervisor,
    rooms: BTreeMap<RoomName, Position>,
    con: Option<Connection>,
}

/// How long an idle reader (no room watched) waits on its watch channel per turn.
const IDLE: Duration = Duration::from_secs(1);

impl ReaderLoop {
    fn run(&mut self) -> Result<(), Hangup> {
        loop {
            let (watch, rooms) = (&self.sup.watch, &mut self.rooms);
            let prefix = &self.sup.opts.prefix;
            let idle = if rooms.is_empty() { IDLE } else { Duration::ZERO };
            follow_watch(watch, idle, |w| apply(rooms, prefix, w))?;
            if self.rooms.is_empty() {
                continue;
            }
            let failure = match self.read() {
                Ok(reply) => match reply::streams(reply) {
                    Ok(streams) => {
                        self.sup.succeeded()?;
                        self.deliver(streams)?;
                        continue;
                    }
                    Err(e) => {
                        // Redis answered, but not as XREAD does: a bug or a foreign
                        // key; back off rather than spin on it.
                        log::error!("redis reader: {e}");
                        self.sup.succeeded()?;
                        self.sup.opts.max_backoff
                    }
                },
                Err(e) => {
                    self.con = None;
                    self.sup.failed(&e)?
                }
            };
            let (watch, rooms) = (&self.sup.watch, &mut self.rooms);
            let prefix = &self.sup.opts.prefix;
            follow_watch(watch, failure, |w| apply(rooms, prefix, w))?;
        }
    }

    /// One `XREAD COUNT n BLOCK ms STREAMS k1 k2 … s1-0 s2-0 …` from each room's
    /// position, connecting first if needed.
    fn read(&mut self) -> RedisResult<Value> {
        let con = match self.con.take() {
            Some(con) => self.con.insert(con),
            None => self.con.insert(connect(&self.sup.client, &self.sup.opts, self.sup.opts.block)?),
        };
        let mut xread = redis::cmd("XREAD");
        xread.arg("COUNT").arg(self.sup.opts.read_batch.max(1));
        xread.arg("BLOCK").arg(u64::try_from(self.sup.opts.block.as_millis()).unwrap_or(u64::MAX).max(1));
        xread.arg("STREAMS");
        for pos in self.rooms.values() {
            xread.arg(&pos.stream);
        }
        for pos in self.rooms.values() {
            xread.arg(format!("{}-0", pos.last));
        }
        xread.query(con)
    }

    /// Sends each room's new entries in order, with a `Gap` first where the stream was
    /// trimmed past the room's position.
    fn deliver(&mut self, streams: Vec<(String, Vec<Entry>)>) -> Result<(), Hangup> {
        for (key, entries) in streams {
            let Some(room) = room_of(&key, &self.sup.opts.prefix, "stream") else { continue };
            let Some(pos) = self.rooms.get_mut(&room) else { continue };
            for Entry { seq, json } in entries {
                if seq <= pos.last {
                    continue;
                }
                if seq > pos.last + 1 {
                    self.sup.send(Delivery::Gap { room: room.clone(), from: pos.last + 1, to: seq - 1 })?;
                }
                self.sup.send(Delivery::Msg { room: room.clone(), seq, json })?;
                pos.last = seq;
            }
        }
        Ok(())
    }
}

fn apply(rooms: &mut BTreeMap<RoomName, Position>, prefix: &str, watch: Watch) {
    match watch {
        Watch::Start { room, after_seq } => {
            let stream = RoomKeys::new(prefix, &room).stream();
            rooms.insert(room, Position { stream, last: after_seq });
        }
        Watch::Stop { room } => {
            rooms.remove(&room);
        }
    }
}
