//! [`RedisStatus`]: what `/healthz` and `/metrics` say about Redis mode beyond "up":
//! which master is in use and when that last changed, and whether delivery still
//! moves — each delivering thread stamps a beat after every round trip, so a thread
//! wedged while its socket looks fine is noticed, not only a socket that is down.
//!
//! Plain atomics and one small lock; written by the Redis threads, read by the HTTP
//! side. Knows nothing of Redis itself.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A delivering thread that has not completed a round trip with Redis for this long
/// while it had something to follow has stalled: `/healthz` fails. Far above the
/// reader's turn (`XREAD BLOCK` 100 ms) and the events threads' idle `PING` (1 s),
/// below what a client would call "chat stopped".
pub const DELIVERY_STALL: Duration = Duration::from_secs(5);

/// The delivering threads whose beats are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// `redis-reader`: messages.
    Reader,
    /// `redis-events`: join/leave/typing of the watched rooms.
    Events,
    /// `redis-users`: frames for users' connections.
    Users,
}

impl Beat {
    const ALL: [Beat; 3] = [Beat::Reader, Beat::Events, Beat::Users];

    fn label(self) -> &'static str {
        match self {
            Beat::Reader => "reader",
            Beat::Events => "events",
            Beat::Users => "users",
        }
    }
}

/// Redis mode's master and delivery health (one per server, shared by `Arc`).
#[derive(Debug)]
pub struct RedisStatus {
    started: Instant,
    /// `host:port` of the master in use (`None` until the first connection).
    master: Mutex<Option<String>>,
    /// Unix ms when the master in use last changed to another address (0: never).
    changed_at_ms: AtomicU64,
    /// Times the master in use changed to another address.
    changes: AtomicU64,
    /// Per [`Beat`]: ms since `started` of its last round trip.
    beats: [AtomicU64; 3],
}

impl Default for RedisStatus {
    fn default() -> Self {
        RedisStatus {
            started: Instant::now(),
            master: Mutex::new(None),
            changed_at_ms: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            beats: Default::default(),
        }
    }
}

impl RedisStatus {
    /// The master in use is `addr`; the first one set is not counted as a change.
    pub fn set_master(&self, addr: &str) {
        let mut master = self.master.lock().unwrap_or_else(|e| e.into_inner());
        if master.as_deref() == Some(addr) {
            return;
        }
        if master.is_some() {
            self.changes.fetch_add(1, Relaxed);
            self.changed_at_ms.store(unix_ms(), Relaxed);
        }
        *master = Some(addr.to_owned());
    }

    pub fn master(&self) -> Option<String> {
        self.master.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Unix ms of the last change of master (0: never changed).
    pub fn changed_at_ms(&self) -> u64 {
        self.changed_at_ms.load(Relaxed)
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Relaxed)
    }

    /// `thread` completed a round trip with Redis, or has nothing to follow.
    pub fn beat(&self, thread: Beat) {
        let i = Beat::ALL.iter().position(|b| *b == thread).expect("ALL lists every beat");
        self.beats[i].store(self.started.elapsed().as_millis() as u64, Relaxed);
    }

    /// How long ago each thread last beat.
    fn silences(&self) -> impl Iterator<Item = (Beat, Duration)> + '_ {
        let now = self.started.elapsed();
        Beat::ALL
            .iter()
            .zip(&self.beats)
            .map(move |(b, at)| (*b, now.saturating_sub(Duration::from_millis(at.load(Relaxed)))))
    }

    /// The threads silent for longer than [`DELIVERY_STALL`].
    pub fn stalled(&self) -> Vec<&'static str> {
        self.silences().filter(|(_, d)| *d > DELIVERY_STALL).map(|(b, _)| b.label()).collect()
    }

    /// Prometheus lines for the master and the beats.
    pub fn render(&self, s: &mut String) {
        use std::fmt::Write as _;
        if let Some(master) = self.master() {
            let _ = writeln!(
                s,
                "# HELP natter_redis_master The Redis master in use (1 for its address).\n\
                 # TYPE natter_redis_master gauge\nnatter_redis_master{{addr=\"{master}\"}} 1"
            );
        }
        let _ = writeln!(
            s,
            "# HELP natter_redis_master_changes_total Times the master in use moved to another address (failover).\n\
             # TYPE natter_redis_master_changes_total counter\nnatter_redis_master_changes_total {}",
            self.changes()
        );
        let _ = writeln!(
            s,
            "# HELP natter_redis_master_changed_timestamp_seconds When the master in use last moved (0: never).\n\
             # TYPE natter_redis_master_changed_timestamp_seconds gauge\nnatter_redis_master_changed_timestamp_seconds {:.3}",
            self.changed_at_ms() as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "# HELP natter_redis_delivery_silence_seconds Since each delivering thread's last round trip with Redis.\n\
             # TYPE natter_redis_delivery_silence_seconds gauge"
        );
        for (b, d) in self.silences() {
            let _ =
                writeln!(s, "natter_redis_delivery_silence_seconds{{thread=\"{}\"}} {:.3}", b.label(), d.as_secs_f64());
        }
        let _ = writeln!(
            s,
            "# HELP natter_redis_delivery_stalled 1 while a delivering thread has been silent past {}s.\n\
             # TYPE natter_redis_delivery_stalled gauge\nnatter_redis_delivery_stalled {}",
            DELIVERY_STALL.as_secs(),
            u8::from(!self.stalled().is_empty())
        );
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_master_is_no_change_and_a_new_address_is() {
        let s = RedisStatus::default();
        s.set_master("a:1");
        s.set_master("a:1");
        assert_eq!((s.changes(), s.changed_at_ms()), (0, 0));
        s.set_master("b:2");
        assert_eq!(s.changes(), 1);
        assert!(s.changed_at_ms() > 0);
        let mut text = String::new();
        s.render(&mut text);
        assert!(text.contains("natter_redis_master{addr=\"b:2\"} 1"), "{text}");
    }

    #[test]
    fn fresh_beats_are_not_stalled() {
        let s = RedisStatus::default();
        s.beat(Beat::Reader);
        assert!(s.stalled().is_empty());
    }
}
