//! What a run measures: HDR histograms per event type, counters, and a per-second timeline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Percentiles every report prints.
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 95.0, 99.0, 99.9];

fn histogram() -> Histogram<u64> {
    // Microseconds up to one hour, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// One second of the measured window.
#[derive(Debug, Clone, Copy)]
pub struct Second {
    /// Seconds since measuring started.
    pub at: f64,
    /// Messages delivered in that second.
    pub delivered: u64,
    /// Latency percentiles of that second, in ms.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Everything measured; updated by every client task of the (single-threaded) load generator.
pub struct Stats {
    measuring_since: Option<Instant>,
    /// The measured window has closed.
    stopped: bool,
    /// End-to-end latency of every measured delivery, µs.
    pub latency: Histogram<u64>,
    /// The same, per event type.
    pub by_type: BTreeMap<String, Histogram<u64>>,
    /// TCP + WebSocket handshake time, µs (whole run).
    pub connect: Histogram<u64>,
    /// |interval between consecutive TIMER_TICKs − 1 s| at each client, µs.
    pub tick_jitter: Histogram<u64>,
    /// How late the load generator's own 10 ms timer fires, µs: the delay any ready client task
    /// waits for its thread, which would otherwise be charged to the server.
    pub scheduling_lag: Histogram<u64>,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub resent: u64,
    pub acks_sent: u64,
    /// Bytes the clients received from the server's sockets (frames as sent: compressed or not).
    pub wire_bytes: u64,
    pub connections: u64,
    /// Errors by code (`ERROR` codes, plus `connection` and `http` for transport failures).
    pub errors: BTreeMap<String, u64>,
    /// Swipes that lost the race against the round's end (expected; not errors).
    pub late_swipes: u64,
    pub timeline: Vec<Second>,
    /// What reconnecting clients got back.
    pub reconnects: Reconnects,
    /// The soak's churn and resource samples.
    pub soak: Soak,
    interval: Histogram<u64>,
    interval_delivered: u64,
}

/// The server's resources and the errors seen, at one moment of a soak.
#[derive(Debug, Clone, Copy)]
pub struct ResourceSample {
    /// Seconds since measuring started.
    pub at: f64,
    pub rss_kib: Option<u64>,
    pub connections: Option<f64>,
    pub rooms: Option<f64>,
    /// Errors the clients saw so far.
    pub errors: u64,
}

/// What a soak did and saw.
#[derive(Debug, Default)]
pub struct Soak {
    pub samples: Vec<ResourceSample>,
    /// Rooms closed by their host at the end of their lifetime (and replaced).
    pub rooms_finished: u64,
    pub drops: u64,
    pub leaves: u64,
    pub joins: u64,
}

impl Soak {
    /// Least-squares growth of the server's resident memory, KiB per minute, over the samples.
    pub fn rss_slope_kib_per_min(&self) -> Option<f64> {
        let points: Vec<(f64, f64)> = self.samples.iter().filter_map(|s| Some((s.at / 60.0, s.rss_kib? as f64))).collect();
        let n = points.len() as f64;
        if points.len() < 3 {
            return None;
        }
        let (mean_t, mean_m) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
        let var: f64 = points.iter().map(|p| (p.0 - mean_t).powi(2)).sum();
        let cov: f64 = points.iter().map(|p| (p.0 - mean_t) * (p.1 - mean_m)).sum();
        (var > 0.0).then(|| cov / var)
    }
}

/// Outcomes of RECONNECT in a storm.
#[derive(Debug)]
pub struct Reconnects {
    /// From dropping the connection to the server's answer to RECONNECT, µs.
    pub latency: Histogram<u64>,
    pub backfill: u64,
    pub snapshot: u64,
    pub expired: u64,
    /// Events received in `missedEvents`.
    pub backfilled_events: u64,
    /// Sequence ids missing, relative to the host's view, in streams repaired by a backfill.
    pub gaps_after_backfill: u64,
}

impl Default for Reconnects {
    fn default() -> Self {
        Reconnects { latency: histogram(), backfill: 0, snapshot: 0, expired: 0, backfilled_events: 0, gaps_after_backfill: 0 }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            measuring_since: None,
            stopped: false,
            latency: histogram(),
            by_type: BTreeMap::new(),
            connect: histogram(),
            tick_jitter: histogram(),
            scheduling_lag: histogram(),
            sent: 0,
            delivered: 0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            resent: 0,
            acks_sent: 0,
            wire_bytes: 0,
            connections: 0,
            errors: BTreeMap::new(),
            late_swipes: 0,
            timeline: Vec::new(),
            reconnects: Reconnects::default(),
            soak: Soak::default(),
            interval: histogram(),
            interval_delivered: 0,
        }
    }
}

impl Stats {
    /// Ends the warm-up: clears what was measured so far (connect times and the soak's
    /// counters stay).
    pub fn start_measuring(&mut self, now: Instant) {
        let connect = std::mem::replace(&mut self.connect, histogram());
        let soak = Soak { samples: Vec::new(), ..std::mem::take(&mut self.soak) };
        let connections = self.connections;
        *self = Stats { connect, connections, soak, measuring_since: Some(now), ..Stats::default() };
    }

    /// Ends the measured window: what arrives later (the clients being torn down) is not
    /// counted.
    pub fn stop_measuring(&mut self) {
        self.stopped = true;
    }

    pub fn is_measuring(&self) -> bool {
        self.measuring_since.is_some() && !self.stopped
    }

    /// Whether the measured window has opened (it may have closed since).
    pub fn has_started(&self) -> bool {
        self.measuring_since.is_some()
    }

    /// Seconds measured so far.
    pub fn measured(&self, now: Instant) -> Duration {
        self.measuring_since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// A message of `kind` arrived `latency_us` after its cause.
    pub fn delivered(&mut self, kind: &str, latency_us: u64) {
        if !self.is_measuring() {
            return;
        }
        let us = latency_us.max(1);
        self.delivered += 1;
        self.interval_delivered += 1;
        let _ = self.latency.record(us);
        let _ = self.interval.record(us);
        let _ = self.by_type.entry(kind.to_string()).or_insert_with(histogram).record(us);
    }

    pub fn received_bytes(&mut self, n: usize) {
        if self.is_measuring() {
            self.wire_bytes += n as u64;
        }
    }

    pub fn error(&mut self, code: &str) {
        *self.errors.entry(code.to_string()).or_default() += 1;
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn record_connect(&mut self, us: u64) {
        let _ = self.connect.record(us.max(1));
        self.connections += 1;
    }

    pub fn record_tick_jitter(&mut self, us: u64) {
        if self.is_measuring() {
            let _ = self.tick_jitter.record(us.max(1));
        }
    }

    pub fn record_scheduling_lag(&mut self, us: u64) {
        if self.is_measuring() {
            let _ = self.scheduling_lag.record(us.max(1));
        }
    }

    /// Adds another thread's measurements to these. Timelines are joined second by second:
    /// deliveries add up, and each second's percentiles are the worst thread's.
    pub fn absorb(&mut self, other: Stats) {
        for (mine, theirs) in [
            (&mut self.latency, &other.latency),
            (&mut self.connect, &other.connect),
            (&mut self.tick_jitter, &other.tick_jitter),
            (&mut self.scheduling_lag, &other.scheduling_lag),
            (&mut self.reconnects.latency, &other.reconnects.latency),
        ] {
            let _ = mine.add(theirs);
        }
        for (kind, h) in &other.by_type {
            let _ = self.by_type.entry(kind.clone()).or_insert_with(histogram).add(h);
        }
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.resent += other.resent;
        self.acks_sent += other.acks_sent;
        self.wire_bytes += other.wire_bytes;
        self.connections += other.connections;
        self.late_swipes += other.late_swipes;
        let r = &other.reconnects;
        self.reconnects.backfill += r.backfill;
        self.reconnects.snapshot += r.snapshot;
        self.reconnects.expired += r.expired;
        self.reconnects.backfilled_events += r.backfilled_events;
        self.reconnects.gaps_after_backfill += r.gaps_after_backfill;
        for (i, theirs) in other.timeline.into_iter().enumerate() {
            match self.timeline.get_mut(i) {
                Some(mine) => {
                    mine.delivered += theirs.delivered;
                    mine.p50_ms = mine.p50_ms.max(theirs.p50_ms);
                    mine.p95_ms = mine.p95_ms.max(theirs.p95_ms);
                    mine.p99_ms = mine.p99_ms.max(theirs.p99_ms);
                }
                None => self.timeline.push(theirs),
            }
        }
        let k = other.soak;
        self.soak.rooms_finished += k.rooms_finished;
        self.soak.drops += k.drops;
        self.soak.leaves += k.leaves;
        self.soak.joins += k.joins;
        if self.soak.samples.is_empty() {
            self.soak.samples = k.samples;
        }
    }

    /// Closes the current one-second interval of the timeline.
    pub fn close_second(&mut self, now: Instant) {
        if !self.is_measuring() {
            return;
        }
        let ms = |h: &Histogram<u64>, p| h.value_at_percentile(p) as f64 / 1000.0;
        let second = Second {
            at: self.measured(now).as_secs_f64(),
            delivered: self.interval_delivered,
            p50_ms: ms(&self.interval, 50.0),
            p95_ms: ms(&self.interval, 95.0),
            p99_ms: ms(&self.interval, 99.0),
        };
        self.timeline.push(second);
        self.interval.reset();
        self.interval_delivered = 0;
    }

    /// The last closed second (for the progress line).
    pub fn last_second(&self) -> Option<Second> {
        self.timeline.last().copied()
    }
}

/// Detects loss, duplication and reordering in one client's stream of sequence ids.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    seen: std::collections::BTreeSet<u64>,
}

/// What one sequence id was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    InOrder,
    Duplicate,
    OutOfOrder,
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64) -> SeqVerdict {
        let max = self.seen.last().copied();
        if !self.seen.insert(seq) {
            SeqVerdict::Duplicate
        } else if max.is_some_and(|m| seq < m) {
            SeqVerdict::OutOfOrder
        } else {
            SeqVerdict::InOrder
        }
    }

    /// Adds ids delivered out of band (a backfill): no order verdict.
    pub fn merge(&mut self, seqs: impl IntoIterator<Item = u64>) {
        self.seen.extend(seqs);
    }

    pub fn seen(&self) -> &std::collections::BTreeSet<u64> {
        &self.seen
    }

    /// Ids in `first..=last` never seen.
    pub fn gaps(&self) -> u64 {
        match (self.seen.first(), self.seen.last()) {
            (Some(first), Some(last)) => last - first + 1 - self.seen.len() as u64,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_slope_is_least_squares_per_minute() {
        let sample = |at: f64, rss: u64| ResourceSample { at, rss_kib: Some(rss), connections: None, rooms: None, errors: 0 };
        // 1,000 KiB per minute with noise around it; flat memory gives 0.
        let soak = Soak { samples: vec![sample(0.0, 10_000), sample(60.0, 11_100), sample(120.0, 11_900), sample(180.0, 13_000)], ..Soak::default() };
        let slope = soak.rss_slope_kib_per_min().unwrap();
        assert!((slope - 980.0).abs() < 1.0, "{slope}");
        let flat = Soak { samples: (0..5).map(|i| sample(f64::from(i) * 10.0, 5_000)).collect(), ..Soak::default() };
        assert_eq!(flat.rss_slope_kib_per_min(), Some(0.0));
        assert_eq!(Soak::default().rss_slope_kib_per_min(), None);
    }

    #[test]
    fn sequence_verdicts() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(1), SeqVerdict::InOrder);
        assert_eq!(t.observe(3), SeqVerdict::InOrder);
        assert_eq!(t.observe(2), SeqVerdict::OutOfOrder);
        assert_eq!(t.observe(3), SeqVerdict::Duplicate);
        assert_eq!(t.observe(6), SeqVerdict::InOrder);
        assert_eq!(t.gaps(), 2);
    }

    #[test]
    fn warmup_is_not_counted() {
        let mut s = Stats::default();
        s.delivered("X", 100);
        assert_eq!(s.delivered, 0);
        s.start_measuring(Instant::now());
        s.delivered("X", 100);
        assert_eq!((s.delivered, s.latency.len()), (1, 1));
    }
}
