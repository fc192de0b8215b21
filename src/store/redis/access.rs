//! Who may join what, shared by every instance: private rooms (owner, invited users),
//! DM rooms (the pair), lasting users (id → name), kicks and read-only rooms.
//!
//! Keys: a room's `access` hash (`owner`; `a`,`b` for a DM room; `ro` when read-only;
//! `kick:{uid}` → until, ms; `kick@{address}` → until, open mode's kicks of addresses), its `invited` set, `{p}:users` (id → name), `{p}:dms:{uid}`
//! (the user's DM rooms; written with the pair by `dms.rs`'s script), and the `{p}:users:events` channel, which carries frames for a
//! user's connections on every instance. Kicks and read-only are written by the append
//! script with their event (see `scripts.rs`). Never decides who may join: the
//! dispatcher's rules read what this returns.

use redis::Script;

use super::store::{envelope, Post};
use super::{Appended, RedisStore, RedisStoreError};
use crate::protocol::RoomName;

/// What Redis holds about a room's access, for one joining user.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoomAccess {
    /// The owner of a private room.
    pub owner: Option<String>,
    /// The two users of a DM room.
    pub pair: Option<[String; 2]>,
    /// The joining user was invited (private rooms).
    pub invited: bool,
    /// A private room's title (none for rooms made before titles).
    pub title: Option<String>,
    /// Until when (ms since the epoch) the joining user is kicked, if ever.
    pub kicked_until: Option<u64>,
    pub read_only: bool,
}

impl RoomAccess {
    /// A private room or a DM room: members only, never listed.
    pub fn is_private(&self) -> bool {
        self.owner.is_some() || self.pair.is_some()
    }
}

/// Makes a new room private unless any room of that name exists: KEYS access, seq,
/// present; ARGV owner, title. Returns 1 when it made it, 0 when the name was taken.
const CREATE_PRIVATE_LUA: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'title', ARGV[2])
return 1
";

/// Sets a kick field to ARGV until unless it holds a later one: KEYS access; ARGV field, until.
const KICK_ADDRESS_LUA: &str = r"
local now = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > now then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 0
";

/// The field of a kick of `uid` in a room's access hash.
pub fn kick_field(uid: &str) -> String {
    format!("kick:{uid}")
}

/// The field of a kick of a client address in a room's access hash.
fn address_kick_field(addr: std::net::IpAddr) -> String {
    format!("kick@{addr}")
}

impl RedisStore {
    fn users_key(&self) -> String {
        format!("{}:users", self.opts.prefix)
    }

    pub(super) fn dms_key(&self, uid: &str) -> String {
        format!("{}:dms:{uid}", self.opts.prefix)
    }

    /// The room's access facts as `uid` joining it sees them.
    pub fn access(&mut self, room: &RoomName, uid: &str) -> Result<RoomAccess, RedisStoreError> {
        let keys = self.keys(room);
        let kick = kick_field(uid);
        type Fields = (Option<String>, Option<String>, Option<String>, Option<String>, Option<u64>, Option<String>);
        let ((owner, a, b, ro, until, title), invited): (Fields, bool) = self.call(|con, _| {
            redis::pipe()
                .cmd("HMGET")
                .arg(keys.access())
                .arg(&["owner", "a", "b", "ro", kick.as_str(), "title"])
                .cmd("SISMEMBER")
                .arg(keys.invited())
                .arg(uid)
                .query(con)
        })?;
        let pair = a.zip(b).map(|(a, b)| [a, b]);
        Ok(RoomAccess { owner, pair, invited, title, kicked_until: until, read_only: ro.is_some() })
    }

    /// Until when (ms since the epoch) joins of `room` from `addr` are refused, if ever.
    pub fn address_kicked_until(
        &mut self,
        room: &RoomName,
        addr: std::net::IpAddr,
    ) -> Result<Option<u64>, RedisStoreError> {
        let (access, field) = (self.keys(room).access(), address_kick_field(addr));
        self.call(|con, _| redis::cmd("HGET").arg(&access).arg(&field).query(con))
    }

    /// Refuses joins of `room` from `addrs` until `until`, unless a longer kick of the
    /// address is in force already.
    pub fn kick_addresses(
        &mut self,
        room: &RoomName,
        addrs: &[std::net::IpAddr],
        until: u64,
    ) -> Result<(), RedisStoreError> {
        let access = self.keys(room).access();
        let script = Script::new(KICK_ADDRESS_LUA);
        for addr in addrs {
            let field = address_kick_field(*addr);
            self.call(|con, _| script.key(&access).arg(&field).arg(until).invoke::<()>(con))?;
        }
        Ok(())
    }

    /// Makes the new `room` a private room of `owner` titled `title`; false when a room
    /// of that name exists (public or private), which is left as it is.
    pub fn create_private(&mut self, room: &RoomName, owner: &str, title: &str) -> Result<bool, RedisStoreError> {
        let keys = self.keys(room);
        let script = Script::new(CREATE_PRIVATE_LUA);
        let made: u8 = self.call(|con, _| {
            script.key(keys.access()).key(keys.seq()).key(keys.present()).arg(owner).arg(title).invoke(con)
        })?;
        Ok(made == 1)
    }

    /// Lets `uid` join the private room.
    pub fn invite(&mut self, room: &RoomName, uid: &str) -> Result<(), RedisStoreError> {
        let invited = self.keys(room).invited();
        self.call(|con, _| redis::cmd("SADD").arg(&invited).arg(uid).exec(con))
    }

    /// Remembers a lasting user's name (for `dm` and `invite` while it is away).
    pub fn remember_user(&mut self, uid: &str, name: &str) -> Result<(), RedisStoreError> {
        let users = self.users_key();
        self.call(|con, _| redis::cmd("HSET").arg(&users).arg(uid).arg(name).exec(con))
    }

    /// A lasting user's name.
    pub fn user_name(&mut self, uid: &str) -> Result<Option<String>, RedisStoreError> {
        let users = self.users_key();
        self.call(|con, _| redis::cmd("HGET").arg(&users).arg(uid).query(con))
    }

    /// The DM rooms of `uid`, each with the other user's id.
    pub fn dms_of(&mut self, uid: &str) -> Result<Vec<(RoomName, String)>, RedisStoreError> {
        let dms = self.dms_key(uid);
        let rooms: Vec<String> = self.call(|con, _| redis::cmd("SMEMBERS").arg(&dms).query(con))?;
        let mut found = Vec::with_capacity(rooms.len());
        for room in rooms.iter().filter_map(|r| RoomName::parse(r)) {
            let access = self.keys(&room).access();
            let pair: (Option<String>, Option<String>) =
                self.call(|con, _| redis::cmd("HMGET").arg(&access).arg("a").arg("b").query(con))?;
            let other = match pair {
                (Some(a), Some(b)) if a == uid => b,
                (Some(a), Some(_)) => a,
                _ => continue,
            };
            found.push((room, other));
        }
        Ok(found)
    }

    /// Publishes `json` for every instance's connections of a user (the JSON names
    /// whom); this instance's own events thread skips it.
    pub fn tell_user(&mut self, json: &[u8]) -> Result<(), RedisStoreError> {
        let channel = users_channel(&self.opts.prefix);
        let payload = envelope(&self.opts.instance, json);
        self.call(|con, _| redis::cmd("PUBLISH").arg(&channel).arg(&payload).exec(con))
    }

    /// Stores a moderator's event `prefix seq suffix` by `uid` and sets `field` of the
    /// room's access hash to `value` (`""` deletes it) in the same step.
    pub fn moderate(
        &mut self,
        room: &RoomName,
        uid: &str,
        (prefix, suffix): (&[u8], &[u8]),
        (field, value): (&str, &str),
    ) -> Result<Appended, RedisStoreError> {
        let post =
            Post { room, uid, client_id: None, prefix, suffix, access: Some((field, value)), guard_read_only: false };
        let (code, seq) = self.run_append(&post, None)?;
        Ok(post.appended(code, seq))
    }
}

/// The channel of frames for users' connections wherever they are.
pub(crate) fn users_channel(prefix: &str) -> String {
    format!("{prefix}:users:events")
}
