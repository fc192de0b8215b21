//! natter behind the shipped nginx site (deploy/nginx-natter.conf, run on loopback by
//! scripts/nginx-for-tests.sh with a certificate from a CA made for the test):
//! the page and `wss://` through nginx with the chain verified, the per-IP cap
//! applied per `X-Forwarded-For` address, and a spoofed header sent straight to
//! natter from an untrusted peer ignored. nginx comes from scripts/ensure-nginx.sh.

mod common;
mod common_tls;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use common::{Client, Proc, Stream};
use common_tls::TestCa;
use serde_json::json;
use tungstenite::client::IntoClientRequest;

/// nginx running the shipped site; stopped by its PID when dropped.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &std::path::Path, natter: &Proc, cert: &std::path::Path, key: &std::path::Path) -> Nginx {
        let (port, plain) = (common::free_port(), common::free_port());
        let child = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/nginx-for-tests.sh"))
            .arg(dir.join("nginx"))
            .args([port, natter.http.port(), natter.ws.port()].map(|p| p.to_string()))
            .args([cert, key])
            .arg(plain.to_string())
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx (scripts/ensure-nginx.sh installs it)");
        let mut nginx = Nginx { child, port };
        common::wait_until(
            || {
                assert!(nginx.child.try_wait().unwrap().is_none(), "nginx exited: see {}", dir.display());
                TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
            "nginx to listen",
        );
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `wss://` upgrade through `addr` with an `X-Forwarded-For` the client wrote:
/// the status and, on 101, the client.
fn wss_with_xff(addr: SocketAddr, xff: &str, tls: &Arc<rustls::ClientConfig>) -> (u16, Option<Client>) {
    let url = format!("wss://localhost:{}/ws?name=x", addr.port());
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("X-Forwarded-For", xff.parse().unwrap());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let session = rustls::ClientConnection::new(tls.clone(), "localhost".try_into().unwrap()).unwrap();
    let stream = Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream)));
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => {
            let mut c = Client { ws, welcome: serde_json::Value::Null };
            c.welcome = c.expect("welcome");
            (101, Some(c))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => (r.status().as_u16(), None),
        Err(e) => panic!("handshake through nginx: {e}"),
    }
}

/// A plain upgrade straight to natter from 127.0.0.2 with a spoofed header.
fn direct_from_untrusted(ws: SocketAddr, xff: &str) -> (u16, Option<tungstenite::WebSocket<TcpStream>>) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s.connect(&ws.into()).unwrap();
    let stream: TcpStream = s.into();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut req = format!("ws://{ws}/ws?name=direct").into_client_request().unwrap();
    req.headers_mut().insert("X-Forwarded-For", xff.parse().unwrap());
    match tungstenite::client(req, stream) {
        Ok((ws, _)) => (101, Some(ws)),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => (r.status().as_u16(), None),
        Err(e) => panic!("direct handshake: {e}"),
    }
}

#[test]
fn behind_the_shipped_nginx_site_clients_are_told_apart_by_forwarded_address() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let issued = ca.issue(dir.path(), "server", 1);
    let natter =
        Proc::start(&dir.path().join("data"), None, &["--trusted-proxy", "127.0.0.1", "--max-connections-per-ip", "1"]);
    let nginx = Nginx::start(dir.path(), &natter, &issued.cert, &issued.key);
    let front: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let tls = ca.client_config();

    let (status, page) = common_tls::https_get(front, "/", &tls);
    assert!(status == 200 && page.to_lowercase().contains("<html"), "the page through nginx: {status}");
    let (status, health) = common_tls::https_get(front, "/healthz", &tls);
    assert!(status == 200 && health.contains("\"status\":\"ok\""));
    assert_eq!(common_tls::https_get(front, "/metrics", &tls).0, 404, "/metrics is not public");

    // nginx appends the peer (127.0.0.1, trusted) to what the client sent: natter
    // takes the client's entry, and caps each address at one connection.
    let (a, alice) = wss_with_xff(front, "198.51.100.1", &tls);
    let (b, bob) = wss_with_xff(front, "198.51.100.2", &tls);
    let (c, _) = wss_with_xff(front, "198.51.100.1", &tls);
    assert_eq!((a, b, c), (101, 101, 429), "the per-IP cap per X-Forwarded-For address");
    let (mut alice, mut bob) = (alice.unwrap(), bob.unwrap());
    alice.join("lobby", None);
    bob.join("lobby", None);
    alice.post("lobby", "through nginx", "n1");
    assert_eq!(bob.expect("msg")["text"], "through nginx");

    // The HTTP fallback through the same site: an event stream that nginx must not
    // buffer, and POSTs on a kept-alive connection, as the page uses them.
    let mut stream = common_tls::tls_connect(front, &tls);
    stream
        .get_mut()
        .write_all(b"GET /sse?name=carol HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-For: 198.51.100.3\r\n\r\n")
        .unwrap();
    let welcome = common_tls::next_data(&mut stream);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    let session = welcome["session"].as_str().unwrap().to_owned();
    let mut up = common_tls::tls_connect(front, &tls);
    let (status, answer) = common_tls::post_send(&mut up, &session, &json!({"type": "join", "room": "lobby"}));
    assert_eq!(status, 200, "{answer}");
    while common_tls::next_data(&mut stream)["type"] != "history" {}
    bob.post("lobby", "down the stream", "n2");
    assert_eq!(alice.expect("msg")["text"], "down the stream");
    loop {
        let event = common_tls::next_data(&mut stream);
        if event["type"] == "msg" {
            assert_eq!(event["text"], "down the stream", "delivered as written, not buffered");
            break;
        }
    }
    let (status, answer) = common_tls::post_send(
        &mut up,
        &session,
        &json!({"type": "msg", "room": "lobby", "text": "up the post", "id": "c1"}),
    );
    assert_eq!((status, answer.contains("\"ack\"")), (200, true), "{answer}");
    assert_eq!(bob.expect("msg")["text"], "up the post");

    // Straight to natter from an untrusted peer, the header is ignored: both count as
    // 127.0.0.2.
    let (first, _held) = direct_from_untrusted(natter.ws, "203.0.113.1");
    assert_eq!(first, 101);
    assert_eq!(direct_from_untrusted(natter.ws, "203.0.113.2").0, 429);
}

#[test]
fn the_shipped_nginx_site_logs_requests_without_their_query_strings() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let issued = ca.issue(dir.path(), "server", 1);
    let natter = Proc::start(&dir.path().join("data"), None, &["--trusted-proxy", "127.0.0.1"]);
    let nginx = Nginx::start(dir.path(), &natter, &issued.cert, &issued.key);
    let front: SocketAddr = ([127, 0, 0, 1], nginx.port).into();
    let tls = ca.client_config();

    // What clients from before the first-frame sign-in sent: credentials in the query.
    let secrets = ["tokensecret0123456789", "keysecret0123456789ab", "sessionsecret012345678"];
    assert_eq!(common_tls::https_get(front, &format!("/?token={}", secrets[0]), &tls).0, 200);
    let (status, _) = wss_with_xff_path(front, &format!("/ws?name=old&key={}", secrets[1]), &tls);
    assert_eq!(status, 101);
    let mut up = common_tls::tls_connect(front, &tls);
    let body = r#"{"type":"ping"}"#;
    write!(
        up.get_mut(),
        "POST /send?session={} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        secrets[2],
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(up.get_mut(), &mut answer);
    assert!(answer.starts_with("HTTP/1.1 404"), "no such session: {answer}");

    let log = dir.path().join("nginx/access.log");
    let mut text = String::new();
    common::wait_until(
        || {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            ["GET / ", "GET /ws ", "POST /send "].iter().all(|r| text.contains(r))
        },
        "nginx to log the three requests",
    );
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} in the access log:\n{text}");
    }
    assert!(!text.contains('?'), "no query at all:\n{text}");
}

/// A `wss://` upgrade through `addr` to `path`; the status (the client is dropped).
fn wss_with_xff_path(addr: SocketAddr, path: &str, tls: &Arc<rustls::ClientConfig>) -> (u16, ()) {
    let url = format!("wss://localhost:{}{path}", addr.port());
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let session = rustls::ClientConnection::new(tls.clone(), "localhost".try_into().unwrap()).unwrap();
    let stream = Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream)));
    match tungstenite::client(url, stream) {
        Ok((mut ws, _)) => {
            let _ = ws.close(None);
            let _ = ws.flush();
            (101, ())
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => (r.status().as_u16(), ()),
        Err(e) => panic!("handshake through nginx: {e}"),
    }
}
