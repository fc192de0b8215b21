//! DMs cannot be turned against a user: new DMs are rate limited per user (many
//! throwaway identities flooding one user are refused past the rate), a user blocks
//! another (who then cannot open a DM with them; on every device, after a restart), a
//! DM is closed until a new message arrives in it, and DMs others open never take the
//! slots of rooms the user chooses. Redis mode runs the same rules across instances in
//! tests/redis_cluster.rs.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};

/// A user with a lasting open-mode identity (so it can be named while away).
fn lasting(url: &str, name: &str) -> Client {
    Client::connect(&format!("{url}&key={name}-secret-key-123456"))
}

/// Every frame before the dispatcher's answer to a first request: what a new
/// connection was told at connect (a ping would not do: the connection's own thread
/// answers it).
fn told_at_connect(c: &mut Client) -> Vec<Value> {
    c.send(json!({"type": "leave", "room": "never-joined"}));
    let mut seen = Vec::new();
    loop {
        let v = c.recv();
        if v["type"] == "error" && v["ref"] == "leave" {
            return seen;
        }
        seen.push(v);
    }
}

/// The answer to `dm {user}`: the room, or the error's code.
fn open_dm(c: &mut Client, user: &str) -> Result<String, String> {
    c.send(json!({"type": "dm", "user": user}));
    loop {
        let v = c.recv();
        match v["type"].as_str() {
            Some("dm") => return Ok(v["room"].as_str().unwrap().to_owned()),
            Some("error") => return Err(v["code"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
}

/// 300 throwaway identities opened 300 DMs to one user in 2.6 s: now each user gets
/// at most `--dm-open-rate` new DMs a minute, whoever opens them.
#[test]
fn many_identities_opening_dms_to_one_user_are_refused_past_the_rate() {
    let server = TestServer::start_with(|c| c.dm_open_rate = 5);
    let mut victim = lasting(&server.url("victim"), "victim");
    victim.join("lobby", None);
    let mut answers = Vec::new();
    for i in 0..12 {
        let mut spammer = Client::connect(&server.url(&format!("spam{i}")));
        answers.push(open_dm(&mut spammer, &victim.uid()));
    }
    let opened = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(opened, 5, "{answers:?}");
    assert!(answers[5..].iter().all(|a| a == &Err("dm_rate".to_owned())), "{answers:?}");
    let told: Vec<Value> = told_at_connect(&mut lasting(&server.url("victim"), "victim"));
    assert_eq!(told.iter().filter(|v| v["type"] == "dm").count(), 5, "the victim has 5 DMs, not 12");
    // An existing DM is not new: opening it again is never refused by the rate.
    let mut first = Client::connect(&server.url("spam0"));
    assert!(open_dm(&mut first, &victim.uid()).is_ok());
    assert!(server.metrics().contains("natter_errors_total{code=\"dm_rate\"} 7"), "counted in /metrics");
}

/// A blocked user cannot open a DM with the blocker; the answer is the one for a user
/// the server does not know. The block reaches the blocker's other connections, those
/// that connect later, and outlives a restart; `unblock` undoes it.
#[test]
fn a_blocked_user_cannot_open_a_dm_on_any_device_even_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Proc::start(dir.path(), None, &[]);
    let mut alice = lasting(&server.url("alice"), "alice");
    let mut phone = lasting(&server.url("alice"), "alice");
    let mut mallory = lasting(&server.url("mallory"), "mallory");
    mallory.join("lobby", None);
    alice.send(json!({"type": "block", "user": mallory.uid()}));
    let list = alice.next_of("blocked");
    assert_eq!(list["users"], json!([mallory.uid()]));
    assert_eq!(phone.next_of("blocked")["users"], json!([mallory.uid()]), "on the other device too");
    assert_eq!(open_dm(&mut mallory, &alice.uid()), Err("not_found".into()));
    assert_eq!(open_dm(&mut mallory, "nobody-at-all"), Err("not_found".into()), "the same as for nobody");
    let told = told_at_connect(&mut lasting(&server.url("alice"), "alice"));
    assert_eq!(told.iter().find(|v| v["type"] == "blocked").map(|v| v["users"].clone()), Some(json!([mallory.uid()])));
    drop(server);

    let server = common::Proc::start(dir.path(), None, &[]);
    let mut alice = lasting(&server.url("alice"), "alice");
    let told = told_at_connect(&mut alice);
    assert_eq!(told.iter().find(|v| v["type"] == "blocked").map(|v| v["users"].clone()), Some(json!([mallory.uid()])));
    let mut mallory = lasting(&server.url("mallory"), "mallory");
    assert_eq!(open_dm(&mut mallory, &alice.uid()), Err("not_found".into()), "after a restart");
    alice.send(json!({"type": "unblock", "user": mallory.uid()}));
    assert_eq!(alice.next_of("blocked")["users"], json!([]));
    assert!(open_dm(&mut mallory, &alice.uid()).is_ok(), "unblocked");
    alice.send(json!({"type": "block", "user": alice.uid()}));
    assert_eq!(alice.next_of("error")["code"], "bad_field", "not yourself");
}

/// A closed DM is not told of at connect, on any device, until a new message arrives
/// in it: then it is told again (`dm`), live and at connect. A blocked user's message
/// never opens it again.
#[test]
fn a_closed_dm_stays_hidden_after_reconnecting_until_a_new_message_opens_it() {
    let server = TestServer::start();
    let mut ann = lasting(&server.url("ann"), "ann");
    let mut bea = lasting(&server.url("bea"), "bea");
    told_at_connect(&mut bea); // registered, so known to `dm`
    let room = open_dm(&mut ann, &bea.uid()).unwrap();
    assert_eq!(bea.next_of("dm")["room"], room.as_str());
    ann.join(&room, None);
    ann.post(&room, "hello", "h1");
    let mut tablet = lasting(&server.url("bea"), "bea");
    told_at_connect(&mut tablet);
    bea.send(json!({"type": "close_dm", "room": room}));
    assert_eq!(bea.next_of("dm_closed")["room"], room.as_str());
    assert_eq!(tablet.next_of("dm_closed")["room"], room.as_str(), "every device hears of it");
    let told = told_at_connect(&mut lasting(&server.url("bea"), "bea"));
    assert!(told.iter().all(|v| v["type"] != "dm"), "hidden after reconnecting: {told:?}");
    // Ann opening the DM again does not show it to bea: only a message does.
    assert_eq!(open_dm(&mut ann, &bea.uid()), Ok(room.clone()));
    ann.post(&room, "are you there?", "h2");
    assert_eq!(bea.next_of("dm")["room"], room.as_str(), "a new message opens it again, live");
    let told = told_at_connect(&mut lasting(&server.url("bea"), "bea"));
    assert!(told.iter().any(|v| v["type"] == "dm" && v["room"] == room.as_str()), "and at connect: {told:?}");

    bea.send(json!({"type": "close_dm", "room": "lobby"}));
    assert_eq!(bea.next_of("error")["code"], "bad_field", "only a DM room closes");
    let mut cid = lasting(&server.url("cid"), "cid");
    cid.send(json!({"type": "close_dm", "room": room}));
    assert_eq!(cid.next_of("error")["code"], "forbidden", "only one's own DM");

    // Blocked, ann cannot open it again with a message.
    bea.send(json!({"type": "block", "user": ann.uid()}));
    bea.next_of("blocked");
    bea.send(json!({"type": "close_dm", "room": room}));
    bea.next_of("dm_closed");
    ann.post(&room, "let me in", "h3");
    let told = told_at_connect(&mut lasting(&server.url("bea"), "bea"));
    assert!(told.iter().all(|v| v["type"] != "dm"), "still hidden: {told:?}");
}

/// 40 unsolicited DMs used up a victim's 32 room slots, and from then on the victim
/// could not join any room. DMs have slots of their own: the victim joins all 40 and
/// still joins a room of their choosing; past the DM slots a DM is refused, never a room.
#[test]
fn forty_unsolicited_dms_never_take_the_slots_of_rooms() {
    let server = TestServer::start_with(|c| {
        c.dm_open_rate = 1000;
        // 31 rooms in a second is past the creation rate; that limit has tests of its own.
        c.room_creates_per_min = 1000;
        common::unlimited_rate(c);
    });
    let mut victim = lasting(&server.url("victim"), "victim");
    for i in 0..31 {
        victim.join(&format!("room-{i}"), None);
    }
    let mut rooms = Vec::new();
    for i in 0..40 {
        let mut spammer = Client::connect(&server.url(&format!("spam{i}")));
        rooms.push(open_dm(&mut spammer, &victim.uid()).unwrap());
    }
    // The page joins every DM it is told of.
    for room in &rooms {
        assert_eq!(victim.next_of("dm")["room"], room.as_str());
    }
    for room in &rooms {
        victim.join(room, None);
    }
    let (joined, _) = victim.join("chosen-room", None);
    assert_eq!(joined["room"], "chosen-room", "the 32nd room is still the user's to choose");
    victim.send(json!({"type": "join", "room": "one-too-many"}));
    assert_eq!(victim.next_of("error")["code"], "room_limit", "rooms keep their own limit");

    // Past the DM slots (64) the DM is refused, never a room; closing one frees its slot.
    let max_dms = victim.welcome["limits"]["max_dms"].as_u64().unwrap() as usize;
    for i in 40..max_dms + 1 {
        let mut spammer = Client::connect(&server.url(&format!("spam{i}")));
        rooms.push(open_dm(&mut spammer, &victim.uid()).unwrap());
    }
    for _ in 40..max_dms + 1 {
        victim.next_of("dm");
    }
    for room in &rooms[40..max_dms] {
        victim.join(room, None);
    }
    victim.send(json!({"type": "join", "room": rooms[max_dms]}));
    assert_eq!(victim.next_of("error")["code"], "room_limit");
    victim.send(json!({"type": "close_dm", "room": rooms[0]}));
    victim.next_of("dm_closed");
    victim.send(json!({"type": "leave", "room": rooms[0]}));
    let (joined, _) = victim.join(&rooms[max_dms], None);
    assert_eq!(joined["room"], rooms[max_dms].as_str());
    let told = told_at_connect(&mut lasting(&server.url("victim"), "victim"));
    assert_eq!(told.iter().filter(|v| v["type"] == "dm").count(), max_dms, "told of the newest open DMs, bounded");
}
