//! Native TLS (`--tls-cert`/`--tls-key`): a client that verifies the chain against a
//! CA made for the test chats and resumes over `wss://`, and over the fallback
//! transport on the same port; plain text, garbage and
//! stalled handshakes are refused or closed in time; a TLS client that stops reading
//! never stalls the others; SIGHUP swaps the certificate for new connections only; a
//! restarted process resumes the sessions its predecessor issued.

mod common;
mod common_tls;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Client, Proc, TestServer};
use common_tls::{Issued, TestCa};
use natter::tls::Tls;
use serde_json::json;

fn tls_server(issued: &Issued, tweak: impl FnOnce(&mut natter::config::Config)) -> TestServer {
    let tls = Tls::load(&issued.cert, &issued.key).expect("the test pair loads");
    TestServer::start_with(|c| {
        c.tls = Some(tls);
        tweak(c);
    })
}

/// A CA made for the test and a server whose certificate it issued (read at start,
/// so the files need not outlive this).
fn ca_and_server(tweak: impl FnOnce(&mut natter::config::Config)) -> (TestCa, Issued, TestServer) {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let issued = ca.issue(dir.path(), "server", 1);
    let server = tls_server(&issued, tweak);
    (ca, issued, server)
}

fn wss(server_ws: std::net::SocketAddr, name: &str) -> String {
    format!("wss://localhost:{}/ws?name={name}", server_ws.port())
}

/// The DER of the certificate the server presented on `c`'s connection.
fn served_cert(c: &Client) -> Vec<u8> {
    match c.ws.get_ref() {
        common::Stream::Tls(s) => s.conn.peer_certificates().expect("a certificate")[0].to_vec(),
        common::Stream::Plain(_) => panic!("not a TLS client"),
    }
}

#[test]
fn a_verifying_client_chats_and_resumes_over_wss() {
    let (ca, issued, server) = ca_and_server(|_| {});
    let tls = ca.client_config();

    let mut alice = Client::connect_tls(&wss(server.ws, "alice"), &tls);
    assert_eq!(served_cert(&alice), issued.der);
    let mut bob = Client::connect_tls(&wss(server.ws, "bob"), &tls);
    alice.join("lobby", None);
    bob.join("lobby", None);
    let first = alice.post("lobby", "hello over TLS", "m1");
    assert_eq!(bob.expect("msg")["text"], "hello over TLS");
    drop(bob);
    alice.post("lobby", "missed 1", "m2");
    alice.post("lobby", "missed 2", "m3");

    let mut bob = Client::connect_tls(&wss(server.ws, "bob"), &tls);
    let (_, history) = bob.join("lobby", first["seq"].as_u64());
    let texts: Vec<_> = history["messages"].as_array().unwrap().iter().map(|m| m["text"].clone()).collect();
    assert_eq!(texts, vec![json!("missed 1"), json!("missed 2")], "resume gives exactly what was missed");

    // The page side speaks TLS too, and hands out the wss:// URL.
    let (status, body) = common_tls::https_get(server.http, "/config.json", &tls);
    assert_eq!(status, 200);
    let ws_url: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ws_url["ws_url"], format!("wss://localhost:{}/ws", server.ws.port()));
    assert_eq!(common_tls::https_get(server.http, "/healthz", &tls).0, 200);

    // A client that does not trust the test CA gets no session.
    let other = TestCa::new().client_config();
    let stream = TcpStream::connect(server.ws).unwrap();
    let session = rustls::ClientConnection::new(other, "localhost".try_into().unwrap()).unwrap();
    let mut tls_stream = rustls::StreamOwned::new(session, stream);
    let err = tls_stream.write_all(b"GET /ws HTTP/1.1\r\n\r\n").and_then(|_| tls_stream.flush()).unwrap_err();
    assert!(err.to_string().contains("invalid peer certificate"), "{err}");
}

/// The fallback transport over native TLS: `GET /sse` and `POST /send` on the `wss://`
/// port, verified against the test CA, chat with a WebSocket client in one room.
#[test]
fn the_fallback_transport_works_over_native_tls() {
    let (ca, _, server) = ca_and_server(|_| {});
    let tls = ca.client_config();

    let mut stream = common_tls::tls_connect(server.ws, &tls);
    stream.get_mut().write_all(b"GET /sse?name=alice HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut status = String::new();
    stream.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let welcome = common_tls::next_data(&mut stream);
    assert_eq!(welcome["type"], "welcome");
    let session = welcome["session"].as_str().unwrap().to_owned();

    let mut up = common_tls::tls_connect(server.ws, &tls);
    let (status, answer) =
        common_tls::post_send(&mut up, &session, &json!({"type": "join", "room": "lobby", "id": "j1"}));
    assert_eq!(status, 200, "{answer}");
    while common_tls::next_data(&mut stream)["type"] != "history" {}

    let mut bob = Client::connect_tls(&wss(server.ws, "bob"), &tls);
    bob.join("lobby", None);
    bob.post("lobby", "to the stream", "b1");
    loop {
        let event = common_tls::next_data(&mut stream);
        if event["type"] == "msg" {
            assert_eq!(event["text"], "to the stream");
            break;
        }
    }
    // The same kept-alive TLS connection carries the next POST.
    let (status, answer) = common_tls::post_send(
        &mut up,
        &session,
        &json!({"type": "msg", "room": "lobby", "text": "from the stream", "id": "a1"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"ack\""), "{answer}");
    assert_eq!(bob.expect("msg")["text"], "from the stream");
}

/// Sends `bytes` to a TLS port and returns everything the server says until it closes,
/// and how long that took.
fn talk(addr: std::net::SocketAddr, bytes: &[u8]) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let t0 = Instant::now();
    s.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server neither answered nor closed: {e}"),
        }
    }
    (got, t0.elapsed())
}

#[test]
fn plain_text_garbage_and_stalled_handshakes_end_cleanly_and_in_time() {
    let (ca, _, server) = ca_and_server(|c| c.handshake_timeout = Duration::from_millis(800));

    let upgrade = format!(
        "GET /ws?name=plain HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.ws
    );
    for port in [server.ws, server.http] {
        let (answer, _) = talk(port, upgrade.as_bytes());
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400") && answer.contains("speaks TLS"), "plain text refused: {answer}");
    }

    // A ClientHello one byte long: a TLS alert, then the close.
    let garbage = [0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0xFF];
    let (answer, took) = talk(server.ws, &garbage);
    assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:?}");
    assert!(took < Duration::from_secs(3), "garbage closed at once, took {took:?}");

    // A hello cut short, then silence; and a client that never says anything.
    for bytes in [&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00][..], &[][..]] {
        let (_, took) = talk(server.ws, bytes);
        assert!(took >= Duration::from_millis(700), "closed by the timeout, not before: {took:?}");
        assert!(took < Duration::from_secs(4), "closed within the handshake timeout: {took:?}");
    }

    // The server still serves verifying clients.
    Client::connect_tls(&wss(server.ws, "after"), &ca.client_config()).join("lobby", None);
}

#[test]
fn a_tls_client_that_stops_reading_is_cut_and_the_others_get_everything() {
    const N: usize = 2000;
    const BATCH: usize = 20;
    let (ca, _, server) = ca_and_server(|c| {
        common::unlimited_rate(c);
        c.max_backlog_bytes = 256 * 1024;
    });
    let tls = ca.client_config();
    let mut sleeper = Client::connect_tls_with(&wss(server.ws, "sleeper"), &tls, common::small_receive_buffer);
    sleeper.join("busy", None);
    let mut reader = Client::connect_tls(&wss(server.ws, "reader"), &tls);
    reader.join("busy", None);
    let mut flooder = Client::connect_tls(&wss(server.ws, "flooder"), &tls);
    flooder.join("busy", None);
    let text = "y".repeat(3000);
    let t0 = Instant::now();
    common::flood_paced(&mut flooder, &mut reader, "busy", N, BATCH, &text);
    eprintln!("{N} messages of 3 KB to two TLS readers while one slept: {:?}", t0.elapsed());
    // The sleeper reads now (within the close grace): its stream still decrypts,
    // whole records, then the close frame.
    let (code, reason) = sleeper.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "slow consumer"));
    server.wait_metric("natter_closes_total{reason=\"slow_consumer\"}", 1);
}

fn write_pair(from: &Issued, to: &Issued) {
    std::fs::copy(&from.cert, &to.cert).unwrap();
    std::fs::copy(&from.key, &to.key).unwrap();
}

#[test]
fn sighup_serves_the_new_certificate_to_new_connections_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let live = ca.issue(dir.path(), "live", 1);
    let second = ca.issue(dir.path(), "second", 2);
    let data = tempfile::tempdir().unwrap();
    let (cert, key) = (live.cert.to_str().unwrap(), live.key.to_str().unwrap());
    let proc = Proc::start(data.path(), None, &["--tls-cert", cert, "--tls-key", key]);
    let tls = ca.client_config();
    let url = |name: &str| wss(proc.ws, name);

    let mut old = Client::connect_tls(&url("old"), &tls);
    assert_eq!(served_cert(&old), live.der);
    old.join("r", None);

    write_pair(&second, &live);
    proc.signal(libc::SIGHUP);
    common::wait_until(|| served_cert(&Client::connect_tls(&url("probe"), &tls)) == second.der, "the new serial");
    old.post("r", "still here on the old session", "o1");

    // A bad pair on the next reload is refused; the second pair stays in service.
    std::fs::write(&live.key, "not a key").unwrap();
    proc.signal(libc::SIGHUP);
    std::fs::write(&live.cert, "not a cert").unwrap();
    proc.signal(libc::SIGHUP);
    let mut newer = Client::connect_tls(&url("newer"), &tls);
    assert_eq!(served_cert(&newer), second.der);
    newer.join("r", None);
    old.post("r", "and still", "o2");
    assert_eq!(newer.expect("msg")["text"], "and still");
}

#[test]
fn a_missing_or_bad_pair_at_start_is_a_clear_error_and_a_failed_exit() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let good = ca.issue(dir.path(), "good", 1);
    let other = ca.issue(dir.path(), "other", 2);
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let cases = [
        (dir.path().to_owned(), good.key.clone(), "Is a directory"),
        (empty.clone(), good.key.clone(), "no PEM certificate"),
        (good.cert.clone(), empty.clone(), "no PEM private key"),
        (good.cert.clone(), other.key.clone(), "does not belong"),
        (dir.path().join("missing.crt"), good.key.clone(), "No such file"),
    ];
    for (cert, key, says) in cases {
        let out = Command::new(common::natter_bin())
            .args(["serve", "--http-port", "0", "--ws-port", "0", "--tls-cert"])
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert:?}: natter must not start");
        assert!(stderr.contains(says), "{cert:?}/{key:?}: stderr says {stderr:?}, expected {says:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"), "never serves plain instead");
    }
}

/// One HTTPS request to `addr` with `tls`; how its handshake went.
fn handshake_kind(addr: std::net::SocketAddr, tls: &std::sync::Arc<rustls::ClientConfig>) -> rustls::HandshakeKind {
    let mut s = common_tls::tls_connect(addr, tls);
    write!(s.get_mut(), "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out); // the ticket comes after the handshake: read it all
    assert!(out.starts_with(b"HTTP/1.1 "), "an HTTP answer over TLS");
    s.get_ref().conn.handshake_kind().expect("the handshake finished")
}

/// An upgrade or restart of natter on the same data dir resumes the TLS sessions the
/// process before it issued (the ticket key lives in the data dir), so thousands of
/// clients coming back at once skip the full handshake; another data dir's key does not.
#[test]
fn a_restarted_natter_resumes_its_predecessors_sessions() {
    let (data, other, certs) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ca = TestCa::new();
    let issued = ca.issue(certs.path(), "server", 1);
    let mut config = rustls::ClientConfig::clone(&ca.client_config());
    config.resumption = rustls::client::Resumption::in_memory_sessions(8);
    let tls = std::sync::Arc::new(config);
    let args = ["--tls-cert", issued.cert.to_str().unwrap(), "--tls-key", issued.key.to_str().unwrap()];

    let mut first = Proc::start(data.path(), None, &args);
    assert_eq!(handshake_kind(first.http, &tls), rustls::HandshakeKind::Full);
    assert_eq!(handshake_kind(first.http, &tls), rustls::HandshakeKind::Resumed, "the same process resumes");
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait(Duration::from_secs(10)), Some(0));

    let second = Proc::start(data.path(), None, &args);
    assert_eq!(handshake_kind(second.http, &tls), rustls::HandshakeKind::Resumed, "the next process resumes");
    drop(second);

    let elsewhere = Proc::start(other.path(), None, &args);
    assert_eq!(handshake_kind(elsewhere.http, &tls), rustls::HandshakeKind::Full, "another key opens no ticket");
}
