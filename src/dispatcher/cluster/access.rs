//! Redis mode's private rooms, DM rooms, invitations, kicks and read-only rooms.
//!
//! The facts live in Redis (`store::redis::access`), so every instance enforces the same
//! rules: a join reads them with its history on `redis-io` (one request, the dispatcher
//! never waits), `dm`/`invite`/`join {private:true}` write them there, and a kick or
//! read-only change is appended as a `system` event that sets the fact in the same
//! script. Each instance applies a delivered moderation event to its own connections
//! (a kicked user's leave the room) and to its read-only cache, which posts are checked
//! against. `dm`/`invited` frames go to the user's connections here at once and to the
//! other instances' through the users channel. The `redis-io` half (functions taking a
//! [`RedisStore`]) never touches rooms; the dispatcher half never waits on Redis.

use bytes::Bytes;

use super::io::{describe, ClusterEvent, Request};
use crate::delivery::outbox::ConnId;
use crate::dispatcher::dms::{dm_rate_error, unknown_user, DM_RATE_WINDOW_MS};
use crate::dispatcher::moderation::kick_refusal;
use crate::dispatcher::privacy::{Privacy, DM_PREFIX};
use crate::dispatcher::state::now_ms;
use crate::dispatcher::Dispatcher;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, User, UserId, UserRef};
use crate::store::redis::{DmOpened, RedisStore, RoomAccess};
use crate::store::AccessChange;

/// What a joining user's token says of a room, for the check `redis-io` makes with the
/// room's facts from Redis.
#[derive(Debug, Clone, Copy)]
pub struct JoinRule {
    /// The token's `rooms` claim names the room (lets it into a private room).
    pub claim: bool,
    /// The token may join the room were it public.
    pub open: bool,
    /// `join {private:true}`: create the room as a private room of the user.
    pub private: bool,
}

/// A frame for a user's connections on every instance (the users channel's payload).
#[derive(serde::Serialize, serde::Deserialize)]
struct ToUser {
    to: String,
    frame: String,
}

/// `redis-io`: whether `uid` may join `room` under `rule` (creating it private when
/// asked); the room's facts when it may.
pub(super) fn check_join(
    store: &mut RedisStore,
    room: &RoomName,
    uid: &str,
    rule: JoinRule,
) -> Result<RoomAccess, ProtocolError> {
    let err = |code, message: String| ProtocolError::new(code, message).with_ref(Some("join".into()));
    let unavailable = |e| err(ErrorCode::Unavailable, describe(&e));
    let mut access = store.access(room, uid).map_err(unavailable)?;
    if rule.private && !access.is_private() {
        if room.as_str().starts_with(DM_PREFIX) || !store.create_private(room, uid).map_err(unavailable)? {
            return Err(err(ErrorCode::BadField, format!("`{room}` exists and is public")));
        }
        access = store.access(room, uid).map_err(unavailable)?;
    }
    if let Some(until) = access.kicked_until {
        kick_refusal(room, until, now_ms())?;
    }
    let allowed = if room.as_str().starts_with(DM_PREFIX) {
        access.pair.as_ref().is_some_and(|pair| pair.iter().any(|u| u == uid))
    } else {
        match &access.owner {
            Some(owner) => owner == uid || access.invited || rule.claim,
            None => rule.open,
        }
    };
    if !allowed {
        return Err(err(ErrorCode::Forbidden, format!("you may not join `{room}`")));
    }
    Ok(access)
}

/// `redis-io`: a user's name, from this instance's connections (`known`) or Redis's
/// lasting users.
fn name_of(store: &mut RedisStore, uid: &str, known: Option<String>, what: &str) -> Result<String, ProtocolError> {
    let err = |code, message: String| ProtocolError::new(code, message).with_ref(Some(what.into()));
    match known {
        Some(name) => Ok(name),
        None => store
            .user_name(uid)
            .map_err(|e| err(ErrorCode::Unavailable, describe(&e)))?
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no user `{uid}`"))),
    }
}

/// `redis-io`: publishes `frame` for `to`'s connections on the other instances; this
/// instance's are staged with the answer.
pub(super) fn tell(store: &mut RedisStore, to: &str, frame: &Bytes) {
    let json = wire::payload(frame);
    let message = ToUser { to: to.to_owned(), frame: String::from_utf8_lossy(&json).into_owned() };
    let payload = serde_json::to_vec(&message).expect("a user frame always serializes");
    if let Err(e) = store.tell_user(&payload) {
        log::warn!("redis: could not tell {to}'s other instances: {e}");
    }
}

/// `redis-io`: performs an access request.
pub(super) fn handle(store: &mut RedisStore, req: Request) -> Option<ClusterEvent> {
    match req {
        Request::Welcome { conn, uid, name, lasting, max_dms } => {
            if lasting {
                let _ = store.remember_user(&uid, &name);
            }
            let frames = super::dms::welcome_frames(store, &uid, max_dms);
            Some(ClusterEvent::Welcome { conn, frames })
        }
        Request::Dm { conn, me, other, other_name, rate } => {
            let result = open_dm(store, &me, &other, other_name, rate);
            Some(ClusterEvent::Told { conn, result })
        }
        Request::Invite { conn, room, by, is_mod, user, user_name } => {
            let result = invite(store, &room, (&by, is_mod), &user, user_name);
            Some(ClusterEvent::Told { conn, result })
        }
        Request::Moderate { conn, room, uid, prefix, suffix, field, value, what } => {
            let result = store
                .moderate(&room, &uid, (&prefix, &suffix), (&field, &value))
                .map(|_| ())
                .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, describe(&e)).with_ref(Some(what.into())));
            Some(ClusterEvent::Told { conn, result: result.map(|()| Vec::new()) })
        }
        _ => None,
    }
}

/// Frames for users' connections: (whose, frame).
pub type UserFrames = Vec<(UserId, Bytes)>;

fn open_dm(
    store: &mut RedisStore,
    me: &User,
    other: &str,
    known: Option<String>,
    rate: u32,
) -> Result<UserFrames, ProtocolError> {
    let their_name = name_of(store, other, known, "dm")?;
    let room = Privacy::dm_room(&me.id, other);
    let window = DM_RATE_WINDOW_MS / 1000;
    let opened = store
        .open_dm_checked(&room, (&me.id, other), rate, window)
        .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, describe(&e)).with_ref(Some("dm".into())))?;
    let tell_other = match opened {
        DmOpened::Blocked => return Err(unknown_user(other)),
        DmOpened::RateLimited => return Err(dm_rate_error(rate)),
        DmOpened::Open { tell_other } => tell_other,
    };
    let to_me = wire::encode(&ServerMsg::Dm { room: room.as_str(), user: UserRef { id: other, name: &their_name } });
    tell(store, &me.id, &to_me);
    let mut frames = vec![(me.id.clone(), to_me)];
    if tell_other {
        let to_them = wire::encode(&ServerMsg::Dm { room: room.as_str(), user: me.as_ref() });
        tell(store, other, &to_them);
        frames.push((UserId::from(other), to_them));
    }
    Ok(frames)
}

fn invite(
    store: &mut RedisStore,
    room: &RoomName,
    (by, is_mod): (&User, bool),
    user: &str,
    known: Option<String>,
) -> Result<UserFrames, ProtocolError> {
    let err = |code, message: String| ProtocolError::new(code, message).with_ref(Some("invite".into()));
    let unavailable = |e| err(ErrorCode::Unavailable, describe(&e));
    let access = store.access(room, user).map_err(unavailable)?;
    let Some(owner) = access.owner else {
        return Err(err(ErrorCode::BadField, format!("`{room}` is not a private room: anyone may join it")));
    };
    if owner != *by.id && !is_mod {
        return Err(err(ErrorCode::Forbidden, "only the room's owner or a moderator may invite".into()));
    }
    name_of(store, user, known, "invite")?;
    if !access.invited && owner != user {
        log::info!("{} invited {user} to private room {room}", by.id);
        store.invite(room, user).map_err(unavailable)?;
    }
    let frame = wire::encode(&ServerMsg::Invited { room: room.as_str(), by: by.as_ref() });
    tell(store, user, &frame);
    Ok(vec![(UserId::from(user), frame)])
}

/// A moderation event as delivered from a room's stream.
#[derive(serde::Deserialize)]
struct Delivered {
    #[serde(rename = "type")]
    kind: String,
    event: Option<String>,
    user: Option<DeliveredUser>,
    read_only: Option<bool>,
}

#[derive(serde::Deserialize)]
struct DeliveredUser {
    id: String,
}

impl Dispatcher {
    /// A new connection: Redis remembers a lasting user, and tells the connection of
    /// every DM room it has (the answer is [`ClusterEvent::Welcome`]).
    pub(crate) fn cluster_welcome(&mut self, conn: ConnId, uid: &UserId, name: &str, lasting: bool) {
        let max_dms = self.cfg.max_dms_per_conn;
        self.backend.tell_cluster(|| Request::Welcome {
            conn,
            uid: uid.clone(),
            name: name.to_owned(),
            lasting,
            max_dms,
        });
    }

    /// `dm {user}` in Redis mode: the pair is recorded there, both users' connections
    /// on every instance are told.
    pub(crate) fn cluster_dm(&mut self, conn: ConnId, me: User, other: &str) {
        let other_name = self.local_name(other);
        let other = UserId::from(other);
        let rate = self.cfg.dm_open_rate;
        self.backend.tell_cluster(|| Request::Dm { conn, me, other, other_name, rate });
    }

    /// `invite {room, user}` in Redis mode: Redis's owner of the room decides.
    pub(crate) fn cluster_invite(&mut self, conn: ConnId, room: &RoomName, by: User, is_mod: bool, user: &str) {
        let user_name = self.local_name(user);
        let (room, user) = (room.clone(), UserId::from(user));
        self.backend.tell_cluster(|| Request::Invite { conn, room, by, is_mod, user, user_name });
    }

    /// Appends a moderator's `system` event (JSON with seq 0) that sets `field` of the
    /// room's access to `value`; every instance applies it when it delivers it.
    pub(crate) fn cluster_moderate(
        &mut self,
        conn: ConnId,
        room: RoomName,
        by: UserId,
        json: &[u8],
        fact: (String, String),
        what: &'static str,
    ) {
        let (prefix, suffix) = super::split_msg_json(json);
        let (field, value) = fact;
        self.backend.tell_cluster(|| Request::Moderate { conn, room, uid: by, prefix, suffix, field, value, what });
    }

    /// The name of a user connected here.
    fn local_name(&self, uid: &str) -> Option<String> {
        self.user_conns.of(uid).first().and_then(|c| self.clients.get(c)).map(|c| c.name.clone())
    }

    /// The answer to a `dm`, `invite`, `kick` or `mode`: the frames for users' local
    /// connections, or the error.
    pub(super) fn on_told(&mut self, conn: ConnId, result: Result<UserFrames, ProtocolError>) {
        match result {
            Ok(frames) => {
                for (user, frame) in frames {
                    self.stage_user(&user, &frame);
                }
            }
            Err(e) => self.reply_error(conn, &e),
        }
    }

    /// Another instance's frame for a user: staged to the user's connections here.
    pub(super) fn on_user_frame(&mut self, json: &[u8]) {
        let Ok(ToUser { to, frame }) = serde_json::from_slice::<ToUser>(json) else {
            return log::warn!("redis: skipping a user frame that does not parse");
        };
        self.stage_user(&to, &wire::text_frame(frame.as_bytes()));
    }

    /// A moderation event delivered from the room's stream: a kicked user's
    /// connections here leave the room (after the event was staged to them); a
    /// read-only change reaches the cache posts are checked against.
    pub(super) fn apply_delivered_moderation(&mut self, room: &RoomName, json: &[u8]) {
        let Ok(e) = serde_json::from_slice::<Delivered>(json) else { return };
        if e.kind != "system" {
            return;
        }
        match (e.event.as_deref(), e.user, e.read_only) {
            (Some("kick"), Some(user), _) => self.remove_user_from_room(&user.id, room),
            (Some("read_only"), _, Some(on)) => {
                self.moderation.apply(&AccessChange::ReadOnly { room: room.to_string(), on });
            }
            _ => {}
        }
    }
}
