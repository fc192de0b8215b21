//! Bad input and bad clients: every malformed frame gets its documented answer, a
//! client that stops reading is cut without stalling the others, a ping flood never
//! corrupts frames, a silent client is closed by the heartbeat, and a pong is ACKed at
//! once (a client with Nagle on would wait for it). Once a flood is
//! over, the heap it freed goes back to the kernel.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Client, TestServer};
use serde_json::json;
use tungstenite::Message;

#[test]
fn malformed_frames_get_their_error_and_the_connection_stays() {
    let server = TestServer::start_with(|c| c.max_text_chars = 100);
    let mut c = server.connect("c");
    let mut other = server.connect("o");
    other.join("lobby", None);
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "bad_json"),
        (Message::text("[1,2,3]"), "bad_json"),
        (Message::binary(vec![1u8, 2, 3]), "bad_json"),
        (Message::text(r#"{"type":"dance"}"#), "unknown_type"),
        (Message::text(r#"{"type":"join"}"#), "bad_field"),
        (Message::text(r#"{"type":"join","room":"no spaces"}"#), "bad_field"),
        (Message::text(r#"{"type":"msg","room":"lobby"}"#), "bad_field"),
        (Message::text(r#"{"type":"msg","room":"lobby","text":"hi"}"#), "not_joined"),
        (Message::text(json!({"type":"msg","room":"lobby","text":"x".repeat(101)}).to_string()), "too_long"),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}");
        c.send_raw(frame);
        let e = c.expect("error");
        assert_eq!(e["code"], code, "for {shown}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Still connected and useful.
    c.join("lobby", None);
    c.post("lobby", "still here", "ok-1");
    assert_eq!(other.expect("msg")["text"], "still here");
    let m = server.metrics();
    assert!(m.contains("natter_errors_total{code=\"bad_json\"} 3"), "{m}");
}

#[test]
fn a_frame_over_the_limit_is_closed_with_1009() {
    let server = TestServer::start();
    let mut c = server.connect("big");
    let mut other = server.connect("o");
    other.join("lobby", None);
    let big = json!({"type":"msg","room":"lobby","text":"x".repeat(1 << 20)}).to_string();
    let _ = c.ws.send(Message::text(big));
    let (code, _) = c.expect_close();
    assert_eq!(code, 1009);
    other.post("lobby", "others keep going", "k");
}

/// Completes a handshake by hand and returns the raw socket, for frames tungstenite
/// would refuse to send.
fn raw_ws(server: &TestServer) -> TcpStream {
    let mut s = TcpStream::connect(server.ws).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    write!(
        s,
        "GET /ws?name=raw HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.ws
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Reads frames from a raw socket until a close frame; returns its code.
fn raw_close_code(s: &mut TcpStream) -> u16 {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).unwrap();
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            len = u16::from_be_bytes(l) as usize;
        } else if len == 127 {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            len = u64::from_be_bytes(l) as usize;
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        if h[0] & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[test]
fn invalid_utf8_is_closed_with_1007() {
    let server = TestServer::start();
    let mut s = raw_ws(&server);
    s.write_all(&masked_text(&[0xff, 0xfe, b'{'])).unwrap();
    assert_eq!(raw_close_code(&mut s), 1007);
}

#[test]
fn an_unmasked_client_frame_is_closed_with_1002() {
    let server = TestServer::start();
    let mut s = raw_ws(&server);
    s.write_all(b"\x81\x02{}").unwrap();
    assert_eq!(raw_close_code(&mut s), 1002);
}

/// A masked Close frame carrying `code` and no reason.
fn masked_close(code: u16) -> Vec<u8> {
    let mask = [9u8, 8, 7, 6];
    let mut f = vec![0x88, 0x80 | 2];
    f.extend_from_slice(&mask);
    f.extend(code.to_be_bytes().iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Sends a Close with `code` on a fresh connection; returns the code of the server's
/// answer (the welcome before it is skipped).
fn answer_to_close(server: &TestServer, code: u16) -> u16 {
    let mut s = raw_ws(server);
    s.write_all(&masked_close(code)).unwrap();
    raw_close_code(&mut s)
}

/// RFC 6455 §7.4: a code outside the ranges an endpoint may send (Autobahn|Testsuite
/// cases 7.9.1–7.9.9 and 7.13.1–2) is a protocol error, answered with 1002; a valid code
/// (cases 7.7.x) is answered with 1000, or echoed for 1002.
#[test]
fn a_close_frame_with_an_invalid_code_is_answered_with_1002_and_a_valid_one_with_1000() {
    let server = TestServer::start();
    for code in [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535] {
        assert_eq!(answer_to_close(&server, code), 1002, "answer to close code {code}");
    }
    for code in [1000, 1001, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
        assert_eq!(answer_to_close(&server, code), 1000, "answer to close code {code}");
    }
    assert_eq!(answer_to_close(&server, 1002), 1002, "a client's own 1002 is echoed");
}

#[test]
fn handshake_refusals_are_plain_http() {
    let server = TestServer::start();
    let request = |path: &str, extra: &str| -> String {
        let mut s = TcpStream::connect(server.ws).unwrap();
        s.set_read_timeout(Some(common::WAIT)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\n{extra}\r\n", server.ws).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    assert!(request("/", "").starts_with("HTTP/1.1 400"), "a plain GET gets 400, no hang");
    assert!(request("/chat", upgrade).starts_with("HTTP/1.1 404"));
    let evil = format!("{upgrade}Origin: http://evil.example\r\n");
    assert!(request("/ws", &evil).starts_with("HTTP/1.1 403"));
    // The server still serves.
    server.connect("fine");
}

#[test]
fn connection_limits_answer_503_and_429() {
    let server = TestServer::start_with(|c| c.max_connections = 2);
    let _a = server.connect("a");
    let _b = server.connect("b");
    let err = tungstenite::client(server.url("c"), TcpStream::connect(server.ws).unwrap()).unwrap_err();
    match err {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503)
        }
        other => panic!("expected 503, got {other:?}"),
    }
    drop(_a);
    common::wait_until(
        || tungstenite::client(server.url("d"), TcpStream::connect(server.ws).unwrap()).is_ok(),
        "a slot to free up",
    );
    let per_ip = TestServer::start_with(|c| c.max_connections_per_ip = 1);
    let _x = per_ip.connect("x");
    let err = tungstenite::client(per_ip.url("y"), TcpStream::connect(per_ip.ws).unwrap()).unwrap_err();
    assert!(matches!(err, tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r)) if r.status() == 429));
}

#[test]
fn a_client_that_never_reads_is_closed_as_slow_consumer_and_others_get_everything() {
    const N: usize = 2000;
    const BATCH: usize = 20;
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.max_backlog_bytes = 256 * 1024;
    });
    let mut sleeper = Client::connect_small_buffer(&server.url("sleeper"));
    sleeper.join("busy", None);
    let mut reader = server.connect("reader");
    reader.join("busy", None);
    let mut flooder = server.connect("flooder");
    flooder.join("busy", None);
    let text = "y".repeat(3000);
    // Paced by the readers that do read, so only the sleeper falls behind: 6 MB for a
    // socket that takes 64 KiB plus the server's send buffer (at most 4 MiB here) and a
    // 256 KiB backlog.
    common::flood_paced(&mut flooder, &mut reader, "busy", N, BATCH, &text);
    // Now the sleeper reads (within the server's close grace): whole frames, then the close.
    let (code, reason) = sleeper.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
    server.wait_metric("natter_closes_total{reason=\"slow_consumer\"}", 1);
}

#[test]
fn a_ping_flood_during_a_broadcast_flood_never_corrupts_frames() {
    const N: u64 = 2000;
    let server = TestServer::start_with(common::unlimited_rate);
    let mut victim = server.connect("victim");
    victim.join("storm", None);
    let url = server.url("storm");
    let flood = std::thread::spawn(move || {
        let mut f = Client::connect(&url);
        f.join("storm", None);
        for i in 0..N {
            f.send(json!({"type": "msg", "room": "storm", "text": format!("payload {i} {}", "z".repeat(200))}));
        }
        f
    });
    // Interleave: send a ping frame before every read, and check every frame.
    let mut next_seq = 1;
    let mut pongs = 0;
    let mut sent_pings = 0u32;
    while next_seq <= N {
        if sent_pings < 5000 {
            victim.ws.send(Message::Ping(sent_pings.to_be_bytes().to_vec().into())).unwrap();
            sent_pings += 1;
        }
        match victim.ws.read().expect("well-formed frames only") {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("complete JSON");
                if v["type"] == "msg" {
                    assert_eq!(v["seq"].as_u64(), Some(next_seq));
                    next_seq += 1;
                }
            }
            Message::Pong(p) => {
                assert_eq!(p.len(), 4, "pong echoes the ping payload");
                assert_eq!(u32::from_be_bytes(p[..].try_into().unwrap()), pongs, "pongs in order");
                pongs += 1;
            }
            Message::Ping(_) => {} // the server's heartbeat, answered by tungstenite
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pongs > 0);
    drop(flood.join().unwrap());
}

#[test]
fn a_silent_client_is_closed_after_the_heartbeat_timeout() {
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(600);
    });
    // A client that keeps reading answers the server's pings (tungstenite pongs as it
    // reads) and must stay connected well past the timeout.
    let mut alive = server.connect("alive");
    alive.join("lobby", None);
    let alive = std::thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_millis(2000);
        alive.ws.get_ref().set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        while std::time::Instant::now() < until {
            match alive.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("the live client was dropped: {e}"),
            }
        }
        alive.ws.get_ref().set_read_timeout(Some(common::WAIT)).unwrap();
        alive.post("lobby", "still alive", "a1");
    });
    // A raw client that never sends anything (no pong) is cut.
    let mut silent = raw_ws(&server);
    let started = std::time::Instant::now();
    assert_eq!(raw_close_code(&mut silent), 1008);
    assert!(started.elapsed() >= Duration::from_millis(500));
    alive.join().expect("the reading client survived");
    server.wait_metric("natter_closes_total{reason=\"heartbeat_timeout\"}", 1);
}

/// Bytes `s` has sent that its peer has not ACKed yet (`TCP_INFO`).
fn unacked(s: &TcpStream) -> u32 {
    // SAFETY: getsockopt fills a tcp_info we own, of the length we pass.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info.tcpi_unacked
    }
}

#[test]
fn a_pong_is_acked_at_once_so_a_client_with_nagle_on_is_not_held_40_ms() {
    // A client with Nagle's algorithm on (no TCP_NODELAY, as many libraries leave it)
    // sends nothing new while its pong is unACKed; a server that left that ACK to the
    // delayed-ACK timer held the client's next post up to 40 ms (seen in the rooms
    // load test as 30-40 ms outliers in every quarter second).
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(150);
        c.heartbeat_timeout = Duration::from_secs(10);
    });
    let mut c = server.connect("nagle");
    c.join("lobby", None);
    // Past the quick ACKs a new connection starts with (up to 16).
    for i in 0..20 {
        c.post("lobby", "settling into the connection's steady state", &format!("s{i}"));
    }
    let mut waits = Vec::new();
    for i in 0..7 {
        // A post answered at once puts the server's socket in interactive mode, where
        // it defers ACKs to carry them on its next answer.
        c.post("lobby", "one more", &format!("p{i}"));
        while !matches!(c.ws.read().expect("a frame within the read timeout"), Message::Ping(_)) {}
        c.ws.flush().expect("the pong goes out"); // tungstenite queued it on the read
        let common::Stream::Plain(tcp) = c.ws.get_ref() else { unreachable!() };
        let sent = std::time::Instant::now();
        while unacked(tcp) > 0 && sent.elapsed() < Duration::from_millis(500) {
            std::thread::yield_now();
        }
        waits.push(sent.elapsed());
    }
    waits.sort();
    // The median of seven: one wait stretched by a busy machine does not decide it.
    assert!(waits[3] < Duration::from_millis(20), "pongs ACKed after {waits:?}");
}

#[test]
fn heartbeat_pings_are_spread_over_the_interval_not_sent_all_at_once() {
    // Pinging every socket in one pass stalls the messages in flight behind it.
    let server = TestServer::start_with(|c| {
        c.heartbeat_interval = Duration::from_millis(1000);
        c.heartbeat_timeout = Duration::from_secs(10);
    });
    let clients: Vec<Client> = (0..40).map(|i| server.connect(&format!("p{i}"))).collect();
    let first_pings: Vec<std::time::Instant> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || loop {
                if let Message::Ping(_) = c.ws.read().expect("a ping within the read timeout") {
                    return std::time::Instant::now();
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let earliest = first_pings.iter().min().unwrap();
    let spread = first_pings.iter().map(|t| t.duration_since(*earliest)).max().unwrap();
    assert!(spread >= Duration::from_millis(400), "40 first pings within {spread:?} of each other");
}

#[test]
fn a_history_larger_than_the_backlog_limit_does_not_make_a_reader_slow() {
    // Found by the soak: a resume from 0 in a busy room is one frame bigger than the
    // slow-consumer limit, and a healthy client was cut for it.
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.max_backlog_bytes = 64 * 1024;
    });
    let mut writer = server.connect("writer");
    writer.join("busy", None);
    for i in 0..1000 {
        writer.send(json!({"type": "msg", "room": "busy", "text": format!("{i} {}", "w".repeat(200))}));
        writer.expect("msg");
    }
    let mut late = server.connect("late");
    let (_, history) = late.join("busy", Some(0));
    assert_eq!(history["messages"].as_array().unwrap().len(), 1000);
    writer.send(json!({"type": "msg", "room": "busy", "text": "after"}));
    assert_eq!(late.expect("msg")["text"], "after", "still connected");
}

#[test]
fn once_a_burst_is_over_the_freed_heap_goes_back_to_the_kernel() {
    let server = TestServer::start_with(|c| {
        common::unlimited_rate(c);
        c.heap_trim_quiet = Duration::from_millis(200);
    });
    let mut flooder = server.connect("flooder");
    flooder.join("burst", None);
    server.wait_metric("natter_heap_trims_total", 0);
    for i in 0..natter::heap::BURST {
        flooder.send(json!({"type": "msg", "room": "burst", "text": format!("m{i}"), "id": format!("b{i}")}));
    }
    server.wait_metric("natter_heap_trims_total", 1);
}

/// By default one address cannot hold a thread per slow handshake without bound: past
/// the per-IP cap (a few hundred, never the total) it is answered 429, and the slots
/// come back when its connections go.
#[test]
fn one_address_holding_slow_handshakes_is_capped_by_default() {
    let cap = natter::config::Config::default().max_connections_per_ip;
    assert!((64..=1024).contains(&cap), "a default per-IP cap for the internet, not {cap}");
    let server = TestServer::start();
    // Connections that never finish their handshake: each holds a thread until the
    // handshake timeout.
    let slow: Vec<TcpStream> = (0..cap).map(|_| TcpStream::connect(server.ws).unwrap()).collect();
    common::wait_until(
        || {
            matches!(
                tungstenite::client(server.url("late"), TcpStream::connect(server.ws).unwrap()),
                Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) if r.status() == 429
            )
        },
        "the per-IP cap to refuse with 429",
    );
    drop(slow);
    common::wait_until(
        || tungstenite::client(server.url("back"), TcpStream::connect(server.ws).unwrap()).is_ok(),
        "the address's slots to free up",
    );
}
