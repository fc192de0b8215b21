//! The HTTP side (tiny_http): the page from www/ (embedded at build time, or from disk
//! with `--www`), `/config.json`, `/healthz` and `/metrics`.
//!
//! It reads only the config and the metrics; it never touches chat state.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use tiny_http::{Header, Method, Request, Response, Server};

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
        let response = route(&req, &cfg, &metrics);
        if let Err(e) = req.respond(response) {
            log::debug!("http: response not delivered: {e}");
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

fn respond(status: u16, content_type: &str, body: Vec<u8>) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_data(body)
        .with_status_code(status)
        .with_header(header("Content-Type", content_type))
        .with_header(header("X-Content-Type-Options", "nosniff"))
        .with_header(header("Cache-Control", "no-cache"))
}

fn route(req: &Request, cfg: &Config, metrics: &Metrics) -> Response<std::io::Cursor<Vec<u8>>> {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return respond(
            405,
            "text/plain; charset=utf-8",
            b"method not allowed\n".to_vec(),
        );
    }
    let path = req.url().split(['?', '#']).next().unwrap_or("/");
    match path {
        "/config.json" => respond(200, "application/json", config_json(req, cfg).into_bytes()),
        "/healthz" => respond(200, "application/json", metrics.health_json().into_bytes()),
        "/metrics" => respond(
            200,
            "text/plain; version=0.0.4",
            metrics.render().into_bytes(),
        ),
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
    match Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
    {
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

fn static_file(path: &str, cfg: &Config) -> Response<std::io::Cursor<Vec<u8>>> {
    let path = if path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_owned()
    };
    let body = match &cfg.www_dir {
        Some(dir) => safe_join(dir, &path).and_then(|p| std::fs::read(p).ok()),
        None => embedded::FILES
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, b)| b.to_vec()),
    };
    match body {
        Some(body) => respond(200, content_type(&path), body)
            .with_header(header("Content-Security-Policy", CSP))
            .with_header(header("Referrer-Policy", "no-referrer")),
        None => respond(404, "text/plain; charset=utf-8", b"not found\n".to_vec()),
    }
}

/// `dir` joined with a URL path, refusing anything that climbs out of `dir`.
fn safe_join(dir: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = Path::new(url_path.trim_start_matches('/'));
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_www_dir() {
        assert!(safe_join(Path::new("/srv/www"), "/../etc/passwd").is_none());
        assert!(safe_join(Path::new("/srv/www"), "/a/../../b").is_none());
        assert_eq!(
            safe_join(Path::new("/srv/www"), "/app.js").unwrap(),
            Path::new("/srv/www/app.js")
        );
    }

    #[test]
    fn the_page_is_embedded() {
        assert!(embedded::FILES.iter().any(|(p, _)| *p == "/index.html"));
    }
}
