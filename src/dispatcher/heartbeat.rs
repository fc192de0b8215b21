//! The heartbeat schedule: which connections are due a WebSocket ping now.
//!
//! Every connection is pinged once per interval, but not all at the same moment:
//! the interval is cut into slots and each connection has its own slot (by id), so
//! each tick pings about `connections / slots` of them. Pinging 5,000 sockets at
//! once costs tens of milliseconds of writes and wakes 5,000 threads with their
//! pongs, which every message in flight at that moment would wait behind.
//!
//! This module only keeps the schedule; it never touches a socket. The dispatcher
//! stages the pings it returns like any other frame.

use std::time::{Duration, Instant};

use crate::delivery::outbox::ConnId;

/// Who gets pinged in which slot of the interval.
pub struct Heartbeat {
    /// One list per slot; ids of closed connections are dropped when their slot comes.
    slots: Vec<Vec<ConnId>>,
    slot_len: Duration,
    start: Instant,
    /// Slots handed out since `start`.
    done: u64,
}

impl Heartbeat {
    /// A schedule that pings each connection once per `interval`, looked at about every `tick`.
    pub fn new(interval: Duration, tick: Duration, start: Instant) -> Heartbeat {
        let count = (interval.as_nanos() / tick.as_nanos().max(1)).clamp(1, 1 << 16) as usize;
        Heartbeat { slots: vec![Vec::new(); count], slot_len: interval / count as u32, start, done: 0 }
    }

    /// Puts a new connection on the schedule.
    pub fn add(&mut self, id: ConnId) {
        let slot = (id % self.slots.len() as u64) as usize;
        self.slots[slot].push(id);
    }

    /// The connections whose ping is due by `now` and that `alive` still knows.
    /// A dispatcher that fell behind catches up, but never pings anyone twice in one call.
    pub fn due(&mut self, now: Instant, alive: impl Fn(ConnId) -> bool) -> Vec<ConnId> {
        let reached = (now.saturating_duration_since(self.start).as_nanos() / self.slot_len.as_nanos().max(1)) as u64;
        let count = self.slots.len() as u64;
        let from = self.done.max(reached.saturating_sub(count));
        self.done = reached.max(self.done);
        let mut out = Vec::new();
        for n in from..reached {
            let slot = &mut self.slots[(n % count) as usize];
            slot.retain(|&id| alive(id));
            out.extend_from_slice(slot);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(20);

    #[test]
    fn each_connection_is_pinged_once_per_interval_and_spread_over_it() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_secs(1), TICK, t0);
        for id in 0..5000 {
            hb.add(id);
        }
        let mut pinged = vec![0u32; 5000];
        let mut most_in_one_tick = 0;
        for tick in 1..=50 {
            let due = hb.due(t0 + TICK * tick, |_| true);
            most_in_one_tick = most_in_one_tick.max(due.len());
            for id in due {
                pinged[id as usize] += 1;
            }
        }
        assert!(pinged.iter().all(|&n| n == 1), "every connection exactly once in one interval");
        assert_eq!(most_in_one_tick, 100, "5,000 connections over 50 slots");
        let again = hb.due(t0 + TICK * 100, |_| true);
        assert_eq!(again.len(), 5000, "a second interval pings everyone again");
    }

    #[test]
    fn closed_connections_are_dropped_and_a_late_tick_does_not_ping_twice() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Duration::from_millis(100), TICK, t0);
        for id in 0..10 {
            hb.add(id);
        }
        assert!(hb.due(t0, |_| true).is_empty(), "nothing is due at the start");
        // Ten intervals late: one round, not ten, and only the living.
        let due = hb.due(t0 + Duration::from_secs(1), |id| id % 2 == 0);
        let mut sorted = due.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 2, 4, 6, 8]);
        assert!(hb.due(t0 + Duration::from_secs(1), |_| true).is_empty(), "the same moment is not due twice");
        let next = hb.due(t0 + Duration::from_millis(1100), |_| true);
        assert_eq!(next.len(), 5, "the dropped ids stay dropped");
    }
}
