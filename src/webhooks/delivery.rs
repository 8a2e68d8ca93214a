//! What to send to the webhook receiver, and when: a sans-IO state machine with the clock passed
//! in. Events wait in one bounded FIFO; a batch takes up to `batch` of them, oldest first,
//! skipping the rooms that have a batch out (in flight or waiting to be retried), so a room's
//! events go in `seq` order while other rooms never wait for it. A batch goes once it is full or
//! its oldest event has lingered `linger`. A failed batch is retried whole, with capped
//! exponential backoff and jitter, until its oldest event is older than `max_age`; then it is
//! dropped and counted. A full queue drops its oldest event.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::{Event, StreamRef};

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Most events in one request.
    pub batch: usize,
    /// Longest an event waits for companions before its batch goes.
    pub linger: Duration,
    /// Most events waiting (the oldest is dropped beyond).
    pub queue: usize,
    /// Events older than this are dropped instead of retried again.
    pub max_age: Duration,
    /// First retry delay (doubled each attempt, jittered, capped by `max_backoff`).
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Most requests out at once.
    pub max_in_flight: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch: 100,
            linger: Duration::from_millis(50),
            queue: 100_000,
            max_age: Duration::from_secs(24 * 3600),
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            max_in_flight: 4,
        }
    }
}

/// Names a batch between [`Delivery::poll_batch`] and [`Delivery::finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId(u64);

/// A request to make: `{"events": [...]}`.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Its id.
    pub id: BatchId,
    /// The events, in order.
    pub events: Vec<Event>,
    /// 1 for the first try.
    pub attempt: u32,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: the batch is delivered.
    Delivered,
    /// Anything else (status, timeout, refused connection): retry.
    Failed,
}

struct Waiting {
    event: Event,
    since: Instant,
}

struct Out {
    batch: Batch,
    /// When the oldest event of the batch was queued (its age decides dropping).
    oldest: Instant,
    /// `None` while in flight; the time of the next try while waiting for it.
    retry_at: Option<Instant>,
}

/// Counters of what happened, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Events accepted.
    pub emitted: u64,
    /// Events acknowledged by the receiver.
    pub delivered: u64,
    /// Batches sent again.
    pub retried: u64,
    /// Events dropped (queue full or too old).
    pub dropped: u64,
}

/// An event that is done with: acknowledged by the receiver or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Its stream entry, to acknowledge in Redis (durable events only).
    pub stored: Option<StreamRef>,
    /// When it happened (Unix ms), for the delivery latency.
    pub time: u64,
    /// Acknowledged (`false`: dropped).
    pub delivered: bool,
}

/// The delivery state machine.
pub struct Delivery {
    config: DeliveryConfig,
    queue: VecDeque<Waiting>,
    out: Vec<Out>,
    /// Rooms with a batch out.
    busy: HashSet<String>,
    next_id: u64,
    /// xorshift state for the jitter.
    rng: u64,
    stats: DeliveryStats,
    settled: Vec<Settled>,
}

impl Delivery {
    /// A delivery with `config`; `seed` makes the jitter reproducible.
    pub fn new(config: DeliveryConfig, seed: u64) -> Self {
        Delivery {
            config,
            queue: VecDeque::new(),
            out: Vec::new(),
            busy: HashSet::new(),
            next_id: 0,
            rng: seed | 1,
            stats: DeliveryStats::default(),
            settled: Vec::new(),
        }
    }

    /// What happened so far.
    pub fn stats(&self) -> DeliveryStats {
        self.stats
    }

    /// Events waiting (not in a batch).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The events settled (delivered or dropped) since the last call.
    pub fn take_settled(&mut self) -> Vec<Settled> {
        std::mem::take(&mut self.settled)
    }

    fn settle(&mut self, event: Event, delivered: bool) {
        self.settled.push(Settled { stored: event.stored, time: event.time, delivered });
    }

    /// Queues `event`.
    pub fn push(&mut self, event: Event, now: Instant) {
        if self.queue.len() >= self.config.queue.max(1) {
            if let Some(oldest) = self.queue.pop_front() {
                self.settle(oldest.event, false);
            }
            self.stats.dropped += 1;
        }
        self.stats.emitted += 1;
        self.queue.push_back(Waiting { event, since: now });
    }

    /// The next request to make, if one is due.
    pub fn poll_batch(&mut self, now: Instant) -> Option<Batch> {
        self.drop_expired(now);
        // Retries first: their rooms wait for them.
        if let Some(out) = self.out.iter_mut().find(|o| o.retry_at.is_some_and(|at| at <= now)) {
            out.retry_at = None;
            out.batch.attempt += 1;
            self.stats.retried += 1;
            return Some(out.batch.clone());
        }
        if self.in_flight() >= self.config.max_in_flight.max(1) {
            return None;
        }
        let eligible = self.queue.iter().filter(|w| !self.busy.contains(&w.event.room_id));
        let (count, oldest) = eligible.fold((0usize, None::<Instant>), |(n, o), w| (n + 1, Some(o.map_or(w.since, |o| o.min(w.since)))));
        let oldest = oldest?;
        if count < self.config.batch.max(1) && now < oldest + self.config.linger {
            return None;
        }
        let mut events = Vec::new();
        let mut taken_rooms: HashSet<String> = HashSet::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for waiting in self.queue.drain(..) {
            let room = &waiting.event.room_id;
            if events.len() < self.config.batch.max(1) && !self.busy.contains(room) {
                taken_rooms.insert(room.clone());
                events.push(waiting.event);
            } else {
                kept.push_back(waiting);
            }
        }
        self.queue = kept;
        self.busy.extend(taken_rooms);
        self.next_id += 1;
        let batch = Batch { id: BatchId(self.next_id), events, attempt: 1 };
        self.out.push(Out { batch: batch.clone(), oldest, retry_at: None });
        Some(batch)
    }

    /// Batch `id` ended with `outcome`.
    pub fn finished(&mut self, id: BatchId, outcome: Outcome, now: Instant) {
        let Some(pos) = self.out.iter().position(|o| o.batch.id == id) else { return };
        match outcome {
            Outcome::Delivered => {
                let out = self.out.swap_remove(pos);
                self.stats.delivered += out.batch.events.len() as u64;
                self.release(&out.batch);
                for event in out.batch.events {
                    self.settle(event, true);
                }
            }
            Outcome::Failed => {
                let delay = self.backoff(self.out.get(pos).map_or(1, |o| o.batch.attempt));
                if let Some(out) = self.out.get_mut(pos) {
                    out.retry_at = Some(now + delay);
                }
                self.drop_expired(now);
            }
        }
    }

    /// When [`Delivery::poll_batch`] may have something new without a new event or result.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.out.iter().filter_map(|o| o.retry_at).min();
        let linger = self.queue.iter().filter(|w| !self.busy.contains(&w.event.room_id)).map(|w| w.since + self.config.linger).min();
        [retry, linger].into_iter().flatten().min()
    }

    fn in_flight(&self) -> usize {
        self.out.iter().filter(|o| o.retry_at.is_none()).count()
    }

    fn release(&mut self, batch: &Batch) {
        for event in &batch.events {
            self.busy.remove(&event.room_id);
        }
    }

    /// Drops waiting retries whose oldest event is past the age limit.
    fn drop_expired(&mut self, now: Instant) {
        let max_age = self.config.max_age;
        let mut expired = Vec::new();
        self.out.retain(|o| {
            let old = o.retry_at.is_some() && now.saturating_duration_since(o.oldest) >= max_age;
            if old {
                expired.push(o.batch.clone());
            }
            !old
        });
        for batch in expired {
            self.stats.dropped += batch.events.len() as u64;
            tracing::warn!(events = batch.events.len(), attempts = batch.attempt, "webhook events dropped: undelivered past --webhook-max-age");
            self.release(&batch);
            for event in batch.events {
                self.settle(event, false);
            }
        }
    }

    /// The delay before try `attempt + 1`: doubled per attempt, capped, with up to half of it
    /// taken off at random so that retries of many batches spread out.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.config.backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.config.max_backoff);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = (self.rng % 1000) as f64 / 2000.0;
        base.mul_f64(1.0 - fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(room: &str, seq: u64) -> Event {
        Event {
            id: format!("{room}:{seq}"),
            kind: "player.joined".into(),
            time: seq,
            room_id: room.into(),
            seq,
            instance_id: "i".into(),
            data: serde_json::Value::Null,
            stored: Some(StreamRef { stream: "s".into(), entry: format!("{room}-{seq}") }),
        }
    }

    fn ids(batch: &Batch) -> Vec<String> {
        batch.events.iter().map(|e| e.id.clone()).collect()
    }

    fn config() -> DeliveryConfig {
        DeliveryConfig {
            batch: 3,
            linger: Duration::from_millis(50),
            queue: 10,
            max_age: Duration::from_secs(60),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(8),
            max_in_flight: 2,
        }
    }

    #[test]
    fn a_batch_goes_when_full_or_after_the_linger() {
        let t0 = Instant::now();
        let mut d = Delivery::new(config(), 7);
        d.push(event("a", 1), t0);
        assert!(d.poll_batch(t0).is_none(), "waits for companions");
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_millis(50)));
        let batch = d.poll_batch(t0 + Duration::from_millis(50)).unwrap();
        assert_eq!(ids(&batch), ["a:1"]);
        for (room, seq) in [("b", 1), ("c", 1), ("d", 1)] {
            d.push(event(room, seq), t0);
        }
        assert_eq!(ids(&d.poll_batch(t0).unwrap()), ["b:1", "c:1", "d:1"], "full: goes at once");
        assert_eq!(d.stats().emitted, 4);
    }

    #[test]
    fn a_rooms_later_events_wait_for_its_earlier_ones_and_other_rooms_do_not() {
        let t0 = Instant::now();
        let mut d = Delivery::new(config(), 7);
        d.push(event("a", 1), t0);
        let first = d.poll_batch(t0 + Duration::from_millis(50)).unwrap();
        d.push(event("a", 2), t0);
        d.push(event("b", 1), t0);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(ids(&d.poll_batch(later).unwrap()), ["b:1"], "a:2 waits while a:1 is out");
        d.finished(first.id, Outcome::Failed, later);
        // Retried (the same events) after the backoff, still before a:2.
        assert!(d.poll_batch(later).is_none());
        let retry_at = d.poll_timeout().unwrap();
        assert!(retry_at >= later + Duration::from_millis(500) && retry_at <= later + Duration::from_secs(1));
        let retry = d.poll_batch(retry_at).unwrap();
        assert_eq!((retry.id, retry.attempt, ids(&retry)), (first.id, 2, vec!["a:1".to_string()]));
        assert!(d.take_settled().is_empty(), "nothing settles before the 2xx");
        d.finished(retry.id, Outcome::Delivered, retry_at);
        let settled = d.take_settled();
        assert_eq!(settled, [Settled { stored: Some(StreamRef { stream: "s".into(), entry: "a-1".into() }), time: 1, delivered: true }]);
        assert_eq!(ids(&d.poll_batch(retry_at + Duration::from_millis(50)).unwrap()), ["a:2"]);
        assert_eq!((d.stats().delivered, d.stats().retried), (1, 1));
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap_then_age_out() {
        let t0 = Instant::now();
        let mut d = Delivery::new(DeliveryConfig { max_in_flight: 1, ..config() }, 3);
        d.push(event("a", 1), t0);
        let mut now = t0 + Duration::from_millis(50);
        let mut batch = d.poll_batch(now).unwrap();
        let mut delays = Vec::new();
        while now < t0 + Duration::from_secs(59) {
            d.finished(batch.id, Outcome::Failed, now);
            let at = d.poll_timeout().unwrap();
            delays.push(at - now);
            now = at;
            batch = match d.poll_batch(now) {
                Some(b) => b,
                None => break,
            };
        }
        assert!(delays[0] <= Duration::from_secs(1) && delays[1] > delays[0].mul_f64(0.9) && delays.iter().all(|d| *d <= Duration::from_secs(8)), "{delays:?}");
        // Past the age limit the batch is dropped, and the room's next events flow.
        d.finished(batch.id, Outcome::Failed, now.max(t0 + Duration::from_secs(61)));
        assert_eq!(d.stats().dropped, 1);
        assert!(matches!(&d.take_settled()[..], [Settled { delivered: false, .. }]), "a dropped event is settled too (its stream entry goes)");
        let later = now.max(t0 + Duration::from_secs(61));
        d.push(event("a", 2), later);
        assert_eq!(ids(&d.poll_batch(later + Duration::from_millis(50)).unwrap()), ["a:2"]);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_in_flight_is_bounded() {
        let t0 = Instant::now();
        let mut d = Delivery::new(DeliveryConfig { queue: 4, batch: 1, ..config() }, 1);
        for seq in 1..=6 {
            d.push(event(&format!("r{seq}"), 1), t0);
        }
        assert_eq!((d.queued(), d.stats().dropped), (4, 2));
        assert_eq!(d.take_settled().iter().map(|s| s.delivered).collect::<Vec<_>>(), [false, false]);
        let first = d.poll_batch(t0).unwrap();
        assert_eq!(ids(&first), ["r3:1"]);
        assert!(d.poll_batch(t0).is_some());
        assert!(d.poll_batch(t0).is_none(), "two in flight at most");
        d.finished(first.id, Outcome::Delivered, t0);
        assert!(d.poll_batch(t0).is_some());
    }
}
