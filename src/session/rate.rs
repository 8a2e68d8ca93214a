//! Token-bucket rate limiting with the clock passed in.

use std::time::Instant;

/// Allows `burst` events at once and `per_sec` events per second on average.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(now: Instant, per_sec: f64, burst: f64) -> Self {
        TokenBucket { per_sec, burst, tokens: burst, last: now }
    }

    /// Whether the bucket would be full at `now` (its owner has been quiet).
    pub fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.per_sec >= self.burst
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(now, 1.0)
    }

    /// Takes `n` tokens if there are that many (a byte budget takes a message's size).
    pub fn try_take_n(&mut self, now: Instant, n: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
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
        let mut b = TokenBucket::new(t0, 10.0, 5.0);
        assert_eq!((0..10).filter(|_| b.try_take(t0)).count(), 5);
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 5, "never more than the burst");
        // A byte budget: 1,000 B/s with a 2,000 B burst takes messages by their size.
        let mut bytes = TokenBucket::new(t0, 1000.0, 2000.0);
        assert!(bytes.try_take_n(t0, 1500.0));
        assert!(!bytes.try_take_n(t0, 600.0));
        assert!(bytes.try_take_n(t0 + Duration::from_millis(100), 600.0));
    }
}
