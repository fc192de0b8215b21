//! Redis mode's `redis-io` thread: the requests the dispatcher hands over run here,
//! in the order they were sent (append, history, presence, publish, access), and every
//! result goes back through the callback the thread was started with, so the
//! dispatcher stays the single owner of room state and never waits on Redis. Every
//! `presence_ttl / 3` it also refreshes this instance's presence and notices users of
//! crashed instances leaving.
//!
//! [`RedisIo::start`] also starts the store's reader (the news, then the streams of
//! rooms with local members that have news), events (pub/sub of join/leave/nick/typing)
//! and users (`dm`/`invited` frames) threads, whose [`Delivery`]s reach the same
//! callback through `redis-forward`. Scroll-back and search have their own threads
//! ([`super::start_readers`]). `access` holds the requests about who may join what,
//! `dms` those about blocks and closed DMs, `admin` bans and the audit log, `users` the frames both send to a user's
//! connections on every instance.
//!
//! The caller's tags ride along untouched: `C` names a connection, `A` whoever waits
//! for the answer to an append, edit or deletion; this module never looks inside them
//! and never names the dispatcher's types. Never touches sockets or rooms.

mod access;
mod admin;
mod dms;
mod users;

use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};

use crate::access::JoinRule;
use crate::protocol::{ApiResult, ErrorCode, ProtocolError};
use crate::protocol::{RoomName, User, UserId};
use crate::store::audit::AuditEntry;
use crate::store::redis::{
    presence_changes, Appended, ChangeOf, ClientPost, Delivery, Events, Master, Range, Reader, RedisStore,
    RedisStoreError, StoreOptions, Watch,
};
use crate::store::{resume_resets, Refused};

pub use admin::{page_json, AdminRequest};
pub use dms::DmRequest;
pub use users::{ToUser, UserFrames};

/// What the dispatcher asks of Redis; `C` and `A` are its tags (see the module doc).
#[derive(Debug)]
pub enum Request<C, A> {
    /// Store a message; the answer is [`ClusterEvent::Appended`].
    /// A moderator's (`by_mod`) is taken in a read-only room.
    /// A reply whose original the dispatcher did not hold carries its seq (`quote_of`)
    /// and a placeholder: the quote is read here first.
    Append {
        ack: A,
        room: RoomName,
        uid: UserId,
        id: Option<String>,
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        by_mod: bool,
        quote_of: Option<u64>,
    },
    /// Store an `edit` or `delete` event by `uid`, which the append script checks and
    /// applies to the message it changes; the answer is [`ClusterEvent::Changed`].
    Change {
        ack: A,
        room: RoomName,
        uid: UserId,
        id: Option<String>,
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        change: ChangeOf,
    },
    /// Move the user's read marker of the room forward (and tell the other instances);
    /// the answer is [`ClusterEvent::Read`].
    Read { conn: C, room: RoomName, uid: UserId, seq: u64, event: Vec<u8> },
    /// Mark the user present and read the history and presence a joining client needs;
    /// the answer is [`ClusterEvent::History`].
    /// Checks `rule` against the room's access facts first (the answer is then an error).
    Join {
        conn: C,
        room: RoomName,
        from: HistoryFrom,
        recent: usize,
        uid: UserId,
        name: String,
        silent: bool,
        rule: JoinRule,
    },
    /// The user's last local connection left the room.
    Leave { room: RoomName, uid: UserId },
    /// The user was renamed.
    Rename { room: RoomName, uid: UserId, name: String },
    /// A system or typing event for the other instances.
    Publish { room: RoomName, json: Vec<u8> },
    /// A server API read, answered straight to the caller from Redis.
    Api(ApiRead, Sender<ApiResult>),
    /// The server API's `disconnect`: every instance closes the user's connections.
    Disconnect { uid: UserId },
    /// Bans and the audit log.
    Admin(AdminRequest),
    /// This instance's connections (a JSON array of the console's user entries), for
    /// the other instances' consoles; kept for `ttl`.
    Online { json: Vec<u8>, ttl: Duration },
    /// A new connection: remember a lasting user, list its DM rooms
    /// ([`ClusterEvent::Welcome`]).
    /// Also the `blocked` list, and only the newest `max_dms` DM rooms not closed.
    Welcome { conn: C, uid: UserId, name: String, lasting: bool, max_dms: usize },
    /// `dm`: record the DM room of `me` and `other` (within `rate` new ones a minute
    /// each, unless `other` blocked `me`), tell both ([`ClusterEvent::Told`]).
    Dm { conn: C, me: User, other: UserId, other_name: Option<String>, rate: u32 },
    /// Blocks, closed DMs, DMs opened again by a message.
    Dms(DmRequest<C>),
    /// `invite`: the owner (or a moderator) lets `user` into a private room.
    Invite { conn: C, room: RoomName, by: User, is_mod: bool, user: UserId, user_name: Option<String> },
    /// Refuse joins of `room` from these addresses until `until` (open mode's kicks);
    /// no answer.
    KickAddresses { room: RoomName, addrs: Vec<std::net::IpAddr>, until: u64 },
    /// `kick`/`mode`: append the moderator's event, setting `field` of the room's access
    /// to `value` with it.
    Moderate {
        conn: C,
        room: RoomName,
        uid: UserId,
        prefix: Vec<u8>,
        suffix: Vec<u8>,
        field: String,
        value: String,
        what: &'static str,
        /// The action's audit entry, appended (with the retention to trim by) once the
        /// event is stored, never before: an action that was not stored is not audited.
        audit: Option<(AuditEntry, Option<u64>)>,
    },
}

/// Server API reads that Redis answers for every instance alike.
#[derive(Debug)]
pub enum ApiRead {
    Messages {
        room: RoomName,
        before: Option<u64>,
        after: Option<u64>,
        limit: usize,
    },
    Rooms,
    Presence {
        room: RoomName,
    },
    /// The console's users: these of the asking instance, and every other instance's
    /// as they last wrote them.
    Users {
        local: Vec<Value>,
    },
}

/// Which history a join asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryFrom {
    /// The recent messages (a join without `since`).
    Recent,
    /// Everything after `since`, which belongs to `epoch` (the client's resume).
    Since { since: u64, epoch: Option<String> },
    /// The room's history was lost while the client was in it: the recent messages of
    /// the new one, answered `reset:true`.
    Lost,
}

/// What Redis answered a join.
#[derive(Debug)]
pub struct JoinRead {
    /// The history: after `since`, or the recent messages; with the user's read marker.
    pub range: Range,
    /// Everyone present, on any instance.
    pub users: Vec<User>,
    /// The resume was refused (`reset:true`): its `since` belongs to another epoch of
    /// the room or is past its head, so `range` holds the recent messages instead.
    pub reset: bool,
    /// The room is private (or a DM room).
    pub private: bool,
    /// A private room's title.
    pub title: Option<String>,
    /// The room is read-only.
    pub read_only: bool,
}

/// What became of an edit or deletion: stored (or a duplicate), refused by the rules,
/// or not reached (why).
pub type Changed = Result<Result<Appended, Refused>, String>;

/// What comes back to the dispatcher, with the tags it sent.
#[derive(Debug)]
pub enum ClusterEvent<C, A> {
    Appended {
        ack: A,
        room: RoomName,
        id: Option<String>,
        result: Result<Appended, ProtocolError>,
    },
    /// What became of a [`Request::Change`].
    Changed {
        ack: A,
        room: RoomName,
        uid: UserId,
        id: Option<String>,
        change: ChangeOf,
        result: Changed,
        /// A moderator's deletion that was stored: the author of the message it deleted
        /// (for the audit log), read from Redis after it.
        author: Option<String>,
    },
    /// What became of a [`Request::Read`]: when the marker moved, the seqs of the
    /// user's unread mentions left above it.
    Read {
        conn: C,
        room: RoomName,
        uid: UserId,
        seq: u64,
        result: Result<Option<Vec<u64>>, String>,
    },
    History {
        conn: C,
        room: RoomName,
        /// The resume point the history follows; `None` for the recent messages (asked
        /// for, or instead of a resume that reset).
        since: Option<u64>,
        silent: bool,
        result: Result<JoinRead, ProtocolError>,
    },
    /// The DM rooms to tell a new connection of.
    Welcome {
        conn: C,
        frames: Vec<crate::protocol::wire::Frame>,
    },
    /// What became of a `dm`, `invite`, `kick` or `mode`: frames for users' connections.
    Told {
        conn: C,
        result: Result<UserFrames, ProtocolError>,
    },
    /// From the reader and events threads.
    Delivery(Delivery),
    /// Presence polling saw a user appear in a room (the events channel may have
    /// missed it: pub/sub drops what arrives while a subscription is being set up).
    Arrived {
        room: RoomName,
        user: User,
    },
    /// A user vanished from a room's presence (left, or its instance died).
    Vanished {
        room: RoomName,
        user: User,
    },
    /// Some instance's API asked to close this user's connections.
    Disconnect {
        uid: String,
    },
    /// The bans in force changed (or were read for the first time): all of them.
    Bans(Vec<crate::bans::Ban>),
}

/// The handle of the `redis-io` thread and of the threads that deliver what Redis
/// relays: dropping it ends them all.
pub struct RedisIo<C, A> {
    requests: Sender<Request<C, A>>,
    reader_watch: Sender<Watch>,
    events_watch: Sender<Watch>,
    /// Never sent on: dropped with the handle, it ends `redis-users`.
    _users_hangup: Sender<Watch>,
}

impl<C: Send + 'static, A: Send + 'static> RedisIo<C, A> {
    /// Connects (the store reconnects by itself later) and starts the threads. Every
    /// answer and delivery goes to `answer`, which returns false once nobody takes them
    /// any more (the thread giving it then stops).
    pub fn start(
        master: &Master,
        opts: StoreOptions,
        answer: impl Fn(ClusterEvent<C, A>) -> bool + Send + Clone + 'static,
    ) -> Result<RedisIo<C, A>, RedisStoreError> {
        let store = RedisStore::on(master, opts.clone());
        let (requests, requests_rx) = crossbeam_channel::unbounded();
        let (reader_watch, reader_watch_rx) = crossbeam_channel::unbounded();
        let (events_watch, events_watch_rx) = crossbeam_channel::unbounded();
        let (deliveries, deliveries_rx) = crossbeam_channel::bounded(4096);
        Reader::spawn(master, opts.clone(), reader_watch_rx, deliveries.clone())?;
        Events::spawn(master, opts.clone(), events_watch_rx, deliveries.clone())?;
        let (users_hangup, users_hangup_rx) = crossbeam_channel::bounded(0);
        Events::spawn_users(master, opts.clone(), users_hangup_rx, deliveries)?;
        let forward = answer.clone();
        thread::Builder::new().name("redis-forward".into()).spawn(move || {
            for d in deliveries_rx {
                if !forward(ClusterEvent::Delivery(d)) {
                    return;
                }
            }
        })?;
        let refresh = opts.presence_ttl / 3;
        thread::Builder::new().name("redis-io".into()).spawn(move || io_loop(store, requests_rx, answer, refresh))?;
        Ok(RedisIo { requests, reader_watch, events_watch, _users_hangup: users_hangup })
    }

    pub fn send(&self, r: Request<C, A>) {
        let _ = self.requests.send(r);
    }

    /// Start delivering `room`'s messages after `after_seq` of the history `epoch`, and
    /// its events.
    pub fn watch(&self, room: &RoomName, after_seq: u64, epoch: Option<String>) {
        let _ = self.reader_watch.send(Watch::Start { room: room.clone(), after_seq, epoch: epoch.clone() });
        let _ = self.events_watch.send(Watch::Start { room: room.clone(), after_seq, epoch });
    }

    pub fn unwatch(&self, room: &RoomName) {
        let _ = self.reader_watch.send(Watch::Stop { room: room.clone() });
        let _ = self.events_watch.send(Watch::Stop { room: room.clone() });
    }
}

fn describe(e: &RedisStoreError) -> String {
    if let RedisStoreError::NotReplicated { wanted, acked } = e {
        format!("the message store is unavailable: {acked} of {wanted} replicas confirmed it in time; try again with the same id")
    } else if e.is_unavailable() {
        "the message store is unavailable; try again".into()
    } else {
        format!("the message store failed: {e}")
    }
}

/// Performs requests in order; between them, keeps presence alive and watches for
/// users whose instance died.
fn io_loop<C, A>(
    mut store: RedisStore,
    requests: Receiver<Request<C, A>>,
    out: impl Fn(ClusterEvent<C, A>) -> bool,
    refresh: Duration,
) {
    // Presence as last seen, per room this instance has users in.
    let mut seen: HashMap<RoomName, Vec<User>> = HashMap::new();
    let mut local: HashMap<RoomName, HashSet<String>> = HashMap::new();
    let mut next_refresh = Instant::now() + refresh;
    let mut next_poll = Instant::now();
    let mut disconnects_seen = unix_ms();
    let mut bans_seen = None;
    // A request taken from the channel behind a batch of appends, handled next.
    let mut held: Option<Request<C, A>> = None;
    loop {
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + DISCONNECT_POLL;
            // Bans first: a banned user cut by a disconnect below is refused when back.
            if let Some(bans) = admin::poll_bans(&mut store, &mut bans_seen) {
                if !out(ClusterEvent::Bans(bans)) {
                    return;
                }
            }
            if let Ok((uids, newest)) = store.disconnects_after(disconnects_seen) {
                disconnects_seen = newest;
                for uid in uids {
                    if !out(ClusterEvent::Disconnect { uid }) {
                        return;
                    }
                }
            }
        }
        let wait = next_refresh.min(next_poll).saturating_duration_since(Instant::now());
        let next = match held.take() {
            Some(req) => Ok(req),
            None => requests.recv_timeout(wait),
        };
        let event = match next {
            Ok(first @ Request::Append { .. }) => {
                let mut batch = vec![first];
                while batch.len() < APPEND_BATCH {
                    match requests.try_recv() {
                        Ok(req @ Request::Append { .. }) => batch.push(req),
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                for ev in append_batch(&mut store, batch) {
                    if !out(ev) {
                        return;
                    }
                }
                None
            }
            Ok(req) => handle(&mut store, req, &mut local, &mut seen),
            Err(RecvTimeoutError::Timeout) if Instant::now() < next_refresh => None,
            Err(RecvTimeoutError::Timeout) => {
                next_refresh = Instant::now() + refresh;
                let _ = store.presence_refresh();
                for (room, before) in seen.iter_mut() {
                    let Ok(after) = store.presence_list(room) else { continue };
                    let changes = presence_changes(before, &after);
                    let arrived =
                        changes.arrived.into_iter().map(|user| ClusterEvent::Arrived { room: room.clone(), user });
                    let left = changes.left.into_iter().map(|user| ClusterEvent::Vanished { room: room.clone(), user });
                    for ev in arrived.chain(left) {
                        if !out(ev) {
                            return;
                        }
                    }
                    *before = after;
                }
                None
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = store.presence_clear();
                return;
            }
        };
        if let Some(ev) = event {
            if !out(ev) {
                return;
            }
        }
    }
}

/// Most appends sent to Redis in one pipeline.
const APPEND_BATCH: usize = 64;

/// Stores the posts queued one after another in one round trip (`post_many`), and
/// answers each as its own `Appended`, in order.
fn append_batch<C, A>(store: &mut RedisStore, mut batch: Vec<Request<C, A>>) -> Vec<ClusterEvent<C, A>> {
    // Replies whose original the dispatcher did not hold: read it, quote it (or refuse).
    let refused: Vec<Option<ProtocolError>> = batch
        .iter_mut()
        .map(|req| match req {
            Request::Append { room, suffix, quote_of: Some(of), .. } => fill_quote(store, room, *of, suffix).err(),
            _ => None,
        })
        .collect();
    let posts: Vec<_> = batch
        .iter()
        .zip(&refused)
        .filter_map(|(req, refused)| match req {
            Request::Append { room, uid, id, prefix, suffix, by_mod, .. } if refused.is_none() => {
                Some(ClientPost { room, uid, client_id: id.as_deref(), prefix, suffix, by_mod: *by_mod })
            }
            _ => None,
        })
        .collect();
    let unavailable = |e: &RedisStoreError| ProtocolError::new(ErrorCode::Unavailable, describe(e));
    let answers: Vec<Result<Appended, ProtocolError>> = match store.post_many(&posts) {
        Err(e) => posts.iter().map(|_| Err(unavailable(&e))).collect(),
        Ok(each) => each
            .into_iter()
            .zip(&posts)
            .map(|(answer, post)| match answer {
                Ok(Ok(appended)) => Ok(appended),
                Ok(Err(_)) => Err(ProtocolError::new(ErrorCode::Forbidden, format!("`{}` is read-only", post.room))),
                Err(e) => Err(unavailable(&e)),
            })
            .collect(),
    };
    let mut answers = answers.into_iter();
    let appends = batch.into_iter().filter_map(|req| match req {
        Request::Append { ack, room, id, .. } => Some((ack, room, id)),
        _ => None,
    });
    appends
        .zip(refused)
        .map(|((ack, room, id), refused)| {
            let result = match refused {
                Some(e) => Err(e.with_ref(Some(id.clone().unwrap_or_else(|| "msg".into())))),
                None => answers.next().unwrap_or_else(|| Err(ProtocolError::new(ErrorCode::Unavailable, "no answer"))),
            };
            ClusterEvent::Appended { ack, room, id, result }
        })
        .collect()
}

/// Who wrote message `of` of `room` (its stored body keeps `uid` when deleted); none
/// when it cannot be read.
fn author_of(store: &mut RedisStore, room: &RoomName, of: u64) -> Option<String> {
    let range = store.range(room, of.saturating_sub(1), Some(of), 1).ok()?;
    let body = range.messages.into_iter().find(|m| m.seq == of)?;
    let v: Value = serde_json::from_slice(&body.json).ok()?;
    v["uid"].as_str().map(str::to_owned)
}

/// Puts the quote of message `of` in a reply's `suffix` (in place of its placeholder):
/// `not_found` when `of` is not a message of `room`.
fn fill_quote(store: &mut RedisStore, room: &RoomName, of: u64, suffix: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let range =
        store.range(room, of - 1, Some(of), 1).map_err(|e| ProtocolError::new(ErrorCode::Unavailable, describe(&e)))?;
    let original = range.messages.into_iter().find(|m| m.seq == of).map(|m| m.json);
    let missing = || ProtocolError::new(ErrorCode::NotFound, format!("no message {of} in `{room}` to reply to"));
    let reply = crate::store::replies::quote(original.as_deref(), of).map_err(|_| missing())?;
    *suffix = crate::store::replies::fill(suffix, of, &reply).ok_or_else(missing)?;
    Ok(())
}

fn handle<C, A>(
    store: &mut RedisStore,
    req: Request<C, A>,
    local: &mut HashMap<RoomName, HashSet<String>>,
    seen: &mut HashMap<RoomName, Vec<User>>,
) -> Option<ClusterEvent<C, A>> {
    match req {
        // `io_loop` sends every post through `append_batch`; one alone is a batch too.
        req @ Request::Append { .. } => append_batch(store, vec![req]).pop(),
        Request::Change { ack, room, uid, id, prefix, suffix, change } => {
            let result = store.change(&room, &uid, id.as_deref(), &prefix, &suffix, &change).map_err(|e| describe(&e));
            let author = match (&change, &result) {
                (ChangeOf::Delete { of, by_mod: true }, Ok(Ok(Appended::Stored { .. }))) => {
                    author_of(store, &room, *of)
                }
                _ => None,
            };
            Some(ClusterEvent::Changed { ack, room, uid, id, change, result, author })
        }
        Request::Read { conn, room, uid, seq, event } => {
            let result = store.mark_read(&room, &uid, seq, &event).map_err(|e| describe(&e));
            Some(ClusterEvent::Read { conn, room, uid, seq, result })
        }
        Request::Join { conn, room, from, recent, uid, name, silent, rule } => {
            let (result, resumed) = read_join(store, &room, (&from, recent), (&uid, &name), rule);
            if let Ok(JoinRead { users, .. }) = &result {
                local.entry(room.clone()).or_default().insert(uid.to_string());
                seen.insert(room.clone(), users.clone());
            }
            Some(ClusterEvent::History { conn, room, since: resumed, silent, result })
        }
        Request::Leave { room, uid } => {
            let _ = store.presence_remove(&room, &uid);
            if let Some(users) = local.get_mut(&room) {
                users.remove(&*uid);
                if users.is_empty() {
                    local.remove(&room);
                    seen.remove(&room);
                }
            }
            if let Some(list) = seen.get_mut(&room) {
                list.retain(|u| u.id != uid);
            }
            None
        }
        Request::Rename { room, uid, name } => {
            let _ = store.presence_set(&room, &uid, &name);
            None
        }
        Request::Publish { room, json } => {
            let _ = store.publish(&room, &json);
            None
        }
        Request::Disconnect { uid } => {
            let _ = store.request_disconnect(&uid, unix_ms());
            None
        }
        Request::Api(read, reply) => {
            let _ = reply.send(api_read(store, read));
            None
        }
        Request::Online { json, ttl } => {
            if let Err(e) = store.online_set(&json, ttl) {
                log::debug!("redis: this instance's users not written for the console: {}", describe(&e));
            }
            None
        }
        Request::Dms(req) => Some(dms::handle(store, req)),
        Request::Admin(req) => {
            admin::handle(store, req);
            None
        }
        other => access::handle(store, other),
    }
}

/// Marks `uid` (named `name`) present in `room` and reads what its join needs: the
/// history `from` asks for (the `recent` newest when it is not a resume, or a resume
/// that resets), with the user's read marker, and who is present. Also returns the
/// `since` the history follows, when it is a resume.
fn read_join(
    store: &mut RedisStore,
    room: &RoomName,
    (from, recent): (&HistoryFrom, usize),
    (uid, name): (&str, &str),
    rule: JoinRule,
) -> (Result<JoinRead, ProtocolError>, Option<u64>) {
    let resume_max = store.options().most_held();
    let mut resumed = None;
    let access = match access::check_join(store, room, uid, rule) {
        Ok(access) => access,
        Err(e) => return (Err(e), None),
    };
    let result = (|| {
        store.presence_set(room, uid, name)?;
        let (range, reset) = match from {
            // All the stream may hold: COUNT must never cut a resume short.
            HistoryFrom::Since { since, epoch } => {
                let range = store.range_for(Some(uid), room, *since, None, resume_max)?;
                if resume_resets(*since, epoch.as_deref(), range.head, range.epoch.as_deref()) {
                    (store.recent_for(Some(uid), room, recent)?, true)
                } else {
                    resumed = Some(*since);
                    (range, false)
                }
            }
            HistoryFrom::Recent => (store.recent_for(Some(uid), room, recent)?, false),
            HistoryFrom::Lost => (store.recent_for(Some(uid), room, recent)?, true),
        };
        let users = store.presence_list(room)?;
        Ok(JoinRead {
            range,
            users,
            reset,
            private: access.is_private(),
            title: access.title,
            read_only: access.read_only,
        })
    })()
    .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, describe(&e)).with_ref(Some("join".into())));
    (result, resumed)
}

/// How often every instance looks for the API's disconnect requests (so a user on
/// another instance is cut within about this long).
const DISCONNECT_POLL: Duration = Duration::from_millis(250);

/// Now, in ms since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn api_read(store: &mut RedisStore, read: ApiRead) -> ApiResult {
    let unavailable = |e: RedisStoreError| ProtocolError::new(ErrorCode::Unavailable, describe(&e));
    match read {
        ApiRead::Messages { room, before, after, limit } => {
            let range = match (after, before) {
                (Some(after), before) => store.range(&room, after, before.map(|b| b.saturating_sub(1)), limit),
                // The newest `limit` below `before`.
                (None, Some(before)) => {
                    store.range(&room, before.saturating_sub(limit as u64 + 1), Some(before.saturating_sub(1)), limit)
                }
                (None, None) => store.recent(&room, limit),
            }
            .map_err(unavailable)?;
            let messages: Vec<Value> =
                range.messages.iter().filter_map(|m| serde_json::from_slice::<Value>(&m.json).ok()).collect();
            let first = range.messages.first().map_or(u64::MAX, |m| m.seq);
            Ok(
                json!({ "room": room, "head": range.head, "messages": messages, "complete": range.complete && first <= 1 }),
            )
        }
        ApiRead::Rooms => {
            let rooms = store.rooms(10_000).map_err(unavailable)?;
            let mut list = Vec::with_capacity(rooms.len());
            for (room, head) in rooms {
                if store.access(&room, "").map_err(unavailable)?.is_private() {
                    continue; // private and DM rooms are never listed
                }
                let users = store.presence_list(&room).map_err(unavailable)?.len();
                list.push(json!({ "room": room, "users": users, "head": head }));
            }
            list.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
            Ok(json!({ "rooms": list }))
        }
        ApiRead::Users { mut local } => {
            let connections = local.len();
            local.extend(store.online_elsewhere().map_err(unavailable)?);
            local.sort_by(|a, b| {
                a["name"].as_str().cmp(&b["name"].as_str()).then(a["id"].as_str().cmp(&b["id"].as_str()))
            });
            Ok(json!({ "users": local, "connections": connections }))
        }
        ApiRead::Presence { room } => {
            let users = store.presence_list(&room).map_err(unavailable)?;
            let users: Vec<Value> = users.iter().map(|u| json!({ "id": &*u.id, "name": u.name })).collect();
            Ok(json!({ "room": room, "users": users }))
        }
    }
}

/// The JSON of a message split around its seq, which Redis assigns: the store joins
/// `prefix`, the seq and `suffix` atomically with storing it.
pub fn split_msg_json(json_with_placeholder: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let marker = br#""seq":0,"#;
    let at = json_with_placeholder
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the msg JSON always has seq right after room");
    let prefix = json_with_placeholder[..at + 6].to_vec();
    let suffix = json_with_placeholder[at + 7..].to_vec();
    (prefix, suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_json_splits_around_the_seq() {
        let json = br#"{"type":"msg","room":"r","seq":0,"id":"x","ts":1,"user":"u","uid":"u","text":"\"seq\":0,"}"#;
        let (p, s) = split_msg_json(json);
        assert_eq!(p, br#"{"type":"msg","room":"r","seq":"#);
        assert_eq!(s, br#","id":"x","ts":1,"user":"u","uid":"u","text":"\"seq\":0,"}"#);
        let joined = [p, b"42".to_vec(), s].concat();
        let v: serde_json::Value = serde_json::from_slice(&joined).unwrap();
        assert_eq!(v["seq"], 42);
    }
}
