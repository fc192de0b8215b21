//! `GET /files/ID?room=…&exp=…&sig=…`: a file, for whoever holds a signed URL that has
//! not expired (store/files/sign.rs), when the file was posted in that room. The type
//! is the one sniffed from the bytes at upload: PNG, JPEG, GIF and WebP are served
//! inline, everything else (SVG and HTML included) as an `attachment` of type
//! `application/octet-stream`; always with `nosniff` and a sandboxing CSP. One range
//! (`Range: bytes=…`) is honoured. The body streams from disk 64 KiB at a time through
//! the connection's outbox, so a slow reader holds only this connection.
//!
//! [`resolve`] fills in a message's `files` before it goes to the dispatcher: each
//! must be the sender's own upload, and the room is granted access to it.
//!
//! Never touches chat state.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tungstenite::handshake::server::Request;
use tungstenite::http::StatusCode;

use crate::delivery::outbox::{Conn, Flush};
use crate::protocol::{ClientMsg, ErrorCode, ProtocolError};
use crate::store::files::sign::{self, FILES_PATH};
use crate::store::files::sniff::INLINE;
use crate::store::files::{FileRecord, Unusable};
use crate::transport::context::ConnContext;
use crate::transport::handshake::query_param;
use crate::transport::plain;

/// Bytes read from disk and queued at once.
const CHUNK: usize = 64 * 1024;
/// How long a reader may take to accept one chunk before the connection is dropped.
const CHUNK_WAIT: Duration = Duration::from_secs(30);
/// What a file may do when opened directly: nothing.
const FILE_CSP: &str = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox";

/// Serves one file request; true when the connection stays open for the next one.
pub fn run(conn: &Arc<Conn>, ctx: &ConnContext, req: &Request) -> bool {
    let keep = plain::keeps_alive(req);
    match find(ctx, req) {
        Ok(record) => send(conn, ctx, req, &record, keep),
        Err((status, text)) => {
            let body = format!("{text}\n");
            let bytes = plain::response(status, "text/plain; charset=utf-8", body.as_bytes(), None, keep);
            if keep {
                return plain::reply(conn, bytes);
            }
            plain::answer(conn, bytes);
            false
        }
    }
}

type Refused = (StatusCode, &'static str);

/// The file the URL names, if its signature holds and it was posted in its room.
fn find(ctx: &ConnContext, req: &Request) -> Result<FileRecord, Refused> {
    const NOT_FOUND: Refused = (StatusCode::NOT_FOUND, "not found");
    let id = req.uri().path().strip_prefix(FILES_PATH).unwrap_or_default().to_owned();
    if id.is_empty() || id.len() > crate::protocol::MAX_FILE_ID_CHARS || !id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(NOT_FOUND);
    }
    let query = req.uri().query().unwrap_or("");
    let (Some(room), Some(exp), Some(sig)) = (
        query_param(query, "room"),
        query_param(query, "exp").and_then(|e| e.parse::<u64>().ok()),
        query_param(query, "sig"),
    ) else {
        return Err((StatusCode::FORBIDDEN, "forbidden: the link is incomplete"));
    };
    let now = crate::store::files::now_ms() / 1000;
    sign::verify(ctx.files.secret(), &id, &room, exp, &sig, now).map_err(|e| match e {
        sign::BadUrl::Expired => (StatusCode::FORBIDDEN, "forbidden: the link expired; ask for a new one"),
        _ => (StatusCode::FORBIDDEN, "forbidden: the link is not valid"),
    })?;
    match ctx.files.call(move |db| db.posted_in(&id, &room)) {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(NOT_FOUND),
        Err(e) => {
            log::warn!("files: {e}");
            Err((StatusCode::SERVICE_UNAVAILABLE, "the file store is busy; retry"))
        }
    }
}

/// The byte range asked for: `Ok(None)` for the whole file, `Err` when unsatisfiable.
/// Several ranges are answered with the whole file (allowed by RFC 9110).
fn range(req: &Request, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = req.headers().get("range").and_then(|v| v.to_str().ok()) else { return Ok(None) };
    let Some(spec) = spec.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else { return Ok(None) };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(s), Ok(e)) if s <= e => (s, e.min(size.saturating_sub(1))),
        (Ok(s), Err(_)) if b.is_empty() => (s, size.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() && n > 0 => (size.saturating_sub(n), size.saturating_sub(1)),
        _ => return Ok(None),
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// A file name for `Content-Disposition`: an ASCII fallback and the UTF-8 original.
fn disposition(kind: &str, name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let utf8: String = form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>().replace('+', "%20");
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{utf8}")
}

fn send(conn: &Arc<Conn>, ctx: &ConnContext, req: &Request, f: &FileRecord, keep: bool) -> bool {
    let path = ctx.files.blob_path(&f.sha256);
    let mut file = match File::open(&path) {
        Ok(file) => file,
        Err(e) => {
            log::warn!("files: {} for {}: {e}", path.display(), f.id);
            let bytes = plain::response(StatusCode::NOT_FOUND, "text/plain", b"not found\n", None, false);
            plain::answer(conn, bytes);
            return false;
        }
    };
    let size = file.metadata().map_or(f.size, |m| m.len());
    let inline = INLINE.contains(&f.kind.as_str());
    let (kind, how) = if inline { (f.kind.as_str(), "inline") } else { ("application/octet-stream", "attachment") };
    let (status, start, len, content_range) = match range(req, size) {
        Ok(None) => (StatusCode::OK, 0, size, None),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1, Some(format!("bytes {s}-{e}/{size}"))),
        Err(()) => {
            let head = format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            plain::answer(conn, Bytes::from(head));
            return false;
        }
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {kind}\r\nContent-Length: {len}\r\nContent-Disposition: {}\r\n\
         X-Content-Type-Options: nosniff\r\nContent-Security-Policy: {FILE_CSP}\r\nReferrer-Policy: no-referrer\r\n\
         Cross-Origin-Resource-Policy: cross-origin\r\nCache-Control: private, max-age=3600\r\nAccept-Ranges: bytes\r\n\
         Connection: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        disposition(how, &f.name),
        if keep { "keep-alive" } else { "close" },
    );
    if let Some(r) = content_range {
        head.push_str(&format!("Content-Range: {r}\r\n"));
    }
    head.push_str("\r\n");
    if !write(conn, Bytes::from(head)) {
        return false;
    }
    if req.method() != "HEAD" {
        if file.seek(SeekFrom::Start(start)).is_err() {
            conn.abort();
            return false;
        }
        let mut left = len;
        while left > 0 {
            let mut chunk = vec![0u8; (left as usize).min(CHUNK)];
            if file.read_exact(&mut chunk).is_err() || !write(conn, Bytes::from(chunk)) {
                conn.abort();
                return false;
            }
            left -= CHUNK.min(left as usize) as u64;
        }
    }
    if !keep {
        crate::transport::context::linger(conn.stream());
    }
    keep
}

/// Queues `bytes` and waits (bounded) until the socket took them.
fn write(conn: &Conn, bytes: Bytes) -> bool {
    conn.send(bytes).is_ok() && conn.flush_until(Instant::now() + CHUNK_WAIT) == Flush::Done
}

/// Fills in the files a `msg` names from the file store (on the connection's thread,
/// so the dispatcher never waits for it): each must be `uid`'s own upload, and the
/// message's room may fetch it from now on. Any other message passes unchanged.
pub fn resolve(msg: ClientMsg, uid: &str, ctx: &ConnContext) -> Result<ClientMsg, ProtocolError> {
    let ClientMsg::Msg { room, text, id, reply_to, files, mentions } = msg else { return Ok(msg) };
    if files.is_empty() {
        return Ok(ClientMsg::Msg { room, text, id, reply_to, files, mentions });
    }
    let reference = Some(id.clone().unwrap_or_else(|| "msg".into()));
    let ids: Vec<String> = files.into_iter().map(|f| f.id).collect();
    let (uid, room_name) = (uid.to_owned(), room.as_str().to_owned());
    let now = crate::store::files::now_ms();
    match ctx.files.call(move |db| db.grant(&uid, &ids, &room_name, now)) {
        Ok(Ok(files)) => Ok(ClientMsg::Msg { room, text, id, reply_to, files, mentions }),
        Ok(Err(Unusable::Unknown(f))) => Err(ProtocolError::new(
            ErrorCode::NotFound,
            format!("no file `{f}` of yours: upload it first (POST /upload)"),
        )
        .with_ref(reference)),
        Err(e) => {
            log::warn!("files: {e}");
            Err(ProtocolError::new(ErrorCode::Unavailable, "the file store is busy; retry").with_ref(reference))
        }
    }
}
