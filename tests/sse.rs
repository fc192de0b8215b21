//! The fallback transport against the real server: `GET /sse` streams and `POST /send`
//! beside WebSocket clients, with the guarantees and refusals of docs/PROTOCOL.md.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{unlimited_rate, wait_until, TestServer, WAIT};
use natter::config::AuthMode;
use serde_json::{json, Value};

/// One SSE event as read off the stream.
#[derive(Debug, Clone, Default)]
struct Event {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is JSON ({e}): {self:?}"))
    }
}

/// A fallback client: the stream, its session, and how to post into it.
struct Sse {
    addr: SocketAddr,
    reader: BufReader<TcpStream>,
    session: String,
    last_id: String,
    query: String,
}

/// Sends a raw request on a new connection; returns the stream.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    s
}

/// Reads a whole response: (status, headers, body).
fn response(s: TcpStream) -> (u16, String, String) {
    read_response(&mut BufReader::new(s))
}

/// Reads one response off a connection that may stay open: the head, then
/// `Content-Length` bytes of body (or everything up to the end without one).
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
    });
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body).expect("the whole body");
        }
        None => {
            let _ = reader.read_to_end(&mut body);
        }
    }
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// `GET /sse` with extra header lines; returns the stream after the response head,
/// or the refusal (status, body).
fn open(addr: SocketAddr, query: &str, headers: &str) -> Result<BufReader<TcpStream>, (u16, String)> {
    let s = request(addr, &format!("GET /sse?{query} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n"), b"");
    if headers.contains("X-Test-Small-Buffer") {
        // A 64 KiB receive window (no autotuning): a stream that is not read backs up
        // into the server quickly instead of into megabytes of kernel buffers.
        let size: libc::c_int = 64 * 1024;
        // SAFETY: setsockopt on a socket we own with a pointer to a local int.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    let mut reader = BufReader::new(s);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut head = String::new();
    loop {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        if l == "\r\n" || l.is_empty() {
            break;
        }
        head.push_str(&l);
    }
    if status != 200 {
        let mut body = String::new();
        let _ = reader.read_to_string(&mut body);
        return Err((status, body));
    }
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    Ok(reader)
}

fn read_event(reader: &mut BufReader<TcpStream>) -> Option<Event> {
    let mut e = Event::default();
    let mut any = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches('\n');
        if line.is_empty() {
            // As in a browser: an event without data is not dispatched.
            if any && !e.data.is_empty() {
                return Some(e);
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        any = true;
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => e.id = Some(value),
            "event" => e.event = Some(value),
            "data" => e.data = value,
            other => panic!("unexpected SSE field {other}"),
        }
    }
}

impl Sse {
    fn connect(server: &TestServer, name: &str) -> Sse {
        Self::connect_with(server.ws, &format!("name={name}"), "")
    }

    fn connect_with(addr: SocketAddr, query: &str, headers: &str) -> Sse {
        let reader = open(addr, query, headers).unwrap_or_else(|e| panic!("refused: {e:?}"));
        let mut c = Sse { addr, reader, session: String::new(), last_id: String::new(), query: query.to_owned() };
        let welcome = c.next();
        assert_eq!(welcome["type"], "welcome");
        c.session = welcome["session"].as_str().unwrap().to_owned();
        c
    }

    /// The next event's JSON, remembering its id as a browser would.
    fn next(&mut self) -> Value {
        let e = read_event(&mut self.reader).expect("the stream is open");
        if let Some(id) = &e.id {
            self.last_id = id.clone();
        }
        assert!(e.event.is_none(), "unexpected {e:?}");
        e.json()
    }

    fn expect(&mut self, kind: &str) -> Value {
        loop {
            let v = self.next();
            if v["type"] == kind {
                return v;
            }
            assert!(
                ["system", "typing", "joined"].contains(&v["type"].as_str().unwrap_or("")),
                "expected `{kind}`, got {v}"
            );
        }
    }

    /// POSTs a body into the session; returns (status, answers or body text).
    fn post_raw(&self, body: &str, extra: &str) -> (u16, String) {
        let s = request(
            self.addr,
            &format!(
                "POST /send?session={}&{} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n{extra}\r\n",
                self.session,
                self.query,
                self.addr,
                body.len()
            ),
            body.as_bytes(),
        );
        let (status, _, body) = response(s);
        (status, body)
    }

    fn post(&self, body: Value) -> Vec<Value> {
        let (status, text) = self.post_raw(&body.to_string(), "");
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Vec<Value>>(&text).expect("answers are a JSON array")
    }
}

fn ws_msg(room: &str, text: &str, id: &str) -> Value {
    json!({"type": "msg", "room": room, "text": text, "id": id})
}

#[test]
fn a_fallback_client_and_a_websocket_client_chat_in_one_room() {
    let server = TestServer::start();
    let mut alice = Sse::connect(&server, "alice");
    assert!(alice.post(json!({"type": "join", "room": "lobby"})).is_empty());
    alice.expect("joined");
    alice.expect("history");
    let mut bob = server.connect("bob");
    bob.join("lobby", None);

    let answers = alice.post(json!([ws_msg("lobby", "hi bob", "a1")]));
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0]["type"], "ack");
    assert_eq!(answers[0]["seq"], 1);
    assert_eq!(alice.expect("ack")["id"], "a1", "the stream carries the ack too");
    assert_eq!(alice.expect("msg")["text"], "hi bob");
    let got = bob.expect("msg");
    assert_eq!((got["text"].as_str(), got["user"].as_str()), (Some("hi bob"), Some("alice")));

    bob.post("lobby", "hi alice", "b1");
    let got = alice.expect("msg");
    assert_eq!((got["text"].as_str(), got["seq"].as_u64()), (Some("hi alice"), Some(2)));
    assert_eq!(alice.last_id, "lobby=2", "the event id carries the room cursor");
}

/// Reads until `room`'s message `last` arrived, collecting every message seq.
fn collect_until(c: &mut Sse, last: u64, seqs: &mut Vec<u64>) {
    while seqs.last() != Some(&last) {
        let v = c.next();
        match v["type"].as_str() {
            Some("msg") => seqs.push(v["seq"].as_u64().unwrap()),
            Some("history") => seqs.extend(common::history_seqs(&v)),
            _ => {}
        }
    }
}

#[test]
fn a_cut_stream_resumes_with_last_event_id_without_loss_or_duplicates() {
    const N: u64 = 300;
    let server = TestServer::start_with(unlimited_rate);
    let mut alice = Sse::connect(&server, "alice");
    alice.post(json!([{"type": "join", "room": "lobby"}, {"type": "join", "room": "quiet"}]));
    alice.expect("history");
    alice.expect("history");
    let mut bob = server.connect("bob");
    bob.join("lobby", None);
    let poster = std::thread::spawn(move || {
        for i in 1..=N {
            bob.send(ws_msg("lobby", &format!("m{i}"), &format!("b{i}")));
        }
        bob
    });
    let mut seqs = Vec::new();
    collect_until(&mut alice, 40, &mut seqs);
    let cut_at = alice.last_id.clone();
    assert_eq!(cut_at, "lobby=40,quiet=0");
    drop(alice.reader); // the stream is cut mid-way; bob keeps posting

    let mut again = Sse::connect_with(server.ws, "name=alice", &format!("Last-Event-ID: {cut_at}\r\n"));
    collect_until(&mut again, N, &mut seqs);
    let _ = poster.join();
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>(), "every message once, in order");
    assert_eq!(again.last_id, format!("lobby={N},quiet=0"));
}

#[test]
fn a_post_retried_after_a_timeout_is_stored_once() {
    let server = TestServer::start();
    let mut alice = Sse::connect(&server, "alice");
    alice.post(json!({"type": "join", "room": "lobby"}));
    alice.expect("history");
    // The first POST is sent whole, but the client gives up before the answer.
    let body = json!(ws_msg("lobby", "once", "r1")).to_string();
    let head =
        format!("POST /send?session={} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", alice.session, body.len());
    let s = request(server.ws, &head, body.as_bytes());
    assert_eq!(alice.expect("ack")["dup"], false, "the first POST was stored");
    drop(s);
    let answers = alice.post(json!(ws_msg("lobby", "once", "r1")));
    assert_eq!(answers.len(), 1);
    let (seq, dup) = (answers[0]["seq"].clone(), answers[0]["dup"].clone());
    assert_eq!(seq, 1, "{answers:?}");
    assert_eq!(dup, true, "the retry is the same message: {answers:?}");
    let mut bob = server.connect("bob");
    let (_, history) = bob.join("lobby", Some(0));
    assert_eq!(common::history_seqs(&history), vec![1], "stored once");
}

#[test]
fn a_non_reading_sse_client_is_cut_off_without_stalling_others() {
    let server = TestServer::start_with(|c| {
        unlimited_rate(c);
        c.max_backlog_bytes = 256 * 1024;
    });
    let mut stuck = Sse::connect_with(server.ws, "name=stuck", "X-Test-Small-Buffer: 1\r\n");
    stuck.post(json!({"type": "join", "room": "lobby"}));
    stuck.expect("history");
    let mut reader = Sse::connect(&server, "reader");
    reader.post(json!({"type": "join", "room": "lobby"}));
    reader.expect("history");
    let mut bob = server.connect("bob");
    bob.join("lobby", None);
    let text = "x".repeat(3000);
    let n = 1500u64; // ~4.5 MB: far past the backlog limit plus the kernel's buffers
    for i in 1..=n {
        bob.send(ws_msg("lobby", &text, &format!("b{i}")));
        if i % 50 == 0 {
            // The reading stream keeps up while the other one sits unread.
            let mut seqs = Vec::new();
            collect_until(&mut reader, i, &mut seqs);
            // bob reads his own echoes too: only `stuck` is not reading.
            loop {
                let v = bob.recv();
                if v["type"] == "msg" && v["id"] == format!("b{i}") {
                    break;
                }
            }
        }
    }
    // Read what the stuck stream holds until the server ends it: reading makes room for
    // the close event (waiting first would race the grace period's cut).
    let mut last = None;
    while let Some(e) = read_event(&mut stuck.reader) {
        last = Some(e);
    }
    server.wait_metric("natter_closes_total{reason=\"slow_consumer\"}", 1);
    let last = last.expect("the stuck stream had events");
    assert_eq!(last.event.as_deref(), Some("close"), "ends with the close event: {last:?}");
    assert_eq!(last.json(), json!({"code": 1008, "reason": "slow consumer"}));
    bob.post("lobby", "still here", "after");
    assert_eq!(reader.expect("msg")["id"], "after");
}

#[test]
fn token_mode_and_origin_checks_hold_for_sse_and_send() {
    let secret = b"sse-test-secret-of-enough-length".to_vec();
    let server = TestServer::start_with(|c| {
        c.auth = AuthMode::Token { secret: secret.clone() };
    });
    let alice_token = natter::auth::mint(
        &secret,
        "u-alice",
        &natter::auth::Grants { name: Some("alice".into()), ..Default::default() },
        600,
    );
    let bob_token = natter::auth::mint(
        &secret,
        "u-bob",
        &natter::auth::Grants { name: Some("bob".into()), ..Default::default() },
        600,
    );
    assert_eq!(open(server.ws, "", "").unwrap_err().0, 401, "no token");
    assert_eq!(open(server.ws, "token=garbage", "").unwrap_err().0, 401, "bad token");
    let alice = Sse::connect_with(server.ws, "", &format!("Authorization: Bearer {alice_token}\r\n"));
    let join = json!({"type": "join", "room": "lobby"}).to_string();
    assert_eq!(alice.post_raw(&join, "").0, 401, "/send without a token");
    let as_bob = format!("Authorization: Bearer {bob_token}\r\n");
    assert_eq!(alice.post_raw(&join, &as_bob).0, 403, "/send with another user's token");
    let as_alice = format!("Authorization: Bearer {alice_token}\r\n");
    assert_eq!(alice.post_raw(&join, &as_alice).0, 200);

    let open_server = TestServer::start();
    let evil = "Origin: http://evil.example\r\n";
    assert_eq!(open(open_server.ws, "name=a", evil).unwrap_err().0, 403);
    let own = format!("Origin: http://127.0.0.1:{}\r\n", open_server.http.port());
    let carol = Sse::connect_with(open_server.ws, "name=carol", &own);
    assert_eq!(carol.post_raw(&join, evil).0, 403, "/send from a foreign page");
    let s = request(
        open_server.ws,
        &format!(
            "POST /send?session={} HTTP/1.1\r\nHost: {}\r\n{own}Content-Length: {}\r\n\r\n",
            carol.session,
            open_server.ws,
            join.len()
        ),
        join.as_bytes(),
    );
    let (status, head, _) = response(s);
    assert_eq!(status, 200);
    assert!(head.contains(&format!("Access-Control-Allow-Origin: http://127.0.0.1:{}", open_server.http.port())));
    let guess = "s-0123456789abcdef0123456789abcdef";
    let s =
        request(open_server.ws, &format!("POST /send?session={guess} HTTP/1.1\r\nContent-Length: 2\r\n\r\n"), b"{}");
    assert_eq!(response(s).0, 404, "a guessed session posts nothing");
}

#[test]
fn bad_posts_get_4xx_or_clean_errors_and_the_stream_lives_on() {
    let server = TestServer::start();
    let mut alice = Sse::connect(&server, "alice");
    // 10 MB: refused from its Content-Length, without reading it all.
    let big = vec![b'['; 10 << 20];
    let head =
        format!("POST /send?session={} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", alice.session, big.len());
    assert_eq!(response(request(server.ws, &head, &big)).0, 413);
    for body in ["\"just a string\"", "42", "null", "{not json", "[1, 2"] {
        assert_eq!(alice.post_raw(body, "").0, 400, "{body}");
    }
    let s = request(server.ws, &format!("POST /send?session={} HTTP/1.1\r\n\r\n", alice.session), b"");
    assert_eq!(response(s).0, 411);
    let answers = alice.post(json!([ws_msg("nowhere", "hi", "n1"), {"type": "msg", "room": "nowhere", "text": "x"}]));
    let codes: Vec<_> = answers.iter().map(|a| (a["code"].clone(), a["ref"].clone())).collect();
    assert_eq!(codes, vec![(json!("not_joined"), json!("n1")), (json!("not_joined"), json!("msg"))]);
    let answers = alice.post(json!([1, {"type": "bogus"}]));
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert!(answers.iter().all(|a| a["type"] == "error"));
    // The stream is still there and says the same.
    assert_eq!(alice.expect("error")["code"], "not_joined");
    assert_eq!(alice.post(json!({"type": "ping", "t": 7}))[0], json!({"type": "pong", "t": 7}));
}

/// `POST /send` of `body` into `session`, as bytes, with `extra` header lines.
fn post_request(session: &str, body: &Value, extra: &str) -> String {
    let body = body.to_string();
    format!("POST /send?session={session} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len())
}

#[test]
fn posts_keep_their_connection_until_it_idles_or_the_client_closes() {
    let server = TestServer::start_with(|c| {
        unlimited_rate(c);
        c.http_idle_timeout = std::time::Duration::from_millis(300);
    });
    let mut alice = Sse::connect(&server, "alice");
    let mut s = request(server.ws, &post_request(&alice.session, &json!({"type": "join", "room": "lobby"}), ""), b"");
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let (status, head, body) = read_response(&mut reader);
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert!(head.contains("Connection: keep-alive"), "{head}");
    alice.expect("history");
    // The next POST on the same connection, then two sent in one write (pipelined).
    s.write_all(post_request(&alice.session, &ws_msg("lobby", "one", "k1"), "").as_bytes()).unwrap();
    assert!(read_response(&mut reader).2.contains("\"id\":\"k1\""));
    let two = post_request(&alice.session, &ws_msg("lobby", "two", "k2"), "")
        + &post_request(&alice.session, &ws_msg("lobby", "three", "k3"), "");
    s.write_all(two.as_bytes()).unwrap();
    for id in ["k2", "k3"] {
        let (status, _, body) = read_response(&mut reader);
        assert!(status == 200 && body.contains(&format!("\"id\":\"{id}\"")), "{id}: {status} {body}");
    }
    let mut texts = Vec::new();
    while texts.len() < 3 {
        let v = alice.next();
        if v["type"] == "msg" {
            texts.push((v["seq"].as_u64().unwrap(), v["text"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(texts, [(1, "one".into()), (2, "two".into()), (3, "three".into())]);
    // A client that says close gets its answer, then the end.
    let close = post_request(&alice.session, &json!({"type": "ping", "t": 1}), "Connection: close\r\n");
    s.write_all(close.as_bytes()).unwrap();
    let (status, head, _) = read_response(&mut reader);
    assert!(status == 200 && head.contains("Connection: close"), "{head}");
    assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "closed after the answer");

    // Any request may follow a POST, a stream too; an idle connection is closed.
    let mut s = request(server.ws, &post_request(&alice.session, &json!({"type": "ping"}), ""), b"");
    let mut reader = BufReader::new(s.try_clone().unwrap());
    assert_eq!(read_response(&mut reader).0, 200);
    s.write_all(b"GET /sse?name=bob HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    drop((s, reader));
    let s = request(server.ws, &post_request(&alice.session, &json!({"type": "ping"}), ""), b"");
    let mut reader = BufReader::new(s);
    assert_eq!(read_response(&mut reader).0, 200);
    let idle = std::time::Instant::now();
    assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "an idle connection is closed");
    assert!(idle.elapsed() < WAIT, "by the idle timeout, not the test's");
}

#[test]
fn a_forged_last_event_id_is_refused_cleanly() {
    let server = TestServer::start();
    for forged in ["lobby=abc", "lobby", "'; DROP TABLE rooms", "a=1,a=2", "..=3", &"r=1,".repeat(40)] {
        let err = open(server.ws, "name=mallory", &format!("Last-Event-ID: {forged}\r\n")).unwrap_err();
        assert_eq!(err.0, 400, "{forged}: {err:?}");
    }
    // Well formed but beyond the room's head: an empty, complete history.
    let mut c = Sse::connect_with(server.ws, "name=mallory", "Last-Event-ID: lobby=999999\r\n");
    let joined = c.expect("joined");
    let history = c.expect("history");
    assert_eq!((joined["head"].clone(), history["messages"].clone()), (json!(0), json!([])));
    assert_eq!(c.post(json!(ws_msg("lobby", "fine", "f1")))[0]["type"], "ack");
}

#[test]
fn sse_streams_from_one_address_are_capped_like_websockets() {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 5);
    let held: Vec<Sse> = (0..5).map(|i| Sse::connect(&server, &format!("u{i}"))).collect();
    let mut refused = 0;
    for _ in 0..1000 {
        match open(server.ws, "name=more", "") {
            Err((429, _)) => refused += 1,
            other => panic!("past the cap: {:?}", other.map(|_| "a stream")),
        }
    }
    assert_eq!(refused, 1000);
    drop(held);
    wait_until(|| open(server.ws, "name=later", "").is_ok(), "a slot after the streams closed");
}
