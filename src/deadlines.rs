//! The deadlines of many keyed things (rooms, connections) in one min-heap: a shard's timers are
//! data here, never a task or a runtime timer per room, player or connection.
//!
//! Re-arming is lazy: a new deadline is pushed and the old entry stays in the heap. The owner
//! keeps each key's armed time and skips an entry that no longer matches it when it comes up,
//! so re-arming never searches the heap; once stale entries outnumber live keys the heap is
//! rebuilt from the armed times, which keeps it within a small multiple of the keys.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Deadlines keyed by `K`, earliest first.
#[derive(Debug)]
pub struct Deadlines<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines { heap: BinaryHeap::new() }
    }
}

impl<K: Ord> Deadlines<K> {
    /// Adds `key`'s deadline `at` (its earlier entries become stale for the owner to skip).
    pub fn arm(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// The earliest entry's time (possibly stale, which only costs an early wake-up).
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.next()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(entry)| entry)
    }

    /// Rebuilds the heap from `armed` (every live key's armed time) once stale entries outnumber
    /// the `live` keys (plus some slack, so small heaps are left alone).
    pub fn compact(&mut self, live: usize, armed: impl FnOnce() -> Vec<(Instant, K)>) {
        if self.heap.len() > 2 * live + 64 {
            self.heap = armed().into_iter().map(Reverse).collect();
        }
    }

    /// Entries in the heap, live and stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether the heap is empty.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// `at` rounded up to the next multiple of `grain` since `origin`: deadlines that need no
/// precision (pings, idle and close timeouts) share wake-ups instead of taking one each.
pub fn round_up(at: Instant, origin: Instant, grain: Duration) -> Instant {
    let grain_ns = grain.as_nanos().max(1);
    let since = at.saturating_duration_since(origin).as_nanos();
    let rounded = since.div_ceil(grain_ns).saturating_mul(grain_ns);
    origin + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_only_when_due() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Deadlines::default();
        d.arm(t0 + 3 * s, "c");
        d.arm(t0 + s, "a");
        d.arm(t0 + 2 * s, "b");
        assert_eq!(d.next(), Some(t0 + s));
        assert_eq!(d.pop_due(t0), None);
        assert_eq!(d.pop_due(t0 + 2 * s), Some((t0 + s, "a")));
        assert_eq!(d.pop_due(t0 + 2 * s), Some((t0 + 2 * s, "b")));
        assert_eq!(d.pop_due(t0 + 2 * s), None);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn compaction_keeps_only_the_armed_entries() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        for i in 0..1000u64 {
            d.arm(t0 + Duration::from_millis(i), 7u32);
        }
        d.compact(1, || vec![(t0 + Duration::from_millis(999), 7)]);
        assert_eq!(d.len(), 1);
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(999)));
    }

    #[test]
    fn rounding_up_to_a_grain() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        assert_eq!(round_up(t0 + 3 * ms, t0, 10 * ms), t0 + 10 * ms);
        assert_eq!(round_up(t0 + 10 * ms, t0, 10 * ms), t0 + 10 * ms);
        assert_eq!(round_up(t0, t0, 10 * ms), t0);
        assert_eq!(round_up(t0 - ms, t0, 10 * ms), t0);
    }
}
