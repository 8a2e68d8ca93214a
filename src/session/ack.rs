//! Delivery acknowledgements: resend unacknowledged critical events, then give up politely.
//!
//! Seed 002: no ACK within 2 s → resend, at most 2 retries; after 3 unanswered sends the client
//! is marked degraded and the game goes on without waiting for it.

use std::time::{Duration, Instant};

use bytes::Bytes;

/// Retry policy.
#[derive(Debug, Clone, Copy)]
pub struct AckPolicy {
    /// Wait this long for an ACK before resending.
    pub timeout: Duration,
    /// Resends after the first send.
    pub max_retries: u32,
}

impl Default for AckPolicy {
    fn default() -> Self {
        AckPolicy { timeout: Duration::from_secs(2), max_retries: 2 }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    ack_id: String,
    frame: Bytes,
    sends: u32,
    deadline: Instant,
}

/// What the tracker wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckAction {
    /// Send this frame again.
    Resend(Bytes),
    /// The client let `ack_id` go unacknowledged through every send: it is now degraded and
    /// the game goes on without it.
    GaveUp {
        /// The event given up on.
        ack_id: String,
        /// How many times it was sent.
        attempts: u32,
    },
}

/// Unacknowledged events of one connection.
#[derive(Debug, Clone, Default)]
pub struct AckTracker {
    policy: AckPolicy,
    pending: Vec<Pending>,
    degraded: bool,
}

/// Most events awaiting an ACK at once; older ones are dropped first (state is bounded).
const MAX_PENDING: usize = 16;

impl AckTracker {
    /// A tracker with `policy`.
    pub fn new(policy: AckPolicy) -> Self {
        AckTracker { policy, pending: Vec::new(), degraded: false }
    }

    /// `frame`, carrying `ack_id`, was just sent at `now`.
    pub fn track(&mut self, now: Instant, ack_id: &str, frame: Bytes) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.remove(0);
        }
        self.pending.push(Pending { ack_id: ack_id.to_string(), frame, sends: 1, deadline: now + self.policy.timeout });
    }

    /// The client acknowledged `ack_id`; false if nothing was waiting for it.
    pub fn on_ack(&mut self, ack_id: &str) -> bool {
        let before = self.pending.len();
        self.pending.retain(|p| p.ack_id != ack_id);
        let found = self.pending.len() != before;
        self.release_if_idle();
        found
    }

    /// With nothing awaiting an ACK the tracker holds no buffer: ACKed events are a few per
    /// round, and thousands of players would otherwise each keep room for several.
    fn release_if_idle(&mut self) {
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }

    /// Whether the client failed to acknowledge an event three times.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// When [`AckTracker::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Resends what is overdue at `now`; gives up on events sent `1 + max_retries` times.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<AckAction> {
        let mut actions = Vec::new();
        let policy = self.policy;
        self.pending.retain_mut(|p| {
            if p.deadline > now {
                return true;
            }
            if p.sends > policy.max_retries {
                actions.push(AckAction::GaveUp { ack_id: std::mem::take(&mut p.ack_id), attempts: p.sends });
                return false;
            }
            p.sends += 1;
            p.deadline = now + policy.timeout;
            actions.push(AckAction::Resend(p.frame.clone()));
            true
        });
        if actions.iter().any(|a| matches!(a, AckAction::GaveUp { .. })) {
            self.degraded = true;
        }
        self.release_if_idle();
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_tracker_holds_no_buffer() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(AckPolicy::default());
        acks.track(t0, "ack_1", Bytes::from_static(b"ROUND_STARTED"));
        acks.track(t0, "ack_2", Bytes::from_static(b"ROUND_ENDED"));
        assert!(acks.on_ack("ack_1"));
        assert!(acks.pending.capacity() > 0, "one still waits");
        assert!(acks.on_ack("ack_2"));
        assert_eq!(acks.pending.capacity(), 0);
        acks.track(t0, "ack_3", Bytes::from_static(b"GAME_ENDED"));
        let gave_up = (1..10).flat_map(|s| acks.handle_timeout(t0 + Duration::from_secs(10 * s))).any(|a| matches!(a, AckAction::GaveUp { .. }));
        assert!(gave_up);
        assert_eq!(acks.pending.capacity(), 0, "given up on, nothing waits");
    }

    #[test]
    fn two_retries_two_seconds_apart_then_degraded() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut acks = AckTracker::new(AckPolicy::default());
        let frame = Bytes::from_static(b"ROUND_STARTED");
        acks.track(t0, "ack_7", frame.clone());
        assert_eq!(acks.poll_timeout(), Some(t0 + 2 * s));
        assert!(acks.handle_timeout(t0 + s).is_empty());
        assert_eq!(acks.handle_timeout(t0 + 2 * s), vec![AckAction::Resend(frame.clone())]);
        assert_eq!(acks.handle_timeout(t0 + 4 * s), vec![AckAction::Resend(frame)]);
        assert!(!acks.is_degraded());
        assert_eq!(acks.handle_timeout(t0 + 6 * s), vec![AckAction::GaveUp { ack_id: "ack_7".into(), attempts: 3 }]);
        assert!(acks.is_degraded());
        assert_eq!(acks.poll_timeout(), None);
    }

    #[test]
    fn ack_stops_retries() {
        let t0 = Instant::now();
        let mut acks = AckTracker::new(AckPolicy::default());
        acks.track(t0, "a", Bytes::from_static(b"x"));
        assert!(acks.on_ack("a"));
        assert!(!acks.on_ack("a"));
        assert!(acks.handle_timeout(t0 + Duration::from_secs(10)).is_empty());
    }
}
