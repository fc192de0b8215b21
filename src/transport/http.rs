//! The HTTP side's answers: the page from www/ (embedded at build time, or from disk
//! with `--www`), `/config.json`, `/healthz`, and on the admin listener `/metrics`.
//! [`Head`] is a parsed request head; [`respond`] turns it into response bytes.
//!
//! Connections, timeouts and TLS are the guard's (transport/guard.rs); this module
//! only reads the config and the metrics. It never touches chat state.

use std::path::{Component, Path, PathBuf};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::transport::handshake::WS_PATH;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/www_files.rs"));
}

/// Browsers may load the page's own scripts and styles and open WebSockets (or the
/// fallback's `/sse` and `/send`, plain http(s) on the WebSocket's host, which
/// `--public-ws-url` may move: hence schemes, not a host); nothing else, so injected
/// markup could not run even if it got in.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Most header lines a request head may have.
const MAX_HEADERS: usize = 64;

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    /// The public port: the page, `/config.json`, `/healthz`.
    Public,
    /// `--admin-bind`: `/metrics` and `/healthz`.
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

/// Parses a request head from the start of `buf`: `Ok(None)` while it is incomplete,
/// else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(len) = req.parse(buf)? else { return Ok(None) };
    let header = |name: &str| {
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
    let has_body = header("transfer-encoding").is_some()
        || header("content-length").is_some_and(|l| l.parse::<u64>().map_or(true, |n| n > 0));
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

/// The response to `head` on `site`. `keep_alive` is false when the connection closes
/// after it (the client asked, or the request had a body natter does not read).
pub fn respond(head: &Head, site: Site, cfg: &Config, metrics: &Metrics) -> (Vec<u8>, bool) {
    let keep_alive = head.keep_alive && !head.has_body;
    let reply = route(head, site, cfg, metrics);
    (reply.bytes(head.method != "HEAD", keep_alive), keep_alive)
}

/// A response for a request that never got routed (a bad head, a timeout).
pub fn plain(status: u16, body: &str) -> Vec<u8> {
    Reply::text(status, body).bytes(true, false)
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

    fn bytes(&self, with_body: bool, keep_alive: bool) -> Vec<u8> {
        let reason =
            tungstenite::http::StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {connection}\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        head.push_str("X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n");
        if self.page {
            head.push_str(&format!("Content-Security-Policy: {CSP}\r\nReferrer-Policy: no-referrer\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if with_body {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn route(head: &Head, site: Site, cfg: &Config, metrics: &Metrics) -> Reply {
    if !matches!(head.method.as_str(), "GET" | "HEAD") {
        return Reply::text(405, "method not allowed\n");
    }
    let path = head.path.split(['?', '#']).next().unwrap_or("/");
    match (site, path) {
        (_, p) if p.starts_with("/api/") => Reply::new(
            404,
            "application/json",
            br#"{"error":{"code":"not_found","message":"the server API is on the admin listener (--admin-bind), with --api-key-file"}}"#.to_vec(),
        ),
        (_, "/healthz") => Reply::new(metrics.health_status(), "application/json", metrics.health_json().into_bytes()),
        (Site::Admin, "/metrics") => Reply::new(200, "text/plain; version=0.0.4", metrics.render().into_bytes()),
        (Site::Admin, _) => Reply::text(404, "not found\n"),
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
        let text = String::from_utf8(r.bytes(true, false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 9\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.contains("Content-Security-Policy: default-src 'self'"));
        assert!(text.ends_with("\r\n\r\n<p>hi</p>"));
        assert!(!String::from_utf8(r.bytes(false, false)).unwrap().ends_with("</p>"), "HEAD has no body");
        assert!(String::from_utf8(r.bytes(true, true)).unwrap().contains("Connection: keep-alive\r\n"));
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
    fn metrics_only_on_the_admin_site() {
        let (h, _) = parse_head(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap().unwrap();
        let (cfg, m) = (Config::default(), Metrics::default());
        let public = String::from_utf8(respond(&h, Site::Public, &cfg, &m).0).unwrap();
        let admin = String::from_utf8(respond(&h, Site::Admin, &cfg, &m).0).unwrap();
        assert!(public.starts_with("HTTP/1.1 404") && admin.starts_with("HTTP/1.1 200"));
    }

    #[test]
    fn the_page_is_embedded() {
        assert!(embedded::FILES.iter().any(|(p, _)| *p == "/index.html"));
    }
}
