//! Keep-alive: ping a quiet peer, give up on a silent one.

use std::time::{Duration, Instant};

/// What the heartbeat wants done at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Send a ping now.
    SendPing,
    /// Nothing was heard for the pong timeout: close the connection.
    TimedOut,
}

/// How often a quiet peer is pinged, and how long a silent one has to answer: one per server,
/// passed in, as every connection has the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatConfig {
    /// A quiet peer is pinged this often.
    pub ping_interval: Duration,
    /// A peer heard nothing from this long is given up.
    pub pong_timeout: Duration,
}

/// Heartbeat of one connection.
///
/// Call [`Heartbeat::on_activity`] whenever anything arrives from the peer and
/// [`Heartbeat::handle_timeout`] whenever the clock reaches [`Heartbeat::poll_timeout`] (calling it
/// earlier is harmless).
#[derive(Debug, Clone)]
pub struct Heartbeat {
    last_heard: Instant,
    next_ping: Instant,
}

impl Heartbeat {
    /// A heartbeat for a connection opened at `now`, first pinged `first_ping` later and every
    /// ping interval after that. The caller spreads `first_ping` over the interval (a random
    /// phase per connection): connections opened together would otherwise be pinged together
    /// forever, and a shard answering thousands of pings and pongs at once holds every other
    /// frame up for milliseconds.
    pub fn new(now: Instant, first_ping: Duration) -> Self {
        Heartbeat { last_heard: now, next_ping: now + first_ping }
    }

    /// The peer sent something at `now`.
    pub fn on_activity(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// When [`Heartbeat::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self, config: HeartbeatConfig) -> Instant {
        self.next_ping.min(self.last_heard + config.pong_timeout)
    }

    /// Advances to `now`.
    pub fn handle_timeout(&mut self, now: Instant, config: HeartbeatConfig) -> Option<HeartbeatAction> {
        if now >= self.last_heard + config.pong_timeout {
            return Some(HeartbeatAction::TimedOut);
        }
        if now >= self.next_ping {
            self.next_ping = now + config.ping_interval;
            return Some(HeartbeatAction::SendPing);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: HeartbeatConfig = HeartbeatConfig { ping_interval: Duration::from_secs(10), pong_timeout: Duration::from_secs(20) };

    #[test]
    fn pings_on_schedule_and_times_out_a_silent_peer() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut hb = Heartbeat::new(t0, 10 * s);
        assert_eq!(hb.poll_timeout(C), t0 + 10 * s);
        assert_eq!(hb.handle_timeout(t0 + 5 * s, C), None);
        assert_eq!(hb.handle_timeout(t0 + 10 * s, C), Some(HeartbeatAction::SendPing));
        assert_eq!(hb.handle_timeout(t0 + 10 * s, C), None);
        assert_eq!(hb.poll_timeout(C), t0 + 20 * s);
        assert_eq!(hb.handle_timeout(t0 + 20 * s, C), Some(HeartbeatAction::TimedOut));
    }

    #[test]
    fn the_first_ping_keeps_its_phase() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut hb = Heartbeat::new(t0, 7 * s);
        assert_eq!(hb.poll_timeout(C), t0 + 7 * s);
        assert_eq!(hb.handle_timeout(t0 + 7 * s, C), Some(HeartbeatAction::SendPing));
        hb.on_activity(t0 + 7 * s);
        assert_eq!(hb.poll_timeout(C), t0 + 17 * s);
    }

    #[test]
    fn activity_keeps_it_alive() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut hb = Heartbeat::new(t0, 10 * s);
        let mut now = t0;
        for _ in 0..10 {
            now += 9 * s;
            hb.on_activity(now);
            assert_ne!(hb.handle_timeout(now, C), Some(HeartbeatAction::TimedOut));
        }
        assert_eq!(hb.handle_timeout(now + 20 * s, C), Some(HeartbeatAction::TimedOut));
    }
}
