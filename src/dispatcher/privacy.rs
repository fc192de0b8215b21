//! Who may join what beyond the token's `rooms` claim: private rooms (created with
//! `join {private:true, title}` under a name the server picks, `p.` + random letters,
//! so a public name never becomes private; their owner and moderators invite), direct-message rooms
//! (`dm {user}`: the room of exactly two users, named from both ids), and the lasting
//! users that `dm` and `invite` may name while they are away. Loaded from the store at
//! start; every change is stored with the batch. In Redis mode the facts live in Redis
//! and `redis-io` applies these rules there (`store::redis::io::access`, with the
//! dispatcher's side in `cluster::rights`; this struct stays empty). The pure rules both
//! modes share — DM room names, the kick refusal — are [`crate::access`]'s.
//!
//! Checked per `join`, `dm` and `invite`, never per delivered message. Never lets a
//! third user into a DM room, whatever the token says, and never names a private room
//! to someone who may not join it (an outsider's `join` gets the same `forbidden` as
//! any room the token does not allow).

use std::collections::{HashMap, HashSet};

use super::backend::Backend;
use super::Dispatcher;
use crate::access::{dm_room, not_private, private_room_name, Access, RoomsDefault, DM_PREFIX, PRIVATE_PREFIX};
use crate::auth::Identity;
use crate::delivery::outbox::{Conn, ConnId};
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, ServerMsg, UserId, UserRef};
use crate::store::redis::io::HistoryFrom;
use crate::store::{AccessChange, AccessSnapshot};
use std::sync::Arc;

#[derive(Debug)]
struct Private {
    owner: UserId,
    invited: HashSet<UserId>,
    /// Set by the owner at creation (rooms made before titles existed have none).
    title: Option<String>,
}

/// Private rooms, DM rooms and lasting users, as the dispatcher holds them.
#[derive(Debug, Default)]
pub(super) struct Privacy {
    users: HashMap<UserId, String>,
    private: HashMap<RoomName, Private>,
    dms: HashMap<RoomName, [UserId; 2]>,
    dms_of: HashMap<UserId, Vec<RoomName>>,
}

impl Privacy {
    /// Applies one stored or new fact.
    fn apply(&mut self, change: &AccessChange) {
        match change {
            AccessChange::User { id, name } => {
                self.users.insert(UserId::from(id.as_str()), name.clone());
            }
            AccessChange::Private { room, owner, title } => {
                if let Some(room) = RoomName::parse(room) {
                    let owner = UserId::from(owner.as_str());
                    let title = title.clone();
                    self.private.entry(room).or_insert(Private { owner, invited: HashSet::new(), title });
                }
            }
            AccessChange::Invite { room, user } => {
                if let Some(p) = RoomName::parse(room).and_then(|r| self.private.get_mut(&r)) {
                    p.invited.insert(UserId::from(user.as_str()));
                }
            }
            AccessChange::Dm { room, a, b } => {
                if let Some(room) = RoomName::parse(room) {
                    let pair = [UserId::from(a.as_str()), UserId::from(b.as_str())];
                    for u in &pair {
                        self.dms_of.entry(u.clone()).or_default().push(room.clone());
                    }
                    self.dms.insert(room, pair);
                }
            }
            // moderation's and dms'
            AccessChange::Kick { .. }
            | AccessChange::KickAddress { .. }
            | AccessChange::ReadOnly { .. }
            | AccessChange::Block { .. }
            | AccessChange::DmClosed { .. } => {}
            // the dispatcher's ban table
            AccessChange::Ban(_) | AccessChange::Unban { .. } => {}
        }
    }

    pub fn load(snapshot: AccessSnapshot) -> Privacy {
        let mut p = Privacy::default();
        for change in &snapshot.changes {
            p.apply(change);
        }
        p
    }

    /// A private room or a DM room: members only, never listed.
    pub fn is_private(&self, room: &RoomName) -> bool {
        self.private.contains_key(room) || self.dms.contains_key(room)
    }

    /// A private room's title.
    pub fn title(&self, room: &RoomName) -> Option<&str> {
        self.private.get(room).and_then(|p| p.title.as_deref())
    }

    /// A private room (not a DM room): the server API answers for it as for a room
    /// that does not exist.
    pub fn is_private_room(&self, room: &RoomName) -> bool {
        self.private.contains_key(room)
    }

    /// Whether `user` may join `room` (the room limits aside).
    pub fn may_join(&self, room: &RoomName, user: &str, access: &Access, default: RoomsDefault) -> bool {
        if room.as_str().starts_with(DM_PREFIX) {
            return self.dms.get(room).is_some_and(|pair| pair.iter().any(|u| &**u == user));
        }
        match self.private.get(room) {
            // Only a claim that names it lets a token in; the open default never does.
            Some(p) => {
                &*p.owner == user || p.invited.contains(user) || access.rooms.as_ref().is_some_and(|c| c.allows(room))
            }
            None => access.may_join(room, default),
        }
    }

    /// The DM room's pair, if it is one.
    pub(super) fn pair(&self, room: &RoomName) -> Option<&[UserId; 2]> {
        self.dms.get(room)
    }

    /// The other user of `user`'s DM room `room`.
    pub(super) fn other_in_dm(&self, room: &RoomName, user: &str) -> Option<&UserId> {
        let pair = self.dms.get(room)?;
        pair.iter().position(|u| &**u == user).map(|i| &pair[1 - i])
    }

    /// `user`'s DM rooms, oldest first.
    pub(super) fn dms_of(&self, user: &str) -> &[RoomName] {
        self.dms_of.get(user).map_or(&[], Vec::as_slice)
    }
}

impl Dispatcher {
    /// Loads what the store knows about access (local mode, at start).
    pub(super) fn load_privacy(&mut self) {
        if let Backend::Local(local) = &mut self.backend {
            let snapshot = local.store.take_access();
            let now = super::state::now_ms();
            for change in &snapshot.changes {
                if let AccessChange::Ban(ban) = change {
                    self.bans.set(ban.clone(), now);
                }
                self.moderation.apply(change);
                self.dm_safety.apply(change);
            }
            self.privacy = Privacy::load(snapshot);
        }
    }

    /// A new connection (before it is in `clients`): a lasting user is remembered (for
    /// `dm` and `invite`), and hears of every DM room it has.
    pub(super) fn welcome_user(&mut self, c: &Arc<Conn>, user: &Identity) {
        if let Backend::Redis(_) = self.backend {
            return self.cluster_welcome(c.id, &user.id, &user.name, user.lasting);
        }
        if user.lasting && self.privacy.users.get(&user.id) != Some(&user.name) {
            self.change_access(AccessChange::User { id: user.id.to_string(), name: user.name.clone() });
        }
        let blocked: Vec<&str> = self.dm_safety.blocks_of(&user.id).collect();
        if !blocked.is_empty() {
            let frame = crate::access::blocked_frame(blocked);
            self.stage(c, frame);
        }
        for room in self.open_dms_of(&user.id) {
            let Some(pair) = self.privacy.dms.get(&room) else { continue };
            let other = if pair[0] == user.id { pair[1].clone() } else { pair[0].clone() };
            let name = self.name_of(&other).unwrap_or(&other).to_owned();
            let frame = wire::encode(&ServerMsg::Dm { room: room.as_str(), user: UserRef { id: &other, name: &name } });
            self.stage(c, frame);
        }
    }

    /// A user's display name: connected here, or remembered.
    pub(super) fn name_of(&self, user: &str) -> Option<&str> {
        let here = self.user_conns.of(user).first().and_then(|c| self.clients.get(c)).map(|c| c.name.as_str());
        here.or_else(|| self.privacy.users.get(user).map(String::as_str))
    }

    /// Applies a new fact (privacy's or moderation's: each takes its own, as at
    /// start-up) and stores it with the batch.
    pub(super) fn change_access(&mut self, change: AccessChange) {
        self.privacy.apply(&change);
        self.moderation.apply(&change);
        self.dm_safety.apply(&change);
        if let Backend::Local(local) = &mut self.backend {
            local.store.change_access(change);
        }
    }

    /// `dm {user}`: the DM room of the sender and `user`, made once; both users'
    /// connections are told (`dm` frames), and either may join it, nobody else.
    pub(super) fn dm(&mut self, id: ConnId, user: &str) -> Result<(), ProtocolError> {
        let err = |code, message: String| ProtocolError::new(code, message).with_ref(Some("dm".into()));
        let me = self.clients[&id].uid.clone();
        if &*me == user {
            return Err(err(ErrorCode::BadField, "a direct message needs another user".into()));
        }
        if let Backend::Redis(_) = self.backend {
            let me = crate::protocol::User { id: me, name: self.clients[&id].name.clone() };
            self.cluster_dm(id, me, user);
            return Ok(());
        }
        let Some(their_name) = self.name_of(user).map(str::to_owned) else {
            return Err(err(ErrorCode::NotFound, format!("no user `{user}`")));
        };
        let room = dm_room(&me, user);
        let other = UserId::from(user);
        let tell_them = self.check_dm(&me, &other, &room)?;
        if !self.privacy.dms.contains_key(&room) {
            log::info!("dm room {room} opened by {me} with {other}");
            self.change_access(AccessChange::Dm { room: room.to_string(), a: me.to_string(), b: other.to_string() });
        }
        let my_name = self.clients[&id].name.clone();
        let to_me =
            wire::encode(&ServerMsg::Dm { room: room.as_str(), user: UserRef { id: &other, name: &their_name } });
        let to_them = wire::encode(&ServerMsg::Dm { room: room.as_str(), user: UserRef { id: &me, name: &my_name } });
        self.stage_user(&me, &to_me);
        if tell_them {
            self.stage_user(&other, &to_them);
        }
        Ok(())
    }

    /// `invite {room, user}`: the owner of a private room (or a moderator in it) lets
    /// `user` join it; the user's connections are told (`invited`).
    pub(super) fn invite(&mut self, id: ConnId, room: &RoomName, user: &str) -> Result<(), ProtocolError> {
        let err = |code, message: String| ProtocolError::new(code, message).with_ref(Some("invite".into()));
        let c = &self.clients[&id];
        if !c.rooms.contains(room) {
            return Err(err(ErrorCode::NotJoined, format!("join `{room}` first")));
        }
        let (me, my_name, is_mod) = (c.uid.clone(), c.name.clone(), c.access.is_mod());
        if let Backend::Redis(_) = self.backend {
            self.cluster_invite(id, room, crate::protocol::User { id: me, name: my_name }, is_mod, user);
            return Ok(());
        }
        let Some(p) = self.privacy.private.get(room) else {
            return Err(err(ErrorCode::BadField, format!("`{room}` is not a private room: anyone may join it")));
        };
        if p.owner != me && !is_mod {
            return Err(err(ErrorCode::Forbidden, "only the room's owner or a moderator may invite".into()));
        }
        if self.name_of(user).is_none() {
            return Err(err(ErrorCode::NotFound, format!("no user `{user}`")));
        }
        let user = UserId::from(user);
        let title = p.title.clone();
        if !p.invited.contains(&user) && p.owner != user {
            log::info!("{me} invited {user} to private room {room}");
            self.change_access(AccessChange::Invite { room: room.to_string(), user: user.to_string() });
        }
        let by = UserRef { id: &me, name: &my_name };
        let frame = wire::encode(&ServerMsg::Invited { room: room.as_str(), by, title: title.as_deref() });
        self.stage_user(&user, &frame);
        Ok(())
    }

    /// `join {room, private:true}`: a private room is just joined (the usual join
    /// check decides, and answers a `p.` name that does not exist as it answers an
    /// outsider); any other room is refused, so a public name never becomes private.
    pub(super) fn join_private(&self, room: &RoomName) -> Result<(), ProtocolError> {
        if self.privacy.is_private(room) || room.as_str().starts_with(PRIVATE_PREFIX) {
            return Ok(());
        }
        if let Backend::Redis(_) = self.backend {
            return Ok(()); // Redis checks it with the join's read
        }
        Err(not_private(room))
    }

    /// `join {private:true, title}`: a new private room, named by the server, owned
    /// by the sender, who joins it (`joined` carries the name and the title).
    pub(super) fn create_private(&mut self, id: ConnId, title: String) -> Result<(), ProtocolError> {
        self.count_creation(id).map_err(|e| e.with_ref(Some("join".into())))?;
        let room = private_room_name();
        let owner = self.clients[&id].uid.clone();
        log::info!("private room {room} created by {owner}");
        if let Backend::Redis(_) = self.backend {
            // Redis makes it with the join's read.
            self.admit_to_room(id, &room)?;
            self.cluster_join(id, room, HistoryFrom::Recent, false, false, Some(title));
            return Ok(());
        }
        // A connection with no room slot left makes no room it could not join.
        self.check_room_slots(id, &room)?;
        let change = AccessChange::Private { room: room.to_string(), owner: owner.to_string(), title: Some(title) };
        self.change_access(change);
        self.join(id, room, None, None, false)
    }
}
