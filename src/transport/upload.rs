//! `POST /upload`: one file as the request body, streamed to a temporary file on this
//! connection's own thread (64 KiB at a time), hashed on the way, then sniffed and kept
//! by the file store. Credentials come in headers, never in the URL: `Authorization:
//! Bearer TOKEN` in token mode, `X-Natter-Key: KEY` (the identity key the page
//! connects with) in open mode. The name comes in `X-Natter-Name` (percent-encoded).
//!
//! Bounded: `--max-upload-bytes` (413 before a byte of the body is read), uploads not
//! posted yet within a quarter of `--max-store-bytes` (507), the user's
//! `--upload-rate`, and `--max-uploads` running at once. A slow upload holds only its
//! own connection; nothing here touches the dispatcher or chat state.

use std::io::Read;
use std::sync::Arc;

use tungstenite::handshake::server::Request;
use tungstenite::http::StatusCode;

use crate::store::files::{clean_file_name, Rejected, UploadMeta};
use crate::transport::context::ConnContext;
use crate::transport::handshake::{admit_credentials, bearer, check_origin, Credentials};
use crate::transport::plain;

/// Bytes read from the socket at once (on the heap: connection threads have small stacks).
const CHUNK: usize = 64 * 1024;

/// Why an upload is refused: the status, a code and a sentence for the client.
#[derive(Debug)]
pub struct UploadError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> UploadError {
    UploadError { status, code, message: message.into() }
}

/// Serves one `POST /upload` and closes the connection.
pub fn run(
    conn: &Arc<crate::delivery::outbox::Conn>,
    ctx: &ConnContext,
    req: &Request,
    (body, input): (Vec<u8>, &mut impl Read),
) {
    let cors = plain::cors_origin(req, &ctx.cfg);
    let (status, json) = match handle(ctx, req, body, input) {
        Ok(desc) => (StatusCode::CREATED, serde_json::to_string(&desc).unwrap_or_default()),
        Err(e) => {
            log::info!("upload from {:?} refused ({}): {}", conn.peer, e.status, e.message);
            let body = serde_json::json!({ "error": { "code": e.code, "message": e.message } });
            (e.status, body.to_string())
        }
    };
    plain::answer(conn, plain::response(status, "application/json", json.as_bytes(), cors.as_deref(), false));
}

fn handle(
    ctx: &ConnContext,
    req: &Request,
    body: Vec<u8>,
    input: &mut impl Read,
) -> Result<crate::protocol::FileDesc, UploadError> {
    let cfg = &ctx.cfg;
    check_origin(req, cfg).map_err(|r| err(r.status, "forbidden", r.body))?;
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let key = header("x-natter-key");
    if matches!(cfg.auth, crate::config::AuthMode::Open) && key.is_none() {
        return Err(err(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "open mode: send the identity key the page connects with in X-Natter-Key",
        ));
    }
    let credentials = Credentials { token: bearer(req), name: None, key };
    let who = admit_credentials(credentials, cfg).map_err(|r| err(r.status, "unauthorized", r.body))?;
    let uid = who.identity.id;
    let len: u64 = header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| err(StatusCode::LENGTH_REQUIRED, "length_required", "send Content-Length"))?;
    if len > cfg.max_upload_bytes {
        return Err(err(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the file is {len} bytes; at most {} bytes may be uploaded (--max-upload-bytes)",
                cfg.max_upload_bytes
            ),
        ));
    }
    if !ctx.files.has_room_for(len) {
        return Err(err(
            StatusCode::INSUFFICIENT_STORAGE,
            "store_full",
            "uploads not posted yet fill their share of --max-store-bytes; post or wait, then retry",
        ));
    }
    if !ctx.uploads.take(&uid, cfg.uploads_per_min) {
        return Err(err(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("slow down: at most {} uploads a minute", cfg.uploads_per_min),
        ));
    }
    let _slot = ctx.uploads.enter(cfg.max_uploads).ok_or_else(|| {
        err(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many uploads in progress; retry in a moment")
    })?;
    let busy = |e: crate::store::files::FilesError| {
        log::warn!("upload: {e}");
        err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the file store cannot take files now; retry")
    };
    let mut upload = ctx.files.begin().map_err(busy)?;
    let first = &body[..body.len().min(len as usize)];
    upload.write(first).map_err(busy)?;
    let mut chunk = vec![0u8; CHUNK];
    while upload.size() < len {
        let want = ((len - upload.size()) as usize).min(CHUNK);
        match input.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => {
                return Err(err(StatusCode::REQUEST_TIMEOUT, "incomplete", "the body ended before Content-Length"))
            }
            Ok(n) => upload.write(&chunk[..n]).map_err(busy)?,
        }
    }
    let name = header("x-natter-name")
        .map(|n| percent_decode(&n))
        .or_else(|| crate::transport::handshake::query_param(req.uri().query().unwrap_or(""), "name"))
        .unwrap_or_default();
    let meta =
        UploadMeta { uploader: uid.to_string(), name: clean_file_name(&name), content_type: header("content-type") };
    match upload.finish(meta) {
        Ok(record) => {
            log::info!("upload {} by {uid}: {} bytes of {}", record.id, record.size, record.kind);
            Ok(record.desc())
        }
        Err(Rejected::Store(e)) => Err(busy(e)),
        Err(e) => Err(err(StatusCode::UNSUPPORTED_MEDIA_TYPE, "bad_type", e.to_string())),
    }
}

/// `%XX` escapes decoded (as UTF-8, lossily): how `X-Natter-Name` carries any name in ASCII.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_percent_decoded() {
        assert_eq!(super::percent_decode("caf%C3%A9%20menu.png"), "café menu.png");
        assert_eq!(super::percent_decode("100%"), "100%");
    }
}
