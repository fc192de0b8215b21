//! [`Reader`]: the one thread per instance that follows the watched rooms and delivers
//! every new message, in `seq` order per room, each exactly once.
//!
//! It blocks (`XREAD BLOCK`) on the deployment's news stream alone, where every append
//! announces (room, seq), and then reads the streams of only the watched rooms that
//! have news, from each room's position. Blocking on every watched room's stream
//! instead cost Redis a lookup per room per call: with 500 rooms, 410 µs per `XREAD`,
//! as much Redis time as every append together (docs/PERFORMANCE.md). What the news
//! cannot tell — entries trimmed from it while the reader lagged, messages appended by
//! a natter from before it, a room's news read just before the room was watched — a
//! sweep finds: every watched room is read once a second, and at every new connection.
//!
//! It owns its connection and, per watched room, the last seq it delivered and the
//! epoch of the history it follows; it never touches rooms or sockets, only sends
//! [`Delivery`]s. After an outage it reconnects with exponential backoff and reads on
//! from each room's last delivered seq, so nothing is lost or repeated — provided Redis
//! kept its data. Each new connection first checks every watched room's seq and epoch:
//! a room whose seq went back or whose epoch changed (a Redis restarted without
//! persistence starts every room again at seq 1, under a new epoch) gets a
//! [`Delivery::Reset`] and is followed from its new head. A seq that went back in the
//! same epoch (a replica promoted without the newest appends, an older snapshot) starts
//! a new epoch first (`scripts::BUMP_LUA`), so the seqs this instance delivered are
//! never handed out again in the epoch they were delivered in. A stream entry that
//! announces another epoch than the one followed (field `e`: some other instance or an
//! append started it) is a reset too, found while reading, without a new connection.
//! What the reader delivered is kept in the shared [`super::Heads`] for the appends.

use std::collections::{BTreeMap, BTreeSet};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, RedisResult, Value};

use bytes::Bytes;

use super::reply::{self, Listed};
use super::scripts::Scripts;
use super::{
    follow_watch, news_key, room_of, spawn, Delivery, Hangup, Link, Master, RedisStoreError, RoomKeys, StoreOptions,
    Supervisor, Watch,
};
use crate::metrics::Beat;
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
        master: &Master,
        opts: StoreOptions,
        watch: Receiver<Watch>,
        out: Sender<Delivery>,
    ) -> Result<JoinHandle<()>, RedisStoreError> {
        let news = news_key(&opts.prefix);
        let sup = Supervisor::new((Link::Reader, Beat::Reader), master, opts, watch, out)?;
        let mut reader = ReaderLoop {
            sup,
            rooms: BTreeMap::new(),
            con: None,
            generation: 0,
            resets: Vec::new(),
            news,
            cursor: String::new(),
            dirty: BTreeSet::new(),
            next_sweep: Instant::now(),
            scripts: Scripts::new(),
        };
        spawn("redis-reader", move || reader.run())
    }
}

/// A watched room: its keys, the last seq delivered (or skipped) and the epoch of the
/// history that seq belongs to (`None` until known).
struct Position {
    keys: RoomKeys,
    stream: String,
    msgs: String,
    last: u64,
    epoch: Option<String>,
}

struct ReaderLoop {
    sup: Supervisor,
    rooms: BTreeMap<RoomName, Position>,
    con: Option<Connection>,
    /// The master generation `con` was opened under ([`Master::current`]).
    generation: u64,
    /// Resets found when a connection was opened, sent before anything it reads.
    resets: Vec<Delivery>,
    /// The news stream's key, and the id of the last of its entries read.
    news: String,
    cursor: String,
    /// Watched rooms that may have messages past their position: the next read takes
    /// their streams instead of waiting on the news.
    dirty: BTreeSet<RoomName>,
    next_sweep: Instant,
    scripts: Scripts,
}

/// One room's new messages as the reader delivers them: (seq, JSON, the epoch the entry
/// starts if it starts one), in seq order.
type Bodies = (RoomName, Vec<(u64, Bytes, Option<String>)>);

/// How long an idle reader (no room watched) waits on its watch channel per turn.
const IDLE: Duration = Duration::from_secs(1);

/// How often every watched room is read whatever the news said.
const SWEEP: Duration = Duration::from_secs(1);

impl ReaderLoop {
    fn run(&mut self) -> Result<(), Hangup> {
        loop {
            let (watch, rooms, dirty) = (&self.sup.watch, &mut self.rooms, &mut self.dirty);
            let opts = &self.sup.opts;
            let idle = if rooms.is_empty() { IDLE } else { Duration::ZERO };
            follow_watch(watch, idle, |w| apply(rooms, dirty, opts, w))?;
            if self.rooms.is_empty() {
                self.sup.beat(); // nothing to deliver is not a stall
                continue;
            }
            let read = self.read();
            for reset in std::mem::take(&mut self.resets) {
                self.sup.send(reset)?;
            }
            let failure = match read {
                Ok(Ok(streams)) => {
                    self.sup.succeeded()?;
                    self.deliver(streams)?;
                    continue;
                }
                Ok(Err(e)) => {
                    // Redis answered, but not as XREAD does: a bug or a foreign key;
                    // back off rather than spin on it.
                    log::error!("redis reader: {e}");
                    self.sup.succeeded()?;
                    self.sup.opts.max_backoff
                }
                Err(e) => {
                    self.con = None;
                    self.sup.master.lost(self.generation);
                    self.sup.failed(&e)?
                }
            };
            let (watch, rooms, dirty) = (&self.sup.watch, &mut self.rooms, &mut self.dirty);
            let opts = &self.sup.opts;
            follow_watch(watch, failure, |w| apply(rooms, dirty, opts, w))?;
        }
    }

    /// One turn: the new messages of the rooms with news (waiting on the news stream
    /// for up to `block` when no room is known to have any), connecting first if
    /// needed. A new connection checks each room's history and reads every room.
    fn read(&mut self) -> RedisResult<Result<Vec<Bodies>, RedisStoreError>> {
        if self.generation != self.sup.master.current() {
            self.con = None; // the master moved: follow it
        }
        if self.con.is_none() {
            let (mut con, generation) = self.sup.master.connect(&self.sup.opts, self.sup.opts.block)?;
            self.generation = generation;
            self.resets = check_histories(&mut con, &self.scripts, &self.sup.opts.heads, &mut self.rooms)?;
            // Read on from the news stream's end: what came before is in the sweep.
            let last: Vec<(String, Value)> =
                redis::cmd("XREVRANGE").arg(&self.news).arg("+").arg("-").arg("COUNT").arg(1).query(&mut con)?;
            self.cursor = last.into_iter().next().map_or_else(|| "0-0".to_owned(), |(id, _)| id);
            self.con = Some(con);
            self.next_sweep = Instant::now();
        }
        if Instant::now() >= self.next_sweep {
            self.next_sweep = Instant::now() + SWEEP;
            self.dirty.extend(self.rooms.keys().cloned());
        }
        if self.dirty.is_empty() {
            if let Err(e) = self.read_news()? {
                return Ok(Err(e));
            }
            if self.dirty.is_empty() {
                return Ok(Ok(Vec::new()));
            }
        }
        let reply = self.read_streams()?;
        self.with_bodies(reply)
    }

    /// Waits up to `block` for news (`XREAD COUNT n BLOCK ms STREAMS news cursor`) and
    /// marks each watched room with a message past its position.
    fn read_news(&mut self) -> RedisResult<Result<(), RedisStoreError>> {
        let Some(con) = self.con.as_mut() else { return Ok(Ok(())) };
        let mut xread = redis::cmd("XREAD");
        xread.arg("COUNT").arg(self.sup.opts.read_batch.max(1));
        xread.arg("BLOCK").arg(u64::try_from(self.sup.opts.block.as_millis()).unwrap_or(u64::MAX).max(1));
        xread.arg("STREAMS").arg(&self.news).arg(&self.cursor);
        let news = match reply::news(xread.query(con)?) {
            Ok(news) => news,
            Err(e) => return Ok(Err(e)),
        };
        for item in news {
            if let Some((room, seq)) = item.room_seq.and_then(|(room, seq)| Some((RoomName::parse(&room)?, seq))) {
                if self.rooms.get(&room).is_some_and(|pos| seq > pos.last) {
                    self.dirty.insert(room);
                }
            }
            self.cursor = item.id;
        }
        Ok(Ok(()))
    }

    /// One `XREAD COUNT n STREAMS k1 k2 … s1-0 s2-0 …` of the rooms with news, from
    /// each room's position. A room that gave a full batch stays marked: it may have more.
    fn read_streams(&mut self) -> RedisResult<Value> {
        let rooms: Vec<&Position> = std::mem::take(&mut self.dirty).iter().filter_map(|r| self.rooms.get(r)).collect();
        let Some(con) = self.con.as_mut() else { return Ok(Value::Nil) };
        if rooms.is_empty() {
            return Ok(Value::Nil);
        }
        let mut xread = redis::cmd("XREAD");
        xread.arg("COUNT").arg(self.sup.opts.read_batch.max(1));
        xread.arg("STREAMS");
        for pos in &rooms {
            xread.arg(&pos.stream);
        }
        for pos in &rooms {
            xread.arg(format!("{}-0", pos.last));
        }
        xread.query(con)
    }

    /// The streams of an `XREAD` reply, each entry with its body: one `HMGET` per room
    /// of what the `msgs` hash holds (an entry written by an earlier natter holds its
    /// own). An entry whose body is gone was trimmed meanwhile (the append script trims
    /// the stream and the bodies together): it is left out, and reported as a gap.
    fn with_bodies(&mut self, reply: Value) -> RedisResult<Result<Vec<Bodies>, RedisStoreError>> {
        let streams = match reply::streams(reply) {
            Ok(streams) => streams,
            Err(e) => return Ok(Err(e)),
        };
        let batch = self.sup.opts.read_batch.max(1);
        let listed: Vec<(&Position, RoomName, Vec<Listed>)> = streams
            .into_iter()
            .filter_map(|(key, entries)| {
                let room = room_of(&key, &self.sup.opts.prefix, "stream")?;
                if entries.len() >= batch {
                    self.dirty.insert(room.clone());
                }
                Some((self.rooms.get(&room)?, room, entries))
            })
            .collect();
        let mut pipe = redis::pipe();
        for (pos, _, entries) in &listed {
            pipe.cmd("HMGET").arg(&pos.msgs).arg(entries.iter().map(|e| e.seq).collect::<Vec<_>>());
        }
        let Some(con) = self.con.as_mut() else { return Ok(Ok(Vec::new())) };
        let bodies: Vec<Vec<Option<Vec<u8>>>> = if listed.is_empty() { Vec::new() } else { pipe.query(con)? };
        Ok(Ok(listed
            .into_iter()
            .zip(bodies)
            .map(|((_, room, entries), bodies)| {
                let found = entries
                    .into_iter()
                    .zip(bodies)
                    .filter_map(|(e, body)| Some((e.seq, body.map(Bytes::from).or(e.inline)?, e.epoch)));
                (room, found.collect())
            })
            .collect()))
    }

    /// Sends each room's new entries in order, with a `Gap` first where the stream was
    /// trimmed past the room's position, and a `Reset` first where an entry starts
    /// another epoch than the one followed.
    fn deliver(&mut self, streams: Vec<Bodies>) -> Result<(), Hangup> {
        let mut epoch_unknown = false;
        let heads = &self.sup.opts.heads;
        for (room, entries) in streams {
            let Some(pos) = self.rooms.get_mut(&room) else { continue };
            for (seq, json, starts) in entries {
                if seq <= pos.last {
                    continue;
                }
                if let Some(epoch) = starts {
                    if pos.epoch.as_ref().is_some_and(|followed| *followed != epoch) {
                        log::warn!("redis reader: {room} starts a new epoch at seq {seq}: its members are reset");
                        self.sup.send(Delivery::Reset { room: room.clone(), head: seq - 1 })?;
                        heads.restart(&room, &epoch, seq - 1);
                    }
                    pos.epoch = Some(epoch);
                } else if seq > pos.last + 1 {
                    self.sup.send(Delivery::Gap { room: room.clone(), from: pos.last + 1, to: seq - 1 })?;
                }
                self.sup.send(Delivery::Msg { room: room.clone(), seq, json })?;
                pos.last = seq;
            }
            match &pos.epoch {
                Some(epoch) => heads.saw(&room, epoch, pos.last),
                None => epoch_unknown = true,
            }
        }
        if epoch_unknown {
            // A room watched before its first message: learn the epoch its messages
            // belong to, so a later loss of it is noticed whatever the seqs do.
            let unknown = self.rooms.iter_mut().filter(|(_, p)| p.epoch.is_none() && p.last > 0);
            let (scripts, heads) = (&self.scripts, &self.sup.opts.heads);
            if let Some(Ok(resets)) = self.con.as_mut().map(|con| check_histories(con, scripts, heads, unknown)) {
                for reset in resets {
                    self.sup.send(reset)?;
                }
            }
        }
        Ok(())
    }
}

/// Reads the seq and epoch of `rooms` in one round trip. A room whose seq is below the
/// position, or whose epoch is not the one followed, lost its history: a new epoch is
/// started for it when none was yet (`scripts::BUMP_LUA`), and it is followed from its
/// new head and reported. A room whose epoch was not known takes the one read.
fn check_histories<'a>(
    con: &mut Connection,
    scripts: &Scripts,
    heads: &super::Heads,
    rooms: impl IntoIterator<Item = (&'a RoomName, &'a mut Position)>,
) -> RedisResult<Vec<Delivery>> {
    let rooms: Vec<(&RoomName, &mut Position)> = rooms.into_iter().collect();
    if rooms.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (_, pos) in &rooms {
        pipe.cmd("GET").arg(pos.keys.seq()).cmd("GET").arg(pos.keys.epoch());
    }
    let found: Vec<Option<String>> = pipe.query(con)?;
    let mut resets = Vec::new();
    for ((room, pos), pair) in rooms.into_iter().zip(found.chunks(2)) {
        let mut head = pair[0].as_deref().and_then(|h| h.parse().ok()).unwrap_or(0);
        let mut epoch = pair.get(1).cloned().flatten();
        if head < pos.last || (pos.epoch.is_some() && epoch != pos.epoch) {
            if epoch.is_none() || epoch == pos.epoch {
                // Gone back in the same epoch, or no epoch at all: start the new one
                // now (unless an instance just did), so no seq this instance delivered
                // names another message in the epoch it was delivered in.
                let mut bump = scripts.bump.key(pos.keys.seq());
                bump.key(pos.keys.epoch()).key(pos.keys.epoch_mark());
                bump.arg(pos.epoch.as_deref().unwrap_or("")).arg(crate::store::new_epoch()).arg(pos.last);
                let (now, started): (u64, String) = bump.invoke(con)?;
                (head, epoch) = (now, Some(started).filter(|e| !e.is_empty()));
            }
            log::warn!("redis reader: the history of {room} is gone (seq {head}, was {}): following it anew", pos.last);
            resets.push(Delivery::Reset { room: room.clone(), head });
            pos.last = head;
            heads.restart(room, epoch.as_deref().unwrap_or(""), head);
        }
        pos.epoch = epoch;
    }
    Ok(resets)
}

/// Follows a watch command. A newly watched room is read at once: its news may have
/// been read before it was watched.
fn apply(rooms: &mut BTreeMap<RoomName, Position>, dirty: &mut BTreeSet<RoomName>, opts: &StoreOptions, watch: Watch) {
    match watch {
        Watch::Start { room, after_seq, epoch } => {
            if let Some(epoch) = &epoch {
                opts.heads.saw(&room, epoch, after_seq);
            }
            let keys = RoomKeys::new(&opts.prefix, &room);
            let (stream, msgs) = (keys.stream(), keys.msgs());
            dirty.insert(room.clone());
            rooms.insert(room, Position { keys, stream, msgs, last: after_seq, epoch });
        }
        Watch::Stop { room } => {
            opts.heads.forget(&room);
            dirty.remove(&room);
            rooms.remove(&room);
        }
    }
}
