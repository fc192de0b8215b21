//! Signing in by the first frame: a WebSocket upgraded from `/ws?auth=hello` must send
//! `{"type":"hello", "token"?, "name"?, "key"?}` as its first frame, within the
//! handshake timeout and in at most [`MAX_HELLO_BYTES`]; only then is its identity
//! known, and only then does the connection thread send `welcome` and register it.
//! Credentials sent this way never appear in a URL, so no proxy's access log holds them.
//!
//! Owns that wait and its refusals (an `error` frame, then close 1008, or 1009 for a
//! frame over the limit). Must never register a connection or touch chat state: the
//! caller does that with the identity this returns.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::protocol::WebSocket;
use tungstenite::{Error as WsError, Message};

use crate::config::Config;
use crate::delivery::outbox::{Conn, LINGER};
use crate::metrics::Metrics;
use crate::protocol::{wire, ErrorCode, ProtocolError};
use crate::transport::handshake::{admit_credentials, Admitted, Credentials, Refusal};
use crate::transport::wait::{self, Waited};

/// Largest `hello` frame: a token with a long `rooms` claim fits many times over.
pub const MAX_HELLO_BYTES: usize = 8 * 1024;

/// Why a connection got no identity from its first frame.
#[derive(Debug)]
pub enum HelloError {
    /// Nothing (or not a whole frame) within the deadline.
    Silent(Duration),
    /// The first frame was over [`MAX_HELLO_BYTES`].
    TooBig,
    /// The first frame was not a `hello` object.
    NotHello(String),
    /// A `hello` whose credentials the auth mode refuses.
    Refused(Refusal),
    /// The user is banned from the server (the ban's terms, in words).
    Banned(String),
    /// The client closed or the socket failed: nobody to answer.
    Gone,
}

impl HelloError {
    /// The close code, the error frame's code, and the text both carry.
    fn answer(&self) -> (u16, ErrorCode, String) {
        match self {
            HelloError::Silent(limit) => (
                1008,
                ErrorCode::Unauthorized,
                format!("hello expected: no sign-in frame within {} ms", limit.as_millis()),
            ),
            HelloError::TooBig => (1009, ErrorCode::TooLong, format!("hello too big: at most {MAX_HELLO_BYTES} bytes")),
            HelloError::NotHello(why) => (1008, ErrorCode::Unauthorized, format!("hello expected: {why}")),
            HelloError::Refused(r) => {
                let code = if r.status.as_u16() == 400 { ErrorCode::BadField } else { ErrorCode::Unauthorized };
                (1008, code, r.body.to_owned())
            }
            HelloError::Banned(text) => (1008, ErrorCode::Forbidden, text.clone()),
            HelloError::Gone => (1000, ErrorCode::Unauthorized, String::new()),
        }
    }
}

#[derive(serde::Deserialize)]
struct Hello {
    #[serde(rename = "type")]
    kind: String,
    #[serde(flatten)]
    credentials: Credentials,
}

/// Waits for the `hello` frame on a just-upgraded socket (its reads never block:
/// the wait is a `poll` on `stream`) and returns who it says the client is. Pings are
/// answered meanwhile; anything else first is refused.
pub fn await_hello<S: Read + Write>(
    ws: &mut WebSocket<S>,
    conn: &Conn,
    stream: &TcpStream,
    cfg: &Config,
) -> Result<Admitted, HelloError> {
    let deadline = Instant::now() + cfg.handshake_timeout;
    ws.set_config(|c| {
        c.max_message_size = Some(MAX_HELLO_BYTES);
        c.max_frame_size = Some(MAX_HELLO_BYTES);
    });
    let text = loop {
        match ws.read() {
            Ok(Message::Text(text)) => break text,
            Ok(Message::Ping(payload)) => {
                let _ = conn.send(wire::pong_frame(&payload));
            }
            Ok(Message::Binary(_)) => return Err(HelloError::NotHello("a binary frame".into())),
            Ok(Message::Close(_)) => return Err(HelloError::Gone),
            Ok(Message::Pong(_) | Message::Frame(_)) => {}
            Err(WsError::Io(e)) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || wait::wait_readable(stream, left) == Waited::TimedOut {
                    return Err(HelloError::Silent(cfg.handshake_timeout));
                }
            }
            Err(WsError::Capacity(_)) => return Err(HelloError::TooBig),
            Err(_) => return Err(HelloError::Gone),
        }
    };
    ws.set_config(|c| {
        c.max_message_size = Some(cfg.max_frame_bytes);
        c.max_frame_size = Some(cfg.max_frame_bytes);
    });
    let hello: Hello = serde_json::from_str(text.as_str())
        .map_err(|e| HelloError::NotHello(format!("the first frame must be a JSON object: {e}")))?;
    if hello.kind != "hello" {
        return Err(HelloError::NotHello(format!("the first frame was `{}`, not `hello`", hello.kind)));
    }
    admit_credentials(hello.credentials, cfg).map_err(HelloError::Refused)
}

/// Tells the client why it is not signed in (an `error` frame, then the close frame
/// with the same text), counts the refusal, and ends the connection.
pub fn refuse(conn: &Conn, e: &HelloError, metrics: &Metrics) {
    let (code, error, text) = e.answer();
    if !matches!(e, HelloError::Gone) {
        let refusal = Refusal::new(tungstenite::http::StatusCode::UNAUTHORIZED, "hello refused", text.clone());
        refusal.record(&conn.peer, metrics);
        let _ = conn.send(wire::encode(&ProtocolError::new(error, text.clone()).to_server_msg()));
        conn.close(code, close_text(&text), false);
        conn.flush_until(Instant::now() + LINGER);
    }
    conn.shutdown_write();
    crate::transport::context::linger(conn.stream());
}

/// A close frame's reason holds at most 123 bytes (RFC 6455 §5.5): cut at a character.
fn close_text(text: &str) -> &str {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
