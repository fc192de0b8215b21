//! The dispatcher's rules, checked by driving [`Dispatcher::handle`] with commands and
//! reading the frames it stages, without writer threads. Each `Conn` wraps one end of
//! a loopback pair; only the answers the dispatcher writes at once (store-answered
//! scroll-back pages) reach it, read by [`Harness::read`].

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use serde_json::{json, Value};

use super::scrollback::ReadFor;
use super::{Backend, Command, Dispatcher};
use crate::auth::Identity;
use crate::config::Config;
use crate::delivery::fanout::Out;
use crate::delivery::outbox::{Conn, ConnId};
use crate::metrics::Metrics;
use crate::protocol::{parse_client, wire, ParseLimits};
use crate::store::sqlite::reader::{Answer, Readers};
use crate::store::sqlite::SqliteStore;

struct Harness {
    d: Dispatcher,
    listener: TcpListener,
    /// Both ends of every pair, kept open for the test's length.
    sockets: Vec<(TcpStream, TcpStream)>,
    next_id: ConnId,
    /// Answers of the store's reader threads, handed to the dispatcher by `pump`.
    answers: crossbeam_channel::Receiver<Answer<ReadFor>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(tweak: impl FnOnce(&mut Config)) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cfg = Config { data_dir: dir.path().to_owned(), ..Config::default() };
        tweak(&mut cfg);
        let (store, loaded) = SqliteStore::open(&cfg.data_dir, cfg.fsync, cfg.history_per_room).expect("store");
        let (tx, answers) = crossbeam_channel::unbounded();
        let readers = Readers::start(store.path(), 1, move |a| {
            let _ = tx.send(a);
        })
        .expect("readers");
        let backend = Backend::Local(super::Local { store, readers });
        let d = Dispatcher::new(Arc::new(cfg), Arc::new(Metrics::default()), backend, loaded);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Harness { d, listener, sockets: Vec::new(), next_id: 1, answers, _dir: dir }
    }

    /// Registers a connection for user `uid` shown as `name`.
    fn connect(&mut self, uid: &str, name: &str, can_rename: bool) -> ConnId {
        let client = TcpStream::connect(self.listener.local_addr().unwrap()).expect("connect");
        let (server, peer) = self.listener.accept().expect("accept");
        let id = self.next_id;
        self.next_id += 1;
        let conn = Arc::new(Conn::new(id, server.try_clone().unwrap(), peer));
        self.sockets.push((server, client));
        let user = Identity { id: uid.into(), name: name.into(), can_rename, access: Default::default() };
        self.d.handle(Command::Register { conn, user });
        id
    }

    fn send(&mut self, conn: ConnId, msg: Value) {
        let msg = parse_client(&msg.to_string(), ParseLimits { max_text_chars: 2000 }).expect("a valid message");
        self.d.handle(Command::Client { conn, msg });
    }

    /// Waits for one answer of the store's readers and lets the dispatcher handle it.
    fn pump(&mut self) {
        let answer = self.answers.recv_timeout(std::time::Duration::from_secs(10)).expect("a reader answers");
        self.d.handle(Command::Store(answer));
    }

    /// The next frame written straight to `conn`'s socket, as JSON (server frames are
    /// unmasked: a 2-byte head, then a 16- or 64-bit length when the 7 bits say so).
    fn read(&mut self, conn: ConnId) -> Value {
        let client = &mut self.sockets[(conn - 1) as usize].1;
        client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 2];
        client.read_exact(&mut head).expect("a frame on the socket");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                client.read_exact(&mut b).unwrap();
                usize::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                client.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => usize::from(n),
        };
        let mut payload = vec![0u8; len];
        client.read_exact(&mut payload).unwrap();
        serde_json::from_slice(&payload).expect("a JSON frame")
    }

    /// Commits the batch and takes every frame it delivers, as JSON, per receiving
    /// connection, in staging order.
    fn take(&mut self) -> Frames {
        let mut frames = Frames(Vec::new());
        self.d.commit_and_deliver();
        for out in std::mem::take(&mut self.d.delivered) {
            match out {
                Out::One(conn, frame) | Out::Answer(conn, frame) => frames.0.push((conn.id, json_of(&frame))),
                Out::Room { members, except, frame, .. } => {
                    let mut ids: Vec<ConnId> = members.iter().map(|c| c.id).filter(|id| Some(*id) != except).collect();
                    ids.sort_unstable();
                    frames.0.extend(ids.into_iter().map(|id| (id, json_of(&frame))));
                }
            }
        }
        frames
    }
}

fn json_of(frame: &wire::Frame) -> Value {
    serde_json::from_slice(&wire::payload(frame)).expect("staged frames are JSON")
}

struct Frames(Vec<(ConnId, Value)>);

impl Frames {
    fn to(&self, conn: ConnId) -> Vec<&Value> {
        self.0.iter().filter(|(id, _)| *id == conn).map(|(_, v)| v).collect()
    }
    fn types_to(&self, conn: ConnId) -> Vec<&str> {
        self.to(conn).iter().map(|v| v["type"].as_str().unwrap_or("?")).collect()
    }
}

fn join(h: &mut Harness, conn: ConnId, room: &str) {
    h.send(conn, json!({"type": "join", "room": room}));
}

/// Users `u-a` and `u-b`, each with one connection in room `r`, nothing staged.
fn two_in_room() -> (Harness, ConnId, ConnId) {
    let mut h = Harness::new(|_| {});
    let a = h.connect("u-a", "a", true);
    let b = h.connect("u-b", "b", true);
    join(&mut h, a, "r");
    join(&mut h, b, "r");
    h.take();
    (h, a, b)
}

#[test]
fn posts_get_gapless_seqs_per_room_and_an_ack_before_nothing_else() {
    let mut h = Harness::new(|_| {});
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r1");
    join(&mut h, a, "r2");
    h.take();
    for (room, id) in [("r1", "x1"), ("r1", "x2"), ("r2", "x3"), ("r1", "x4")] {
        h.send(a, json!({"type": "msg", "room": room, "text": "hi", "id": id}));
    }
    let frames = h.take();
    let acks: Vec<(String, u64)> = frames
        .to(a)
        .iter()
        .filter(|v| v["type"] == "ack")
        .map(|v| (v["room"].as_str().unwrap().to_owned(), v["seq"].as_u64().unwrap()))
        .collect();
    let expected = [("r1", 1), ("r1", 2), ("r2", 1), ("r1", 3)].map(|(r, s)| (r.to_owned(), s));
    assert_eq!(acks, expected);
    // Each ack precedes its own message.
    assert_eq!(frames.types_to(a), ["ack", "msg", "ack", "msg", "ack", "msg", "ack", "msg"]);
}

#[test]
fn a_repeated_id_is_acked_as_a_duplicate_and_never_broadcast_again() {
    let (mut h, a, b) = two_in_room();
    h.send(a, json!({"type": "msg", "room": "r", "text": "once", "id": "m1"}));
    h.send(a, json!({"type": "msg", "room": "r", "text": "once", "id": "m1"}));
    let frames = h.take();
    assert_eq!(frames.types_to(b), ["msg"], "b sees the message once");
    let acks: Vec<_> = frames
        .to(a)
        .into_iter()
        .filter(|v| v["type"] == "ack")
        .map(|v| (v["seq"].as_u64(), v["dup"].as_bool()))
        .collect();
    assert_eq!(acks, [(Some(1), Some(false)), (Some(1), Some(true))]);
}

#[test]
fn the_same_id_from_another_user_is_a_new_message() {
    let (mut h, a, b) = two_in_room();
    h.send(a, json!({"type": "msg", "room": "r", "text": "1", "id": "same"}));
    h.send(b, json!({"type": "msg", "room": "r", "text": "2", "id": "same"}));
    let frames = h.take();
    let msgs: Vec<u64> =
        frames.to(a).iter().filter(|v| v["type"] == "msg").map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(msgs, [1, 2]);
}

#[test]
fn posting_to_a_room_not_joined_is_an_error_and_reaches_nobody() {
    let mut h = Harness::new(|_| {});
    let a = h.connect("u-a", "a", true);
    let b = h.connect("u-b", "b", true);
    join(&mut h, b, "r");
    h.take();
    h.send(a, json!({"type": "msg", "room": "r", "text": "sneak", "id": "s1"}));
    let frames = h.take();
    assert_eq!(frames.types_to(b), Vec::<&str>::new());
    let errors = frames.to(a);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["code"], "not_joined");
    assert_eq!(errors[0]["ref"], "s1");
}

#[test]
fn a_join_answers_joined_then_the_history_after_since() {
    let mut h = Harness::new(|_| {});
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r");
    for i in 0..5 {
        h.send(a, json!({"type": "msg", "room": "r", "text": format!("m{i}")}));
    }
    h.take();
    let b = h.connect("u-b", "b", true);
    h.send(b, json!({"type": "join", "room": "r", "since": 3}));
    let frames = h.take();
    let to_b = frames.to(b);
    assert_eq!(frames.types_to(b), ["joined", "history"]);
    assert_eq!(to_b[0]["head"], 5);
    let seqs: Vec<u64> = to_b[1]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [4, 5]);
    assert_eq!(to_b[1]["complete"], true);
}

#[test]
fn presence_is_announced_once_per_user_not_per_connection() {
    let mut h = Harness::new(|_| {});
    let watcher = h.connect("u-w", "w", true);
    join(&mut h, watcher, "r");
    let a1 = h.connect("u-a", "a", true);
    let a2 = h.connect("u-a", "a", true);
    h.take();
    join(&mut h, a1, "r");
    join(&mut h, a2, "r");
    let system: Vec<String> = h
        .take()
        .to(watcher)
        .iter()
        .filter(|v| v["type"] == "system")
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(system, ["join"], "the second device is not a second arrival");
    h.send(a1, json!({"type": "leave", "room": "r"}));
    assert!(h.take().to(watcher).is_empty(), "a1 left but a2 is still there");
    h.d.handle(Command::Gone { conn: a2 });
    let frames = h.take();
    let left: Vec<&Value> = frames.to(watcher).into_iter().filter(|v| v["type"] == "system").collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["event"], "leave");
    assert_eq!(left[0]["user"]["id"], "u-a");
}

#[test]
fn typing_reaches_the_others_but_not_the_typist() {
    let (mut h, a, b) = two_in_room();
    h.send(a, json!({"type": "typing", "room": "r"}));
    let frames = h.take();
    assert_eq!(frames.types_to(b), ["typing"]);
    assert!(frames.to(a).is_empty());
}

#[test]
fn rooms_per_connection_are_limited() {
    let mut h = Harness::new(|c| c.max_rooms_per_conn = 2);
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r1");
    join(&mut h, a, "r2");
    h.take();
    join(&mut h, a, "r3");
    let frames = h.take();
    let to_a = frames.to(a);
    assert_eq!(to_a.len(), 1);
    assert_eq!(to_a[0]["code"], "room_limit");
}

#[test]
fn renaming_is_refused_when_names_come_from_the_token() {
    let mut h = Harness::new(|_| {});
    let a = h.connect("alice", "Alice", false);
    let b = h.connect("u-b", "b", true);
    join(&mut h, a, "r");
    join(&mut h, b, "r");
    h.take();
    h.send(a, json!({"type": "nick", "name": "Mallory"}));
    let frames = h.take();
    assert_eq!(frames.to(a)[0]["code"], "forbidden");
    assert!(frames.to(b).is_empty(), "nobody is told of a rename that did not happen");
    h.send(b, json!({"type": "nick", "name": "bob"}));
    let frames = h.take();
    let nick = frames.to(a)[0];
    assert_eq!((nick["event"].as_str(), nick["old_name"].as_str()), (Some("nick"), Some("b")));
}

/// Posts `n` messages with ids to `room` from `conn` and commits them.
fn post_n(h: &mut Harness, conn: ConnId, room: &str, n: u64) {
    for i in 1..=n {
        h.send(conn, json!({"type": "msg", "room": room, "text": format!("m{i}"), "id": format!("{room}-{i}")}));
    }
    h.take();
}

fn seqs_of(v: &Value) -> Vec<u64> {
    v["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

#[test]
fn scroll_back_past_the_ring_reads_the_store_and_marks_the_beginning() {
    let mut h = Harness::new(|c| c.history_per_room = 10);
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r");
    post_n(&mut h, a, "r", 30);
    // The ring (21..=30) proves 22..=26 are not the beginning: answered at once.
    h.send(a, json!({"type": "history", "room": "r", "before": 27, "limit": 5}));
    let f = h.take();
    let page = f.to(a)[0];
    assert_eq!(
        (seqs_of(page), page["complete"].as_bool(), page["before"].as_u64()),
        (vec![22, 23, 24, 25, 26], Some(false), Some(27))
    );
    // Older: only the store has them. Its answer is written to the socket at once,
    // not staged behind a batch.
    h.send(a, json!({"type": "history", "room": "r", "before": 21, "limit": 15}));
    assert!(h.take().to(a).is_empty(), "nothing until the reader answers");
    h.pump();
    assert!(h.take().to(a).is_empty(), "the store's page skips the writer shards");
    let page = h.read(a);
    assert_eq!(seqs_of(&page), (6..=20).collect::<Vec<_>>());
    assert_eq!((page["complete"].as_bool(), page["before"].as_u64()), (Some(false), Some(21)));
    h.send(a, json!({"type": "history", "room": "r", "before": 6, "limit": 50}));
    h.pump();
    let page = h.read(a);
    assert_eq!((seqs_of(&page), page["complete"].as_bool()), ((1..=5).collect(), Some(true)));
}

#[test]
fn a_resume_older_than_the_ring_is_served_from_the_store_before_live_messages() {
    let mut h = Harness::new(|c| c.history_per_room = 10);
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r");
    post_n(&mut h, a, "r", 30);
    let b = h.connect("u-b", "b", true);
    h.send(b, json!({"type": "join", "room": "r", "since": 4}));
    // A message posted while the store is read must come after the history, once.
    h.send(a, json!({"type": "msg", "room": "r", "text": "during", "id": "during"}));
    assert!(h.take().to(b).is_empty(), "not a member before its history");
    h.pump();
    // The ring moved past what was read (22..=31 now): the gap 21 is read as well.
    h.pump();
    let f = h.take();
    assert_eq!(f.types_to(b), ["joined", "history"]);
    assert_eq!(seqs_of(f.to(b)[1]), (5..=31).collect::<Vec<_>>());
    assert_eq!(f.to(b)[1]["complete"], true);
    h.send(a, json!({"type": "msg", "room": "r", "text": "after", "id": "after"}));
    let f = h.take();
    let live: Vec<u64> = f.to(b).iter().filter(|v| v["type"] == "msg").map(|v| v["seq"].as_u64().unwrap()).collect();
    assert_eq!(live, [32]);
}

#[test]
fn a_since_from_another_epoch_is_answered_with_reset() {
    let mut h = Harness::new(|_| {});
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r");
    post_n(&mut h, a, "r", 3);
    h.send(a, json!({"type": "join", "room": "r", "since": 1}));
    let f = h.take();
    let epoch = f.to(a)[0]["epoch"].as_str().expect("joined carries the epoch").to_owned();
    assert_eq!(f.to(a)[1].get("reset"), None);
    let b = h.connect("u-b", "b", true);
    h.send(b, json!({"type": "join", "room": "r", "since": 1, "epoch": epoch}));
    assert_eq!(seqs_of(h.take().to(b)[1]), [2, 3], "same epoch: a normal resume");
    let c = h.connect("u-c", "c", true);
    h.send(c, json!({"type": "join", "room": "r", "since": 2, "epoch": "0123abcd"}));
    let f = h.take();
    let hist = f.to(c)[1];
    assert_eq!((hist["reset"].as_bool(), seqs_of(hist)), (Some(true), vec![1, 2, 3]));
    let d = h.connect("u-d", "d", true);
    h.send(d, json!({"type": "join", "room": "r", "since": 99}));
    assert_eq!(h.take().to(d)[1]["reset"], true, "a since past the head means the store was wiped");
}

#[test]
fn a_failed_commit_acks_nothing_refuses_posts_and_recovers() {
    let mut h = Harness::new(|_| {});
    let a = h.connect("u-a", "a", true);
    let b = h.connect("u-b", "b", true);
    join(&mut h, a, "r");
    join(&mut h, b, "r");
    post_n(&mut h, a, "r", 2);
    let db = rusqlite::Connection::open(h._dir.path().join("natter.db")).unwrap();
    db.execute_batch("CREATE TRIGGER fail BEFORE INSERT ON messages BEGIN SELECT RAISE(ABORT, 'disk says no'); END;")
        .unwrap();
    h.send(a, json!({"type": "msg", "room": "r", "text": "lost?", "id": "x1"}));
    h.send(b, json!({"type": "msg", "room": "r", "text": "no id"}));
    let f = h.take();
    let to_a: Vec<(&str, &str)> =
        f.to(a).iter().map(|v| (v["type"].as_str().unwrap(), v["code"].as_str().unwrap_or(""))).collect();
    assert_eq!(to_a, [("error", "unavailable")], "no ack, no message: only the refusal");
    assert_eq!(f.to(a)[0]["ref"], "x1");
    assert_eq!(f.types_to(b), ["error"]);
    assert!(!f.to(a)[0]["message"].as_str().unwrap().contains("disk says no"), "no SQL text");
    assert!(h.d.metrics.store_failing.load(std::sync::atomic::Ordering::Relaxed));
    // While failing, posts are refused at once; typing still flows.
    h.send(a, json!({"type": "msg", "room": "r", "text": "again", "id": "x2"}));
    h.send(a, json!({"type": "typing", "room": "r"}));
    let f = h.take();
    assert_eq!(f.to(a)[0]["code"], "unavailable");
    assert_eq!(f.types_to(b), ["typing"]);
    db.execute_batch("DROP TRIGGER fail").unwrap();
    h.d.store_tick(std::time::Instant::now() + std::time::Duration::from_secs(10));
    assert!(
        !h.d.metrics.store_failing.load(std::sync::atomic::Ordering::Relaxed),
        "the probe found the store writable"
    );
    h.send(a, json!({"type": "msg", "room": "r", "text": "lost?", "id": "x1"}));
    let f = h.take();
    let ack = f.to(a).into_iter().find(|v| v["type"] == "ack").unwrap();
    assert_eq!(
        (ack["seq"].as_u64(), ack["dup"].as_bool()),
        (Some(3), Some(false)),
        "the seq refused is reused, gapless"
    );
}
