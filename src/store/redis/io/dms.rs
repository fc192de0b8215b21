//! `redis-io`'s requests about blocks, closed DMs and the DM rate (the rules local
//! mode applies in `dispatcher::dms`, with the facts in Redis, `store::redis::dms`):
//! `block`/`unblock` and `close_dm` are written there and the new list or `dm_closed`
//! goes to the user's connections on every instance through the users channel; a
//! message stored in a DM room opens it again for whoever closed it. Never touches
//! rooms or sockets.

use std::collections::HashSet;

use super::users::{tell, UserFrames};
use super::{describe, ClusterEvent};
use crate::access::{blocked_frame, MAX_BLOCKS};
use crate::protocol::wire::{self, Frame};
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, UserId, UserRef};
use crate::store::redis::RedisStore;

/// The DM requests `redis-io` performs for the dispatcher (`C`: its tag for a
/// connection).
#[derive(Debug)]
pub enum DmRequest<C> {
    /// `block`/`unblock` by `uid`.
    Block { conn: C, uid: UserId, user: UserId, on: bool },
    /// `close_dm` by `uid`.
    Close { conn: C, uid: UserId, room: RoomName },
    /// A message by `poster` was stored in DM room `room`.
    Reopen { conn: C, room: RoomName, poster: UserId },
}

/// Performs a DM request; the answer is [`ClusterEvent::Told`].
pub(super) fn handle<C, A>(store: &mut RedisStore, req: DmRequest<C>) -> ClusterEvent<C, A> {
    match req {
        DmRequest::Block { conn, uid, user, on } => {
            let result = block(store, &uid, &user, on);
            ClusterEvent::Told { conn, result }
        }
        DmRequest::Close { conn, uid, room } => ClusterEvent::Told { conn, result: close(store, &uid, &room) },
        DmRequest::Reopen { conn, room, poster } => {
            let frames = reopen(store, &room, &poster).unwrap_or_else(|e| {
                log::warn!("redis: could not open {room} again for its users: {e}");
                Vec::new()
            });
            ClusterEvent::Told { conn, result: Ok(frames) }
        }
    }
}

fn block(store: &mut RedisStore, uid: &str, user: &str, on: bool) -> Result<UserFrames, ProtocolError> {
    let what = if on { "block" } else { "unblock" };
    let unavailable = |e| ProtocolError::new(ErrorCode::Unavailable, describe(&e)).with_ref(Some(what.into()));
    if !store.set_block(uid, user, on, MAX_BLOCKS).map_err(unavailable)? {
        let e = ProtocolError::new(ErrorCode::BadField, format!("at most {MAX_BLOCKS} blocked users"));
        return Err(e.with_ref(Some(what.into())));
    }
    let list = store.blocks_of(uid).map_err(unavailable)?;
    let frame = blocked_frame(list.iter().map(String::as_str));
    tell(store, uid, &frame);
    Ok(vec![(UserId::from(uid), frame)])
}

fn close(store: &mut RedisStore, uid: &str, room: &RoomName) -> Result<UserFrames, ProtocolError> {
    let unavailable = |e| ProtocolError::new(ErrorCode::Unavailable, describe(&e)).with_ref(Some("close_dm".into()));
    let pair = store.dm_pair(room).map_err(unavailable)?;
    if !pair.is_some_and(|p| p.iter().any(|u| u == uid)) {
        let e = ProtocolError::new(ErrorCode::Forbidden, format!("`{room}` is not one of your direct messages"));
        return Err(e.with_ref(Some("close_dm".into())));
    }
    store.close_dm(uid, room).map_err(unavailable)?;
    let frame = wire::encode(&ServerMsg::DmClosed { room: room.as_str() });
    tell(store, uid, &frame);
    Ok(vec![(UserId::from(uid), frame)])
}

fn reopen(
    store: &mut RedisStore,
    room: &RoomName,
    poster: &str,
) -> Result<UserFrames, crate::store::redis::RedisStoreError> {
    let Some(pair) = store.dm_pair(room)? else { return Ok(Vec::new()) };
    let opened = store.reopen_dm(room, &pair, poster)?;
    let mut frames = Vec::new();
    for i in (0..2).filter(|i| opened[*i]) {
        let other = &pair[1 - i];
        let name = store.user_name(other)?.unwrap_or_else(|| other.clone());
        let frame = wire::encode(&ServerMsg::Dm { room: room.as_str(), user: UserRef { id: other, name: &name } });
        tell(store, &pair[i], &frame);
        frames.push((UserId::from(pair[i].as_str()), frame));
    }
    Ok(frames)
}

/// For a new connection: the `blocked` frame (when the user blocked anyone)
/// and the DM rooms it has not closed, at most `max_dms` of them.
pub(super) fn welcome_frames(store: &mut RedisStore, uid: &str, max_dms: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    let blocked = store.blocks_of(uid).unwrap_or_default();
    if !blocked.is_empty() {
        frames.push(blocked_frame(blocked.iter().map(String::as_str)));
    }
    let closed: HashSet<String> = store.closed_dms(uid).unwrap_or_default().into_iter().collect();
    let mut dms = store.dms_of(uid).unwrap_or_default();
    dms.retain(|(room, _)| !closed.contains(room.as_str()));
    dms.sort();
    for (room, other) in dms.into_iter().take(max_dms) {
        let their = store.user_name(&other).ok().flatten().unwrap_or_else(|| other.clone());
        frames.push(wire::encode(&ServerMsg::Dm { room: room.as_str(), user: UserRef { id: &other, name: &their } }));
    }
    frames
}
