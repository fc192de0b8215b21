//! The server API's routes: `/api/v1/...` requests parsed and checked, sent to the
//! dispatcher as [`ApiCall`]s, and answered with JSON. Owns the route table
//! ([`ROUTES`], the only way a request reaches an endpoint; docs/openapi.json must name
//! exactly these), request validation and the mapping from error codes to HTTP
//! statuses; owns no chat state.

use serde::Deserialize;
use serde_json::{json, Value};

use super::keys::ApiKey;
use crate::bans::{MAX_BAN_MINUTES, MAX_REASON_CHARS};
use crate::dispatcher::api::ApiCall;
use crate::dispatcher::Actor;
use crate::protocol::{clean_name, ErrorCode, ProtocolError, RoomName, User, MAX_ID_CHARS, MAX_SEQ};
use crate::store::audit::{AuditQuery, MAX_AUDIT_PAGE};

/// Most messages one history page holds.
pub const MAX_PAGE: usize = 200;
/// Messages a history page holds when `limit` is not given.
const DEFAULT_PAGE: usize = 50;

/// One API request, as far as routing needs it.
#[derive(Debug)]
pub struct ApiRequest<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub url: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// The caller's address, for the audit log.
    pub from: &'a str,
}

/// What to do with a request: a call for the dispatcher, or an answer already.
#[derive(Debug)]
pub enum Routed {
    Call(ApiCall),
    Answer(u16, Value),
    /// Everything stored about a user, streamed by the API worker (`zip`: as a zip).
    Export {
        uid: String,
        zip: bool,
    },
    /// Erase a user, driven by the API worker chunk by chunk.
    Erase {
        uid: String,
        messages: super::userdata::Messages,
        by: Actor,
    },
    /// The admin console's overview, which the API answers from the counters itself.
    Overview,
}

/// The HTTP status an error code maps to.
pub fn status_of(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::BadJson | ErrorCode::BadField | ErrorCode::UnknownType => 400,
        ErrorCode::Unauthorized => 401,
        ErrorCode::Forbidden => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::RoomLimit | ErrorCode::NotJoined => 409,
        ErrorCode::TooLong => 413,
        ErrorCode::RateLimited | ErrorCode::DmRate | ErrorCode::CreateLimited => 429,
        ErrorCode::Unavailable => 503,
    }
}

/// The JSON body of an error.
pub fn error_body(e: &ProtocolError) -> Value {
    json!({ "error": { "code": e.code.as_str(), "message": e.message } })
}

fn bad(code: ErrorCode, message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(code, message)
}

fn room_of(segment: &str) -> Result<RoomName, ProtocolError> {
    // Room names hold only [A-Za-z0-9_.-], so nothing needs percent-decoding: `%2F`,
    // `%00` and friends are simply not room names.
    RoomName::parse(segment).ok_or_else(|| bad(ErrorCode::BadField, "not a room name: 1-64 of A-Z a-z 0-9 _ - ."))
}

/// A whole number 0..=[`MAX_SEQ`] named `what` (`-1`, `1e9` and anything past 2^53−1
/// are refused, as over the WebSocket: a JavaScript caller could not even name them,
/// and the store would read them as negative).
fn bounded(what: &str, v: &str) -> Result<u64, ProtocolError> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_SEQ)
        .ok_or_else(|| bad(ErrorCode::BadField, format!("`{what}` must be a whole number from 0 to {MAX_SEQ}")))
}

/// A bounded whole-number query parameter (see [`bounded`]).
fn number(query: &[(String, String)], key: &str) -> Result<Option<u64>, ProtocolError> {
    query.iter().find(|(k, _)| k == key).map(|(_, v)| bounded(key, v)).transpose()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostBody {
    text: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    from: Option<From>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct From {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

/// A JSON object body of type `T` (sent as `application/json`).
fn json_body<T: serde::de::DeserializeOwned>(req: &ApiRequest) -> Result<T, ProtocolError> {
    if !req
        .content_type
        .is_some_and(|t| t.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")))
    {
        return Err(bad(ErrorCode::BadJson, "send Content-Type: application/json"));
    }
    let value: Value =
        serde_json::from_slice(req.body).map_err(|e| bad(ErrorCode::BadJson, format!("not JSON: {e}")))?;
    if !value.is_object() {
        return Err(bad(ErrorCode::BadJson, "the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| bad(ErrorCode::BadField, e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickBody {
    user: String,
    minutes: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeBody {
    read_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    minutes: f64,
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/users/{id}/ban {minutes, reason?}`.
fn ban_call(uid: String, req: &ApiRequest, by: Actor) -> Result<ApiCall, ProtocolError> {
    let body: BanBody = json_body(req)?;
    // Fractions are allowed (0.5 is 30 s), as for `--webhook-retry-minutes`.
    if !(body.minutes > 0.0 && body.minutes <= MAX_BAN_MINUTES as f64) {
        return Err(bad(ErrorCode::BadField, format!("`minutes` is over 0 and at most {MAX_BAN_MINUTES} (a year)")));
    }
    let reason = body.reason.trim().to_owned();
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(bad(
            ErrorCode::BadField,
            format!("`reason` is at most {MAX_REASON_CHARS} characters, no control characters"),
        ));
    }
    let ms = ((body.minutes * 60_000.0) as u64).max(1);
    Ok(ApiCall::Ban { uid: uid.into(), ms, reason, by })
}

/// `GET /api/v1/audit?before=&limit=&action=&actor=&target=&room=&since=&until=`.
fn audit_call(query: &[(String, String)]) -> Result<ApiCall, ProtocolError> {
    let limit = number(query, "limit")?.unwrap_or(DEFAULT_PAGE as u64);
    if !(1..=MAX_AUDIT_PAGE as u64).contains(&limit) {
        return Err(bad(ErrorCode::BadField, format!("`limit` is 1-{MAX_AUDIT_PAGE}")));
    }
    let text = |key: &str| -> Result<Option<String>, ProtocolError> {
        match query.iter().find(|(k, _)| k == key) {
            None => Ok(None),
            Some((_, v)) if v.is_empty() => Ok(None),
            Some((_, v)) if v.chars().count() > 256 || v.chars().any(char::is_control) => {
                Err(bad(ErrorCode::BadField, format!("`{key}` is at most 256 characters")))
            }
            Some((_, v)) => Ok(Some(v.clone())),
        }
    };
    let known = ["before", "limit", "action", "actor", "target", "room", "since", "until"];
    if let Some((k, _)) = query.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(bad(ErrorCode::BadField, format!("unknown parameter `{k}`: use {}", known.join(", "))));
    }
    Ok(ApiCall::Audit {
        query: AuditQuery {
            before: number(query, "before")?,
            limit: limit as usize,
            action: text("action")?,
            actor: text("actor")?,
            target: text("target")?,
            room: text("room")?,
            since: number(query, "since")?,
            until: number(query, "until")?,
        },
    })
}

/// Parses the body of a post; `from` ids are put under `api:` unless the key may
/// impersonate, so a backend's bot can never be taken for a user by accident.
fn post_call(room: RoomName, req: &ApiRequest, key: &ApiKey, max_text: usize) -> Result<ApiCall, ProtocolError> {
    let body: PostBody = json_body(req)?;
    if body.text.trim().is_empty() {
        return Err(bad(ErrorCode::BadField, "`text` is empty"));
    }
    if body.text.chars().count() > max_text {
        return Err(bad(ErrorCode::TooLong, format!("`text` is over {max_text} characters")));
    }
    if let Some(id) = &body.id {
        if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
            return Err(bad(ErrorCode::BadField, format!("`id` is 1-{MAX_ID_CHARS} characters")));
        }
    }
    let from = match body.from {
        None => User { id: "system".into(), name: "system".into() },
        Some(f) => {
            if f.id.is_empty() || f.id.chars().count() > 64 || f.id.chars().any(char::is_control) {
                return Err(bad(ErrorCode::BadField, "`from.id` is 1-64 characters, no control characters"));
            }
            let name = match f.name {
                Some(n) => {
                    clean_name(&n).ok_or_else(|| bad(ErrorCode::BadField, "`from.name` is not a usable name"))?
                }
                None => f.id.clone(),
            };
            let id = if key.impersonate { f.id } else { format!("api:{}", f.id) };
            User { id: id.into(), name }
        }
    };
    Ok(ApiCall::Post { room, text: body.text, id: body.id, from })
}

/// What a route does; the router's `match` on it is exhaustive, so a route exists only
/// when it is in [`ROUTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Rooms,
    Presence,
    Post,
    Messages,
    Delete,
    Disconnect,
    Ban,
    Unban,
    Bans,
    Audit,
    Export,
    Erase,
    Overview,
    AdminRooms,
    AdminUsers,
    Kick,
    Mode,
}

/// One route: a method and a path template whose `{name}` segments match any one
/// segment, as docs/openapi.json writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

/// Every route of the API. The router finds requests here and nowhere else, so this
/// table is what tests/openapi.rs holds the OpenAPI document against.
pub const ROUTES: &[Route] = &[
    Route { method: "GET", path: "/api/v1/rooms", endpoint: Endpoint::Rooms },
    Route { method: "GET", path: "/api/v1/rooms/{room}/presence", endpoint: Endpoint::Presence },
    Route { method: "POST", path: "/api/v1/rooms/{room}/messages", endpoint: Endpoint::Post },
    Route { method: "GET", path: "/api/v1/rooms/{room}/messages", endpoint: Endpoint::Messages },
    Route { method: "DELETE", path: "/api/v1/rooms/{room}/messages/{seq}", endpoint: Endpoint::Delete },
    Route { method: "POST", path: "/api/v1/users/{id}/disconnect", endpoint: Endpoint::Disconnect },
    Route { method: "POST", path: "/api/v1/users/{id}/ban", endpoint: Endpoint::Ban },
    Route { method: "DELETE", path: "/api/v1/users/{id}/ban", endpoint: Endpoint::Unban },
    Route { method: "GET", path: "/api/v1/bans", endpoint: Endpoint::Bans },
    Route { method: "GET", path: "/api/v1/audit", endpoint: Endpoint::Audit },
    Route { method: "GET", path: "/api/v1/users/{id}/export", endpoint: Endpoint::Export },
    Route { method: "DELETE", path: "/api/v1/users/{id}", endpoint: Endpoint::Erase },
    Route { method: "GET", path: "/api/v1/admin/overview", endpoint: Endpoint::Overview },
    Route { method: "GET", path: "/api/v1/admin/rooms", endpoint: Endpoint::AdminRooms },
    Route { method: "GET", path: "/api/v1/admin/users", endpoint: Endpoint::AdminUsers },
    Route { method: "POST", path: "/api/v1/rooms/{room}/kick", endpoint: Endpoint::Kick },
    Route { method: "POST", path: "/api/v1/rooms/{room}/mode", endpoint: Endpoint::Mode },
];

/// The `{name}` segments of a matched path, in template order.
struct Params<'a>(Vec<(&'static str, &'a str)>);

impl<'a> Params<'a> {
    /// The segment `{name}` matched ("" if the template has none: then the caller's
    /// own check refuses it, as it would an empty segment).
    fn get(&self, name: &str) -> &'a str {
        self.0.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v)
    }
}

/// `path`'s segments against `template`'s: the captured `{name}` segments on a match.
fn matches<'a>(template: &'static str, path: &'a str) -> Option<Params<'a>> {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    let mut params = Vec::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(Params(params)),
            (Some(ts), Some(ps)) => match ts.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                Some(name) => params.push((name, ps)),
                None if ts == ps => {}
                None => return None,
            },
            _ => return None,
        }
    }
}

/// Routes an authenticated request.
pub fn route(req: &ApiRequest, key: &ApiKey, max_text: usize) -> Result<Routed, ProtocolError> {
    let (path, query) = req.url.split_once('?').unwrap_or((req.url, ""));
    let query: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut path_known = false;
    let found = ROUTES.iter().find_map(|r| {
        let params = matches(r.path, path)?;
        path_known = true;
        (r.method == req.method).then_some((r.endpoint, params))
    });
    let Some((endpoint, params)) = found else {
        if path_known {
            return Ok(Routed::Answer(405, error_body(&bad(ErrorCode::NotFound, "method not allowed here"))));
        }
        return Err(bad(ErrorCode::NotFound, "no such route"));
    };
    let by = || Actor { id: key.id.clone(), addr: req.from.to_owned() };
    match endpoint {
        Endpoint::Rooms => Ok(Routed::Call(ApiCall::Rooms)),
        Endpoint::Presence => Ok(Routed::Call(ApiCall::Presence { room: room_of(params.get("room"))? })),
        Endpoint::Post => Ok(Routed::Call(post_call(room_of(params.get("room"))?, req, key, max_text)?)),
        Endpoint::Messages => {
            let room = room_of(params.get("room"))?;
            let limit = number(&query, "limit")?.unwrap_or(DEFAULT_PAGE as u64);
            if !(1..=MAX_PAGE as u64).contains(&limit) {
                return Err(bad(ErrorCode::BadField, format!("`limit` is 1-{MAX_PAGE}")));
            }
            let (before, after) = (number(&query, "before")?, number(&query, "after")?);
            Ok(Routed::Call(ApiCall::Messages { room, before, after, limit: limit as usize }))
        }
        Endpoint::Delete => {
            let (room, seq) = (room_of(params.get("room"))?, bounded("seq", params.get("seq"))?);
            if !key.moderate {
                return Err(bad(ErrorCode::Forbidden, "this key may not delete messages (mark it `moderate`)"));
            }
            Ok(Routed::Call(ApiCall::Delete { room, seq, by: by() }))
        }
        Endpoint::Disconnect => Ok(Routed::Call(ApiCall::Disconnect { uid: user_of(&params)?.into(), by: by() })),
        Endpoint::Ban
        | Endpoint::Unban
        | Endpoint::Bans
        | Endpoint::Audit
        | Endpoint::Overview
        | Endpoint::AdminRooms
        | Endpoint::AdminUsers
        | Endpoint::Kick
        | Endpoint::Mode
            if !key.admin =>
        {
            Err(bad(ErrorCode::Forbidden, "this key may not ban or read the audit log (mark it `admin`)"))
        }
        Endpoint::Export => {
            let uid = user_of(&params)?;
            if !key.admin {
                return Err(bad(ErrorCode::Forbidden, "this key may not read users' data (mark it `admin`)"));
            }
            let zip = match query.iter().find(|(k, _)| k == "format").map(|(_, v)| v.as_str()) {
                None | Some("ndjson") => false,
                Some("zip") => true,
                Some(_) => return Err(bad(ErrorCode::BadField, "`format` is `ndjson` (the default) or `zip`")),
            };
            Ok(Routed::Export { uid, zip })
        }
        Endpoint::Erase => {
            let uid = user_of(&params)?;
            if !key.admin {
                return Err(bad(ErrorCode::Forbidden, "this key may not erase users (mark it `admin`)"));
            }
            let choice = query.iter().find(|(k, _)| k == "messages").map(|(_, v)| v.as_str());
            let messages = choice.and_then(super::userdata::Messages::parse).ok_or_else(|| {
                bad(ErrorCode::BadField, "say what happens to their messages: `?messages=remove` or `?messages=keep`")
            })?;
            Ok(Routed::Erase { uid, messages, by: by() })
        }
        Endpoint::Overview => Ok(Routed::Overview),
        Endpoint::AdminRooms => {
            let q = query.iter().find(|(k, _)| k == "q").map(|(_, v)| v.clone()).unwrap_or_default();
            if q.chars().count() > 64 {
                return Err(bad(ErrorCode::BadField, "`q` is at most 64 characters"));
            }
            Ok(Routed::Call(ApiCall::AdminRooms { q }))
        }
        Endpoint::AdminUsers => Ok(Routed::Call(ApiCall::AdminUsers { instance: String::new() })),
        Endpoint::Kick => {
            let room = room_of(params.get("room"))?;
            let body: KickBody = json_body(req)?;
            if !(1..=crate::protocol::MAX_KICK_MINUTES).contains(&body.minutes) {
                let max = crate::protocol::MAX_KICK_MINUTES;
                return Err(bad(ErrorCode::BadField, format!("`minutes` is 1-{max}")));
            }
            if body.user.is_empty() || body.user.chars().count() > 256 || body.user.chars().any(char::is_control) {
                return Err(bad(ErrorCode::BadField, "`user` is not a user id"));
            }
            Ok(Routed::Call(ApiCall::Kick { room, user: body.user.into(), minutes: body.minutes, by: by() }))
        }
        Endpoint::Mode => {
            let room = room_of(params.get("room"))?;
            let body: ModeBody = json_body(req)?;
            Ok(Routed::Call(ApiCall::Mode { room, read_only: body.read_only, by: by() }))
        }
        Endpoint::Ban => Ok(Routed::Call(ban_call(user_of(&params)?, req, by())?)),
        Endpoint::Unban => Ok(Routed::Call(ApiCall::Unban { uid: user_of(&params)?.into(), by: by() })),
        Endpoint::Bans => Ok(Routed::Call(ApiCall::Bans)),
        Endpoint::Audit => Ok(Routed::Call(audit_call(&query)?)),
    }
}

/// The `{id}` segment: a user id, percent-decoded.
fn user_of(params: &Params) -> Result<String, ProtocolError> {
    let uid = params.get("id");
    if uid.is_empty() || uid.len() > 256 {
        return Err(bad(ErrorCode::BadField, "not a user id"));
    }
    percent_decode(uid).ok_or_else(|| bad(ErrorCode::BadField, "not a user id"))
}

/// User ids (a token's `sub`) may hold any character: decode `%XX`, refuse controls.
fn percent_decode(s: &str) -> Option<String> {
    let decoded: String =
        form_urlencoded::parse(format!("u={}", s.replace('+', "%2B")).as_bytes()).next()?.1.into_owned();
    (!decoded.chars().any(char::is_control)).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(impersonate: bool) -> ApiKey {
        super::super::keys::tests_key(impersonate)
    }

    fn req<'a>(method: &'a str, url: &'a str, body: &'a [u8]) -> ApiRequest<'a> {
        ApiRequest { method, url, content_type: Some("application/json"), body, from: "127.0.0.1" }
    }

    fn code(r: Result<Routed, ProtocolError>) -> &'static str {
        r.expect_err("an error").code.as_str()
    }

    #[test]
    fn bad_rooms_limits_and_bodies_are_refused() {
        let k = key(false);
        let long = format!("/api/v1/rooms/{}/messages", "x".repeat(1000));
        for url in ["/api/v1/rooms/a%2Fb/messages", "/api/v1/rooms/../messages", "/api/v1/rooms/a%00/messages", &long] {
            assert_eq!(code(route(&req("GET", url, b""), &k, 100)), "bad_field", "{url}");
        }
        let past_js = format!("after={}", MAX_SEQ + 1);
        for q in ["limit=-1", "limit=1e9", "limit=0", "limit=201", "before=x", "after=18446744073709551615", &past_js] {
            let url = format!("/api/v1/rooms/r/messages?{q}");
            assert_eq!(code(route(&req("GET", &url, b""), &k, 100)), "bad_field", "{q}");
        }
        let post = "/api/v1/rooms/r/messages";
        assert_eq!(code(route(&req("POST", post, b"[1]"), &k, 100)), "bad_json");
        assert_eq!(code(route(&req("POST", post, b"{"), &k, 100)), "bad_json");
        assert_eq!(code(route(&req("POST", post, br#"{"text":"x","extra":1}"#), &k, 100)), "bad_field");
        assert_eq!(code(route(&req("POST", post, br#"{"text":"xxxx"}"#), &k, 3)), "too_long");
        let plain = ApiRequest { content_type: Some("text/plain"), ..req("POST", post, br#"{"text":"x"}"#) };
        assert_eq!(code(route(&plain, &k, 100)), "bad_json");
        let forbidden = route(&req("DELETE", "/api/v1/rooms/r/messages/1", b""), &k, 100);
        assert_eq!(code(forbidden), "forbidden", "only a key marked moderate may delete");
        let huge = "/api/v1/rooms/r/messages/18446744073709551615";
        assert_eq!(code(route(&req("DELETE", huge, b""), &k, 100)), "bad_field");
        let at_max = format!("/api/v1/rooms/r/messages?before={MAX_SEQ}&after={MAX_SEQ}");
        assert!(route(&req("GET", &at_max, b""), &k, 100).is_ok(), "2^53-1 itself is a seq");
    }

    #[test]
    fn from_ids_are_namespaced_unless_the_key_may_impersonate() {
        let body = br#"{"text":"hi","from":{"id":"alice","name":"Alice"}}"#;
        let url = "/api/v1/rooms/r/messages";
        let from = |k| match route(&req("POST", url, body), &key(k), 100) {
            Ok(Routed::Call(ApiCall::Post { from, .. })) => from,
            other => panic!("{other:?}"),
        };
        assert_eq!(&*from(false).id, "api:alice");
        assert_eq!(&*from(true).id, "alice");
        match route(&req("POST", url, br#"{"text":"hi"}"#), &key(false), 100) {
            Ok(Routed::Call(ApiCall::Post { from, .. })) => assert_eq!(&*from.id, "system"),
            other => panic!("{other:?}"),
        }
    }
}
