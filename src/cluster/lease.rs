//! The leases of one shard's game rooms: a room is authoritative here only while this instance
//! holds `{prefix}lease:{room}` in Redis (`SET … NX PX ttl`, renewed).
//!
//! Sans-IO: the shard feeds in when a lease was taken and what a renewal answered, with the
//! time; this says which rooms to renew and which to fence. A lease is *valid here* until `ttl`
//! after the moment its last confirmed request was sent (not answered), so this instance always
//! gives a room up before Redis can let another instance take it. A room is fenced (its members
//! told to reconnect, its state dropped without being written) as soon as either happens:
//! - a renewal answers that another instance holds the lease, or
//! - the lease runs out here without a confirmed renewal (Redis unreachable for a whole `ttl`).
//!
//! All rooms of the shard are renewed together, one batch every `ttl / 3`, so a lease survives
//! two lost renewals.

use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::rooms::RoomId;

/// What Redis answered for one room of a renewal batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// Still ours (renewed, or taken again after Redis lost the key).
    Held,
    /// Another instance holds it.
    Lost,
}

/// The shard's leases.
#[derive(Debug)]
pub struct Leases {
    ttl: Duration,
    /// Each held room's end of validity here.
    valid_until: AHashMap<RoomId, Instant>,
    /// The earliest of `valid_until` (or earlier: a stale value only costs an early check).
    earliest: Option<Instant>,
    next_batch: Instant,
    /// When the batch awaiting its answer was sent.
    in_flight: Option<Instant>,
}

/// How soon a failed renewal batch is retried.
fn retry_after(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(50))
}

impl Leases {
    /// No leases yet; `ttl` as given to Redis.
    pub fn new(now: Instant, ttl: Duration) -> Self {
        Leases { ttl, valid_until: AHashMap::new(), earliest: None, next_batch: now + ttl / 3, in_flight: None }
    }

    /// Rooms held.
    pub fn len(&self) -> usize {
        self.valid_until.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.valid_until.is_empty()
    }

    /// The lease of `room` was taken (or confirmed) by a request sent at `sent_at`.
    pub fn acquired(&mut self, room: RoomId, sent_at: Instant) {
        let until = sent_at + self.ttl;
        self.earliest = Some(self.earliest.map_or(until, |e| e.min(until)));
        self.valid_until.insert(room, until);
    }

    /// `room` closed here; its lease is released with its key.
    pub fn release(&mut self, room: &RoomId) {
        self.valid_until.remove(room);
    }

    /// Whether `room`'s lease is valid here at `now`.
    pub fn is_valid(&self, room: &RoomId, now: Instant) -> bool {
        self.valid_until.get(room).is_some_and(|until| now < *until)
    }

    /// The rooms to renew now, if a batch is due (it is then in flight until answered).
    pub fn poll_renewal(&mut self, now: Instant) -> Option<Vec<RoomId>> {
        if self.in_flight.is_some() || now < self.next_batch {
            return None;
        }
        self.next_batch = now + self.ttl / 3;
        if self.valid_until.is_empty() {
            return None;
        }
        self.in_flight = Some(now);
        Some(self.valid_until.keys().cloned().collect())
    }

    /// The batch sent at `sent_at` was answered (`None`: Redis could not answer). Returns the
    /// rooms to fence because another instance holds them.
    pub fn on_renewed(&mut self, now: Instant, sent_at: Instant, answers: Option<Vec<(RoomId, Renewal)>>) -> Vec<RoomId> {
        if self.in_flight == Some(sent_at) {
            self.in_flight = None;
        }
        let Some(answers) = answers else {
            self.next_batch = self.next_batch.min(now + retry_after(self.ttl));
            return Vec::new();
        };
        let until = sent_at + self.ttl;
        let mut lost = Vec::new();
        for (room, answer) in answers {
            let Some(valid) = self.valid_until.get_mut(&room) else { continue };
            match answer {
                // A later acquisition of the same room keeps its later validity.
                Renewal::Held => *valid = (*valid).max(until),
                Renewal::Lost => {
                    self.valid_until.remove(&room);
                    lost.push(room);
                }
            }
        }
        self.earliest = self.valid_until.values().min().copied();
        lost
    }

    /// Rooms whose lease ran out here at `now` without a confirmed renewal: fence them.
    pub fn expired(&mut self, now: Instant) -> Vec<RoomId> {
        if self.earliest.is_none_or(|e| now < e) {
            return Vec::new();
        }
        let gone: Vec<RoomId> = self.valid_until.iter().filter(|(_, until)| now >= **until).map(|(room, _)| room.clone()).collect();
        for room in &gone {
            self.valid_until.remove(room);
        }
        self.earliest = self.valid_until.values().min().copied();
        gone
    }

    /// When [`Leases::poll_renewal`] or [`Leases::expired`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.valid_until.is_empty() {
            return None;
        }
        let renew = self.in_flight.is_none().then_some(self.next_batch);
        [renew, self.earliest].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    fn room(id: &str) -> RoomId {
        RoomId::parse(id).unwrap()
    }

    #[test]
    fn renewed_leases_stay_valid_and_lost_ones_are_fenced() {
        let t0 = Instant::now();
        let mut leases = Leases::new(t0, TTL);
        assert_eq!(leases.poll_timeout(), None, "nothing to renew");
        leases.acquired(room("a"), t0);
        leases.acquired(room("b"), t0);
        let due = leases.poll_timeout().unwrap();
        assert_eq!(due, t0 + TTL / 3);
        assert_eq!(leases.poll_renewal(due - Duration::from_millis(1)), None);
        let mut batch = leases.poll_renewal(due).unwrap();
        batch.sort();
        assert_eq!(batch, vec![room("a"), room("b")]);
        assert_eq!(leases.poll_renewal(due), None, "one batch in flight at a time");
        let answered = due + Duration::from_millis(3);
        let lost = leases.on_renewed(answered, due, Some(vec![(room("a"), Renewal::Held), (room("b"), Renewal::Lost)]));
        assert_eq!(lost, vec![room("b")]);
        assert!(!leases.is_valid(&room("b"), answered), "a lost lease stops the room at once");
        // Valid for ttl after the renewal was *sent*, not answered.
        assert!(leases.is_valid(&room("a"), due + TTL - Duration::from_millis(1)));
        assert!(!leases.is_valid(&room("a"), due + TTL));
    }

    #[test]
    fn without_answers_the_lease_runs_out_here_before_it_does_in_redis() {
        let t0 = Instant::now();
        let mut leases = Leases::new(t0, TTL);
        leases.acquired(room("a"), t0);
        let mut now = t0;
        // Every batch fails (Redis unreachable); retries come sooner than the regular cadence.
        let mut batches = 0;
        loop {
            let at = leases.poll_timeout().unwrap();
            assert!(at > now || batches == 0, "time moves forward");
            now = at;
            if let Some(batch) = leases.poll_renewal(now) {
                batches += 1;
                assert_eq!(batch, vec![room("a")]);
                assert!(leases.on_renewed(now, now, None).is_empty());
            }
            let gone = leases.expired(now);
            if !gone.is_empty() {
                assert_eq!(gone, vec![room("a")]);
                break;
            }
        }
        assert_eq!(now, t0 + TTL, "fenced exactly when the lease taken at t0 ends");
        assert!(batches >= 3, "{batches} renewal attempts before giving up");
        assert!(leases.is_empty());
        assert_eq!(leases.poll_timeout(), None);
    }

    #[test]
    fn a_late_answer_extends_from_its_send_time_and_a_released_room_is_forgotten() {
        let t0 = Instant::now();
        let mut leases = Leases::new(t0, TTL);
        leases.acquired(room("a"), t0);
        let sent = t0 + TTL / 3;
        assert!(leases.poll_renewal(sent).is_some());
        // A room taken while the batch was out keeps its own, later validity.
        leases.acquired(room("c"), sent + Duration::from_secs(1));
        let answered = sent + Duration::from_secs(2);
        leases.on_renewed(answered, sent, Some(vec![(room("a"), Renewal::Held), (room("c"), Renewal::Held)]));
        assert!(leases.is_valid(&room("a"), sent + TTL - Duration::from_millis(1)));
        assert!(leases.is_valid(&room("c"), sent + Duration::from_secs(1) + TTL - Duration::from_millis(1)));
        leases.release(&room("a"));
        assert!(leases.expired(sent + TTL).is_empty(), "released rooms are not fenced");
        assert_eq!(leases.len(), 1);
    }
}
