//! Who may join what, in the store: lasting users (id → name, so an offline user can be
//! named in `dm` and `invite`), private rooms and their owners, invitations,
//! direct-message rooms, kicks (of users, and in open mode of addresses) and read-only
//! rooms, server-wide bans. Written in the batch's transaction (kept buffered when it
//! fails, like read markers), loaded once at start.
//!
//! Never decides a right: the dispatcher does, from what this loads.

use rusqlite::{params, Connection, Transaction};

use super::SqliteStore;
use crate::store::{AccessChange, AccessSnapshot};

impl SqliteStore {
    /// Buffers a change for the next commit.
    pub fn change_access(&mut self, change: AccessChange) {
        self.pending_access.push(change);
    }

    /// What was stored when the store opened (once; later calls get nothing).
    pub fn take_access(&mut self) -> AccessSnapshot {
        std::mem::take(&mut self.loaded_access)
    }
}

/// Every stored fact, users first (rooms and invitations name them).
pub(super) fn load(conn: &Connection) -> rusqlite::Result<AccessSnapshot> {
    let mut changes = Vec::new();
    let mut q = conn.prepare("SELECT id, name FROM users")?;
    for row in q.query_map([], |r| Ok(AccessChange::User { id: r.get(0)?, name: r.get(1)? }))? {
        changes.push(row?);
    }
    let mut q = conn.prepare("SELECT room, owner, title FROM private_rooms")?;
    let private =
        |r: &rusqlite::Row<'_>| Ok(AccessChange::Private { room: r.get(0)?, owner: r.get(1)?, title: r.get(2)? });
    for row in q.query_map([], private)? {
        changes.push(row?);
    }
    let mut q = conn.prepare("SELECT room, user FROM invites")?;
    for row in q.query_map([], |r| Ok(AccessChange::Invite { room: r.get(0)?, user: r.get(1)? }))? {
        changes.push(row?);
    }
    let mut q = conn.prepare("SELECT room, a, b FROM dms")?;
    for row in q.query_map([], |r| Ok(AccessChange::Dm { room: r.get(0)?, a: r.get(1)?, b: r.get(2)? }))? {
        changes.push(row?);
    }
    let mut q = conn.prepare("SELECT room, user, until FROM kicks")?;
    let kick = |r: &rusqlite::Row<'_>| {
        Ok(AccessChange::Kick { room: r.get(0)?, user: r.get(1)?, until: r.get::<_, i64>(2)? as u64 })
    };
    for row in q.query_map([], kick)? {
        changes.push(row?);
    }
    let mut q = conn.prepare("SELECT room, addr, until FROM address_kicks")?;
    let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
    for row in rows {
        let (room, addr, until) = row?;
        // Written by natter from a parsed address; anything else is skipped, not fatal.
        if let Ok(addr) = addr.parse() {
            changes.push(AccessChange::KickAddress { room, addr, until: until as u64 });
        }
    }
    let mut q = conn.prepare("SELECT room FROM read_only")?;
    for row in q.query_map([], |r| Ok(AccessChange::ReadOnly { room: r.get(0)?, on: true }))? {
        changes.push(row?);
    }
    let mut q = conn.prepare("SELECT user, until, reason, by, at, addrs FROM bans")?;
    let rows = q.query_map([], |r| {
        let addrs: String = r.get(5)?;
        Ok(crate::bans::Ban {
            user: r.get(0)?,
            until: r.get::<_, i64>(1)? as u64,
            reason: r.get(2)?,
            by: r.get(3)?,
            at: r.get::<_, i64>(4)? as u64,
            // Written by natter from parsed addresses; anything else is skipped.
            addrs: addrs.split_whitespace().filter_map(|a| a.parse().ok()).collect(),
        })
    })?;
    for row in rows {
        changes.push(AccessChange::Ban(row?));
    }
    super::blocks::load(conn, &mut changes)?;
    Ok(AccessSnapshot { changes })
}

/// Writes the buffered changes inside the batch's transaction.
pub(super) fn write(tx: &Transaction<'_>, pending: &[AccessChange]) -> rusqlite::Result<()> {
    for change in pending {
        match change {
            AccessChange::User { id, name } => {
                tx.execute("INSERT OR REPLACE INTO users (id, name) VALUES (?1, ?2)", params![id, name])?
            }
            AccessChange::Private { room, owner, title } => tx.execute(
                "INSERT OR IGNORE INTO private_rooms (room, owner, title) VALUES (?1, ?2, ?3)",
                params![room, owner, title],
            )?,
            AccessChange::Invite { room, user } => {
                tx.execute("INSERT OR IGNORE INTO invites (room, user) VALUES (?1, ?2)", params![room, user])?
            }
            AccessChange::Dm { room, a, b } => {
                tx.execute("INSERT OR IGNORE INTO dms (room, a, b) VALUES (?1, ?2, ?3)", params![room, a, b])?
            }
            AccessChange::Kick { room, user, until } => tx.execute(
                "INSERT OR REPLACE INTO kicks (room, user, until) VALUES (?1, ?2, ?3)",
                params![room, user, *until as i64],
            )?,
            AccessChange::KickAddress { room, addr, until } => tx.execute(
                "INSERT OR REPLACE INTO address_kicks (room, addr, until) VALUES (?1, ?2, ?3)",
                params![room, addr.to_string(), *until as i64],
            )?,
            AccessChange::ReadOnly { room, on: true } => {
                tx.execute("INSERT OR IGNORE INTO read_only (room) VALUES (?1)", params![room])?
            }
            AccessChange::ReadOnly { room, on: false } => {
                tx.execute("DELETE FROM read_only WHERE room = ?1", params![room])?
            }
            AccessChange::Ban(ban) => {
                let addrs: Vec<String> = ban.addrs.iter().map(ToString::to_string).collect();
                // Expired bans go whenever another ban is written.
                tx.execute("DELETE FROM bans WHERE until <= ?1", params![ban.at as i64])?;
                tx.execute(
                    "INSERT OR REPLACE INTO bans (user, until, reason, by, at, addrs) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![ban.user, ban.until as i64, ban.reason, ban.by, ban.at as i64, addrs.join(" ")],
                )?
            }
            AccessChange::Unban { user } => tx.execute("DELETE FROM bans WHERE user = ?1", params![user])?,
            AccessChange::Block { .. } | AccessChange::DmClosed { .. } => {
                super::blocks::write(tx, change)?;
                0
            }
        };
    }
    Ok(())
}
