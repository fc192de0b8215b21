//! [`Events`]: the one thread per instance that receives the events (system
//! join/leave/nick, typing) other instances publish for the watched rooms.
//!
//! It owns a pub/sub connection subscribed to `{p}:room:{room}:events` of each watched
//! room, skips this instance's own events (the envelope names the publisher) and sends
//! the rest as [`Delivery::Event`]. A second such thread, `redis-users`, follows
//! `{p}:users:events` (frames for a user's connections, as [`Delivery::User`]). Events are never stored: those published while
//! this thread is disconnected are lost, as a live `typing` should be. It reconnects
//! with exponential backoff and subscribes again. Never touches rooms or sockets.

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use redis::{Connection, ErrorKind, Msg, PubSub, RedisError, Value};

use super::access::users_channel;
use super::store::open_envelope;
use super::{
    follow_watch, room_of, spawn, Delivery, Hangup, Link, Master, RedisStoreError, RoomKeys, StoreOptions, Supervisor,
    Watch,
};
use crate::metrics::Beat;
use crate::protocol::RoomName;

/// Starts the events thread (see the module doc).
pub struct Events;

impl Events {
    /// Spawns the thread `redis-events`. It runs until `watch` disconnects (or `out`
    /// does), and reports outages as [`Delivery::Status`] with [`Link::Events`].
    /// `opts.instance` must be the id this instance publishes with.
    pub fn spawn(
        master: &Master,
        opts: StoreOptions,
        watch: Receiver<Watch>,
        out: Sender<Delivery>,
    ) -> Result<JoinHandle<()>, RedisStoreError> {
        let sup = Supervisor::new((Link::Events, Beat::Events), master, opts, watch, out)?;
        let mut events = EventsLoop { sup, rooms: BTreeMap::new(), users: false };
        spawn("redis-events", move || events.run())
    }

    /// Spawns the thread `redis-users`, subscribed to `{p}:users:events` only (frames
    /// for users' connections, as [`Delivery::User`]) on a connection of its own, so
    /// the rooms' thread still subscribes a room the moment it is watched. It runs
    /// until `hangup` disconnects (nothing is ever sent on it) or `out` does.
    pub fn spawn_users(
        master: &Master,
        opts: StoreOptions,
        hangup: Receiver<Watch>,
        out: Sender<Delivery>,
    ) -> Result<JoinHandle<()>, RedisStoreError> {
        let sup = Supervisor::new((Link::Events, Beat::Users), master, opts, hangup, out)?;
        let mut events = EventsLoop { sup, rooms: BTreeMap::new(), users: true };
        spawn("redis-users", move || events.run())
    }
}

struct EventsLoop {
    sup: Supervisor,
    /// The watched rooms (valid names only) and their channels.
    rooms: BTreeMap<RoomName, String>,
    /// The users channel's thread (no rooms).
    users: bool,
}

/// A subscribed connection that saw nothing for this long is PINGed, so a silent
/// outage (no reset, no FIN) is noticed too.
const PING_IDLE: Duration = Duration::from_secs(1);
/// How long an idle events thread (no room watched) waits on its watch channel per turn.
const IDLE: Duration = Duration::from_secs(1);

impl EventsLoop {
    fn run(&mut self) -> Result<(), Hangup> {
        loop {
            let idle = if self.rooms.is_empty() && !self.users { IDLE } else { Duration::ZERO };
            self.follow(idle)?;
            if self.rooms.is_empty() && !self.users {
                self.sup.beat(); // nothing to follow is not a stall
                continue;
            }
            let (failure, generation) = match self.sup.master.connect(&self.sup.opts, Duration::ZERO) {
                Ok((mut con, generation)) => (self.session(&mut con, generation)?, generation),
                Err(e) => (e, self.sup.master.current()),
            };
            self.sup.master.lost(generation);
            let wait = self.sup.failed(&failure)?;
            self.follow(wait)?;
        }
    }

    /// Applies watch commands arriving within `timeout` to the set of rooms (while not
    /// connected: the next session subscribes to the whole set).
    fn follow(&mut self, timeout: Duration) -> Result<(), Hangup> {
        let (rooms, prefix) = (&mut self.rooms, &self.sup.opts.prefix);
        follow_watch(&self.sup.watch, timeout, |w| {
            let _ = apply(rooms, prefix, w);
        })
    }

    /// Subscribes to every watched room and relays events until the connection fails;
    /// returns that failure.
    fn session(&mut self, con: &mut Connection, generation: u64) -> Result<RedisError, Hangup> {
        let mut pubsub = con.as_pubsub();
        let users = users_channel(&self.sup.opts.prefix);
        let channels: Vec<&String> = if self.users { vec![&users] } else { self.rooms.values().collect() };
        let subscribed = pubsub.set_read_timeout(Some(self.sup.opts.block)).and_then(|()| pubsub.subscribe(&channels));
        if let Err(e) = subscribed {
            return Ok(e);
        }
        self.sup.succeeded()?;
        let mut heard = Instant::now();
        loop {
            if let Err(e) = self.follow_subscribed(&mut pubsub) {
                return e;
            }
            if self.sup.master.current() != generation {
                return Ok(RedisError::from((ErrorKind::Io, "the Redis master moved: subscribing on the new one")));
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    heard = Instant::now();
                    self.sup.beat();
                    self.deliver(&msg)?;
                }
                Err(e) if e.is_timeout() => {
                    if heard.elapsed() >= PING_IDLE {
                        if let Err(e) = pubsub.ping::<Value>() {
                            return Ok(e);
                        }
                        heard = Instant::now();
                        self.sup.beat();
                    }
                }
                Err(e) => return Ok(e),
            }
        }
    }

    /// Applies queued watch commands, subscribing and unsubscribing as they say.
    fn follow_subscribed(&mut self, pubsub: &mut PubSub<'_>) -> Result<(), Result<RedisError, Hangup>> {
        let mut changes = Vec::new();
        let (rooms, prefix) = (&mut self.rooms, &self.sup.opts.prefix);
        follow_watch(&self.sup.watch, Duration::ZERO, |w| changes.extend(apply(rooms, prefix, w))).map_err(Err)?;
        for (channel, start) in changes {
            let done = if start { pubsub.subscribe(&channel) } else { pubsub.unsubscribe(&channel) };
            done.map_err(Ok)?;
        }
        Ok(())
    }

    /// Sends one published event, unless it is this instance's own or for a room no
    /// longer watched (it may arrive just after the unsubscribe).
    fn deliver(&self, msg: &Msg) -> Result<(), Hangup> {
        let Some((origin, json)) = open_envelope(msg.get_payload_bytes()) else {
            log::warn!("redis events: skipping a payload without an instance id on {}", msg.get_channel_name());
            return Ok(());
        };
        if origin == self.sup.opts.instance.as_str() {
            return Ok(());
        }
        if self.users {
            return self.sup.send(Delivery::User { json: Bytes::copy_from_slice(json) });
        }
        let Some(room) = room_of(msg.get_channel_name(), &self.sup.opts.prefix, "events") else { return Ok(()) };
        if !self.rooms.contains_key(&room) {
            return Ok(());
        }
        self.sup.send(Delivery::Event {
            room: room.clone(),
            json: Bytes::copy_from_slice(json),
            origin: origin.to_owned(),
        })
    }
}

/// Updates the watched rooms; returns `(channel, true)` for a newly watched room and
/// `(channel, false)` for one no longer watched, `None` when nothing changed.
fn apply(rooms: &mut BTreeMap<RoomName, String>, prefix: &str, watch: Watch) -> Option<(String, bool)> {
    match watch {
        Watch::Start { room, .. } => {
            if rooms.contains_key(&room) {
                return None;
            }
            let channel = RoomKeys::new(prefix, &room).events();
            Some((rooms.entry(room).or_insert(channel).clone(), true))
        }
        Watch::Stop { room } => rooms.remove(&room).map(|channel| (channel, false)),
    }
}
