//! Rooms: which room each client is in, and the per-room accounting of the
//! `rooms` scenarios. Workers count what was sent in each room and who is in
//! it (a [`Census`]) and what each room's members received ([`RoomTally`]);
//! [`account`] turns both into every room's losses, exactly.

use serde_json::{json, Value};

/// Client `index` (counted clients are numbered from 0 in connect order)
/// is in room `index mod rooms`.
pub fn room_of(index: u32, rooms: usize) -> u32 {
    index % rooms.max(1) as u32
}

/// Names of `count` rooms: `PREFIX0`, `PREFIX1`, …
pub fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|k| format!("{prefix}{k}")).collect()
}

/// What the members of one room received during a measurement.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoomTally {
    /// Unique probe arrivals (in order or late).
    pub delivered: u64,
    pub duplicated: u64,
    /// Arrivals that filled a gap: out of order.
    pub late: u64,
}

/// Add `from` into `into`, room by room.
pub fn merge(into: &mut Vec<RoomTally>, from: &[RoomTally]) {
    if into.len() < from.len() {
        into.resize(from.len(), RoomTally::default());
    }
    for (a, b) in into.iter_mut().zip(from) {
        a.delivered += b.delivered;
        a.duplicated += b.duplicated;
        a.late += b.late;
    }
}

/// Per room: counted members open now, and probes sent in it since the
/// measurement started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Census {
    pub members: Vec<u64>,
    pub sent: Vec<u64>,
}

impl Census {
    /// Add another worker's census.
    pub fn merge(&mut self, o: &Census) {
        for (mine, theirs) in [(&mut self.members, &o.members), (&mut self.sent, &o.sent)] {
            if mine.len() < theirs.len() {
                mine.resize(theirs.len(), 0);
            }
            for (a, b) in mine.iter_mut().zip(theirs) {
                *a += b;
            }
        }
    }

    /// Deliveries that should arrive: every probe to every member of its room.
    pub fn expected(&self) -> u64 {
        self.sent.iter().zip(&self.members).map(|(s, m)| s * m).sum()
    }
}

/// Every room's accounting, summed and with the worst rooms named.
#[derive(Debug, Default, PartialEq)]
pub struct RoomReport {
    pub expected: u64,
    pub delivered: u64,
    pub lost: i64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub rooms_with_loss: u64,
    pub rooms_with_duplicates: u64,
    pub rooms_out_of_order: u64,
    /// Up to 5 rooms with the most lost: (room, lost).
    pub worst: Vec<(usize, i64)>,
}

/// Compare, room by room, what should have arrived with what did.
pub fn account(census: &Census, tallies: &[RoomTally]) -> RoomReport {
    let rooms = census.members.len().max(census.sent.len()).max(tallies.len());
    let mut r = RoomReport::default();
    let mut losses = Vec::new();
    for k in 0..rooms {
        let expected = census.sent.get(k).copied().unwrap_or(0) * census.members.get(k).copied().unwrap_or(0);
        let t = tallies.get(k).copied().unwrap_or_default();
        let lost = expected as i64 - t.delivered as i64;
        r.expected += expected;
        r.delivered += t.delivered;
        r.lost += lost;
        r.duplicated += t.duplicated;
        r.out_of_order += t.late;
        r.rooms_with_loss += u64::from(lost != 0);
        r.rooms_with_duplicates += u64::from(t.duplicated > 0);
        r.rooms_out_of_order += u64::from(t.late > 0);
        if lost != 0 {
            losses.push((k, lost));
        }
    }
    losses.sort_by_key(|&(k, lost)| (std::cmp::Reverse(lost.abs()), k));
    losses.truncate(5);
    r.worst = losses;
    r
}

impl RoomReport {
    pub fn to_json(&self) -> Value {
        json!({
            "expected": self.expected, "delivered": self.delivered, "lost": self.lost,
            "duplicated": self.duplicated, "out_of_order": self.out_of_order,
            "rooms_with_loss": self.rooms_with_loss, "rooms_with_duplicates": self.rooms_with_duplicates,
            "rooms_out_of_order": self.rooms_out_of_order, "worst": self.worst,
        })
    }

    /// Nothing lost, duplicated or reordered in any room.
    #[cfg(test)]
    pub fn clean(&self) -> bool {
        self.rooms_with_loss == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(delivered: u64, duplicated: u64, late: u64) -> RoomTally {
        RoomTally { delivered, duplicated, late }
    }

    #[test]
    fn clients_spread_round_robin() {
        assert_eq!((0..5).map(|i| room_of(i, 2)).collect::<Vec<_>>(), [0, 1, 0, 1, 0]);
        assert_eq!(room_of(7, 0), 0);
        assert_eq!(names("r", 3), ["r0", "r1", "r2"]);
    }

    #[test]
    fn censuses_and_tallies_merge_room_by_room() {
        let mut a = Census { members: vec![2, 1], sent: vec![3] };
        a.merge(&Census { members: vec![1, 1, 4], sent: vec![1, 5, 0] });
        assert_eq!(a, Census { members: vec![3, 2, 4], sent: vec![4, 5, 0] });
        assert_eq!(a.expected(), 4 * 3 + 5 * 2);
        let mut t = vec![tally(1, 0, 0)];
        merge(&mut t, &[tally(2, 1, 0), tally(0, 0, 3)]);
        assert_eq!(t, [tally(3, 1, 0), tally(0, 0, 3)]);
    }

    #[test]
    fn one_lost_delivery_per_room_is_found_in_every_room() {
        let census = Census { members: vec![3; 4], sent: vec![10; 4] };
        let all = vec![tally(30, 0, 0); 4];
        assert!(account(&census, &all).clean());
        let short = vec![tally(29, 0, 0); 4];
        let r = account(&census, &short);
        assert_eq!((r.expected, r.delivered, r.lost, r.rooms_with_loss), (120, 116, 4, 4));
        assert_eq!(r.worst.len(), 4);
        assert!(!r.clean());
    }

    #[test]
    fn a_loss_in_one_room_is_not_hidden_by_extra_elsewhere() {
        // Totals balance (60 = 60) but room 0 lost one and room 1 got one it
        // should not have: both rooms are wrong.
        let census = Census { members: vec![3, 3], sent: vec![10, 10] };
        let r = account(&census, &[tally(29, 0, 0), tally(31, 0, 0)]);
        assert_eq!((r.lost, r.rooms_with_loss), (0, 2));
        assert_eq!(r.worst, [(0, 1), (1, -1)]);
        assert!(!r.clean());
    }

    #[test]
    fn reordering_and_duplicates_are_counted_per_room() {
        let census = Census { members: vec![2, 2], sent: vec![5, 5] };
        let r = account(&census, &[tally(10, 0, 1), tally(10, 2, 0)]);
        assert_eq!((r.lost, r.out_of_order, r.duplicated), (0, 1, 2));
        assert_eq!((r.rooms_out_of_order, r.rooms_with_duplicates), (1, 1));
        assert!(!r.clean());
    }
}
