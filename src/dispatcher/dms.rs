//! What keeps direct messages from being used against a user: the rate of new DM rooms
//! per user (`--dm-open-rate`, counted for the opener and for the other user alike),
//! each user's blocked users (`block`/`unblock`: a blocked user cannot open a DM with
//! the blocker, nor reopen one the blocker closed), and closed DMs (`close_dm`: not
//! told of at connect until a new message arrives in it, which opens it again).
//! Also the separate cap of DM rooms per connection, so DMs others open never take the
//! slots of rooms the user chose.
//!
//! Local mode keeps the facts here (loaded with the other access facts, stored with
//! the batch); in Redis mode they live in Redis and `redis-io` applies the same
//! rules there (`store::redis::io::dms`; these maps stay empty). The pure rules both
//! modes share are [`crate::access`]'s. Checked per `dm`, `block`, `close_dm` and per
//! message stored in a DM room, never per delivered message.

use std::collections::{HashMap, HashSet};

use super::backend::Backend;
use super::state::now_ms;
use super::Dispatcher;
use crate::access::{blocked_frame, dm_rate_error, is_dm, unknown_user, DM_RATE_WINDOW_MS, MAX_BLOCKS};
use crate::delivery::outbox::ConnId;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, UserId, UserRef};
use crate::store::AccessChange;

/// New DM rooms per user in fixed windows of a minute, from each user's first new DM.
/// Only users with a window still open are kept, so it holds at most the users of the
/// last minute's new DMs.
#[derive(Debug, Default)]
struct OpenRate {
    windows: HashMap<UserId, (u64, u32)>,
}

impl OpenRate {
    /// Counts a new DM room of `a` and `b` when both are below `limit` in their window.
    fn try_open(&mut self, a: &UserId, b: &UserId, limit: u32, now: u64) -> bool {
        if self.windows.len() > 4096 {
            self.windows.retain(|_, (start, _)| now < *start + DM_RATE_WINDOW_MS);
        }
        let count = |w: &HashMap<UserId, (u64, u32)>, u: &UserId| {
            w.get(u).filter(|(start, _)| now < start + DM_RATE_WINDOW_MS).map_or(0, |(_, n)| *n)
        };
        if count(&self.windows, a) >= limit || count(&self.windows, b) >= limit {
            return false;
        }
        for u in [a, b] {
            let w = self.windows.entry(u.clone()).or_insert((now, 0));
            if now >= w.0 + DM_RATE_WINDOW_MS {
                *w = (now, 0);
            }
            w.1 += 1;
        }
        true
    }
}

/// Blocks, closed DMs and the DM rate, as the dispatcher holds them (local mode).
#[derive(Debug, Default)]
pub(super) struct DmSafety {
    /// user → the users they blocked.
    blocks: HashMap<UserId, HashSet<UserId>>,
    /// user → their closed DM rooms.
    closed: HashMap<UserId, HashSet<RoomName>>,
    rate: OpenRate,
}

impl DmSafety {
    /// Applies one stored or new fact (others are privacy's and moderation's).
    pub fn apply(&mut self, change: &AccessChange) {
        match change {
            AccessChange::Block { user, blocked, on } => {
                let user = UserId::from(user.as_str());
                if *on {
                    self.blocks.entry(user).or_default().insert(UserId::from(blocked.as_str()));
                } else if let Some(set) = self.blocks.get_mut(&user) {
                    set.remove(blocked.as_str());
                    if set.is_empty() {
                        self.blocks.remove(&user);
                    }
                }
            }
            AccessChange::DmClosed { user, room, on } => {
                let Some(room) = RoomName::parse(room) else { return };
                let user = UserId::from(user.as_str());
                if *on {
                    self.closed.entry(user).or_default().insert(room);
                } else if let Some(set) = self.closed.get_mut(&user) {
                    set.remove(&room);
                    if set.is_empty() {
                        self.closed.remove(&user);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether `user` blocked `other`.
    pub fn blocked(&self, user: &str, other: &str) -> bool {
        self.blocks.get(user).is_some_and(|s| s.contains(other))
    }

    pub fn is_closed(&self, user: &str, room: &RoomName) -> bool {
        self.closed.get(user).is_some_and(|s| s.contains(room))
    }

    /// The users `user` blocked.
    pub fn blocks_of(&self, user: &str) -> impl Iterator<Item = &str> {
        self.blocks.get(user).into_iter().flatten().map(|u| &**u)
    }
}

impl Dispatcher {
    /// `block {user}` / `unblock {user}`: stored for the sender; each of the sender's
    /// connections (every device, every instance) gets the new `blocked` list.
    pub(super) fn set_block(&mut self, id: ConnId, user: &str, on: bool) -> Result<(), ProtocolError> {
        let what = if on { "block" } else { "unblock" };
        let me = self.clients[&id].uid.clone();
        if &*me == user {
            let e = ProtocolError::new(ErrorCode::BadField, format!("you cannot {what} yourself"));
            return Err(e.with_ref(Some(what.into())));
        }
        if let Backend::Redis(_) = self.backend {
            self.cluster_block(id, me, user, on);
            return Ok(());
        }
        if on == self.dm_safety.blocked(&me, user) {
            self.stage_user(&me.clone(), &blocked_frame(self.dm_safety.blocks_of(&me)));
            return Ok(()); // already so; the list is told again, as an answer
        }
        if on && self.dm_safety.blocks_of(&me).count() >= MAX_BLOCKS {
            let e = ProtocolError::new(ErrorCode::BadField, format!("at most {MAX_BLOCKS} blocked users"));
            return Err(e.with_ref(Some(what.into())));
        }
        log::info!("{me} {what}ed {user}");
        self.change_access(AccessChange::Block { user: me.to_string(), blocked: user.to_owned(), on });
        let frame = blocked_frame(self.dm_safety.blocks_of(&me));
        self.stage_user(&me, &frame);
        Ok(())
    }

    /// `close_dm {room}`: the sender's DM room is hidden (not told of at connect) until
    /// a new message arrives in it; each of the sender's connections gets `dm_closed`
    /// (clients leave the room on it, which frees its slot).
    pub(super) fn close_dm(&mut self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let me = self.clients[&id].uid.clone();
        if !is_dm(room) {
            let e = ProtocolError::new(ErrorCode::BadField, format!("`{room}` is not a direct-message room"));
            return Err(e.with_ref(Some("close_dm".into())));
        }
        if let Backend::Redis(_) = self.backend {
            self.cluster_close_dm(id, me, room);
            return Ok(());
        }
        if self.privacy.other_in_dm(room, &me).is_none() {
            let e = ProtocolError::new(ErrorCode::Forbidden, format!("`{room}` is not one of your direct messages"));
            return Err(e.with_ref(Some("close_dm".into())));
        }
        if !self.dm_safety.is_closed(&me, room) {
            self.change_access(AccessChange::DmClosed { user: me.to_string(), room: room.to_string(), on: true });
        }
        self.stage_user(&me, &wire::encode(&ServerMsg::DmClosed { room: room.as_str() }));
        Ok(())
    }

    /// Local `dm`: refused for a blocked opener (as an unknown user) and, for a new
    /// room, past the rate. Returns whether the other user is to be told (not when they
    /// closed the room: only a message opens it for them again).
    pub(super) fn check_dm(&mut self, me: &UserId, other: &UserId, room: &RoomName) -> Result<bool, ProtocolError> {
        if self.dm_safety.blocked(other, me) {
            return Err(unknown_user(other));
        }
        if self.privacy.other_in_dm(room, me).is_none()
            && !self.dm_safety.rate.try_open(me, other, self.cfg.dm_open_rate, now_ms())
        {
            return Err(dm_rate_error(self.cfg.dm_open_rate));
        }
        if self.dm_safety.is_closed(me, room) {
            self.change_access(AccessChange::DmClosed { user: me.to_string(), room: room.to_string(), on: false });
        }
        Ok(!self.dm_safety.is_closed(other, room))
    }

    /// A message was stored in DM room `room` (local mode): whoever of the two closed
    /// it has it opened again and is told (`dm`), unless they blocked the poster.
    pub(super) fn reopen_dm(&mut self, room: &RoomName, poster: &str) {
        let Some(pair) = self.privacy.pair(room).cloned() else { return };
        for (i, user) in pair.iter().enumerate() {
            if !self.dm_safety.is_closed(user, room) || self.dm_safety.blocked(user, poster) {
                continue;
            }
            self.change_access(AccessChange::DmClosed { user: user.to_string(), room: room.to_string(), on: false });
            let other = &pair[1 - i];
            let name = self.name_of(other).unwrap_or(other).to_owned();
            let frame = wire::encode(&ServerMsg::Dm { room: room.as_str(), user: UserRef { id: other, name: &name } });
            self.stage_user(user, &frame);
        }
    }

    /// The DM rooms a new connection is told of: the newest `--max-dms-per-conn` of
    /// those it has not closed.
    pub(super) fn open_dms_of(&self, user: &str) -> Vec<RoomName> {
        let mut open: Vec<RoomName> =
            self.privacy.dms_of(user).iter().rev().filter(|r| !self.dm_safety.is_closed(user, r)).cloned().collect();
        open.truncate(self.cfg.max_dms_per_conn);
        open.reverse();
        open
    }

    /// The room-count check of a join: DM rooms count against `--max-dms-per-conn`,
    /// every other room against `--max-rooms-per-conn`.
    pub(super) fn check_room_slots(&self, id: ConnId, room: &RoomName) -> Result<(), ProtocolError> {
        let rooms = &self.clients[&id].rooms;
        let dm = is_dm(room);
        let held = rooms.iter().filter(|r| is_dm(r) == dm).count();
        let (limit, what) = if dm {
            (self.cfg.max_dms_per_conn, "direct messages per connection: close one first")
        } else {
            (self.cfg.max_rooms_per_conn, "rooms per connection")
        };
        if held >= limit {
            let e = ProtocolError::new(ErrorCode::RoomLimit, format!("at most {limit} {what}"));
            return Err(e.with_ref(Some("join".into())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_rate_counts_both_users_and_restarts_after_a_minute() {
        let mut rate = OpenRate::default();
        let victim = UserId::from("victim");
        for i in 0..3 {
            assert!(rate.try_open(&UserId::from(format!("spam{i}")), &victim, 3, 1000));
        }
        assert!(!rate.try_open(&UserId::from("spam3"), &victim, 3, 1000), "the victim's budget is spent");
        assert!(rate.try_open(&UserId::from("spam3"), &UserId::from("other"), 3, 1000), "others' is not");
        assert!(rate.try_open(&UserId::from("spam4"), &victim, 3, 1000 + DM_RATE_WINDOW_MS));
    }
}
