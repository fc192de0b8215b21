//! `redis-io`'s requests about who may join what: the join check against a room's
//! facts in Redis, `dm`, `invite`, `kick`/`mode`, and the DM rooms a new connection is
//! told of.
//!
//! The facts live in Redis (`store::redis::access`), so every instance enforces the
//! same rules (the pure ones are [`crate::access`]'s, which local mode applies too): a
//! join reads them with its history (one request, the dispatcher never waits),
//! `dm`/`invite`/`join {private:true}` write them, and a kick or read-only change is
//! appended as a `system` event that sets the fact in the same script (open mode's
//! kicks of addresses are written by each instance for its own connections). `dm`/`invited`
//! frames go to the other instances through the users channel ([`super::users`]); the
//! answer carries them for this instance's connections. Never touches rooms or
//! sockets.

use super::users::{tell, UserFrames};
use super::{describe, unix_ms, ClusterEvent, Request};
use crate::access::{
    dm_rate_error, dm_room, kick_refusal, may_not_join, not_private, unknown_user, JoinRule, DM_PREFIX,
    DM_RATE_WINDOW_MS, PRIVATE_PREFIX,
};
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, User, UserId, UserRef};
use crate::store::redis::{DmOpened, RedisStore, RoomAccess};

/// Whether `uid` may join `room` under `rule` (creating it private when
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
    if let Some(title) = &rule.create {
        // 130 random bits: a taken name is a broken random source, not a race to win.
        if !store.create_private(room, uid, title).map_err(unavailable)? {
            return Err(err(ErrorCode::Unavailable, "could not name a new private room: try again".into()));
        }
        access = store.access(room, uid).map_err(unavailable)?;
    } else if rule.private && !access.is_private() && !room.as_str().starts_with(PRIVATE_PREFIX) {
        return Err(not_private(room));
    }
    if let Some(until) = access.kicked_until {
        kick_refusal(room, until, unix_ms())?;
    }
    if let Some(addr) = rule.addr {
        if let Some(until) = store.address_kicked_until(room, addr).map_err(unavailable)? {
            kick_refusal(room, until, unix_ms())?;
        }
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
        return Err(may_not_join(room));
    }
    Ok(access)
}

/// A user's name, from this instance's connections (`known`) or Redis's
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

/// Performs an access request; `None` for any other.
pub(super) fn handle<C, A>(store: &mut RedisStore, req: Request<C, A>) -> Option<ClusterEvent<C, A>> {
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
        Request::KickAddresses { room, addrs, until } => {
            if let Err(e) = store.kick_addresses(&room, &addrs, until) {
                log::warn!("redis: could not record the kicked addresses in {room}: {}", describe(&e));
            }
            None
        }
        Request::Moderate { conn, room, uid, prefix, suffix, field, value, what, audit } => {
            let result = store
                .moderate(&room, &uid, (&prefix, &suffix), (&field, &value))
                .map(|_| ())
                .map_err(|e| ProtocolError::new(ErrorCode::Unavailable, describe(&e)).with_ref(Some(what.into())));
            if let (Ok(()), Some((entry, keep_ms))) = (&result, audit) {
                // Stored: now it is an action taken, and goes in the log.
                if let Err(e) = store.audit_append(&entry, keep_ms) {
                    log::warn!("audit: entry not stored in Redis ({e}): {entry:?}");
                }
            }
            Some(ClusterEvent::Told { conn, result: result.map(|()| Vec::new()) })
        }
        _ => None,
    }
}

fn open_dm(
    store: &mut RedisStore,
    me: &User,
    other: &str,
    known: Option<String>,
    rate: u32,
) -> Result<UserFrames, ProtocolError> {
    let their_name = name_of(store, other, known, "dm")?;
    let room = dm_room(&me.id, other);
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
    let title = access.title.as_deref();
    let frame = wire::encode(&ServerMsg::Invited { room: room.as_str(), by: by.as_ref(), title });
    tell(store, user, &frame);
    Ok(vec![(UserId::from(user), frame)])
}
