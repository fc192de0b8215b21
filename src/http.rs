//! The HTTP side (tiny_http): the page from www/ (embedded at build time, or from disk
//! with `--www`), `/config.json`, `/healthz` and `/metrics`.
//!
//! It reads only the config and the metrics; it never touches chat state.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tiny_http::{Method, Request, Server};

use crate::config::Config;
use crate::handshake::WS_PATH;
use crate::metrics::Metrics;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/www_files.rs"));
}

/// Browsers may load the page's own scripts and styles and open WebSockets; nothing
/// else, so injected markup could not run or phone home even if it got in.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Serves requests until the server is unblocked.
pub fn serve(server: Arc<Server>, cfg: Arc<Config>, metrics: Arc<Metrics>) {
    for req in server.incoming_requests() {
        let reply = route(&req, &cfg, &metrics);
        reply.send(req);
    }
}

/// One response, written by hand so that it can say `Connection: close`.
///
/// tiny_http gives every connection a pooled thread that blocks reading the next
/// request, has no idle timeout, and can leave a new connection queued behind busy
/// threads; browsers keep several idle keep-alive connections open, and a page load
/// then hangs on one script (seen in the browser tests). Closing after each response
/// frees the thread as soon as the browser has read it. tiny_http still accepts,
/// parses and dispatches requests; only the response bytes are ours.
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

    fn bytes(&self, with_body: bool) -> Vec<u8> {
        let reason = tiny_http::StatusCode(self.status).default_reason_phrase();
        let mut head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
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

    fn send(self, req: Request) {
        let with_body = *req.method() != Method::Head;
        let mut w = req.into_writer();
        if let Err(e) = w.write_all(&self.bytes(with_body)).and_then(|_| w.flush()) {
            log::debug!("http: response not delivered: {e}");
        }
    }
}

fn route(req: &Request, cfg: &Config, metrics: &Metrics) -> Reply {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return Reply::text(405, "method not allowed\n");
    }
    let path = req.url().split(['?', '#']).next().unwrap_or("/");
    match path {
        "/config.json" => Reply::new(200, "application/json", config_json(req, cfg).into_bytes()),
        "/healthz" => Reply::new(200, "application/json", metrics.health_json().into_bytes()),
        "/metrics" => Reply::new(200, "text/plain; version=0.0.4", metrics.render().into_bytes()),
        _ => static_file(path, cfg),
    }
}

/// What the page needs to connect: the WebSocket URL (the host the browser used, on
/// the WebSocket port, unless `--public-ws-url` says otherwise) and the auth mode.
fn config_json(req: &Request, cfg: &Config) -> String {
    let ws_url = cfg.public_ws_url.clone().unwrap_or_else(|| {
        let host = req
            .headers()
            .iter()
            .find(|h| h.field.equiv("Host"))
            .map(|h| h.value.as_str().to_owned())
            .unwrap_or_else(|| "localhost".into());
        let hostname = match host.rfind(':') {
            Some(i) if !host.ends_with(']') => host[..i].to_owned(),
            _ => host,
        };
        format!("ws://{hostname}:{}{WS_PATH}", cfg.ws_port)
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
        let text = String::from_utf8(r.bytes(true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 9\r\n") && text.contains("Connection: close\r\n"));
        assert!(text.contains("Content-Security-Policy: default-src 'self'"));
        assert!(text.ends_with("\r\n\r\n<p>hi</p>"));
        assert!(!String::from_utf8(r.bytes(false)).unwrap().ends_with("</p>"), "HEAD has no body");
    }

    #[test]
    fn the_page_is_embedded() {
        assert!(embedded::FILES.iter().any(|(p, _)| *p == "/index.html"));
    }
}
