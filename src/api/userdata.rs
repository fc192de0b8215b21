//! A user's data over the server API: the export (`GET /api/v1/users/{id}/export`),
//! streamed as NDJSON or a zip from a store connection of the API worker's own, and
//! the erasure (`DELETE /api/v1/users/{id}?messages=remove|keep`), which finds the
//! user's rows the same way and has the dispatcher change them in small chunks.
//!
//! Runs on an API worker thread: an export never touches the dispatcher, and an
//! erasure waits for it chunk by chunk, so neither holds up anyone's messages for more
//! than one chunk. Never holds a user's whole history in memory. Both store modes: the
//! SQLite store is read in one read transaction (one point in time); with `--redis`
//! the rooms' streams are walked a page at a time and the other keys scanned
//! (`store::redis::userdata`), so an export of a user who is still writing may hold a
//! message stored while it ran, or not.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use serde_json::{json, Value};

use crate::dispatcher::api::ApiCall;
use crate::dispatcher::{Actor, Command};
use crate::protocol::{ApiResult, ErrorCode, ProtocolError, RoomName};
use crate::store::files::{FileRecord, Files, UserFiles};
use crate::store::redis::{Master, RedisStore, StoreOptions};
use crate::store::sqlite::userdata::{self as rows, Authored, Counts};

/// Rows handed to the dispatcher at once to be made anonymous: small, so a chunk holds
/// it for milliseconds.
const CHUNK: usize = 100;
/// Messages handed to the dispatcher at once to be deleted: each deletion is committed
/// before the next in its room (as the API's `DELETE` is), so fewer than [`CHUNK`].
const DELETE_CHUNK: usize = 20;
/// How long one chunk may wait for the dispatcher (it commits once per room touched).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// What an erasure does with the user's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Messages {
    /// Delete every message they wrote, as a moderator's delete would.
    Remove,
    /// Keep them, shown as written by [`rows::DELETED_NAME`].
    Keep,
}

impl Messages {
    pub fn parse(v: &str) -> Option<Messages> {
        match v {
            "remove" => Some(Messages::Remove),
            "keep" => Some(Messages::Keep),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Messages::Remove => "remove",
            Messages::Keep => "keep",
        }
    }
}

/// Where a user's data is read from.
#[derive(Clone)]
pub enum Source {
    /// The SQLite store's data dir (single-instance mode).
    Sqlite(PathBuf),
    /// The Redis every instance shares (`--redis`).
    Redis(Master, StoreOptions),
}

/// An open connection to a [`Source`], for one export.
pub enum Opened {
    Sqlite(rusqlite::Connection),
    Redis(Box<RedisStore>),
}

/// The answer when this API has no store to read users' data from (unit tests).
pub fn no_store() -> ProtocolError {
    ProtocolError::new(ErrorCode::Unavailable, "no store to read users' data from on this listener")
}

fn unavailable(why: impl std::fmt::Display) -> ProtocolError {
    log::warn!("api: user data: {why}");
    ProtocolError::new(ErrorCode::Unavailable, "the message store could not be read; retry")
}

/// One export, ready to be written to its caller.
pub struct Export {
    pub source: Source,
    pub uid: String,
    pub zip: bool,
    /// The file store the user's uploads are read from; none in unit tests.
    pub files: Option<Arc<Files>>,
}

impl Export {
    pub fn content_type(&self) -> &'static str {
        if self.zip {
            "application/zip"
        } else {
            "application/x-ndjson"
        }
    }

    pub fn file_name(&self) -> &'static str {
        if self.zip {
            "natter-export.zip"
        } else {
            "natter-export.ndjson"
        }
    }

    /// Opens the store first, so that a store that cannot be read is an error answer,
    /// not a broken 200.
    pub fn open(&self) -> Result<Opened, ProtocolError> {
        match &self.source {
            Source::Sqlite(dir) => rows::open_reader(dir).map(Opened::Sqlite).map_err(unavailable),
            Source::Redis(master, opts) => {
                let mut store = RedisStore::on(master, opts.clone());
                store.ping().map_err(unavailable)?;
                Ok(Opened::Redis(Box::new(store)))
            }
        }
    }

    /// Writes the whole export to `out` from one snapshot of the store: the header
    /// line, everything stored about the user (their uploads last), and an `end` line
    /// with the counts (a body without it was cut short). A zip holds that as
    /// `export.ndjson`, then each upload's bytes as `files/<id>-<name>`, streamed from
    /// its blob.
    pub fn write(&self, conn: &mut Opened, out: &mut dyn Write) -> io::Result<()> {
        let files = self.user_files()?;
        if self.zip {
            let mut zip = StoredZip::new(out);
            zip.start_entry("export.ndjson")?;
            self.write_ndjson(conn, &files, &mut zip)?;
            zip.finish_entry()?;
            if let Some(store) = &self.files {
                for (f, _) in &files {
                    // Opened before its entry starts: a blob removed meanwhile (its
                    // message deleted) is left out, not a broken entry.
                    let mut blob = match File::open(store.blob_path(&f.sha256)) {
                        Ok(blob) => blob,
                        Err(e) => {
                            log::warn!("api: export of {}: file {} left out: {e}", self.uid, f.id);
                            continue;
                        }
                    };
                    zip.start_entry(&format!("files/{}-{}", f.id, sanitized(&f.name)))?;
                    io::copy(&mut blob, &mut zip)?;
                    zip.finish_entry()?;
                }
            }
            zip.finish()
        } else {
            self.write_ndjson(conn, &files, out)
        }
    }

    /// The user's uploads, from the file store's own thread (never anyone else's: the
    /// store is asked by uploader).
    fn user_files(&self) -> io::Result<UserFiles> {
        let Some(store) = &self.files else { return Ok(Vec::new()) };
        store.user_files(&self.uid).map_err(|e| {
            log::warn!("api: export of {}: {e}", self.uid);
            io::Error::other("the file store could not be read")
        })
    }

    fn write_ndjson(&self, conn: &mut Opened, files: &UserFiles, out: &mut dyn Write) -> io::Result<()> {
        let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut line = |v: &Value| -> io::Result<()> {
            serde_json::to_writer(&mut *out, v)?;
            out.write_all(b"\n")
        };
        line(&json!({"type": "export", "user": self.uid, "ts": ts, "format": 1}))?;
        let counts = match conn {
            Opened::Sqlite(conn) => {
                // One read transaction: the export is one point in time, whatever commits meanwhile.
                conn.execute_batch("BEGIN").map_err(io::Error::other)?;
                let counts = match rows::export(conn, &self.uid, &mut line) {
                    Ok(counts) => counts,
                    Err(rows::ExportError::Gone(e)) => return Err(e),
                    Err(rows::ExportError::Store(e)) => return Err(self.unreadable(&e)),
                };
                let _ = conn.execute_batch("COMMIT");
                counts
            }
            Opened::Redis(store) => self.redis_rows(store, &mut line)?,
        };
        for (f, posts) in files {
            line(&file_line(f, posts))?;
        }
        let lines = counts.lines + files.len() as u64 + 2;
        line(&json!({"type": "end", "messages": counts.messages, "files": files.len(), "lines": lines}))
    }

    /// Redis mode: the profile, every stored row naming the user (room by room, in seq
    /// order) and the other facts, as single-instance mode's export has them.
    fn redis_rows(&self, store: &mut RedisStore, line: &mut dyn FnMut(&Value) -> io::Result<()>) -> io::Result<Counts> {
        let uid = &self.uid;
        let mut counts = Counts::default();
        let name = store.user_name(uid).map_err(|e| self.unreadable(&e))?;
        line(&json!({"type": "profile", "id": uid, "name": name}))?;
        counts.lines += 1;
        let mut walk = store.authored(uid).map_err(|e| self.unreadable(&e))?;
        while let Some(page) = walk.next_page(store).map_err(|e| self.unreadable(&e))? {
            for row in page {
                for l in rows::row_lines(row.room.as_str(), row.seq, None, &row.json, uid) {
                    counts.messages += u64::from(l["type"] == "message");
                    counts.lines += 1;
                    line(&l)?;
                }
            }
        }
        let facts = store.export_facts(uid, &mut |v| {
            counts.lines += 1;
            line(&v)
        });
        facts.map_err(|e| self.unreadable(&e))??;
        Ok(counts)
    }

    /// A store that failed mid-export: logged, and the body cut short.
    fn unreadable(&self, e: &dyn std::fmt::Display) -> io::Error {
        log::warn!("api: export of {}: {e}", self.uid);
        io::Error::other("the store could not be read")
    }
}

/// A `file` line: an upload's metadata and where it was posted.
fn file_line(f: &FileRecord, posts: &[(String, u64)]) -> Value {
    let mut v = json!({
        "type": "file",
        "id": f.id,
        "name": f.name,
        "size": f.size,
        "content_type": f.kind,
        "created": f.created,
        "posted": posts.iter().map(|(room, seq)| json!({"room": room, "seq": seq})).collect::<Vec<_>>(),
    });
    if let (Some(w), Some(h)) = (f.width, f.height) {
        v["width"] = json!(w);
        v["height"] = json!(h);
    }
    v
}

/// A file name safe as a zip entry's last part on any system: letters, digits, `.`,
/// `-` and `_` kept (others become `_`), no leading dot, at most 100 characters.
fn sanitized(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .take(100)
        .collect();
    while s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() {
        s.push_str("file");
    }
    s
}

/// Erases `uid`: with [`Messages::Remove`] their messages are deleted first (a `delete`
/// event each), then every stored row that still names them is made anonymous, then
/// the rest is forgotten and the WAL truncated. Their uploads: a removed message's go
/// with it (the dispatcher tells the file store), and those left (kept with kept
/// messages, or never posted and not yet swept) name the deleted user as uploader.
/// Safe to repeat: a second run finds nothing left to change.
pub fn erase(
    commands: &Sender<Command>,
    source: &Source,
    files: Option<&Files>,
    uid: &str,
    messages: Messages,
    by: Actor,
) -> Result<Value, ProtocolError> {
    let (deleted, renamed) = match source {
        Source::Sqlite(dir) => erase_rows_sqlite(commands, dir, uid, messages)?,
        Source::Redis(master, opts) => erase_rows_redis(commands, RedisStore::on(master, opts.clone()), uid, messages)?,
    };
    let files_renamed = match files.map(|f| f.forget_uploader(uid)).transpose() {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return Err(unavailable(format!("files.db: {e}"))),
    };
    let forget = ApiCall::ForgetUser { uid: uid.into(), messages: messages.as_str(), deleted, renamed, by };
    let last = call(commands, forget, 1)?;
    let done = last.into_iter().next().unwrap_or_else(|| Err(unavailable("no answer")))?;
    Ok(json!({
        "messages": messages.as_str(),
        "deleted": deleted,
        "renamed": renamed,
        "files_renamed": files_renamed,
        "closed": done["closed"],
        "scrubbed": done["scrubbed"],
    }))
}

/// Redis mode's first two steps: the user's live messages deleted (`remove`), then
/// every stored body naming them made anonymous, found by walking every room's stream
/// (twice: the second walk sees the deletions). (deleted, renamed).
fn erase_rows_redis(
    commands: &Sender<Command>,
    mut store: RedisStore,
    uid: &str,
    messages: Messages,
) -> Result<(u64, u64), ProtocolError> {
    let mut deleted = 0u64;
    if messages == Messages::Remove {
        let mut walk = store.authored(uid).map_err(unavailable)?;
        let mut live: Vec<(RoomName, u64)> = Vec::new();
        while let Some(page) = walk.next_page(&mut store).map_err(unavailable)? {
            live.extend(page.into_iter().filter(|r| rows::is_live_message_of(&r.json, uid)).map(|r| (r.room, r.seq)));
            while live.len() >= DELETE_CHUNK {
                deleted += delete_chunk(commands, live.drain(..DELETE_CHUNK).collect())?;
            }
        }
        deleted += delete_chunk(commands, live)?;
    }
    let mut renamed = 0u64;
    let mut walk = store.authored(uid).map_err(unavailable)?;
    let mut found: Vec<(RoomName, u64)> = Vec::new();
    loop {
        let page = walk.next_page(&mut store).map_err(unavailable)?;
        let done = page.is_none();
        found.extend(page.into_iter().flatten().map(|r| (r.room, r.seq)));
        while found.len() >= CHUNK || (done && !found.is_empty()) {
            let chunk: Vec<_> = found.drain(..found.len().min(CHUNK)).collect();
            renamed += anonymize_chunk(commands, uid, messages, chunk)?;
        }
        if done {
            return Ok((deleted, renamed));
        }
    }
}

/// Has the dispatcher make `uid` anonymous in these rows; how many it rewrote.
fn anonymize_chunk(
    commands: &Sender<Command>,
    uid: &str,
    messages: Messages,
    rows: Vec<(RoomName, u64)>,
) -> Result<u64, ProtocolError> {
    let answer = call(commands, ApiCall::Anonymize { uid: uid.into(), keep: messages == Messages::Keep, rows }, 1)?;
    match answer.into_iter().next() {
        Some(Ok(v)) => Ok(v["renamed"].as_u64().unwrap_or(0)),
        Some(Err(e)) => Err(e),
        None => Err(unavailable("no answer")),
    }
}

/// Single-instance mode's first two steps, from a read-only connection of the store.
fn erase_rows_sqlite(
    commands: &Sender<Command>,
    dir: &Path,
    uid: &str,
    messages: Messages,
) -> Result<(u64, u64), ProtocolError> {
    let conn = rows::open_reader(dir).map_err(unavailable)?;
    let mut deleted = 0u64;
    if messages == Messages::Remove {
        let mut after = 0;
        loop {
            let page = rows::authored(&conn, uid, after, CHUNK).map_err(unavailable)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let live: Vec<(RoomName, u64)> =
                page.iter().filter(|r| r.is_live_message_of(uid)).filter_map(room_seq).collect();
            for chunk in live.chunks(DELETE_CHUNK) {
                deleted += delete_chunk(commands, chunk.to_vec())?;
            }
        }
    }
    // A second scan: with `remove`, it sees the deletion markers just committed.
    let mut renamed = 0u64;
    let mut after = 0;
    loop {
        let page = rows::authored(&conn, uid, after, CHUNK).map_err(unavailable)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        let chunk: Vec<(RoomName, u64)> = page.iter().filter_map(room_seq).collect();
        renamed += anonymize_chunk(commands, uid, messages, chunk)?;
    }
    // Our snapshot must not keep the WAL busy when the dispatcher truncates it: dropped here.
    drop(conn);
    Ok((deleted, renamed))
}

fn room_seq(r: &Authored) -> Option<(RoomName, u64)> {
    RoomName::parse(&r.room).map(|room| (room, r.seq))
}

/// Deletes one chunk of messages; counts those deleted (one deleted meanwhile by
/// someone else is not an error).
fn delete_chunk(commands: &Sender<Command>, messages: Vec<(RoomName, u64)>) -> Result<u64, ProtocolError> {
    if messages.is_empty() {
        return Ok(0);
    }
    let n = messages.len();
    let mut deleted = 0;
    for answer in call(commands, ApiCall::EraseMessages { messages }, n)? {
        match answer {
            Ok(_) => deleted += 1,
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Sends one call and collects its `answers` answers.
fn call(commands: &Sender<Command>, call: ApiCall, answers: usize) -> Result<Vec<ApiResult>, ProtocolError> {
    let busy = || ProtocolError::new(ErrorCode::Unavailable, "the server is busy or stopping; retry (erasure resumes)");
    let (reply, answer) = crossbeam_channel::bounded(answers);
    commands.send_timeout(Command::Api { call, reply }, CHUNK_TIMEOUT).map_err(|_| busy())?;
    (0..answers).map(|_| answer.recv_timeout(CHUNK_TIMEOUT).map_err(|_| busy())).collect()
}

/// A zip archive written front to back without seeking: each entry stored as it is
/// (no compression), its CRC and sizes in a data descriptor after its bytes, the
/// central directory at the end. Entries up to 4 GiB (no ZIP64).
struct StoredZip<'a> {
    out: &'a mut dyn Write,
    offset: u64,
    entries: Vec<ZipEntry>,
    current: Option<ZipEntry>,
}

struct ZipEntry {
    name: String,
    offset: u64,
    crc: u32,
    size: u64,
}

impl<'a> StoredZip<'a> {
    fn new(out: &'a mut dyn Write) -> StoredZip<'a> {
        StoredZip { out, offset: 0, entries: Vec::new(), current: None }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn start_entry(&mut self, name: &str) -> io::Result<()> {
        let entry = ZipEntry { name: name.to_owned(), offset: self.offset, crc: 0, size: 0 };
        let mut h = Vec::with_capacity(30 + name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes()); // version needed
        h.extend_from_slice(&0x0808u16.to_le_bytes()); // data descriptor follows; UTF-8 name
        h.extend_from_slice(&[0; 2 + 2 + 2]); // stored; time; date
        h.extend_from_slice(&[0; 4 + 4 + 4]); // crc and sizes: in the descriptor
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        self.put(&h)?;
        self.current = Some(entry);
        Ok(())
    }

    fn finish_entry(&mut self) -> io::Result<()> {
        let Some(e) = self.current.take() else { return Ok(()) };
        let size = u32::try_from(e.size).map_err(|_| io::Error::other("a zip entry over 4 GiB"))?;
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&e.crc.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        self.put(&d)?;
        self.entries.push(e);
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        let start = self.offset;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let offset = u32::try_from(e.offset).map_err(|_| io::Error::other("a zip over 4 GiB"))?;
            let mut c = Vec::with_capacity(46 + e.name.len());
            c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            c.extend_from_slice(&20u16.to_le_bytes()); // made by
            c.extend_from_slice(&20u16.to_le_bytes()); // needed
            c.extend_from_slice(&0x0808u16.to_le_bytes());
            c.extend_from_slice(&[0; 2 + 2 + 2]);
            c.extend_from_slice(&e.crc.to_le_bytes());
            c.extend_from_slice(&(e.size as u32).to_le_bytes());
            c.extend_from_slice(&(e.size as u32).to_le_bytes());
            c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            c.extend_from_slice(&[0; 2 + 2 + 2 + 2 + 4]); // extra, comment, disk, attrs
            c.extend_from_slice(&offset.to_le_bytes());
            c.extend_from_slice(e.name.as_bytes());
            self.put(&c)?;
        }
        let size = self.offset - start;
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0; 4]); // disk numbers
        end.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        end.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        end.extend_from_slice(&(size as u32).to_le_bytes());
        end.extend_from_slice(&(start as u32).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.put(&end)?;
        self.out.flush()
    }
}

impl Write for StoredZip<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let e = self.current.as_mut().ok_or_else(|| io::Error::other("no zip entry started"))?;
        e.crc = crc32(e.crc, buf);
        e.size += buf.len() as u64;
        self.out.write_all(buf)?;
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// CRC-32 (IEEE, as zip uses) of `bytes`, continuing from `crc`.
fn crc32(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_in_the_zip_are_tame() {
        assert_eq!(sanitized("my cat!.png"), "my_cat_.png");
        assert_eq!(sanitized("../../etc/passwd"), "_._.._etc_passwd");
        assert_eq!(sanitized(".hidden"), "_hidden");
        assert_eq!(sanitized(""), "file");
        assert_eq!(sanitized(&"é".repeat(300)).len(), 100);
    }

    #[test]
    fn crc32_is_the_zip_one() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926, "continues across writes");
    }

    #[test]
    fn a_stored_zip_has_its_entry_and_a_central_directory() {
        let mut bytes = Vec::new();
        let mut zip = StoredZip::new(&mut bytes);
        zip.start_entry("a.txt").unwrap();
        zip.write_all(b"hello").unwrap();
        zip.finish_entry().unwrap();
        zip.finish().unwrap();
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        assert_eq!(&bytes[bytes.len() - 22..bytes.len() - 18], b"PK\x05\x06");
        assert!(bytes.windows(5).any(|w| w == b"hello"));
    }
}
