//! One user's data in Redis, for the server API's export and erasure
//! (`GET`/`DELETE /api/v1/users/{id}` with `--redis`): the reads that find everything
//! stored about a user, and the writes that take their identity out.
//!
//! A user's rows are found by walking every room's stream in seq order, [`PAGE`]
//! entries with their bodies per call (`RedisStore::range`), keeping those whose body
//! names the user as a JSON string; the other keys that name users are found by `SCAN`
//! (never `KEYS`), so no call holds Redis for long and nothing here holds a user's whole
//! history in memory. A body is rewritten only if it is still what was read
//! ([`CAS_LUA`]): a reaction stored meanwhile by another instance is never undone.
//!
//! Never decides what is erased or who may ask (the API and the dispatcher do); what
//! an anonymous row looks like is `store::sqlite::userdata`'s, shared by both stores.

use bytes::Bytes;
use redis::Script;
use serde_json::{json, Value};

use super::{read_marks, room_of, RedisStore, RedisStoreError};
use crate::bans::Ban;
use crate::protocol::RoomName;
use crate::store::audit::{AuditEntry, AuditQuery, MAX_AUDIT_PAGE};
use crate::store::sqlite::userdata::{anonymized, erased_id, DELETED_UID};

/// Stream entries read per round trip while looking for a user's rows.
const PAGE: usize = 500;
/// Keys one `SCAN` call looks at.
const SCAN_COUNT: usize = 1000;
/// Times a row is read and rewritten again when something changed it in between.
const CAS_TRIES: usize = 5;

/// Replaces hash field ARGV[1] of KEYS[1] by ARGV[3] if it still holds ARGV[2]: 1 when
/// replaced, 0 when it changed meanwhile (or is gone).
const CAS_LUA: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
";

/// One stored body that names a user.
#[derive(Debug, Clone)]
pub struct Row {
    pub room: RoomName,
    pub seq: u64,
    pub json: Bytes,
}

/// A walk over every stored body that names a user: rooms in name order, each in seq
/// order, a page at a time ([`Authored::next_page`]).
#[derive(Debug)]
pub struct Authored {
    rooms: Vec<RoomName>,
    at: usize,
    after: u64,
    /// The user's id as a JSON string, quotes included: what a body naming them holds.
    needle: Vec<u8>,
}

impl Authored {
    /// The rows of one read (possibly none), or `None` once every room was walked.
    pub fn next_page(&mut self, store: &mut RedisStore) -> Result<Option<Vec<Row>>, RedisStoreError> {
        let Some(room) = self.rooms.get(self.at).cloned() else { return Ok(None) };
        let range = store.range(&room, self.after, None, PAGE)?;
        match range.messages.last() {
            Some(last) => self.after = last.seq,
            None => {
                self.at += 1;
                self.after = 0;
            }
        }
        let needle = &self.needle;
        let rows = range
            .messages
            .into_iter()
            .filter(|m| m.json.windows(needle.len()).any(|w| w == &needle[..]))
            .map(|m| Row { room: room.clone(), seq: m.seq, json: m.json })
            .collect();
        Ok(Some(rows))
    }
}

/// What a `forget_user` changed, for the log.
#[derive(Debug, Default, Clone, Copy)]
pub struct Forgotten {
    pub keys: u64,
    pub audit: u64,
}

impl RedisStore {
    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.opts.prefix)
    }

    /// Every key matching `pattern` (`SCAN`, [`SCAN_COUNT`] at a time).
    fn scan(&mut self, pattern: &str) -> Result<Vec<String>, RedisStoreError> {
        let mut found = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self.call(|con, _| {
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(SCAN_COUNT).query(con)
            })?;
            found.extend(batch);
            cursor = next;
            if cursor == 0 {
                return Ok(found);
            }
        }
    }

    /// Every room with a `what` key (`seq`, `access`, `invited`), in name order.
    fn rooms_with(&mut self, what: &str) -> Result<Vec<(RoomName, String)>, RedisStoreError> {
        let prefix = self.opts.prefix.clone();
        let mut rooms: Vec<(RoomName, String)> = self
            .scan(&format!("{prefix}:room:*:{what}"))?
            .into_iter()
            .filter_map(|k| room_of(&k, &prefix, what).map(|r| (r, k)))
            .collect();
        rooms.sort();
        rooms.dedup();
        Ok(rooms)
    }

    /// The walk over every stored body naming `uid`.
    pub fn authored(&mut self, uid: &str) -> Result<Authored, RedisStoreError> {
        let rooms = self.rooms_with("seq")?.into_iter().map(|(r, _)| r).collect();
        let needle = serde_json::to_vec(uid).expect("a string serializes");
        Ok(Authored { rooms, at: 0, after: 0, needle })
    }

    /// Everything Redis holds about `uid` besides their rows, as export lines (the same
    /// kinds as single-instance mode's), handed to `line` one at a time.
    pub fn export_facts(
        &mut self,
        uid: &str,
        line: &mut dyn FnMut(Value) -> std::io::Result<()>,
    ) -> Result<Result<(), std::io::Error>, RedisStoreError> {
        macro_rules! emit {
            ($v:expr) => {
                if let Err(e) = line($v) {
                    return Ok(Err(e));
                }
            };
        }
        let marks = read_marks(&self.opts.prefix, uid);
        let mut reads: Vec<(String, u64)> = self.call(|con, _| redis::cmd("HGETALL").arg(&marks).query(con))?;
        reads.sort();
        for (room, seq) in reads {
            emit!(json!({"type": "read_marker", "room": room, "seq": seq}));
        }
        let mut blocks = self.blocks_of(uid)?;
        blocks.sort();
        for user in blocks {
            emit!(json!({"type": "block", "user": user}));
        }
        let prefix = self.opts.prefix.clone();
        let mut blocked_by = Vec::new();
        for key in self.scan(&format!("{prefix}:blocks:*"))? {
            let Some(user) = key.strip_prefix(&format!("{prefix}:blocks:")).map(str::to_owned) else { continue };
            let member: bool = self.call(|con, _| redis::cmd("SISMEMBER").arg(&key).arg(uid).query(con))?;
            if member && user != uid {
                blocked_by.push(user);
            }
        }
        blocked_by.sort();
        for user in blocked_by {
            emit!(json!({"type": "blocked_by", "user": user}));
        }
        let mut dms = self.dms_of(uid)?;
        dms.sort();
        for (room, with) in dms {
            emit!(json!({"type": "dm", "room": room, "with": with}));
        }
        let mut closed = self.closed_dms(uid)?;
        closed.sort();
        for room in closed {
            emit!(json!({"type": "dm_closed", "room": room}));
        }
        let kick = super::kick_field(uid);
        let mut kicks = Vec::new();
        for (room, key) in self.rooms_with("access")? {
            let (owner, title, until): (Option<String>, Option<String>, Option<u64>) =
                self.call(|con, _| redis::cmd("HMGET").arg(&key).arg("owner").arg("title").arg(&kick).query(con))?;
            if owner.as_deref() == Some(uid) {
                emit!(json!({"type": "private_room", "room": room, "title": title}));
            }
            if let Some(until) = until {
                kicks.push(json!({"type": "kick", "room": room, "until": until}));
            }
        }
        for (room, key) in self.rooms_with("invited")? {
            let member: bool = self.call(|con, _| redis::cmd("SISMEMBER").arg(&key).arg(uid).query(con))?;
            if member {
                emit!(json!({"type": "invite", "room": room}));
            }
        }
        let bans = self.key("bans");
        let ban: Option<String> = self.call(|con, _| redis::cmd("HGET").arg(&bans).arg(uid).query(con))?;
        if let Some(ban) = ban.and_then(|b| serde_json::from_str::<Ban>(&b).ok()) {
            emit!(json!({"type": "ban", "until": ban.until, "reason": ban.reason}));
        }
        let mut query = AuditQuery { limit: MAX_AUDIT_PAGE, target: Some(uid.to_owned()), ..AuditQuery::default() };
        loop {
            let page = self.audit_read(&query)?;
            // Newest first in the log; the export lists them in the order they happened.
            for e in page.iter().rev() {
                emit!(
                    json!({"type": "audit", "ts": e.ts, "action": e.action, "actor": e.actor, "room": e.room, "detail": e.detail})
                );
            }
            match page.last() {
                Some(last) if page.len() == query.limit => query.before = Some(last.id),
                _ => break,
            }
        }
        for k in kicks {
            emit!(k);
        }
        Ok(Ok(()))
    }

    /// Rewrites the body of message `seq` of `room` with `uid` made anonymous (see
    /// [`anonymized`]), if it still names them; true when it was rewritten.
    pub fn anonymize(&mut self, room: &RoomName, seq: u64, uid: &str, keep: bool) -> Result<bool, RedisStoreError> {
        let msgs = self.keys(room).msgs();
        let script = Script::new(CAS_LUA);
        for _ in 0..CAS_TRIES {
            let old: Option<Vec<u8>> = self.call(|con, _| redis::cmd("HGET").arg(&msgs).arg(seq).query(con))?;
            let Some(new) = old.as_deref().and_then(|o| anonymized(o, uid, keep)) else { return Ok(false) };
            let done: u8 = self.call(|con, _| script.key(&msgs).arg(seq).arg(&old).arg(&new).invoke(con))?;
            if done == 1 {
                return Ok(true);
            }
        }
        Err(RedisStoreError::Reply(format!("{room}/{seq} kept changing while it was made anonymous")))
    }

    /// Forgets everything else Redis holds about `uid`: their name, read markers,
    /// unread mentions, blocks (theirs and of them), closed DMs, DM rate, invitations, kicks, presence
    /// and the dedup keys of their posts; their DM rooms and owned private rooms stay,
    /// under [`DELETED_UID`]; audit entries naming them name [`erased_id`] instead.
    /// Bans stay (as in single-instance mode: a ban outlives the erasure it may
    /// follow).
    pub fn forget_user(&mut self, uid: &str) -> Result<Forgotten, RedisStoreError> {
        let prefix = self.opts.prefix.clone();
        let mut done = Forgotten::default();
        let own = [
            read_marks(&prefix, uid),
            self.key(&format!("blocks:{uid}")),
            self.key(&format!("dmclosed:{uid}")),
            self.key(&format!("dmrate:{uid}")),
            self.dms_key(uid),
        ];
        let users = self.key("users");
        self.call(|con, _| {
            redis::pipe().cmd("HDEL").arg(&users).arg(uid).ignore().cmd("DEL").arg(&own).ignore().exec(con)
        })?;
        for key in self.scan(&format!("{prefix}:blocks:*"))? {
            self.call(|con, _| redis::cmd("SREM").arg(&key).arg(uid).exec(con))?;
        }
        for (_, key) in self.rooms_with("invited")? {
            self.call(|con, _| redis::cmd("SREM").arg(&key).arg(uid).exec(con))?;
        }
        let kick = super::kick_field(uid);
        for (_, key) in self.rooms_with("access")? {
            let (owner, a, b): (Option<String>, Option<String>, Option<String>) =
                self.call(|con, _| redis::cmd("HMGET").arg(&key).arg("owner").arg("a").arg("b").query(con))?;
            let mut pipe = redis::pipe();
            pipe.cmd("HDEL").arg(&key).arg(&kick).ignore();
            for (field, who) in [("owner", owner), ("a", a), ("b", b)] {
                if who.as_deref() == Some(uid) {
                    pipe.cmd("HSET").arg(&key).arg(field).arg(DELETED_UID).ignore();
                }
            }
            self.call(|con, _| pipe.exec(con))?;
        }
        for (_, key) in self.rooms_with("mentions")? {
            self.call(|con, _| redis::cmd("HDEL").arg(&key).arg(uid).exec(con))?;
        }
        for key in self.scan(&format!("{prefix}:room:*:present:*"))? {
            self.call(|con, _| redis::cmd("HDEL").arg(&key).arg(uid).exec(con))?;
        }
        // The dedup keys of their posts name them: `…:id:{len}:{uid}:{id}`.
        let dedup = format!("{prefix}:room:*:id:{}:{}:*", uid.len(), glob_escaped(uid));
        let dedup_keys = self.scan(&dedup)?;
        for chunk in dedup_keys.chunks(500) {
            self.call(|con, _| redis::cmd("DEL").arg(chunk).exec(con))?;
            done.keys += chunk.len() as u64;
        }
        done.audit = self.audit_rename(uid)?;
        Ok(done)
    }

    /// Audit entries with `uid` as actor or target name [`erased_id`] instead (same
    /// number, same place in the log); how many.
    fn audit_rename(&mut self, uid: &str) -> Result<u64, RedisStoreError> {
        let log = self.key("audit");
        let hashed = erased_id(uid);
        let mut renamed = 0;
        let mut above = "-inf".to_owned();
        loop {
            let page: Vec<(String, u64)> = self.call(|con, _| {
                redis::cmd("ZRANGEBYSCORE")
                    .arg(&log)
                    .arg(&above)
                    .arg("+inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(PAGE)
                    .query(con)
            })?;
            let Some(last) = page.last().map(|(_, id)| *id) else { return Ok(renamed) };
            for (json, id) in &page {
                let Ok(mut e) = serde_json::from_str::<AuditEntry>(json) else { continue };
                if e.actor != uid && e.target != uid {
                    continue;
                }
                for who in [&mut e.actor, &mut e.target] {
                    if who == uid {
                        hashed.clone_into(who);
                    }
                }
                let new = serde_json::to_string(&e).unwrap_or_default();
                self.call(|con, _| {
                    redis::pipe()
                        .cmd("ZREM")
                        .arg(&log)
                        .arg(json)
                        .ignore()
                        .cmd("ZADD")
                        .arg(&log)
                        .arg(*id)
                        .arg(&new)
                        .ignore()
                        .exec(con)
                })?;
                renamed += 1;
            }
            if page.len() < PAGE {
                return Ok(renamed);
            }
            above = format!("({last}");
        }
    }
}

/// `s` with the characters `SCAN MATCH` treats as a pattern escaped.
fn glob_escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_is_matched_literally_by_scan() {
        assert_eq!(glob_escaped("u-a*b?[c]\\"), "u-a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escaped("u-plain"), "u-plain");
    }
}
