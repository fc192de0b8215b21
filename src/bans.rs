//! Server-wide bans: who may not connect at all, until when and why. The table is
//! shared: the dispatcher (or, with `--redis`, what it hears from Redis) writes it, and
//! every connection thread reads it once, at connect, before anything is registered.
//!
//! A ban names a user id (a token's `sub`, or open mode's key-derived id) and, in open
//! mode, the addresses that user was connected from, since an open-mode identity costs
//! nothing. Expired bans are ignored by every check and dropped on the next change.
//!
//! Pure data behind a lock held for a lookup; it never touches sockets or the store.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// Longest ban, in minutes: a year. Longer is a deletion of the account, not a ban.
pub const MAX_BAN_MINUTES: u64 = 525_600;
/// Longest reason kept (characters).
pub const MAX_REASON_CHARS: usize = 200;

/// Now, in ms since the epoch: what bans are measured against.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub user: String,
    /// Ms since the epoch; the ban is over at this time.
    pub until: u64,
    pub reason: String,
    /// Who banned (an API key's id).
    pub by: String,
    /// When (ms since the epoch).
    pub at: u64,
    /// Open mode: the addresses the user was connected from when banned.
    #[serde(default)]
    pub addrs: Vec<IpAddr>,
}

impl Ban {
    /// The refusal a banned connection gets (close reason and error text alike):
    /// what, for how long, and why. Starts with `banned` so clients can tell it apart.
    pub fn refusal(&self, now: u64) -> String {
        let minutes = self.until.saturating_sub(now).div_ceil(60_000).max(1);
        if self.reason.is_empty() {
            format!("banned from this server: {minutes} more minute(s)")
        } else {
            format!("banned from this server: {minutes} more minute(s): {}", self.reason)
        }
    }
}

/// The bans in force, by user and by address.
#[derive(Debug, Default)]
pub struct Bans {
    table: RwLock<Table>,
}

#[derive(Debug, Default)]
struct Table {
    users: HashMap<String, Ban>,
    /// Address → the user whose ban covers it.
    addrs: HashMap<IpAddr, String>,
}

impl Table {
    fn insert(&mut self, ban: Ban) {
        for addr in &ban.addrs {
            self.addrs.insert(*addr, ban.user.clone());
        }
        self.users.insert(ban.user.clone(), ban);
    }

    fn remove(&mut self, user: &str) -> Option<Ban> {
        let ban = self.users.remove(user)?;
        self.addrs.retain(|_, u| u != user);
        Some(ban)
    }

    fn drop_expired(&mut self, now: u64) {
        let expired: Vec<String> = self.users.values().filter(|b| b.until <= now).map(|b| b.user.clone()).collect();
        for user in expired {
            self.remove(&user);
        }
    }
}

impl Bans {
    /// Puts `ban` in force (replacing the user's earlier one).
    pub fn set(&self, ban: Ban, now: u64) {
        let mut t = self.table.write().unwrap_or_else(PoisonError::into_inner);
        t.drop_expired(now);
        t.remove(&ban.user);
        t.insert(ban);
    }

    /// Lifts the user's ban; the lifted ban when there was one in force.
    pub fn lift(&self, user: &str, now: u64) -> Option<Ban> {
        let mut t = self.table.write().unwrap_or_else(PoisonError::into_inner);
        t.drop_expired(now);
        t.remove(user)
    }

    /// Replaces every ban with `bans` (Redis mode: the cluster's list as read), keeping
    /// the addresses this instance added to a ban it knew already. Returns the bans
    /// that are new, for their users to be disconnected.
    pub fn replace(&self, bans: Vec<Ban>, now: u64) -> Vec<Ban> {
        let mut t = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let same = |a: &Ban, b: &Ban| a.at == b.at && a.until == b.until && a.by == b.by;
        let mut fresh = Vec::new();
        let mut table = Table::default();
        for mut ban in bans.into_iter().filter(|b| b.until > now) {
            match t.users.get(&ban.user).filter(|old| same(old, &ban)) {
                Some(old) => {
                    for addr in &old.addrs {
                        if !ban.addrs.contains(addr) {
                            ban.addrs.push(*addr);
                        }
                    }
                }
                None => fresh.push(ban.clone()),
            }
            table.insert(ban);
        }
        *t = table;
        fresh
    }

    /// Adds addresses to a user's ban in force (open mode, seen on this instance).
    pub fn cover(&self, user: &str, addrs: &[IpAddr]) {
        let mut t = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let Some(ban) = t.users.get_mut(user) else { return };
        for addr in addrs {
            if !ban.addrs.contains(addr) {
                ban.addrs.push(*addr);
            }
        }
        for addr in addrs {
            t.addrs.insert(*addr, user.to_owned());
        }
    }

    /// The ban that refuses a connection of `user` from `addr` (`None` when the address
    /// is not to be checked: token mode, or an address shared by many), if any.
    pub fn refusing(&self, user: &str, addr: Option<IpAddr>, now: u64) -> Option<Ban> {
        let t = self.table.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(ban) = t.users.get(user).filter(|b| b.until > now) {
            return Some(ban.clone());
        }
        let by = t.addrs.get(&addr?)?;
        t.users.get(by).filter(|b| b.until > now).cloned()
    }

    /// The user's ban in force, if any.
    pub fn of(&self, user: &str, now: u64) -> Option<Ban> {
        self.refusing(user, None, now)
    }

    /// Every ban in force, newest first.
    pub fn list(&self, now: u64) -> Vec<Ban> {
        let t = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut bans: Vec<Ban> = t.users.values().filter(|b| b.until > now).cloned().collect();
        bans.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.user.cmp(&b.user)));
        bans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ban(user: &str, until: u64, addrs: &[&str]) -> Ban {
        Ban {
            user: user.into(),
            until,
            reason: "spam".into(),
            by: "key-1".into(),
            at: 1,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn bans_refuse_by_user_and_address_until_they_expire_or_are_lifted() {
        let bans = Bans::default();
        bans.set(ban("troll", 1_000, &["203.0.113.7"]), 0);
        let addr = Some("203.0.113.7".parse().unwrap());
        assert!(bans.refusing("troll", None, 10).is_some());
        assert!(bans.refusing("new-identity", addr, 10).is_some(), "open mode: the address is covered");
        assert!(bans.refusing("someone", Some("198.51.100.1".parse().unwrap()), 10).is_none());
        assert!(bans.refusing("troll", None, 1_000).is_none(), "expired at `until`");
        assert!(bans.lift("troll", 10).is_some());
        assert!(bans.refusing("new-identity", addr, 10).is_none(), "lifting frees the addresses too");
        assert!(bans.lift("troll", 10).is_none());
    }

    #[test]
    fn a_replaced_list_reports_only_new_bans() {
        let bans = Bans::default();
        assert_eq!(bans.replace(vec![ban("a", 100, &[])], 0).len(), 1);
        assert_eq!(bans.replace(vec![ban("a", 100, &[]), ban("b", 100, &[])], 0).len(), 1);
        assert!(bans.replace(vec![ban("b", 100, &[])], 0).is_empty());
        assert!(bans.of("a", 0).is_none() && bans.of("b", 0).is_some());
        assert!(ban("a", 60_001, &[]).refusal(0).starts_with("banned from this server: 2 more minute(s): spam"));
    }
}
