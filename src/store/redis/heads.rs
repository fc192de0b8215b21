//! [`Heads`]: per room, the epoch and the highest seq this instance has seen — acked by
//! the append script or delivered by the reader. Shared by every thread of one instance
//! that talks to Redis (it rides in [`super::StoreOptions`]), so the append script can be
//! told what this instance already handed out and notice a Redis whose history went
//! back (a failover to a replica that had not received the newest appends, a restart
//! from an older snapshot). Plain data behind a mutex held for a lookup; never does I/O.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::protocol::RoomName;

/// What this instance knows of each room's history (see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Heads(Arc<Mutex<HashMap<RoomName, (String, u64)>>>);

impl Heads {
    /// The epoch and highest seq known for `room`.
    pub(crate) fn get(&self, room: &RoomName) -> Option<(String, u64)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).get(room).cloned()
    }

    /// `seq` of `epoch` was acked or delivered here: raises the head, or replaces it
    /// when the epoch is another (the history was started anew).
    pub(crate) fn saw(&self, room: &RoomName, epoch: &str, seq: u64) {
        if epoch.is_empty() {
            return;
        }
        let mut heads = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match heads.get_mut(room) {
            Some((e, head)) if e == epoch => *head = (*head).max(seq),
            _ => {
                heads.insert(room.clone(), (epoch.to_owned(), seq));
            }
        }
    }

    /// The room's history is followed from `seq` of `epoch` on (a reset): what was
    /// known before is no longer the measure.
    pub(crate) fn restart(&self, room: &RoomName, epoch: &str, seq: u64) {
        let mut heads = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if epoch.is_empty() {
            heads.remove(room);
        } else {
            heads.insert(room.clone(), (epoch.to_owned(), seq));
        }
    }

    /// This instance stopped following the room.
    pub(crate) fn forget(&self, room: &RoomName) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_only_rises_within_an_epoch_and_a_new_epoch_replaces_it() {
        let (heads, r) = (Heads::default(), RoomName::parse("r").unwrap());
        heads.saw(&r, "e1", 5);
        heads.saw(&r, "e1", 3);
        assert_eq!(heads.get(&r), Some(("e1".into(), 5)));
        heads.saw(&r, "e2", 1);
        assert_eq!(heads.get(&r), Some(("e2".into(), 1)));
        heads.restart(&r, "e3", 0);
        assert_eq!(heads.get(&r), Some(("e3".into(), 0)));
        heads.forget(&r);
        assert_eq!(heads.get(&r), None);
    }
}
