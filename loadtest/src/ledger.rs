//! Exact delivery accounting for one receiving client: which probes of
//! which stream it has seen, so that every arrival is classed as new,
//! late (out of order, filling a gap) or duplicate — counted, not guessed.
//!
//! The common case — probes arriving in order — costs one `(stream, high)`
//! pair per stream the receiver has heard from (sorted, so a room of 20
//! senders costs 20 pairs however large the stream ids are); gaps are
//! remembered as ranges only when they happen, and their number is bounded.

/// Most gap ranges one client remembers; past this the oldest are
/// forgotten (and a late probe for them would count as a duplicate).
const MAX_GAPS: usize = 1024;
/// Highest stream id a ledger tracks; larger ids are foreign traffic.
pub const MAX_STREAMS: u32 = 1 << 20;

/// How one arrival was classed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// First time, in order.
    New,
    /// First time, but after a later probe of the same stream.
    Late,
    /// Seen before.
    Duplicate,
    /// Stream id out of range: not ours.
    Foreign,
}

/// One receiver's view of every stream.
#[derive(Debug, Default)]
pub struct Ledger {
    /// `(stream, highest n seen)`, sorted by stream.
    high: Vec<(u32, u32)>,
    /// Missing ranges `(stream, lo, hi)` inclusive, below `high`.
    gaps: Vec<(u32, u32, u32)>,
    /// Ranges forgotten because of [`MAX_GAPS`].
    pub gaps_forgotten: u64,
}

impl Ledger {
    /// Record the arrival of probe `n` (≥ 1) of `stream`.
    pub fn record(&mut self, stream: u32, n: u32) -> Arrival {
        if stream >= MAX_STREAMS || n == 0 {
            return Arrival::Foreign;
        }
        let i = match self.high.binary_search_by_key(&stream, |&(s, _)| s) {
            Ok(i) => i,
            Err(i) => {
                self.high.insert(i, (stream, 0));
                i
            }
        };
        let high = self.high[i].1;
        if n > high {
            if n > high + 1 {
                self.remember_gap(stream, high + 1, n - 1);
            }
            self.high[i].1 = n;
            return Arrival::New;
        }
        self.fill_gap(stream, n)
    }

    fn remember_gap(&mut self, stream: u32, lo: u32, hi: u32) {
        if self.gaps.len() >= MAX_GAPS {
            self.gaps.remove(0);
            self.gaps_forgotten += 1;
        }
        self.gaps.push((stream, lo, hi));
    }

    fn fill_gap(&mut self, stream: u32, n: u32) -> Arrival {
        let Some(i) = self.gaps.iter().position(|&(s, lo, hi)| s == stream && lo <= n && n <= hi) else {
            return Arrival::Duplicate;
        };
        let (_, lo, hi) = self.gaps[i];
        match (n == lo, n == hi) {
            (true, true) => {
                self.gaps.swap_remove(i);
            }
            (true, false) => self.gaps[i].1 = n + 1,
            (false, true) => self.gaps[i].2 = n - 1,
            (false, false) => {
                self.gaps[i].2 = n - 1;
                self.remember_gap(stream, n + 1, hi);
            }
        }
        Arrival::Late
    }

    /// Whether probe `n` of `stream` has arrived.
    pub fn has(&self, stream: u32, n: u32) -> bool {
        let high = match self.high.binary_search_by_key(&stream, |&(s, _)| s) {
            Ok(i) => self.high[i].1,
            Err(_) => 0,
        };
        n >= 1 && n <= high && !self.gaps.iter().any(|&(s, lo, hi)| s == stream && lo <= n && n <= hi)
    }

    /// Forget everything (a new measurement phase starts).
    pub fn clear(&mut self) {
        self.high = Vec::new();
        self.gaps = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Arrival::*;

    #[test]
    fn in_order_arrivals_are_new() {
        let mut l = Ledger::default();
        assert_eq!([l.record(0, 1), l.record(0, 2), l.record(5, 1)], [New, New, New]);
        assert_eq!(l.record(0, 2), Duplicate);
        assert!(l.gaps.is_empty());
        // Sparse stream ids (a room's senders are client indices) stay cheap.
        assert_eq!([l.record(900_000, 1), l.record(7, 1), l.record(900_000, 2)], [New, New, New]);
        assert_eq!(l.high.len(), 4);
    }

    #[test]
    fn gaps_fill_once_as_late() {
        let mut l = Ledger::default();
        assert_eq!(l.record(1, 5), New);
        assert_eq!(l.record(1, 3), Late);
        assert_eq!(l.record(1, 3), Duplicate);
        assert_eq!([l.record(1, 1), l.record(1, 4), l.record(1, 2)], [Late, Late, Late]);
        assert!(l.gaps.is_empty());
        assert_eq!([l.record(1, 4), l.record(1, 5)], [Duplicate, Duplicate]);
    }

    #[test]
    fn has_knows_gaps() {
        let mut l = Ledger::default();
        l.record(3, 1);
        l.record(3, 4);
        assert!(l.has(3, 1) && l.has(3, 4));
        assert!(!l.has(3, 2) && !l.has(3, 3) && !l.has(3, 5) && !l.has(4, 1) && !l.has(3, 0));
    }

    #[test]
    fn foreign_and_bounded() {
        let mut l = Ledger::default();
        assert_eq!(l.record(MAX_STREAMS, 1), Foreign);
        assert_eq!(l.record(0, 0), Foreign);
        for k in 0..(MAX_GAPS as u32 + 10) {
            l.record(2, 2 * k + 2);
        }
        assert_eq!(l.gaps.len(), MAX_GAPS);
        assert_eq!(l.gaps_forgotten, 10);
    }
}
