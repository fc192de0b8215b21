//! Rooms in memory: which rooms the dispatcher holds, when one leaves memory, and how
//! a stored room comes back. `--max-rooms` bounds the rooms in memory, not the rooms
//! that ever existed.
//!
//! A room is *held* while a connection counts it among its rooms (a member, or a
//! joiner whose history is still being read). A room nobody holds is *idle*:
//! - a room that never held a message leaves memory at once: it is only a name (the
//!   privacy and moderation facts about it live elsewhere and stay);
//! - in Redis mode every idle room leaves at once: Redis holds all of it, and its ring
//!   was dropped when the last local member left;
//! - otherwise it stays as a cache for `--room-idle-secs`, then leaves; and when a
//!   room must come into memory while `--max-rooms` are there, the longest-idle one
//!   leaves first. Only when every room in memory is held is the join refused
//!   (`room_limit`).
//!
//! Leaving drops the room's ring, de-duplication ids and read markers from memory; the
//! store has all of them. The next join, post or API call that names the room brings
//! it back ([`SqliteStore::load_room`]) the way start-up once loaded every room: head
//! and epoch, the newest `--history` messages as stored (edits and deletions applied),
//! the client ids of those messages, the read markers. So seq goes on without a gap,
//! a resume across an eviction is answered as before, and the de-duplication window
//! PROTOCOL.md promises (the last `--dedup` ids among the newest `--history` messages)
//! holds across it as it does across a restart. Start-up reads no room at all.
//!
//! A new room counts against its creator's `--room-creates` per minute
//! (`create_limited`): a name this server holds neither in memory nor in its store,
//! and not a private or DM room already made (those are counted when made).
//!
//! Never evicts a room that is held, has messages of the uncommitted batch, became idle
//! in the current batch, or while the store is failing (something of it may not be
//! written yet). Never waits on a client; bringing a room back is a few indexed reads
//! on the writer's connection.
//!
//! [`SqliteStore::load_room`]: crate::store::sqlite::SqliteStore::load_room

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::backend::Backend;
use super::history::Stored;
use super::state::Room;
use super::Dispatcher;
use crate::delivery::outbox::ConnId;
use crate::protocol::wire;
use crate::protocol::{ErrorCode, ProtocolError, RoomName, UserId};
use crate::store::LoadedRoom;

/// The idle rooms in memory, longest idle first.
#[derive(Debug, Default)]
pub(super) struct IdleRooms {
    /// Each idle room: the stamp of its entry in `order`, when it became idle, and in
    /// which batch.
    since: HashMap<RoomName, (u64, Instant, u64)>,
    /// Entries in the order rooms became idle; an entry whose stamp no longer matches
    /// `since` is stale (the room was held again, or left) and is skipped.
    order: VecDeque<(u64, RoomName)>,
    /// Rooms that became idle in the current batch.
    fresh: Vec<RoomName>,
    next_stamp: u64,
    /// The current batch (moves on after each commit).
    batch: u64,
}

impl IdleRooms {
    fn mark(&mut self, room: &RoomName, now: Instant) {
        if self.since.contains_key(room) {
            return;
        }
        self.next_stamp += 1;
        self.since.insert(room.clone(), (self.next_stamp, now, self.batch));
        self.order.push_back((self.next_stamp, room.clone()));
        self.fresh.push(room.clone());
        // Stale entries are dropped when they reach the front; bound them anyway.
        if self.order.len() > 2 * self.since.len() + 64 {
            let since = &self.since;
            self.order.retain(|(stamp, r)| since.get(r).is_some_and(|(s, _, _)| s == stamp));
        }
    }

    fn unmark(&mut self, room: &RoomName) {
        self.since.remove(room);
    }

    pub fn is_idle(&self, room: &RoomName) -> bool {
        self.since.contains_key(room)
    }

    /// Idle rooms, longest idle first, with when they became idle and in which batch.
    fn in_order(&self) -> impl Iterator<Item = (&RoomName, Instant, u64)> {
        self.order.iter().filter_map(|(stamp, room)| match self.since.get(room) {
            Some((s, at, batch)) if s == stamp => Some((room, *at, *batch)),
            _ => None,
        })
    }

    fn drop_stale_front(&mut self) {
        while let Some((stamp, room)) = self.order.front() {
            if self.since.get(room).is_some_and(|(s, _, _)| s == stamp) {
                break;
            }
            self.order.pop_front();
        }
    }
}

impl Dispatcher {
    /// `id` counts `room` among its rooms: the room stays in memory.
    pub(super) fn hold_room(&mut self, id: ConnId, room: &RoomName) {
        if let Some(r) = self.rooms.get_mut(room) {
            r.held_by.insert(id);
            self.idle.unmark(room);
        }
    }

    /// `id` no longer counts `room` among its rooms; the last one leaves it idle.
    pub(super) fn release_room(&mut self, id: ConnId, room: &RoomName) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        r.held_by.remove(&id);
        if r.held_by.is_empty() && r.members.is_empty() {
            self.idle.mark(room, Instant::now());
        }
    }

    /// Makes sure `room` is in memory when it exists: already there, or (local mode)
    /// read back from the store. False when the server has never held it.
    pub(super) fn bring_back(&mut self, room: &RoomName) -> Result<bool, ProtocolError> {
        if self.rooms.contains_key(room) {
            return Ok(true);
        }
        let Backend::Local(local) = &mut self.backend else { return Ok(false) };
        let loaded = local.store.load_room(room.as_str(), self.cfg.history_per_room).map_err(|e| {
            log::error!("store: reading room {room} back: {e}");
            ProtocolError::new(ErrorCode::Unavailable, "the message store could not be read; retry")
        })?;
        let Some(loaded) = loaded else { return Ok(false) };
        self.make_space()?;
        let r = self.room_from_store(loaded);
        self.insert_room(room, r);
        self.metrics.rooms_loaded.fetch_add(1, Relaxed);
        Ok(true)
    }

    /// Creates `room` unless it exists (in memory or in the store), within
    /// `--max-rooms` in memory and, for a connection's new room, its `--room-creates`.
    pub(super) fn ensure_room(&mut self, room: &RoomName, creator: Option<ConnId>) -> Result<(), ProtocolError> {
        if self.bring_back(room)? {
            return Ok(());
        }
        if let Some(id) = creator.filter(|_| !self.privacy.is_private(room)) {
            self.count_creation(id)?;
        }
        self.make_space()?;
        let r = Room::new(&self.cfg);
        self.insert_room(room, r);
        Ok(())
    }

    /// Takes one of the connection's room creations (single-instance mode: with Redis
    /// this instance cannot tell a new room from one held elsewhere without a read).
    pub(super) fn count_creation(&mut self, id: ConnId) -> Result<(), ProtocolError> {
        if matches!(self.backend, Backend::Redis(_)) {
            return Ok(());
        }
        let per_min = self.cfg.room_creates_per_min;
        if self.clients.get_mut(&id).is_none_or(|c| c.creates.take()) {
            return Ok(());
        }
        Err(ProtocolError::new(
            ErrorCode::CreateLimited,
            format!("at most {per_min} new rooms a minute per connection; retry later"),
        )
        .with_ref(Some("join".into())))
    }

    fn insert_room(&mut self, name: &RoomName, room: Room) {
        self.rooms.insert(name.clone(), room);
        // Idle until a connection holds it (an API post holds nothing).
        self.idle.mark(name, Instant::now());
        self.metrics.rooms.store(self.rooms.len() as u64, Relaxed);
    }

    /// Frees a place under `--max-rooms` by evicting the longest-idle room that may
    /// leave now; `room_limit` when every room in memory is in use.
    fn make_space(&mut self) -> Result<(), ProtocolError> {
        while self.rooms.len() >= self.cfg.max_rooms {
            let batch = self.idle.batch;
            let victim = (!self.store_health.failing())
                .then(|| {
                    self.idle
                        .in_order()
                        .find(|(room, _, b)| *b < batch && !self.dirty_rooms.contains(*room))
                        .map(|(room, _, _)| room.clone())
                })
                .flatten();
            let Some(victim) = victim else {
                return Err(ProtocolError::new(ErrorCode::RoomLimit, "every room the server can hold is in use")
                    .with_ref(Some("join".into())));
            };
            self.evict(&victim);
        }
        Ok(())
    }

    /// After a batch is committed: rooms that became idle and hold nothing worth
    /// keeping leave at once; rooms idle for `--room-idle-secs` leave too.
    pub(super) fn evict_idle(&mut self, now: Instant) {
        let redis = matches!(self.backend, Backend::Redis(_));
        for room in std::mem::take(&mut self.idle.fresh) {
            let empty = self.rooms.get(&room).is_some_and(|r| redis || (r.history.head() == 0 && r.epoch.is_none()));
            if empty && self.idle.is_idle(&room) && !self.dirty_rooms.contains(&room) {
                self.evict(&room);
            }
        }
        self.idle.batch += 1;
        if self.store_health.failing() {
            return;
        }
        let due: Vec<RoomName> = self
            .idle
            .in_order()
            .take_while(|(_, at, _)| now.saturating_duration_since(*at) >= self.cfg.room_idle)
            .filter(|(room, _, _)| !self.dirty_rooms.contains(*room))
            .map(|(room, _, _)| room.clone())
            .collect();
        for room in due {
            self.evict(&room);
        }
        self.idle.drop_stale_front();
    }

    /// The room leaves memory with its ring, de-duplication ids and read markers.
    fn evict(&mut self, room: &RoomName) {
        if self.rooms.get(room).is_some_and(|r| !r.held_by.is_empty() || !r.members.is_empty()) {
            return;
        }
        self.idle.unmark(room);
        if self.rooms.remove(room).is_none() {
            return;
        }
        self.reads.forget_room(room);
        if let Backend::Local(local) = &mut self.backend {
            local.store.forget_room(room.as_str());
        }
        self.metrics.rooms.store(self.rooms.len() as u64, Relaxed);
        self.metrics.rooms_evicted.fetch_add(1, Relaxed);
    }

    /// A stored room as it comes back: ring, head, epoch, the client ids of the ring's
    /// messages, the read markers and the unread mentions.
    fn room_from_store(&mut self, l: LoadedRoom) -> Room {
        let mut room = Room::new(&self.cfg);
        if let Some(name) = RoomName::parse(&l.name) {
            for (user, seq) in &l.reads {
                self.reads.advance(&UserId::from(user.as_str()), &name, *seq);
            }
            let mut mentions: HashMap<&str, Vec<u64>> = HashMap::new();
            for (user, seq) in &l.mentions {
                mentions.entry(user.as_str()).or_default().push(*seq);
            }
            for (user, seqs) in mentions {
                self.reads.load_mentions(&name, &UserId::from(user), seqs);
            }
        }
        room.epoch = Some(l.epoch);
        room.history.start_at(l.recent.first().map_or(l.head, |m| m.seq - 1));
        for m in l.recent {
            let ids = serde_json::from_slice::<crate::protocol::StoredMsgRecord>(&m.json);
            let (uid, id) = ids.as_ref().map_or(("", None), |r| (r.uid.as_str(), r.id.as_deref()));
            room.history.push(Stored { seq: m.seq, frame: wire::text_frame(&m.json) }, uid, id);
        }
        room.history.start_at(l.head);
        room
    }
}
