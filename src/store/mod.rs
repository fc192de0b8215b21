//! Stores: where accepted messages live beyond memory.
//!
//! - [`files`]: uploaded files, their blobs and metadata, in either mode;
//! - [`sqlite`]: single-instance mode's embedded SQLite database on local disk;
//! - [`redis`]: the Redis layer several instances share (`--redis`);
//! - [`read`]: history reads (scroll-back, resume, search) and the reader threads that
//!   answer them, whichever of the two holds the messages.
//!
//! This file holds what the dispatcher and both stores share, whichever mode runs:
//! the message to store ([`NewMessage`]), a stored room coming back into memory
//! ([`LoadedRoom`]), what start-up loads ([`AccessSnapshot`]), a change of who may join
//! what ([`AccessChange`]), when a resume must start over ([`resume_resets`]) and why a
//! change of a stored message is refused ([`Refused`]).
//!
//! A store never touches rooms, members or sockets and never decides what a client
//! sees; the dispatcher (through [`crate::dispatcher::Backend`]) is the only caller
//! that writes to it.

pub mod audit;
pub mod files;
pub mod mentions;
pub mod reactions;
pub mod read;
pub mod redis;
pub mod replies;
pub mod snapshot;
pub mod sqlite;

use bytes::Bytes;

use read::StoredMsg;

/// A fresh random room epoch: 16 hex digits. A room's history gets one with its first
/// stored message and keeps it while that history lasts, in either store.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Whether a resume from `since`, sent with the room `epoch` the client holds, must be
/// answered `reset:true`: the client's `since` belongs to another epoch of the room, or
/// is past its head (the store was wiped), so it means nothing here and the client must
/// drop what it holds. Both modes answer a resume by this rule.
pub fn resume_resets(since: u64, epoch: Option<&str>, head: u64, room_epoch: Option<&str>) -> bool {
    since > head || epoch.is_some_and(|e| Some(e) != room_epoch)
}

/// Why an edit or deletion of a stored message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No `msg` with that seq in the room (none, an event, or no longer held).
    Missing,
    /// The message was deleted.
    Deleted,
    /// Someone else's message: only its author edits it, only its author or a
    /// moderator deletes it.
    NotYours,
    /// A post of a non-moderator in a read-only room (Redis mode's append script).
    ReadOnly,
    /// A reaction past what a message holds ([`reactions::MAX_EMOJI_PER_MSG`],
    /// [`reactions::MAX_REACTIONS_PER_MSG`]).
    Full,
}

/// One message of the current batch, waiting for the commit.
#[derive(Debug)]
pub struct NewMessage {
    pub room: String,
    /// The room's epoch, written with the room's first message.
    pub epoch: String,
    pub seq: u64,
    pub ts: u64,
    /// What the search index holds.
    pub text: String,
    /// The live `msg` JSON, returned as-is by history reads.
    pub json: Bytes,
}

/// A stored room as it comes back into memory (`SqliteStore::load_room`): its epoch,
/// head, newest messages and read markers.
#[derive(Debug)]
pub struct LoadedRoom {
    pub name: String,
    pub epoch: String,
    pub head: u64,
    /// The newest messages, oldest first (what the ring will hold).
    pub recent: Vec<StoredMsg>,
    /// The users' read markers in the room: (user id, seq).
    pub reads: Vec<(String, u64)>,
    /// The users' unread mentions in the room: (user id, seq of a message mentioning
    /// them above their marker), the newest few per user (`mentions::MAX_UNREAD`).
    pub mentions: Vec<(String, u64)>,
}

/// One change to who may join what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessChange {
    User {
        id: String,
        name: String,
    },
    Private {
        room: String,
        owner: String,
        /// Set by the owner at creation; none for rooms made before titles.
        title: Option<String>,
    },
    Invite {
        room: String,
        user: String,
    },
    Dm {
        room: String,
        a: String,
        b: String,
    },
    /// `user` may not join `room` before `until` (ms since the epoch).
    Kick {
        room: String,
        user: String,
        until: u64,
    },
    /// Nobody from address `addr` (open mode) may join `room` before `until`: a kick
    /// that a new identity cannot undo.
    KickAddress {
        room: String,
        addr: std::net::IpAddr,
        until: u64,
    },
    ReadOnly {
        room: String,
        on: bool,
    },
    /// `user` blocked `blocked` (`on`), or unblocked them.
    Block {
        user: String,
        blocked: String,
        on: bool,
    },
    /// `user` closed the DM room `room` (`on`), or it was opened again.
    DmClosed {
        user: String,
        room: String,
        on: bool,
    },
    /// A server-wide ban put in force (replacing the user's earlier one).
    Ban(crate::bans::Ban),
    /// The user's ban lifted.
    Unban {
        user: String,
    },
}

/// Everything stored about access, as start-up hands it to the dispatcher.
#[derive(Debug, Default)]
pub struct AccessSnapshot {
    pub changes: Vec<AccessChange>,
}
