//! Real client addresses: `X-Forwarded-For` and `X-Real-IP` count only from
//! `--trusted-proxy` peers, for the per-IP cap; a spoofed header straight from a
//! client is ignored; huge and garbage headers are handled.

mod common;

use std::net::TcpStream;

use common::TestServer;
use tungstenite::client::IntoClientRequest;

/// Opens a WebSocket with `headers`; the HTTP status of a refusal, or 101.
fn connect_with(server: &TestServer, headers: &[(&str, &str)]) -> (u16, Option<tungstenite::WebSocket<TcpStream>>) {
    let mut req = server.url("p").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().append(tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let stream = TcpStream::connect(server.ws).unwrap();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    match tungstenite::client(req, stream) {
        Ok((ws, resp)) => (resp.status().as_u16(), Some(ws)),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => (resp.status().as_u16(), None),
        Err(e) => panic!("handshake: {e}"),
    }
}

#[test]
fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 1);
    let (status, _held) = connect_with(&server, &[("X-Forwarded-For", "198.51.100.1")]);
    assert_eq!(status, 101);
    let (status, _) = connect_with(&server, &[("X-Forwarded-For", "198.51.100.2"), ("X-Real-IP", "198.51.100.3")]);
    assert_eq!(status, 429, "both are 127.0.0.1 to natter: the header is not believed");
}

#[test]
fn behind_a_trusted_proxy_the_cap_applies_per_forwarded_address() {
    let server = TestServer::start_with(|c| {
        c.max_connections_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    });
    let (a, _a) = connect_with(&server, &[("X-Forwarded-For", "198.51.100.1")]);
    // The client wrote the left entry itself; the proxy appended the right one.
    let (b, _b) = connect_with(&server, &[("X-Forwarded-For", "198.51.100.1, 198.51.100.2")]);
    let (c, _) = connect_with(&server, &[("X-Forwarded-For", "198.51.100.1")]);
    assert_eq!((a, b, c), (101, 101, 429), "one connection per forwarded address");
    let (d, _d) = connect_with(&server, &[("X-Real-IP", "198.51.100.3")]);
    assert_eq!(d, 101, "X-Real-IP names the client when there is no X-Forwarded-For");

    // 1,000 entries, or entries that are not addresses: the proxy's own address counts.
    let huge = vec!["127.0.0.1"; 1000].join(", ");
    let (e, _e) = connect_with(&server, &[("X-Forwarded-For", &huge)]);
    let (f, _) = connect_with(&server, &[("X-Forwarded-For", "<script>, unknown, ")]);
    assert_eq!((e, f), (101, 429), "garbage falls back to the peer, which is then capped");
}
