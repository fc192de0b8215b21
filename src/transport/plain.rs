//! Plain HTTP on the WebSocket listener: the fallback transport's `GET /sse`, its
//! ticket `POST /sse`, and `POST /send`, uploads (`POST /upload`) and file fetches
//! (`GET /files/…`) (and their CORS preflights) are recognised here from the request head,
//! which the connection thread reads before any upgrade; everything else goes on to
//! the WebSocket handshake with the bytes already read.
//!
//! They are served here, not by tiny_http, because natter must hold the raw socket:
//! an SSE stream is one more socket for the writer shards, written without blocking
//! through its outbox like a WebSocket. This module reads heads and writes whole
//! answers; it never touches chat state.

use std::io::Read;

use bytes::Bytes;
use tungstenite::handshake::server::Request;
use tungstenite::http::{self, StatusCode};

use crate::config::Config;
use crate::delivery::outbox::{Conn, Flush, LINGER};
use crate::metrics::Metrics;
use crate::store::files::sign::FILES_PATH;
use crate::transport::handshake::{check_origin, Refusal};

/// The fallback transport's downstream: Server-Sent Events.
pub const SSE_PATH: &str = "/sse";
/// The fallback transport's upstream: client messages as JSON.
pub const SEND_PATH: &str = "/send";
/// Uploads: one file as the body, credentials in headers (transport/upload.rs).
pub const UPLOAD_PATH: &str = "/upload";
/// Largest request head read; more is refused with 431.
const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed in a head.
const MAX_HEADERS: usize = 64;

/// What the connection is, once its first line is known.
#[derive(Debug)]
pub enum Route {
    /// Anything else: the WebSocket handshake, replaying these bytes first.
    WebSocket(Vec<u8>),
    /// `GET /sse`.
    Sse(Request),
    /// `POST /sse`: credentials for a stream ticket, with the body bytes already read.
    Ticket(Request, Vec<u8>),
    /// `POST /send`, with the body bytes already read.
    Send(Request, Vec<u8>),
    /// `POST /upload`, with the body bytes already read.
    Upload(Request, Vec<u8>),
    /// `GET` or `HEAD /files/…`, with the bytes read past the head (a next request).
    File(Request, Vec<u8>),
    /// `OPTIONS` on either path: a CORS preflight.
    Preflight(Request),
    /// One of the fallback paths with a head that cannot be served.
    Refused(Refusal),
}

/// Reads until the route is known, starting with `buf` (bytes of the request already
/// read: a kept-alive connection's next request). `None` when the client went away or
/// timed out.
#[inline(never)]
pub fn read_route(input: &mut impl Read, mut buf: Vec<u8>) -> Option<Route> {
    buf.reserve(1024);
    let mut chunk = [0u8; 2048];
    let mut ours = None;
    // Bytes already there are looked at before anything is read.
    let mut unread = !buf.is_empty();
    loop {
        if !std::mem::take(&mut unread) {
            let n = match input.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
        }
        if ours.is_none() {
            let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
                if buf.len() > MAX_HEAD {
                    return Some(Route::WebSocket(buf));
                }
                continue;
            };
            if !is_fallback(&buf[..line_end]) {
                return Some(Route::WebSocket(buf));
            }
            ours = Some(());
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(parse(&buf, end + 4));
        }
        if buf.len() > MAX_HEAD {
            return Some(Route::Refused(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request head too large",
                format!("head over {MAX_HEAD} bytes"),
            )));
        }
    }
}

/// True when a request line names one of the fallback paths.
fn is_fallback(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let _method = parts.next();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    path == SSE_PATH.as_bytes()
        || path == SEND_PATH.as_bytes()
        || path == UPLOAD_PATH.as_bytes()
        || path.starts_with(FILES_PATH.as_bytes())
}

fn parse(buf: &[u8], head_len: usize) -> Route {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let bad = |detail: String| Route::Refused(Refusal::new(StatusCode::BAD_REQUEST, "bad request", detail));
    match parsed.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return bad("partial head".into()),
        Err(e) => return bad(e.to_string()),
    }
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else { return bad("no method".into()) };
    // A `/send` body is read by its one Content-Length; anything ambiguous is refused
    // (and the connection closed) before a byte of it is taken for a request.
    if let Err(e) = crate::proxy::framing(parsed.headers) {
        return bad(e.to_string());
    }
    let version = if parsed.version == Some(0) { http::Version::HTTP_10 } else { http::Version::HTTP_11 };
    let mut builder = http::Request::builder().method(method).uri(path).version(version);
    for h in parsed.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let req = match builder.body(()) {
        Ok(r) => r,
        Err(e) => return bad(e.to_string()),
    };
    let path = req.uri().path().to_owned();
    match (req.method().as_str(), path.as_str()) {
        ("OPTIONS", _) => Route::Preflight(req),
        ("GET", SSE_PATH) => Route::Sse(req),
        ("POST", SSE_PATH) => Route::Ticket(req, buf[head_len..].to_vec()),
        ("POST", SEND_PATH) => Route::Send(req, buf[head_len..].to_vec()),
        ("POST", UPLOAD_PATH) => Route::Upload(req, buf[head_len..].to_vec()),
        ("GET" | "HEAD", p) if p.starts_with(FILES_PATH) => Route::File(req, buf[head_len..].to_vec()),
        (m, p) => Route::Refused(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: GET /sse, POST /sse, POST /send, POST /upload, GET /files/",
            format!("{m} {p}"),
        )),
    }
}

/// The `Origin` to name in `Access-Control-Allow-Origin`, when the request has one
/// and it is allowed: a page on another port (the HTTP side) may then read answers.
pub fn cors_origin(req: &Request, cfg: &Config) -> Option<String> {
    let origin = req.headers().get("origin")?.to_str().ok()?;
    check_origin(req, cfg).ok().map(|()| origin.to_owned())
}

/// True when the client lets the connection carry another request after this one
/// (HTTP/1.1 without `Connection: close`).
pub fn keeps_alive(req: &Request) -> bool {
    let close = req
        .headers()
        .get_all("connection")
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))));
    req.version() == http::Version::HTTP_11 && !close
}

/// A complete HTTP response (body known); with `keep_alive` the connection stays open
/// for the next request, else it closes after this one.
pub fn response(status: StatusCode, content_type: &str, body: &[u8], cors: Option<&str>, keep_alive: bool) -> Bytes {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {connection}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    head.push_str(&cors_headers(cors));
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    Bytes::from(bytes)
}

/// The head of an SSE stream (its length is its life: no Content-Length).
pub fn stream_head(cors: Option<&str>) -> Bytes {
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n\
         Connection: close\r\nX-Accel-Buffering: no\r\n",
    );
    head.push_str(&cors_headers(cors));
    head.push_str("\r\n");
    Bytes::from(head)
}

fn cors_headers(cors: Option<&str>) -> String {
    match cors {
        Some(origin) => format!("Access-Control-Allow-Origin: {origin}\r\nVary: Origin\r\n"),
        None => String::new(),
    }
}

/// Answers a CORS preflight: 204 with what the fallback accepts, or the Origin refusal.
pub fn preflight(conn: &Conn, req: &Request, cfg: &Config, metrics: &Metrics) {
    if let Err(r) = check_origin(req, cfg) {
        return refuse(conn, &r, None, metrics);
    }
    let origin = cors_origin(req, cfg);
    let mut head = String::from(
        "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Methods: GET, POST\r\n\
         Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID, X-Natter-Session, X-Natter-Key, X-Natter-Name, Range\r\n\
         Access-Control-Max-Age: 600\r\nContent-Length: 0\r\nConnection: close\r\n",
    );
    head.push_str(&cors_headers(origin.as_deref()));
    head.push_str("\r\n");
    answer(conn, Bytes::from(head));
}

/// Answers with a refusal's status and text (recorded like a refused handshake).
pub fn refuse(conn: &Conn, r: &Refusal, cors: Option<&str>, metrics: &Metrics) {
    r.record(&conn.peer, metrics);
    let body = format!("{}\n", r.body);
    answer(conn, response(r.status, "text/plain; charset=utf-8", body.as_bytes(), cors, false));
}

/// Writes a whole answer through the outbox and keeps the connection; false when it
/// could not all be written within [`LINGER`] (then the connection is done).
pub fn reply(conn: &Conn, bytes: Bytes) -> bool {
    conn.send(bytes).is_ok() && conn.flush_until(std::time::Instant::now() + LINGER) == Flush::Done
}

/// Writes a whole answer through the outbox, then ends the connection gracefully.
pub fn answer(conn: &Conn, bytes: Bytes) {
    if conn.send(bytes).is_ok() {
        conn.flush_until(std::time::Instant::now() + LINGER);
    }
    crate::transport::context::linger(conn.stream());
}
