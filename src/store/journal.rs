//! The append-only journal: every accepted message, one JSON line each, written
//! before its ack, replayed into the history rings at start-up.
//!
//! Files are `journal-NNNNNN.log` under the data dir. When the active segment passes
//! its size limit it is compacted: a new segment is started holding just what the
//! rings hold, and older segments are deleted, so disk use stays bounded. Owned by the
//! dispatcher; the only other thread is the once-a-second fsync of the `interval`
//! policy, which touches a duplicate file handle and nothing else.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use bytes::Bytes;

use crate::config::FsyncPolicy;
use crate::protocol::StoredMsgRecord;

/// A journal failure; the dispatcher refuses to ack what it could not write.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One message read back at start-up.
#[derive(Debug)]
pub struct Replayed {
    pub record: StoredMsgRecord,
    pub json: Bytes,
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    policy: FsyncPolicy,
    segment_limit: u64,
    segment_no: u64,
    file: File,
    size: u64,
    last_snapshot: u64,
    buf: Vec<u8>,
    syncer: Option<Syncer>,
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("journal-{n:06}.log"))
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io { path: path.to_owned(), source }
}

/// Segment numbers present in `dir`, ascending.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut nums: Vec<u64> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("journal-")?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    nums.sort_unstable();
    Ok(nums)
}

impl Journal {
    /// Opens (creating) the journal in `dir` and returns every message it holds, in
    /// file order. A torn or unreadable last line is skipped with a warning and cut
    /// off, so the next append starts on a clean line.
    pub fn open(dir: &Path, policy: FsyncPolicy, segment_limit: u64) -> Result<(Journal, Vec<Replayed>), JournalError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let nums = segments(dir).map_err(io_err(dir))?;
        let mut replayed = Vec::new();
        for &n in &nums {
            let path = segment_path(dir, n);
            let good = read_segment(&path, &mut replayed).map_err(io_err(&path))?;
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if good < len {
                log::warn!(
                    "journal {}: skipping a torn record of {} bytes at offset {good}",
                    path.display(),
                    len - good
                );
                OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(good)).map_err(io_err(&path))?;
            }
        }
        let segment_no = nums.last().copied().unwrap_or(1);
        let path = segment_path(dir, segment_no);
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        let size = file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        let syncer = (policy == FsyncPolicy::Interval)
            .then(|| Syncer::start(file.try_clone().map_err(io_err(&path))?))
            .transpose()?;
        let journal = Journal {
            dir: dir.to_owned(),
            policy,
            segment_limit,
            segment_no,
            file,
            size,
            last_snapshot: 0,
            buf: Vec::with_capacity(64 * 1024),
            syncer,
        };
        Ok((journal, replayed))
    }

    /// Buffers one message's JSON; nothing reaches the file before [`commit`](Self::commit).
    pub fn append(&mut self, json: &[u8]) {
        self.buf.extend_from_slice(json);
        self.buf.push(b'\n');
    }

    /// Writes everything appended since the last commit in one `write`, and fsyncs under
    /// the `always` policy. After it returns Ok the messages survive a process crash.
    pub fn commit(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = segment_path(&self.dir, self.segment_no);
        self.file.write_all(&self.buf).map_err(io_err(&path))?;
        self.size += self.buf.len() as u64;
        self.buf.clear();
        match self.policy {
            FsyncPolicy::Always => self.file.sync_data().map_err(io_err(&path))?,
            FsyncPolicy::Interval => self.syncer.as_ref().expect("interval policy has a syncer").dirty(),
            FsyncPolicy::Never => {}
        }
        Ok(())
    }

    /// True when the active segment has grown enough to be worth compacting.
    pub fn wants_compaction(&self) -> bool {
        self.size > self.segment_limit && self.size > 2 * self.last_snapshot
    }

    /// Starts a new segment holding exactly `lines` (what the rings hold), makes it
    /// durable, then deletes the older segments.
    pub fn compact(&mut self, lines: impl Iterator<Item = Bytes>) -> Result<(), JournalError> {
        self.commit()?;
        let next = self.segment_no + 1;
        let path = segment_path(&self.dir, next);
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        let mut out = io::BufWriter::new(&mut file);
        let mut size = 0u64;
        for line in lines {
            out.write_all(&line).and_then(|_| out.write_all(b"\n")).map_err(io_err(&path))?;
            size += line.len() as u64 + 1;
        }
        out.flush().map_err(io_err(&path))?;
        drop(out);
        file.sync_all().map_err(io_err(&path))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io_err(&self.dir))?;
        if let Some(s) = &self.syncer {
            s.replace(file.try_clone().map_err(io_err(&path))?);
        }
        self.file = file;
        self.size = size;
        self.last_snapshot = size;
        let old = self.segment_no;
        self.segment_no = next;
        for n in segments(&self.dir).map_err(io_err(&self.dir))? {
            if n <= old {
                let p = segment_path(&self.dir, n);
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        log::info!("journal compacted into {} ({size} bytes)", path.display());
        Ok(())
    }

    /// Writes what is buffered and forces it to disk (shutdown).
    pub fn close(&mut self) -> Result<(), JournalError> {
        self.commit()?;
        let path = segment_path(&self.dir, self.segment_no);
        self.file.sync_all().map_err(io_err(&path))
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Reads a segment's complete, parseable lines into `out`; returns the byte offset
/// where the good prefix ends.
fn read_segment(path: &Path, out: &mut Vec<Replayed>) -> io::Result<u64> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut good = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(good);
        }
        if line.last() != Some(&b'\n') {
            return Ok(good); // torn: the crash cut this record short
        }
        line.pop();
        match serde_json::from_slice::<StoredMsgRecord>(&line) {
            Ok(record) => out.push(Replayed { record, json: Bytes::copy_from_slice(&line) }),
            Err(e) => {
                // A complete line that does not parse can only be damage; stop here.
                log::warn!("journal {}: unreadable record at offset {good}: {e}", path.display());
                return Ok(good);
            }
        }
        good += n as u64;
    }
}

/// The `interval` policy's background fsync: once a second, when something was written.
#[derive(Debug)]
struct Syncer {
    file: Arc<Mutex<File>>,
    dirty: Arc<AtomicBool>,
}

impl Syncer {
    fn start(file: File) -> Result<Syncer, JournalError> {
        let file = Arc::new(Mutex::new(file));
        let dirty = Arc::new(AtomicBool::new(false));
        let (f, d) = (Arc::downgrade(&file), dirty.clone());
        thread::Builder::new()
            .name("journal-fsync".into())
            .spawn(move || loop {
                thread::sleep(Duration::from_secs(1));
                let Some(file) = f.upgrade() else { return };
                if d.swap(false, Ordering::AcqRel) {
                    if let Err(e) = file.lock().unwrap_or_else(|p| p.into_inner()).sync_data() {
                        log::error!("journal fsync failed: {e}");
                    }
                }
            })
            .map_err(|source| JournalError::Io { path: PathBuf::from("<fsync thread>"), source })?;
        Ok(Syncer { file, dirty })
    }
    fn dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
    fn replace(&self, file: File) {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(room: &str, seq: u64) -> Vec<u8> {
        format!(
            r#"{{"type":"msg","room":"{room}","seq":{seq},"id":"i{seq}","ts":1,"user":"a","uid":"u-a","text":"t"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn committed_lines_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, r) = Journal::open(dir.path(), FsyncPolicy::Never, 1 << 20).unwrap();
        assert!(r.is_empty());
        for s in 1..=5 {
            j.append(&line("a", s));
        }
        j.commit().unwrap();
        j.append(&line("a", 6)); // never committed: must not come back
        drop(j);
        let (_, r) = Journal::open(dir.path(), FsyncPolicy::Never, 1 << 20).unwrap();
        assert_eq!(r.iter().map(|m| m.record.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(r[0].record.id.as_deref(), Some("i1"));
    }

    #[test]
    fn a_torn_last_record_is_skipped_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), FsyncPolicy::Always, 1 << 20).unwrap();
        j.append(&line("a", 1));
        j.append(&line("a", 2));
        j.commit().unwrap();
        drop(j);
        let path = segment_path(dir.path(), 1);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 7).unwrap();
        let (mut j, r) = Journal::open(dir.path(), FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.len(), 1);
        j.append(&line("a", 2));
        j.commit().unwrap();
        drop(j);
        let (_, r) = Journal::open(dir.path(), FsyncPolicy::Always, 1 << 20).unwrap();
        assert_eq!(r.iter().map(|m| m.record.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn compaction_bounds_the_files_and_keeps_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), FsyncPolicy::Interval, 1000).unwrap();
        for s in 1..=50 {
            j.append(&line("a", s));
        }
        j.commit().unwrap();
        assert!(j.wants_compaction());
        let keep: Vec<Bytes> = (46..=50).map(|s| Bytes::from(line("a", s))).collect();
        j.compact(keep.into_iter()).unwrap();
        assert!(!j.wants_compaction());
        j.append(&line("a", 51));
        j.close().unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![2]);
        let (_, r) = Journal::open(dir.path(), FsyncPolicy::Never, 1000).unwrap();
        assert_eq!(r.iter().map(|m| m.record.seq).collect::<Vec<_>>(), vec![46, 47, 48, 49, 50, 51]);
    }
}
