//! The WebSocket handshake policy: which upgrade requests become connections, and who
//! they are. Path, Origin and identity (a display name in open mode, a verified token
//! in token mode) are checked here, before the upgrade; a refusal is plain HTTP with
//! the status PROTOCOL.md gives and a short text body. A request for `/ws?auth=hello`
//! is upgraded with its identity still unknown: the [`Credentials`] come in the first
//! frame ([`super::hello`]), out of the URL that proxies log.
//!
//! Pure functions of the request and the config: no sockets, no chat state.

use std::sync::Arc;

use tungstenite::handshake::server::{ErrorResponse, Request};
use tungstenite::http::{self, StatusCode};

use crate::access::{Access, Role};
use crate::auth::{self, Identity};
use crate::config::{AuthMode, Config};
use crate::metrics::Metrics;
use crate::protocol::clean_name;
use crate::protocol::deflate::{self, Agreed, Policy};

/// The only path the WebSocket side serves for chat.
pub const WS_PATH: &str = "/ws";
/// The conformance echo's path, served only with `--autobahn-echo`.
pub const ECHO_PATH: &str = "/echo";

/// The largest window a client that offers `client_max_window_bits` is asked to
/// compress with: 2 KiB is what its connection keeps between messages when it keeps
/// its context (chat messages are short; a larger window buys them little).
pub const CLIENT_WINDOW_BITS: u8 = 11;

/// permessage-deflate for this request: the first acceptable offer, unless
/// `--no-deflate`. An offer with unknown or bad parameters is declined and the
/// connection goes on uncompressed.
pub fn deflate(req: &Request, cfg: &Config) -> Option<Agreed> {
    if !cfg.deflate {
        return None;
    }
    let offers = req.headers().get_all("sec-websocket-extensions").iter().filter_map(|v| v.to_str().ok());
    deflate::negotiate(offers, Policy { client_max_window_bits: CLIENT_WINDOW_BITS })
}

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

/// What an upgrade request settles: who it is, or that its first frame will say.
#[derive(Debug, Clone)]
pub enum Handshake {
    /// Identified from the request (the URL form, or `Authorization: Bearer`).
    Admitted(Admitted),
    /// `?auth=hello`: upgrade, then wait for the `hello` frame ([`super::hello`]).
    AwaitHello,
    /// `/echo` with `--autobahn-echo`: no identity, no chat; every message comes back.
    Echo,
}

/// What a client presents to say who it is: a token (token mode), or a display name
/// and the identity key (open mode). From the request (the URL form old clients use),
/// a `hello` frame, or the body of `POST /sse`. Never logged.
#[derive(Default, Clone, serde::Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The name only: the token and the key are secrets.
        f.debug_struct("Credentials").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Credentials {
    /// The URL form (`?token=`, `?name=`, `?key=`) and `Authorization: Bearer`.
    fn from_request(req: &Request) -> Credentials {
        let query = req.uri().query().unwrap_or("");
        Credentials { token: token(req), name: query_param(query, "name"), key: query_param(query, "key") }
    }
}

/// Decides on one upgrade request.
pub fn admit(req: &Request, cfg: &Config) -> Result<Handshake, Refusal> {
    if cfg.autobahn_echo && req.uri().path() == ECHO_PATH {
        check_origin(req, cfg)?;
        return Ok(Handshake::Echo);
    }
    if req.uri().path() != WS_PATH {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "not found: the WebSocket path is /ws", req.uri().path()));
    }
    if query_param(req.uri().query().unwrap_or(""), "auth").as_deref() == Some("hello") {
        check_origin(req, cfg)?;
        return Ok(Handshake::AwaitHello);
    }
    identify(req, cfg).map(Handshake::Admitted)
}

/// Origin and identity, whatever the path: the WebSocket's rules, which the fallback
/// transport's `GET /sse` follows too.
pub fn identify(req: &Request, cfg: &Config) -> Result<Admitted, Refusal> {
    check_origin(req, cfg)?;
    admit_credentials(Credentials::from_request(req), cfg)
}

/// Who `credentials` say the client is, under the server's auth mode.
pub fn admit_credentials(credentials: Credentials, cfg: &Config) -> Result<Admitted, Refusal> {
    match &cfg.auth {
        AuthMode::Open => {
            let name = credentials.name.and_then(|n| clean_name(&n)).unwrap_or_else(guest_name);
            let lasting = credentials.key.is_some();
            let id = open_id(credentials.key.as_deref())?;
            let role = if cfg.mods.contains(&id) { Role::Mod } else { Role::Member };
            let access = Access { rooms: None, role };
            let identity = Identity { id: Arc::from(id), name, can_rename: true, access, lasting };
            Ok(Admitted { identity, expires_at: None })
        }
        AuthMode::Token { secret } => {
            let token = credentials.token.ok_or_else(|| {
                Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized: a token is required", "no token")
            })?;
            let claims = auth::verify(&token, secret, cfg.jwt_leeway_s).map_err(|e| {
                Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized: bad or expired token", e.to_string())
            })?;
            let name = claims
                .name
                .as_deref()
                .and_then(clean_name)
                .or_else(|| clean_name(&claims.sub))
                .unwrap_or_else(guest_name);
            let access = claims.access().map_err(|e| {
                Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized: the token's claims are not usable", e)
            })?;
            let identity = Identity { id: Arc::from(claims.sub), name, can_rename: false, access, lasting: true };
            Ok(Admitted { identity, expires_at: Some(claims.exp) })
        }
    }
}

/// Shortest and longest identity key an open-mode client may present.
const KEY_CHARS: (usize, usize) = (16, 128);

/// Open mode's user id. A name is not an identity: the id comes from a secret only the
/// client holds (`key=`, the page keeps a random one in localStorage), hashed so the
/// key itself never leaves the handshake; without a key every connection is a new user.
fn open_id(key: Option<&str>) -> Result<String, Refusal> {
    use sha2::{Digest, Sha256};
    let Some(key) = key else {
        return Ok(format!("u-{:016x}", os_random::<u64>()));
    };
    if !(KEY_CHARS.0..=KEY_CHARS.1).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        let why = format!("`key` must be {}-{} printable ASCII characters", KEY_CHARS.0, KEY_CHARS.1);
        return Err(Refusal::new(StatusCode::BAD_REQUEST, "bad request: unusable identity key", why));
    }
    let digest = Sha256::digest([b"natter open-mode id\0", key.as_bytes()].concat());
    Ok(format!("u-{}", &hex::encode(digest)[..16]))
}

fn guest_name() -> String {
    format!("guest-{:04x}", os_random::<u16>())
}

/// Random bits straight from the kernel (`getrandom`), for what connection threads
/// make: `rand::random` would give every connection thread a generator of its own,
/// 352 bytes of heap kept for the thread's life.
pub fn os_random<T>() -> T
where
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    use rand::{Rng, TryRngCore};
    rand::rngs::OsRng.unwrap_err().random()
}

/// The request's token: `?token=` or `Authorization: Bearer`.
pub fn token(req: &Request) -> Option<String> {
    query_param(req.uri().query().unwrap_or(""), "token").or_else(|| bearer(req))
}

pub fn bearer(req: &Request) -> Option<String> {
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
        let mut own =
            vec![format!("http://{hostname}:{}", cfg.http_port), format!("https://{hostname}:{}", cfg.http_port)];
        // Browsers leave the scheme's default port out of Origin (the page on 443).
        match cfg.http_port {
            443 => own.push(format!("https://{hostname}")),
            80 => own.push(format!("http://{hostname}")),
            _ => {}
        }
        own.iter().any(|o| o.eq_ignore_ascii_case(origin))
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

    fn admit(req: &Request, cfg: &Config) -> Result<Admitted, Refusal> {
        match super::admit(req, cfg)? {
            Handshake::Admitted(a) => Ok(a),
            Handshake::AwaitHello | Handshake::Echo => panic!("not an identified request"),
        }
    }

    #[test]
    fn hello_requests_wait_for_their_first_frame_but_still_check_the_origin() {
        let cfg = Config { http_port: 8080, auth: AuthMode::Token { secret: vec![0; 32] }, ..Config::default() };
        let hello = req("/ws?auth=hello", &[("Host", "chat.example:8081"), ("Origin", "http://chat.example:8080")]);
        assert!(matches!(super::admit(&hello, &cfg), Ok(Handshake::AwaitHello)), "no token in the URL: not a 401");
        let evil = req("/ws?auth=hello", &[("Host", "chat.example:8081"), ("Origin", "http://evil.example:8080")]);
        assert_eq!(super::admit(&evil, &cfg).unwrap_err().status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn deflate_is_agreed_when_offered_and_on() {
        let cfg = Config::default();
        let offered = req("/ws", &[("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]);
        let a = deflate(&offered, &cfg).expect("offered and on");
        assert_eq!(a.client_window_bits, CLIENT_WINDOW_BITS);
        assert_eq!(deflate(&req("/ws", &[]), &cfg), None, "not offered");
        let bad = req("/ws", &[("Sec-WebSocket-Extensions", "permessage-deflate; server_max_window_bits=99")]);
        assert_eq!(deflate(&bad, &cfg), None, "bad parameters: declined");
        let off = Config { deflate: false, ..cfg };
        assert_eq!(deflate(&offered, &off), None, "--no-deflate");
    }

    #[test]
    fn wrong_path_is_404() {
        let e = admit(&req("/chat", &[]), &Config::default()).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let e = admit(&req("/echo", &[]), &Config::default()).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND, "no echo unless --autobahn-echo");
        let echo = Config { autobahn_echo: true, ..Config::default() };
        assert!(matches!(super::admit(&req("/echo", &[]), &echo), Ok(Handshake::Echo)));
    }

    #[test]
    fn open_mode_names_are_cleaned_and_defaulted() {
        let cfg = Config::default();
        let a = admit(&req("/ws?name=%20Al%09ice%20", &[]), &cfg).unwrap();
        assert_eq!(a.identity.name, "Alice");
        let a = admit(&req("/ws", &[]), &cfg).unwrap();
        assert!(a.identity.name.starts_with("guest-"));
    }

    #[test]
    fn open_mode_ids_come_from_the_key_never_from_the_name() {
        let cfg = Config { mods: vec![], ..Config::default() };
        let id = |url: &str| admit(&req(url, &[]), &cfg).unwrap().identity.id.to_string();
        let alice = id("/ws?name=alice&key=0123456789abcdef-alice");
        assert_eq!(alice, id("/ws?name=someone-else&key=0123456789abcdef-alice"), "same key, same user");
        assert_ne!(alice, id("/ws?name=alice&key=0123456789abcdef-mallory"), "same name, another user");
        assert_ne!(id("/ws?name=alice"), id("/ws?name=alice"), "no key: a new user each time");
        assert!(!alice.contains("alice") && !alice.contains("0123456789abcdef"), "{alice}");
        for bad in ["/ws?key=short", "/ws?key=has%20space-0123456789"] {
            assert_eq!(admit(&req(bad, &[]), &cfg).unwrap_err().status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let modded = Config { mods: vec![alice.clone()], ..cfg.clone() };
        let a = admit(&req("/ws?key=0123456789abcdef-alice", &[]), &modded).unwrap();
        assert!(a.identity.access.is_mod(), "--mod names a user id");
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
        let on_443 = Config { http_port: 443, ..cfg.clone() };
        let https = req("/ws", &[("Host", "chat.example:8443"), ("Origin", "https://chat.example")]);
        assert!(admit(&https, &on_443).is_ok(), "the default port is left out of Origin");
        assert!(admit(&https, &cfg).is_err());
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
