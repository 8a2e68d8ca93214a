//! Token-bucket rate limiting with the clock passed in.

use std::time::Instant;

/// How fast a [`TokenBucket`] refills and how much it holds: `burst` events at once and
/// `per_sec` a second on average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_sec: f64,
    /// Tokens a full bucket holds.
    pub burst: f64,
}

impl Rate {
    /// `per_sec` a second, bursts of twice that.
    pub fn with_double_burst(per_sec: f64) -> Rate {
        Rate { per_sec, burst: 2.0 * per_sec }
    }
}

/// The tokens one client has left. Its [`Rate`] is passed in by the owner, who keeps one for
/// all its buckets: thousands of connections share a few rates.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(now: Instant, rate: Rate) -> Self {
        TokenBucket { tokens: rate.burst, last: now }
    }

    /// Whether the bucket would be full at `now` (its owner has been quiet).
    pub fn is_full(&self, now: Instant, rate: Rate) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate.per_sec >= rate.burst
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant, rate: Rate) -> bool {
        self.try_take_n(now, rate, 1.0)
    }

    /// Takes `n` tokens if there are that many (a byte budget takes a message's size).
    pub fn try_take_n(&mut self, now: Instant, rate: Rate, n: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.last = now.max(self.last);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let rate = Rate { per_sec: 10.0, burst: 5.0 };
        let mut b = TokenBucket::full(t0, rate);
        assert_eq!((0..10).filter(|_| b.try_take(t0, rate)).count(), 5);
        assert!(!b.try_take(t0 + Duration::from_millis(50), rate));
        assert!(b.try_take(t0 + Duration::from_millis(100), rate));
        let later = t0 + Duration::from_secs(60);
        assert!(b.is_full(later, rate));
        assert_eq!((0..10).filter(|_| b.try_take(later, rate)).count(), 5, "never more than the burst");
        assert!(!b.is_full(later, rate));
        // A byte budget: 1,000 B/s with a 2,000 B burst takes messages by their size.
        let bytes_rate = Rate { per_sec: 1000.0, burst: 2000.0 };
        let mut bytes = TokenBucket::full(t0, bytes_rate);
        assert!(bytes.try_take_n(t0, bytes_rate, 1500.0));
        assert!(!bytes.try_take_n(t0, bytes_rate, 600.0));
        assert!(bytes.try_take_n(t0 + Duration::from_millis(100), bytes_rate, 600.0));
        assert_eq!(Rate::with_double_burst(3.0), Rate { per_sec: 3.0, burst: 6.0 });
    }
}
