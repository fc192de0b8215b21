//! Each user's blocked users and closed DM rooms, in the store: the rows behind
//! `AccessChange::Block` and `AccessChange::DmClosed`, written in the batch's
//! transaction with the other access facts and loaded with them at start.
//!
//! Never decides anything: the dispatcher's `dms` module does, from what this loads.

use rusqlite::{params, Connection, Transaction};

use crate::store::AccessChange;

/// The tables (created with the schema, on old data dirs too).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blocks (user TEXT NOT NULL, blocked TEXT NOT NULL, PRIMARY KEY (user, blocked)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dm_closed (user TEXT NOT NULL, room TEXT NOT NULL, PRIMARY KEY (user, room)) WITHOUT ROWID;
";

/// Every block and closed DM, as changes to apply.
pub(super) fn load(conn: &Connection, changes: &mut Vec<AccessChange>) -> rusqlite::Result<()> {
    let mut q = conn.prepare("SELECT user, blocked FROM blocks")?;
    for row in q.query_map([], |r| Ok(AccessChange::Block { user: r.get(0)?, blocked: r.get(1)?, on: true }))? {
        changes.push(row?);
    }
    let mut q = conn.prepare("SELECT user, room FROM dm_closed")?;
    for row in q.query_map([], |r| Ok(AccessChange::DmClosed { user: r.get(0)?, room: r.get(1)?, on: true }))? {
        changes.push(row?);
    }
    Ok(())
}

/// Writes one change of this module's kinds; others are left to the caller.
pub(super) fn write(tx: &Transaction<'_>, change: &AccessChange) -> rusqlite::Result<()> {
    match change {
        AccessChange::Block { user, blocked, on: true } => {
            tx.execute("INSERT OR IGNORE INTO blocks (user, blocked) VALUES (?1, ?2)", params![user, blocked])?;
        }
        AccessChange::Block { user, blocked, on: false } => {
            tx.execute("DELETE FROM blocks WHERE user = ?1 AND blocked = ?2", params![user, blocked])?;
        }
        AccessChange::DmClosed { user, room, on: true } => {
            tx.execute("INSERT OR IGNORE INTO dm_closed (user, room) VALUES (?1, ?2)", params![user, room])?;
        }
        AccessChange::DmClosed { user, room, on: false } => {
            tx.execute("DELETE FROM dm_closed WHERE user = ?1 AND room = ?2", params![user, room])?;
        }
        _ => {}
    }
    Ok(())
}
