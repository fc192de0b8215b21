//! Flood control: a token bucket, and the strike count that turns sustained flooding
//! into a close. Each value has one owner (a connection thread for a client's frames,
//! the API for its calls); this module never sleeps, closes or counts anything itself.

use std::time::{Duration, Instant};

/// Frames per second with a burst allowance.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_per_s: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: f64::from(rate_per_s), burst, tokens: burst, last: Instant::now() }
    }

    /// A bucket of `burst` that refills `per_minute` tokens a minute (rates below one
    /// a second, such as room creation).
    pub fn per_minute(per_minute: u32, burst: u32) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: f64::from(per_minute) / 60.0, burst, tokens: burst, last: Instant::now() }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts refusals within a window: `limit` of them inside `window` means the client
/// is not slowing down after being told to.
#[derive(Debug)]
pub struct Strikes {
    limit: u32,
    window: Duration,
    count: u32,
    since: Instant,
}

impl Strikes {
    pub fn new(limit: u32, window: Duration) -> Strikes {
        Strikes { limit: limit.max(1), window, count: 0, since: Instant::now() }
    }

    /// Records one strike; true when the limit is reached.
    pub fn strike(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.since) > self.window {
            self.count = 0;
            self.since = now;
        }
        self.count += 1;
        self.count >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket { rate: 10.0, burst: 3.0, tokens: 3.0, last: t0 };
        assert!((0..3).all(|_| b.take_at(t0)));
        assert!(!b.take_at(t0));
        assert!(b.take_at(t0 + Duration::from_millis(100)), "one token per 100 ms at 10/s");
        assert!(!b.take_at(t0 + Duration::from_millis(150)));
        assert!(b.take_at(t0 + Duration::from_secs(10)));
        assert!((0..2).all(|_| b.take_at(t0 + Duration::from_secs(10))), "refill stops at burst");
        assert!(!b.take_at(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn strikes_trip_at_the_limit() {
        let mut s = Strikes::new(3, Duration::from_secs(60));
        assert!(!s.strike());
        assert!(!s.strike());
        assert!(s.strike());
    }
}
