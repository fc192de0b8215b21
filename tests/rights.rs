//! Rights from the token and identities in open mode, against the real server: the
//! `rooms` claim and `--rooms-default` decide joins (checked again on every
//! reconnect), bad claims refuse the token, `natter token` mints the claims, and in
//! open mode a name is not an identity. In local and Redis mode.

mod common;
mod common_redis;

use std::net::TcpStream;
use std::process::Command;

use common::{Client, TestServer};
use common_redis::RedisServer;
use natter::access::RoomsDefault;
use natter::auth::{self, Grants};
use natter::config::{AuthMode, Config};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;

const SECRET: &[u8] = b"rights-secret-rights-secret-rights!!";

fn token_mode(c: &mut Config) {
    c.auth = AuthMode::Token { secret: SECRET.to_vec() };
}

fn token(sub: &str, rooms: Option<&[&str]>) -> String {
    let grants = Grants { rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()), ..Grants::default() };
    auth::mint(SECRET, sub, &grants, 600)
}

fn connect(server: &TestServer, token: &str) -> Client {
    Client::connect(&format!("ws://{}/ws?token={token}", server.ws))
}

/// The join's answer: `Ok` when joined, the error code otherwise.
fn try_join(c: &mut Client, room: &str) -> Result<(), (String, String)> {
    c.send(json!({"type": "join", "room": room}));
    let v = c.recv();
    match v["type"].as_str() {
        Some("joined") => {
            c.expect("history");
            Ok(())
        }
        Some("error") => Err((v["code"].as_str().unwrap().to_owned(), v["message"].as_str().unwrap().to_owned())),
        _ => panic!("unexpected {v}"),
    }
}

fn rooms_claim_decides_joins(server: &TestServer) {
    let mut ann = connect(server, &token("ann", Some(&["team-*", "support"])));
    assert_eq!(try_join(&mut ann, "team-red"), Ok(()));
    assert_eq!(try_join(&mut ann, "support"), Ok(()));
    let (code, message) = try_join(&mut ann, "lobby").unwrap_err();
    assert_eq!(code, "forbidden");
    assert!(message.contains("`lobby`"), "the error names the room: {message}");
    assert_eq!(try_join(&mut ann, "supportive").unwrap_err().0, "forbidden", "exact names are exact");
    // The seed's type-less post would join lobby: refused the same way.
    ann.send(json!({"user": "ann", "text": "hi"}));
    assert_eq!(ann.expect("error")["code"], "forbidden");

    // A new token without team-* no longer gets in on reconnect.
    drop(ann);
    let mut again = connect(server, &token("ann", Some(&["support"])));
    assert_eq!(try_join(&mut again, "team-red").unwrap_err().0, "forbidden");
    assert_eq!(try_join(&mut again, "support"), Ok(()));
}

#[test]
fn the_rooms_claim_decides_joins_and_is_checked_on_every_reconnect() {
    rooms_claim_decides_joins(&TestServer::start_with(token_mode));
}

#[test]
fn the_rooms_claim_holds_with_redis_too() {
    let redis = RedisServer::start();
    let url = redis.url();
    rooms_claim_decides_joins(&TestServer::start_with(move |c| {
        token_mode(c);
        c.redis = Some(url);
    }));
}

#[test]
fn rooms_default_none_admits_only_what_a_claim_lists() {
    let server = TestServer::start_with(|c| {
        token_mode(c);
        c.rooms_default = RoomsDefault::None;
    });
    let mut plain = connect(&server, &token("bob", None));
    assert_eq!(try_join(&mut plain, "lobby").unwrap_err().0, "forbidden");
    let mut listed = connect(&server, &token("cat", Some(&["lobby"])));
    assert_eq!(try_join(&mut listed, "lobby"), Ok(()));
    let open = TestServer::start_with(token_mode);
    assert_eq!(try_join(&mut connect(&open, &token("bob", None)), "lobby"), Ok(()), "the default is open");
}

#[test]
fn unusable_claims_refuse_the_token() {
    let server = TestServer::start_with(token_mode);
    // Just over the 1,000-pattern bound (10,000 make a request head natter refuses with
    // 400 before the token is even read, also a clean refusal).
    let many: Vec<String> = (0..1_001).map(|i| format!("r{i}")).collect();
    let claims = [json!("team-*"), json!(many), json!(["bad room"]), json!(["x:y"]), json!([42])];
    for (i, rooms) in claims.into_iter().enumerate() {
        let claims = auth::Claims {
            sub: "eve".into(),
            exp: auth::now_s() + 60,
            name: None,
            nbf: None,
            rooms: Some(rooms),
            role: None,
        };
        let t = jsonwebtoken::encode(&Default::default(), &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET))
            .unwrap();
        // In a header: 10,000 patterns make a token too long for a URL.
        let mut req = format!("ws://{}/ws", server.ws).into_client_request().unwrap();
        req.headers_mut().insert("Authorization", format!("Bearer {t}").parse().unwrap());
        match tungstenite::client(req, TcpStream::connect(server.ws).unwrap()) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                assert_eq!(r.status().as_u16(), 401, "claim case {i}")
            }
            other => panic!("claim case {i} was not refused: {:?}", other.map(|_| ()).err().map(|e| e.to_string())),
        }
    }
    let role = auth::Claims {
        sub: "eve".into(),
        exp: auth::now_s() + 60,
        name: None,
        nbf: None,
        rooms: None,
        role: Some("admin".into()),
    };
    let t = jsonwebtoken::encode(&Default::default(), &role, &jsonwebtoken::EncodingKey::from_secret(SECRET)).unwrap();
    assert!(tungstenite::client(format!("ws://{}/ws?token={t}", server.ws), TcpStream::connect(server.ws).unwrap())
        .is_err());
}

#[test]
fn natter_token_mints_rooms_and_role_and_refuses_bad_patterns() {
    let run = |rooms: &str| {
        Command::new(common::natter_bin())
            .args(["token", "--sub", "mia", "--rooms", rooms, "--role", "mod"])
            .env("NATTER_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
            .output()
            .unwrap()
    };
    let out = run("team-*, support");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let claims = auth::verify(String::from_utf8(out.stdout).unwrap().trim(), SECRET, 0).unwrap();
    assert_eq!(claims.rooms, Some(json!(["team-*", "support"])));
    assert!(claims.access().unwrap().is_mod());
    let bad = run("team *");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a room name"));
}

#[test]
fn in_open_mode_a_name_is_not_an_identity() {
    let server = TestServer::start();
    let url = |key: &str| format!("ws://{}/ws?name=alice&key={key}", server.ws);
    let mut alice = Client::connect(&url("alice-s-own-secret-key"));
    let mut impostor = Client::connect(&url("someone-else-s-secret"));
    assert_ne!(alice.uid(), impostor.uid(), "two alices are two users");
    assert_eq!(alice.welcome["user"]["name"], impostor.welcome["user"]["name"]);
    alice.join("lobby", None);
    impostor.join("lobby", None);
    // The same client id from the impostor is not alice's message: it is stored anew.
    let first = alice.post("lobby", "mine", "m-1");
    impostor.expect("msg");
    let second = impostor.post("lobby", "mine too", "m-1");
    assert_eq!((first["dup"].as_bool(), second["dup"].as_bool()), (Some(false), Some(false)));
    assert_ne!(first["seq"], second["seq"]);
    // The impostor can neither edit alice's message nor read a DM addressed to her.
    impostor.send(json!({"type": "edit", "room": "lobby", "seq": first["seq"], "text": "hijacked"}));
    let refused = impostor.next_of("error");
    assert_eq!(refused["code"], "forbidden");
    let mut bob = Client::connect(&format!("ws://{}/ws?name=bob&key=bob-s-own-secret-key", server.ws));
    bob.send(json!({"type": "dm", "user": alice.uid()}));
    let dm = bob.expect("dm");
    let room = dm["room"].as_str().unwrap().to_owned();
    let to_alice = alice.next_of("dm");
    assert_eq!(to_alice["room"], room.as_str(), "the DM reaches the real alice");
    assert_eq!(try_join(&mut impostor, &room).unwrap_err().0, "forbidden", "and never the other alice");
    // The real alice coming back with her key is alice again, DM included.
    let mut back = Client::connect(&url("alice-s-own-secret-key"));
    assert_eq!(back.uid(), alice.uid());
    assert_eq!(back.expect("dm")["room"], room.as_str());
    assert_eq!(try_join(&mut back, &room), Ok(()));
}

/// DMs and private rooms outlive a restart, and a third user can read a DM by no
/// means: `join`, `since`, `history`, `search`, or the room's name from another DM.
#[test]
fn dms_and_private_rooms_survive_a_restart_and_keep_third_users_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::Proc::start(dir.path(), None, &[]);
    let url = |s: &common::Proc, who: &str| format!("{}&key={who}-secret-key-123456", s.url(who));
    let mut ann = Client::connect(&url(&server, "ann"));
    let mut bea = Client::connect(&url(&server, "bea"));
    let bea_id = bea.uid().to_owned();
    // `welcome` comes before the dispatcher registers the connection: a join's answer
    // says it has, and so that the server knows bea.
    bea.join("lobby", None);
    drop(bea); // offline: a DM to a lasting user still opens
    ann.send(json!({"type": "dm", "user": bea_id}));
    let room = ann.expect("dm")["room"].as_str().unwrap().to_owned();
    ann.join(&room, None);
    ann.post(&room, "between us", "d1");
    ann.send(json!({"type": "join", "private": true, "title": "Club"}));
    let joined = ann.expect("joined");
    assert_eq!(joined["private"], true);
    let club = joined["room"].as_str().unwrap().to_owned();
    ann.expect("history");
    drop(ann);
    drop(server);

    let server = common::Proc::start(dir.path(), None, &[]);
    let mut bea = Client::connect(&url(&server, "bea"));
    let dm = bea.expect("dm");
    assert_eq!((dm["room"].as_str(), dm["user"]["name"].as_str()), (Some(&*room), Some("ann")));
    let (_, history) = bea.join(&room, None);
    assert_eq!(history["messages"][0]["text"], "between us", "the DM's history is there for the other user");

    let mut cid = Client::connect(&url(&server, "cid"));
    common::kept_out(&mut cid, &room, "between us", &club);
    let mut ann = Client::connect(&url(&server, "ann"));
    ann.expect("dm"); // told of the DM room at connect
    let (joined, _) = ann.join(&club, None);
    assert_eq!((&joined["private"], &joined["title"]), (&json!(true), &json!("Club")), "the title is stored");
    cid.send(json!({"type": "dm", "user": bea.uid()}));
    let other = cid.expect("dm")["room"].as_str().unwrap().to_owned();
    assert_ne!(other, room, "each pair has its own room");
}

/// In open mode a kick covers the address the kicked user came from: a new identity
/// (a new key) from there is refused for that room, for the kick's minutes; other
/// rooms, and other addresses, are not affected. Clients come "through a proxy" on
/// 127.0.0.1, which names them in `X-Forwarded-For`.
fn a_kick_covers_the_address_in_open_mode(kicking: &TestServer, joining: &TestServer) {
    let via = |server: &TestServer, key: &str, addr: &str| {
        let url = format!("ws://{}/ws?name=visitor&key={key}", server.ws);
        Client::connect_with_headers(&url, &[("X-Forwarded-For", addr)])
    };
    let mut moderator = kicking.connect("moderator");
    assert_eq!(moderator.welcome["role"], "mod");
    try_join(&mut moderator, "r").unwrap();
    let mut target = via(kicking, "first-identity-key-000", "198.51.100.7");
    try_join(&mut target, "r").unwrap();
    moderator.send(json!({"type": "kick", "room": "r", "user": target.uid(), "minutes": 5}));
    loop {
        let v = target.recv();
        if v["type"] == "system" && v["event"] == "kick" {
            break;
        }
    }

    for server in [kicking, joining] {
        let mut again = via(server, "a-brand-new-identity-key", "198.51.100.7");
        assert_ne!(again.uid(), target.uid(), "a new identity");
        let (code, message) = try_join(&mut again, "r").unwrap_err();
        assert_eq!(code, "forbidden", "a new key from the kicked address stays out");
        assert!(message.contains("5 more minute(s)"), "for the kick's minutes: {message}");
        assert_eq!(try_join(&mut again, "elsewhere"), Ok(()), "only the room the kick was for");
        let mut neighbour = via(server, "someone-else-entirely-key", "198.51.100.8");
        assert_eq!(try_join(&mut neighbour, "r"), Ok(()), "another address is not affected");
    }
    // Clients straight from loopback (the proxy's own address) are never covered.
    assert_eq!(try_join(&mut joining.connect("local"), "r"), Ok(()));
}

fn open_mode_behind_a_proxy(c: &mut Config, moderator: &str) {
    c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    c.mods = vec![moderator.to_owned()];
}

#[test]
fn in_open_mode_a_kick_covers_the_kicked_address() {
    let moderator = TestServer::start().connect("moderator").uid();
    let server = TestServer::start_with(|c| open_mode_behind_a_proxy(c, &moderator));
    a_kick_covers_the_address_in_open_mode(&server, &server);
}

#[test]
fn in_open_mode_a_kick_covers_the_kicked_address_on_every_instance() {
    let redis = RedisServer::start();
    let moderator = TestServer::start().connect("moderator").uid();
    let start = || {
        let url = redis.url();
        TestServer::start_with(|c| {
            open_mode_behind_a_proxy(c, &moderator);
            c.redis = Some(url);
        })
    };
    let (a, b) = (start(), start());
    a_kick_covers_the_address_in_open_mode(&a, &b);
}

#[test]
fn an_address_kick_is_stored_and_holds_after_a_restart() {
    let moderator = TestServer::start().connect("moderator").uid();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--trusted-proxy", "127.0.0.1", "--mod", moderator.as_str()];
    let via = |server: &common::Proc, key: &str| {
        let url = format!("ws://{}/ws?name=visitor&key={key}", server.ws);
        Client::connect_with_headers(&url, &[("X-Forwarded-For", "203.0.113.40")])
    };
    let server = common::Proc::start(dir.path(), None, &args);
    let mut m = Client::connect(&server.url("moderator"));
    try_join(&mut m, "r").unwrap();
    let mut target = via(&server, "first-identity-key-000");
    try_join(&mut target, "r").unwrap();
    m.send(json!({"type": "kick", "room": "r", "user": target.uid(), "minutes": 3}));
    while target.recv()["event"] != "kick" {}
    drop(server);

    let server = common::Proc::start(dir.path(), None, &args);
    let (code, message) = try_join(&mut via(&server, "another-identity-key-1"), "r").unwrap_err();
    assert_eq!(code, "forbidden", "{message}");
}

/// Issue 23 item 7: a public name never becomes private (`join {room:"lobby",
/// private:true}` used to make the first client lobby's owner and lock everyone else
/// out), and a private room is made by `join {private:true, title}`: the server names
/// it (`p.` and random letters), the owner's title comes with `joined`, and an invitee
/// joins it. An outsider's answer for it is the answer for a `p.` name nobody made.
/// `a` makes the rooms, `b` joins (the same server, or another instance).
fn private_rooms_take_no_public_name_and_tell_nothing(a: &TestServer, b: &TestServer) {
    let mut ann = a.connect("ann");
    ann.send(json!({"type": "join", "room": "lobby", "private": true}));
    let refused = ann.expect("error");
    assert_eq!((refused["code"].as_str(), refused["ref"].as_str()), (Some("bad_field"), Some("join")), "{refused}");
    let mut bea = b.connect("bea");
    let (joined, _) = bea.join("lobby", None);
    assert_eq!(joined.get("private"), None, "lobby stays public: {joined}");
    let (joined, _) = ann.join("lobby", None);
    assert_eq!(joined.get("private"), None, "for the one who asked too");

    ann.send(json!({"type": "join", "private": true, "title": "  Team\u{7} "}));
    let joined = ann.expect("joined");
    ann.expect("history");
    let room = joined["room"].as_str().unwrap().to_owned();
    assert!(room.starts_with("p.") && room.len() == 28, "{room}: named by the server");
    assert_eq!((&joined["private"], &joined["title"]), (&json!(true), &json!("Team")), "{joined}");
    ann.post(&room, "team only", "t1");

    // An outsider: the same answer as for a `p.` name that does not exist, with or
    // without `private:true` (the names differ, so they are compared with it swapped).
    let nothing = format!("p.{}", "a".repeat(26));
    let answer = |c: &mut Client, msg: Value| {
        c.send(msg);
        c.expect("error").to_string()
    };
    for private in [false, true] {
        let there = answer(&mut bea, json!({"type": "join", "room": room, "private": private}));
        let not_there = answer(&mut bea, json!({"type": "join", "room": nothing, "private": private}));
        assert_eq!(there.replace(&room, &nothing), not_there, "an outsider cannot tell them apart");
        assert!(there.contains("forbidden"), "{there}");
    }

    ann.send(json!({"type": "invite", "room": room, "user": bea.uid()}));
    let invited = bea.expect("invited");
    assert_eq!((invited["room"].as_str(), invited["title"].as_str()), (Some(room.as_str()), Some("Team")));
    let (joined, history) = bea.join(&room, None);
    assert_eq!((&joined["private"], &joined["title"]), (&json!(true), &json!("Team")));
    assert_eq!(history["messages"][0]["text"], "team only");
    ann.send(json!({"type": "join", "private": true, "title": " \u{7} "}));
    assert_eq!(ann.expect("error")["code"], "bad_field", "a title is cleaned like a name, and not empty");
}

#[test]
fn private_rooms_take_no_public_name_and_tell_nothing_in_local_mode() {
    let server = TestServer::start();
    private_rooms_take_no_public_name_and_tell_nothing(&server, &server);
}

#[test]
fn private_rooms_take_no_public_name_and_tell_nothing_with_redis() {
    let redis = RedisServer::start();
    let start = || {
        let url = redis.url();
        TestServer::start_with(move |c| c.redis = Some(url))
    };
    private_rooms_take_no_public_name_and_tell_nothing(&start(), &start());
}
