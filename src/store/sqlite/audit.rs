//! The audit log in SQLite: the `audit` table, written in the batch's transaction
//! (entries are buffered like access changes, and kept when a commit fails), read by
//! the server API's own read-only connection (never the dispatcher's), and trimmed by
//! `--audit-retention-days` in small steps between batches.
//!
//! Never decides what is recorded: the dispatcher does.

use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, Transaction};

use super::{sql_err, SqliteStore, SqliteStoreError};
use crate::store::audit::{AuditEntry, AuditQuery};

/// Rows one retention step deletes at most.
const STEP_ROWS: i64 = 500;

impl SqliteStore {
    /// Buffers an entry for the next commit.
    pub fn audit(&mut self, entry: AuditEntry) {
        self.pending_audit.push(entry);
    }

    /// Deletes up to a step of entries older than `cutoff_ms`; how many.
    pub fn audit_retention_step(&mut self, cutoff_ms: u64) -> Result<u64, SqliteStoreError> {
        let path = self.path().to_owned();
        let n = self
            .conn()
            .execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < ?1 ORDER BY id LIMIT ?2)",
                params![cutoff_ms as i64, STEP_ROWS],
            )
            .map_err(sql_err(&path))?;
        if n > 0 {
            self.wrote();
        }
        Ok(n as u64)
    }
}

/// Writes the buffered entries inside the batch's transaction.
pub(super) fn write(tx: &Transaction<'_>, pending: &[AuditEntry]) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit (ts, actor, action, target, room, detail, addr) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for e in pending {
        insert.execute(params![e.ts as i64, e.actor, e.action, e.target, e.room, e.detail, e.addr])?;
    }
    Ok(())
}

/// A read-only connection to the store in `path` for audit reads.
pub fn open_reader(path: &Path) -> Result<Connection, SqliteStoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(sql_err(path))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err(path))?;
    Ok(conn)
}

/// A page of the log, newest first.
pub fn read(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut sql = String::from("SELECT id, ts, actor, action, target, room, detail, addr FROM audit WHERE 1=1");
    let mut args: Vec<SqlValue> = Vec::new();
    let mut text = |column: &str, v: &Option<String>, sql: &mut String| {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(SqlValue::Text(v.clone()));
        }
    };
    text("action", &q.action, &mut sql);
    text("actor", &q.actor, &mut sql);
    text("target", &q.target, &mut sql);
    text("room", &q.room, &mut sql);
    for (cond, v) in [(" AND id < ?", q.before), (" AND ts >= ?", q.since), (" AND ts <= ?", q.until)] {
        if let Some(v) = v {
            sql.push_str(cond);
            args.push(SqlValue::Integer(v.min(i64::MAX as u64) as i64));
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(SqlValue::Integer(q.limit as i64));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok(AuditEntry {
            id: r.get::<_, i64>(0)? as u64,
            ts: r.get::<_, i64>(1)? as u64,
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            room: r.get(5)?,
            detail: r.get(6)?,
            addr: r.get(7)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FsyncPolicy;

    fn entry(ts: u64, action: &str, target: &str) -> AuditEntry {
        AuditEntry {
            id: 0,
            ts,
            actor: "key-1".into(),
            action: action.into(),
            target: target.into(),
            room: String::new(),
            detail: String::new(),
            addr: "127.0.0.1".into(),
        }
    }

    #[test]
    fn entries_page_back_filter_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path(), FsyncPolicy::Never).unwrap();
        for i in 0..10 {
            store.audit(entry(1_000 + i, if i % 2 == 0 { "ban" } else { "kick" }, &format!("u{i}")));
        }
        store.commit().unwrap();
        let conn = open_reader(store.path()).unwrap();
        let page = read(&conn, &AuditQuery { limit: 3, ..Default::default() }).unwrap();
        assert_eq!(page.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["u9", "u8", "u7"]);
        let next = read(&conn, &AuditQuery { limit: 3, before: Some(page[2].id), ..Default::default() }).unwrap();
        assert_eq!(next[0].target, "u6");
        let bans = read(&conn, &AuditQuery { limit: 50, action: Some("ban".into()), ..Default::default() }).unwrap();
        assert_eq!(bans.len(), 5);
        assert_eq!(store.audit_retention_step(1_005).unwrap(), 5);
        assert_eq!(read(&conn, &AuditQuery { limit: 50, ..Default::default() }).unwrap().len(), 5);
    }
}
