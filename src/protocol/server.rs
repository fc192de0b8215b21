//! What the server sends: [`ServerMsg`], every frame but `history` (which `wire`
//! splices from stored messages), and the parts it is built of. Each serializes to
//! the JSON PROTOCOL.md shows; framing happens once, in `wire`. Also the server API's
//! answer ([`ApiResult`], docs/API.md). Never touches sockets.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ErrorCode, FileDesc, ProtocolError};

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
    /// DM rooms a connection may be in, apart from `max_rooms`.
    pub max_dms: usize,
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
        /// How many messages above the marker mention the user (at most 100, meaning
        /// that many or more).
        mentions_unread: u32,
        /// A private room or a direct-message room (members only).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        private: bool,
        /// A private room's title, set by its owner at creation.
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
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
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        files: &'a [FileDesc],
    },
    /// Signed, expiring URLs (path and query, on the WebSocket listener's origin) for
    /// files of `room`, by file id: the answer to `file_urls`.
    FileUrls {
        room: &'a str,
        urls: std::collections::BTreeMap<&'a str, String>,
        /// When the URLs stop working (Unix seconds).
        exp: u64,
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
    /// `uid`'s reaction `emoji` to message `of` is now on (`on`) or off; a new event
    /// with its own seq. `on` is last: Redis mode's append script turns `true}` into
    /// `false}` when the toggle takes a reaction off.
    React {
        room: &'a str,
        seq: u64,
        of: u64,
        ts: u64,
        user: &'a str,
        uid: &'a str,
        emoji: &'a str,
        on: bool,
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
    /// Every user the receiver has blocked (at connect when any, and after each
    /// `block`/`unblock`, on every device).
    Blocked {
        users: Vec<&'a str>,
    },
    /// The receiver closed the DM room `room` (on this or another device): leave it
    /// and hide it; a `dm` frame brings it back when a new message arrives.
    DmClosed {
        room: &'a str,
    },
    /// The receiver may now join the private room `room`.
    Invited {
        room: &'a str,
        by: UserRef<'a>,
        /// The room's title, when it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
    },
    /// The user's read marker moved (sent to each of the user's connections).
    Read {
        room: &'a str,
        seq: u64,
        /// The user's unread mentions in the room left above the marker.
        mentions_unread: u32,
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

/// What a server API call is answered with: a JSON body, or the protocol error.
pub type ApiResult = Result<serde_json::Value, ProtocolError>;

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

    #[test]
    fn server_messages_have_the_documented_shape() {
        let j = String::from_utf8(ServerMsg::Ack { id: "a", room: "r", seq: 3, dup: true }.to_json()).unwrap();
        assert_eq!(j, r#"{"type":"ack","id":"a","room":"r","seq":3,"dup":true}"#);
        let e = ProtocolError::new(ErrorCode::NotJoined, "join first").with_ref(Some("x".into()));
        let j = String::from_utf8(e.to_server_msg().to_json()).unwrap();
        assert_eq!(j, r#"{"type":"error","code":"not_joined","message":"join first","ref":"x"}"#);
    }
}
