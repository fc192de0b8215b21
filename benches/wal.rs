//! WAL frames written per message by the local store, counted, not timed: a count
//! does not move with the machine's load, so it can be compared between commits.
//!
//! The workload is the `rooms` row of `make loadtest`: messages in 500 rooms, each
//! text a load-tester probe (`lt <client> <n> <send_ns>`), committed in batches as
//! the dispatcher commits (one transaction per batch). At 2,000 msg/s a batch holds a
//! few messages; the table shows batches of 1 to 100. Frames are read from the
//! WAL-index header (`mxFrame`, <https://sqlite.org/walformat.html>) before and after
//! each commit; a WAL restarted by the commit (its salt changed) counts from zero.
//!
//! `cargo bench -p natter --bench wal` (a few seconds; `WAL_MESSAGES=N` to change the
//! 20,000 messages per batch size).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use natter::config::FsyncPolicy;
use natter::protocol::ServerMsg;
use natter::store::sqlite::SqliteStore;
use natter::store::NewMessage;

const ROOMS: u64 = 500;

/// `(mxFrame, salt)` from the WAL-index header.
fn wal_head(shm: &File) -> (u32, u64) {
    let mut b = [0u8; 48];
    if shm.read_exact_at(&mut b, 0).is_err() {
        return (0, 0);
    }
    let frames = u32::from_ne_bytes(b[16..20].try_into().unwrap());
    let salt = u64::from_ne_bytes(b[32..40].try_into().unwrap());
    (frames, salt)
}

fn message(i: u64, ts: u64) -> NewMessage {
    let room = format!("room-{}", i % ROOMS);
    let seq = i / ROOMS + 1;
    let text = format!("lt {} {} {}", i % 10_000, seq, 1_000_000_000 + i * 500_123);
    let id = format!("c-{i}");
    let json = ServerMsg::Msg { room: &room, seq, id: Some(&id), ts, user: "lt", uid: "u-lt", text: &text, files: &[] }
        .to_json();
    NewMessage { room, epoch: "0123456789abcdef".into(), seq, ts, text, json: Bytes::from(json) }
}

/// Frames per message for `n` messages committed `batch` at a time.
fn run(dir: &Path, from: u64, n: u64, batch: u64) -> f64 {
    let mut store = SqliteStore::open(dir, FsyncPolicy::Never).unwrap();
    let shm = File::open(dir.join("natter.db-shm")).unwrap();
    let mut frames = 0u64;
    let mut i = from;
    while i < from + n {
        for _ in 0..batch {
            store.append(message(i, 1_790_000_000_000 + i / 2));
            i += 1;
        }
        let before = wal_head(&shm);
        store.commit().unwrap();
        let after = wal_head(&shm);
        frames += u64::from(if after.1 == before.1 { after.0.saturating_sub(before.0) } else { after.0 });
    }
    frames as f64 / n as f64
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here is a filter.
    let n: u64 = std::env::var("WAL_MESSAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    println!("wal frames per message, {n} messages in {ROOMS} rooms, after {n} already stored");
    println!("{:>6} {:>16}", "batch", "frames/message");
    for batch in [1u64, 2, 4, 16, 100] {
        let dir = tempfile::tempdir().unwrap();
        // A store that already holds messages: b-trees past their first pages.
        run(dir.path(), 0, n, 100);
        let per = run(dir.path(), n, n, batch);
        println!("{batch:>6} {per:>16.2}");
    }
}
