//! The dispatcher's state types: a connected client, a room, and who is present in it.
//! Plain data with the small rules that keep it consistent (a room's member snapshot is
//! rebuilt after every membership change). Only the dispatcher thread holds them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::history::History;
use crate::access::Access;
use crate::config::Config;
use crate::delivery::outbox::{Conn, ConnId};
use crate::protocol::{RoomName, UserId, UserRef};
use crate::ratelimit::TokenBucket;

/// A registered connection, as the dispatcher knows it.
pub(super) struct Client {
    pub conn: Arc<Conn>,
    pub uid: UserId,
    pub name: String,
    pub can_rename: bool,
    /// The rooms the user may join by themselves, and their role.
    pub access: Access,
    /// Rooms counted against the client's limit: joined, or (Redis mode) joining.
    pub rooms: Vec<RoomName>,
    /// New rooms this connection may still create now (`--room-creates`).
    pub creates: TokenBucket,
}

/// Each user's connections on this instance, to reach all of a user's devices.
#[derive(Debug, Default)]
pub(super) struct UserConns(HashMap<UserId, Vec<ConnId>>);

impl UserConns {
    pub fn add(&mut self, user: &UserId, id: ConnId) {
        self.0.entry(user.clone()).or_default().push(id);
    }

    pub fn remove(&mut self, user: &str, id: ConnId) {
        if let Some(ids) = self.0.get_mut(user) {
            ids.retain(|c| *c != id);
            if ids.is_empty() {
                self.0.remove(user);
            }
        }
    }

    pub fn of(&self, user: &str) -> &[ConnId] {
        self.0.get(user).map_or(&[], Vec::as_slice)
    }
}

/// A user's presence in one room on this instance.
pub(super) struct Presence {
    /// Connections of the user that are members of the room.
    pub connections: u32,
    pub name: String,
}

pub(super) struct Room {
    pub members: HashMap<ConnId, Arc<Conn>>,
    /// `members` as a shared slice for staging; rebuilt after a membership change.
    snapshot: Option<Arc<[Arc<Conn>]>>,
    pub present: HashMap<UserId, Presence>,
    pub history: History,
    /// The epoch of the room's stored history; `None` until its first message.
    pub epoch: Option<String>,
    /// Redis mode: the last seq the reader delivered for this room; `None` while the
    /// room is not watched (no local member yet).
    pub live_head: Option<u64>,
    /// Redis mode: users present through other instances, as known here (uid → name),
    /// so each arrival and departure is announced once whether it is heard from the
    /// events channel or from presence polling.
    pub remote: HashMap<UserId, String>,
    /// Connections that count the room among their rooms (members, and joiners whose
    /// history is being read): while there is one, the room stays in memory.
    pub held_by: HashSet<ConnId>,
    /// Redis mode: members waiting for their reset after the room's history was lost.
    /// Live frames skip them until it is staged (`unmute`), so none of the new history
    /// reaches them before the `joined` that says it is a new one.
    muted: HashSet<ConnId>,
}

/// An empty history ring sized by the configuration.
pub(super) fn new_history(cfg: &Config) -> History {
    History::new(cfg.history_per_room, cfg.dedup_per_room)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Room {
    pub fn new(cfg: &Config) -> Room {
        Room {
            members: HashMap::new(),
            snapshot: None,
            present: HashMap::new(),
            history: new_history(cfg),
            epoch: None,
            live_head: None,
            remote: HashMap::new(),
            held_by: HashSet::new(),
            muted: HashSet::new(),
        }
    }

    pub fn members(&mut self) -> Arc<[Arc<Conn>]> {
        let muted = &self.muted;
        let live = self.members.iter().filter(|(id, _)| !muted.contains(id));
        self.snapshot.get_or_insert_with(|| live.map(|(_, conn)| conn.clone()).collect()).clone()
    }

    /// Every member waits for its reset (see `muted`).
    pub fn mute_all(&mut self) {
        self.muted = self.members.keys().copied().collect();
        self.snapshot = None;
    }

    /// `id`'s reset is staged: live frames reach it again. False when it was not muted.
    pub fn unmute(&mut self, id: ConnId) -> bool {
        self.snapshot = None;
        self.muted.remove(&id)
    }

    pub fn add(&mut self, id: ConnId, conn: Arc<Conn>) {
        self.members.insert(id, conn);
        self.snapshot = None;
    }

    pub fn remove(&mut self, id: ConnId) -> bool {
        self.snapshot = None;
        self.muted.remove(&id);
        self.members.remove(&id).is_some()
    }

    /// Up to `limit` present users, sorted by name (a large room lists a sample).
    pub fn users(&self, limit: usize) -> Vec<UserRef<'_>> {
        let mut users: Vec<UserRef> =
            self.present.iter().take(limit).map(|(id, p)| UserRef { id, name: &p.name }).collect();
        users.sort_by(|a, b| a.name.cmp(b.name).then(a.id.cmp(b.id)));
        users
    }

    /// Whether presence changes are announced to everyone: in a room larger than
    /// `limit`, one join would cost a frame per member, and a crowd arriving would cost
    /// members², so large rooms stay quiet.
    pub fn announces(&self, limit: usize) -> bool {
        self.present.len() <= limit
    }
}
