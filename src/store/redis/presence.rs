//! Presence across instances, with expiry: who is in a room, whichever instance they
//! are connected to, forgetting an instance that stopped refreshing (crashed).
//!
//! Each instance keeps its users of a room in its own hash
//! `{p}:room:{room}:present:{instance}` (uid → name) and adds its id to the room's set
//! `{p}:room:{room}:present`; both expire after `presence_ttl` unless
//! [`RedisStore::presence_refresh`] runs (every third of the TTL is a good pace). A
//! crashed instance's hash therefore expires within the TTL and
//! [`RedisStore::presence_list`] (which unions the live hashes) stops listing its
//! users, and drops the dead id from the set.
//!
//! **Detecting users who vanished**: nothing announces a crash. The caller polls
//! `presence_list` for the rooms it serves (e.g. on each refresh tick) and compares
//! successive results with [`presence_changes`]; a `left` user who is not connected
//! locally gets the `system` `leave` the crashed instance never sent.
//!
//! Never touches rooms or sockets; blocking calls, like the rest of [`RedisStore`].

use std::collections::{BTreeMap, HashMap, HashSet};

use redis::{Pipeline, Value};

use super::{RedisStore, RedisStoreError, RoomKeys};
use crate::protocol::{RoomName, User};

/// What changed between two [`RedisStore::presence_list`] results of one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceChanges {
    /// In `after`, not in `before` (by uid).
    pub arrived: Vec<User>,
    /// In `before`, not in `after` (by uid): left, or their instance died.
    pub left: Vec<User>,
}

/// Compares two presence lists of the same room by uid.
pub fn presence_changes(before: &[User], after: &[User]) -> PresenceChanges {
    let uids = |list: &[User]| list.iter().map(|u| u.id.clone()).collect::<HashSet<_>>();
    let (was, is) = (uids(before), uids(after));
    PresenceChanges {
        arrived: after.iter().filter(|u| !was.contains(&u.id)).cloned().collect(),
        left: before.iter().filter(|u| !is.contains(&u.id)).cloned().collect(),
    }
}

impl RedisStore {
    /// Records that `uid` (shown as `name`) is in `room` on this instance, or renames it.
    ///
    /// The instance's own record is updated first, so after an `Unavailable` the next
    /// successful [`RedisStore::presence_refresh`] writes it to Redis.
    pub fn presence_set(&mut self, room: &RoomName, uid: &str, name: &str) -> Result<(), RedisStoreError> {
        let keys = self.keys(room);
        self.presence.entry(room.clone()).or_default().insert(uid.to_owned(), name.to_owned());
        let mut pipe = redis::pipe();
        self.write_presence(&mut pipe, &keys, [(uid, name)]);
        self.exec(&pipe)
    }

    /// Records that `uid` left `room` on this instance (its last connection there).
    pub fn presence_remove(&mut self, room: &RoomName, uid: &str) -> Result<(), RedisStoreError> {
        let keys = self.keys(room);
        let emptied = match self.presence.get_mut(room) {
            Some(users) => {
                users.remove(uid);
                users.is_empty()
            }
            None => true,
        };
        let mine = keys.present_of(self.opts.instance.as_str());
        let mut pipe = redis::pipe();
        if emptied {
            self.presence.remove(room);
            pipe.cmd("DEL").arg(&mine).ignore();
            pipe.cmd("SREM").arg(keys.present()).arg(self.opts.instance.as_str()).ignore();
        } else {
            pipe.cmd("HDEL").arg(&mine).arg(uid).ignore();
        }
        self.exec(&pipe)
    }

    /// Everyone in `room` on any live instance, each uid once, sorted by uid.
    pub fn presence_list(&mut self, room: &RoomName) -> Result<Vec<User>, RedisStoreError> {
        let keys = self.keys(room);
        let instances: Vec<String> = self.call(|con, _| redis::cmd("SMEMBERS").arg(keys.present()).query(con))?;
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for instance in &instances {
            pipe.cmd("HGETALL").arg(keys.present_of(instance));
        }
        let hashes: Vec<HashMap<String, String>> = self.call(|con, _| pipe.query(con))?;
        let mut everyone = BTreeMap::new();
        let mut dead = Vec::new();
        for (instance, users) in instances.iter().zip(hashes) {
            if users.is_empty() {
                dead.push(instance.as_str());
            }
            for (uid, name) in users {
                everyone.entry(uid).or_insert(name);
            }
        }
        if !dead.is_empty() {
            // Housekeeping only: a dead id left in the set costs one empty HGETALL.
            let _ = self.call(|con, _| redis::cmd("SREM").arg(keys.present()).arg(&dead).exec(con));
        }
        Ok(everyone.into_iter().map(|(uid, name)| User { id: uid.into(), name }).collect())
    }

    /// Keeps this instance's presence alive for another `presence_ttl`, and writes
    /// back any room whose hash Redis lost (expired during an outage, or a restart).
    pub fn presence_refresh(&mut self) -> Result<(), RedisStoreError> {
        if self.presence.is_empty() {
            return Ok(());
        }
        let rooms: Vec<(RoomName, RoomKeys)> =
            self.presence.keys().map(|room| (room.clone(), self.keys(room))).collect();
        let ttl = self.presence_ttl_ms();
        let me = self.opts.instance.as_str().to_owned();
        let mut pipe = redis::pipe();
        for (_, keys) in &rooms {
            pipe.cmd("PEXPIRE").arg(keys.present_of(&me)).arg(ttl);
            pipe.cmd("SADD").arg(keys.present()).arg(&me).ignore();
            pipe.cmd("PEXPIRE").arg(keys.present()).arg(ttl).ignore();
        }
        let kept: Vec<Value> = self.call(|con, _| pipe.query(con))?;
        let mut rewrite = redis::pipe();
        for ((room, keys), kept) in rooms.iter().zip(kept) {
            if kept != Value::Int(1) {
                let users = self.presence.get(room).into_iter().flatten();
                self.write_presence(&mut rewrite, keys, users.map(|(u, n)| (u.as_str(), n.as_str())));
            }
        }
        self.exec(&rewrite)
    }

    /// Removes all of this instance's presence (a clean shutdown); the others see its
    /// users leave at their next `presence_list`.
    pub fn presence_clear(&mut self) -> Result<(), RedisStoreError> {
        let rooms: Vec<RoomName> = self.presence.drain().map(|(room, _)| room).collect();
        let me = self.opts.instance.as_str().to_owned();
        let mut pipe = redis::pipe();
        for room in &rooms {
            let keys = self.keys(room);
            pipe.cmd("DEL").arg(keys.present_of(&me)).ignore();
            pipe.cmd("SREM").arg(keys.present()).arg(&me).ignore();
        }
        self.exec(&pipe)
    }

    /// Runs a pipeline whose replies are all ignored; an empty one sends nothing.
    fn exec(&mut self, pipe: &Pipeline) -> Result<(), RedisStoreError> {
        if pipe.is_empty() {
            return Ok(());
        }
        self.call(|con, _| pipe.exec(con))
    }

    /// Queues: add `users` to this instance's hash for the room, register the instance
    /// in the room's set, and (re)start both TTLs.
    fn write_presence<'a>(
        &self,
        pipe: &mut Pipeline,
        keys: &RoomKeys,
        users: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let me = self.opts.instance.as_str();
        let ttl = self.presence_ttl_ms();
        let mine = keys.present_of(me);
        let mut hset = redis::cmd("HSET");
        hset.arg(&mine);
        let mut any = false;
        for (uid, name) in users {
            hset.arg(uid).arg(name);
            any = true;
        }
        if !any {
            return;
        }
        pipe.add_command(hset).ignore();
        pipe.cmd("PEXPIRE").arg(&mine).arg(ttl).ignore();
        pipe.cmd("SADD").arg(keys.present()).arg(me).ignore();
        pipe.cmd("PEXPIRE").arg(keys.present()).arg(ttl).ignore();
    }

    fn presence_ttl_ms(&self) -> u64 {
        u64::try_from(self.opts.presence_ttl.as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(uid: &str) -> User {
        User { id: uid.into(), name: format!("name of {uid}") }
    }

    #[test]
    fn changes_compare_by_uid() {
        let before = [p("a"), p("b")];
        let after = [p("b"), p("c")];
        let got = presence_changes(&before, &after);
        assert_eq!(got.arrived, [p("c")]);
        assert_eq!(got.left, [p("a")]);
        assert_eq!(presence_changes(&after, &after), PresenceChanges::default());
    }
}
