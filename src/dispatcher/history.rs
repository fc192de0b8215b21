//! A room's memory: the ring of recent messages that serves history and resume, and
//! the bounded set of client message ids that makes retries effectively-once.
//!
//! Owned by the dispatcher (one room, one `History`); no locking, no I/O.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

use crate::protocol::wire::{self, Frame};

/// One accepted message: its live frame, from which the stored JSON is a slice.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub frame: Frame,
}

impl Stored {
    /// The message's JSON (what the journal holds and `history` splices).
    pub fn json(&self) -> Bytes {
        wire::payload(&self.frame)
    }
}

/// What a resume from `since` yields.
#[derive(Debug)]
pub struct Replay<'a> {
    pub messages: Vec<&'a Stored>,
    /// False when messages after `since` are no longer held.
    pub complete: bool,
}

/// The last `capacity` messages of a room, in `seq` order, plus de-duplication ids.
#[derive(Debug)]
pub struct History {
    ring: VecDeque<Stored>,
    capacity: usize,
    /// Latest seq ever assigned (0 = none yet).
    head: u64,
    dedup: HashMap<String, u64>,
    dedup_order: VecDeque<String>,
    dedup_capacity: usize,
}

impl History {
    pub fn new(capacity: usize, dedup_capacity: usize) -> History {
        History {
            ring: VecDeque::new(),
            capacity: capacity.max(1),
            head: 0,
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            dedup_capacity: dedup_capacity.max(1),
        }
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    pub fn next_seq(&self) -> u64 {
        self.head + 1
    }

    /// Sets the head of an empty or loading ring (what the store says was assigned).
    pub fn start_at(&mut self, head: u64) {
        debug_assert!(self.ring.back().is_none_or(|m| m.seq <= head));
        self.head = head;
    }

    /// The oldest seq held, if any.
    pub fn oldest(&self) -> Option<u64> {
        self.ring.front().map(|m| m.seq)
    }

    /// Takes back the newest message (`seq` must be the head): the store refused it.
    pub fn rollback(&mut self, seq: u64, uid: &str, id: Option<&str>) {
        if self.ring.back().is_some_and(|m| m.seq == seq) {
            self.ring.pop_back();
        }
        if self.head == seq {
            self.head = seq - 1;
        }
        if let Some(id) = id {
            let key = dedup_key(uid, id);
            if self.dedup.remove(&key).is_some() {
                self.dedup_order.retain(|k| *k != key);
            }
        }
    }

    /// The `limit` messages before `before`, oldest first, when the ring holds all of
    /// them and at least one older (so the answer is known to be incomplete).
    pub fn before(&self, before: u64, limit: usize) -> Option<Vec<&Stored>> {
        let oldest = self.oldest()?;
        let from = before.checked_sub(limit as u64 + 1)?;
        if from < oldest || before > self.head + 1 {
            return None;
        }
        let skip = (from + 1 - oldest) as usize;
        Some(self.ring.iter().skip(skip).take(limit).collect())
    }

    /// Appends a message; `seq` must be `next_seq()` (replay may skip ahead after a
    /// compaction dropped older lines, never back).
    pub fn push(&mut self, stored: Stored, uid: &str, id: Option<&str>) {
        debug_assert!(stored.seq > self.head);
        self.head = stored.seq;
        if let Some(id) = id {
            self.remember(uid, id, stored.seq);
        }
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(stored);
    }

    /// The held message with this seq.
    pub fn get(&self, seq: u64) -> Option<&Stored> {
        let oldest = self.oldest()?;
        self.ring.get(seq.checked_sub(oldest)? as usize)
    }

    /// Replaces the frame of a held message (an edit or deletion committed); false when
    /// it is no longer held.
    pub fn replace(&mut self, seq: u64, frame: Frame) -> bool {
        let Some(oldest) = self.oldest() else { return false };
        match seq.checked_sub(oldest).and_then(|i| self.ring.get_mut(i as usize)) {
            Some(m) => {
                m.frame = frame;
                true
            }
            None => false,
        }
    }

    /// The held messages after `seq`, for a deletion to find the edit events of it.
    pub fn after(&self, seq: u64) -> impl Iterator<Item = &Stored> {
        self.since(seq).messages.into_iter()
    }

    /// The seq of an already accepted message with this client id from this user.
    pub fn seen(&self, uid: &str, id: &str) -> Option<u64> {
        self.dedup.get(&dedup_key(uid, id)).copied()
    }

    fn remember(&mut self, uid: &str, id: &str, seq: u64) {
        let key = dedup_key(uid, id);
        if self.dedup.insert(key.clone(), seq).is_none() {
            self.dedup_order.push_back(key);
        }
        while self.dedup_order.len() > self.dedup_capacity {
            if let Some(old) = self.dedup_order.pop_front() {
                self.dedup.remove(&old);
            }
        }
    }

    /// Every held message after `since`, oldest first.
    pub fn since(&self, since: u64) -> Replay<'_> {
        let oldest = self.ring.front().map_or(self.head + 1, |m| m.seq);
        let complete = since + 1 >= oldest || since >= self.head;
        // seqs in the ring are consecutive, so the start index is arithmetic.
        let skip = (since + 1).saturating_sub(oldest) as usize;
        Replay { messages: self.ring.iter().skip(skip).collect(), complete }
    }

    /// The most recent `n` messages, oldest first.
    pub fn recent(&self, n: usize) -> Vec<&Stored> {
        self.ring.iter().skip(self.ring.len().saturating_sub(n)).collect()
    }
}

fn dedup_key(uid: &str, id: &str) -> String {
    let mut k = String::with_capacity(uid.len() + id.len() + 1);
    k.push_str(uid);
    k.push('\0');
    k.push_str(id);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64) -> Stored {
        Stored { seq, frame: wire::text_frame(format!("{{\"seq\":{seq}}}").as_bytes()) }
    }

    fn filled(cap: usize, n: u64) -> History {
        let mut h = History::new(cap, 10);
        for s in 1..=n {
            h.push(stored(s), "u", Some(&format!("id{s}")));
        }
        h
    }

    fn seqs(r: &Replay) -> Vec<u64> {
        r.messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn resume_yields_exactly_the_missed_messages() {
        let h = filled(10, 8);
        let r = h.since(5);
        assert_eq!(seqs(&r), vec![6, 7, 8]);
        assert!(r.complete);
        assert!(h.since(8).messages.is_empty());
        assert!(h.since(80).complete);
        assert_eq!(seqs(&h.since(0)), (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn resume_past_the_ring_is_incomplete() {
        let h = filled(5, 20);
        let r = h.since(3);
        assert_eq!(seqs(&r), vec![16, 17, 18, 19, 20]);
        assert!(!r.complete);
        let r = h.since(15);
        assert!(r.complete);
        assert_eq!(seqs(&r), vec![16, 17, 18, 19, 20]);
    }

    #[test]
    fn recent_and_json() {
        let h = filled(5, 20);
        assert_eq!(h.recent(2).iter().map(|m| m.seq).collect::<Vec<_>>(), vec![19, 20]);
        assert_eq!(&h.recent(1)[0].json()[..], b"{\"seq\":20}");
    }

    #[test]
    fn rollback_forgets_the_message_and_its_id() {
        let mut h = filled(10, 5);
        h.rollback(5, "u", Some("id5"));
        assert_eq!((h.head(), h.next_seq(), h.seen("u", "id5")), (4, 5, None));
        assert_eq!(seqs(&h.since(0)), vec![1, 2, 3, 4]);
    }

    #[test]
    fn before_is_answered_only_when_the_ring_proves_more_is_older() {
        let h = filled(10, 30); // holds 21..=30
        let got: Vec<u64> = h.before(31, 5).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(got, vec![26, 27, 28, 29, 30]);
        assert_eq!(h.before(27, 5).unwrap()[0].seq, 22);
        assert!(h.before(26, 5).is_none(), "21 is the oldest held: older ones are on disk");
        assert!(h.before(4, 5).is_none());
    }

    #[test]
    fn get_and_replace_find_held_messages_only() {
        let mut h = filled(5, 20); // holds 16..=20
        assert_eq!(h.get(18).map(|m| m.seq), Some(18));
        assert!(h.get(15).is_none() && h.get(21).is_none());
        assert!(h.replace(17, wire::text_frame(b"{\"seq\":17,\"x\":1}")));
        assert_eq!(&h.get(17).unwrap().json()[..], b"{\"seq\":17,\"x\":1}");
        assert!(!h.replace(3, wire::text_frame(b"{}")));
        assert_eq!(h.after(18).map(|m| m.seq).collect::<Vec<_>>(), [19, 20]);
    }

    #[test]
    fn dedup_is_per_user_and_bounded() {
        let h = filled(100, 20);
        assert_eq!(h.seen("u", "id20"), Some(20));
        assert_eq!(h.seen("other", "id20"), None);
        assert_eq!(h.seen("u", "id5"), None, "only the last 10 ids are kept");
    }
}
