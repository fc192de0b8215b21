//! The HTTP side's answers: the page from www/ (embedded at build time, or from disk
//! with `--www`), `/config.json`, `/healthz`, and on the admin listener `/metrics` and
//! `/openapi.json` (the server API's OpenAPI document, docs/openapi.json) and the
//! admin console (www/admin/, at `/admin/`; the public listener never serves it).
//! [`Head`] is a parsed request head; [`respond`] turns it into response bytes.
//!
//! Connections, timeouts and TLS are the guard's (transport/guard.rs); this module
//! only reads the config and the metrics. It never touches chat state.

use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy;
use crate::transport::handshake::WS_PATH;

/// The server API's OpenAPI document, byte for byte the repo's docs/openapi.json
/// (tests/openapi.rs holds it against the API's route table).
pub const OPENAPI_JSON: &str = include_str!("../../docs/openapi.json");

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/www_files.rs"));
}

/// Browsers may load the page's own scripts and styles and open WebSockets (or the
/// fallback's `/sse` and `/send`, plain http(s) on the WebSocket's host, which
/// `--public-ws-url` may move: hence schemes, not a host); images likewise from the
/// WebSocket port's `/files/` (signed URLs); nothing else, so injected markup could
/// not run even if it got in.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data: http: https:; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Most header lines a request head may have.
const MAX_HEADERS: usize = 64;

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The public port: the page, `/config.json`, `/healthz`.
    Public,
    /// `--admin-bind`: `/metrics`, `/openapi.json`, `/healthz` and the admin console
    /// (`/admin/`, also at `/`).
    Admin,
}

/// The parts of a request head the routes and the guard use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub x_real_ip: Option<String>,
    /// The client asked to keep the connection (HTTP/1.1 unless `Connection: close`).
    pub keep_alive: bool,
    /// The request carries a body (which natter's routes never take).
    pub has_body: bool,
}

/// Why a request head is refused with a 400.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("malformed head: {0}")]
    Malformed(#[from] httparse::Error),
    #[error(transparent)]
    Framing(#[from] proxy::FramingError),
}

/// Parses a request head from the start of `buf`: `Ok(None)` while it is incomplete,
/// else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(buf)? else { return Ok(None) };
    let has_body = proxy::framing(req.headers)? != proxy::Framing::Length(0);
    let header = |name: &'static str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(|v| v.trim().to_owned())
    };
    let connection = header("connection").unwrap_or_default().to_ascii_lowercase();
    let keep_alive = match req.version {
        Some(1) => !connection.contains("close"),
        _ => connection.contains("keep-alive"),
    };
    let head = Head {
        method: req.method.unwrap_or("").to_owned(),
        path: req.path.unwrap_or("/").to_owned(),
        host: header("host"),
        x_forwarded_for: header("x-forwarded-for"),
        x_real_ip: header("x-real-ip"),
        keep_alive,
        has_body,
    };
    Ok(Some((head, len)))
}

/// Headers the guard never forwards to tiny_http: it decides keep-alive with the
/// browser itself, and no route reads a body (a body left unread would hold a
/// tiny_http thread until the relay timed out).
/// `TE` too: the response always carries its length.
const NOT_FORWARDED: [&str; 7] =
    ["connection", "keep-alive", "content-length", "transfer-encoding", "te", "expect", "upgrade"];

/// The request head the guard's relay writes to tiny_http for the complete head at
/// the start of `buf`: the same request line and headers, no body, and
/// `Connection: close` so that tiny_http's thread lets go of the socket at once.
pub fn upstream_request(buf: &[u8]) -> Option<Vec<u8>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(buf).ok()?.is_complete().then_some(())?;
    let mut out = format!("{} {} HTTP/1.{}\r\n", req.method?, req.path?, req.version?).into_bytes();
    for h in req.headers.iter().filter(|h| !NOT_FORWARDED.iter().any(|n| h.name.eq_ignore_ascii_case(n))) {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Some(out)
}

/// tiny_http's response with its `Connection` header replaced by the guard's choice
/// for the browser (tiny_http saw `Connection: close`; its framing, a length or
/// chunks, holds either way).
pub fn with_connection(response: &[u8], keep_alive: bool) -> Vec<u8> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return response.to_vec() };
    let mut out = Vec::with_capacity(response.len() + 24);
    for line in response[..end].split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"connection:") {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if keep_alive { b"Connection: keep-alive\r\n" } else { b"Connection: close\r\n" });
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&response[end + 4..]);
    out
}

/// Answers one request tiny_http read from a relay: natter's routes, written by
/// tiny_http (which adds `Date` and `Server`, and drops the body of a `HEAD`).
pub fn serve(req: tiny_http::Request, site: Site, cfg: &Config, metrics: &Metrics) {
    let header = |name: &'static str| {
        req.headers().iter().find(|h| h.field.equiv(name)).map(|h| h.value.as_str().trim().to_owned())
    };
    let head = Head {
        method: req.method().as_str().to_owned(),
        path: req.url().to_owned(),
        host: header("host"),
        x_forwarded_for: header("x-forwarded-for"),
        x_real_ip: header("x-real-ip"),
        keep_alive: false,
        has_body: false,
    };
    if let Err(e) = req.respond(route(&head, site, cfg, metrics).response()) {
        log::debug!("http: response not delivered to the relay: {e}");
    }
}

/// A response for a request that never got routed (a bad head, a timeout, a relay
/// that failed); the guard writes it itself, and the connection closes after it.
pub fn plain(status: u16, body: &str) -> Vec<u8> {
    Reply::text(status, body).bytes()
}

/// One response, with its length, and whether the connection stays open after it.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Adds the page's security headers (CSP, referrer policy).
    page: bool,
}

impl Reply {
    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply { status, content_type, body, page: false }
    }

    fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body.as_bytes().to_vec())
    }

    /// The headers every answer carries, besides its length and `Connection`.
    fn headers(&self) -> Vec<(&'static str, &'static str)> {
        let mut headers = vec![
            ("Content-Type", self.content_type),
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-cache"),
        ];
        if self.page {
            headers.extend([("Content-Security-Policy", CSP), ("Referrer-Policy", "no-referrer")]);
        }
        headers
    }

    /// The whole response as the guard writes it, closing the connection.
    fn bytes(&self) -> Vec<u8> {
        let reason =
            tungstenite::http::StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.body.len()
        );
        for (name, value) in self.headers() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The response as tiny_http writes it.
    fn response(self) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
        let headers = self.headers();
        // Never chunked: a length, as the guard's own answers carry.
        let mut response =
            tiny_http::Response::from_data(self.body).with_status_code(self.status).with_chunked_threshold(usize::MAX);
        for (name, value) in headers {
            if let Ok(h) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        }
        response
    }
}

fn route(head: &Head, site: Site, cfg: &Config, metrics: &Metrics) -> Reply {
    let path = head.path.split(['?', '#']).next().unwrap_or("/");
    // Before the method check: an API client gets JSON it can parse, whatever it sent.
    if path.starts_with("/api/") {
        return Reply::new(
            404,
            "application/json",
            br#"{"error":{"code":"not_found","message":"the server API is on the admin listener (--admin-bind), with --api-key-file"}}"#.to_vec(),
        );
    }
    if !matches!(head.method.as_str(), "GET" | "HEAD") {
        return Reply::text(405, "method not allowed\n");
    }
    match (site, path) {
        (_, "/healthz") => Reply::new(metrics.health_status(), "application/json", metrics.health_json().into_bytes()),
        (Site::Admin, "/metrics") => Reply::new(200, "text/plain; version=0.0.4", metrics.render().into_bytes()),
        (Site::Admin, "/openapi.json") => Reply::new(200, "application/json", OPENAPI_JSON.as_bytes().to_vec()),
        // The admin console (www/admin/): a page of the server API, signed in with a key.
        (Site::Admin, "/" | "/admin") => static_file("/admin/", cfg),
        (Site::Admin, p) if p.starts_with("/admin/") => static_file(p, cfg),
        (Site::Admin, _) => Reply::text(404, "not found\n"),
        // The console is the admin listener's alone.
        (Site::Public, p) if p == "/admin" || p.starts_with("/admin/") => Reply::text(404, "not found\n"),
        (Site::Public, "/config.json") => Reply::new(200, "application/json", config_json(head, cfg).into_bytes()),
        (Site::Public, _) => static_file(path, cfg),
    }
}

/// What the page needs to connect: the WebSocket URL (the host the browser used, on
/// the WebSocket port, unless `--public-ws-url` says otherwise) and the auth mode.
fn config_json(head: &Head, cfg: &Config) -> String {
    let ws_url = cfg.public_ws_url.clone().unwrap_or_else(|| {
        let host = head.host.clone().unwrap_or_else(|| "localhost".into());
        let hostname = match host.rfind(':') {
            Some(i) if !host.ends_with(']') => host[..i].to_owned(),
            _ => host,
        };
        let scheme = if cfg.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{hostname}:{}{WS_PATH}", cfg.ws_port)
    });
    serde_json::json!({ "ws_url": ws_url, "auth": cfg.auth.as_str() }).to_string()
}

fn content_type(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

fn static_file(path: &str, cfg: &Config) -> Reply {
    let path = if path.ends_with('/') { format!("{path}index.html") } else { path.to_owned() };
    let body = match &cfg.www_dir {
        Some(dir) => safe_join(dir, &path).and_then(|p| std::fs::read(p).ok()),
        None => embedded::FILES.iter().find(|(p, _)| *p == path).map(|(_, b)| b.to_vec()),
    };
    match body {
        Some(body) => Reply { page: true, ..Reply::new(200, content_type(&path), body) },
        None => Reply::text(404, "not found\n"),
    }
}

/// `dir` joined with a URL path, refusing anything that climbs out of `dir`.
fn safe_join(dir: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    rel.components().all(|c| matches!(c, Component::Normal(_))).then(|| dir.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_www_dir() {
        assert!(safe_join(Path::new("/srv/www"), "/../etc/passwd").is_none());
        assert!(safe_join(Path::new("/srv/www"), "/a/../../b").is_none());
        assert_eq!(safe_join(Path::new("/srv/www"), "/app.js").unwrap(), Path::new("/srv/www/app.js"));
    }

    #[test]
    fn replies_close_the_connection_and_carry_their_length() {
        let r = Reply { page: true, ..Reply::new(200, "text/html; charset=utf-8", b"<p>hi</p>".to_vec()) };
        let text = String::from_utf8(r.bytes()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 9\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.contains("Content-Security-Policy: default-src 'self'"));
        assert!(text.ends_with("\r\n\r\n<p>hi</p>"));
    }

    #[test]
    fn upstream_requests_close_and_carry_no_body() {
        let up =
            upstream_request(b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc")
                .unwrap();
        assert_eq!(String::from_utf8(up).unwrap(), "POST /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        assert!(upstream_request(b"GET / HTTP/1.1\r\nHost").is_none());
    }

    #[test]
    fn the_guard_sets_connection_on_relayed_responses() {
        let from_tiny =
            b"HTTP/1.1 200 OK\r\nServer: tiny-http (Rust)\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi";
        let kept = String::from_utf8(with_connection(from_tiny, true)).unwrap();
        assert_eq!(
            kept,
            "HTTP/1.1 200 OK\r\nServer: tiny-http (Rust)\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
        );
        assert!(String::from_utf8(with_connection(from_tiny, false)).unwrap().contains("Connection: close\r\n\r\nhi"));
    }

    #[test]
    fn heads_parse_keep_alive_and_bodies() {
        let (h, len) =
            parse_head(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nrest").unwrap().unwrap();
        assert_eq!((h.path.as_str(), h.keep_alive, h.has_body, len), ("/a?b", true, false, 56));
        assert_eq!(h.x_forwarded_for.as_deref(), Some("1.2.3.4"));
        let (h, _) = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let (h, _) = parse_head(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").unwrap().unwrap();
        assert!(h.has_body);
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost").unwrap().is_none());
        assert!(parse_head(b"\x16\x03\x01garbage\r\n\r\n").is_err());
    }

    #[test]
    fn ambiguous_body_framing_is_refused() {
        let head = |h: &str| parse_head(format!("POST / HTTP/1.1\r\nHost: x\r\n{h}\r\n").as_bytes());
        for bad in [
            "Content-Length: 0\r\nContent-Length: 44\r\n",
            "Content-Length: 5\r\ncontent-length: 5\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999999\r\n",
            "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        ] {
            assert!(matches!(head(bad), Err(HeadError::Framing(_))), "{bad:?}");
        }
        assert!(!head("Content-Length: 0\r\n").unwrap().unwrap().0.has_body);
        assert!(head("Content-Length: 12\r\n").unwrap().unwrap().0.has_body);
        assert!(head("Transfer-Encoding: chunked\r\n").unwrap().unwrap().0.has_body);
    }

    #[test]
    fn metrics_only_on_the_admin_site() {
        let (h, _) = parse_head(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap().unwrap();
        let (cfg, m) = (Config::default(), Metrics::default());
        assert_eq!((route(&h, Site::Public, &cfg, &m).status, route(&h, Site::Admin, &cfg, &m).status), (404, 200));
    }

    #[test]
    fn the_page_is_embedded() {
        assert!(embedded::FILES.iter().any(|(p, _)| *p == "/index.html"));
    }
}
