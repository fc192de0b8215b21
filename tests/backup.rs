//! Backups as an operator takes them: `natter backup` copies the store of a natter
//! process while clients post to it, the copy is restored into a fresh data dir, and
//! the restored natter holds every message acked before the backup began, passes
//! `PRAGMA integrity_check`, and answers a resume from the pre-restore history with a
//! `reset` to the room's new epoch (never a mix of old and new seqs). Uploaded files
//! come along: `FILE.files` beside the copy, restored as the files directory, serves a
//! posted file by a signed URL again, and holds nothing posted after the backup.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{natter_bin, wait_until, Client, Proc};
use natter::store::sqlite::backup::integrity_problems;
use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};

const FAST: &[&str] = &["--rate-per-s", "100000", "--rate-burst", "100000"];
const ROOMS: [&str; 2] = ["r1", "r2"];
/// Each room's poster posts this often: 500 messages a second together.
const EVERY: Duration = Duration::from_millis(4);
/// A poster stops here at the latest (under the default `--max-resume`, so one resume
/// from 0 returns a room's whole history).
const MAX_POSTS: u64 = 4_000;

/// What the posters have been acked: (room, seq, id), in ack order.
type Acks = Arc<Mutex<Vec<(String, u64, String)>>>;

/// Posts to `room` every [`EVERY`] until `stop`, recording each ack; returns the
/// room's epoch as the poster's `joined` gave it.
fn poster(url: String, room: &'static str, acks: Acks, stop: Arc<AtomicBool>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut c = Client::connect(&url);
        c.join(room, None);
        let start = Instant::now();
        let mut epoch = None;
        for n in 0..MAX_POSTS {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(wait) = (start + EVERY * n as u32).checked_duration_since(Instant::now()) {
                thread::sleep(wait); // pacing the load, not waiting for an event
            }
            let id = format!("{room}-{n}");
            let ack = c.post(room, &format!("text {n} of {room}"), &id);
            let seq = ack["seq"].as_u64().expect("an ack has a seq");
            acks.lock().unwrap().push((room.to_owned(), seq, id));
            if epoch.is_none() {
                // The room's epoch exists from its first stored message on.
                c.send(json!({"type": "join", "room": room, "since": seq}));
                epoch = Some(c.expect("joined")["epoch"].as_str().expect("joined has the epoch").to_owned());
                c.expect_history();
            }
        }
        epoch.expect("the poster posted")
    })
}

fn acked(acks: &Acks) -> Vec<(String, u64, String)> {
    acks.lock().unwrap().clone()
}

/// Joins `room` with `since` and `epoch`; returns (joined, history with pages merged).
fn resume(c: &mut Client, room: &str, since: u64, epoch: &str) -> (Value, Value) {
    c.send(json!({"type": "join", "room": room, "since": since, "epoch": epoch}));
    let joined = c.expect("joined");
    (joined, c.expect_history())
}

fn integrity(db: &std::path::Path) -> Vec<String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open the database");
    integrity_problems(&conn).expect("integrity_check runs")
}

/// A number in `out` just before `word` (e.g. "… 57 steps" → 57).
fn number_before(out: &str, word: &str) -> u64 {
    let at = out.find(word).unwrap_or_else(|| panic!("no `{word}` in {out:?}"));
    out[..at].split_whitespace().last().and_then(|n| n.trim_start_matches('(').parse().ok()).expect("a number")
}

#[test]
fn a_backup_under_load_restores_every_message_acked_before_it_and_old_resumes_get_reset() {
    let live = tempfile::tempdir().unwrap();
    let mut natter = Proc::start(live.path(), None, FAST);
    let (acks, stop): (Acks, _) = (Arc::default(), Arc::new(AtomicBool::new(false)));
    let posters: Vec<_> = ROOMS
        .iter()
        .map(|room| poster(natter.url(&format!("poster-{room}")), room, acks.clone(), stop.clone()))
        .collect();
    wait_until(|| acks.lock().unwrap().len() >= 400, "400 posts acked before the backup");

    // Small steps with pauses: the copy spans many of the server's commits.
    let copies = tempfile::tempdir().unwrap();
    let file = copies.path().join("natter-backup.db");
    let before = acked(&acks);
    let began = Instant::now();
    let out = Command::new(natter_bin())
        .arg("backup")
        .arg(&file)
        .arg("--data-dir")
        .arg(live.path())
        .args(["--pages-per-step", "1", "--pause-ms", "20"])
        .output()
        .expect("run natter backup");
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "natter backup: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let during = acked(&acks).len() - before.len();
    eprintln!("backup took {took:?} while {during} posts were acked; it said: {stdout}");
    assert!(during >= 50, "the copy ran while posts were acked ({during} in {took:?})");
    assert!(stdout.contains("2 rooms") && stdout.contains("integrity_check ok"), "{stdout}");
    let (pages, steps) = (number_before(&stdout, "pages in"), number_before(&stdout, "steps"));
    assert!(steps <= pages + 2, "one snapshot: the copy never restarted ({pages} pages, {steps} steps)");
    assert!(integrity(&file).is_empty(), "{:?}", integrity(&file));

    // The live store moves on past the backup, then natter stops.
    let at_end = acked(&acks).len();
    wait_until(|| acks.lock().unwrap().len() >= at_end + 100, "100 more posts after the backup");
    stop.store(true, Ordering::Relaxed);
    let old_epochs: Vec<String> = posters.into_iter().map(|p| p.join().expect("poster")).collect();
    let all = acked(&acks);
    natter.signal(libc::SIGTERM);
    assert_eq!(natter.wait(Duration::from_secs(10)), Some(0));

    // It refuses to overwrite the copy unless told.
    let again =
        Command::new(natter_bin()).arg("backup").arg(&file).arg("--data-dir").arg(live.path()).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists; pass --force"), "{again:?}");

    // Restore as docs/DEPLOY.md says: a fresh data dir holding the file as natter.db.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&file, restored.path().join("natter.db")).expect("put the backup in place");
    let natter = Proc::start(restored.path(), None, FAST);
    assert!(integrity(&restored.path().join("natter.db")).is_empty());

    let mut reader = Client::connect(&natter.url("reader"));
    for (room, old_epoch) in ROOMS.iter().zip(&old_epochs) {
        let before: Vec<(u64, &str)> = before.iter().filter(|a| a.0 == *room).map(|a| (a.1, a.2.as_str())).collect();
        let last_acked = all.iter().filter(|a| a.0 == *room).map(|a| a.1).max().expect("acks");
        let (&(backed_up, _), &(first, _)) = (before.last().expect("acks before"), before.first().expect("acks"));

        // A client that saw messages up to one inside the backup, from the old history:
        // its seq exists again, so only the epoch tells the histories apart.
        let mut old = Client::connect(&natter.url(&format!("old-{room}")));
        let (joined, history) = resume(&mut old, room, backed_up - 1, old_epoch);
        let epoch = joined["epoch"].as_str().expect("the restored room has an epoch").to_owned();
        assert_eq!(history["reset"], true, "{room}: a resume from the old epoch is reset: {history}");
        assert_ne!(&epoch, old_epoch, "{room}: a restored room starts a new epoch");
        let head = joined["head"].as_u64().expect("head");
        assert!(
            head >= backed_up && head < last_acked,
            "{room}: the head went back ({backed_up} ≤ {head} < {last_acked})"
        );

        // …and one past what the restored store holds.
        let (joined, history) = resume(&mut old, room, last_acked, old_epoch);
        assert_eq!((joined["epoch"].as_str(), &history["reset"]), (Some(epoch.as_str()), &json!(true)));

        // Every message acked before the backup began is there, at its seq.
        let (_, history) = resume(&mut reader, room, 0, &epoch);
        assert!(history["reset"] != true && history["complete"] == true, "{room}: {}", history["complete"]);
        let stored: Vec<(u64, &str)> = history["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| (m["seq"].as_u64().expect("seq"), m["id"].as_str().expect("id")))
            .collect();
        assert_eq!(&stored[..before.len()], &before[..], "{room}: from seq {first} on, each acked message");
        assert_eq!(stored.len() as u64, head, "{room}: the restored history up to its head");

        // Posts go on in the new epoch.
        let ack = reader.post(room, "after the restore", &format!("{room}-restored"));
        assert_eq!(ack["seq"].as_u64(), Some(head + 1));
    }
}

/// One HTTP request on its own connection; (status, body).
fn http(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let status = String::from_utf8_lossy(&out[..end]).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out[end..].to_vec())
}

/// Uploads `body` as `who` (open mode's identity key); the new file's id.
fn upload(addr: std::net::SocketAddr, who: &str, body: &[u8]) -> String {
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nX-Natter-Key: test-identity-key-for-{who}\r\nX-Natter-Name: f.txt\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, answer) = http(addr, &head, body);
    let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().expect("an id").to_owned()
}

/// Fetches file `id` of `room` by a signed URL `c` asks for; (status, body).
fn fetch(addr: std::net::SocketAddr, c: &mut Client, room: &str, id: &str) -> (u16, Vec<u8>) {
    c.send(json!({"type": "file_urls", "room": room, "files": [id]}));
    let urls = c.next_of("file_urls");
    let url = urls["urls"][id].as_str().expect("a URL").to_owned();
    http(addr, &format!("GET {url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"), b"")
}

fn post_with_file(c: &mut Client, room: &str, id: &str, file: &str) {
    c.send(json!({"type": "msg", "room": room, "text": id, "id": id, "files": [file]}));
    loop {
        let v = c.recv();
        if v["type"] == "ack" && v["id"] == id {
            return;
        }
        assert!(v["type"] != "error", "{v}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

#[test]
fn a_backup_includes_the_files_and_a_restored_natter_serves_them() {
    let live = tempfile::tempdir().unwrap();
    let natter = Proc::start(live.path(), None, FAST);
    let mut alice = Client::connect(&natter.url("alice"));
    alice.join("pics", None);
    let kept = b"a file posted before the backup".to_vec();
    let kept_id = upload(natter.ws, "alice", &kept);
    post_with_file(&mut alice, "pics", "before", &kept_id);
    assert_eq!(fetch(natter.ws, &mut alice, "pics", &kept_id), (200, kept.clone()));

    let copies = tempfile::tempdir().unwrap();
    let file = copies.path().join("natter-backup.db");
    let out = Command::new(natter_bin()).arg("backup").arg(&file).arg("--data-dir").arg(live.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "natter backup: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    let files_copy = copies.path().join("natter-backup.db.files");
    assert!(
        stdout.contains(&format!("1 files ({} bytes in 1 blobs) to {}", kept.len(), files_copy.display())),
        "{stdout}"
    );
    assert!(stdout.contains("natter-backup.db.files as the files directory"), "{stdout}");

    // Posted after the backup: not in it.
    let later = b"a file posted after the backup".to_vec();
    let later_id = upload(natter.ws, "alice", &later);
    post_with_file(&mut alice, "pics", "after", &later_id);
    drop(alice);
    let mut natter = natter;
    natter.signal(libc::SIGTERM);
    assert_eq!(natter.wait(Duration::from_secs(10)), Some(0));

    // Restore as docs/DEPLOY.md says: FILE as natter.db, FILE.files as the files directory.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&file, restored.path().join("natter.db")).unwrap();
    copy_dir(&files_copy, &restored.path().join("files"));
    let natter = Proc::start(restored.path(), None, FAST);
    let mut bob = Client::connect(&natter.url("bob"));
    bob.join("pics", None);
    assert_eq!(fetch(natter.ws, &mut bob, "pics", &kept_id), (200, kept), "the posted file, by a signed URL");
    assert_eq!(fetch(natter.ws, &mut bob, "pics", &later_id).0, 404, "nothing from after the backup");
}
