//! Moderation: a moderator (`role: "mod"` in the token, or `--mod`) removes a user
//! from a room for some minutes (`kick`), or makes a room read-only for everyone but
//! moderators (`mode`). Each action is a `system` event in the room's seq order,
//! stored like a message, and logged with who did it. Kicks and read-only rooms are
//! stored and loaded at start; in Redis mode the append script stores them with the
//! event, and each instance applies the event when it delivers it (`cluster::rights`).
//!
//! In open mode an identity costs nothing (a new key, or none), so a kick also covers
//! the addresses the kicked user is connected from (the real client address, with
//! `--trusted-proxy`), for the same minutes: a new identity from there is refused too.
//! Loopback and trusted-proxy addresses are never covered (they are a proxy's, shared
//! by every client behind it), nor are moderators.
//!
//! Checked per action and per join or post, never per delivered message. Never lets a
//! non-moderator act, and never removes a moderator's right to post.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::admin::Actor;
use super::backend::Backend;
use super::edits::Event;
use super::state::now_ms;
use super::Dispatcher;
use crate::access::kick_refusal;
use crate::config::AuthMode;
use crate::delivery::outbox::ConnId;
use crate::protocol::{ErrorCode, ModEvent, ProtocolError, RoomName, ServerMsg, UserId, UserRef};
use crate::store::AccessChange;

/// The connection a server API moderation names: none (its refusals have no one to go to).
const NO_CONN: ConnId = ConnId::MAX;

/// Kicks in force and read-only rooms.
#[derive(Debug, Default)]
pub(super) struct Moderation {
    /// (room, user) → until (ms since the epoch).
    kicks: HashMap<(RoomName, UserId), u64>,
    /// (room, client address) → until: open mode's kicks of where a user came from.
    address_kicks: HashMap<(RoomName, IpAddr), u64>,
    read_only: HashSet<RoomName>,
}

impl Moderation {
    pub fn apply(&mut self, change: &AccessChange) {
        match change {
            AccessChange::Kick { room, user, until } => {
                if let Some(room) = RoomName::parse(room) {
                    self.kicks.insert((room, UserId::from(user.as_str())), *until);
                }
            }
            AccessChange::KickAddress { room, addr, until } => {
                if let Some(room) = RoomName::parse(room) {
                    self.address_kicks.insert((room, *addr), *until);
                }
            }
            AccessChange::ReadOnly { room, on } => {
                if let Some(room) = RoomName::parse(room) {
                    if *on {
                        self.read_only.insert(room);
                    } else {
                        self.read_only.remove(&room);
                    }
                }
            }
            _ => {}
        }
    }

    pub fn is_read_only(&self, room: &RoomName) -> bool {
        self.read_only.contains(room)
    }
}

impl Dispatcher {
    /// Refuses a join of a kicked user, or (open mode) of anyone from an address a kick
    /// covers, saying for how long.
    pub(super) fn check_kick(&self, room: &RoomName, id: ConnId) -> Result<(), ProtocolError> {
        let client = &self.clients[&id];
        let now = now_ms();
        if let Some(until) = self.moderation.kicks.get(&(room.clone(), client.uid.clone())) {
            kick_refusal(room, *until, now)?;
        }
        match self.kick_address(id).and_then(|ip| self.moderation.address_kicks.get(&(room.clone(), ip))) {
            Some(until) => kick_refusal(room, *until, now),
            None => Ok(()),
        }
    }

    /// The address a kick of this connection's user covers, and a join from it is
    /// checked against: open mode only, never a moderator's, never a loopback or
    /// trusted-proxy address (every client behind that proxy would share it).
    pub(super) fn kick_address(&self, id: ConnId) -> Option<IpAddr> {
        let client = self.clients.get(&id)?;
        if !matches!(self.cfg.auth, AuthMode::Open) || client.access.is_mod() {
            return None;
        }
        let ip = client.conn.peer.ip();
        let shared = ip.is_loopback()
            || ip.to_canonical().is_loopback()
            || crate::proxy::is_trusted(&self.cfg.trusted_proxies, ip);
        (!shared).then_some(ip)
    }

    /// The addresses the user's connections here come from that a kick covers.
    pub(super) fn kick_addresses_of(&self, user: &str) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self.user_conns.of(user).iter().filter_map(|c| self.kick_address(*c)).collect();
        ips.sort_unstable();
        ips.dedup();
        ips
    }

    /// Refuses a post (or edit) of a non-moderator in a read-only room.
    pub(super) fn check_writable_room(
        &self,
        id: ConnId,
        room: &RoomName,
        reference: Option<String>,
    ) -> Result<(), ProtocolError> {
        let is_mod = self.clients.get(&id).is_some_and(|c| c.access.is_mod());
        if self.moderation.is_read_only(room) && !is_mod {
            return Err(ProtocolError::new(ErrorCode::Forbidden, format!("`{room}` is read-only")).with_ref(reference));
        }
        Ok(())
    }

    /// Who may act: a moderator who is in the room.
    fn moderator(&self, id: ConnId, room: &RoomName, what: &str) -> Result<(UserId, String), ProtocolError> {
        let err = |code, message: String| ProtocolError::new(code, message).with_ref(Some(what.into()));
        let c = &self.clients[&id];
        if !c.access.is_mod() {
            return Err(err(ErrorCode::Forbidden, format!("only moderators may {what}")));
        }
        if !c.rooms.contains(room) {
            return Err(err(ErrorCode::NotJoined, format!("join `{room}` first")));
        }
        self.check_writable(Some(what.into()))?;
        Ok((c.uid.clone(), c.name.clone()))
    }

    /// `kick {room, user, minutes}`: the user's connections leave the room and may not
    /// join again until the time is up.
    pub(super) fn kick(&mut self, id: ConnId, room: RoomName, user: &str, minutes: u64) -> Result<(), ProtocolError> {
        let by = self.moderator(id, &room, "kick")?;
        let actor = self.actor_of(id);
        self.kick_as(Some(id), by, &actor, room, user, minutes)
    }

    /// A kick by moderator `by` (a connection's, `from`, or the server API's).
    pub(super) fn kick_as(
        &mut self,
        from: Option<ConnId>,
        (by, by_name): (UserId, String),
        actor: &Actor,
        room: RoomName,
        user: &str,
        minutes: u64,
    ) -> Result<(), ProtocolError> {
        let r = self.rooms.get(&room);
        let here = r.and_then(|r| r.present.get(user)).map(|p| p.name.clone());
        // Redis mode, a room no one here is in: this instance cannot see who is in it
        // (the console kicks users of other instances); the event names them by id.
        let unseen = matches!(self.backend, Backend::Redis(_)) && r.is_none_or(|r| r.live_head.is_none());
        let seen = here.or_else(|| r.and_then(|r| r.remote.get(user)).cloned());
        let Some(name) = seen.or_else(|| unseen.then(|| user.to_owned())) else {
            return Err(ProtocolError::new(ErrorCode::NotFound, format!("`{user}` is not in `{room}`"))
                .with_ref(Some("kick".into())));
        };
        let (redis, ts, seq) = self.event_slot(&room);
        let json = ServerMsg::Moderation {
            room: room.as_str(),
            seq,
            event: ModEvent::Kick,
            user: Some(UserRef { id: user, name: &name }),
            by: UserRef { id: &by, name: &by_name },
            minutes: Some(minutes),
            read_only: None,
            ts,
        }
        .to_json();
        let until = ts + minutes * 60_000;
        let audit = self.audit_entry(actor, "kick", user, room.as_str(), format!("{minutes} minute(s)"));
        if redis {
            log::info!("moderation: {by} removes {user} from {room} for {minutes} minute(s)");
            let fact = (crate::store::redis::kick_field(user), until.to_string());
            self.cluster_moderate(from.unwrap_or(NO_CONN), room, by, &json, fact, ("kick", audit));
            return Ok(());
        }
        self.record_entry(audit);
        log::info!("moderation: {by} removed {user} from {room} for {minutes} minute(s) (event {seq})");
        self.store_event(Event { room: room.clone(), seq, ts, json, uid: by, ack: None, msg_id: None });
        self.change_access(AccessChange::Kick { room: room.to_string(), user: user.into(), until });
        for addr in self.kick_addresses_of(user) {
            log::info!("moderation: {room} refuses {addr} (where {user} connects from) for {minutes} minute(s)");
            self.change_access(AccessChange::KickAddress { room: room.to_string(), addr, until });
        }
        // After the event is staged: the removed user's connections get it too.
        self.remove_user_from_room(user, &room);
        Ok(())
    }

    /// Where a moderator's event goes: with Redis, the append script assigns its seq
    /// (0 here); locally, the room's next seq once what is pending is committed.
    fn event_slot(&mut self, room: &RoomName) -> (bool, u64, u64) {
        if matches!(self.backend, Backend::Redis(_)) {
            return (true, now_ms(), 0);
        }
        self.settle(room);
        (false, now_ms(), self.rooms[room].history.next_seq())
    }

    /// A kicked user's connections here leave `room`.
    pub(super) fn remove_user_from_room(&mut self, user: &str, room: &RoomName) {
        let conns: Vec<ConnId> = self.user_conns.of(user).to_vec();
        for conn in conns {
            if let Some(c) = self.clients.get_mut(&conn) {
                if let Some(pos) = c.rooms.iter().position(|r| r == room) {
                    c.rooms.swap_remove(pos);
                    self.remove_member(conn, room);
                    self.release_room(conn, room);
                }
            }
        }
    }

    /// `mode {room, read_only}`: only moderators may post in a read-only room.
    pub(super) fn set_mode(&mut self, id: ConnId, room: RoomName, read_only: bool) -> Result<(), ProtocolError> {
        let by = self.moderator(id, &room, "mode")?;
        let actor = self.actor_of(id);
        self.set_mode_as(Some(id), by, &actor, room, read_only)
    }

    /// A mode change by moderator `by` (a connection's, `from`, or the server API's).
    pub(super) fn set_mode_as(
        &mut self,
        from: Option<ConnId>,
        (by, by_name): (UserId, String),
        actor: &Actor,
        room: RoomName,
        read_only: bool,
    ) -> Result<(), ProtocolError> {
        if self.moderation.is_read_only(&room) == read_only {
            return Ok(()); // already so: no event
        }
        let (redis, ts, seq) = self.event_slot(&room);
        let json = ServerMsg::Moderation {
            room: room.as_str(),
            seq,
            event: ModEvent::ReadOnly,
            user: None,
            by: UserRef { id: &by, name: &by_name },
            minutes: None,
            read_only: Some(read_only),
            ts,
        }
        .to_json();
        let detail = if read_only { "read-only" } else { "writable" }.to_owned();
        let audit = self.audit_entry(actor, "mode", "", room.as_str(), detail);
        if redis {
            log::info!("moderation: {by} makes {room} {}", if read_only { "read-only" } else { "writable" });
            let fact = ("ro".to_owned(), if read_only { "1" } else { "" }.to_owned());
            self.cluster_moderate(from.unwrap_or(NO_CONN), room, by, &json, fact, ("mode", audit));
            return Ok(());
        }
        self.record_entry(audit);
        log::info!("moderation: {by} made {room} {} (event {seq})", if read_only { "read-only" } else { "writable" });
        self.store_event(Event { room: room.clone(), seq, ts, json, uid: by, ack: None, msg_id: None });
        self.change_access(AccessChange::ReadOnly { room: room.to_string(), on: read_only });
        Ok(())
    }
}
