//! Giving freed heap memory back to the kernel once a burst is over.
//!
//! glibc keeps what a thread frees in its arena for reuse and returns to the kernel, by
//! itself, only a free stretch at the very top of a heap. A burst — thousands of
//! handshakes, a join storm's user lists and presence events, a long scroll-back —
//! frees tens of megabytes in the middle of the arenas, between objects that live on,
//! and those pages would stay resident while the server idles. So once the dispatcher
//! has been quiet for `--heap-trim-quiet-ms` after at least [`BURST`] commands, a
//! thread of its own calls `malloc_trim(0)`, which also releases the free pages inside
//! the heaps. Quiet means a trickle at most ([`TRICKLE`] commands in that time), not
//! silence: a live server always has a few users chatting, and a storm's memory must
//! not wait for a second in which nobody posts. Never on the dispatcher's thread: a trim walks every arena, tens of
//! milliseconds at 10,000 connections. This module decides nothing about chat and
//! never blocks another thread for longer than glibc holds one arena's lock.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Dispatcher commands since the last trim that make a burst worth trimming after.
pub const BURST: u64 = 1000;

/// Commands that may arrive during the quiet period and still leave it quiet: a
/// trickle, a twentieth of a burst. Since a trim needs a burst of commands since the
/// last one, a steady trickle at this rate brings one trim every twenty quiet periods
/// at most.
pub const TRICKLE: u64 = BURST / 20;

/// How often the trimmer looks at the dispatcher's command count.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// When to trim: after a burst of commands, once they have slowed to a trickle for
/// `quiet`.
#[derive(Debug)]
pub struct AfterBurst {
    quiet: Duration,
    /// The command count when the quiet began, and when that was.
    seen: u64,
    still_since: Instant,
    /// The command count at the last trim.
    trimmed_at: u64,
}

impl AfterBurst {
    pub fn new(quiet: Duration, commands: u64, now: Instant) -> AfterBurst {
        AfterBurst { quiet, seen: commands, still_since: now, trimmed_at: commands }
    }

    /// Notes the dispatcher's command count at `now`; true when a trim is due (and
    /// then counts it as done).
    pub fn due(&mut self, commands: u64, now: Instant) -> bool {
        if commands.saturating_sub(self.seen) > TRICKLE {
            self.seen = commands;
            self.still_since = now;
            return false;
        }
        let due = commands.saturating_sub(self.trimmed_at) >= BURST && now - self.still_since >= self.quiet;
        if due {
            self.trimmed_at = commands;
        }
        due
    }
}

/// Starts the trimmer thread; it stops when `shutdown` fires. `quiet` zero: no thread.
pub fn start_trimmer(quiet: Duration, metrics: Arc<Metrics>, shutdown: Shutdown) -> std::io::Result<()> {
    if quiet.is_zero() {
        return Ok(());
    }
    let mut policy = AfterBurst::new(quiet, metrics.commands.load(Relaxed), Instant::now());
    std::thread::Builder::new().name("heap-trim".into()).stack_size(64 * 1024).spawn(move || {
        // The shutdown channel never carries a value: it disconnects when fired.
        while let Err(RecvTimeoutError::Timeout) = shutdown.signal().recv_timeout(LOOK_EVERY) {
            if policy.due(metrics.commands.load(Relaxed), Instant::now()) {
                let started = Instant::now();
                trim();
                metrics.heap_trims.fetch_add(1, Relaxed);
                log::debug!("heap: trimmed in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
            }
        }
    })?;
    Ok(())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim takes each arena's lock itself; it only hands free pages
    // back to the kernel and is safe to call from any thread at any time.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_is_trimmed_after_it_has_been_quiet_long_enough_and_only_once() {
        let t0 = Instant::now();
        let mut p = AfterBurst::new(QUIET, 0, t0);
        assert!(!p.due(BURST, t0), "still busy");
        assert!(!p.due(BURST, t0 + QUIET / 2), "not quiet long enough");
        assert!(p.due(BURST, t0 + QUIET), "quiet for the whole period");
        assert!(!p.due(BURST, t0 + QUIET * 10), "nothing new since the trim");
    }

    #[test]
    fn a_burst_is_trimmed_while_a_few_users_go_on_chatting() {
        let t0 = Instant::now();
        let mut p = AfterBurst::new(QUIET, 0, t0);
        assert!(!p.due(BURST * 10, t0), "a join storm");
        // Ten commands a quarter second, well under a trickle per quiet period.
        let mut commands = BURST * 10;
        let mut trimmed = 0;
        for tick in 1..=8 {
            commands += 10;
            if p.due(commands, t0 + QUIET * tick / 4) {
                trimmed = tick;
                break;
            }
        }
        assert_eq!(trimmed, 4, "trimmed once the storm had been over for the quiet period");
        // A burst still going (more than a trickle per quiet period) is never quiet.
        let mut p = AfterBurst::new(QUIET, 0, t0);
        for tick in 1..=40 {
            assert!(!p.due(tick * (TRICKLE + 1), t0 + QUIET * tick as u32), "busy at tick {tick}");
        }
    }

    #[test]
    fn small_activity_never_triggers_a_trim_until_it_adds_up_to_a_burst() {
        let t0 = Instant::now();
        let mut p = AfterBurst::new(QUIET, 0, t0);
        let mut now = t0;
        for step in 1..BURST {
            now += QUIET * 2;
            assert!(!p.due(step, now), "a command every two seconds");
            now += QUIET * 2;
            assert!(!p.due(step, now), "{step} commands are not a burst");
        }
        // A burst's worth of commands since the last trim, however slowly, and quiet.
        assert!(p.due(BURST, now + QUIET));
        assert!(!p.due(BURST + 1, now + QUIET * 2), "nothing like a burst since");
    }
}
