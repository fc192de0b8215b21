//! Property-based fuzzing of everything a client controls: the frame parser, the
//! handshake request (path, query, headers), and raw bytes on a live socket. Runs a
//! bounded number of cases in `make test`; `make fuzz` raises PROPTEST_CASES.
//! Inputs that once broke something are kept as explicit regression cases below.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::TestServer;
use natter::config::Config;
use natter::protocol::{
    parse_client, ClientMsg, ErrorCode, ParseLimits, ProtocolError, RoomName, MAX_EPOCH_CHARS, MAX_ID_CHARS, MAX_PAGE,
    MAX_QUERY_CHARS, MAX_SEQ,
};
use natter::transport::handshake::{admit, Handshake};
use proptest::prelude::*;

const LIMITS: ParseLimits = ParseLimits { max_text_chars: 50 };

/// JSON-ish text built from the protocol's own vocabulary, so cases reach deep
/// into validation instead of stopping at the first syntax error.
fn frame_like() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "type", "room", "text", "id", "since", "name", "t", "user", "x", "before", "limit", "q", "epoch", "seq",
        "private", "title",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "\"join\"",
            "\"leave\"",
            "\"msg\"",
            "\"typing\"",
            "\"nick\"",
            "\"ping\"",
            "\"history\"",
            "\"search\"",
            "\"read\"",
            "\"NEAR(a b)\"",
            "\"\\\"*-\"",
            "9007199254740992",
            "201",
            "\"lobby\"",
            "\"a b\"",
            "\"\"",
            "null",
            "true",
            "-1",
            "0",
            "18446744073709551616",
            "1e3",
            "[]",
            "{}",
            "\"\\u0000\"",
            "\"\\ud800\"",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,80}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        any::<i64>().prop_map(|n| n.to_string()),
    ];
    prop::collection::vec((key, value), 0..6).prop_map(|kvs| {
        let body: Vec<String> = kvs.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

fn check_invariants(msg: &ClientMsg) {
    match msg {
        ClientMsg::Msg { room, text, id, files, .. } => {
            assert!(!room.as_str().is_empty() && room.as_str().len() <= 64);
            assert!(text.chars().count() <= LIMITS.max_text_chars && (!text.trim().is_empty() || !files.is_empty()));
            assert!(files.len() <= 10 && files.iter().all(|f| !f.is_resolved()));
            assert!(id.as_ref().is_none_or(|i| !i.is_empty() && i.chars().count() <= MAX_ID_CHARS));
        }
        ClientMsg::LegacyMsg { text } => assert!(text.chars().count() <= LIMITS.max_text_chars),
        ClientMsg::Nick { name } | ClientMsg::CreatePrivate { title: name } => {
            assert!(!name.is_empty() && name.chars().count() <= 32 && !name.chars().any(char::is_control))
        }
        ClientMsg::History { before, limit, .. } => {
            assert!((1..=MAX_SEQ).contains(before) && (1..=MAX_PAGE).contains(limit));
        }
        ClientMsg::Search { q, before, limit, .. } => {
            assert!(q.chars().count() <= MAX_QUERY_CHARS && q.chars().any(char::is_alphanumeric));
            assert!(before.is_none_or(|b| (1..=MAX_SEQ).contains(&b)) && (1..=MAX_PAGE).contains(limit));
            // Whatever passed validation becomes a query of quoted words only.
            let fts = natter::store::sqlite::reader::fts_query(q).expect("a word is left");
            assert!(fts.split(' ').all(|t| t.starts_with('"')
                && t.ends_with("\"*")
                && t[1..t.len() - 2].chars().all(char::is_alphanumeric)));
        }
        ClientMsg::Join { epoch, .. } => {
            assert!(epoch.as_ref().is_none_or(|e| !e.is_empty() && e.len() <= MAX_EPOCH_CHARS));
        }
        _ => {}
    }
}

proptest! {
    #[test]
    fn parser_never_panics_on_any_text(s in "\\PC{0,300}") {
        if let Ok(m) = parse_client(&s, LIMITS) { check_invariants(&m) }
    }

    #[test]
    fn parser_upholds_limits_on_protocol_shaped_input(s in frame_like()) {
        match parse_client(&s, LIMITS) {
            Ok(m) => check_invariants(&m),
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }

    #[test]
    fn handshake_policy_never_panics(path in "/\\PC{0,40}", query in "\\PC{0,80}", origin in "\\PC{0,40}", host in "[a-z0-9.:\\[\\]]{0,30}") {
        let uri = format!("{}?{}", path.replace(['?', '#', ' '], ""), query.replace(['#', ' '], ""));
        let mut b = tungstenite::http::Request::builder().uri(uri.as_str());
        if let Ok(v) = tungstenite::http::HeaderValue::from_str(&origin) { b = b.header("Origin", v); }
        if let Ok(v) = tungstenite::http::HeaderValue::from_str(&host) { b = b.header("Host", v); }
        if let Ok(req) = b.body(()) {
            if let Ok(Handshake::Admitted(a)) = admit(&req, &Config::default()) {
                prop_assert!(!a.identity.name.is_empty() && a.identity.name.chars().count() <= 32);
            }
        }
    }
}

/// Regression cases found while fuzzing and reviewing, each with what it must produce:
/// the message it parses to, or the error code, text and reference the client gets.
#[test]
fn regressions() {
    let refused = |code, message: &str, reference: Option<&str>| {
        Err(ProtocolError { code, message: message.to_owned(), reference: reference.map(str::to_owned) })
    };
    let cases: [(&str, Result<ClientMsg, ProtocolError>); 7] = [
        // A lone surrogate escape is not a string serde_json can hand over.
        (
            r#"{"type":"msg","room":"r","text":"\ud800"}"#,
            refused(ErrorCode::BadField, "`text` must be a string", Some("msg")),
        ),
        // One past u64::MAX.
        (
            r#"{"type":"join","room":"r","since":18446744073709551616}"#,
            refused(ErrorCode::BadField, "`since` must be a non-negative integer", Some("join")),
        ),
        // Control characters are cleaned out of names, leaving nothing.
        (r#"{"type":"nick","name":"\u0000\u0000"}"#, refused(ErrorCode::BadField, "`name` is empty", Some("nick"))),
        // A null type reads as no type: the seed tutorial's type-less post to lobby.
        (r#"{"type":null,"text":"x"}"#, Ok(ClientMsg::LegacyMsg { text: "x".to_owned() })),
        // Kept as typed; the store later reads it as words (store::read), never as FTS5 syntax.
        (
            r#"{"type":"search","room":"r","q":"\"a\" NEAR(b) -c*"}"#,
            Ok(ClientMsg::Search {
                room: RoomName::parse("r").unwrap(),
                q: r#""a" NEAR(b) -c*"#.to_owned(),
                before: None,
                limit: 50,
            }),
        ),
        // 2^53, one past the largest seq a JavaScript client can hold exactly.
        (
            r#"{"type":"history","room":"r","before":9007199254740992,"limit":200}"#,
            refused(ErrorCode::BadField, "`before` must be an integer from 1 to 9007199254740991", Some("history")),
        ),
        // A byte-order mark before the object.
        ("\u{feff}{}", refused(ErrorCode::BadJson, "not a JSON object: expected value at line 1 column 1", None)),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_client(input, LIMITS), expected, "{input}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).map_or(24, |c: u32| c / 10 + 1), ..ProptestConfig::default() })]

    /// Random bytes after a valid handshake: the server answers or closes that
    /// connection, and keeps serving everyone else.
    #[test]
    fn random_bytes_on_the_wire_never_hurt_other_clients(noise in prop::collection::vec(any::<u8>(), 1..2048)) {
        let server = SERVER.with(|s| s.ws);
        let mut s = TcpStream::connect(server).unwrap();
        write!(s, "GET /ws?name=fuzz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
        let _ = s.write_all(&noise);
        drop(s);
        let mut probe = common::Client::connect(&format!("ws://{server}/ws?name=probe"));
        probe.send(serde_json::json!({"type":"ping","t":1}));
        prop_assert_eq!(probe.expect("pong")["t"].as_u64(), Some(1));
    }
}

thread_local! {
    static SERVER: TestServer = TestServer::start();
}
