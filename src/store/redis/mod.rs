//! The Redis layer that lets several natter instances share rooms (scale-out).
//!
//! Owns: the Redis key layout, the connections to Redis, and the blocking calls on
//! them. It never touches rooms, members or sockets, and it never decides what a
//! client sees: it stores and reads messages, relays events and keeps presence, and
//! hands the results back as values or [`Delivery`]s. Every call blocks (for at most
//! the configured timeouts), so it runs only on threads the caller dedicates to it —
//! never on the dispatcher's hot path.
//!
//! Three pieces, each with its own connection:
//! - [`RedisStore`] ([`store`]): request/response calls — `append` (one Lua script,
//!   `scripts.rs`: de-duplication, `INCR` seq, `XADD`, the body), `range`/`recent`/`head` for history and
//!   resume, `query` (`query.rs`) for scroll-back and search (a bounded scan of the
//!   stream, matched by `search.rs`), `change` (`edits.rs`) for edits and deletions,
//!   `mark_read` (`reads.rs`) for read markers, `publish` for events, presence
//!   ([`presence`]) and `ping`.
//! - [`Reader`] ([`reader`]): one thread waiting (`XREAD BLOCK`) on the news stream
//!   and reading the watched rooms with news, delivering every new message in `seq`
//!   order, never skipping one.
//! - [`Events`] ([`events`]): one thread subscribed to the watched rooms' event
//!   channels (system join/leave/nick, typing: never stored).
//!
//! And the threads Redis mode runs on them, each handed callbacks by `lib.rs`, never
//! naming the dispatcher's types: [`io`], the `redis-io` thread that performs the
//! dispatcher's requests in order and hands every answer back; [`start_readers`], the
//! `redis-history-N` threads answering scroll-back and search.
//!
//! ## Keys (`{p}` = [`StoreOptions::prefix`], `{room}` a [`RoomName`], which holds no `:`)
//! | key | type | holds |
//! |---|---|---|
//! | `{p}:room:{room}:seq` | string | the room's last seq (`INCR`) |
//! | `{p}:room:{room}:stream` | stream | the room's order: message seq `S` as entry `S-0` (field `b` = `1`; an entry written by an earlier natter holds its JSON itself, field `m`); `MAXLEN ~ cap` |
//! | `{p}:room:{room}:msgs` | hash | seq → the message's JSON as it is now (its body): a stream entry cannot be changed, a hash field can; trimmed with the stream |
//! | `{p}:room:{room}:low` | string | the lowest seq whose body may still be in `msgs` (where the next trim starts) |
//! | `{p}:room:{room}:edits` | hash | seq of a message → the seqs of its edit events (space-separated), so a deletion takes their text too |
//! | `{p}:room:{room}:replies` | hash | seq of a message → the seqs of the replies quoting it (space-separated), so a deletion rewrites their quotes as deleted; trimmed with the stream |
//! | `{p}:room:{room}:mentions` | hash | user id → the seqs of the newest messages that mention them above their read marker (space-separated, at most [`crate::store::mentions::MAX_UNREAD`]): added by the append script, cut by the read-marker script, a deleted message's taken out |
//! | `{p}:room:{room}:epoch` | string | the room's epoch: set by the append script with the first message it stores while the key is missing (a Redis that lost its data starts a new one), and anew when the room's history went back behind what an instance acked or delivered (`scripts::BUMP_LUA`, [`heads`]) |
//! | `{p}:room:{room}:epoch_mark` | string | a new epoch not yet announced: the next appended stream entry carries it (field `e`), so every reader learns where it starts |
//! | `{p}:room:{room}:id:{n}:{uid}:{id}` | string, TTL | the seq of client id `id` from user `uid` (`n` = byte length of `uid`, so no uid/id split is ambiguous) |
//! | `{p}:room:{room}:events` | pub/sub channel | `{instance} {json}` event envelopes (system, typing, read markers) |
//! | `{p}:reads:{uid}` | hash | room → how far the user has read it (only moves forward) |
//! | `{p}:room:{room}:access` | hash | who may join ([`access`]): `owner` of a private room, `a`/`b` of a DM room, `ro` when read-only, `kick:{uid}` → until (ms) |
//! | `{p}:room:{room}:invited` | set | users invited to the private room |
//! | `{p}:news` | stream | one entry per stored message of any room (`r` room, `s` seq), `MAXLEN ~ 100000`: what the readers follow to learn which rooms have news |
//! | `{p}:users` | hash | lasting user id → name |
//! | `{p}:dms:{uid}` | set | the user's DM rooms |
//! | `{p}:users:events` | pub/sub channel | `{instance} {"to":uid,"frame":…}`: `dm`/`invited` frames for a user's connections on every instance |
//! | `{p}:room:{room}:present` | set, TTL | instances that have users in the room |
//! | `{p}:room:{room}:present:{instance}` | hash, TTL | uid → name for one instance's users |
//!
//! A user's export and erasure walk every room's stream and `SCAN` the keys above that
//! name users ([`userdata`]); an erasure rewrites the bodies that name them in `msgs`.
//!
//! ## Failures
//! A call that cannot reach Redis returns [`RedisStoreError::Unavailable`] within the
//! configured timeouts and drops its connection; the next call connects again (one
//! attempt, no sleeping: backoff between calls is the caller's). A kept connection
//! found broken when used (Redis restarted while it sat idle) is replaced and the call
//! sent once more at once, so the first call after Redis is back succeeds; an append's
//! second try first looks for what the first one may have stored. The [`Reader`] and
//! [`Events`] threads reconnect by themselves with exponential backoff and report
//! [`Delivery::Status`] once per outage and once per recovery.

mod access;
mod admin;
mod dms;
mod edits;
mod events;
mod heads;
pub mod io;
mod master;
mod presence;
mod query;
mod reader;
mod reads;
mod reply;
mod scripts;
mod search;
mod store;
mod userdata;

use std::fmt;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::metrics::Beat;
use crate::protocol::RoomName;

pub use access::{kick_field, RoomAccess};
pub use dms::DmOpened;
pub use edits::{deleted, edited};
pub use events::Events;
pub use heads::Heads;
pub use master::Master;
pub use presence::{presence_changes, PresenceChanges};
pub use query::start_readers;
pub use reader::Reader;
pub use reply::Entry;
pub use store::{Appended, ClientPost, Range, RedisStore};
pub use userdata::{Authored, Forgotten, Row};

/// The change an edit or delete event makes to message `of` (stored by `edits.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOf {
    /// The author's new text (in the event); the message gets `"edited":ts`.
    Edit { of: u64, ts: u64 },
    /// By the author, or by a moderator (`by_mod`).
    Delete { of: u64, by_mod: bool },
    /// Toggles the acting user's reaction (the emoji is the event's, `on` last).
    React { of: u64 },
}

impl ChangeOf {
    pub fn of(&self) -> u64 {
        match self {
            ChangeOf::Edit { of, .. } | ChangeOf::Delete { of, .. } | ChangeOf::React { of } => *of,
        }
    }
}

/// How the Redis layer behaves; every field has a default ([`StoreOptions::default`]).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Prefix of every key and channel, so several deployments can share one Redis.
    /// Default `natter`.
    pub prefix: String,
    /// This instance's id: stamps published events (so an instance skips its own) and
    /// names its presence keys. Default: 8 random hex characters.
    pub instance: InstanceId,
    /// Entries kept per room stream (`XADD MAXLEN ~ cap`; Redis trims whole nodes, so a
    /// stream may hold somewhat more). Default 10,000.
    pub stream_cap: usize,
    /// How long a client message id is remembered for de-duplication. Default 24 h.
    pub dedup_ttl: Duration,
    /// How long this instance's presence survives without a
    /// [`RedisStore::presence_refresh`]; refresh every third of it. Default 15 s.
    pub presence_ttl: Duration,
    /// TCP connect timeout: an outage is noticed within this. Default 500 ms.
    pub connect_timeout: Duration,
    /// Read/write timeout of every call (added to `block` for the reader's `XREAD`).
    /// Default 500 ms.
    pub io_timeout: Duration,
    /// How long the reader's `XREAD BLOCK` and the events thread's read wait before
    /// looking at their watch channel again. Default 100 ms.
    pub block: Duration,
    /// The longest wait between reconnect attempts of the reader and events threads
    /// (the wait starts at 50 ms and doubles). Default 2 s.
    pub max_backoff: Duration,
    /// Entries per stream the reader takes in one `XREAD` (`COUNT`). Default 1,000.
    pub read_batch: usize,
    /// What this instance has acked and delivered of each room, shared by every clone
    /// of these options (so by all of one instance's Redis threads): the append script
    /// and the reader measure Redis's history against it ([`heads`]).
    pub heads: Heads,
    /// `--redis-min-replicas`: a post is acked only once `WAIT` says this many
    /// replicas hold it (one `WAIT` per pipeline of appends). Default 0: acked when the
    /// master stored it.
    pub min_replicas: usize,
    /// How long that `WAIT` waits before the posts are answered `unavailable`.
    /// Default 1 s.
    pub replica_wait: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            prefix: "natter".into(),
            instance: InstanceId::random(),
            stream_cap: 10_000,
            dedup_ttl: Duration::from_secs(24 * 3600),
            presence_ttl: Duration::from_secs(15),
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_millis(500),
            block: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            read_batch: 1_000,
            heads: Heads::default(),
            min_replicas: 0,
            replica_wait: Duration::from_secs(1),
        }
    }
}

impl StoreOptions {
    /// What the request/response connection's read timeout adds for `WAIT`.
    pub(crate) fn replica_wait_read(&self) -> Duration {
        if self.min_replicas > 0 {
            self.replica_wait
        } else {
            Duration::ZERO
        }
    }

    /// The most entries a room's stream may hold: `MAXLEN ~` removes only whole nodes
    /// (of up to Redis's `stream-node-max-entries`, 100 by default), so a stream keeps
    /// up to a node more than `stream_cap`. This allows the cap again, and at least
    /// 1,000 more: a read this long reaches the oldest entry held.
    pub fn most_held(&self) -> usize {
        self.stream_cap.saturating_add(self.stream_cap.max(1_000))
    }
}

/// One natter instance's id, e.g. `3f9a01c2`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// 8 random hex characters: enough that instances sharing a Redis never collide.
    pub fn random() -> InstanceId {
        InstanceId(format!("{:08x}", rand::random::<u32>()))
    }

    /// An id chosen by the caller (tests, or a stable id from configuration). It must
    /// not contain a space: the event envelope is `{instance} {json}`.
    pub fn new(id: &str) -> Result<InstanceId, RedisStoreError> {
        if id.is_empty() || id.contains([' ', ':']) {
            return Err(RedisStoreError::BadInput(format!("instance id {id:?}")));
        }
        Ok(InstanceId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a call failed. The caller answers clients with error code `unavailable` for
/// [`RedisStoreError::Unavailable`] and retries later; the others are bugs or
/// misconfiguration worth logging.
#[derive(Debug, thiserror::Error)]
pub enum RedisStoreError {
    /// Redis could not be reached or stopped answering (refused, reset, timed out,
    /// loading its data set). The connection was dropped; the next call reconnects.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] RedisError),
    /// Redis answered with an error (e.g. a key of the wrong type, out of memory).
    #[error("redis error: {0}")]
    Redis(#[source] RedisError),
    /// Redis answered with something this module does not understand.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// A URL, room name or instance id this module refuses.
    #[error("invalid {0}")]
    BadInput(String),
    /// `--redis-min-replicas`: `WAIT` found fewer replicas holding the writes than
    /// wanted within [`StoreOptions::replica_wait`]. The message is stored on the
    /// master and may be delivered, but is not acked; a retry with the same client id
    /// finds it (and waits for the replicas again).
    #[error("only {acked} of {wanted} replicas confirmed the write in time")]
    NotReplicated { wanted: usize, acked: usize },
    /// The reader or events thread could not be started.
    #[error("starting a thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl RedisStoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RedisStoreError::Unavailable(_) | RedisStoreError::NotReplicated { .. })
    }
}

impl From<RedisError> for RedisStoreError {
    fn from(e: RedisError) -> Self {
        if is_outage(&e) {
            RedisStoreError::Unavailable(e)
        } else if e.kind() == ErrorKind::InvalidClientConfig {
            RedisStoreError::BadInput(e.to_string())
        } else if e.kind() == ErrorKind::UnexpectedReturnType {
            RedisStoreError::Reply(e.to_string())
        } else {
            RedisStoreError::Redis(e)
        }
    }
}

/// True when the error means "Redis is not there right now" rather than "Redis said
/// no": the connection must be replaced and the call may succeed later. A reply that
/// does not parse counts too: the connection is out of step and must be replaced.
fn is_outage(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io
            | ErrorKind::Parse
            | ErrorKind::Server(
                // A node demoted to replica refuses writes: the master is elsewhere.
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
            )
    ) || e.is_connection_dropped()
        || e.is_timeout()
}

/// What the caller tells the [`Reader`] and [`Events`] threads (each gets its own
/// channel; send both the same commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// Deliver this room's messages with seq > `after_seq` of the history `epoch` (the
    /// reader), or its events (the events thread, which ignores both). Starting a room
    /// already watched moves the reader's position to `after_seq`.
    Start { room: RoomName, after_seq: u64, epoch: Option<String> },
    /// Stop delivering this room.
    Stop { room: RoomName },
}

/// Which thread a [`Delivery::Status`] comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Reader,
    Events,
}

/// Whether a thread can currently reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Available,
    Unavailable,
}

/// What the [`Reader`] and [`Events`] threads send the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A stored message, exactly the `msg` JSON; per room in `seq` order, each once.
    Msg { room: RoomName, seq: u64, json: Bytes },
    /// Messages `from..=to` of `room` were trimmed from Redis before the reader got to
    /// them; they can no longer be delivered. The next `Msg` is `to + 1`.
    Gap { room: RoomName, from: u64, to: u64 },
    /// The history the reader was following is gone (Redis came back without its data
    /// or older: the room's seq went back, or its epoch changed, or a stream entry
    /// announced a new epoch). The reader now follows the new history from `head`: the
    /// next `Msg` is `head + 1`.
    Reset { room: RoomName, head: u64 },
    /// An event another instance published for `room` (this instance's own are
    /// skipped); `origin` is the publisher's [`InstanceId`].
    Event { room: RoomName, json: Bytes, origin: String },
    /// A frame another instance published for a user's connections (`dm`, `invited`):
    /// `{"to": uid, "frame": {...}}`.
    User { json: Bytes },
    /// `Available` when a thread first reaches Redis and after each recovery,
    /// `Unavailable` once at the start of each outage.
    Status { link: Link, health: Health },
}

/// The keys of one room. Built only from a [`RoomName`], whose rule (no `:`, no
/// spaces) means a client can never reach outside its room's keys.
#[derive(Debug, Clone)]
pub(crate) struct RoomKeys {
    base: String,
}

impl RoomKeys {
    pub(crate) fn new(prefix: &str, room: &RoomName) -> RoomKeys {
        RoomKeys { base: format!("{prefix}:room:{room}") }
    }

    pub(crate) fn seq(&self) -> String {
        format!("{}:seq", self.base)
    }

    pub(crate) fn stream(&self) -> String {
        format!("{}:stream", self.base)
    }

    pub(crate) fn epoch(&self) -> String {
        format!("{}:epoch", self.base)
    }

    /// The epoch the room's next stream entry announces (field `e`): set when a new
    /// epoch starts, taken by the append that stores the epoch's first entry.
    pub(crate) fn epoch_mark(&self) -> String {
        format!("{}:epoch_mark", self.base)
    }

    pub(crate) fn msgs(&self) -> String {
        format!("{}:msgs", self.base)
    }

    pub(crate) fn low(&self) -> String {
        format!("{}:low", self.base)
    }

    pub(crate) fn edits(&self) -> String {
        format!("{}:edits", self.base)
    }

    pub(crate) fn replies(&self) -> String {
        format!("{}:replies", self.base)
    }

    pub(crate) fn mentions(&self) -> String {
        format!("{}:mentions", self.base)
    }

    pub(crate) fn dedup(&self, uid: &str, id: &str) -> String {
        format!("{}:id:{}:{uid}:{id}", self.base, uid.len())
    }

    pub(crate) fn access(&self) -> String {
        format!("{}:access", self.base)
    }

    pub(crate) fn invited(&self) -> String {
        format!("{}:invited", self.base)
    }

    pub(crate) fn events(&self) -> String {
        format!("{}:events", self.base)
    }

    pub(crate) fn present(&self) -> String {
        format!("{}:present", self.base)
    }

    pub(crate) fn present_of(&self, instance: &str) -> String {
        format!("{}:present:{instance}", self.base)
    }
}

/// The deployment's news stream: every append adds (room, seq) to it, so a reader
/// blocks on this one stream and then reads only the rooms that changed.
pub(crate) fn news_key(prefix: &str) -> String {
    format!("{prefix}:news")
}

/// The key of `uid`'s read markers (the uid last: no uid can reach another key).
pub(crate) fn read_marks(prefix: &str, uid: &str) -> String {
    format!("{prefix}:reads:{uid}")
}

/// Entries the news stream keeps (`MAXLEN ~`): far more than a reader lags in normal
/// running; a reader that lags further still finds every message by its sweep.
pub(crate) const NEWS_CAP: usize = 100_000;

/// What the [`Reader`] and [`Events`] threads share: the master they reconnect to,
/// their options and watch channel, and the outage bookkeeping — one status report per
/// change, and an exponential backoff between reconnect attempts.
struct Supervisor {
    master: Master,
    opts: StoreOptions,
    watch: Receiver<Watch>,
    link: Link,
    /// Which beat this thread stamps on the status `/healthz` reads.
    beat: Beat,
    out: Sender<Delivery>,
    /// `None` until the first success or failure, so the first success is reported.
    health: Option<Health>,
    backoff: Duration,
}

/// The caller hung up: the thread ends.
struct Hangup;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);

impl Supervisor {
    fn new(
        (link, beat): (Link, Beat),
        master: &Master,
        opts: StoreOptions,
        watch: Receiver<Watch>,
        out: Sender<Delivery>,
    ) -> Result<Supervisor, RedisStoreError> {
        let master = master.clone();
        Ok(Supervisor { master, opts, watch, link, beat, out, health: None, backoff: FIRST_BACKOFF })
    }

    fn send(&self, d: Delivery) -> Result<(), Hangup> {
        self.out.send(d).map_err(|_| Hangup)
    }

    fn report(&mut self, health: Health) -> Result<(), Hangup> {
        if self.health == Some(health) {
            return Ok(());
        }
        self.health = Some(health);
        self.send(Delivery::Status { link: self.link, health })
    }

    /// This thread completed a round trip with Redis (or has nothing to follow):
    /// delivery moves.
    fn beat(&self) {
        self.master.status().beat(self.beat);
    }

    /// Redis answered: report a recovery and reset the backoff.
    fn succeeded(&mut self) -> Result<(), Hangup> {
        self.beat();
        self.backoff = FIRST_BACKOFF;
        self.report(Health::Available)
    }

    /// Redis failed: report the outage (once) and return how long to wait.
    fn failed(&mut self, e: &RedisError) -> Result<Duration, Hangup> {
        if self.health != Some(Health::Unavailable) {
            log::warn!("redis {:?} link: {e}", self.link);
        }
        self.report(Health::Unavailable)?;
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.opts.max_backoff);
        Ok(wait)
    }
}

/// Runs `body` on a named thread until the caller hangs up.
fn spawn(
    name: &str,
    body: impl FnOnce() -> Result<(), Hangup> + Send + 'static,
) -> Result<JoinHandle<()>, RedisStoreError> {
    Ok(thread::Builder::new().name(name.into()).spawn(move || {
        let _ = body();
    })?)
}

/// Applies every watch command that arrives within `timeout` (none: returns at once
/// after applying those already queued), so a thread backing off still follows
/// Start/Stop and notices the caller hanging up.
fn follow_watch(watch: &Receiver<Watch>, timeout: Duration, mut apply: impl FnMut(Watch)) -> Result<(), Hangup> {
    let until = Instant::now() + timeout;
    loop {
        match watch.try_recv() {
            Ok(w) => {
                apply(w);
                continue;
            }
            Err(TryRecvError::Disconnected) => return Err(Hangup),
            Err(TryRecvError::Empty) => {}
        }
        match watch.recv_deadline(until) {
            // A change of rooms is acted on at once: return after taking what else is
            // queued, instead of idling out the rest of the timeout.
            Ok(w) => {
                apply(w);
                while let Ok(w) = watch.try_recv() {
                    apply(w);
                }
                return Ok(());
            }
            Err(RecvTimeoutError::Timeout) => return Ok(()),
            Err(RecvTimeoutError::Disconnected) => return Err(Hangup),
        }
    }
}

/// `{p}:room:{room}:{what}` → `room` (room names hold no `:`).
pub(crate) fn room_of(key: &str, prefix: &str, what: &str) -> Option<RoomName> {
    RoomName::parse(key.strip_prefix(prefix)?.strip_prefix(":room:")?.strip_suffix(what)?.strip_suffix(':')?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_room() {
        let room = RoomName::parse("a.b").unwrap();
        let k = RoomKeys::new("p", &room);
        assert_eq!(room_of(&k.stream(), "p", "stream"), Some(room.clone()));
        assert_eq!(room_of(&k.events(), "p", "events"), Some(room));
        assert_eq!(room_of(&k.events(), "p", "stream"), None);
        assert_eq!(room_of(&k.events(), "q", "events"), None);
    }

    #[test]
    fn dedup_keys_cannot_be_confused_by_where_uid_ends() {
        let k = RoomKeys::new("p", &RoomName::parse("r").unwrap());
        assert_ne!(k.dedup("a:b", "c"), k.dedup("a", "b:c"));
        assert_eq!(k.dedup("u-al", "c-1"), "p:room:r:id:4:u-al:c-1");
    }

    #[test]
    fn instance_ids_are_8_hex_chars_and_never_hold_a_space() {
        let id = InstanceId::random();
        assert_eq!(id.as_str().len(), 8);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(InstanceId::new("a b").is_err());
        assert!(InstanceId::new("").is_err());
    }
}
