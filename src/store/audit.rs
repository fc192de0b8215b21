//! The audit log's records, whichever store holds them: every moderator and admin
//! action (kick, mode, delete, disconnect, ban, unban, API key reloads) with who did
//! it, what, to whom, when and from where ([`AuditEntry`]), and the filters and paging
//! a reader asks for ([`AuditQuery`]). SQLite keeps them in the `audit` table
//! (`sqlite::audit`), Redis in a sorted set (`redis::audit`); both number entries
//! in the order they were stored, so `before` pages back through either.
//!
//! Plain data; writing and reading are the stores' own.

use serde::{Deserialize, Serialize};

/// Most entries one page holds.
pub const MAX_AUDIT_PAGE: usize = 500;

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its number in the log (0 until stored); newer entries have larger ids.
    #[serde(default)]
    pub id: u64,
    /// When (ms since the epoch).
    pub ts: u64,
    /// Who: a user id (a moderator's), or an API key's id (`key-…`).
    pub actor: String,
    /// What: `kick`, `mode`, `delete`, `disconnect`, `ban`, `unban`, `keys.reload`.
    pub action: String,
    /// Whom: a user id; empty when the action names none.
    #[serde(default)]
    pub target: String,
    /// Where: a room; empty when the action names none.
    #[serde(default)]
    pub room: String,
    /// The rest: minutes, reason, seq, the new mode.
    #[serde(default)]
    pub detail: String,
    /// From where: the actor's address.
    #[serde(default)]
    pub addr: String,
}

/// A page of the log: newest first, ids below `before`, at most `limit`, matching
/// every filter given (exact matches; `since`/`until` bound `ts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub before: Option<u64>,
    pub limit: usize,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub target: Option<String>,
    pub room: Option<String>,
    pub since: Option<u64>,
    pub until: Option<u64>,
}

impl AuditQuery {
    /// Whether `e` passes the filters (not `before`/`limit`: those are paging).
    pub fn admits(&self, e: &AuditEntry) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.action, &e.action)
            && is(&self.actor, &e.actor)
            && is(&self.target, &e.target)
            && is(&self.room, &e.room)
            && self.since.is_none_or(|s| e.ts >= s)
            && self.until.is_none_or(|u| e.ts <= u)
    }
}
