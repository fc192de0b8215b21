//! The wire contract in types (docs/PROTOCOL.md): [`client`] holds what a client may
//! send and its validation, [`server`] what the server sends back; [`wire`] frames the
//! server's messages for WebSocket, [`sse`] for the fallback's event stream;
//! [`CloseReason`] lists the close codes. This file keeps what both directions share —
//! the limits, room names, users, error codes — and re-exports the rest, so callers
//! name `protocol::X` whichever file holds it.
//!
//! Parsing is one step: a text frame becomes a validated [`ClientMsg`] or a
//! [`ProtocolError`] carrying the error code the client will see. This module never
//! touches sockets or room state.

pub mod client;
mod close;
pub mod deflate;
pub mod files;
pub mod server;
pub mod sse;
pub mod wire;

pub use client::{clean_name, parse_client, ClientMsg, ParseLimits, RawJson};
pub use close::CloseReason;
pub use files::{FileDesc, MAX_FILES_PER_MSG, MAX_FILE_ID_CHARS, MAX_FILE_URLS};
pub use server::{ApiResult, HeartbeatInfo, LimitsInfo, ModEvent, ServerMsg, StoredMsgRecord, SystemEvent, UserRef};

use serde::Serialize;

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
/// Users one message may mention at most.
pub const MAX_MENTIONS: usize = 20;
/// An emoji's length at most, in characters (a family or flag sequence is several).
pub const MAX_EMOJI_CHARS: usize = 16;

/// Whether `s` may stand unescaped in a message's `reactions` field (an emoji, or the
/// id of a user who reacts): none of `"` `\` `[` `]` `{` `}` `,` and no control character.
pub fn plain(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_control() || matches!(c, '"' | '\\' | '[' | ']' | '{' | '}' | ','))
}

/// Whether `emoji` is one a client may react with: 1..=[`MAX_EMOJI_CHARS`] characters,
/// at least one outside ASCII (so words and markup are not emoji), no spaces, [`plain`].
pub fn valid_emoji(emoji: &str) -> bool {
    plain(emoji)
        && emoji.chars().count() <= MAX_EMOJI_CHARS
        && !emoji.is_ascii()
        && !emoji.chars().any(char::is_whitespace)
}

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
    /// A connection creating new rooms faster than `--room-creates` per minute.
    CreateLimited,
    Forbidden,
    /// Redis mode: the message store cannot be reached; nothing was stored, retry.
    Unavailable,
    /// Server API only: no such room, message or route.
    NotFound,
    /// Server API only: no valid API key.
    Unauthorized,
    /// Too many new direct messages for the opener or the other user this minute.
    DmRate,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownType,
        ErrorCode::BadField,
        ErrorCode::NotJoined,
        ErrorCode::TooLong,
        ErrorCode::RateLimited,
        ErrorCode::RoomLimit,
        ErrorCode::CreateLimited,
        ErrorCode::Forbidden,
        ErrorCode::Unavailable,
        ErrorCode::NotFound,
        ErrorCode::Unauthorized,
        ErrorCode::DmRate,
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
            ErrorCode::CreateLimited => "create_limited",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::DmRate => "dm_rate",
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
