//! The API over HTTP: the guard hands each connection whose request is for `/api/` on
//! the admin listener to these worker threads, which read the (capped) body, answer,
//! and close. A post waiting for its commit therefore never holds up the guard's poll
//! loop, the page or `/metrics`. Owns those threads and the reading of the request;
//! the answer itself is [`super::Api::handle`]'s.
//!
//! Only a request with a valid key from its head reaches a worker, and its body must
//! arrive within [`BODY_TIMEOUT`] in all: four callers without a key sending a body a
//! byte at a time once held all four workers (a real `GET` waited 34 s). Everything
//! refused from the head alone (no key, a bad head, a body over [`MAX_BODY`]) goes to
//! one refuser thread instead, which answers and then lingers: it reads and drops
//! what the caller still sends for up to [`LINGER`], so the caller reads the answer
//! rather than a connection reset (closing on unread bytes resets the connection).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use serde_json::{json, Value};

use super::routes::{error_body, status_of, ApiRequest};
use super::userdata::Export;
use super::{Api, Reply, MAX_BODY};
use crate::proxy::{self, Framing};

/// Threads answering API calls; each mostly waits on the dispatcher.
const WORKERS: usize = 4;
/// Connections waiting for a worker before new ones are answered 503.
const QUEUE: usize = 1024;
/// How long a caller may take to send the rest of its request, and to read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller may take to send its whole body, however it paces the bytes.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Refusals waiting for the refuser thread before new ones are just closed.
const REFUSALS: usize = 1024;
/// How long a refused connection is drained after its answer, so that the caller can
/// read it; bounded, since only the refuser thread lingers.
const LINGER: Duration = Duration::from_secs(2);
/// Most header lines a request may have.
const MAX_HEADERS: usize = 64;

/// Hands connections to the API's worker threads.
pub struct ApiHttp {
    api: Arc<Api>,
    queue: Sender<(TcpStream, Vec<u8>)>,
    refusals: Sender<(TcpStream, u16, Value)>,
}

impl ApiHttp {
    pub fn start(api: Arc<Api>) -> std::io::Result<ApiHttp> {
        let (queue, conns) = crossbeam_channel::bounded::<(TcpStream, Vec<u8>)>(QUEUE);
        for i in 0..WORKERS {
            let (api, conns) = (api.clone(), conns.clone());
            thread::Builder::new().name(format!("api-{i}")).spawn(move || {
                for (stream, buffered) in conns {
                    answer(&api, stream, buffered);
                }
            })?;
        }
        let (refusals, refused) = crossbeam_channel::bounded::<(TcpStream, u16, Value)>(REFUSALS);
        thread::Builder::new().name("api-refuser".into()).spawn(move || {
            for (stream, status, body) in refused {
                if stream.set_nonblocking(false).is_ok() && stream.set_write_timeout(Some(LINGER)).is_ok() {
                    respond(&stream, status, &body);
                    linger(&stream);
                }
            }
        })?;
        Ok(ApiHttp { api, queue, refusals })
    }

    /// Takes a connection whose request starts with `buffered`; answers 503 itself when
    /// every worker is busy and the queue is full.
    pub fn submit(&self, stream: TcpStream, buffered: Vec<u8>) {
        if let Err((status, body)) = self.admit(&buffered) {
            // A full refuser queue: the connection is just closed.
            let _ = self.refusals.try_send((stream, status, body));
            return;
        }
        if let Err(TrySendError::Full((stream, _)) | TrySendError::Disconnected((stream, _))) =
            self.queue.try_send((stream, buffered))
        {
            respond(&stream, 503, &json!({"error": {"code": "unavailable", "message": "the API is busy; retry"}}));
        }
    }
}

impl ApiHttp {
    /// What the head alone allows: a worker, or the refusal (no body is read for it).
    fn admit(&self, buffered: &[u8]) -> Result<(), (u16, Value)> {
        let bad = |message: &str| json!({"error": {"code": "bad_json", "message": message}});
        let req = match parse(buffered) {
            Ok(Some(req)) => req,
            Ok(None) => return Err((400, bad("malformed request head"))),
            Err(why) => return Err((400, bad(&why))),
        };
        if !self.api.authorized(req.authorization.as_deref()) {
            return Err(self.api.unauthorized(&req.method, &req.url));
        }
        if req.content_length > MAX_BODY {
            // Not read at all: refusing a 10 MB body costs nothing.
            let message = format!("the body is over {MAX_BODY} bytes");
            return Err((413, json!({"error": {"code": "too_long", "message": message}})));
        }
        Ok(())
    }
}

/// The request's parts the API needs, from a complete head.
struct Parsed {
    method: String,
    url: String,
    authorization: Option<String>,
    content_type: Option<String>,
    content_length: usize,
    head_len: usize,
}

/// Why a head is refused (400), in words for the caller.
fn parse(buf: &[u8]) -> Result<Option<Parsed>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = req.parse(buf).map_err(|e| format!("malformed request head: {e}"))?
    else {
        return Ok(None);
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_owned())
    };
    let content_length = match proxy::framing(req.headers).map_err(|e| e.to_string())? {
        // Past MAX_BODY either way: a length that does not fit is refused as too long.
        Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Framing::Chunked => return Err("chunked bodies are not taken: send Content-Length".into()),
    };
    Ok(Some(Parsed {
        method: req.method.unwrap_or("").to_owned(),
        url: req.path.unwrap_or("/").to_owned(),
        authorization: header("authorization"),
        content_type: header("content-type"),
        content_length,
        head_len,
    }))
}

fn answer(api: &Api, stream: TcpStream, mut buf: Vec<u8>) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(IO_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err()
    {
        return;
    }
    let bad = |message: &str| json!({"error": {"code": "bad_json", "message": message}});
    // The guard handed over a complete head; a body may still be on its way.
    let req = match parse(&buf) {
        Ok(Some(req)) => req,
        Ok(None) => return respond(&stream, 400, &bad("malformed request head")),
        Err(why) => return respond(&stream, 400, &bad(&why)),
    };
    if req.content_length > MAX_BODY {
        // Not read at all: refusing a 10 MB body costs nothing.
        let e = json!({"error": {"code": "too_long", "message": format!("the body is over {MAX_BODY} bytes")}});
        return respond(&stream, 413, &e);
    }
    let want = req.head_len + req.content_length;
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + BODY_TIMEOUT;
    while buf.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return; // too slow: nothing was done
        }
        match (&stream).read(&mut chunk) {
            Ok(0) | Err(_) => return, // the caller went away or stalled: nothing was done
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let from = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let request = ApiRequest {
        from: &from,
        method: &req.method,
        url: &req.url,
        content_type: req.content_type.as_deref(),
        body: &buf[req.head_len..want],
    };
    match api.handle(&request, req.authorization.as_deref()) {
        Reply::Json(status, value) => respond(&stream, status, &value),
        Reply::Export(export) => stream_export(&stream, &export),
    }
}

/// Streams a user's export as a chunked body: a caller that reads slowly holds this
/// worker (each write waits at most [`IO_TIMEOUT`]), never the dispatcher. A body cut
/// short ends without the last chunk, so the caller can tell.
fn stream_export(stream: &TcpStream, export: &Export) {
    let mut conn = match export.open() {
        Ok(conn) => conn,
        Err(e) => return respond(stream, status_of(e.code), &error_body(&e)),
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Disposition: attachment; filename=\"{}\"\r\nTransfer-Encoding: chunked\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        export.content_type(),
        export.file_name()
    );
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, Chunked(stream));
    let written = out
        .get_mut()
        .0
        .write_all(head.as_bytes())
        .and_then(|()| export.write(&mut conn, &mut out))
        .and_then(|()| out.flush())
        .and_then(|()| (&mut &*stream).write_all(b"0\r\n\r\n"));
    if let Err(e) = written {
        log::info!("api: export of {} not finished: {e}", export.uid);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Writes each buffer it is given as one HTTP/1.1 chunk.
struct Chunked<'a>(&'a TcpStream);

impl Write for Chunked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut s = self.0;
        s.write_all(format!("{:x}\r\n", buf.len()).as_bytes())?;
        s.write_all(buf)?;
        s.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The answer to a request for `/api/` on a listener without the API: the public
/// page port (the API is on the admin listener), or any listener without
/// `--api-key-file`.
pub fn elsewhere(api_on: bool) -> (u16, Value) {
    let message = if api_on {
        "the server API is served on the admin listener (--admin-bind)"
    } else {
        "the server API is off (no --api-key-file)"
    };
    (404, json!({"error": {"code": "not_found", "message": message}}))
}

fn respond(mut stream: &TcpStream, status: u16, body: &Value) {
    let body = body.to_string();
    let reason = tungstenite::http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if let Err(e) = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())) {
        log::debug!("api: response not delivered: {e}");
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Reads and drops what the caller still sends, until it closes or [`LINGER`] passes,
/// so that closing does not reset the connection under the answer it has not read.
fn linger(mut stream: &TcpStream) {
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
