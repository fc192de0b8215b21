//! One user's data in the store, for the server API's export and erasure
//! (`GET`/`DELETE /api/v1/users/{id}`): the reads that find everything stored about a
//! user (on a read-only connection of the API's own, never the writer's), and the
//! writes that take their identity out (buffered like the batch's other writes, made
//! in its transaction by the dispatcher's commit).
//!
//! Never decides what is erased or who may ask: the API and the dispatcher do. Reads
//! stream row by row; nothing here holds a user's whole history in memory.

use std::path::Path;

use bytes::Bytes;
use rusqlite::{params, Connection, OpenFlags, Transaction};
use serde_json::{json, Value};

use super::{db_path, sql_err, SqliteStore, SqliteStoreError};

/// The id an erased user's kept messages and events are shown with.
pub const DELETED_UID: &str = "deleted";
/// The name an erased user's kept messages and events are shown with.
pub const DELETED_NAME: &str = "deleted user";

/// A read-only connection to the store in `dir`, for one export or erasure.
pub fn open_reader(dir: &Path) -> Result<Connection, SqliteStoreError> {
    let db = db_path(dir);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&db, flags).map_err(sql_err(&db))?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql_err(&db))?;
    Ok(conn)
}

/// Rows of `messages` that may name `uid`: those holding it as a JSON string anywhere
/// (author, a moderator's target or the moderator, a reaction, and whatever names
/// users later). [`anonymized`] and [`export`] look at the fields; a row that only
/// quotes the id in its text is left alone.
const NAMES_USER: &str = "instr(CAST(m.json AS TEXT), '\"' || ?1 || '\"') > 0";

/// One stored row that names a user.
#[derive(Debug)]
pub struct Authored {
    /// The row's id: pages of [`authored`] go on after the last one.
    pub id: i64,
    pub room: String,
    pub seq: u64,
    pub json: Vec<u8>,
}

impl Authored {
    /// A `msg` this user wrote that still has its text (what `remove` deletes).
    pub fn is_live_message_of(&self, uid: &str) -> bool {
        is_live_message_of(&self.json, uid)
    }
}

/// Whether stored `json` is a `msg` by `uid` that still has its text.
pub fn is_live_message_of(json: &[u8], uid: &str) -> bool {
    serde_json::from_slice::<Value>(json)
        .is_ok_and(|v| v["type"] == "msg" && v["uid"] == uid && v.get("text").is_some())
}

/// Up to `limit` rows naming `uid` with ids past `after`, in id order: one page of a
/// scan the caller continues from the last id.
pub fn authored(conn: &Connection, uid: &str, after: i64, limit: usize) -> rusqlite::Result<Vec<Authored>> {
    let sql = format!(
        "SELECT m.id, r.name, m.seq, m.json FROM messages m JOIN rooms r ON r.id = m.room
         WHERE m.id > ?2 AND {NAMES_USER} ORDER BY m.id LIMIT ?3"
    );
    let mut q = conn.prepare_cached(&sql)?;
    let rows = q.query_map(params![uid, after, limit as i64], |r| {
        Ok(Authored { id: r.get(0)?, room: r.get(1)?, seq: r.get::<_, i64>(2)? as u64, json: r.get(3)? })
    })?;
    rows.collect()
}

/// What an export wrote, for its closing line.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub messages: u64,
    pub lines: u64,
}

/// Everything the store holds about `uid`, one typed JSON object at a time, handed to
/// `line` as it is read (the caller writes it out; nothing is collected here). `line`
/// failing (the caller went away) stops the export.
pub fn export(
    conn: &Connection,
    uid: &str,
    line: &mut dyn FnMut(&Value) -> std::io::Result<()>,
) -> Result<Counts, ExportError> {
    let mut counts = Counts::default();
    let mut emit = |v: Value, counts: &mut Counts| -> Result<(), ExportError> {
        counts.lines += 1;
        line(&v).map_err(ExportError::Gone)
    };
    let mut q = conn.prepare("SELECT name FROM users WHERE id = ?1")?;
    let name: Option<String> = q.query_row([uid], |r| r.get(0)).ok();
    emit(json!({"type": "profile", "id": uid, "name": name}), &mut counts)?;

    let sql = format!(
        "SELECT r.name, m.seq, m.ts, m.json FROM messages m JOIN rooms r ON r.id = m.room
         WHERE {NAMES_USER} ORDER BY r.name, m.seq"
    );
    let mut q = conn.prepare(&sql)?;
    let mut rows = q.query([uid])?;
    while let Some(r) = rows.next()? {
        let (room, seq, ts, json): (String, i64, i64, Vec<u8>) = (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        for line in row_lines(&room, seq as u64, Some(ts as u64), &json, uid) {
            counts.messages += u64::from(line["type"] == "message");
            emit(line, &mut counts)?;
        }
    }

    let tables: [(&str, &str, &str); 9] = [
        ("read_marker", "SELECT room, seq FROM reads WHERE user = ?1 ORDER BY room", "room,seq"),
        ("block", "SELECT blocked FROM blocks WHERE user = ?1 ORDER BY blocked", "user"),
        ("blocked_by", "SELECT user FROM blocks WHERE blocked = ?1 ORDER BY user", "user"),
        ("dm", "SELECT room, CASE WHEN a = ?1 THEN b ELSE a END FROM dms WHERE a = ?1 OR b = ?1", "room,with"),
        ("dm_closed", "SELECT room FROM dm_closed WHERE user = ?1 ORDER BY room", "room"),
        ("private_room", "SELECT room, title FROM private_rooms WHERE owner = ?1 ORDER BY room", "room,title"),
        ("invite", "SELECT room FROM invites WHERE user = ?1 ORDER BY room", "room"),
        ("ban", "SELECT until, reason FROM bans WHERE user = ?1", "until,reason"),
        (
            "audit",
            "SELECT ts, action, actor, room, detail FROM audit WHERE target = ?1 ORDER BY id",
            "ts,action,actor,room,detail",
        ),
    ];
    for (kind, sql, fields) in tables {
        let mut q = conn.prepare(sql)?;
        let mut rows = q.query([uid])?;
        while let Some(r) = rows.next()? {
            let mut obj = serde_json::Map::new();
            obj.insert("type".into(), kind.into());
            for (i, field) in fields.split(',').enumerate() {
                let v: rusqlite::types::Value = r.get(i)?;
                let v = match v {
                    rusqlite::types::Value::Integer(n) => Value::from(n),
                    rusqlite::types::Value::Text(s) => Value::from(s),
                    _ => Value::Null,
                };
                obj.insert(field.into(), v);
            }
            emit(Value::Object(obj), &mut counts)?;
        }
    }
    let mut q = conn.prepare("SELECT room, until FROM kicks WHERE user = ?1 ORDER BY room")?;
    let mut rows = q.query([uid])?;
    while let Some(r) = rows.next()? {
        let (room, until): (String, i64) = (r.get(0)?, r.get(1)?);
        emit(json!({"type": "kick", "room": room, "until": until}), &mut counts)?;
    }
    Ok(counts)
}

/// The export lines of one stored row (`json`, seq `seq` of `room`, stored at `ts`, or
/// when none is given at the `ts` it holds)
/// that names `uid`: a message they wrote, an edit or deletion they made, or a
/// moderator's action that names them (as its target or as the moderator), whole; of
/// someone else's message, only their reactions, never its text. Both stores' exports
/// use it, so they say the same of the same rows.
pub fn row_lines(room: &str, seq: u64, ts: Option<u64>, json: &[u8], uid: &str) -> Vec<Value> {
    let Ok(stored) = serde_json::from_slice::<Value>(json) else { return Vec::new() };
    let ts = ts.or_else(|| stored["ts"].as_u64());
    let kind = match stored["type"].as_str() {
        Some("msg") if stored["uid"] == uid => "message",
        Some("edit") if stored["uid"] == uid => "edit",
        Some("delete") if stored["uid"] == uid => "delete",
        Some("react") if stored["uid"] == uid => "react",
        Some("system") if stored["user"]["id"] == uid || stored["by"]["id"] == uid => "event",
        Some("msg") => {
            return reacted(&stored, uid)
                .into_iter()
                .map(|emoji| json!({"type": "reaction", "room": room, "seq": seq, "emoji": emoji}))
                .collect()
        }
        _ => return Vec::new(),
    };
    vec![json!({"type": kind, "room": room, "seq": seq, "ts": ts, "stored": stored})]
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the store: {0}")]
    Store(#[from] rusqlite::Error),
    /// The caller stopped reading.
    #[error("writing the export: {0}")]
    Gone(std::io::Error),
}

/// `json` (a stored message or event) with every mention of `uid` as author, target,
/// moderator or in `mentions` replaced by [`DELETED_UID`]/[`DELETED_NAME`]; `None` when it names them
/// nowhere (or is not JSON). Their reactions come off; a reply's quote of their message
/// names [`DELETED_NAME`] when their messages are kept (`keep`), and becomes a quote of
/// a deleted message when they are removed.
pub fn anonymized(json: &[u8], uid: &str, keep: bool) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(json).ok()?;
    let o = v.as_object_mut()?;
    let mut changed = false;
    if o.get("uid").and_then(Value::as_str) == Some(uid) {
        o.insert("uid".into(), DELETED_UID.into());
        o.insert("user".into(), DELETED_NAME.into());
        changed = true;
    }
    for key in ["user", "by"] {
        if o.get(key).and_then(|u| u.get("id")).and_then(Value::as_str) == Some(uid) {
            o.insert(key.into(), json!({"id": DELETED_UID, "name": DELETED_NAME}));
            changed = true;
        }
    }
    if let Some(mentions) = o.get_mut("mentions").and_then(Value::as_array_mut) {
        // Someone mentioned them: the mention names the deleted user instead.
        for m in mentions.iter_mut().filter(|m| m.as_str() == Some(uid)) {
            *m = DELETED_UID.into();
            changed = true;
        }
    }
    if let Some(reply) = o.get_mut("reply").and_then(Value::as_object_mut) {
        if reply.get("uid").and_then(Value::as_str) == Some(uid) {
            if keep {
                reply.insert("uid".into(), DELETED_UID.into());
                reply.insert("user".into(), DELETED_NAME.into());
            } else {
                reply.retain(|k, _| k == "seq");
                reply.insert("deleted".into(), Value::Bool(true));
            }
            changed = true;
        }
    }
    let emoji = reacted(&v, uid);
    let mut bytes = if changed { serde_json::to_vec(&v).ok()? } else { json.to_vec() };
    for e in &emoji {
        // Where the message keeps its reactions (before the text); a deleted one,
        // without text, through the value.
        bytes = match crate::store::reactions::set(&bytes, e, uid, false) {
            Ok(b) => b,
            Err(_) => without_reaction(&bytes, e, uid)?,
        };
    }
    (changed || !emoji.is_empty()).then_some(bytes)
}

/// The emoji `uid` reacted with on message `v`.
fn reacted(v: &Value, uid: &str) -> Vec<String> {
    let Some(field) = v.get("reactions").and_then(Value::as_object) else { return Vec::new() };
    field
        .iter()
        .filter(|(_, users)| users.as_array().is_some_and(|u| u.iter().any(|u| u == uid)))
        .map(|(e, _)| e.clone())
        .collect()
}

fn without_reaction(json: &[u8], emoji: &str, uid: &str) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(json).ok()?;
    let field = v.get_mut("reactions")?.as_object_mut()?;
    if let Some(users) = field.get_mut(emoji).and_then(Value::as_array_mut) {
        users.retain(|u| u != uid);
        if users.is_empty() {
            field.remove(emoji);
        }
    }
    if field.is_empty() {
        v.as_object_mut()?.remove("reactions");
    }
    serde_json::to_vec(&v).ok()
}

/// How the audit log names an erased user: `sha256:` and the first 16 hex digits of
/// the id's SHA-256, so an operator who knows the id can still find their entries,
/// and the log keeps no id the erasure took out of the store.
pub fn erased_id(uid: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", &hex::encode(Sha256::digest(uid.as_bytes()))[..16])
}

impl SqliteStore {
    /// Buffers a stored row's new JSON for the next commit: the same message or event
    /// with its author made anonymous (its text, and so its search entry, unchanged).
    pub fn rename(&mut self, room: &str, seq: u64, json: Bytes) {
        self.scrub_due = true;
        self.renames.push((room.to_owned(), seq, json));
    }

    /// Buffers the removal of everything else stored about `uid` (its name, read
    /// markers, blocks, invitations, kicks; DMs and owned private rooms stay, under
    /// [`DELETED_UID`]) for the next commit.
    pub fn forget_user(&mut self, uid: &str) {
        self.scrub_due = true;
        self.forgotten.push(uid.to_owned());
    }
}

/// Writes the buffered renames and forgotten users inside the batch's transaction.
pub(super) fn write(
    tx: &Transaction<'_>,
    renames: &[(String, u64, Bytes)],
    forgotten: &[String],
) -> rusqlite::Result<()> {
    if !renames.is_empty() {
        let mut update = tx.prepare_cached(
            "UPDATE messages SET json = ?3 WHERE room = (SELECT id FROM rooms WHERE name = ?1) AND seq = ?2",
        )?;
        for (room, seq, json) in renames {
            update.execute(params![room, *seq as i64, &json[..]])?;
        }
    }
    for uid in forgotten {
        tx.execute("DELETE FROM users WHERE id = ?1", [uid])?;
        tx.execute("DELETE FROM reads WHERE user = ?1", [uid])?;
        tx.execute("DELETE FROM mentions WHERE user = ?1", [uid])?;
        tx.execute("DELETE FROM blocks WHERE user = ?1 OR blocked = ?1", [uid])?;
        tx.execute("DELETE FROM dm_closed WHERE user = ?1", [uid])?;
        tx.execute("DELETE FROM invites WHERE user = ?1", [uid])?;
        tx.execute("DELETE FROM kicks WHERE user = ?1", [uid])?;
        tx.execute("UPDATE dms SET a = ?2 WHERE a = ?1", params![uid, DELETED_UID])?;
        tx.execute("UPDATE dms SET b = ?2 WHERE b = ?1", params![uid, DELETED_UID])?;
        tx.execute("UPDATE private_rooms SET owner = ?2 WHERE owner = ?1", params![uid, DELETED_UID])?;
        // The audit log keeps its entries, naming them as the erasure's own entry does.
        let hashed = erased_id(uid);
        tx.execute("UPDATE audit SET target = ?2 WHERE target = ?1", params![uid, hashed])?;
        tx.execute("UPDATE audit SET actor = ?2 WHERE actor = ?1", params![uid, hashed])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymized_replaces_the_user_wherever_they_are_named_and_nothing_else() {
        let msg = br#"{"type":"msg","room":"r","seq":1,"ts":1,"user":"Ann","uid":"u-ann","text":"hi"}"#;
        let v: Value = serde_json::from_slice(&anonymized(msg, "u-ann", true).unwrap()).unwrap();
        assert_eq!(
            (v["uid"].as_str(), v["user"].as_str(), v["text"].as_str()),
            (Some("deleted"), Some("deleted user"), Some("hi"))
        );
        assert!(anonymized(msg, "u-bob", true).is_none());
        let kick =
            br#"{"type":"system","event":"kick","user":{"id":"u-ann","name":"Ann"},"by":{"id":"u-mod","name":"Mo"}}"#;
        let v: Value = serde_json::from_slice(&anonymized(kick, "u-ann", true).unwrap()).unwrap();
        assert_eq!((v["user"]["id"].as_str(), v["by"]["id"].as_str()), (Some("deleted"), Some("u-mod")));
        let reacted = br#"{"type":"msg","room":"r","seq":2,"ts":1,"user":"Bo","uid":"u-bo","reactions":{"a":["u-ann","u-bo"],"b":["u-ann"]},"text":"hey"}"#;
        let out = String::from_utf8(anonymized(reacted, "u-ann", true).unwrap()).unwrap();
        assert!(!out.contains("u-ann") && out.contains(r#""a":["u-bo"]"#) && out.contains("hey"), "{out}");
        let quoted = br#"{"type":"msg","room":"r","seq":3,"ts":1,"user":"Bo","uid":"u-bo","text":"\"u-ann\" said"}"#;
        assert!(anonymized(quoted, "u-ann", true).is_none(), "a text that quotes the id is left alone");
        let reply = br#"{"type":"msg","room":"r","seq":4,"ts":1,"user":"Bo","uid":"u-bo","reply":{"seq":1,"uid":"u-ann","user":"Ann","quote":"secret"},"text":"ok"}"#;
        let kept = String::from_utf8(anonymized(reply, "u-ann", true).unwrap()).unwrap();
        assert!(kept.contains("secret") && !kept.contains("u-ann") && !kept.contains("Ann"), "{kept}");
        let mentioned = br#"{"type":"msg","room":"r","seq":5,"ts":1,"user":"Bo","uid":"u-bo","mentions":["u-ann","u-cy"],"text":"hi"}"#;
        let out = String::from_utf8(anonymized(mentioned, "u-ann", true).unwrap()).unwrap();
        assert!(out.contains(r#""mentions":["deleted","u-cy"]"#), "{out}");
        let removed = String::from_utf8(anonymized(reply, "u-ann", false).unwrap()).unwrap();
        assert!(!removed.contains("secret") && removed.contains(r#""reply":{"deleted":true,"seq":1}"#), "{removed}");
    }
}
