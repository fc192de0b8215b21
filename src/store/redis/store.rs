//! [`RedisStore`]: the request/response side of the Redis layer — storing a message
//! (de-duplicated, numbered and appended in one atomic script), reading history,
//! publishing events, and (in `presence.rs`) presence.
//!
//! One connection, opened lazily and replaced after an outage; every call blocks for
//! at most the configured timeouts. It never touches rooms or sockets, and it must be
//! called only from a thread the caller dedicates to Redis, never the dispatcher's.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use redis::{Connection, ErrorKind, RedisResult, ScriptInvocation, ServerErrorKind, Value};

use super::reply::Entry;
use super::scripts::Scripts;
use super::{
    is_outage, news_key, read_marks, ChangeOf, InstanceId, Master, RedisStoreError, RoomKeys, StoreOptions, NEWS_CAP,
};
use crate::protocol::RoomName;
use crate::store::mentions::parse_seqs;
use crate::store::Refused;

/// How many of a room's newest entries a retried append without a client id searches
/// for its first attempt. More appends than this to the same room between the attempt
/// and its retry (milliseconds) would make it stored twice.
const RETRY_LOOKBACK: usize = 100;

/// What `scripts::READ_LUA` answers: the head and epoch (nil when the room has none),
/// (seq, JSON) pairs, and the read marker asked for.
type ScriptedRead = (Option<u64>, Option<String>, Vec<(u64, Vec<u8>)>, Option<u64>, String);

/// Which entries a read walks: `count` at most, from one stream id to another.
#[derive(Debug, Clone, Copy)]
pub(super) struct Walk<'a> {
    pub direction: Direction,
    pub from: &'a str,
    pub to: &'a str,
    pub count: usize,
}

/// Which way a read walks a room's stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum Direction {
    /// Oldest first (`XRANGE`).
    Up,
    /// Newest first (`XREVRANGE`).
    Down,
}

/// What [`RedisStore::append`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// The message is stored as `seq`; `json` is the complete `msg` JSON, byte for byte
    /// what the stream holds and the readers deliver.
    Stored { seq: u64, json: Bytes },
    /// This user already posted this client id in this room (within the dedup TTL):
    /// nothing was stored; `seq` is the original message's.
    Duplicate { seq: u64 },
}

/// Messages read back from a room's stream, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub messages: Vec<Entry>,
    /// False when the stream no longer holds the first message asked for (it was
    /// trimmed) although the room has messages after it.
    pub complete: bool,
    /// The room's last seq when the range was read (0 = no message yet).
    pub head: u64,
    /// The room's epoch when the range was read (`None` = no message stored since
    /// Redis last lost its data).
    pub epoch: Option<String>,
    /// The read marker of the user the range was read for ([`RedisStore::range_for`]),
    /// read with it; 0 when none was asked for or none is stored.
    pub read_seq: u64,
    /// The seqs of that user's unread mentions above it (the newest
    /// [`crate::store::mentions::MAX_UNREAD`]), read with it.
    pub mentions: Vec<u64>,
}

/// A connection to Redis for storing and reading messages, events and presence.
///
/// Not shared between threads: each thread that talks to Redis opens its own.
pub struct RedisStore {
    master: Master,
    con: Option<Connection>,
    /// The master generation `con` was opened under ([`Master::current`]).
    generation: u64,
    pub(super) opts: StoreOptions,
    scripts: Scripts,
    /// This instance's presence as it should be in Redis: room → uid → name. The
    /// presence calls update it first, so a refresh can write back what an outage or
    /// a Redis restart lost.
    pub(super) presence: HashMap<RoomName, HashMap<String, String>>,
}

impl RedisStore {
    /// Checks the URL (`redis://host:port/db`, or `redis+sentinel://…`: see
    /// [`Master`]) without connecting; the first call connects.
    pub fn open(url: &str, opts: StoreOptions) -> Result<RedisStore, RedisStoreError> {
        Ok(RedisStore::on(&Master::open(url, Default::default())?, opts))
    }

    /// A store talking to `master` (shared with the instance's other Redis threads).
    pub fn on(master: &Master, opts: StoreOptions) -> RedisStore {
        let master = master.clone();
        RedisStore { master, con: None, generation: 0, opts, scripts: Scripts::new(), presence: HashMap::new() }
    }

    /// [`RedisStore::open`], then a `PING`: fails with [`RedisStoreError::Unavailable`]
    /// (after at most the connect timeout) when Redis is not there.
    pub fn connect(url: &str, opts: StoreOptions) -> Result<RedisStore, RedisStoreError> {
        let mut store = RedisStore::open(url, opts)?;
        store.ping()?;
        Ok(store)
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    pub fn instance(&self) -> &InstanceId {
        &self.opts.instance
    }

    /// Runs `f` on the connection, connecting first if there is none. An outage drops
    /// the connection so the next call reconnects (one attempt per call: the caller
    /// decides how long to wait between calls).
    ///
    /// A connection kept from an earlier call may have died since (Redis restarted
    /// while it sat idle): nothing notices until it is used. When it turns out broken
    /// (closed or reset, not a timeout), `f` runs once more on a new connection, so the
    /// first call after Redis came back succeeds. `f` must therefore be safe to repeat;
    /// [`RedisStore::append`] makes its retry so with [`RedisStore::call_again`].
    pub(super) fn call<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection, &Scripts) -> RedisResult<T>,
    ) -> Result<T, RedisStoreError> {
        self.call_again(|con, scripts, _| f(con, scripts))
    }

    /// [`RedisStore::call`], telling `f` whether this is the retry (`true`).
    fn call_again<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection, &Scripts, bool) -> RedisResult<T>,
    ) -> Result<T, RedisStoreError> {
        let reused = self.con.is_some();
        let result = match self.attempt(|con, scripts| f(con, scripts, false)) {
            Err(e) if reused && e.is_connection_dropped() && !e.is_timeout() => {
                log::info!("redis: the connection was broken ({e}); reconnected to retry");
                self.attempt(|con, scripts| f(con, scripts, true))
            }
            other => other,
        };
        result.map_err(RedisStoreError::from)
    }

    /// One try of `f`, connecting first if needed (again when the master moved since
    /// the connection was opened); an outage drops the connection.
    fn attempt<T>(&mut self, f: impl FnOnce(&mut Connection, &Scripts) -> RedisResult<T>) -> RedisResult<T> {
        if self.generation != self.master.current() {
            self.con = None;
        }
        let con = match self.con.take() {
            Some(con) => self.con.insert(con),
            None => {
                let (con, generation) = self.master.connect(&self.opts, self.opts.replica_wait_read())?;
                self.generation = generation;
                self.con.insert(con)
            }
        };
        f(con, &self.scripts).inspect_err(|e| {
            if is_outage(e) {
                self.drop_connection();
            }
        })
    }

    /// Forgets the connection after an outage (or a write refused as read-only): the
    /// next call connects again, through Sentinel to wherever the master is then.
    fn drop_connection(&mut self) {
        self.con = None;
        self.master.lost(self.generation);
    }

    pub(super) fn keys(&self, room: &RoomName) -> RoomKeys {
        RoomKeys::new(&self.opts.prefix, room)
    }

    /// Stores a message unless it is a duplicate, atomically: with a `client_id` that
    /// `uid` already posted in `room`, returns [`Appended::Duplicate`] with the
    /// original seq; otherwise takes the next seq `S`, stores `prefix S suffix` as
    /// stream entry `S-0` (trimming the stream to about `stream_cap`), remembers the
    /// client id for `dedup_ttl`, and returns [`Appended::Stored`].
    ///
    /// The caller builds `prefix` = `{"type":"msg","room":"r","seq":` and `suffix` =
    /// `,"id":…,"ts":…,"user":…,"uid":…,"text":…}`. A message is stored only when this
    /// returns `Ok`; after an `Unavailable` it may or may not be (a retry with the same
    /// client id then answers `Duplicate` if it was).
    ///
    /// When the connection turns out broken after the script was sent, the script runs
    /// once more on a new connection and first looks for what the first attempt may have
    /// stored (see `scripts::APPEND_LUA`): found, it answers `Stored` with that seq, so the
    /// message is stored once and acked once, with or without a client id.
    pub fn append(
        &mut self,
        room: &RoomName,
        uid: &str,
        client_id: Option<&str>,
        prefix: &[u8],
        suffix: &[u8],
    ) -> Result<Appended, RedisStoreError> {
        let post = Post { room, uid, client_id, prefix, suffix, access: None, guard_read_only: false };
        let (code, seq) = self.run_append(&post, None)?;
        Ok(post.appended(code, seq))
    }

    /// [`RedisStore::append`] of a client's post: refused ([`Refused::ReadOnly`]) in a
    /// read-only room unless `by_mod`.
    pub fn post(
        &mut self,
        room: &RoomName,
        uid: &str,
        client_id: Option<&str>,
        (prefix, suffix): (&[u8], &[u8]),
        by_mod: bool,
    ) -> PostAnswer {
        let one = ClientPost { room, uid, client_id, prefix, suffix, by_mod };
        self.post_many(&[one])?.pop().unwrap_or_else(|| Err(RedisStoreError::Reply("no answer to a post".into())))
    }

    /// Runs `scripts::APPEND_LUA` for a message, or an event making `change`; returns
    /// the script's answer (code, seq).
    pub(super) fn run_append(
        &mut self,
        post: &Post<'_>,
        change: Option<&ChangeOf>,
    ) -> Result<(u8, u64), RedisStoreError> {
        let args = self.append_args(post, change);
        let answer = self.call_again(|con, scripts, retry| args.invocation(scripts, retry).invoke(con))?;
        Ok(self.learned(post.room, answer))
    }

    /// Keeps what an append answer says of the room's history (its epoch and a seq of
    /// it) for the next append's check that the history did not go back; returns the
    /// answer's code and seq.
    fn learned(&self, room: &RoomName, (code, seq, epoch): (u8, u64, String)) -> (u8, u64) {
        if seq > 0 {
            self.opts.heads.saw(room, &epoch, seq);
        }
        (code, seq)
    }

    /// [`RedisStore::post`] of each of `posts`, in one round trip: the append script once
    /// per post, pipelined in order, so the posts a dispatcher batch sends are stored
    /// in that order without waiting a round trip each. Each answer is what `post`
    /// would have answered, in the order of `posts`; a connection found broken retries
    /// the whole pipeline (each script then looks for its first attempt, as a single
    /// post's retry does).
    /// An `Err` is the whole pipeline's (each post may or may not be stored, as after a
    /// single post's `Unavailable`).
    pub fn post_many(&mut self, posts: &[ClientPost<'_>]) -> Result<Vec<PostAnswer>, RedisStoreError> {
        let posts: Vec<Post<'_>> = posts.iter().map(ClientPost::post).collect();
        let args: Vec<AppendArgs> = posts.iter().map(|post| self.append_args(post, None)).collect();
        let wait = self.opts.min_replicas;
        let wait_ms = u64::try_from(self.opts.replica_wait.as_millis()).unwrap_or(u64::MAX).max(1);
        let replies = self.call_again(|con, scripts, retry| {
            let runs: Vec<_> = args.iter().map(|a| a.invocation(scripts, retry)).collect();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for run in &runs {
                pipe.invoke_script(run);
            }
            if wait > 0 {
                // One WAIT for the whole pipeline: it waits for this connection's last
                // write, so it covers every append before it.
                pipe.cmd("WAIT").arg(wait).arg(wait_ms);
            }
            pipe.query::<Vec<Value>>(con)
        });
        let mut replies = replies?;
        let replicated = match wait {
            0 => None,
            _ => Some(replies.pop().map(redis::from_redis_value::<usize>)),
        };
        if replies.len() != posts.len() {
            return Err(RedisStoreError::Reply(format!(
                "{} answers to {} pipelined appends",
                replies.len(),
                posts.len()
            )));
        }
        let mut ran_alone = false;
        let mut answers: Vec<PostAnswer> = posts
            .iter()
            .zip(replies)
            .map(|(post, reply)| {
                let (code, seq) = match reply.extract_error() {
                    // A Redis that does not know the script yet (restarted, or a
                    // replica just promoted) ran none of them: this post alone, the
                    // way that loads it.
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        ran_alone = true;
                        self.run_append(post, None)?
                    }
                    Err(e) => return Err(RedisStoreError::from(e)),
                    Ok(v) => self.learned(
                        post.room,
                        redis::from_redis_value(v).map_err(|e| RedisStoreError::Reply(e.to_string()))?,
                    ),
                };
                // Code 6: refused by a read-only room.
                Ok(if code == 6 { Err(Refused::ReadOnly) } else { Ok(post.appended(code, seq)) })
            })
            .collect();
        if answers.iter().any(|a| a.as_ref().is_err_and(RedisStoreError::is_unavailable)) {
            // e.g. READONLY: this node is no master any more.
            self.drop_connection();
        }
        if let Some(replicated) = replicated {
            let mut acked = match replicated {
                Some(Ok(n)) => Ok(n),
                Some(Err(e)) => Err(RedisStoreError::Reply(format!("WAIT: {e}"))),
                None => Err(RedisStoreError::Reply("no answer to WAIT".into())),
            };
            if ran_alone && acked.is_ok() {
                // Those ran after the pipeline's WAIT: wait for them too.
                acked = self.call(|con, _| redis::cmd("WAIT").arg(wait).arg(wait_ms).query::<usize>(con));
            }
            match acked {
                Ok(acked) if acked >= wait => {}
                Ok(acked) => {
                    for answer in answers.iter_mut().filter(|a| matches!(a, Ok(Ok(_)))) {
                        *answer = Err(RedisStoreError::NotReplicated { wanted: wait, acked });
                    }
                }
                Err(e) => {
                    log::warn!("redis: {e}");
                    for answer in answers.iter_mut().filter(|a| matches!(a, Ok(Ok(_)))) {
                        *answer = Err(RedisStoreError::NotReplicated { wanted: wait, acked: 0 });
                    }
                }
            }
        }
        Ok(answers)
    }

    /// What the append script is run with for `post` (making `change`, if any).
    fn append_args<'a>(&self, post: &Post<'a>, change: Option<&ChangeOf>) -> AppendArgs<'a> {
        let keys = self.keys(post.room);
        let mut names =
            vec![keys.seq(), keys.stream(), keys.epoch(), keys.msgs(), keys.low(), keys.edits(), keys.access()];
        names.push(news_key(&self.opts.prefix));
        names.push(keys.epoch_mark());
        names.push(keys.mentions());
        names.push(keys.replies());
        if let Some(id) = post.client_id {
            names.push(keys.dedup(post.uid, id));
        }
        let (kind, of, by_mod, ts) = match change {
            None => ("", 0, false, 0),
            Some(ChangeOf::Edit { of, ts }) => ("edit", *of, false, *ts),
            Some(ChangeOf::Delete { of, by_mod }) => ("delete", *of, *by_mod, 0),
            Some(ChangeOf::React { of }) => ("react", *of, false, 0),
        };
        AppendArgs {
            keys: names,
            post: *post,
            cap: self.opts.stream_cap.max(1),
            ttl: self.opts.dedup_ttl.as_secs().max(1),
            epoch: crate::store::new_epoch(), // used only if a new one starts
            known: self.opts.heads.get(post.room).unwrap_or_default(),
            kind: if post.access.is_some() { "access" } else { kind },
            of,
            by_mod,
            ts,
        }
    }

    /// The messages with `after_seq < seq <= upto_seq` (no upper bound with `None`),
    /// oldest first, at most `max` of them (ask again after the last one for more).
    /// `complete` is false when seq `after_seq + 1` was trimmed away although the room
    /// went past it: the caller answers `history` with `complete:false`.
    pub fn range(
        &mut self,
        room: &RoomName,
        after_seq: u64,
        upto_seq: Option<u64>,
        max: usize,
    ) -> Result<Range, RedisStoreError> {
        self.range_for(None, room, after_seq, upto_seq, max)
    }

    /// [`RedisStore::range`], with the read marker of `reader` (a joining user) in the
    /// room.
    pub fn range_for(
        &mut self,
        reader: Option<&str>,
        room: &RoomName,
        after_seq: u64,
        upto_seq: Option<u64>,
        max: usize,
    ) -> Result<Range, RedisStoreError> {
        let first = after_seq.saturating_add(1);
        let end = upto_seq.map_or_else(|| "+".to_owned(), |upto| format!("{upto}-0"));
        let walk = Walk { direction: Direction::Up, from: &format!("{first}-0"), to: &end, count: max };
        let mut range = self.read(room, walk, reader)?;
        let missing_first = range.messages.first().is_none_or(|e| e.seq != first);
        let wanted = upto_seq.is_none_or(|upto| upto >= first);
        range.messages.truncate(max);
        range.complete = !(range.head > after_seq && wanted && missing_first);
        Ok(range)
    }

    /// The last `n` messages of `room`, oldest first (a join without `since`).
    pub fn recent(&mut self, room: &RoomName, n: usize) -> Result<Range, RedisStoreError> {
        self.recent_for(None, room, n)
    }

    /// [`RedisStore::recent`], with the read marker of `reader` in the room.
    pub fn recent_for(&mut self, reader: Option<&str>, room: &RoomName, n: usize) -> Result<Range, RedisStoreError> {
        let mut range = self.read(room, Walk { direction: Direction::Down, from: "+", to: "-", count: n }, reader)?;
        range.messages.truncate(n);
        range.messages.reverse();
        Ok(range)
    }

    /// The room's head, its epoch and up to `walk.count` messages between two stream
    /// ids, with their bodies (and the read marker of `reader`), read in one step
    /// (`scripts::READ_LUA`). `complete` is left true: the caller knows what it asked.
    pub(super) fn read(
        &mut self,
        room: &RoomName,
        walk: Walk<'_>,
        reader: Option<&str>,
    ) -> Result<Range, RedisStoreError> {
        let keys = self.keys(room);
        let command = match walk.direction {
            Direction::Up => "XRANGE",
            Direction::Down => "XREVRANGE",
        };
        let marks = reader.map(|uid| read_marks(&self.opts.prefix, uid));
        let (head, epoch, found, read_seq, unread): ScriptedRead = self.call(|con, scripts| {
            let mut run = scripts.read.prepare_invoke();
            run.key(keys.seq()).key(keys.epoch()).key(keys.stream()).key(keys.msgs());
            if let Some(marks) = &marks {
                run.key(marks).key(keys.mentions());
            }
            run.arg(command).arg(walk.from).arg(walk.to).arg(walk.count.max(1)).arg(room.as_str());
            run.arg(reader.unwrap_or_default());
            run.invoke(con)
        })?;
        let messages = found.into_iter().map(|(seq, json)| Entry { seq, json: Bytes::from(json) }).collect();
        let (head, read_seq, mentions) = (head.unwrap_or(0), read_seq.unwrap_or(0), parse_seqs(&unread));
        Ok(Range { messages, complete: true, head, epoch, read_seq, mentions })
    }

    /// Every room with at least one message and its head, at most `max` of them
    /// (`SCAN` over the seq keys: never blocks Redis the way `KEYS` would).
    pub fn rooms(&mut self, max: usize) -> Result<Vec<(RoomName, u64)>, RedisStoreError> {
        let pattern = format!("{}:room:*:seq", self.opts.prefix);
        let keys: Vec<String> = self.call(|con, _| {
            let mut found = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) =
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).query(con)?;
                found.extend(batch);
                cursor = next;
                if cursor == 0 || found.len() >= max {
                    return Ok(found);
                }
            }
        })?;
        let rooms: Vec<RoomName> =
            keys.iter().filter_map(|k| super::room_of(k, &self.opts.prefix, "seq")).take(max).collect();
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let seq_keys: Vec<String> = rooms.iter().map(|r| self.keys(r).seq()).collect();
        let heads: Vec<Option<u64>> = self.call(|con, _| redis::cmd("MGET").arg(&seq_keys).query(con))?;
        Ok(rooms.into_iter().zip(heads).map(|(r, h)| (r, h.unwrap_or(0))).collect())
    }

    /// Asks every instance to close the connections of `uid` (the server API's
    /// `disconnect`): an entry in the sorted set `{p}:disconnects`, scored by the time,
    /// which each instance polls ([`RedisStore::disconnects_after`]). Entries older than
    /// a minute are trimmed on the way.
    pub fn request_disconnect(&mut self, uid: &str, now_ms: u64) -> Result<(), RedisStoreError> {
        let key = format!("{}:disconnects", self.opts.prefix);
        let member = format!("{now_ms}:{:08x}:{uid}", rand::random::<u32>());
        self.call(|con, _| {
            redis::pipe()
                .cmd("ZADD")
                .arg(&key)
                .arg(now_ms)
                .arg(&member)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(now_ms.saturating_sub(60_000))
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(120_000)
                .ignore()
                .exec(con)
        })
    }

    /// The user ids of disconnect requests scored after `after_ms`, and the newest
    /// score seen (`after_ms` when there is none).
    pub fn disconnects_after(&mut self, after_ms: u64) -> Result<(Vec<String>, u64), RedisStoreError> {
        let key = format!("{}:disconnects", self.opts.prefix);
        let entries: Vec<(String, u64)> = self.call(|con, _| {
            redis::cmd("ZRANGEBYSCORE").arg(&key).arg(format!("({after_ms}")).arg("+inf").arg("WITHSCORES").query(con)
        })?;
        let newest = entries.iter().map(|(_, at)| *at).max().unwrap_or(after_ms);
        let uids = entries.into_iter().filter_map(|(m, _)| m.splitn(3, ':').nth(2).map(str::to_owned)).collect();
        Ok((uids, newest))
    }

    /// The room's last seq (0 when it has no message).
    pub fn head(&mut self, room: &RoomName) -> Result<u64, RedisStoreError> {
        let keys = self.keys(room);
        let head: Option<u64> = self.call(|con, _| redis::cmd("GET").arg(keys.seq()).query(con))?;
        Ok(head.unwrap_or(0))
    }

    /// Publishes an event (a `system` or `typing` JSON, never stored) to the other
    /// instances watching `room`, stamped with this instance's id so its own
    /// [`super::Events`] thread skips it. Returns how many subscribers got it.
    pub fn publish(&mut self, room: &RoomName, json: &[u8]) -> Result<usize, RedisStoreError> {
        let keys = self.keys(room);
        let payload = envelope(&self.opts.instance, json);
        self.call(|con, _| redis::cmd("PUBLISH").arg(keys.events()).arg(&payload).query(con))
    }

    /// `PING`, for `/healthz`.
    pub fn ping(&mut self) -> Result<(), RedisStoreError> {
        let pong: String = self.call(|con, _| redis::cmd("PING").query(con))?;
        match pong.as_str() {
            "PONG" => Ok(()),
            _ => Err(RedisStoreError::Reply(format!("PING answered {pong:?}"))),
        }
    }
}

/// What the append script is given: the room, the author, the client id, and the
/// JSON around the seq the script assigns.
#[derive(Clone, Copy)]
pub(super) struct Post<'a> {
    pub room: &'a RoomName,
    pub uid: &'a str,
    pub client_id: Option<&'a str>,
    pub prefix: &'a [u8],
    pub suffix: &'a [u8],
    /// A moderator's event: the access hash field it sets, and to what (`""` deletes).
    pub access: Option<(&'a str, &'a str)>,
    /// Refuse it in a read-only room (a client's post, not a moderator's).
    pub guard_read_only: bool,
}

impl Post<'_> {
    /// What the append script's answer `code` means for this post, stored or not.
    pub fn appended(&self, code: u8, seq: u64) -> Appended {
        if code == 0 {
            return Appended::Duplicate { seq };
        }
        let digits = seq.to_string();
        let mut json = BytesMut::with_capacity(self.prefix.len() + digits.len() + self.suffix.len());
        json.put_slice(self.prefix);
        json.put_slice(digits.as_bytes());
        json.put_slice(self.suffix);
        Appended::Stored { seq, json: json.freeze() }
    }
}

/// What [`RedisStore::post`] answers one post.
pub type PostAnswer = Result<Result<Appended, Refused>, RedisStoreError>;

/// A client's post for [`RedisStore::post_many`]: as [`RedisStore::post`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct ClientPost<'a> {
    pub room: &'a RoomName,
    pub uid: &'a str,
    pub client_id: Option<&'a str>,
    pub prefix: &'a [u8],
    pub suffix: &'a [u8],
    pub by_mod: bool,
}

impl<'a> ClientPost<'a> {
    fn post(&self) -> Post<'a> {
        let ClientPost { room, uid, client_id, prefix, suffix, by_mod } = *self;
        Post { room, uid, client_id, prefix, suffix, access: None, guard_read_only: !by_mod }
    }
}

/// The append script's keys and arguments for one post; each attempt adds whether it
/// is the retry (ARGV[6]).
struct AppendArgs<'a> {
    keys: Vec<String>,
    post: Post<'a>,
    cap: usize,
    ttl: u64,
    epoch: String,
    /// The epoch and head this instance knows of the room (`""`, 0 when none).
    known: (String, u64),
    kind: &'static str,
    of: u64,
    by_mod: bool,
    ts: u64,
}

impl AppendArgs<'_> {
    /// The invocation, ARGV in the order `scripts::APPEND_LUA` lists them.
    fn invocation<'s>(&self, scripts: &'s Scripts, retry: bool) -> ScriptInvocation<'s> {
        let post = &self.post;
        let (field, value) = post.access.unwrap_or(("", ""));
        let mut run = scripts.append.prepare_invoke();
        for key in &self.keys {
            run.key(key);
        }
        run.arg(post.prefix).arg(post.suffix).arg(self.cap).arg(self.ttl).arg(u8::from(post.client_id.is_some()));
        run.arg(u8::from(retry)).arg(RETRY_LOOKBACK).arg(&self.epoch);
        run.arg(self.kind).arg(self.of).arg(post.uid).arg(u8::from(self.by_mod)).arg(self.ts).arg(field).arg(value);
        run.arg(u8::from(post.guard_read_only)).arg(post.room.as_str()).arg(NEWS_CAP);
        run.arg(&self.known.0).arg(self.known.1);
        run
    }
}

/// An event on the wire: `{instance} {json}`. The instance id holds no space, so the
/// first space ends it.
pub(super) fn envelope(instance: &InstanceId, json: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(instance.as_str().len() + 1 + json.len());
    payload.extend_from_slice(instance.as_str().as_bytes());
    payload.push(b' ');
    payload.extend_from_slice(json);
    payload
}

/// `{instance} {json}` → (instance, json); `None` for anything else.
pub(super) fn open_envelope(payload: &[u8]) -> Option<(&str, &[u8])> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let origin = std::str::from_utf8(&payload[..space]).ok()?;
    Some((origin, &payload[space + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_to_what_was_sealed() {
        let id = InstanceId::new("ab12cd34").unwrap();
        let sealed = envelope(&id, br#"{"type":"typing","x":"a b"}"#);
        assert_eq!(open_envelope(&sealed), Some(("ab12cd34", &br#"{"type":"typing","x":"a b"}"#[..])));
        assert_eq!(open_envelope(b"no-space"), None);
    }
}
