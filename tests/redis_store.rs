//! The Redis layer (`natter::store::redis`) against a real `redis-server`, one private
//! server per test on a free loopback port (tests/common_redis). Two `RedisStore`s
//! stand for two natter instances sharing rooms.
//!
//! Needs `redis-server` on PATH: `scripts/ensure-redis.sh` installs it.

mod common_redis;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common_redis::RedisServer;
use crossbeam_channel::{unbounded, Receiver, Sender};
use natter::protocol::{RoomName, User};
use natter::store::read::{Page, Query};
use natter::store::redis::{
    deleted, edited, presence_changes, Appended, ChangeOf, ClientPost, Delivery, Events, Health, InstanceId, Link,
    Master, Reader, RedisStore, StoreOptions, Watch,
};
use natter::store::Refused;

/// How long any single expectation may wait.
const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(400);

/// A room name the store accepts (the tests use only valid ones).
fn rn(room: &str) -> RoomName {
    RoomName::parse(room).expect("a valid room name")
}

fn opts(instance: &str) -> StoreOptions {
    StoreOptions { instance: InstanceId::new(instance).expect("test instance id"), ..StoreOptions::default() }
}

fn store(redis: &RedisServer, instance: &str) -> RedisStore {
    store_with(redis, opts(instance))
}

fn store_with(redis: &RedisServer, opts: StoreOptions) -> RedisStore {
    RedisStore::connect(&redis.url(), opts).expect("connect to the test redis")
}

/// The `msg` JSON around its seq, as the dispatcher would build it.
fn parts(room: &str, uid: &str, text: &str) -> (Vec<u8>, Vec<u8>) {
    let prefix = format!(r#"{{"type":"msg","room":"{room}","seq":"#);
    let suffix = format!(r#","id":null,"ts":1,"user":"{uid}","uid":"{uid}","text":"{text}"}}"#);
    (prefix.into_bytes(), suffix.into_bytes())
}

/// Appends a message without a client id; returns its seq and JSON.
fn post(s: &mut RedisStore, room: &str, uid: &str, text: &str) -> (u64, Vec<u8>) {
    let (prefix, suffix) = parts(room, uid, text);
    match s.append(&rn(room), uid, None, &prefix, &suffix).expect("append") {
        Appended::Stored { seq, json } => (seq, json.to_vec()),
        dup => panic!("a message without an id was a duplicate: {dup:?}"),
    }
}

fn seqs(messages: &[natter::store::redis::Entry]) -> Vec<u64> {
    messages.iter().map(|e| e.seq).collect()
}

fn next(rx: &Receiver<Delivery>) -> Delivery {
    rx.recv_timeout(WAIT).expect("a delivery within the wait")
}

/// The next delivery that is not a status report.
fn next_data(rx: &Receiver<Delivery>) -> Delivery {
    loop {
        match next(rx) {
            Delivery::Status { .. } => continue,
            d => return d,
        }
    }
}

fn expect_msg(rx: &Receiver<Delivery>, room: &str, seq: u64) -> Vec<u8> {
    match next_data(rx) {
        Delivery::Msg { room: r, seq: s, json } if r.as_str() == room && s == seq => json.to_vec(),
        other => panic!("expected {room} #{seq}, got {other:?}"),
    }
}

fn expect_status(rx: &Receiver<Delivery>, link: Link, health: Health) {
    match next(rx) {
        Delivery::Status { link: l, health: h } if l == link && h == health => {}
        other => panic!("expected {link:?} {health:?}, got {other:?}"),
    }
}

fn expect_quiet(rx: &Receiver<Delivery>) {
    if let Ok(d) = rx.recv_timeout(QUIET) {
        panic!("expected nothing more, got {d:?}");
    }
}

/// Retries `f` while Redis is unavailable (it is coming back), up to the wait.
fn when_back<T>(mut f: impl FnMut() -> Result<T, natter::store::redis::RedisStoreError>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if e.is_unavailable() && Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("redis did not come back: {e}"),
        }
    }
}

/// A running reader or events thread with its channels.
struct Follower {
    watch: Sender<Watch>,
    rx: Receiver<Delivery>,
    handle: thread::JoinHandle<()>,
}

impl Follower {
    fn reader(redis: &RedisServer, opts: StoreOptions) -> Follower {
        Self::reader_at(&redis.url(), opts)
    }

    fn reader_at(url: &str, opts: StoreOptions) -> Follower {
        let (watch, watch_rx) = unbounded();
        let (tx, rx) = unbounded();
        let master = Master::open(url, Default::default()).expect("a redis URL");
        let handle = Reader::spawn(&master, opts, watch_rx, tx).expect("spawn the reader");
        Follower { watch, rx, handle }
    }

    fn events(redis: &RedisServer, opts: StoreOptions) -> Follower {
        let (watch, watch_rx) = unbounded();
        let (tx, rx) = unbounded();
        let master = Master::open(&redis.url(), Default::default()).expect("a redis URL");
        let handle = Events::spawn(&master, opts, watch_rx, tx).expect("spawn the events thread");
        Follower { watch, rx, handle }
    }

    fn start(&self, room: &str, after_seq: u64) {
        self.start_in(room, after_seq, None);
    }

    /// Watch `room` after `after_seq` of the history `epoch`.
    fn start_in(&self, room: &str, after_seq: u64, epoch: Option<String>) {
        self.watch.send(Watch::Start { room: rn(room), after_seq, epoch }).expect("watch");
    }

    fn stop(&self, room: &str) {
        self.watch.send(Watch::Stop { room: rn(room) }).expect("unwatch");
    }

    /// Hangs up the watch channel; the thread must end promptly.
    fn finish(self) {
        drop(self.watch);
        let deadline = Instant::now() + WAIT;
        while !self.handle.is_finished() {
            assert!(Instant::now() < deadline, "the thread did not end after its watch channel closed");
            thread::sleep(Duration::from_millis(20));
        }
        self.handle.join().expect("the thread did not panic");
    }
}

#[test]
fn seq_is_gapless_and_ordered_when_two_instances_append_at_once() {
    let redis = RedisServer::start();
    let per_instance = 200;
    let writers: Vec<_> = ["aaaa0001", "bbbb0002"]
        .into_iter()
        .map(|instance| {
            let mut s = store(&redis, instance);
            thread::spawn(move || {
                (0..per_instance).map(|i| post(&mut s, "lobby", instance, &format!("m{i}"))).collect()
            })
        })
        .collect();
    let mut all = Vec::new();
    for writer in writers {
        let mine: Vec<(u64, Vec<u8>)> = writer.join().expect("writer thread");
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0), "one instance's seqs rise");
        all.extend(mine);
    }
    all.sort();
    let got: Vec<u64> = all.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(got, (1..=2 * per_instance).collect::<Vec<u64>>(), "every seq once, no gap");

    let mut s = store(&redis, "cccc0003");
    let range = s.range(&rn("lobby"), 0, None, 1000).expect("range");
    assert!(range.complete);
    assert_eq!(range.head, 2 * per_instance);
    assert_eq!(seqs(&range.messages), got, "the stream holds them in seq order");
    for (entry, (seq, json)) in range.messages.iter().zip(&all) {
        assert_eq!((&entry.json[..], entry.seq), (&json[..], *seq), "the stream holds the JSON that was returned");
    }
    let (prefix, _) = parts("lobby", "x", "");
    assert!(range.messages[0].json.starts_with(&[&prefix[..], b"1,"].concat()));
    assert_eq!(s.head(&rn("lobby")).expect("head"), 2 * per_instance);
}

#[test]
fn a_duplicate_client_id_answers_the_original_seq_and_stores_nothing() {
    let redis = RedisServer::start();
    let (mut a, mut b) = (store(&redis, "aaaa0001"), store(&redis, "bbbb0002"));
    let (prefix, suffix) = parts("r", "u-al", "hi");
    let first = a.append(&rn("r"), "u-al", Some("c-1"), &prefix, &suffix).expect("append");
    let Appended::Stored { seq: 1, json } = first else { panic!("first post stored as 1, got {first:?}") };
    assert_eq!(json, [&prefix[..], b"1", &suffix[..]].concat());

    let (_, other_suffix) = parts("r", "u-al", "a retry with other text");
    assert_eq!(
        a.append(&rn("r"), "u-al", Some("c-1"), &prefix, &other_suffix).expect("retry"),
        Appended::Duplicate { seq: 1 }
    );
    assert_eq!(
        b.append(&rn("r"), "u-al", Some("c-1"), &prefix, &suffix).expect("retry on the other instance"),
        Appended::Duplicate { seq: 1 }
    );
    // The same id from another user, or in another room, is another message.
    assert!(matches!(b.append(&rn("r"), "u-bo", Some("c-1"), &prefix, &suffix), Ok(Appended::Stored { seq: 2, .. })));
    assert!(matches!(b.append(&rn("r2"), "u-al", Some("c-1"), &prefix, &suffix), Ok(Appended::Stored { seq: 1, .. })));
    // A uid/id split elsewhere must not collide ("u:x" + "y" vs "u" + "x:y").
    assert!(matches!(a.append(&rn("r"), "u:x", Some("y"), &prefix, &suffix), Ok(Appended::Stored { seq: 3, .. })));
    assert!(matches!(a.append(&rn("r"), "u", Some("x:y"), &prefix, &suffix), Ok(Appended::Stored { seq: 4, .. })));

    let range = a.range(&rn("r"), 0, None, 100).expect("range");
    assert_eq!(seqs(&range.messages), [1, 2, 3, 4], "no second entry for the duplicates");
    assert_eq!(redis.command("XLEN natter:room:r:stream"), ":4");
    assert!(redis.command("TTL natter:room:r:id:4:u-al:c-1").trim_start_matches(':').parse::<i64>().unwrap() > 3600);
}

#[test]
fn range_recent_and_complete_after_the_stream_was_trimmed() {
    let redis = RedisServer::start();
    let mut s = store_with(&redis, StoreOptions { stream_cap: 10, ..opts("aaaa0001") });
    for i in 0..1000 {
        post(&mut s, "r", "u-al", &format!("m{i}"));
    }
    let held: u64 = redis.command("XLEN natter:room:r:stream").trim_start_matches(':').parse().expect("XLEN");
    assert!((10..1000).contains(&held), "trimmed to about the cap, holds {held}");

    let from_start = s.range(&rn("r"), 0, None, 50).expect("range");
    assert!(!from_start.complete, "seq 1 is gone");
    assert_eq!(from_start.head, 1000);
    let first = from_start.messages[0].seq;
    assert!(first > 1);
    assert_eq!(seqs(&from_start.messages), (first..=1000).take(50).collect::<Vec<_>>());

    let tail = s.range(&rn("r"), 990, None, 100).expect("range");
    assert!(tail.complete);
    assert_eq!(seqs(&tail.messages), (991..=1000).collect::<Vec<_>>());
    assert_eq!(seqs(&s.range(&rn("r"), 990, Some(995), 100).expect("range").messages), [991, 992, 993, 994, 995]);
    assert_eq!(seqs(&s.range(&rn("r"), 990, None, 3).expect("range").messages), [991, 992, 993]);
    let caught_up = s.range(&rn("r"), 1000, None, 10).expect("range");
    assert!(caught_up.complete && caught_up.messages.is_empty());

    let recent = s.recent(&rn("r"), 5).expect("recent");
    assert_eq!(seqs(&recent.messages), [996, 997, 998, 999, 1000], "oldest first");
    assert_eq!(recent.head, 1000);
    assert!(recent.messages[4].json.ends_with(br#""text":"m999"}"#));

    let empty = s.range(&rn("nothing-here"), 0, None, 10).expect("range of an empty room");
    assert!(empty.complete && empty.messages.is_empty() && empty.head == 0);
    assert!(s.recent(&rn("nothing-here"), 10).expect("recent").messages.is_empty());
    assert_eq!(s.head(&rn("nothing-here")).expect("head"), 0);
}

#[test]
fn the_reader_delivers_in_order_and_follows_what_it_is_told_to_watch() {
    let redis = RedisServer::start();
    let mut w = store(&redis, "aaaa0001");
    for i in 1..=3 {
        post(&mut w, "b", "u-al", &format!("before {i}"));
    }
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    reader.start("a", 0);
    let posted: Vec<_> = (0..50).map(|i| post(&mut w, "a", "u-al", &format!("m{i}"))).collect();
    expect_status(&reader.rx, Link::Reader, Health::Available);
    for (seq, json) in posted {
        assert_eq!(expect_msg(&reader.rx, "a", seq), json, "delivered exactly as stored");
    }

    reader.start("b", 2);
    expect_msg(&reader.rx, "b", 3);
    post(&mut w, "b", "u-al", "live");
    expect_msg(&reader.rx, "b", 4);

    reader.stop("a");
    // Watch commands apply in order: once c's message arrives, "a" is no longer watched.
    reader.start("c", 0);
    post(&mut w, "c", "u-al", "barrier");
    expect_msg(&reader.rx, "c", 1);
    post(&mut w, "a", "u-al", "nobody watches this");
    post(&mut w, "b", "u-al", "still watched");
    expect_msg(&reader.rx, "b", 5);
    expect_quiet(&reader.rx);
    reader.finish();
}

/// The number in an integer reply (`:12`).
fn int_reply(reply: &str) -> u64 {
    reply.trim_start_matches(':').parse().expect("an integer reply")
}

/// A room's stream holds its order and the `msgs` hash the bodies, trimmed together;
/// an entry an earlier natter wrote with its body inside is still read and delivered.
#[test]
fn bodies_live_in_the_rooms_hash_trimmed_with_the_stream_and_inline_ones_still_read() {
    let redis = RedisServer::start();
    let old = r#"{"type":"msg","room":"r","seq":1,"text":"kept inline"}"#;
    assert_eq!(redis.command(&format!("XADD natter:room:r:stream 1-0 m '{old}'")), "$3\r\n1-0");
    redis.command("SET natter:room:r:seq 1");
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    reader.start("r", 0);
    assert_eq!(expect_msg(&reader.rx, "r", 1), old.as_bytes());

    let mut s = store_with(&redis, StoreOptions { stream_cap: 10, ..opts("aaaa0001") });
    let (seq, json) = post(&mut s, "r", "u-al", "new");
    assert_eq!((seq, expect_msg(&reader.rx, "r", 2)), (2, json.clone()));
    let range = s.range(&rn("r"), 0, None, 10).expect("range");
    let bodies: Vec<&[u8]> = range.messages.iter().map(|m| &m.json[..]).collect();
    assert_eq!(bodies, [old.as_bytes(), &json[..]]);
    let entry = redis.command("XRANGE natter:room:r:stream 2-0 2-0");
    assert!(!entry.contains("new"), "the stream entry holds no body: {entry}");
    assert!(redis.command("HGET natter:room:r:msgs 2").ends_with(&String::from_utf8(json).unwrap()));

    for i in 0..1000 {
        post(&mut s, "r", "u-al", &format!("m{i}"));
    }
    let held = int_reply(&redis.command("XLEN natter:room:r:stream"));
    assert!(held < 500, "the stream was trimmed: holds {held}");
    assert_eq!(int_reply(&redis.command("HLEN natter:room:r:msgs")), held, "a body for each entry, no other");
    reader.finish();
}

/// Every stored message is announced on the news stream (room, seq), in the order
/// it was stored: what the readers wait on.
#[test]
fn every_stored_message_is_announced_on_the_news_stream_in_order() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "aaaa0001");
    post(&mut s, "a", "u-al", "one");
    post(&mut s, "b", "u-al", "two");
    post(&mut s, "a", "u-al", "three");
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut con = client.get_connection().expect("connect");
    let news: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg("natter:news").arg("-").arg("+").query(&mut con).expect("XRANGE");
    let announced: Vec<Vec<String>> = news.into_iter().map(|(_, fields)| fields).collect();
    let want = |room: &str, seq: &str| ["r", room, "s", seq].map(String::from).to_vec();
    assert_eq!(announced, [want("a", "1"), want("b", "1"), want("a", "2")]);
}

/// A message no news announced (written by a natter from before the news stream, or
/// trimmed from it while the reader lagged) is still delivered: the reader's sweep.
#[test]
fn a_message_the_news_never_announced_is_delivered_by_the_sweep() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "aaaa0001");
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    reader.start("r", 0);
    post(&mut s, "r", "u-al", "announced");
    expect_msg(&reader.rx, "r", 1);
    // As an older natter appends: the entry and the counter, no news.
    let old = r#"{"type":"msg","room":"r","seq":2,"text":"unannounced"}"#;
    assert_eq!(redis.command(&format!("XADD natter:room:r:stream 2-0 m '{old}'")), "$3\r\n2-0");
    redis.command("SET natter:room:r:seq 2");
    assert_eq!(expect_msg(&reader.rx, "r", 2), old.as_bytes());
    expect_quiet(&reader.rx);
    reader.finish();
}

/// With many rooms watched, a message in one of them is read from that room's stream
/// alone: the reader blocks on the news, not on every watched stream (an `XREAD` over
/// 500 streams cost Redis 410 µs a call). `MONITOR` shows each `XREAD` the reader sends;
/// only its once-a-second sweep may name every room.
#[test]
fn the_reader_reads_only_the_rooms_with_news() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "aaaa0001");
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    for i in 0..50 {
        reader.start(&format!("r{i}"), 0);
    }
    post(&mut s, "r7", "u-al", "first");
    expect_msg(&reader.rx, "r7", 1);

    let mut monitor =
        TcpStream::connect(redis.url().trim_start_matches("redis://").trim_end_matches('/')).expect("connect");
    monitor.write_all(b"MONITOR\r\n").expect("MONITOR");
    monitor.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let started = Instant::now();
    for seq in 2..=41 {
        post(&mut s, "r7", "u-al", &format!("m{seq}"));
        expect_msg(&reader.rx, "r7", seq);
    }
    let secs = started.elapsed().as_secs();
    reader.finish();
    let mut seen = Vec::new();
    let mut buf = [0u8; 65536];
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        match monitor.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    let xreads: Vec<&str> = seen.lines().filter(|l| l.contains("\"XREAD\"")).collect();
    let wide = xreads.iter().filter(|l| l.matches(":stream\"").count() > 1).count() as u64;
    assert!(xreads.len() >= 40, "the reader read each message: {} XREADs", xreads.len());
    assert!(wide <= secs + 2, "{wide} of {} XREADs named several room streams in {secs} s", xreads.len());
}

/// An `edit` or `delete` event as the dispatcher builds it, split around its seq.
fn change_parts(kind: &str, of: u64, uid: &str, ts: u64, text: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let text = text.map(|t| format!(r#","text":"{t}""#)).unwrap_or_default();
    let prefix = format!(r#"{{"type":"{kind}","room":"r","seq":"#);
    (prefix.into_bytes(), format!(r#","of":{of},"ts":{ts},"user":"{uid}","uid":"{uid}"{text}}}"#).into_bytes())
}

fn change(s: &mut RedisStore, uid: &str, change: ChangeOf, text: Option<&str>) -> Result<Appended, Refused> {
    let (kind, ts) = match change {
        ChangeOf::Edit { ts, .. } => ("edit", ts),
        ChangeOf::Delete { .. } => ("delete", 7),
        ChangeOf::React { .. } => unreachable!("reactions are tested in tests/message_features.rs"),
    };
    let (prefix, suffix) = change_parts(kind, change.of(), uid, ts, text);
    s.change(&rn("r"), uid, None, &prefix, &suffix, &change).expect("change")
}

fn body(s: &mut RedisStore, seq: u64) -> Vec<u8> {
    s.range(&rn("r"), seq - 1, Some(seq), 1).expect("range").messages[0].json.to_vec()
}

/// The append script checks each change against the message as Redis holds it and
/// rewrites the body where it lives, as `edited`/`deleted` rewrite a copy; a deleted
/// text is in no key's bytes.
#[test]
fn changes_are_checked_and_rewrite_the_body_leaving_no_deleted_text() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "aaaa0001");
    let (_, original) = post(&mut s, "r", "u-al", "firstsecret");
    post(&mut s, "r", "u-bo", "not yours");
    let edit = ChangeOf::Edit { of: 1, ts: 5 };
    assert_eq!(change(&mut s, "u-bo", edit, Some("x")), Err(Refused::NotYours), "only the author edits");
    let by = |by_mod| ChangeOf::Delete { of: 1, by_mod };
    assert_eq!(change(&mut s, "u-bo", by(false), None), Err(Refused::NotYours));
    let Ok(Appended::Stored { seq: 3, json: event }) = change(&mut s, "u-al", edit, Some("secondsecret")) else {
        panic!("the author's edit is stored as 3")
    };
    assert_eq!(body(&mut s, 1), &edited(&original, &event, 5).unwrap()[..], "the script's rewrite is edited()'s");
    for of in [3, 99] {
        let e = change(&mut s, "u-al", ChangeOf::Edit { of, ts: 6 }, Some("x"));
        assert_eq!(e, Err(Refused::Missing), "an event, or nothing, is not a message");
    }
    let edit_event = body(&mut s, 3);
    assert!(matches!(change(&mut s, "u-bo", by(true), None), Ok(Appended::Stored { seq: 4, .. })), "a moderator");
    assert_eq!(body(&mut s, 1), &deleted(&edited(&original, &event, 5).unwrap()).unwrap()[..]);
    assert_eq!(body(&mut s, 3), &deleted(&edit_event).unwrap()[..], "its edit event lost its text too");
    assert_eq!(change(&mut s, "u-al", by(false), None), Err(Refused::Deleted));
    assert_eq!(change(&mut s, "u-al", ChangeOf::Edit { of: 1, ts: 8 }, Some("back")), Err(Refused::Deleted));
    assert_eq!(redis.command("HLEN natter:room:r:edits"), ":0", "nothing left to scrub");
    for gone in ["firstsecret", "secondsecret"] {
        assert_eq!(redis.keys_holding(gone), Vec::<String>::new(), "{gone} is in no key");
    }
    assert_eq!(redis.keys_holding("not yours"), ["natter:room:r:msgs"], "the check sees text that is there");
}

#[test]
fn the_reader_reports_a_gap_when_the_stream_was_trimmed_past_its_position() {
    let redis = RedisServer::start();
    let mut w = store_with(&redis, StoreOptions { stream_cap: 10, ..opts("aaaa0001") });
    for i in 0..500 {
        post(&mut w, "r", "u-al", &format!("m{i}"));
    }
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    reader.start("r", 0);
    let first = match next_data(&reader.rx) {
        Delivery::Gap { room, from: 1, to } if room.as_str() == "r" => to + 1,
        other => panic!("expected a gap from 1, got {other:?}"),
    };
    for seq in first..=500 {
        expect_msg(&reader.rx, "r", seq);
    }
    expect_quiet(&reader.rx);
    reader.finish();
}

#[test]
fn after_redis_restarts_the_reader_and_events_resume_without_loss_or_repeats() {
    let mut redis = RedisServer::start_persistent();
    let mut w = store(&redis, "aaaa0001");
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    let events = Follower::events(&redis, opts("bbbb0002"));
    reader.start("r", 0);
    events.start("r", 0);
    for i in 1..=20 {
        post(&mut w, "r", "u-al", &format!("m{i}"));
    }
    expect_status(&reader.rx, Link::Reader, Health::Available);
    for seq in 1..=20 {
        expect_msg(&reader.rx, "r", seq);
    }
    expect_status(&events.rx, Link::Events, Health::Available);

    redis.stop();
    let (prefix, suffix) = parts("r", "u-al", "during the outage");
    let started = Instant::now();
    let refused = w.append(&rn("r"), "u-al", Some("c-out"), &prefix, &suffix).expect_err("redis is down");
    assert!(refused.is_unavailable(), "an outage is Unavailable, got {refused:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "noticed fast");
    expect_status(&reader.rx, Link::Reader, Health::Unavailable);
    expect_status(&events.rx, Link::Events, Health::Unavailable);

    redis.restart();
    for i in 21..=40 {
        let (seq, _) = when_back(|| {
            let (prefix, suffix) = parts("r", "u-al", &format!("m{i}"));
            w.append(&rn("r"), "u-al", Some(&format!("c-{i}")), &prefix, &suffix).map(|a| match a {
                Appended::Stored { seq, json } => (seq, json),
                dup => panic!("not a duplicate: {dup:?}"),
            })
        });
        assert_eq!(seq, i, "the data survived the restart");
    }
    expect_status(&reader.rx, Link::Reader, Health::Available);
    for seq in 21..=40 {
        expect_msg(&reader.rx, "r", seq);
    }
    expect_quiet(&reader.rx);

    expect_status(&events.rx, Link::Events, Health::Available);
    let mut publisher = store(&redis, "aaaa0001");
    while publisher.publish(&rn("r"), br#"{"type":"typing"}"#).expect("publish") < 1 {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(next_data(&events.rx), Delivery::Event { origin, .. } if origin == "aaaa0001"));
    reader.finish();
    events.finish();
}

#[test]
fn presence_unions_instances_and_forgets_one_that_stops_refreshing() {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let mut a = store_with(&redis, StoreOptions { presence_ttl: ttl, ..opts("aaaa0001") });
    let mut b = store_with(&redis, StoreOptions { presence_ttl: ttl, ..opts("bbbb0002") });
    a.presence_set(&rn("r"), "u-alice", "alice").expect("set");
    a.presence_set(&rn("r"), "u-bob", "bob").expect("set");
    b.presence_set(&rn("r"), "u-bob", "bob").expect("set");
    b.presence_set(&rn("r"), "u-carol", "carol").expect("set");
    b.presence_set(&rn("r"), "u-dave", "dave").expect("set");
    b.presence_set(&rn("other"), "u-erin", "erin").expect("set");
    let names = |list: Vec<User>| list.into_iter().map(|u| u.name).collect::<Vec<_>>();
    assert_eq!(names(a.presence_list(&rn("r")).expect("list")), ["alice", "bob", "carol", "dave"]);

    b.presence_remove(&rn("r"), "u-carol").expect("remove");
    a.presence_set(&rn("r"), "u-alice", "alicia").expect("rename");
    let before = b.presence_list(&rn("r")).expect("list");
    assert_eq!(names(before.clone()), ["alicia", "bob", "dave"]);

    // b "crashes": it stops refreshing; a keeps refreshing at a third of the TTL.
    let crashed = Instant::now();
    let after = loop {
        a.presence_refresh().expect("refresh");
        let now = a.presence_list(&rn("r")).expect("list");
        if now.len() < before.len() {
            break now;
        }
        assert!(crashed.elapsed() < ttl * 4, "b's users are still listed after {:?}", crashed.elapsed());
        thread::sleep(ttl / 3);
    };
    assert!(crashed.elapsed() >= ttl / 2, "nothing vanished before the TTL ran out");
    assert_eq!(names(after.clone()), ["alicia", "bob"], "bob is still on a");
    let changes = presence_changes(&before, &after);
    assert_eq!(changes.left, [User { id: "u-dave".into(), name: "dave".into() }]);
    assert!(changes.arrived.is_empty());
    assert!(a.presence_list(&rn("other")).expect("list").is_empty());
    assert_eq!(redis.command("SMEMBERS natter:room:r:present"), "*1\r\n$8\r\naaaa0001", "the dead id was dropped");

    a.presence_clear().expect("clear");
    assert!(b.presence_list(&rn("r")).expect("list").is_empty());
}

#[test]
fn a_refresh_writes_back_presence_that_redis_lost() {
    let mut redis = RedisServer::start();
    let mut a = store(&redis, "aaaa0001");
    a.presence_set(&rn("r"), "u-alice", "alice").expect("set");
    redis.restart(); // in memory only: everything is gone
    assert!(when_back(|| a.presence_list(&rn("r"))).is_empty());
    a.presence_refresh().expect("refresh");
    assert_eq!(a.presence_list(&rn("r")).expect("list"), [User { id: "u-alice".into(), name: "alice".into() }]);
}

#[test]
fn events_reach_the_other_instance_with_their_origin_and_never_their_own() {
    let redis = RedisServer::start();
    let (mut a, mut b) = (store(&redis, "aaaa0001"), store(&redis, "bbbb0002"));
    let (on_a, on_b) = (Follower::events(&redis, opts("aaaa0001")), Follower::events(&redis, opts("bbbb0002")));
    on_a.start("lobby", 0);
    on_b.start("lobby", 0);
    let typing = br#"{"type":"typing","room":"lobby","user":{"id":"u-al","name":"al"}}"#;
    // PUBLISH answers how many subscribers got it: wait until both threads listen.
    while a.publish(&rn("lobby"), typing).expect("publish") < 2 {
        thread::sleep(Duration::from_millis(20));
    }
    match next_data(&on_b.rx) {
        Delivery::Event { room, json, origin } => {
            assert_eq!((room.as_str(), &json[..], origin.as_str()), ("lobby", &typing[..], "aaaa0001"));
        }
        other => panic!("expected a's event, got {other:?}"),
    }
    b.publish(&rn("lobby"), b"{\"from\":\"b\"}").expect("publish");
    match next_data(&on_a.rx) {
        Delivery::Event { origin, json, .. } => {
            assert_eq!((origin.as_str(), &json[..]), ("bbbb0002", &b"{\"from\":\"b\"}"[..]))
        }
        other => panic!("a expected b's event (never its own), got {other:?}"),
    }
    expect_quiet(&on_a.rx);

    on_b.stop("lobby");
    while a.publish(&rn("lobby"), b"{}").expect("publish") > 1 {
        thread::sleep(Duration::from_millis(20));
    }
    while on_b.rx.recv_timeout(Duration::from_millis(50)).is_ok() {}
    a.publish(&rn("lobby"), b"{}").expect("publish");
    a.publish(&rn("elsewhere"), b"{}").expect("publish");
    expect_quiet(&on_b.rx);
    on_a.finish();
    on_b.finish();
}

#[test]
fn an_unreachable_redis_is_unavailable_within_the_timeouts() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let started = Instant::now();
    match RedisStore::connect(&url, opts("aaaa0001")) {
        Err(e) => assert!(e.is_unavailable(), "refused is Unavailable, got {e:?}"),
        Ok(_) => panic!("connected to a stopped redis"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(RedisStore::connect("not a url", opts("aaaa0001")).is_err_and(|e| !e.is_unavailable()));
}

#[test]
fn a_lost_seq_counter_goes_on_after_the_streams_last_entry() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "aaaa0001");
    for i in 1..=3 {
        post(&mut s, "r", "u-al", &format!("m{i}"));
    }
    assert_eq!(redis.command("DEL natter:room:r:seq"), ":1");
    assert_eq!(post(&mut s, "r", "u-al", "after the loss").0, 4, "XADD would refuse 1-0 below 3-0");
    assert_eq!(s.head(&rn("r")).expect("head"), 4);
}

#[test]
fn the_first_call_after_redis_restarts_succeeds() {
    let mut redis = RedisServer::start_persistent();
    let mut s = store(&redis, "aaaa0001");
    assert_eq!(post(&mut s, "r", "u-al", "before").0, 1);
    // Redis goes away and comes back while this store's connection sits idle: the
    // connection is dead, and nothing has noticed yet.
    redis.restart();
    let (prefix, suffix) = parts("r", "u-al", "with an id");
    let first =
        s.append(&rn("r"), "u-al", Some("c-after"), &prefix, &suffix).expect("the first append after the restart");
    assert!(matches!(first, Appended::Stored { seq: 2, .. }), "{first:?}");
    redis.restart();
    assert_eq!(post(&mut s, "r", "u-al", "without an id").0, 3, "an append without an id is retried too");
    redis.restart();
    assert_eq!(s.head(&rn("r")).expect("a read after the restart"), 3);
    assert_eq!(seqs(&s.range(&rn("r"), 0, None, 10).expect("range").messages), [1, 2, 3], "each stored once");
}

/// A TCP relay between a store (or reader) and Redis that the test can disturb: it can
/// let one request through and cut the connection instead of passing the reply back
/// (the command ran, the caller never hears of it), and it can hold new connections
/// back (they wait in the listen queue) until released.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
}

impl Relay {
    fn start(redis: &RedisServer) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let (cut, hold) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (target, armed, held) = (redis.port, cut.clone(), hold.clone());
        thread::spawn(move || loop {
            while held.load(SeqCst) {
                thread::sleep(Duration::from_millis(5));
            }
            let Ok((client, _)) = listener.accept() else { return };
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else { continue };
            Self::pipe(client, upstream, armed.clone());
        });
        Relay { port, cut, hold }
    }

    /// Copies bytes both ways until either side closes (then closes both).
    fn pipe(mut client: TcpStream, mut upstream: TcpStream, cut: Arc<AtomicBool>) {
        let (mut c2, mut u2) = (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
        thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut u2);
            let _ = u2.shutdown(Shutdown::Both);
        });
        thread::spawn(move || {
            let mut buf = [0u8; 64 * 1024];
            while let Ok(n @ 1..) = upstream.read(&mut buf) {
                if cut.swap(false, SeqCst) || client.write_all(&buf[..n]).is_err() {
                    break; // a cut reply is lost with the connection
                }
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        });
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn cut_next_reply(&self) {
        self.cut.store(true, SeqCst);
    }

    /// New connections wait (connected, unanswered) until [`Relay::release`].
    fn hold(&self) {
        self.hold.store(true, SeqCst);
    }

    fn release(&self) {
        self.hold.store(false, SeqCst);
    }
}

#[test]
fn an_append_whose_reply_was_lost_is_retried_and_stored_once() {
    let redis = RedisServer::start();
    let relay = Relay::start(&redis);
    let mut s = RedisStore::connect(&relay.url(), opts("aaaa0001")).expect("connect through the relay");
    assert_eq!(post(&mut s, "r", "u-al", "m1").0, 1);
    relay.cut_next_reply();
    let (prefix, suffix) = parts("r", "u-al", "m2");
    let with_id = s.append(&rn("r"), "u-al", Some("c-2"), &prefix, &suffix).expect("retried on a new connection");
    assert!(
        matches!(with_id, Appended::Stored { seq: 2, .. }),
        "the first attempt's seq, not a duplicate: {with_id:?}"
    );
    relay.cut_next_reply();
    let (seq, json) = post(&mut s, "r", "u-al", "m3");
    assert_eq!(seq, 3, "without an id, the retry finds the first attempt too");
    let range = s.range(&rn("r"), 0, None, 10).expect("range");
    assert_eq!(seqs(&range.messages), [1, 2, 3], "each stored once");
    assert_eq!(range.messages[2].json, json);
    // A genuine repeat of the id is still a duplicate.
    assert_eq!(
        s.append(&rn("r"), "u-al", Some("c-2"), &prefix, &suffix).expect("repeat"),
        Appended::Duplicate { seq: 2 }
    );
}

#[test]
fn a_room_gets_one_epoch_with_its_first_message_and_a_new_one_when_redis_loses_it() {
    let mut redis = RedisServer::start(); // in memory: a restart loses everything
    let (mut a, mut b) = (store(&redis, "aaaa0001"), store(&redis, "bbbb0002"));
    assert_eq!(a.recent(&rn("r"), 10).expect("recent").epoch, None, "no message, no epoch");
    post(&mut a, "r", "u-al", "first");
    let epoch = b.recent(&rn("r"), 10).expect("recent").epoch.expect("the first message gave the room an epoch");
    assert!(epoch.len() == 16 && epoch.bytes().all(|c| c.is_ascii_hexdigit()), "{epoch}");
    post(&mut b, "r", "u-bo", "second, from the other instance");
    assert_eq!(a.range(&rn("r"), 0, None, 10).expect("range").epoch.as_ref(), Some(&epoch), "one epoch for both");
    post(&mut a, "other", "u-al", "another room");
    assert_ne!(a.recent(&rn("other"), 1).expect("recent").epoch.as_ref(), Some(&epoch), "an epoch per room");

    redis.restart();
    let lost = when_back(|| a.recent(&rn("r"), 10));
    assert_eq!((lost.head, lost.epoch), (0, None));
    assert_eq!(post(&mut b, "r", "u-bo", "after the loss").0, 1);
    let renewed = a.recent(&rn("r"), 10).expect("recent").epoch.expect("a new epoch");
    assert_ne!(renewed, epoch);
}

#[test]
fn the_reader_reports_a_room_whose_history_redis_lost_and_follows_the_new_one() {
    let mut redis = RedisServer::start(); // in memory
    let mut w = store(&redis, "aaaa0001");
    for i in 1..=3 {
        post(&mut w, "r", "u-al", &format!("m{i}"));
    }
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    reader.start_in("r", 3, w.recent(&rn("r"), 1).expect("recent").epoch);
    post(&mut w, "r", "u-al", "m4");
    expect_msg(&reader.rx, "r", 4);
    redis.restart(); // the room is back at seq 0
    match next_data(&reader.rx) {
        Delivery::Reset { room, head: 0 } if room.as_str() == "r" => {}
        other => panic!("expected r's reset at 0, got {other:?}"),
    }
    assert_eq!(when_back(|| Ok(post(&mut w, "r", "u-al", "new"))).0, 1);
    expect_msg(&reader.rx, "r", 1);
    expect_quiet(&reader.rx);
    reader.finish();
}

#[test]
fn the_reader_notices_a_new_epoch_even_when_its_seqs_passed_the_old_ones() {
    let mut redis = RedisServer::start(); // in memory
    let relay = Relay::start(&redis);
    let mut w = store(&redis, "aaaa0001");
    let reader = Follower::reader_at(&relay.url(), opts("bbbb0002"));
    reader.start("r", 0);
    // Connected (and the room checked) before its first message: the reader learns the
    // epoch from the messages it delivers.
    expect_status(&reader.rx, Link::Reader, Health::Available);
    for seq in 1..=2 {
        post(&mut w, "r", "u-al", "old");
        expect_msg(&reader.rx, "r", seq);
    }
    relay.hold(); // the reader will not get back in until released
    redis.restart();
    for i in 1..=5 {
        assert_eq!(when_back(|| Ok(post(&mut w, "r", "u-al", &format!("new {i}")))).0, i);
    }
    relay.release();
    match next_data(&reader.rx) {
        Delivery::Reset { room, head: 5 } if room.as_str() == "r" => {}
        other => panic!("expected r's reset at 5 (seq 5 is past the old 2, the epoch is not), got {other:?}"),
    }
    post(&mut w, "r", "u-al", "live");
    expect_msg(&reader.rx, "r", 6);
    reader.finish();
}

/// Makes room `r` look as a replica promoted without its newest appends does: the
/// messages after `keep` are gone (order, bodies, counter), its epoch is the same.
fn lose_newest(redis: &RedisServer, keep: u64, head: u64) {
    for seq in keep + 1..=head {
        redis.command(&format!("XDEL natter:room:r:stream {seq}-0"));
        redis.command(&format!("HDEL natter:room:r:msgs {seq}"));
    }
    redis.command(&format!("XSETID natter:room:r:stream {keep}-0"));
    redis.command(&format!("SET natter:room:r:seq {keep}"));
}

fn epoch_of(redis: &RedisServer) -> String {
    let reply = redis.command("GET natter:room:r:epoch");
    reply.lines().nth(1).expect("the room has an epoch").to_owned()
}

#[test]
fn an_append_that_finds_the_history_behind_what_it_acked_starts_a_new_epoch() {
    let redis = RedisServer::start();
    let (mut a, mut b) = (store(&redis, "aaaa0001"), store(&redis, "bbbb0002"));
    for i in 1..=5 {
        post(&mut a, "r", "u-al", &format!("m{i}"));
    }
    let old = epoch_of(&redis);
    lose_newest(&redis, 3, 5);
    // An instance that never saw seqs 4 and 5 has nothing to measure against...
    assert_eq!(post(&mut b, "r", "u-bo", "from b").0, 4);
    assert_eq!(epoch_of(&redis), old, "b knew of no lost seq");
    // ...but the one that was acked 5 of this epoch will not be handed 5 in it again.
    assert_eq!(post(&mut a, "r", "u-al", "from a").0, 5);
    let new = epoch_of(&redis);
    assert_ne!(new, old, "a new epoch starts where the history went back");
    let entry = redis.command("XRANGE natter:room:r:stream 5-0 5-0");
    assert!(entry.contains(&new), "the epoch's first entry announces it: {entry}");
    assert_eq!(post(&mut a, "r", "u-al", "next").0, 6);
    assert_eq!(epoch_of(&redis), new, "one new epoch, not one per append");
    let next = redis.command("XRANGE natter:room:r:stream 6-0 6-0");
    assert!(!next.contains(&new), "only the first entry carries it: {next}");
}

#[test]
fn a_reader_that_delivered_seqs_the_history_no_longer_holds_starts_a_new_epoch() {
    let redis = RedisServer::start();
    let mut w = store(&redis, "aaaa0001");
    let reader = Follower::reader(&redis, opts("bbbb0002"));
    reader.start("r", 0);
    for seq in 1..=5 {
        post(&mut w, "r", "u-al", "old");
        expect_msg(&reader.rx, "r", seq);
    }
    let old = epoch_of(&redis);
    lose_newest(&redis, 3, 5);
    redis.command("CLIENT KILL TYPE normal"); // what a failover does to every connection
    match next_data(&reader.rx) {
        Delivery::Reset { room, head: 3 } if room.as_str() == "r" => {}
        other => panic!("expected r's reset at 3, got {other:?}"),
    }
    let new = epoch_of(&redis);
    assert_ne!(new, old, "the reader started a new epoch for the lost seqs");
    let mut other = store(&redis, "cccc0003"); // an instance that knew nothing of 4 and 5
    assert_eq!(post(&mut other, "r", "u-cy", "new").0, 4);
    expect_msg(&reader.rx, "r", 4); // the new epoch's first entry: no second reset
    expect_quiet(&reader.rx);
    assert_eq!(epoch_of(&redis), new);
    reader.finish();
}

fn page_seqs(page: &Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.seq).collect()
}

/// A store whose streams keep about `cap` entries, with `n` messages posted to room
/// `r`, message `i` saying `{text} {i}`.
fn store_with_messages(redis: &RedisServer, cap: usize, n: u64, text: &str) -> RedisStore {
    let mut s = store_with(redis, StoreOptions { stream_cap: cap, ..opts("aaaa0001") });
    for i in 1..=n {
        post(&mut s, "r", "u-al", &format!("{text} {i}"));
    }
    s
}

#[test]
fn scroll_back_pages_come_from_the_stream_and_end_at_its_oldest_entry() {
    let redis = RedisServer::start();
    let mut s = store_with_messages(&redis, 10, 1000, "m");
    let before =
        |s: &mut RedisStore, before, limit| s.query(&Query::Before { room: rn("r"), before, limit }).expect("query");
    let page = before(&mut s, 1001, 5);
    assert_eq!((page_seqs(&page), page.complete), ((996..=1000).collect(), false), "oldest first");
    assert!(page.messages[4].json.ends_with(br#""text":"m 1000"}"#));
    assert_eq!(page_seqs(&before(&mut s, 998, 2)), [996, 997]);
    let oldest = s.range(&rn("r"), 0, None, 1).expect("range").messages[0].seq;
    let last = before(&mut s, oldest + 3, 200);
    assert_eq!(
        (page_seqs(&last), last.complete),
        (vec![oldest, oldest + 1, oldest + 2], true),
        "the trimmed part is gone"
    );
    assert!(before(&mut s, oldest, 10).messages.is_empty() && before(&mut s, 1, 10).complete);
    assert!(before(&mut s, 5, 10).complete, "all trimmed: nothing older is held");
    let after = s.query(&Query::After { room: rn("r"), since: 990, upto: 995, limit: 3 }).expect("query");
    assert_eq!((page_seqs(&after), after.complete), (vec![993, 994, 995], false), "the newest of the range");
    let empty = s.query(&Query::Before { room: rn("nothing-here"), before: 100, limit: 10 }).expect("query");
    assert!(empty.messages.is_empty() && empty.complete);
}

#[test]
fn search_scans_the_stream_newest_first_and_matches_as_fts5_does() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "aaaa0001");
    let texts = ["Hello world", "你好，世界", "中文聊天记录", "hello again", "Grüße aus Köln", "nothing"];
    for t in texts {
        post(&mut s, "s", "u-al", t);
    }
    for i in 0..1200 {
        post(&mut s, "s", "u-al", &format!("filler {i}")); // more than two scan chunks
    }
    let search = |s: &mut RedisStore, q: &str, before: u64, limit: usize| {
        let page = s.query(&Query::Search { room: rn("s"), q: q.into(), before, limit }).expect("search");
        let found: Vec<(u64, String)> = page
            .messages
            .iter()
            .map(|m| {
                let v: serde_json::Value = serde_json::from_slice(&m.json).expect("stored JSON");
                (m.seq, v["text"].as_str().expect("text").to_owned())
            })
            .collect();
        (found, page.complete)
    };
    let texts_of = |(found, _): (Vec<(u64, String)>, bool)| found.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
    let all = u64::MAX;
    assert_eq!(texts_of(search(&mut s, "hello", all, 50)), ["hello again", "Hello world"], "newest first, any case");
    assert_eq!(texts_of(search(&mut s, "世", all, 50)), ["你好，世界"]);
    assert!(texts_of(search(&mut s, "聊天", all, 50)).is_empty());
    assert_eq!(texts_of(search(&mut s, "koln GRÜ", all, 50)), ["Grüße aus Köln"]);
    assert_eq!(texts_of(search(&mut s, "(\"hello* -again", all, 50)), ["hello again"], "no syntax");
    let (first, complete) = search(&mut s, "hello", all, 1);
    assert_eq!((first.len(), complete), (1, false));
    let (older, complete) = search(&mut s, "hello", first[0].0, 1);
    assert_eq!((older[0].1.as_str(), complete), ("Hello world", true));
    let (fillers, complete) = search(&mut s, "filler", all, 200);
    assert_eq!((fillers.len(), fillers[0].0, complete), (200, 1206, false));
    assert_eq!(search(&mut s, "filler 7", 1206, 200).0.len(), 111, "7, 70-79, 700-799");
    assert_eq!(search(&mut s, "\" * - (", all, 10), (Vec::new(), true));
}

#[test]
fn search_finds_only_what_the_stream_still_holds() {
    let redis = RedisServer::start();
    let mut s = store_with_messages(&redis, 100, 1000, "needle");
    let page =
        s.query(&Query::Search { room: rn("r"), q: "needle".into(), before: u64::MAX, limit: 200 }).expect("search");
    let held: usize = redis.command("XLEN natter:room:r:stream").trim_start_matches(':').parse().expect("XLEN");
    assert_eq!((page.messages.len(), page.complete), (held, true), "every retained match, and the end of what is held");
}

/// A read-only room's fact is set with its moderator's event, and the append script
/// refuses a non-moderator's post while it holds (whichever instance posts), takes a
/// moderator's, and takes everyone's again once it is lifted.
#[test]
fn the_append_script_refuses_non_moderators_posts_in_a_read_only_room() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "i1");
    let (prefix, suffix) = parts("r", "u-mod", "");
    let event = |s: &mut RedisStore, value: &str| {
        s.moderate(&rn("r"), "u-mod", (&prefix, &suffix), ("ro", value)).expect("moderate");
    };
    let (p, x) = parts("r", "u-al", "hello");
    assert!(s.post(&rn("r"), "u-al", None, (&p, &x), false).expect("post").is_ok());
    event(&mut s, "1");
    assert!(s.access(&rn("r"), "u-al").expect("access").read_only);
    assert_eq!(s.post(&rn("r"), "u-al", None, (&p, &x), false).expect("post"), Err(Refused::ReadOnly));
    assert!(s.post(&rn("r"), "u-mod", None, (&p, &x), true).expect("post").is_ok(), "a moderator posts");
    event(&mut s, "");
    assert!(s.post(&rn("r"), "u-al", None, (&p, &x), false).expect("post").is_ok(), "writable again");
}

/// Posts pipelined in one round trip (`post_many`, what `redis-io` sends for the posts a
/// dispatcher batch queued) are stored in their order and answered each as `post`
/// answers it: stored, a duplicate id, refused by a read-only room. A Redis that lost
/// its scripts (restarted, `SCRIPT FLUSH`) gets them again without losing a post.
#[test]
fn pipelined_posts_are_stored_in_order_and_answered_each_as_alone() {
    let redis = RedisServer::start();
    let mut s = store(&redis, "i1");
    let (mp, mx) = parts("ro", "u-mod", "");
    s.moderate(&rn("ro"), "u-mod", (&mp, &mx), ("ro", "1")).expect("make `ro` read-only");
    let (a, ax) = parts("a", "u-al", "one");
    let (b, bx) = parts("b", "u-al", "two");
    let (r, rx) = parts("ro", "u-al", "refused");
    let post =
        |room, prefix, suffix, id| ClientPost { room, uid: "u-al", client_id: id, prefix, suffix, by_mod: false };
    let (room_a, room_b, room_ro) = (rn("a"), rn("b"), rn("ro"));
    redis.command("SCRIPT FLUSH");
    let answers = s
        .post_many(&[
            post(&room_a, &a, &ax, Some("c-1")),
            post(&room_b, &b, &bx, None),
            post(&room_a, &a, &ax, Some("c-1")),
            post(&room_ro, &r, &rx, None),
            post(&room_a, &a, &ax, Some("c-2")),
        ])
        .expect("one round trip");
    let answers: Vec<_> = answers.into_iter().map(|a| a.expect("each answered")).collect();
    assert!(matches!(answers[0], Ok(Appended::Stored { seq: 1, .. })), "{answers:?}");
    assert!(matches!(answers[1], Ok(Appended::Stored { seq: 1, .. })), "{answers:?}");
    assert_eq!(answers[2], Ok(Appended::Duplicate { seq: 1 }));
    assert_eq!(answers[3], Err(Refused::ReadOnly));
    assert!(matches!(answers[4], Ok(Appended::Stored { seq: 2, .. })), "{answers:?}");
    let Ok(Appended::Stored { json, .. }) = &answers[4] else { unreachable!() };
    assert_eq!(json[..], [&a[..], b"2", &ax[..]].concat());
    assert_eq!(seqs(&s.range(&room_a, 0, None, 10).expect("range").messages), [1, 2]);
    assert_eq!(redis.command("XLEN natter:room:ro:stream"), ":1", "only the moderator's event");
}
