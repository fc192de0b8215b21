//! What a client may send: the validated [`ClientMsg`] and [`parse_client`], which
//! turns one text frame into it or into the [`ProtocolError`] the client will see, and
//! display names as PROTOCOL.md cleans them. Never touches sockets or room state.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    ErrorCode, FileDesc, ProtocolError, RoomName, DEFAULT_PAGE, MAX_EPOCH_CHARS, MAX_FILES_PER_MSG, MAX_FILE_ID_CHARS,
    MAX_FILE_URLS, MAX_ID_CHARS, MAX_KICK_MINUTES, MAX_NAME_CHARS, MAX_PAGE, MAX_QUERY_CHARS, MAX_SEQ,
    MAX_USER_ID_CHARS,
};

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
        /// `private: true` with a room: join it only if it is private already (a
        /// public name never becomes private).
        private: bool,
    },
    /// `join {private:true, title}` without a room: a new private room, named by the
    /// server (`p.` and random letters), owned by the sender.
    CreatePrivate {
        /// Shown instead of the name; cleaned like a display name.
        title: String,
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
    /// Stops `user` opening DMs with the sender (on every device and instance); the
    /// sender's pages hide `user`'s messages.
    Block {
        user: String,
    },
    Unblock {
        user: String,
    },
    /// Hides the sender's DM room `room` until a new message arrives in it.
    CloseDm {
        room: RoomName,
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
        /// May be empty when the message carries files.
        text: String,
        id: Option<String>,
        /// The seq of the message this one answers (the frame quotes it).
        reply_to: Option<u64>,
        /// The files the message carries: ids as the client named them, filled in
        /// from the file store by the connection's thread before the dispatcher sees it.
        files: Vec<FileDesc>,
        /// The ids of the users it mentions (at most [`super::MAX_MENTIONS`], no repeats).
        mentions: Vec<String>,
    },
    /// Signed URLs for files posted in `room` (the sender must be in it).
    FileUrls {
        room: RoomName,
        files: Vec<String>,
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
    /// Toggles the user's reaction `emoji` to message `seq`.
    React {
        room: RoomName,
        seq: u64,
        emoji: String,
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
            ClientMsg::Join { .. } | ClientMsg::CreatePrivate { .. } => "join",
            ClientMsg::Dm { .. } => "dm",
            ClientMsg::Block { .. } => "block",
            ClientMsg::Unblock { .. } => "unblock",
            ClientMsg::CloseDm { .. } => "close_dm",
            ClientMsg::Invite { .. } => "invite",
            ClientMsg::Kick { .. } => "kick",
            ClientMsg::Mode { .. } => "mode",
            ClientMsg::Leave { .. } => "leave",
            ClientMsg::History { .. } => "history",
            ClientMsg::Search { .. } => "search",
            ClientMsg::Msg { .. } | ClientMsg::LegacyMsg { .. } => "msg",
            ClientMsg::FileUrls { .. } => "file_urls",
            ClientMsg::Typing { .. } => "typing",
            ClientMsg::Nick { .. } => "nick",
            ClientMsg::Read { .. } => "read",
            ClientMsg::Edit { .. } => "edit",
            ClientMsg::Delete { .. } => "delete",
            ClientMsg::React { .. } => "react",
            ClientMsg::Ping { .. } => "ping",
        }
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
    title: Option<&'a RawValue>,
    #[serde(borrow)]
    minutes: Option<&'a RawValue>,
    #[serde(borrow)]
    read_only: Option<&'a RawValue>,
    #[serde(borrow)]
    emoji: Option<&'a RawValue>,
    #[serde(borrow)]
    reply_to: Option<&'a RawValue>,
    #[serde(borrow)]
    files: Option<&'a RawValue>,
    #[serde(borrow)]
    mentions: Option<&'a RawValue>,
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
            Some("join") if raw.room.is_none() && bool_field(raw.private, "private")? => {
                let title = string_field(raw.title, "title")?;
                ClientMsg::CreatePrivate { title: clean_name(&title).ok_or_else(|| bad_field("`title` is empty"))? }
            }
            Some("join") => ClientMsg::Join {
                room: room_field(raw.room)?,
                since: since_field(raw.since)?,
                epoch: epoch_field(raw.epoch)?,
                private: bool_field(raw.private, "private")?,
            },
            Some("dm") => ClientMsg::Dm { user: user_field(raw.user)? },
            Some("block") => ClientMsg::Block { user: user_field(raw.user)? },
            Some("unblock") => ClientMsg::Unblock { user: user_field(raw.user)? },
            Some("close_dm") => ClientMsg::CloseDm { room: room_field(raw.room)? },
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
                let parsed = (|| {
                    let room = room_field(raw.room)?;
                    let files = files_field(raw.files, MAX_FILES_PER_MSG)?;
                    // A message of files alone needs no text.
                    let text = match raw.text {
                        None if !files.is_empty() => String::new(),
                        Some(t) if !files.is_empty() && string_field(Some(t), "text")?.trim().is_empty() => {
                            String::new()
                        }
                        t => text_field(t, limits)?,
                    };
                    Ok((room, text, seq_field(raw.reply_to, "reply_to")?, files, mentions_field(raw.mentions)?))
                })();
                let (room, text, reply_to, files, mentions) =
                    parsed.map_err(|e: ProtocolError| e.with_ref(id.clone().or(Some("msg".into()))))?;
                let files = files.into_iter().map(FileDesc::named).collect();
                ClientMsg::Msg { room, text, id, reply_to, files, mentions }
            }
            Some("file_urls") => {
                ClientMsg::FileUrls { room: room_field(raw.room)?, files: files_field(raw.files, MAX_FILE_URLS)? }
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
            Some("react") => ClientMsg::React {
                room: room_field(raw.room)?,
                seq: seq_field(raw.seq, "seq")?.ok_or_else(|| bad_field("missing field `seq`"))?,
                emoji: emoji_field(raw.emoji)?,
            },
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

/// `files`: at most `max` distinct file ids (absent: none).
fn files_field(v: Option<&RawValue>, max: usize) -> Result<Vec<String>, ProtocolError> {
    let Some(v) = v.filter(|v| v.get() != "null") else { return Ok(Vec::new()) };
    let ids: Vec<String> =
        serde_json::from_str(v.get()).map_err(|_| bad_field("`files` must be an array of file ids"))?;
    if ids.len() > max {
        return Err(bad_field(format!("at most {max} files")));
    }
    let ok =
        |id: &String| !id.is_empty() && id.len() <= MAX_FILE_ID_CHARS && id.bytes().all(|b| b.is_ascii_alphanumeric());
    if let Some(bad) = ids.iter().find(|id| !ok(id)) {
        return Err(bad_field(format!("`{}` is not a file id", truncate(bad, 64))));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(*id)) {
        return Err(bad_field(format!("file `{dup}` is named twice")));
    }
    Ok(ids)
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

/// The user ids a message mentions: a list of at most [`super::MAX_MENTIONS`] user
/// ids (repeats dropped); absent or `null` is none.
fn mentions_field(v: Option<&RawValue>) -> Result<Vec<String>, ProtocolError> {
    let Some(v) = v.filter(|v| v.get() != "null") else { return Ok(Vec::new()) };
    let bad = || bad_field(format!("`mentions` must be a list of at most {} user ids", super::MAX_MENTIONS));
    let ids: Vec<&RawValue> = serde_json::from_str(v.get()).map_err(|_| bad())?;
    if ids.len() > super::MAX_MENTIONS {
        return Err(bad());
    }
    let mut out: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        let id = user_field(Some(id)).map_err(|_| bad())?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

/// An emoji to react with (see [`super::valid_emoji`]).
fn emoji_field(v: Option<&RawValue>) -> Result<String, ProtocolError> {
    let emoji = string_field(v, "emoji")?;
    if !super::valid_emoji(&emoji) {
        return Err(bad_field(format!(
            "`emoji` must be one emoji: 1-{} characters, not all ASCII, no spaces, quotes, brackets or commas",
            super::MAX_EMOJI_CHARS
        )));
    }
    Ok(emoji.into_owned())
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
            ClientMsg::Msg {
                room: RoomName::parse("r").unwrap(),
                text: "hi".into(),
                id: Some("x1".into()),
                reply_to: None,
                files: vec![],
                mentions: vec![]
            }
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
}
