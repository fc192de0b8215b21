//! Edits and deletions in the store: the original message's row is rewritten (the
//! edited text, or a deletion marker with no text), its search entry replaced or
//! removed, and on a deletion every earlier edit event of it loses its text too, and
//! every reply's quote of it says deleted. All in
//! the batch's transaction, after the batch's new rows.
//!
//! Never decides who may change what: the dispatcher checks that first. With
//! `secure_delete` on, the bytes of an overwritten text are zeroed in the database
//! pages; [`SqliteStore::scrub_wal`] then truncates the WAL, which still holds them.

use bytes::Bytes;
use rusqlite::{params, OptionalExtension, Transaction};
use serde_json::Value;

use super::{sql_err, SqliteStore, SqliteStoreError};

/// A committed message's new content.
#[derive(Debug)]
pub struct Rewrite {
    pub room: String,
    pub seq: u64,
    /// The message's new JSON (edited text, or the deletion marker).
    pub json: Bytes,
    /// What the search index holds for it now; `None`: nothing (deleted).
    pub text: Option<String>,
    /// The seq of the edit or delete event that made this change.
    pub by: u64,
    /// The text is as it was (a reaction): only the JSON changes.
    pub same_text: bool,
}

impl SqliteStore {
    /// A committed message's JSON, by room and seq (one indexed row, for the checks of
    /// an edit or delete of a message older than the ring).
    pub fn message(&mut self, room: &str, seq: u64) -> Result<Option<Bytes>, SqliteStoreError> {
        let path = self.path().to_owned();
        self.conn()
            .query_row(
                "SELECT m.json FROM messages m JOIN rooms r ON r.id = m.room WHERE r.name = ?1 AND m.seq = ?2",
                params![room, seq as i64],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map(|j| j.map(Bytes::from))
            .map_err(sql_err(&path))
    }

    /// Buffers a rewrite for the next commit (dropped with the batch if it fails).
    pub fn rewrite(&mut self, change: Rewrite) {
        self.scrub_due |= change.text.is_none() && !change.same_text;
        self.rewrites.push(change);
    }

    /// After a deletion: checkpoint the WAL and truncate it, so the deleted text's old
    /// page images leave the WAL file. False while readers keep it busy (retry later).
    pub fn scrub_wal(&mut self) -> Result<bool, SqliteStoreError> {
        if !self.scrub_due {
            return Ok(true);
        }
        let path = self.path().to_owned();
        let busy: i64 =
            self.conn().query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).map_err(sql_err(&path))?;
        self.scrub_due = busy != 0;
        Ok(busy == 0)
    }
}

/// Writes the buffered rewrites inside the batch's transaction.
pub(super) fn write(tx: &Transaction<'_>, rewrites: &[Rewrite]) -> rusqlite::Result<()> {
    for w in rewrites {
        let found: Option<(i64, i64, Vec<u8>)> = tx
            .query_row(
                "SELECT m.id, m.room, m.json FROM messages m JOIN rooms r ON r.id = m.room
                 WHERE r.name = ?1 AND m.seq = ?2",
                params![w.room, w.seq as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        // Gone meanwhile (retention): nothing to rewrite.
        let Some((id, room, old)) = found else { continue };
        tx.execute("UPDATE messages SET json = ?2 WHERE id = ?1", params![id, &w.json[..]])?;
        if w.same_text {
            continue;
        }
        // A contentless index forgets a row given the exact text it indexed.
        if let Some(text) = text_of(&old) {
            tx.execute(
                "INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', ?1, ?2)",
                params![id, text],
            )?;
        }
        match &w.text {
            Some(text) => {
                tx.execute("INSERT INTO messages_fts (rowid, text) VALUES (?1, ?2)", params![id, text])?;
                tx.execute(
                    "INSERT OR IGNORE INTO edits (room, of, seq) VALUES (?1, ?2, ?3)",
                    params![room, w.seq as i64, w.by as i64],
                )?;
            }
            None => {
                scrub_edit_events(tx, room, w.seq)?;
                scrub_quotes(tx, room, w.seq)?;
                // A deleted message mentions nobody any more.
                tx.execute("DELETE FROM mentions WHERE room = ?1 AND seq = ?2", params![room, w.seq as i64])?;
            }
        }
    }
    Ok(())
}

/// A deleted message's earlier edit events keep their place (and seq) but lose the text.
fn scrub_edit_events(tx: &Transaction<'_>, room: i64, of: u64) -> rusqlite::Result<()> {
    let mut q = tx.prepare_cached(
        "SELECT m.id, m.json FROM edits e JOIN messages m ON m.room = e.room AND m.seq = e.seq
         WHERE e.room = ?1 AND e.of = ?2",
    )?;
    let rows: Vec<(i64, Vec<u8>)> =
        q.query_map(params![room, of as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    for (id, json) in rows {
        if let Some(scrubbed) = without_text(&json) {
            tx.execute("UPDATE messages SET json = ?2 WHERE id = ?1", params![id, scrubbed])?;
        }
    }
    tx.execute("DELETE FROM edits WHERE room = ?1 AND of = ?2", params![room, of as i64])?;
    Ok(())
}

/// A deleted message's replies keep quoting it, as deleted: its first characters leave
/// them.
fn scrub_quotes(tx: &Transaction<'_>, room: i64, of: u64) -> rusqlite::Result<()> {
    let mut q = tx.prepare_cached(
        "SELECT m.id, m.json FROM replies r JOIN messages m ON m.room = r.room AND m.seq = r.seq
         WHERE r.room = ?1 AND r.of = ?2",
    )?;
    let rows: Vec<(i64, Vec<u8>)> =
        q.query_map(params![room, of as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    for (id, json) in rows {
        if let Some(unquoted) = crate::store::replies::unquote(&json, of) {
            tx.execute("UPDATE messages SET json = ?2 WHERE id = ?1", params![id, unquoted])?;
        }
    }
    tx.execute("DELETE FROM replies WHERE room = ?1 AND of = ?2", params![room, of as i64])?;
    Ok(())
}

/// The text of a message's JSON (None for events and deleted messages).
fn text_of(json: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(json).ok()?;
    (v["type"] == "msg").then(|| v["text"].as_str().map(str::to_owned))?
}

/// A message or edit event as a deletion marker: no `text`, `"deleted":true`.
pub fn without_text(json: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(json).ok()?;
    let o = v.as_object_mut()?;
    o.remove("text");
    o.remove("files"); // their descriptions go with them (the files themselves too)
    o.insert("deleted".into(), Value::Bool(true));
    serde_json::to_vec(&v).ok()
}
