//! Uploaded files: content-addressed blobs (`blobs/ab/abcdef…`, named by their
//! SHA-256) and their metadata ([`db`], `files.db`), all in one files directory
//! (`--files-dir`, by default `files/` in the data dir; with `--redis` a directory
//! every instance shares). [`sniff`] says what bytes are, [`sign`] makes and checks
//! the signed, expiring URLs files are fetched by, [`backup`] copies the directory for
//! `natter backup`.
//!
//! [`Files`] is the handle every thread shares. Uploads stream into a temporary file
//! on the uploading connection's own thread ([`Upload`]); every metadata read and write
//! runs on the one `files` thread, which also sweeps uploads never posted. The
//! dispatcher only ever *tells* it things (a message with files was stored or deleted)
//! and never waits for it. Never touches rooms, members or sockets.

pub mod backup;
pub mod db;
pub mod sign;
pub mod sniff;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use sha2::{Digest, Sha256};

pub use db::{FileDb, FileRecord, Sizes, Unusable};

/// A user's uploads, each with the messages (room, seq) it was posted in.
pub type UserFiles = Vec<(FileRecord, Vec<(String, u64)>)>;

/// Jobs waiting for the `files` thread; past it, a caller is told the store is busy.
const JOBS: usize = 4096;
/// How long a connection thread waits for the `files` thread.
const CALL_WAIT: Duration = Duration::from_secs(10);
/// The file holding the URL-signing secret, created on first start.
const SECRET_FILE: &str = "secret";
/// How often at most the `files` thread publishes its [`Sizes`] after writes.
const SIZES_EVERY: Duration = Duration::from_millis(200);

/// A failure of the file store.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("files {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("files.db: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the file store is busy or stopped")]
    Busy,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io { path: path.to_owned(), source }
}

type Job = Box<dyn FnOnce(&mut FileDb) + Send>;

/// How the `files` thread tidies up.
#[derive(Debug, Clone, Copy)]
pub struct Lifecycle {
    /// An upload no message names is removed this long after it was made.
    pub unposted_ttl: Duration,
    /// Files of messages older than this are removed (`--retention-days`).
    pub retention: Option<Duration>,
    /// `--max-store-bytes`, where the files count toward it (single-instance mode):
    /// uploads not posted yet may take a quarter of it (see [`Files::has_room_for`]).
    pub max_store_bytes: Option<u64>,
}

/// The sizes the `files` thread last published, read without waiting for it.
#[derive(Debug, Default)]
struct Published {
    all: AtomicU64,
    posted: AtomicU64,
    top_room: Mutex<Option<String>>,
    /// `tell_gone` jobs queued and not yet done: until then `posted` still counts their files.
    pending_gone: AtomicU64,
}

impl Published {
    fn set(&self, s: Sizes) {
        self.all.store(s.all, Relaxed);
        self.posted.store(s.posted, Relaxed);
        *self.top_room.lock().unwrap_or_else(|e| e.into_inner()) = s.top_room;
    }
}

/// The shared handle: the directory, the signing secret, the `files` thread's queue.
#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    secret: Vec<u8>,
    jobs: Sender<Job>,
    lifecycle: Lifecycle,
    sizes: Arc<Published>,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Files {
    /// Opens (creating) the files directory and starts the `files` thread.
    pub fn open(dir: &Path, lifecycle: Lifecycle) -> Result<Arc<Files>, FilesError> {
        for sub in ["blobs", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(dir))?;
        }
        if let Some(fs) = network_fs(dir) {
            log::warn!(
                "files: {} is on {fs}: files.db is SQLite in WAL mode, whose locks hold only between processes \
                 on one machine; instances sharing it must run on one host (docs/DEPLOY.md, Uploaded files)",
                dir.display()
            );
        }
        let secret = load_secret(&dir.join(SECRET_FILE))?;
        let mut db = FileDb::open(dir)?;
        let (jobs, rx) = crossbeam_channel::bounded::<Job>(JOBS);
        let sizes = Arc::new(Published::default());
        sizes.set(db.sizes()?);
        let files = Arc::new(Files { dir: dir.to_owned(), secret, jobs, lifecycle, sizes: sizes.clone() });
        let blobs = dir.join("blobs");
        let tmp = dir.join("tmp");
        thread::Builder::new()
            .name("files".into())
            .spawn(move || run(&mut db, &rx, &Paths { blobs, tmp }, lifecycle, &sizes))
            .map_err(io_err(dir))?;
        Ok(files)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The secret file URLs are signed with.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Where the blob with this SHA-256 (hex) lives.
    pub fn blob_path(&self, sha: &str) -> PathBuf {
        blob_path(&self.dir.join("blobs"), sha)
    }

    /// Runs `f` on the `files` thread and waits (bounded) for its answer.
    pub fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut FileDb) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, FilesError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let job: Job = Box::new(move |db| {
            let _ = tx.send(f(db));
        });
        self.jobs.send_timeout(job, CALL_WAIT).map_err(|_| FilesError::Busy)?;
        Ok(rx.recv_timeout(CALL_WAIT).map_err(|_| FilesError::Busy)??)
    }

    /// Hands `f` to the `files` thread without waiting (the dispatcher's way); false
    /// when the queue is full.
    pub fn tell(&self, f: impl FnOnce(&mut FileDb) + Send + 'static) -> bool {
        self.jobs.try_send(Box::new(f)).is_ok()
    }

    /// Message `seq` of `room`, stored at `ts`, carries `ids`.
    pub fn tell_posted(&self, room: &str, seq: u64, ids: Vec<String>, ts: u64) {
        let room = room.to_owned();
        if !self.tell(move |db| {
            if let Err(e) = db.posted(&room, seq, &ids, ts) {
                log::warn!("files: recording the files of {room}/{seq} failed: {e}");
            }
        }) {
            log::warn!("files: queue full; the files of a message are kept until their upload's hour ends");
        }
    }

    /// Message `seq` of `room` was deleted: its files go unless another message names them.
    pub fn tell_deleted(&self, room: &str, seq: u64) {
        self.tell_gone(vec![(room.to_owned(), seq)], "deleted");
    }

    /// The messages `msgs` (room, seq) are gone from the store, however they went
    /// (deleted by author, moderator or the API, erased, removed by retention; on this
    /// instance or, with `--redis`, by whichever instance stored the change): each of
    /// their files is removed, blob included, once no stored message names it. Never
    /// waits (the dispatcher's way); `why` is for the log. With `--redis` the files
    /// directory is shared, so one instance telling is enough.
    pub fn tell_gone(&self, msgs: Vec<(String, u64)>, why: &'static str) {
        if msgs.is_empty() {
            return;
        }
        let blobs = self.dir.join("blobs");
        let ttl = self.lifecycle.unposted_ttl;
        let sizes = self.sizes.clone();
        let done = self.sizes.clone();
        self.sizes.pending_gone.fetch_add(1, Relaxed);
        if !self.tell(move |db| {
            let _done = PendingGone(&done);
            let granted_since = now_ms().saturating_sub(ttl.as_millis() as u64);
            match db.gone(&msgs, granted_since, |sha| unlink_blob(&blobs, sha)) {
                Ok(n) if n > 0 => {
                    log::info!("files: {n} file(s) of {} {why} message(s) removed", msgs.len());
                    // At once: retention's next step must not count them any more.
                    publish(db, &sizes);
                }
                Ok(_) => {}
                Err(e) => log::warn!("files: removing the files of {} {why} message(s) failed: {e}", msgs.len()),
            }
        }) {
            self.sizes.pending_gone.fetch_sub(1, Relaxed);
            log::warn!("files: queue full; the files of {why} messages stay until a later deletion names them");
        }
    }

    /// Bytes of the files that stored messages name: what counts toward
    /// `--max-store-bytes` for retention (an upload never posted does not push
    /// messages out; see [`Self::has_room_for`]).
    pub fn posted_bytes(&self) -> u64 {
        self.sizes.posted.load(Relaxed)
    }

    /// Whether files of gone messages are still being removed: [`Self::posted_bytes`]
    /// counts them until then, so a size check would remove more messages than needed.
    pub fn removing(&self) -> bool {
        self.sizes.pending_gone.load(Relaxed) > 0
    }

    /// The room whose stored messages name the most file bytes (for `--max-store-bytes`).
    pub fn top_room(&self) -> Option<String> {
        self.sizes.top_room.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether an upload of `len` bytes may be taken under `--max-store-bytes`: the
    /// uploads no message names yet (which retention cannot free by removing old
    /// messages) stay within a quarter of it, so they never take the store past
    /// 1.25 times the cap, and never push messages out.
    pub fn has_room_for(&self, len: u64) -> bool {
        let Some(max) = self.lifecycle.max_store_bytes else { return true };
        let unposted = self.sizes.all.load(Relaxed).saturating_sub(self.sizes.posted.load(Relaxed));
        unposted.saturating_add(len) <= max / 4
    }

    /// Every file `uid` uploaded, oldest first, with the messages (room, seq) each was
    /// posted in: metadata here, bytes at [`Self::blob_path`] of each one's `sha256`
    /// (for a user's export); one call on the `files` thread.
    pub fn user_files(&self, uid: &str) -> Result<UserFiles, FilesError> {
        let uid = uid.to_owned();
        self.call(move |db| {
            let files = db.by_uploader(&uid)?;
            files.into_iter().map(|f| db.posts_of(&f.id).map(|posts| (f, posts))).collect()
        })
    }

    /// Erasure: `uid`'s files left in the store no longer name them. Queued after any
    /// deletions the dispatcher told of, so a removed message's file is gone first.
    pub fn forget_uploader(&self, uid: &str) -> Result<usize, FilesError> {
        let uid = uid.to_owned();
        self.call(move |db| db.forget_uploader(&uid))
    }

    /// Starts an upload: a temporary file the body streams into.
    pub fn begin(self: &Arc<Self>) -> Result<Upload, FilesError> {
        let path =
            self.dir.join("tmp").join(format!("{:016x}{:016x}.part", rand::random::<u64>(), rand::random::<u64>()));
        let file = fs::OpenOptions::new().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        Ok(Upload {
            files: self.clone(),
            file: Some(io::BufWriter::with_capacity(64 * 1024, file)),
            path,
            hash: Sha256::new(),
            head: Vec::new(),
            size: 0,
        })
    }
}

/// The network file system `dir` is on, if it is one (where SQLite's WAL cannot be
/// shared between machines).
fn network_fs(dir: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is all zeros when empty (integers); filled by statfs(2) below.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a local statfs struct.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    network_fs_name(st.f_type as i64)
}

/// The name of a network file system by its `statfs` magic number.
fn network_fs_name(magic: i64) -> Option<&'static str> {
    Some(match magic {
        0x6969 => "NFS",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x517B => "SMB",
        0x6573_5546 => "a FUSE file system (sshfs, GlusterFS, …)",
        0x00C3_6400 => "CephFS",
        0x0BD0_0BD0 => "Lustre",
        0x4750_4653 => "GPFS",
        0x6B41_4653 => "AFS",
        0x0102_1997 => "9P",
        _ => return None,
    })
}

fn blob_path(blobs: &Path, sha: &str) -> PathBuf {
    blobs.join(&sha[..2.min(sha.len())]).join(sha)
}

fn unlink_blob(blobs: &Path, sha: &str) {
    let path = blob_path(blobs, sha);
    if let Err(e) = fs::remove_file(&path) {
        if e.kind() != io::ErrorKind::NotFound {
            log::warn!("files: removing {} failed: {e}", path.display());
        }
    }
}

/// Reads the signing secret, or creates it (32 random bytes, owner-only).
fn load_secret(path: &Path) -> Result<Vec<u8>, FilesError> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::read(path) {
        Ok(s) if s.len() >= 32 => return Ok(s),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(path)(e)),
    }
    let secret: [u8; 32] = rand::random();
    // create_new: of two instances starting on one shared directory, one writes it.
    match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(&secret).and_then(|()| f.sync_all()).map_err(io_err(path))?;
            Ok(secret.to_vec())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            thread::sleep(Duration::from_millis(100)); // the other instance's write
            fs::read(path).map_err(io_err(path))
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

struct Paths {
    blobs: PathBuf,
    tmp: PathBuf,
}

/// The `files` thread: runs jobs in order, sweeps now and then, and publishes the
/// sizes (at most every [`SIZES_EVERY`] after writes, and after every sweep: with
/// `--redis` other instances write too).
fn run(db: &mut FileDb, jobs: &Receiver<Job>, paths: &Paths, lifecycle: Lifecycle, sizes: &Published) {
    use std::time::Instant;
    let every = (lifecycle.unposted_ttl / 2).clamp(Duration::from_millis(200), Duration::from_secs(60));
    let mut next_sweep = Instant::now();
    let mut next_sizes = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next_sweep {
            sweep(db, &paths.blobs, &paths.tmp, lifecycle);
            next_sweep = now + every;
            db.take_changed();
            publish(db, sizes);
            next_sizes = now + SIZES_EVERY;
        } else if now >= next_sizes && db.take_changed() {
            publish(db, sizes);
            next_sizes = now + SIZES_EVERY;
        }
        let deadline = if next_sizes > now { next_sweep.min(next_sizes) } else { next_sweep };
        match jobs.recv_deadline(deadline) {
            Ok(job) => job(db),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Counts a `tell_gone` job done when dropped (after its sizes were published).
struct PendingGone<'a>(&'a Published);

impl Drop for PendingGone<'_> {
    fn drop(&mut self) {
        self.0.pending_gone.fetch_sub(1, Relaxed);
    }
}

fn publish(db: &FileDb, sizes: &Published) {
    match db.sizes() {
        Ok(s) => sizes.set(s),
        Err(e) => log::warn!("files: measuring the files failed: {e}"),
    }
}

fn sweep(db: &mut FileDb, blobs: &Path, tmp: &Path, lifecycle: Lifecycle) {
    let now = now_ms();
    let unposted_before = now.saturating_sub(lifecycle.unposted_ttl.as_millis() as u64);
    let expired_before = lifecycle.retention.map(|r| now.saturating_sub(r.as_millis() as u64));
    match db.sweep(unposted_before, expired_before, |sha| unlink_blob(blobs, sha)) {
        Ok(n) if n > 0 => log::info!("files: {n} file(s) no stored message names removed"),
        Ok(_) => {}
        Err(e) => log::warn!("files: sweep failed: {e}"),
    }
    // Temporary files of uploads that died with their process.
    let stale = SystemTime::now() - lifecycle.unposted_ttl.max(Duration::from_secs(3600));
    for entry in fs::read_dir(tmp).into_iter().flatten().flatten() {
        if entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < stale) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// One upload streaming to disk; its temporary file is removed unless it is kept.
pub struct Upload {
    files: Arc<Files>,
    file: Option<io::BufWriter<fs::File>>,
    path: PathBuf,
    hash: Sha256,
    head: Vec<u8>,
    size: u64,
}

/// What an upload says about itself besides its bytes.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    pub uploader: String,
    pub name: String,
    pub content_type: Option<String>,
}

/// Why finished bytes are not kept.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("{0}")]
    BadImage(#[from] sniff::BadImage),
    #[error("{claim} says {claimed} but the bytes are {actual}")]
    Mismatch { claim: &'static str, claimed: String, actual: &'static str },
    #[error(transparent)]
    Store(#[from] FilesError),
}

impl Upload {
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), FilesError> {
        self.hash.update(bytes);
        if self.head.len() < sniff::HEAD_BYTES {
            let take = (sniff::HEAD_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.size += bytes.len() as u64;
        let file = self.file.as_mut().expect("written only before finish");
        file.write_all(bytes).map_err(io_err(&self.path))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Sniffs the bytes, checks them against what the client claimed, and keeps them:
    /// the blob (once per content) and the file's metadata.
    pub fn finish(mut self, meta: UploadMeta) -> Result<FileRecord, Rejected> {
        let sniffed = sniff::sniff(&self.head)?;
        let claims = [
            ("Content-Type", meta.content_type.as_deref().and_then(sniff::claimed_by_type)),
            ("the name", sniff::claimed_by_name(&meta.name).map(str::to_owned)),
        ];
        for (claim, claimed) in claims {
            if let Some(claimed) = claimed.filter(|c| c != sniffed.kind) {
                return Err(Rejected::Mismatch { claim, claimed, actual: sniffed.kind });
            }
        }
        let mut file = self.file.take().expect("finished once");
        file.flush().map_err(io_err(&self.path)).map_err(Rejected::Store)?;
        drop(file);
        let sha = hex::encode(std::mem::take(&mut self.hash).finalize());
        let record = FileRecord {
            id: format!("f{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>()),
            sha256: sha.clone(),
            uploader: meta.uploader,
            size: self.size,
            kind: sniffed.kind.to_owned(),
            name: meta.name,
            width: sniffed.size.map(|s| s.0),
            height: sniffed.size.map(|s| s.1),
            created: now_ms(),
        };
        let (tmp, blob) = (self.path.clone(), self.files.blob_path(&sha));
        let kept = record.clone();
        let sizes = self.files.sizes.clone();
        self.files.call(move |db| {
            // In the write transaction: no instance can unlink this blob meanwhile.
            db.immediate(|tx| {
                let io = |e: io::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
                if let Some(parent) = blob.parent() {
                    fs::create_dir_all(parent).map_err(io)?;
                }
                if blob.exists() {
                    let _ = fs::remove_file(&tmp);
                } else {
                    fs::rename(&tmp, &blob).map_err(io)?;
                }
                FileDb::insert(tx, &kept)
            })?;
            // At once: the next upload's room under the cap counts this one.
            publish(db, &sizes);
            Ok(())
        })?;
        Ok(record)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        drop(self.file.take());
        let _ = fs::remove_file(&self.path); // kept ones were moved away already
    }
}

/// A file name as stored and shown: no path, no control characters, no leading dots,
/// at most 128 characters; "file" when nothing is left.
pub fn clean_file_name(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let kept: String =
        base.chars().filter(|c| !c.is_control() && !matches!(c, '"' | '<' | '>' | ':' | '|' | '?' | '*')).collect();
    let name: String = kept.trim().trim_start_matches('.').trim().chars().take(128).collect();
    if name.is_empty() {
        "file".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, Arc<Files>) {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::open(
            dir.path(),
            Lifecycle { unposted_ttl: Duration::from_secs(3600), retention: None, max_store_bytes: None },
        )
        .unwrap();
        (dir, files)
    }

    fn upload(files: &Arc<Files>, bytes: &[u8], name: &str, uid: &str) -> Result<FileRecord, Rejected> {
        let mut up = files.begin().unwrap();
        up.write(bytes).unwrap();
        up.finish(UploadMeta { uploader: uid.into(), name: name.into(), content_type: None })
    }

    #[test]
    fn the_same_bytes_are_stored_once_and_removed_with_the_last_file() {
        let (dir, files) = open();
        let png = sniff::tests::png_head(2, 3);
        let a = upload(&files, &png, "a.png", "u1").unwrap();
        let b = upload(&files, &png, "b.png", "u2").unwrap();
        assert_eq!((a.sha256 == b.sha256, a.width, a.height), (true, Some(2), Some(3)));
        let blob = files.blob_path(&a.sha256);
        assert!(blob.exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temporary file left");
        let (ida, idb) = (a.id.clone(), b.id.clone());
        files.call(move |db| db.posted("r", 1, &[ida], 1)).unwrap();
        files.call(move |db| db.posted("r", 2, &[idb], 1)).unwrap();
        files.call(|db| db.gone(&[("r".into(), 1)], u64::MAX, |_| {})).unwrap();
        assert!(blob.exists(), "b still names the bytes");
        let blobs = dir.path().join("blobs");
        let n = files.call(move |db| db.gone(&[("r".into(), 2)], u64::MAX, |sha| unlink_blob(&blobs, sha))).unwrap();
        assert_eq!(n, 1);
        assert!(!blob.exists());
    }

    #[test]
    fn lies_about_images_are_refused_and_leave_nothing() {
        let (dir, files) = open();
        let e = upload(&files, b"<html><script>alert(1)</script>", "cat.png", "u").unwrap_err();
        assert_eq!(e.to_string(), "the name says image/png but the bytes are text/html");
        let e = upload(&files, b"\x89PNG\r\n\x1a\ngarbage", "x.bin", "u").unwrap_err();
        assert_eq!(e.to_string(), "not a valid PNG image: its header cannot be read");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(files.call(|db| db.stored_bytes()).unwrap(), 0);
    }

    #[test]
    fn only_the_uploader_posts_a_file() {
        let (_dir, files) = open();
        let f = upload(&files, b"hello", "notes.txt", "alice").unwrap();
        let ids = vec![f.id.clone()];
        assert_eq!(files.user_files("alice").unwrap(), vec![(f.clone(), vec![])]);
        assert!(files.user_files("mallory").unwrap().is_empty());
        let mine = files.call({
            let ids = ids.clone();
            move |db| db.grant("alice", &ids, "r", 1)
        });
        assert_eq!(mine.unwrap().unwrap()[0].kind, "text/plain");
        let theirs = files.call(move |db| db.grant("mallory", &ids, "r2", 1)).unwrap();
        assert!(matches!(theirs, Err(Unusable::Unknown(_))));
        let id = f.id.clone();
        assert!(files.call(move |db| db.posted_in(&id, "r2")).unwrap().is_none());
        files.tell_posted("r", 7, vec![f.id.clone()], 2);
        assert_eq!(
            files.user_files("alice").unwrap(),
            vec![(f.clone(), vec![("r".to_owned(), 7)])],
            "where it was posted"
        );
        assert_eq!(files.forget_uploader("alice").unwrap(), 1);
        assert!(files.user_files("alice").unwrap().is_empty(), "an erased uploader has no files");
    }

    #[test]
    fn a_grant_keeps_an_old_upload_until_its_message_is_stored_and_no_longer() {
        let (dir, files) = open();
        let f = upload(&files, b"posted at the end of its hour", "late.txt", "u").unwrap();
        let blob = files.blob_path(&f.sha256);
        let blobs = dir.path().join("blobs");
        let (id, created) = (f.id.clone(), f.created);
        // Accepted for posting just before its hour ends (here or on another instance
        // sharing the directory); the sweep after the hour keeps it.
        files.call(move |db| db.grant("u", &[id], "r", created + 3_000_000)).unwrap().unwrap();
        let sweep_at = |at: u64| {
            let blobs = blobs.clone();
            files.call(move |db| db.sweep(at - 3_600_000, None, |sha| unlink_blob(&blobs, sha))).unwrap()
        };
        assert_eq!(sweep_at(created + 3_700_000), 0);
        assert!(blob.exists(), "a grant younger than the hour keeps the file");
        // Its message was never stored: once the grant is an hour old it goes too.
        assert_eq!(sweep_at(created + 6_700_000), 1);
        assert!(!blob.exists());
    }

    #[test]
    fn network_file_systems_are_told_apart() {
        assert_eq!(network_fs_name(0x6969), Some("NFS"));
        assert_eq!(network_fs_name(0xFE53_4D42), Some("SMB2"));
        assert_eq!(network_fs_name(0xEF53), None, "ext4");
        assert_eq!(network_fs_name(0x0102_1994), None, "tmpfs");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_fs(dir.path()), None, "the tests' temporary directory is local");
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("C:\\x\\.hidden"), "hidden");
        assert_eq!(clean_file_name("a\u{0}b\n.txt"), "ab.txt");
        assert_eq!(clean_file_name("..."), "file");
    }
}
