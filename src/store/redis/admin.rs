//! Bans and the audit log in Redis, shared by every instance: the hash `{p}:bans`
//! (user → the ban as JSON) with the counter `{p}:bans:v`, bumped by every change so
//! an instance polls one small key and reads the hash only when it moved; and the
//! sorted set `{p}:audit` (each entry as JSON, scored by its number from the counter
//! `{p}:audit:id`, so numbers are unique across instances and `before` pages back).
//!
//! Called only from `redis-io`; never decides who is banned or what is recorded.

use super::RedisStore;
use super::RedisStoreError;
use crate::bans::Ban;
use crate::store::audit::{AuditEntry, AuditQuery};

/// Entries read per round trip while a filtered page is being filled.
const AUDIT_SCAN: usize = 200;
/// Entries a filtered page looks through at most before it answers what it found.
const AUDIT_SCAN_MAX: usize = 20_000;
/// Oldest entries looked at per write for `--audit-retention-days`.
const AUDIT_TRIM: isize = 50;

impl RedisStore {
    fn admin_key(&self, what: &str) -> String {
        format!("{}:{what}", self.opts.prefix)
    }

    /// Puts a ban in force for every instance.
    pub fn ban_set(&mut self, ban: &Ban) -> Result<(), RedisStoreError> {
        let (bans, version) = (self.admin_key("bans"), self.admin_key("bans:v"));
        let json = serde_json::to_string(ban).unwrap_or_default();
        self.call(|con, _| {
            redis::pipe()
                .cmd("HSET")
                .arg(&bans)
                .arg(&ban.user)
                .arg(&json)
                .ignore()
                .cmd("INCR")
                .arg(&version)
                .ignore()
                .exec(con)
        })
    }

    /// Lifts a user's ban for every instance.
    pub fn ban_lift(&mut self, user: &str) -> Result<(), RedisStoreError> {
        let (bans, version) = (self.admin_key("bans"), self.admin_key("bans:v"));
        self.call(|con, _| {
            redis::pipe().cmd("HDEL").arg(&bans).arg(user).ignore().cmd("INCR").arg(&version).ignore().exec(con)
        })
    }

    /// The bans' version counter (0 before the first ban).
    pub fn bans_version(&mut self) -> Result<u64, RedisStoreError> {
        let version = self.admin_key("bans:v");
        let v: Option<u64> = self.call(|con, _| redis::cmd("GET").arg(&version).query(con))?;
        Ok(v.unwrap_or(0))
    }

    /// Every stored ban; expired ones are deleted on the way.
    pub fn bans(&mut self, now_ms: u64) -> Result<Vec<Ban>, RedisStoreError> {
        let key = self.admin_key("bans");
        let all: Vec<(String, String)> = self.call(|con, _| redis::cmd("HGETALL").arg(&key).query(con))?;
        let mut bans = Vec::with_capacity(all.len());
        let mut expired = Vec::new();
        for (user, json) in all {
            match serde_json::from_str::<Ban>(&json) {
                Ok(ban) if ban.until > now_ms => bans.push(ban),
                _ => expired.push(user),
            }
        }
        if !expired.is_empty() {
            // No version bump: every instance ignores an expired ban by itself.
            let _: Result<(), _> = self.call(|con, _| redis::cmd("HDEL").arg(&key).arg(&expired).exec(con));
        }
        Ok(bans)
    }

    /// Writes this instance's connections (a JSON array) for the other instances'
    /// consoles, at `{p}:online:{instance}`, kept for `ttl`.
    pub fn online_set(&mut self, json: &[u8], ttl: std::time::Duration) -> Result<(), RedisStoreError> {
        let key = self.admin_key(&format!("online:{}", self.opts.instance));
        let ms = ttl.as_millis().max(1) as u64;
        self.call(|con, _| redis::cmd("SET").arg(&key).arg(json).arg("PX").arg(ms).exec(con))
    }

    /// The connections every other live instance last wrote (`SCAN` of
    /// `{p}:online:*`: one key per instance).
    pub fn online_elsewhere(&mut self) -> Result<Vec<serde_json::Value>, RedisStoreError> {
        let pattern = self.admin_key("online:*");
        let mine = self.admin_key(&format!("online:{}", self.opts.instance));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self.call(|con, _| {
                redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(100).query(con)
            })?;
            keys.extend(batch.into_iter().filter(|k| *k != mine));
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        let mut users = Vec::new();
        for key in keys {
            let json: Option<Vec<u8>> = self.call(|con, _| redis::cmd("GET").arg(&key).query(con))?;
            if let Some(list) = json.and_then(|j| serde_json::from_slice::<Vec<serde_json::Value>>(&j).ok()) {
                users.extend(list);
            }
        }
        Ok(users)
    }

    /// Appends an entry to the log, numbered from the shared counter, and drops the
    /// oldest entries older than `keep_ms` (when given) on the way.
    pub fn audit_append(&mut self, entry: &AuditEntry, keep_ms: Option<u64>) -> Result<u64, RedisStoreError> {
        let (log, counter) = (self.admin_key("audit"), self.admin_key("audit:id"));
        let id: u64 = self.call(|con, _| redis::cmd("INCR").arg(&counter).query(con))?;
        let json = serde_json::to_string(&AuditEntry { id, ..entry.clone() }).unwrap_or_default();
        self.call(|con, _| redis::cmd("ZADD").arg(&log).arg(id).arg(&json).exec(con))?;
        if let Some(keep) = keep_ms {
            let cutoff = entry.ts.saturating_sub(keep);
            let oldest: Vec<String> =
                self.call(|con, _| redis::cmd("ZRANGE").arg(&log).arg(0).arg(AUDIT_TRIM - 1).query(con))?;
            let old: Vec<&String> =
                oldest.iter().filter(|j| serde_json::from_str::<AuditEntry>(j).is_ok_and(|e| e.ts < cutoff)).collect();
            if !old.is_empty() {
                self.call(|con, _| redis::cmd("ZREM").arg(&log).arg(&old).exec(con))?;
            }
        }
        Ok(id)
    }

    /// A page of the log, newest first, as [`AuditQuery`] asks.
    pub fn audit_read(&mut self, q: &AuditQuery) -> Result<Vec<AuditEntry>, RedisStoreError> {
        let log = self.admin_key("audit");
        let mut found = Vec::new();
        let mut below = q.before.map_or("+inf".to_owned(), |b| format!("({b}"));
        let mut scanned = 0;
        while found.len() < q.limit && scanned < AUDIT_SCAN_MAX {
            let page: Vec<(String, u64)> = self.call(|con, _| {
                redis::cmd("ZREVRANGEBYSCORE")
                    .arg(&log)
                    .arg(&below)
                    .arg("-inf")
                    .arg("WITHSCORES")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(AUDIT_SCAN)
                    .query(con)
            })?;
            scanned += page.len();
            let Some(last) = page.last().map(|(_, id)| *id) else { break };
            for (json, _) in &page {
                match serde_json::from_str::<AuditEntry>(json) {
                    Ok(e) if q.admits(&e) && found.len() < q.limit => found.push(e),
                    _ => {}
                }
            }
            if page.len() < AUDIT_SCAN {
                break;
            }
            below = format!("({last}");
        }
        Ok(found)
    }
}
