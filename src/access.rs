//! Who may do what, decided at the handshake and checked per `join` and per action —
//! never per delivered message: the rooms a user may join (the token's `rooms` claim,
//! or the server's default) and the user's role.
//!
//! Also the join rules both modes apply alike — the local dispatcher and Redis mode's
//! `redis-io` thread: what a token says of a room ([`JoinRule`]), DM rooms' names
//! ([`DM_PREFIX`], [`dm_room`]) and limits (blocks, the rate of new DMs), private
//! room names ([`PRIVATE_PREFIX`], [`private_room_name`]), and the refusals of a
//! kicked user ([`kick_refusal`]), of a join ([`may_not_join`], [`not_private`]) and
//! of a `dm` that may not open.
//!
//! Pure data and matching; it knows nothing about rooms that exist or sockets.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::protocol::wire::{self, Frame};
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg};

/// Room names with this prefix are direct-message rooms, and nothing else.
pub const DM_PREFIX: &str = "dm.";

/// The DM room of two users: the same whoever asks.
pub fn dm_room(a: &str, b: &str) -> RoomName {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let digest = Sha256::digest([b"natter dm\0", lo.as_bytes(), b"\0", hi.as_bytes()].concat());
    let name = format!("{DM_PREFIX}{}", hex::encode(&digest[..10]));
    RoomName::parse(&name).expect("a dm room name is a valid room name")
}

/// Room names with this prefix are private rooms the server named, and nothing else:
/// no client can make a public room of such a name, and no public name becomes private.
pub const PRIVATE_PREFIX: &str = "p.";

/// A new private room's name: [`PRIVATE_PREFIX`] and 26 random base32 letters (130
/// bits), so a name cannot be guessed, probed or taken before its owner makes it.
pub fn private_room_name() -> RoomName {
    use rand::Rng;
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut rng = rand::rng();
    let letters: String = (0..26).map(|_| ALPHABET[rng.random_range(0..32)] as char).collect();
    RoomName::parse(&format!("{PRIVATE_PREFIX}{letters}")).expect("a private room name is a valid room name")
}

/// The refusal of a join the user may not make. A private room answers an outsider
/// exactly as a `p.` name that does not exist does, so neither tells the other.
pub fn may_not_join(room: &RoomName) -> ProtocolError {
    ProtocolError::new(ErrorCode::Forbidden, format!("you may not join `{room}`")).with_ref(Some("join".into()))
}

/// The refusal of `join {room, private:true}` for a room that is not private: a public
/// name never becomes private.
pub fn not_private(room: &RoomName) -> ProtocolError {
    ProtocolError::new(
        ErrorCode::BadField,
        format!("`{room}` is not a private room: send `join` with `private:true` and a `title` but no `room`, and the server names a new one"),
    )
    .with_ref(Some("join".into()))
}

/// Most users one user may block: the list is sent whole at connect.
pub const MAX_BLOCKS: usize = 1000;
/// The window `--dm-open-rate` counts new DM rooms in.
pub const DM_RATE_WINDOW_MS: u64 = 60_000;

/// Whether `room` is a DM room (by its name: nothing else may take the prefix).
pub fn is_dm(room: &RoomName) -> bool {
    room.as_str().starts_with(DM_PREFIX)
}

/// The `dm` refusal a blocked user gets: word for word the answer for a user the
/// server does not know, so a block is never confirmed to the one blocked.
pub fn unknown_user(user: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotFound, format!("no user `{user}`")).with_ref(Some("dm".into()))
}

/// The refusal past `--dm-open-rate`.
pub fn dm_rate_error(rate: u32) -> ProtocolError {
    let message = format!("too many new direct messages (at most {rate} a minute for you and for the other user)");
    ProtocolError::new(ErrorCode::DmRate, message).with_ref(Some("dm".into()))
}

/// The `blocked` frame: the whole list.
pub fn blocked_frame<'a>(users: impl IntoIterator<Item = &'a str>) -> Frame {
    let mut users: Vec<&str> = users.into_iter().collect();
    users.sort_unstable();
    wire::encode(&ServerMsg::Blocked { users })
}

/// Refuses a join while a kick lasting `until` is in force at `now`, saying for how
/// long.
pub fn kick_refusal(room: &RoomName, until: u64, now: u64) -> Result<(), ProtocolError> {
    if until <= now {
        return Ok(());
    }
    let minutes = (until - now).div_ceil(60_000);
    Err(ProtocolError::new(
        ErrorCode::Forbidden,
        format!("a moderator removed you from `{room}`: {minutes} more minute(s)"),
    )
    .with_ref(Some("join".into())))
}

/// What a joining user's token says of a room, for Redis mode's check against the
/// room's facts in Redis.
#[derive(Debug, Clone)]
pub struct JoinRule {
    /// The token's `rooms` claim names the room (lets it into a private room).
    pub claim: bool,
    /// The token may join the room were it public.
    pub open: bool,
    /// `join {room, private:true}`: the room must be private already.
    pub private: bool,
    /// `join {private:true, title}`: create the (server-named) room as a private room
    /// of the user, with this title.
    pub create: Option<String>,
    /// Open mode: the client's address, refused while a kick covers it.
    pub addr: Option<std::net::IpAddr>,
}

/// Most patterns a `rooms` claim may hold: a join checks each, so the bound keeps a
/// join's cost bounded too.
pub const MAX_PATTERNS: usize = 1000;

/// What `--rooms-default` says for users whose token has no `rooms` claim (and for
/// every user in open mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RoomsDefault {
    /// Any public room.
    #[default]
    Open,
    /// None: only rooms a claim, an invitation or a DM gives.
    None,
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Member,
    /// May delete any message, kick users from rooms and make rooms read-only.
    Mod,
}

impl Role {
    /// The `role` claim: `"mod"` or absent; anything else is refused.
    pub fn from_claim(claim: Option<&str>) -> Result<Role, String> {
        match claim {
            None | Some("member") => Ok(Role::Member),
            Some("mod") => Ok(Role::Mod),
            Some(other) => Err(format!("unknown role {:?} (mod or member)", truncate(other))),
        }
    }
}

/// One entry of a `rooms` claim: an exact room name, or `prefix*`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

/// The rooms a token lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPatterns(Vec<Pattern>);

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

impl RoomPatterns {
    /// Parses a `rooms` claim: a list of at most [`MAX_PATTERNS`] strings, each a room
    /// name, or a room-name prefix followed by one `*` (a bare `*` is every room).
    pub fn from_claim(claim: &Value) -> Result<RoomPatterns, String> {
        let list = claim.as_array().ok_or("the `rooms` claim must be a list of strings")?;
        if list.len() > MAX_PATTERNS {
            return Err(format!("the `rooms` claim holds {} patterns; at most {MAX_PATTERNS}", list.len()));
        }
        let mut patterns = Vec::with_capacity(list.len());
        for item in list {
            let s = item.as_str().ok_or("the `rooms` claim must be a list of strings")?;
            let pattern = match s.strip_suffix('*') {
                Some("") => Pattern::Prefix(String::new()),
                Some(prefix) if RoomName::parse(prefix).is_some() || prefix.bytes().all(|b| b == b'.') => {
                    Pattern::Prefix(prefix.to_owned())
                }
                None if RoomName::parse(s).is_some() => Pattern::Exact(s.to_owned()),
                _ => return Err(format!("`rooms` pattern {:?} is not a room name or prefix*", truncate(s))),
            };
            patterns.push(pattern);
        }
        Ok(RoomPatterns(patterns))
    }

    /// Whether `room` matches one of the patterns.
    pub fn allows(&self, room: &RoomName) -> bool {
        self.0.iter().any(|p| match p {
            Pattern::Exact(name) => name == room.as_str(),
            Pattern::Prefix(prefix) => room.as_str().starts_with(prefix.as_str()),
        })
    }
}

/// A connection's rights, fixed at the handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// `None`: no claim, the server's `--rooms-default` applies.
    pub rooms: Option<RoomPatterns>,
    pub role: Role,
}

impl Access {
    /// Whether the token (or the default) lets the user into `room` by itself, without
    /// an invitation. Private rooms and DMs add their own rule on top.
    /// Whether the token may join `room` were it public; never a [`PRIVATE_PREFIX`]
    /// name, which no public room has.
    pub fn may_join(&self, room: &RoomName, default: RoomsDefault) -> bool {
        if room.as_str().starts_with(PRIVATE_PREFIX) {
            return false;
        }
        match &self.rooms {
            Some(patterns) => patterns.allows(room),
            None => default == RoomsDefault::Open,
        }
    }

    pub fn is_mod(&self) -> bool {
        self.role == Role::Mod
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).unwrap()
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let p = RoomPatterns::from_claim(&json!(["team-*", "support"])).unwrap();
        assert!(p.allows(&room("team-a")) && p.allows(&room("team-")) && p.allows(&room("support")));
        assert!(!p.allows(&room("support2")) && !p.allows(&room("tea")) && !p.allows(&room("lobby")));
        assert!(RoomPatterns::from_claim(&json!(["*"])).unwrap().allows(&room("anything")));
        assert!(!RoomPatterns::from_claim(&json!([])).unwrap().allows(&room("lobby")));
    }

    #[test]
    fn bad_claims_are_refused() {
        for bad in [
            json!("team-*"),
            json!({"a": 1}),
            json!([1]),
            json!(["a b"]),
            json!(["x**"]),
            json!(["*x"]),
            json!(["a:b"]),
        ] {
            assert!(RoomPatterns::from_claim(&bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..10_000).map(|i| format!("r{i}")).collect();
        assert!(RoomPatterns::from_claim(&json!(many)).unwrap_err().contains("at most"));
        assert!(Role::from_claim(Some("admin")).is_err());
        assert_eq!(Role::from_claim(Some("mod")), Ok(Role::Mod));
    }

    #[test]
    fn without_a_claim_the_default_decides() {
        let a = Access::default();
        assert!(a.may_join(&room("lobby"), RoomsDefault::Open));
        assert!(!a.may_join(&room("lobby"), RoomsDefault::None));
    }
}
