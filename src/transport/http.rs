//! The HTTP side (tiny_http): the page from www/ (embedded at build time, or from disk
//! with `--www`), `/config.json`, `/healthz` and `/metrics`; and keeping it up when
//! tiny_http's accept thread dies.
//!
//! It reads only the config and the metrics; it never touches chat state.

use std::io::{self, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use tiny_http::{Method, Request, Server};

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

/// First and longest pause before tiny_http is started again after its accept failed.
const RESTART_PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// How often an idle HTTP side checks that tiny_http's accept thread is still there.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// tiny_http on natter's listening socket, started again whenever its accept thread dies.
///
/// tiny_http's accept thread ends at the first failed `accept` (EMFILE when the
/// descriptors run out, ECONNABORTED), and panics when it cannot duplicate an
/// accepted socket (EMFILE again); either way it closes the listener, and the page,
/// `/healthz` and `/metrics` would stay gone until natter restarts. natter keeps the
/// listening socket, hands each new tiny_http a duplicate of it, notices when that
/// duplicate is closed, and starts a new one after a pause that grows while
/// accepting keeps failing.
pub struct HttpServer {
    listener: TcpListener,
    /// The tiny_http running now; `stop` unblocks it.
    current: Mutex<Option<Running>>,
    stopping: AtomicBool,
}

/// One tiny_http and the descriptor of its duplicate of the listener.
#[derive(Clone)]
struct Running {
    server: Arc<Server>,
    fd: RawFd,
}

impl HttpServer {
    /// Starts tiny_http on `listener`.
    pub fn start(listener: TcpListener) -> io::Result<HttpServer> {
        let http = HttpServer { listener, current: Mutex::new(None), stopping: AtomicBool::new(false) };
        http.fresh()?;
        Ok(http)
    }

    /// A new tiny_http on a duplicate of the listener; `None` once stopping.
    fn fresh(&self) -> io::Result<Option<Running>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if self.stopping.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let dup = self.listener.try_clone()?;
        let fd = dup.as_raw_fd();
        let running = Running { server: Arc::new(Server::from_listener(dup, None).map_err(io::Error::other)?), fd };
        *current = Some(running.clone());
        Ok(Some(running))
    }

    /// Whether tiny_http's accept thread still holds its duplicate of the listener: a
    /// thread that ended or panicked has closed it (the number may since name another
    /// file, so the socket's identity is compared, not just the number).
    fn accepting(&self, running: &Running) -> bool {
        fn identity(fd: RawFd) -> Option<(u64, u64)> {
            // SAFETY: `stat` is plain data, for which all-zero bytes are a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes into the struct we own; a closed fd is only EBADF.
            (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
        }
        identity(running.fd).is_some_and(|id| Some(id) == identity(self.listener.as_raw_fd()))
    }

    /// Serves requests until [`HttpServer::stop`]. Requests under `/api/` go to
    /// `api` (the server API's own threads), so the page never waits behind them.
    pub fn run(&self, cfg: &Config, metrics: &Metrics, api: &(dyn Fn(Request) + Send + Sync)) {
        let mut running = self.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut pause = RESTART_PAUSE.0;
        loop {
            if let Some(r) = running.take() {
                let failed = loop {
                    match r.server.recv_timeout(LIVENESS_CHECK) {
                        Ok(Some(req)) => {
                            pause = RESTART_PAUSE.0;
                            if req.url().starts_with("/api/") {
                                api(req);
                            } else {
                                route(&req, cfg, metrics).send(req);
                            }
                        }
                        // A timeout, or `stop` unblocked it.
                        Ok(None) if self.stopping.load(Ordering::SeqCst) => return,
                        Ok(None) if self.accepting(&r) => {}
                        Ok(None) => break "the accept thread ended".to_string(),
                        Err(e) => break e.to_string(),
                    }
                };
                if self.stopping.load(Ordering::SeqCst) {
                    return;
                }
                log::warn!("HTTP: {failed}; starting the HTTP side again in {pause:?}");
            }
            thread::sleep(pause);
            pause = (pause * 2).min(RESTART_PAUSE.1);
            match self.fresh() {
                Ok(Some(r)) => {
                    metrics.http_restarts.fetch_add(1, Ordering::Relaxed);
                    running = Some(r);
                }
                Ok(None) => return,
                Err(e) => log::warn!("HTTP: cannot start again yet: {e}"),
            }
        }
    }

    /// Makes [`HttpServer::run`] return.
    pub fn stop(&self) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(r) = current.as_ref() {
            r.server.unblock();
        }
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
