//! The dispatcher's rules, checked by driving [`Dispatcher::handle`] with commands and
//! reading the frames it stages, without writer threads. Each `Conn` wraps one end of
//! a loopback pair; only the answers the dispatcher writes at once (store-answered
//! scroll-back pages) reach it, read by [`Harness::read`].

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use serde_json::{json, Value};

use super::tags::ReadFor;
use super::{Backend, Command, Dispatcher};
use crate::auth::Identity;
use crate::config::Config;
use crate::delivery::fanout::Out;
use crate::delivery::outbox::{Conn, ConnId};
use crate::metrics::Metrics;
use crate::protocol::{parse_client, wire, ParseLimits};
use crate::store::read::Answer;
use crate::store::sqlite::reader;
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
        let store = SqliteStore::open(&cfg.data_dir, cfg.fsync).expect("store");
        let (tx, answers) = crossbeam_channel::unbounded();
        let readers = reader::start(store.path(), 1, move |a| {
            let _ = tx.send(a);
        })
        .expect("readers");
        let backend = Backend::Local(Box::new(super::Local { store, readers }));
        let d = Dispatcher::new(Arc::new(cfg), Arc::new(Metrics::default()), backend);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Harness { d, listener, sockets: Vec::new(), next_id: 1, answers, _dir: dir }
    }

    /// Registers a connection for user `uid` shown as `name`.
    fn connect(&mut self, uid: &str, name: &str, can_rename: bool) -> ConnId {
        self.connect_as(uid, name, can_rename, Default::default())
    }

    /// Registers a connection with these rights (e.g. a moderator's).
    fn connect_as(&mut self, uid: &str, name: &str, can_rename: bool, access: crate::access::Access) -> ConnId {
        let client = TcpStream::connect(self.listener.local_addr().unwrap()).expect("connect");
        let (server, peer) = self.listener.accept().expect("accept");
        let id = self.next_id;
        self.next_id += 1;
        let conn = Arc::new(Conn::new(id, server.try_clone().unwrap(), peer));
        self.sockets.push((server, client));
        let user = Identity { id: uid.into(), name: name.into(), can_rename, access, lasting: true };
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
        self.d.evict_idle(std::time::Instant::now());
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

#[test]
fn a_read_marker_moves_forward_reaches_the_users_connections_in_the_room_and_comes_back_in_joined() {
    let (mut h, a, b) = two_in_room();
    let a2 = h.connect("u-a", "a", true); // the same user on a second device
    join(&mut h, a2, "r");
    let a3 = h.connect("u-a", "a", true); // and on a third, elsewhere
    join(&mut h, a3, "other");
    post_n(&mut h, b, "r", 3);
    h.take();

    h.send(a, json!({"type": "read", "room": "r", "seq": 2}));
    let frames = h.take();
    let read = json!({"type": "read", "room": "r", "seq": 2, "mentions_unread": 0});
    assert_eq!(frames.to(a), [&read]);
    assert_eq!(frames.to(a2), [&read], "the user's other connection in the room hears it");
    assert!(frames.to(a3).is_empty(), "one not in the room learns it when it joins");
    assert!(frames.to(b).is_empty(), "nobody else does");

    h.send(a, json!({"type": "read", "room": "r", "seq": 1}));
    assert!(h.take().0.is_empty(), "a marker never moves back");

    h.send(a3, json!({"type": "join", "room": "r"}));
    assert_eq!(h.take().to(a3)[0]["read_seq"], 2, "joined carries the marker");
    let c = h.connect("u-c", "c", true);
    join(&mut h, c, "r");
    assert_eq!(h.take().to(c)[0]["read_seq"], 0, "nothing read yet");
}

#[test]
fn a_read_past_the_head_or_of_a_room_not_joined_is_refused() {
    let (mut h, a, _b) = two_in_room();
    post_n(&mut h, a, "r", 2);
    h.take();
    h.send(a, json!({"type": "read", "room": "r", "seq": 3}));
    h.send(a, json!({"type": "read", "room": "elsewhere", "seq": 1}));
    let frames = h.take();
    let codes: Vec<&str> = frames.to(a).iter().map(|v| v["code"].as_str().unwrap_or("?")).collect();
    assert_eq!(codes, ["bad_field", "not_joined"]);
    assert_eq!(frames.to(a)[0]["ref"], "read");
    h.send(a, json!({"type": "join", "room": "r"}));
    assert_eq!(h.take().to(a)[0]["read_seq"], 0, "a refused read moved nothing");
}

/// The error codes `conn` got, in order.
fn codes(frames: &Frames, conn: ConnId) -> Vec<String> {
    frames
        .to(conn)
        .iter()
        .filter(|v| v["type"] == "error")
        .map(|v| v["code"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[test]
fn an_edit_is_a_new_event_and_history_shows_the_new_text() {
    let (mut h, a, b) = two_in_room();
    h.send(a, json!({"type": "msg", "room": "r", "text": "helo", "id": "m1"}));
    h.take();
    h.send(a, json!({"type": "edit", "room": "r", "seq": 1, "text": "hello", "id": "e1"}));
    let frames = h.take();
    let to_b = frames.to(b);
    assert_eq!(to_b.len(), 1);
    assert_eq!(
        (to_b[0]["type"].as_str(), to_b[0]["seq"].as_u64(), to_b[0]["of"].as_u64()),
        (Some("edit"), Some(2), Some(1))
    );
    assert_eq!(to_b[0]["text"], "hello");
    assert!(frames.to(a).iter().any(|v| v["type"] == "ack" && v["id"] == "e1" && v["seq"] == 2));

    let c = h.connect("u-c", "c", true);
    join(&mut h, c, "r");
    let joined = h.take();
    let history = &joined.to(c)[1];
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages[0]["text"], "hello", "the stored message has the new text");
    assert!(messages[0]["edited"].is_u64());
    assert_eq!((messages[1]["type"].as_str(), messages[1]["of"].as_u64()), (Some("edit"), Some(1)));
}

#[test]
fn only_the_author_edits_and_only_the_author_or_a_moderator_deletes() {
    let (mut h, a, b) = two_in_room();
    let access = crate::access::Access { role: crate::access::Role::Mod, ..Default::default() };
    let m = h.connect_as("u-m", "mod", true, access);
    join(&mut h, m, "r");
    h.send(a, json!({"type": "msg", "room": "r", "text": "mine", "id": "m1"}));
    h.take();
    h.send(b, json!({"type": "edit", "room": "r", "seq": 1, "text": "yours now"}));
    h.send(b, json!({"type": "delete", "room": "r", "seq": 1}));
    h.send(m, json!({"type": "edit", "room": "r", "seq": 1, "text": "moderated"}));
    let frames = h.take();
    assert_eq!(codes(&frames, b), ["forbidden", "forbidden"]);
    assert_eq!(codes(&frames, m), ["forbidden"], "a moderator deletes, never edits, others' messages");
    assert!(frames.to(a).is_empty(), "nothing reached the room");

    h.send(m, json!({"type": "delete", "room": "r", "seq": 1, "id": "d1"}));
    let frames = h.take();
    let event = frames.to(b)[0];
    assert_eq!(
        (event["type"].as_str(), event["of"].as_u64(), event["uid"].as_str()),
        (Some("delete"), Some(1), Some("u-m"))
    );
}

#[test]
fn changes_of_missing_deleted_or_non_messages_are_not_found() {
    let (mut h, a, _b) = two_in_room();
    h.send(a, json!({"type": "msg", "room": "r", "text": "one", "id": "m1"}));
    h.send(a, json!({"type": "edit", "room": "r", "seq": 1, "text": "uno"}));
    h.take();
    h.send(a, json!({"type": "edit", "room": "r", "seq": 9, "text": "x"}));
    h.send(a, json!({"type": "edit", "room": "r", "seq": 2, "text": "an edit is not a message"}));
    h.send(a, json!({"type": "delete", "room": "elsewhere", "seq": 1}));
    assert_eq!(codes(&h.take(), a), ["not_found", "not_found", "not_joined"]);
    h.send(a, json!({"type": "delete", "room": "r", "seq": 1}));
    h.take();
    h.send(a, json!({"type": "delete", "room": "r", "seq": 1}));
    h.send(a, json!({"type": "edit", "room": "r", "seq": 1, "text": "back"}));
    assert_eq!(codes(&h.take(), a), ["not_found", "not_found"], "a deleted message stays deleted");
}

#[test]
fn a_deletion_takes_the_text_from_the_message_and_its_earlier_edits() {
    let (mut h, a, b) = two_in_room();
    h.send(a, json!({"type": "msg", "room": "r", "text": "secret one", "id": "m1"}));
    h.take();
    h.send(a, json!({"type": "edit", "room": "r", "seq": 1, "text": "secret two"}));
    h.take();
    h.send(a, json!({"type": "delete", "room": "r", "seq": 1}));
    h.take();
    h.send(b, json!({"type": "join", "room": "r", "since": 0}));
    let frames = h.take();
    let history = frames.to(b)[1].to_string();
    assert!(!history.contains("secret"), "no text of the deleted message is left: {history}");
    let messages = frames.to(b)[1]["messages"].as_array().unwrap().clone();
    let kinds: Vec<(&str, bool)> =
        messages.iter().map(|m| (m["type"].as_str().unwrap(), m["deleted"] == true)).collect();
    assert_eq!(kinds, [("msg", true), ("edit", true), ("delete", false)]);
}

/// The `type`s and `code`s `conn` got, in order (errors as `error:<code>`).
fn kinds(frames: &Frames, conn: ConnId) -> Vec<String> {
    frames
        .to(conn)
        .iter()
        .map(|v| match v["type"].as_str() {
            Some("error") => format!("error:{}", v["code"].as_str().unwrap_or("?")),
            other => other.unwrap_or("?").to_owned(),
        })
        .collect()
}

#[test]
fn a_private_room_lets_in_its_owner_the_invited_and_the_claim_only() {
    let mut h = Harness::new(|_| {});
    let owner = h.connect("u-o", "owner", true);
    let guest = h.connect("u-g", "guest", true);
    let outsider = h.connect("u-x", "outsider", true);
    h.send(owner, json!({"type": "join", "private": true, "title": " Team\u{7} "}));
    let frames = h.take();
    assert_eq!((&frames.to(owner)[0]["private"], &frames.to(owner)[0]["title"]), (&json!(true), &json!("Team")));
    let secret = frames.to(owner)[0]["room"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("p.") && secret.len() == 28, "{secret}: named by the server");
    let secret = secret.as_str();
    h.send(outsider, json!({"type": "join", "room": secret}));
    h.send(outsider, json!({"type": "join", "room": secret, "private": true}));
    h.send(outsider, json!({"type": "join", "room": "p.nothing"}));
    let frames = h.take();
    assert_eq!(kinds(&frames, outsider), ["error:forbidden"; 3], "no way in without an invitation");
    let message = |i: usize| frames.to(outsider)[i]["message"].as_str().unwrap().replace(secret, "p.nothing");
    assert_eq!(message(0), message(2), "an outsider cannot tell a private room from no room");

    h.send(owner, json!({"type": "invite", "room": secret, "user": "u-g"}));
    let frames = h.take();
    assert_eq!(frames.to(guest)[0]["type"], "invited");
    assert_eq!(frames.to(guest)[0]["by"]["id"], "u-o");
    join(&mut h, guest, secret);
    assert_eq!(kinds(&h.take(), guest)[..2], ["joined", "history"]);
    h.send(guest, json!({"type": "invite", "room": secret, "user": "u-x"}));
    assert_eq!(kinds(&h.take(), guest), ["error:forbidden"], "a guest does not invite");

    let claim = crate::access::RoomPatterns::from_claim(&json!([secret])).unwrap();
    let access = crate::access::Access { rooms: Some(claim), ..Default::default() };
    let claimed = h.connect_as("u-c", "claimed", false, access);
    join(&mut h, claimed, secret);
    assert_eq!(kinds(&h.take(), claimed)[0], "joined", "a claim naming the room lets its holder in");

    join(&mut h, outsider, "public");
    h.send(outsider, json!({"type": "invite", "room": "public", "user": "u-g"}));
    h.send(owner, json!({"type": "join", "room": "public", "private": true}));
    let frames = h.take();
    assert_eq!(kinds(&frames, outsider)[2..], ["error:bad_field"]);
    assert_eq!(kinds(&frames, owner), ["error:bad_field"], "a public name never becomes private");
}

#[test]
fn a_dm_room_is_the_two_users_and_nobody_else() {
    let mut h = Harness::new(|_| {});
    let a = h.connect("u-a", "a", true);
    let b = h.connect("u-b", "b", true);
    let b2 = h.connect("u-b", "b", true); // b's second device
    let c = h.connect("u-c", "c", true);
    h.send(a, json!({"type": "dm", "user": "u-b"}));
    let frames = h.take();
    let room = frames.to(a)[0]["room"].as_str().unwrap().to_owned();
    assert!(room.starts_with("dm."));
    assert_eq!(frames.to(a)[0]["user"]["id"], "u-b");
    for conn in [b, b2] {
        assert_eq!(
            (frames.to(conn)[0]["room"].as_str(), frames.to(conn)[0]["user"]["id"].as_str()),
            (Some(&*room), Some("u-a"))
        );
    }
    assert!(frames.to(c).is_empty());
    h.send(b, json!({"type": "dm", "user": "u-a"}));
    assert_eq!(h.take().to(b)[0]["room"], room.as_str(), "the same room whoever asks");

    join(&mut h, a, &room);
    join(&mut h, b, &room);
    h.send(a, json!({"type": "msg", "room": room, "text": "just us", "id": "p1"}));
    let frames = h.take();
    assert_eq!(frames.to(b).iter().filter(|v| v["type"] == "msg").count(), 1);
    assert_eq!(frames.to(a)[0]["private"], true);

    h.send(c, json!({"type": "join", "room": room, "since": 0}));
    h.send(c, json!({"type": "history", "room": room, "before": 2}));
    h.send(c, json!({"type": "search", "room": room, "q": "just"}));
    h.send(c, json!({"type": "join", "room": "dm.00000000000000000000"}));
    let frames = h.take();
    assert_eq!(kinds(&frames, c), ["error:forbidden", "error:not_joined", "error:not_joined", "error:forbidden"]);
    assert!(!frames.to(c).iter().any(|v| v.to_string().contains("just us")));

    h.send(a, json!({"type": "dm", "user": "u-a"}));
    h.send(a, json!({"type": "dm", "user": "u-nobody"}));
    assert_eq!(kinds(&h.take(), a), ["error:bad_field", "error:not_found"]);
}

fn moderator(h: &mut Harness, uid: &str) -> ConnId {
    let access = crate::access::Access { role: crate::access::Role::Mod, ..Default::default() };
    h.connect_as(uid, "mod", true, access)
}

#[test]
fn a_kick_is_a_seq_event_removes_the_user_and_keeps_them_out() {
    let (mut h, a, b) = two_in_room();
    let m = moderator(&mut h, "u-m");
    join(&mut h, m, "r");
    post_n(&mut h, a, "r", 2);
    h.take();
    h.send(b, json!({"type": "kick", "room": "r", "user": "u-a", "minutes": 10}));
    assert_eq!(kinds(&h.take(), b), ["error:forbidden"], "only moderators kick");

    h.send(m, json!({"type": "kick", "room": "r", "user": "u-a", "minutes": 10}));
    let frames = h.take();
    let event = frames.to(b).iter().find(|v| v["type"] == "system" && v["event"] == "kick").copied().unwrap().clone();
    assert_eq!(
        (event["seq"].as_u64(), event["user"]["id"].as_str(), event["by"]["id"].as_str()),
        (Some(3), Some("u-a"), Some("u-m"))
    );
    assert_eq!(event["minutes"], 10);
    assert!(frames.to(a).iter().any(|v| v["event"] == "kick"), "the removed user hears why");

    h.send(a, json!({"type": "msg", "room": "r", "text": "still here?", "id": "x"}));
    join(&mut h, a, "r");
    let frames = h.take();
    assert_eq!(kinds(&frames, a), ["error:not_joined", "error:forbidden"]);
    assert!(frames.to(a)[1]["message"].as_str().unwrap().contains("10 more minute"));
    // The kick is in the room's history, in seq order.
    let c = h.connect("u-c", "c", true);
    h.send(c, json!({"type": "join", "room": "r", "since": 0}));
    let seqs: Vec<u64> =
        h.take().to(c)[1]["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);

    for bad in [json!(0), json!(-5), json!(100_000), json!("ten")] {
        let frame = json!({"type": "kick", "room": "r", "user": "u-b", "minutes": bad}).to_string();
        let e = crate::protocol::parse_client(&frame, ParseLimits { max_text_chars: 10 }).unwrap_err();
        assert_eq!(e.code, crate::protocol::ErrorCode::BadField, "{frame}");
    }
}

/// Open mode: a kick also refuses whoever joins from the kicked user's address, for
/// the kick's minutes only; a moderator from there is never refused.
#[test]
fn a_kick_covers_the_kicked_address_until_it_ends() {
    let mut h = Harness::new(|c| c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()]);
    let from = |h: &mut Harness, conn: ConnId, ip: &str| h.d.clients[&conn].conn.peer.set_client(ip.parse().unwrap());
    let (a, b) = (h.connect("u-a", "a", true), h.connect("u-b", "b", true));
    from(&mut h, a, "198.51.100.7");
    let m = moderator(&mut h, "u-m");
    for c in [a, m] {
        join(&mut h, c, "r");
    }
    h.take();
    h.send(m, json!({"type": "kick", "room": "r", "user": "u-a", "minutes": 10}));
    h.take();

    let (fresh, m2) = (h.connect("u-fresh", "fresh", true), moderator(&mut h, "u-m2"));
    from(&mut h, fresh, "198.51.100.7");
    from(&mut h, m2, "198.51.100.7");
    from(&mut h, b, "198.51.100.8");
    for c in [fresh, m2, b] {
        join(&mut h, c, "r");
    }
    let frames = h.take();
    assert_eq!(kinds(&frames, fresh), ["error:forbidden"], "a new identity from the kicked address");
    assert!(frames.to(fresh)[0]["message"].as_str().unwrap().contains("10 more minute"));
    assert_eq!(kinds(&frames, m2)[0], "joined", "a moderator from there is not refused");
    assert_eq!(kinds(&frames, b)[0], "joined", "another address is not refused");

    // The time is up: the address gets in again.
    let ended = crate::store::AccessChange::KickAddress {
        room: "r".into(),
        addr: "198.51.100.7".parse().unwrap(),
        until: super::state::now_ms() - 1,
    };
    h.d.change_access(ended);
    join(&mut h, fresh, "r");
    assert_eq!(kinds(&h.take(), fresh)[0], "joined");
}

#[test]
fn a_read_only_room_takes_posts_from_moderators_only() {
    let (mut h, a, _b) = two_in_room();
    let m = moderator(&mut h, "u-m");
    join(&mut h, m, "r");
    h.take();
    h.send(a, json!({"type": "mode", "room": "r", "read_only": true}));
    assert_eq!(kinds(&h.take(), a), ["error:forbidden"]);
    h.send(m, json!({"type": "mode", "room": "r", "read_only": true}));
    let frames = h.take();
    assert!(frames.to(a).iter().any(|v| v["event"] == "read_only" && v["read_only"] == true && v["seq"] == 1));
    h.send(a, json!({"type": "msg", "room": "r", "text": "hello?", "id": "p"}));
    h.send(m, json!({"type": "msg", "room": "r", "text": "announcement", "id": "q"}));
    let frames = h.take();
    assert_eq!(kinds(&frames, a)[0], "error:forbidden");
    assert!(frames.to(m).iter().any(|v| v["type"] == "ack" && v["id"] == "q"));
    h.send(a, json!({"type": "join", "room": "r"}));
    assert_eq!(h.take().to(a)[0]["read_only"], true, "joined says so");
    h.send(m, json!({"type": "mode", "room": "r", "read_only": false}));
    h.take();
    h.send(a, json!({"type": "msg", "room": "r", "text": "finally", "id": "p2"}));
    assert!(h.take().to(a).iter().any(|v| v["type"] == "ack"));
}

fn leave(h: &mut Harness, conn: ConnId, room: &str) {
    h.send(conn, json!({"type": "leave", "room": room}));
}

fn rooms_evicted(h: &Harness) -> u64 {
    h.d.metrics.rooms_evicted.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn junk_rooms_joined_and_left_never_fill_the_table() {
    let mut h = Harness::new(|c| {
        c.max_rooms = 3;
        c.room_creates_per_min = 1000;
    });
    let a = h.connect("u-a", "a", true);
    for i in 0..50 {
        let room = format!("junk-{i}");
        join(&mut h, a, &room);
        leave(&mut h, a, &room);
        let f = h.take();
        assert_eq!(f.types_to(a), ["joined", "history"], "junk-{i} is joined");
        assert!(h.d.rooms.is_empty(), "a room with nobody in it and no message leaves at once");
    }
    // Someone else can still make a room, and a private one.
    let b = h.connect("u-b", "b", true);
    join(&mut h, b, "real");
    h.send(b, json!({"type": "join", "private": true, "title": "mine"}));
    assert_eq!(h.take().types_to(b), ["joined", "history", "joined", "history"]);
}

#[test]
fn rooms_in_memory_never_pass_max_rooms_and_an_evicted_room_comes_back_as_it_was() {
    let mut h = Harness::new(|c| {
        c.max_rooms = 2;
        c.history_per_room = 5;
        c.dedup_per_room = 100;
    });
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r1");
    let epoch = {
        post_n(&mut h, a, "r1", 8);
        h.send(a, json!({"type": "join", "room": "r1"}));
        h.take().to(a)[0]["epoch"].as_str().expect("an epoch").to_owned()
    };
    h.send(a, json!({"type": "read", "room": "r1", "seq": 6}));
    h.send(a, json!({"type": "edit", "room": "r1", "seq": 7, "text": "edited"}));
    leave(&mut h, a, "r1");
    h.take();
    assert_eq!(h.d.rooms.len(), 1, "r1 stays cached while it is idle");
    // Two more rooms in use: r1, the longest idle, leaves memory to make space.
    for room in ["r2", "r3"] {
        join(&mut h, a, room);
        post_n(&mut h, a, room, 1);
        assert!(h.d.rooms.len() <= 2, "at most --max-rooms rooms in memory");
    }
    assert!(!h.d.rooms.contains_key(&crate::protocol::RoomName::parse("r1").unwrap()));
    assert_eq!(rooms_evicted(&h), 1);
    // Every room in memory is in use: a third is refused, nothing is evicted.
    join(&mut h, a, "r4");
    assert_eq!(h.take().to(a)[0]["code"], "room_limit");
    leave(&mut h, a, "r3");
    h.take();
    // r1 comes back from the store: head, epoch, read marker, ring with the edit.
    let b = h.connect("u-b", "b", true);
    h.send(b, json!({"type": "join", "room": "r1", "since": 5, "epoch": epoch}));
    let f = h.take();
    let (joined, history) = (f.to(b)[0], f.to(b)[1]);
    assert_eq!((joined["head"].as_u64(), joined["epoch"].as_str()), (Some(9), Some(epoch.as_str())));
    assert_eq!((seqs_of(history), history["complete"].as_bool()), (vec![6, 7, 8, 9], Some(true)));
    assert_eq!(history["messages"][1]["text"], "edited", "the stored edit is in the ring");
    assert_eq!(rooms_evicted(&h), 2, "r3 left to make space");
    join(&mut h, a, "r1");
    assert_eq!(h.take().to(a)[0]["read_seq"], 6, "the read marker came back");
    // A retry of an id posted before the eviction is still a duplicate; seq goes on.
    h.send(a, json!({"type": "msg", "room": "r1", "text": "m8", "id": "r1-8"}));
    h.send(a, json!({"type": "msg", "room": "r1", "text": "new", "id": "r1-new"}));
    let acks: Vec<(u64, bool)> = h
        .take()
        .to(a)
        .iter()
        .filter(|v| v["type"] == "ack")
        .map(|v| (v["seq"].as_u64().unwrap(), v["dup"].as_bool().unwrap()))
        .collect();
    assert_eq!(acks, [(8, true), (10, false)]);
    // A resume older than the reloaded ring is read from the store, as before.
    let c = h.connect("u-c", "c", true);
    h.send(c, json!({"type": "join", "room": "r1", "since": 1, "epoch": epoch}));
    assert!(h.take().to(c).is_empty(), "the store is read first");
    h.pump();
    let f = h.take();
    assert_eq!(seqs_of(f.to(c)[1]), (2..=10).collect::<Vec<_>>());
    assert_eq!(f.to(c)[1]["complete"], true);
}

#[test]
fn an_idle_room_leaves_memory_after_room_idle_and_comes_back_on_the_next_join() {
    let mut h = Harness::new(|c| c.room_idle = std::time::Duration::ZERO);
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "r");
    post_n(&mut h, a, "r", 3);
    leave(&mut h, a, "r");
    h.take();
    assert!(h.d.rooms.is_empty() && h.d.reads.get("u-a", &crate::protocol::RoomName::parse("r").unwrap()) == 0);
    assert_eq!(rooms_evicted(&h), 1);
    join(&mut h, a, "r");
    let f = h.take();
    assert_eq!((f.to(a)[0]["head"].as_u64(), seqs_of(f.to(a)[1])), (Some(3), vec![1, 2, 3]));
    post_n(&mut h, a, "r", 1);
    assert_eq!(h.d.rooms.len(), 1, "held rooms never leave");
}

#[test]
fn an_evicted_public_room_cannot_be_taken_private_and_a_private_one_stays_private() {
    let mut h = Harness::new(|c| c.room_idle = std::time::Duration::ZERO);
    let a = h.connect("u-a", "a", true);
    join(&mut h, a, "pub");
    post_n(&mut h, a, "pub", 1);
    h.send(a, json!({"type": "join", "private": true, "title": "priv"}));
    let priv_room = h.take().to(a)[0]["room"].as_str().unwrap().to_owned();
    post_n(&mut h, a, &priv_room, 1);
    leave(&mut h, a, "pub");
    leave(&mut h, a, &priv_room);
    h.take();
    assert!(h.d.rooms.is_empty());
    let b = h.connect("u-b", "b", true);
    h.send(b, json!({"type": "join", "room": "pub", "private": true}));
    h.send(b, json!({"type": "join", "room": priv_room}));
    let f = h.take();
    let codes: Vec<&str> = f.to(b).iter().map(|v| v["code"].as_str().unwrap_or("")).collect();
    assert_eq!(codes, ["bad_field", "forbidden"]);
}

#[test]
fn room_creation_is_rate_limited_per_connection() {
    let mut h = Harness::new(|c| c.room_creates_per_min = 3);
    let a = h.connect("u-a", "a", true);
    let b = h.connect("u-b", "b", true);
    join(&mut h, b, "existing");
    for i in 0..3 {
        join(&mut h, a, &format!("new-{i}"));
    }
    h.take();
    join(&mut h, a, "new-3");
    h.send(a, json!({"type": "join", "private": true, "title": "mine"}));
    let f = h.take();
    let codes: Vec<(&str, &str)> =
        f.to(a).iter().map(|v| (v["code"].as_str().unwrap_or(""), v["ref"].as_str().unwrap_or(""))).collect();
    assert_eq!(codes, [("create_limited", "join"), ("create_limited", "join")]);
    assert!(!h.d.rooms.contains_key(&crate::protocol::RoomName::parse("new-3").unwrap()));
    // Rooms that exist are joined as ever; another connection has its own budget.
    join(&mut h, a, "existing");
    join(&mut h, b, "new-3");
    let f = h.take();
    let answers = |conn| f.types_to(conn).into_iter().filter(|t| *t != "system").collect::<Vec<_>>();
    assert_eq!((answers(a), answers(b)), (vec!["joined", "history"], vec!["joined", "history"]));
}
