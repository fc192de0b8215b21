//! What keeps DMs from harming a user, shared by every instance: each user's blocked
//! users, closed DM rooms and count of new DM rooms in the current minute.
//!
//! Keys: `{p}:blocks:{uid}` (a set of user ids), `{p}:dmclosed:{uid}` (a set of room
//! names), `{p}:dmrate:{uid}` (a counter that expires a minute after the user's first
//! new DM in it). Opening a DM checks the block and the rate and records the pair in one
//! script, so two instances never both let the 11th through. Never decides who may do
//! what beyond what its scripts are told: the dispatcher's `cluster::dms` asks.

use redis::Script;

use super::{RedisStore, RedisStoreError};
use crate::protocol::RoomName;

/// What became of a `dm` in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmOpened {
    /// The pair is recorded (new or not); `tell_other` unless the other user closed it.
    Open { tell_other: bool },
    /// The other user blocked the opener.
    Blocked,
    /// A new room past the rate of the opener or of the other user.
    RateLimited,
}

/// KEYS access, dms:a, dms:b, blocks:b, rate:a, rate:b, closed:a, closed:b;
/// ARGV a (the opener), b, room, limit, window (s).
const OPEN_DM_LUA: &str = r"
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return 'blocked' end
if redis.call('HEXISTS', KEYS[1], 'a') == 0 then
  local limit = tonumber(ARGV[4])
  if tonumber(redis.call('GET', KEYS[5]) or '0') >= limit or tonumber(redis.call('GET', KEYS[6]) or '0') >= limit then
    return 'rate'
  end
  for _, k in ipairs({KEYS[5], KEYS[6]}) do
    if redis.call('INCR', k) == 1 then redis.call('EXPIRE', k, ARGV[5]) end
  end
  redis.call('HSET', KEYS[1], 'a', ARGV[1], 'b', ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[3])
end
redis.call('SREM', KEYS[7], ARGV[3])
if redis.call('SISMEMBER', KEYS[8], ARGV[3]) == 1 then return 'closed' end
return 'open'
";

/// KEYS closed:a, closed:b, blocks:a, blocks:b; ARGV room, poster. Opens the room for
/// each of a and b who closed it and did not block the poster; returns 1/0 for each.
const REOPEN_LUA: &str = r"
local out = {}
for i = 1, 2 do
  out[i] = 0
  if redis.call('SISMEMBER', KEYS[i + 2], ARGV[2]) == 0 and redis.call('SREM', KEYS[i], ARGV[1]) == 1 then
    out[i] = 1
  end
end
return out
";

/// KEYS blocks; ARGV user, max. Adds unless the set holds `max`; 1 when it is (now) in.
const BLOCK_LUA: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
";

impl RedisStore {
    fn blocks_key(&self, uid: &str) -> String {
        format!("{}:blocks:{uid}", self.opts.prefix)
    }

    fn closed_key(&self, uid: &str) -> String {
        format!("{}:dmclosed:{uid}", self.opts.prefix)
    }

    fn dm_rate_key(&self, uid: &str) -> String {
        format!("{}:dmrate:{uid}", self.opts.prefix)
    }

    /// Records the DM room of `me` and `other` unless `other` blocked `me` or, for a
    /// new room, either has opened `limit` new rooms in their current `window_s`;
    /// opening it takes it out of `me`'s closed DMs.
    pub fn open_dm_checked(
        &mut self,
        room: &RoomName,
        (me, other): (&str, &str),
        limit: u32,
        window_s: u64,
    ) -> Result<DmOpened, RedisStoreError> {
        let keys = [
            self.keys(room).access(),
            self.dms_key(me),
            self.dms_key(other),
            self.blocks_key(other),
            self.dm_rate_key(me),
            self.dm_rate_key(other),
            self.closed_key(me),
            self.closed_key(other),
        ];
        let script = Script::new(OPEN_DM_LUA);
        let answer: String = self.call(|con, _| {
            let mut call = script.prepare_invoke();
            for k in &keys {
                call.key(k);
            }
            call.arg(me).arg(other).arg(room.as_str()).arg(limit).arg(window_s).invoke(con)
        })?;
        Ok(match answer.as_str() {
            "blocked" => DmOpened::Blocked,
            "rate" => DmOpened::RateLimited,
            "closed" => DmOpened::Open { tell_other: false },
            _ => DmOpened::Open { tell_other: true },
        })
    }

    /// Blocks (`on`) or unblocks `user` for `uid`; false when `uid` already blocked
    /// `max` users.
    pub fn set_block(&mut self, uid: &str, user: &str, on: bool, max: usize) -> Result<bool, RedisStoreError> {
        let key = self.blocks_key(uid);
        if !on {
            self.call(|con, _| redis::cmd("SREM").arg(&key).arg(user).exec(con))?;
            return Ok(true);
        }
        let script = Script::new(BLOCK_LUA);
        let done: u8 = self.call(|con, _| script.key(&key).arg(user).arg(max).invoke(con))?;
        Ok(done == 1)
    }

    /// The users `uid` blocked.
    pub fn blocks_of(&mut self, uid: &str) -> Result<Vec<String>, RedisStoreError> {
        let key = self.blocks_key(uid);
        self.call(|con, _| redis::cmd("SMEMBERS").arg(&key).query(con))
    }

    /// Closes `uid`'s DM room `room`.
    pub fn close_dm(&mut self, uid: &str, room: &RoomName) -> Result<(), RedisStoreError> {
        let key = self.closed_key(uid);
        self.call(|con, _| redis::cmd("SADD").arg(&key).arg(room.as_str()).exec(con))
    }

    /// `uid`'s closed DM rooms.
    pub fn closed_dms(&mut self, uid: &str) -> Result<Vec<String>, RedisStoreError> {
        let key = self.closed_key(uid);
        self.call(|con, _| redis::cmd("SMEMBERS").arg(&key).query(con))
    }

    /// The pair of a DM room.
    pub fn dm_pair(&mut self, room: &RoomName) -> Result<Option<[String; 2]>, RedisStoreError> {
        let access = self.keys(room).access();
        let (a, b): (Option<String>, Option<String>) =
            self.call(|con, _| redis::cmd("HMGET").arg(&access).arg("a").arg("b").query(con))?;
        Ok(a.zip(b).map(|(a, b)| [a, b]))
    }

    /// A message by `poster` was stored in the DM room of `pair`: each of the two who
    /// closed it, and did not block the poster, has it open again. Returns whom.
    pub fn reopen_dm(
        &mut self,
        room: &RoomName,
        pair: &[String; 2],
        poster: &str,
    ) -> Result<[bool; 2], RedisStoreError> {
        let keys = [
            self.closed_key(&pair[0]),
            self.closed_key(&pair[1]),
            self.blocks_key(&pair[0]),
            self.blocks_key(&pair[1]),
        ];
        let script = Script::new(REOPEN_LUA);
        let (a, b): (u8, u8) = self.call(|con, _| {
            let mut call = script.prepare_invoke();
            for k in &keys {
                call.key(k);
            }
            call.arg(room.as_str()).arg(poster).invoke(con)
        })?;
        Ok([a == 1, b == 1])
    }
}
