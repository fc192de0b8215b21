//! The WebSocket handshake policy: which upgrade requests become connections, and who
//! they are. Path, Origin and identity (a display name in open mode, a verified token
//! in token mode) are checked here, before the upgrade; a refusal is plain HTTP with
//! the status PROTOCOL.md gives and a short text body.
//!
//! Pure functions of the request and the config: no sockets, no chat state.

use std::sync::Arc;

use tungstenite::handshake::server::{ErrorResponse, Request};
use tungstenite::http::{self, StatusCode};

use crate::auth::{self, Identity};
use crate::config::{AuthMode, Config};
use crate::metrics::Metrics;
use crate::protocol::clean_name;

/// The only path the WebSocket side serves.
pub const WS_PATH: &str = "/ws";

/// Why a handshake was refused, with what the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub body: &'static str,
    /// For the log only (never the token itself).
    pub detail: String,
}

impl Refusal {
    /// Logs the refusal and counts it in `natter_handshakes_refused_total`.
    pub fn record(&self, peer: &dyn std::fmt::Debug, metrics: &Metrics) {
        log::info!("refused {peer:?} ({}): {}", self.status, self.detail);
        metrics.handshakes_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn new(status: StatusCode, body: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal { status, body, detail: detail.into() }
    }

    /// The HTTP response tungstenite writes back.
    pub fn to_response(&self) -> ErrorResponse {
        http::Response::builder()
            .status(self.status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Connection", "close")
            .body(Some(format!("{}\n", self.body)))
            .expect("static status and headers are valid")
    }

    /// The raw HTTP response for requests refused before tungstenite parsed them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let body = format!("{}\n", self.body);
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

/// Who connected, and until when the connection may live (token `exp`).
#[derive(Debug, Clone)]
pub struct Admitted {
    pub identity: Identity,
    pub expires_at: Option<u64>,
}

/// Decides on one upgrade request.
pub fn admit(req: &Request, cfg: &Config) -> Result<Admitted, Refusal> {
    if req.uri().path() != WS_PATH {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "not found: the WebSocket path is /ws", req.uri().path()));
    }
    identify(req, cfg)
}

/// Origin and identity, whatever the path: the WebSocket's rules, which the fallback
/// transport's `GET /sse` follows too.
pub fn identify(req: &Request, cfg: &Config) -> Result<Admitted, Refusal> {
    check_origin(req, cfg)?;
    let query = req.uri().query().unwrap_or("");
    match cfg.auth {
        AuthMode::Open => {
            let name = query_param(query, "name").and_then(|n| clean_name(&n)).unwrap_or_else(guest_name);
            let identity = Identity { id: Arc::from(format!("u-{name}")), name, can_rename: true };
            Ok(Admitted { identity, expires_at: None })
        }
        AuthMode::Token => {
            let token = token(req).ok_or_else(|| {
                Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized: a token is required", "no token")
            })?;
            let secret = cfg.jwt_secret.as_deref().expect("token mode is refused at start without a secret");
            let claims = auth::verify(&token, secret, cfg.jwt_leeway_s).map_err(|e| {
                Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized: bad or expired token", e.to_string())
            })?;
            let name = claims
                .name
                .as_deref()
                .and_then(clean_name)
                .or_else(|| clean_name(&claims.sub))
                .unwrap_or_else(guest_name);
            let identity = Identity { id: Arc::from(claims.sub), name, can_rename: false };
            Ok(Admitted { identity, expires_at: Some(claims.exp) })
        }
    }
}

fn guest_name() -> String {
    format!("guest-{:04x}", rand::random::<u16>())
}

/// The request's token: `?token=` or `Authorization: Bearer`.
pub fn token(req: &Request) -> Option<String> {
    query_param(req.uri().query().unwrap_or(""), "token").or_else(|| bearer(req))
}

fn bearer(req: &Request) -> Option<String> {
    let v = req.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// The first value of `key` in a query string, percent-decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// Browsers send `Origin`; only listed origins may connect. With no list, the page's
/// own origin is allowed: the host the client used, on the HTTP port.
pub fn check_origin(req: &Request, cfg: &Config) -> Result<(), Refusal> {
    let Some(origin) = req.headers().get("origin") else {
        return if cfg.require_origin {
            Err(Refusal::new(StatusCode::FORBIDDEN, "forbidden: Origin header required", "no Origin"))
        } else {
            Ok(())
        };
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let allowed = if cfg.allowed_origins.is_empty() {
        let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("");
        let hostname = strip_port(host);
        [format!("http://{hostname}:{}", cfg.http_port), format!("https://{hostname}:{}", cfg.http_port)]
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    } else {
        cfg.allowed_origins.iter().any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::new(StatusCode::FORBIDDEN, "forbidden: Origin not allowed", format!("Origin {origin}")))
    }
}

/// `host:port` or `[v6]:port` without the port.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn wrong_path_is_404() {
        let e = admit(&req("/chat", &[]), &Config::default()).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn open_mode_names_are_cleaned_and_defaulted() {
        let cfg = Config::default();
        let a = admit(&req("/ws?name=%20Al%09ice%20", &[]), &cfg).unwrap();
        assert_eq!(a.identity.name, "Alice");
        assert_eq!(&*a.identity.id, "u-Alice");
        let a = admit(&req("/ws", &[]), &cfg).unwrap();
        assert!(a.identity.name.starts_with("guest-"));
    }

    #[test]
    fn origin_policy() {
        let cfg = Config { http_port: 8080, ..Config::default() };
        let ok = req("/ws", &[("Host", "chat.example:8081"), ("Origin", "http://chat.example:8080")]);
        assert!(admit(&ok, &cfg).is_ok());
        let bad = req("/ws", &[("Host", "chat.example:8081"), ("Origin", "http://evil.example:8080")]);
        assert_eq!(admit(&bad, &cfg).unwrap_err().status, StatusCode::FORBIDDEN);
        let listed = Config { allowed_origins: vec!["http://evil.example:8080".into()], ..cfg.clone() };
        assert!(admit(&bad, &listed).is_ok());
        let strict = Config { require_origin: true, ..cfg };
        assert_eq!(admit(&req("/ws", &[]), &strict).unwrap_err().status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn strip_port_handles_v6() {
        assert_eq!(strip_port("[::1]:8081"), "[::1]");
        assert_eq!(strip_port("localhost:8081"), "localhost");
        assert_eq!(strip_port("localhost"), "localhost");
    }
}
