//! The wire contract in types: what a client may send, what the server sends back,
//! and the validation between the two (docs/PROTOCOL.md). [`wire`] frames them for
//! WebSocket, [`sse`] for the fallback's event stream; [`CloseReason`] lists the close codes.
//!
//! Parsing is one step: a text frame becomes a validated [`ClientMsg`] or a
//! [`ProtocolError`] carrying the error code the client will see. This module never
//! touches sockets or room state.

mod close;
pub mod sse;
pub mod wire;

pub use close::CloseReason;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The room a type-less frame (the seed tutorial's `{user, text}`) is posted to.
pub const DEFAULT_ROOM: &str = "lobby";
/// Longest client message id.
pub const MAX_ID_CHARS: usize = 64;
/// Longest display name.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest room name.
pub const MAX_ROOM_CHARS: usize = 64;
/// Most messages one `history` or `search` answer holds.
pub const MAX_PAGE: usize = 200;
/// Messages a `history`/`search` without `limit` gets.
pub const DEFAULT_PAGE: usize = 50;
/// Longest `search` query, in characters.
pub const MAX_QUERY_CHARS: usize = 256;
/// Longest kick: a week.
pub const MAX_KICK_MINUTES: u64 = 7 * 24 * 60;
/// Longest user id a client may name (token `sub`s are limited to the same).
pub const MAX_USER_ID_CHARS: usize = 128;
/// Longest room epoch a client may send back.
pub const MAX_EPOCH_CHARS: usize = 32;
/// Largest `seq` a client may name: JavaScript's largest exact integer.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

impl RoomName {
    /// The room type-less frames go to.
    pub fn lobby() -> RoomName {
        RoomName(DEFAULT_ROOM.to_owned())
    }
}

/// A validated room name: 1–64 characters of `A-Z a-z 0-9 _ - .`, not all dots.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomName(String);

impl RoomName {
    pub fn parse(s: &str) -> Option<RoomName> {
        // All dots (`.`, `..`) would read as a path wherever a room name is one (the
        // server API's URLs), so such names are refused everywhere.
        let ok = !s.is_empty()
            && !s.bytes().all(|b| b == b'.')
            && s.len() <= MAX_ROOM_CHARS
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        ok.then(|| RoomName(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RoomName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Cleans a display name as PROTOCOL.md says: trimmed, control characters removed, at
/// most 32 characters. Returns `None` when nothing is left (the caller picks a default).
pub fn clean_name(raw: &str) -> Option<String> {
    let kept: String = raw.chars().filter(|c| !c.is_control()).collect();
    let name: String = kept.trim().chars().take(MAX_NAME_CHARS).collect();
    let name = name.trim_end().to_owned();
    (!name.is_empty()).then_some(name)
}

/// A validated message from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMsg {
    Join {
        room: RoomName,
        since: Option<u64>,
        /// The room epoch the client's `since` belongs to.
        epoch: Option<String>,
        /// Create the room as private (only when it does not exist yet).
        private: bool,
    },
    /// Opens (or finds) the direct-message room of the sender and `user`.
    Dm {
        user: String,
    },
    /// Moderators: removes `user` from `room` for `minutes` (1 to a week).
    Kick {
        room: RoomName,
        user: String,
        minutes: u64,
    },
    /// Moderators: makes `room` read-only for everyone but moderators, or undoes it.
    Mode {
        room: RoomName,
        read_only: bool,
    },
    /// Lets `user` join the private room `room`.
    Invite {
        room: RoomName,
        user: String,
    },
    /// Scroll-back: up to `limit` messages before `before`, oldest first.
    History {
        room: RoomName,
        before: u64,
        limit: usize,
    },
    /// Messages with every word of `q`, before `before`, newest first.
    Search {
        room: RoomName,
        q: String,
        before: Option<u64>,
        limit: usize,
    },
    Leave {
        room: RoomName,
    },
    Msg {
        room: RoomName,
        text: String,
        id: Option<String>,
    },
    /// The seed tutorial's type-less `{user, text}`: a post to lobby that joins it
    /// silently first, so a client that never heard of `join` still receives the chat.
    LegacyMsg {
        text: String,
    },
    Typing {
        room: RoomName,
    },
    Nick {
        name: String,
    },
    /// Replaces the text of the user's own message `seq`.
    Edit {
        room: RoomName,
        seq: u64,
        text: String,
        id: Option<String>,
    },
    /// Deletes message `seq`: the author's own, or any for a moderator.
    Delete {
        room: RoomName,
        seq: u64,
        id: Option<String>,
    },
    /// The user has read `room` up to `seq` (a read marker, per user and room).
    Read {
        room: RoomName,
        seq: u64,
    },
    Ping {
        t: Option<RawJson>,
    },
}

/// A JSON value kept as its source text (the `t` of a ping, echoed as-is in the pong).
#[derive(Debug, Clone)]
pub struct RawJson(pub Box<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl ClientMsg {
    /// The client's `id` of a message that is stored and acked (`msg`, `edit`, `delete`).
    pub fn ack_id(&self) -> Option<&str> {
        match self {
            ClientMsg::Msg { id, .. } | ClientMsg::Edit { id, .. } | ClientMsg::Delete { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// What an `error` about this message refers to: its `id`, else its type.
    pub fn reference(&self) -> String {
        self.ack_id().unwrap_or(self.kind()).to_owned()
    }

    /// The `type` as the client wrote it, for `error.ref` and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMsg::Join { .. } => "join",
            ClientMsg::Dm { .. } => "dm",
            ClientMsg::Invite { .. } => "invite",
            ClientMsg::Kick { .. } => "kick",
            ClientMsg::Mode { .. } => "mode",
            ClientMsg::Leave { .. } => "leave",
            ClientMsg::History { .. } => "history",
            ClientMsg::Search { .. } => "search",
            ClientMsg::Msg { .. } | ClientMsg::LegacyMsg { .. } => "msg",
            ClientMsg::Typing { .. } => "typing",
            ClientMsg::Nick { .. } => "nick",
            ClientMsg::Read { .. } => "read",
            ClientMsg::Edit { .. } => "edit",
            ClientMsg::Delete { .. } => "delete",
            ClientMsg::Ping { .. } => "ping",
        }
    }
}

/// The error codes of the protocol, each counted in `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    BadField,
    NotJoined,
    TooLong,
    RateLimited,
    RoomLimit,
    Forbidden,
    /// Redis mode: the message store cannot be reached; nothing was stored, retry.
    Unavailable,
    /// Server API only: no such room, message or route.
    NotFound,
    /// Server API only: no valid API key.
    Unauthorized,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadField,
        ErrorCode::NotJoined,
        ErrorCode::TooLong,
        ErrorCode::RateLimited,
        ErrorCode::RoomLimit,
        ErrorCode::Forbidden,
        ErrorCode::Unavailable,
        ErrorCode::NotFound,
        ErrorCode::Unauthorized,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadField => "bad_field",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::TooLong => "too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RoomLimit => "room_limit",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

/// Why a client frame was refused: the code, a human message and what it refers to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<String>,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtocolError { code, message: message.into(), reference: None }
    }
    pub fn with_ref(mut self, reference: Option<String>) -> Self {
        self.reference = reference;
        self
    }
    /// The frame the client receives.
    pub fn to_server_msg(&self) -> ServerMsg<'_> {
        ServerMsg::Error { code: self.code, message: &self.message, r#ref: self.reference.as_deref() }
    }
}

/// Every field a client frame may carry, unparsed, so that a wrong type in one field
/// is reported as `bad_field` on that field rather than as `bad_json` for the frame.
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    t: Option<&'a RawValue>,
    #[serde(borrow)]
    epoch: Option<&'a RawValue>,
    #[serde(borrow)]
    before: Option<&'a RawValue>,
    #[serde(borrow)]
    limit: Option<&'a RawValue>,
    #[serde(borrow)]
    q: Option<&'a RawValue>,
    #[serde(borrow)]
    seq: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    private: Option<&'a RawValue>,
    #[serde(borrow)]
    minutes: Option<&'a RawValue>,
    #[serde(borrow)]
    read_only: Option<&'a RawValue>,
}

/// Limits the parser enforces (from `Config`).
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_text_chars: usize,
}

/// Parses and validates one client text frame.
pub fn parse_client(frame: &str, limits: ParseLimits) -> Result<ClientMsg, ProtocolError> {
    let raw: RawFrame = serde_json::from_str(frame)
        .map_err(|e| ProtocolError::new(ErrorCode::BadJson, format!("not a JSON object: {e}")))?;
    let kind = match raw.kind {
        Some(v) => Some(string_field(Some(v), "type")?),
        None => None,
    };
    let kind_ref = kind.as_ref().map(|k| truncate(k, 32));
    let parsed = (|| -> Result<ClientMsg, ProtocolError> {
        Ok(match kind.as_deref() {
            // The seed tutorial's client sends `{user, text}` with no type: a post to lobby.
            None if is_string(raw.text) => ClientMsg::LegacyMsg { text: text_field(raw.text, limits)? },
            None => return Err(ProtocolError::new(ErrorCode::BadField, "missing field `type`")),
            Some("join") => ClientMsg::Join {
                room: room_field(raw.room)?,
                since: since_field(raw.since)?,
                epoch: epoch_field(raw.epoch)?,
                private: bool_field(raw.private, "private")?,
            },
            Some("dm") => ClientMsg::Dm { user: user_field(raw.user)? },
            Some("invite") => ClientMsg::Invite { room: room_field(raw.room)?, user: user_field(raw.user)? },
            Some("kick") => ClientMsg::Kick {
                room: room_field(raw.room)?,
                user: user_field(raw.user)?,
                minutes: minutes_field(raw.minutes)?,
            },
            Some("mode") => ClientMsg::Mode {
                room: room_field(raw.room)?,
                read_only: match raw.read_only {
                    None => return Err(bad_field("missing field `read_only`")),
                    v => bool_field(v, "read_only")?,
                },
            },
            Some("history") => ClientMsg::History {
                room: room_field(raw.room)?,
                before: seq_field(raw.before, "before")?.ok_or_else(|| bad_field("missing field `before`"))?,
                limit: limit_field(raw.limit)?,
            },
            Some("search") => ClientMsg::Search {
                room: room_field(raw.room)?,
                q: query_field(raw.q)?,
                before: seq_field(raw.before, "before")?,
                limit: limit_field(raw.limit)?,
            },
            Some("leave") => ClientMsg::Leave { room: room_field(raw.room)? },
            Some("msg") => {
                let id = id_field(raw.id)?;
                let parsed = room_field(raw.room).and_then(|room| Ok((room, text_field(raw.text, limits)?)));
                let (room, text) = parsed.map_err(|e| e.with_ref(id.clone().or(Some("msg".into()))))?;
                ClientMsg::Msg { room, text, id }
            }
            Some("typing") => ClientMsg::Typing { room: room_field(raw.room)? },
            Some("nick") => {
                let name = string_field(raw.name, "name")?;
                let name = clean_name(&name).ok_or_else(|| bad_field("`name` is empty"))?;
                ClientMsg::Nick { name }
            }
            Some("edit") => {
                let id = id_field(raw.id)?;
                let parsed = (|| {
                    let room = room_field(raw.room)?;
                    let seq = seq_field(raw.seq, "seq")?.ok_or_else(|| bad_field("missing field `seq`"))?;
                    Ok((room, seq, text_field(raw.text, limits)?))
                })();
                let (room, seq, text) =
                    parsed.map_err(|e: ProtocolError| e.with_ref(id.clone().or(Some("edit".into()))))?;
                ClientMsg::Edit { room, seq, text, id }
            }
            Some("delete") => {
                let id = id_field(raw.id)?;
                let parsed = (|| {
                    let room = room_field(raw.room)?;
                    Ok((room, seq_field(raw.seq, "seq")?.ok_or_else(|| bad_field("missing field `seq`"))?))
                })();
                let (room, seq) =
                    parsed.map_err(|e: ProtocolError| e.with_ref(id.clone().or(Some("delete".into()))))?;
                ClientMsg::Delete { room, seq, id }
            }
            Some("read") => ClientMsg::Read {
                room: room_field(raw.room)?,
                seq: seq_field(raw.seq, "seq")?.ok_or_else(|| bad_field("missing field `seq`"))?,
            },
            Some("ping") => ClientMsg::Ping { t: raw.t.map(|t| RawJson(t.to_owned())) },
            Some(other) => {
                return Err(ProtocolError::new(
                    ErrorCode::UnknownType,
                    format!("unknown type `{}`", truncate(other, 32)),
                )
                .with_ref(Some(truncate(other, 32))))
            }
        })
    })();
    parsed.map_err(|e| if e.reference.is_none() { e.with_ref(kind_ref) } else { e })
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn bad_field(message: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadField, message)
}

fn is_string(v: Option<&RawValue>) -> bool {
    v.is_some_and(|v| v.get().starts_with('"'))
}

fn string_field<'a>(v: Option<&'a RawValue>, name: &str) -> Result<Cow<'a, str>, ProtocolError> {
    let v = v.ok_or_else(|| bad_field(format!("missing field `{name}`")))?;
    serde_json::from_str::<Cow<'a, str>>(v.get()).map_err(|_| bad_field(format!("`{name}` must be a string")))
}

fn room_field(v: Option<&RawValue>) -> Result<RoomName, ProtocolError> {
    let room = string_field(v, "room")?;
    RoomName::parse(&room).ok_or_else(|| bad_field("`room` must be 1-64 characters of A-Z a-z 0-9 _ - ."))
}

fn text_field(v: Option<&RawValue>, limits: ParseLimits) -> Result<String, ProtocolError> {
    let text = string_field(v, "text")?;
    if text.trim().is_empty() {
        return Err(bad_field("`text` is empty"));
    }
    // Count characters only as far as the limit: a huge text costs no more than a short one.
    if text.chars().nth(limits.max_text_chars).is_some() {
        return Err(ProtocolError::new(
            ErrorCode::TooLong,
            format!("`text` is longer than {} characters", limits.max_text_chars),
        ));
    }
    Ok(text.into_owned())
}

fn id_field(v: Option<&RawValue>) -> Result<Option<String>, ProtocolError> {
    if v.is_none_or(|v| v.get() == "null") {
        return Ok(None);
    }
    let id = string_field(v, "id")?;
    if id.is_empty() || id.chars().nth(MAX_ID_CHARS).is_some() {
        return Err(bad_field(format!("`id` must be 1-{MAX_ID_CHARS} characters")));
    }
    Ok(Some(id.into_owned()))
}

fn since_field(v: Option<&RawValue>) -> Result<Option<u64>, ProtocolError> {
    match v {
        None => Ok(None),
        Some(v) if v.get() == "null" => Ok(None),
        Some(v) => serde_json::from_str::<u64>(v.get())
            .map(Some)
            .map_err(|_| bad_field("`since` must be a non-negative integer")),
    }
}

/// An optional seq a client names (`before`): 1..=[`MAX_SEQ`].
fn seq_field(v: Option<&RawValue>, name: &str) -> Result<Option<u64>, ProtocolError> {
    match v {
        None => Ok(None),
        Some(v) if v.get() == "null" => Ok(None),
        Some(v) => match serde_json::from_str::<u64>(v.get()) {
            Ok(n) if (1..=MAX_SEQ).contains(&n) => Ok(Some(n)),
            _ => Err(bad_field(format!("`{name}` must be an integer from 1 to {MAX_SEQ}"))),
        },
    }
}

fn limit_field(v: Option<&RawValue>) -> Result<usize, ProtocolError> {
    match v {
        None => Ok(DEFAULT_PAGE),
        Some(v) if v.get() == "null" => Ok(DEFAULT_PAGE),
        Some(v) => match serde_json::from_str::<usize>(v.get()) {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(bad_field(format!("`limit` must be an integer from 1 to {MAX_PAGE}"))),
        },
    }
}

fn query_field(v: Option<&RawValue>) -> Result<String, ProtocolError> {
    let q = string_field(v, "q")?;
    if q.chars().nth(MAX_QUERY_CHARS).is_some() {
        return Err(bad_field(format!("`q` is longer than {MAX_QUERY_CHARS} characters")));
    }
    if !q.chars().any(char::is_alphanumeric) {
        return Err(bad_field("`q` has no word to search for"));
    }
    Ok(q.into_owned())
}

/// A kick's length: 1 minute to a week.
fn minutes_field(v: Option<&RawValue>) -> Result<u64, ProtocolError> {
    let v = v.ok_or_else(|| bad_field("missing field `minutes`"))?;
    match serde_json::from_str::<u64>(v.get()) {
        Ok(n) if (1..=MAX_KICK_MINUTES).contains(&n) => Ok(n),
        _ => Err(bad_field(format!("`minutes` must be an integer from 1 to {MAX_KICK_MINUTES}"))),
    }
}

fn bool_field(v: Option<&RawValue>, name: &str) -> Result<bool, ProtocolError> {
    match v.map(RawValue::get) {
        None | Some("null") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(bad_field(format!("`{name}` must be true or false"))),
    }
}

/// A user id a client names (`dm`, `invite`): 1..=[`MAX_USER_ID_CHARS`] characters.
fn user_field(v: Option<&RawValue>) -> Result<String, ProtocolError> {
    let user = string_field(v, "user")?;
    if user.is_empty() || user.chars().nth(MAX_USER_ID_CHARS).is_some() || user.chars().any(char::is_control) {
        return Err(bad_field(format!("`user` must be a user id of 1-{MAX_USER_ID_CHARS} characters")));
    }
    Ok(user.into_owned())
}

fn epoch_field(v: Option<&RawValue>) -> Result<Option<String>, ProtocolError> {
    if v.is_none_or(|v| v.get() == "null") {
        return Ok(None);
    }
    let e = string_field(v, "epoch")?;
    if e.is_empty() || e.len() > MAX_EPOCH_CHARS || !e.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad_field(format!("`epoch` must be 1-{MAX_EPOCH_CHARS} letters and digits")));
    }
    Ok(Some(e.into_owned()))
}

/// A user's stable id: `sub` in token mode, derived at the handshake in open mode.
/// Shared, because every room a user is present in holds it.
pub type UserId = std::sync::Arc<str>;

/// A user as a room's presence list holds it: id and display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
}

impl User {
    pub fn as_ref(&self) -> UserRef<'_> {
        UserRef { id: &self.id, name: &self.name }
    }
}

/// A user as the protocol shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRef<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct HeartbeatInfo {
    pub interval_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LimitsInfo {
    pub max_text: usize,
    pub rate_per_s: u32,
    pub max_rooms: usize,
}

/// The `system` event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemEvent {
    Join,
    Leave,
    Nick,
}

/// The `system` events of moderators (with a seq, stored in the room's history).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModEvent {
    /// A moderator removed `user` from the room for `minutes`.
    Kick,
    /// A moderator made the room read-only for everyone but moderators, or undid it.
    ReadOnly,
}

/// Everything the server sends, but `history` (spliced from stored messages, see `wire`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    Welcome {
        session: &'a str,
        user: UserRef<'a>,
        /// `"mod"` for a moderator (may delete any message); absent for everyone else.
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'a str>,
        heartbeat: HeartbeatInfo,
        limits: LimitsInfo,
    },
    Joined {
        room: &'a str,
        head: u64,
        /// The room's epoch; absent until its first message is stored.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        /// Present users; at most `--presence-limit` of them in a large room.
        users: Vec<UserRef<'a>>,
        /// How many users are present in all.
        users_total: usize,
        /// The user's read marker in the room (0: nothing read).
        read_seq: u64,
        /// A private room or a direct-message room (members only).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        private: bool,
        /// Only moderators may post.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        read_only: bool,
    },
    Msg {
        room: &'a str,
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        ts: u64,
        user: &'a str,
        uid: &'a str,
        text: &'a str,
    },
    Ack {
        id: &'a str,
        room: &'a str,
        seq: u64,
        dup: bool,
    },
    System {
        room: &'a str,
        event: SystemEvent,
        user: UserRef<'a>,
        ts: u64,
        /// The previous name, on `nick` events.
        #[serde(skip_serializing_if = "Option::is_none")]
        old_name: Option<&'a str>,
    },
    Typing {
        room: &'a str,
        user: UserRef<'a>,
    },
    /// Message `of` now has `text` (its author edited it); a new event with its own seq.
    Edit {
        room: &'a str,
        seq: u64,
        of: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        ts: u64,
        user: &'a str,
        uid: &'a str,
        text: &'a str,
    },
    /// Message `of` was deleted by `uid` (its author or a moderator).
    Delete {
        room: &'a str,
        seq: u64,
        of: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        ts: u64,
        user: &'a str,
        uid: &'a str,
    },
    /// A moderator's action, in the room's seq order (stored like a message).
    #[serde(rename = "system")]
    Moderation {
        room: &'a str,
        seq: u64,
        event: ModEvent,
        /// Who was removed (`kick`).
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<UserRef<'a>>,
        by: UserRef<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        minutes: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        read_only: Option<bool>,
        ts: u64,
    },
    /// A direct-message room of the receiver and `user` (opened by either of them).
    Dm {
        room: &'a str,
        user: UserRef<'a>,
    },
    /// The receiver may now join the private room `room`.
    Invited {
        room: &'a str,
        by: UserRef<'a>,
    },
    /// The user's read marker moved (sent to each of the user's connections).
    Read {
        room: &'a str,
        seq: u64,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        t: Option<&'a RawValue>,
    },
    Error {
        code: ErrorCode,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<&'a str>,
    },
}

impl ServerMsg<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("server messages always serialize")
    }
}

/// A stored chat message as the journal and history hold it; the same JSON as a live `msg`.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredMsgRecord {
    pub room: String,
    pub seq: u64,
    #[serde(default)]
    pub id: Option<String>,
    pub uid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ParseLimits = ParseLimits { max_text_chars: 10 };

    fn code(frame: &str) -> ErrorCode {
        parse_client(frame, L).unwrap_err().code
    }

    #[test]
    fn parses_every_client_type() {
        assert_eq!(
            parse_client(r#"{"type":"join","room":"lobby","since":7}"#, L).unwrap(),
            ClientMsg::Join { room: RoomName::parse("lobby").unwrap(), since: Some(7), epoch: None, private: false }
        );
        assert_eq!(parse_client(r#"{"type":"leave","room":"a.b"}"#, L).unwrap().kind(), "leave");
        assert_eq!(
            parse_client(r#"{"type":"msg","room":"r","text":"hi","id":"x1"}"#, L).unwrap(),
            ClientMsg::Msg { room: RoomName::parse("r").unwrap(), text: "hi".into(), id: Some("x1".into()) }
        );
        assert_eq!(parse_client(r#"{"type":"typing","room":"r"}"#, L).unwrap().kind(), "typing");
        assert_eq!(
            parse_client(r#"{"type":"nick","name":"  bob\u0007 "}"#, L).unwrap(),
            ClientMsg::Nick { name: "bob".into() }
        );
        match parse_client(r#"{"type":"ping","t":123}"#, L).unwrap() {
            ClientMsg::Ping { t } => assert_eq!(t.unwrap().0.get(), "123"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn typeless_text_is_a_lobby_post_and_user_is_ignored() {
        assert_eq!(
            parse_client(r#"{"user":"mallory","text":"hello"}"#, L).unwrap(),
            ClientMsg::LegacyMsg { text: "hello".into() }
        );
    }

    #[test]
    fn every_bad_input_has_its_code() {
        assert_eq!(code("not json"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadJson);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"user":"x"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"join","room":"a b"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"join","room":""}"#), ErrorCode::BadField);
        assert_eq!(code(&format!(r#"{{"type":"join","room":"{}"}}"#, "a".repeat(65))), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"join","room":"r","since":-1}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"msg","room":"r","text":5}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"msg","room":"r","text":"   "}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"msg","room":"r","text":"01234567890"}"#), ErrorCode::TooLong);
        assert_eq!(
            code(&format!(r#"{{"type":"msg","room":"r","text":"x","id":"{}"}}"#, "i".repeat(65))),
            ErrorCode::BadField
        );
        assert_eq!(code(r#"{"type":"nick","name":"\u0001 "}"#), ErrorCode::BadField);
        // The issue 14 messages: the same limits, clear codes.
        assert_eq!(code(r#"{"type":"edit","room":"r","seq":1,"text":"01234567890"}"#), ErrorCode::TooLong);
        assert_eq!(code(r#"{"type":"edit","room":"r","seq":0,"text":"x"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"delete","room":"r","seq":-3}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"read","room":"r","seq":9007199254740992}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"kick","room":"r","user":"u","minutes":-1}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"kick","room":"r","user":"u","minutes":10081}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"mode","room":"r"}"#), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"dm","user":""}"#), ErrorCode::BadField);
        assert_eq!(code(&format!(r#"{{"type":"dm","user":"{}"}}"#, "u".repeat(129))), ErrorCode::BadField);
        assert_eq!(code(r#"{"type":"join","room":"r","private":"yes"}"#), ErrorCode::BadField);
    }

    #[test]
    fn history_and_search_fields_are_bounded() {
        let ok = parse_client(r#"{"type":"history","room":"r","before":10,"limit":200}"#, L).unwrap();
        assert_eq!(ok, ClientMsg::History { room: RoomName::parse("r").unwrap(), before: 10, limit: 200 });
        for bad in [
            r#"{"type":"history","room":"r"}"#,
            r#"{"type":"history","room":"r","before":-1}"#,
            r#"{"type":"history","room":"r","before":0}"#,
            r#"{"type":"history","room":"r","before":1e300}"#,
            r#"{"type":"history","room":"r","before":18446744073709551616}"#,
            r#"{"type":"history","room":"r","before":9007199254740992}"#,
            r#"{"type":"history","room":"r","before":5,"limit":201}"#,
            r#"{"type":"history","room":"r","before":5,"limit":0}"#,
            r#"{"type":"history","room":"r","before":5,"limit":-3}"#,
            r#"{"type":"history","room":"no room","before":5}"#,
            r#"{"type":"search","room":"r","q":""}"#,
            r#"{"type":"search","room":"r","q":"\" * - ( )"}"#,
            r#"{"type":"search","room":"r","q":5}"#,
            r#"{"type":"search","room":"r","q":"x","before":-2}"#,
            r#"{"type":"join","room":"r","epoch":"x'; DROP"}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::BadField, "{bad}");
        }
        let long = format!(r#"{{"type":"search","room":"r","q":"{}"}}"#, "a".repeat(10_000));
        assert_eq!(code(&long), ErrorCode::BadField);
        let ok = parse_client(r#"{"type":"search","room":"r","q":"NEAR(\"x\" y)*"}"#, L).unwrap();
        assert_eq!(ok.kind(), "search");
    }

    #[test]
    fn text_limit_counts_characters_not_bytes() {
        assert!(parse_client(r#"{"type":"msg","room":"r","text":"éééééééééé"}"#, L).is_ok());
    }

    #[test]
    fn errors_refer_to_the_client_id() {
        let e = parse_client(r#"{"type":"msg","room":"r","text":"01234567890","id":"m-1"}"#, L).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("m-1"));
        let e = parse_client(r#"{"type":"join"}"#, L).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("join"));
    }

    #[test]
    fn names_are_cleaned() {
        assert_eq!(clean_name("  al\tice  ").as_deref(), Some("alice"));
        assert_eq!(clean_name("\u{1}\u{2}"), None);
        assert_eq!(clean_name(&"n".repeat(40)).unwrap().chars().count(), 32);
    }

    #[test]
    fn server_messages_have_the_documented_shape() {
        let j = String::from_utf8(ServerMsg::Ack { id: "a", room: "r", seq: 3, dup: true }.to_json()).unwrap();
        assert_eq!(j, r#"{"type":"ack","id":"a","room":"r","seq":3,"dup":true}"#);
        let e = ProtocolError::new(ErrorCode::NotJoined, "join first").with_ref(Some("x".into()));
        let j = String::from_utf8(e.to_server_msg().to_json()).unwrap();
        assert_eq!(j, r#"{"type":"error","code":"not_joined","message":"join first","ref":"x"}"#);
    }
}
