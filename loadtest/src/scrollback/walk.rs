//! One pager's way back through a room, and the check of every page it gets: the
//! answer to `history {before, limit}` must hold at most `limit` messages, all older
//! than `before`, oldest first, with consecutive seqs, the newest of them right under
//! `before`, and `limit` of them unless it says `complete`. The next page is asked
//! `before` the oldest seq of this one, so pages that pass join up with no message
//! missing and none twice. (In a room nothing was ever deleted from: retention leaves
//! holes this would call gaps.)
//!
//! Pure accounting: no socket, no clock.

/// What was wrong with a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// More messages than `limit`.
    TooMany,
    /// A message at or above `before`: not older, or one an earlier page had.
    NotOlder,
    /// Not oldest first: a seq below the one before it.
    Unordered,
    /// The same seq twice in the page.
    Duplicate,
    /// A seq missing between two messages, or between the newest one and `before`.
    Gap,
    /// Fewer than `limit` messages, yet not `complete`.
    Short,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::TooMany => "more than limit",
            Fault::NotOlder => "not older than before",
            Fault::Unordered => "not oldest first",
            Fault::Duplicate => "duplicate",
            Fault::Gap => "gap",
            Fault::Short => "short without complete",
        }
    }
}

/// Where a pager is on its way back: the `before` of its next request, and whether it
/// is over (the room's beginning reached, or a page that brought it no further).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walk {
    before: u64,
    done: bool,
}

impl Walk {
    /// A walk whose first request is `history {before}`.
    pub fn new(before: u64) -> Walk {
        Walk { before: before.max(1), done: before <= 1 }
    }

    pub fn before(&self) -> u64 {
        self.before
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// The answer to `history {before: self.before(), limit}`: its messages' seqs in the
    /// order they came, and its `complete`. Moves on to the page's oldest message; a page
    /// that does not move the walk back ends it, so a server that keeps answering the
    /// same page cannot keep a pager going round.
    pub fn page(&mut self, limit: usize, seqs: &[u64], complete: bool) -> Result<(), Fault> {
        let fault = check(self.before, limit, seqs, complete);
        match seqs.iter().min() {
            Some(&oldest) if oldest < self.before => self.before = oldest,
            _ => self.done = true,
        }
        self.done |= complete || self.before <= 1;
        fault.map_or(Ok(()), Err)
    }
}

fn check(before: u64, limit: usize, seqs: &[u64], complete: bool) -> Option<Fault> {
    if seqs.len() > limit {
        return Some(Fault::TooMany);
    }
    if seqs.iter().any(|&s| s >= before) {
        return Some(Fault::NotOlder);
    }
    for w in seqs.windows(2) {
        if w[1] < w[0] {
            return Some(Fault::Unordered);
        }
        if w[1] == w[0] {
            return Some(Fault::Duplicate);
        }
        if w[1] > w[0] + 1 {
            return Some(Fault::Gap);
        }
    }
    if seqs.last().is_some_and(|&newest| newest + 1 != before) {
        return Some(Fault::Gap);
    }
    if !complete && seqs.len() < limit {
        return Some(Fault::Short);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(a: u64, b: u64) -> Vec<u64> {
        (a..=b).collect()
    }

    #[test]
    fn contiguous_pages_walk_back_to_the_beginning() {
        let mut w = Walk::new(251);
        assert_eq!(w.page(100, &range(151, 250), false), Ok(()));
        assert_eq!(w.before(), 151);
        assert_eq!(w.page(50, &range(101, 150), false), Ok(()));
        assert_eq!(w.page(100, &range(1, 100), false), Ok(()));
        assert!(w.done(), "before 1: nothing older can exist");
        let mut w = Walk::new(130);
        w.page(100, &range(30, 129), false).unwrap();
        assert_eq!(w.page(100, &range(1, 29), true), Ok(()));
        assert!(w.done());
    }

    #[test]
    fn complete_ends_the_walk_where_the_room_begins() {
        // Retention left the room starting at 41: `complete` with a short page is right.
        let mut w = Walk::new(91);
        assert_eq!(w.page(100, &range(41, 90), true), Ok(()));
        assert!(w.done());
    }

    #[test]
    fn a_missing_seq_is_a_gap_inside_a_page_or_below_before() {
        let mut inside = range(151, 250);
        inside.remove(10);
        assert_eq!(Walk::new(251).page(100, &inside, false), Err(Fault::Gap));
        assert_eq!(Walk::new(251).page(100, &range(150, 249), false), Err(Fault::Gap));
    }

    #[test]
    fn newest_first_duplicates_and_repeats_are_faults() {
        let mut newest_first = range(151, 250);
        newest_first.reverse();
        assert_eq!(Walk::new(251).page(100, &newest_first, false), Err(Fault::Unordered));
        let mut twice = range(152, 250);
        twice.insert(50, 201);
        assert_eq!(Walk::new(251).page(100, &twice, false), Err(Fault::Duplicate));
        // The server ignores `before` and answers the first page again: every message
        // of it is one the walk already had.
        let mut w = Walk::new(251);
        w.page(100, &range(151, 250), false).unwrap();
        assert_eq!(w.page(100, &range(151, 250), false), Err(Fault::NotOlder));
        assert!(w.done(), "no step back: the walk ends instead of going round");
    }

    #[test]
    fn short_or_oversized_pages_are_faults() {
        assert_eq!(Walk::new(251).page(100, &range(201, 250), false), Err(Fault::Short));
        assert_eq!(Walk::new(251).page(50, &range(150, 250), false), Err(Fault::TooMany));
        let mut w = Walk::new(251);
        assert_eq!(w.page(100, &[], false), Err(Fault::Short));
        assert!(w.done(), "an empty page brings the walk no further");
    }
}
