//! A room's log of sequenced events, for backfill after a reconnect.
//!
//! Each entry keeps the frame that was (or would have been) sent live, so a replay is the same
//! envelope by construction and costs no re-serialization. The log is bounded by count and by
//! age; once an event has been evicted, nobody whose last seen sequence id precedes it can be
//! backfilled ([`EventLog::covers`] says so).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::Scope;

/// Bounds of a room's event log.
#[derive(Debug, Clone, Copy)]
pub struct EventLogConfig {
    /// Events older than this are dropped.
    pub retention: Duration,
    /// At most this many events are kept.
    pub max_events: usize,
}

impl Default for EventLogConfig {
    fn default() -> Self {
        EventLogConfig { retention: Duration::from_secs(120), max_events: 1024 }
    }
}

/// One sequenced event as it went out.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    /// Its sequence id.
    pub seq: u64,
    /// Message type (for summaries).
    pub kind: &'static str,
    /// Who was entitled to it.
    pub scope: Scope,
    /// When it was sequenced.
    pub at: Instant,
    /// The complete WebSocket frame (header and JSON text) in protocol version `version`.
    pub frame: Bytes,
    /// The protocol version the frame was encoded for.
    pub version: String,
}

/// The bounded log of one room.
#[derive(Debug, Default)]
pub struct EventLog {
    config: EventLogConfig,
    entries: VecDeque<LoggedEvent>,
    /// Highest sequence id evicted so far (0: none).
    evicted_through: u64,
}

impl EventLog {
    /// An empty log.
    pub fn new(config: EventLogConfig) -> Self {
        EventLog { config, entries: VecDeque::new(), evicted_through: 0 }
    }

    /// An empty log of a room whose events up to `seq` are gone (a recovered room).
    pub fn resuming_after(config: EventLogConfig, seq: u64) -> Self {
        EventLog { config, entries: VecDeque::new(), evicted_through: seq }
    }

    /// Appends `event` (sequence ids must increase) and evicts what is over the bounds at `now`.
    pub fn push(&mut self, now: Instant, event: LoggedEvent) {
        self.entries.push_back(event);
        self.prune(now);
    }

    /// Drops events past the retention or the count limit.
    pub fn prune(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let too_old = now.saturating_duration_since(front.at) > self.config.retention;
            if !too_old && self.entries.len() <= self.config.max_events {
                break;
            }
            self.evicted_through = front.seq;
            self.entries.pop_front();
        }
    }

    /// Whether every event after sequence id `after` is still here.
    pub fn covers(&self, after: u64) -> bool {
        after >= self.evicted_through
    }

    /// Events with `after < seq <= upto`, oldest first.
    pub fn range(&self, after: u64, upto: u64) -> impl Iterator<Item = &LoggedEvent> {
        // Sequence ids are dense in the log, so the start is found by arithmetic.
        let first = self.entries.front().map_or(0, |e| e.seq);
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        self.entries.iter().skip(skip).take_while(move |e| e.seq <= upto)
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, at: Instant) -> LoggedEvent {
        LoggedEvent { seq, kind: "TIMER_TICK", scope: Scope::All, at, frame: Bytes::new(), version: "1.0".into() }
    }

    #[test]
    fn range_is_exclusive_below_and_inclusive_above() {
        let t0 = Instant::now();
        let mut log = EventLog::new(EventLogConfig::default());
        for seq in 1..=10 {
            log.push(t0, event(seq, t0));
        }
        let seqs: Vec<u64> = log.range(3, 6).map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5, 6]);
        assert_eq!(log.range(10, 10).count(), 0);
        assert_eq!(log.range(0, 100).count(), 10);
        assert!(log.covers(0));
    }

    #[test]
    fn bounded_by_count_and_age() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut log = EventLog::new(EventLogConfig { retention: 10 * s, max_events: 5 });
        for seq in 1..=8 {
            log.push(t0, event(seq, t0));
        }
        assert_eq!(log.len(), 5);
        assert!(!log.covers(2), "event 3 was evicted");
        assert!(log.covers(3));
        assert_eq!(log.range(3, 8).map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
        log.push(t0 + 11 * s, event(9, t0 + 11 * s));
        assert_eq!(log.len(), 1, "older than the retention");
        assert!(log.covers(8) && !log.covers(7));
    }
}
