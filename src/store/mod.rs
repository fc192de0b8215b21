//! Stores: where accepted messages live beyond memory.
//!
//! - [`sqlite`]: single-instance mode's embedded SQLite database on local disk;
//! - [`redis`]: the Redis layer several instances share (`--redis`);
//! - [`read`]: history reads (scroll-back, resume, search) and the reader threads that
//!   answer them, whichever of the two holds the messages.
//!
//! A store never touches rooms, members or sockets and never decides what a client
//! sees; the dispatcher (through [`crate::dispatcher::Backend`]) is the only caller
//! that writes to it.

pub mod read;
pub mod redis;
pub mod sqlite;

/// A fresh random room epoch: 16 hex digits. A room's history gets one with its first
/// stored message and keeps it while that history lasts, in either store.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
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
}
