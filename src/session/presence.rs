//! Who is connected, and what happens while someone is not (seed 002 §3.3, §3.5).
//!
//! Players and spectators: `Connected → Grace (silent) → Absent → Warned → Removed`. The host:
//! `Connected → Away → (pause due) → (promotion due)`. The clock is passed in and every
//! deadline is data: [`Presence::poll_timeout`] says when [`Presence::handle_timeout`] next has
//! work, and the consequences come out of [`Presence::poll_event`] for the room to act on.
//! The server's own record of when a connection dropped is kept here; a client's claim of when
//! it disconnected is never used.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The disconnect timeline's durations, measured from the moment the last connection dropped.
#[derive(Debug, Clone, Copy)]
pub struct PresenceConfig {
    /// Silent grace: nobody is told, the player keeps every duty.
    pub grace: Duration,
    /// The room is told the player lost its connection.
    pub warning: Duration,
    /// The player is removed from the room.
    pub remove: Duration,
    /// A host away this long during a round pauses it.
    pub host_pause_after: Duration,
    /// A host away this long is replaced by a connected player.
    pub host_promote_after: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        let s = Duration::from_secs(1);
        PresenceConfig { grace: 5 * s, warning: 15 * s, remove: 60 * s, host_pause_after: 10 * s, host_promote_after: 60 * s }
    }
}

/// A step of the timeline the room must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// The grace ran out: the player no longer counts as present (never chosen to explain).
    Absent(String),
    /// Tell the room this player lost its connection.
    Warn(String),
    /// Remove this player from the room.
    Remove(String),
    /// The host has been away for the pause delay.
    HostPause,
    /// The host has been away for the promotion delay: promote a connected player (again on
    /// every later connect until one is promoted or the host returns).
    HostPromote,
}

/// How far along the timeline an away actor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Grace,
    Absent,
    Warned,
}

#[derive(Debug, Clone)]
struct Record {
    actor: String,
    /// `None` while connected; else when the last connection dropped and how far along it is.
    away: Option<(Instant, Stage)>,
}

/// The host's state while away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostAway {
    Present,
    Away { since: Instant, paused: bool },
    PromotionDue,
}

/// What a new connection means for its actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Time since the previous connection dropped (zero if it was still open and is being
    /// replaced); `None` for the actor's first connection.
    pub gap: Option<Duration>,
    /// The actor had passed the silent grace (the room may have acted on its absence).
    pub was_absent: bool,
}

/// The presence of every actor of one room.
#[derive(Debug)]
pub struct Presence {
    config: PresenceConfig,
    host: String,
    host_away: HostAway,
    records: Vec<Record>,
    events: VecDeque<PresenceEvent>,
}

impl Presence {
    /// Nobody connected yet; `host` is the room's host.
    pub fn new(config: PresenceConfig, host: &str) -> Self {
        Presence { config, host: host.to_string(), host_away: HostAway::Present, records: Vec::new(), events: VecDeque::new() }
    }

    /// `actor` opened a connection at `now`.
    pub fn on_connect(&mut self, now: Instant, actor: &str) -> Arrival {
        if actor == self.host {
            self.host_away = HostAway::Present;
        }
        let Some(record) = self.records.iter_mut().find(|r| r.actor == actor) else {
            self.records.push(Record { actor: actor.to_string(), away: None });
            return Arrival { gap: None, was_absent: false };
        };
        match record.away.take() {
            None => Arrival { gap: Some(Duration::ZERO), was_absent: false },
            Some((since, stage)) => Arrival { gap: Some(now.saturating_duration_since(since)), was_absent: stage >= Stage::Absent },
        }
    }

    /// `actor`'s last connection dropped at `now`.
    pub fn on_drop(&mut self, now: Instant, actor: &str) {
        if actor == self.host {
            self.host_away = HostAway::Away { since: now, paused: false };
        }
        match self.records.iter_mut().find(|r| r.actor == actor) {
            Some(record) => record.away = Some((now, Stage::Grace)),
            None => self.records.push(Record { actor: actor.to_string(), away: Some((now, Stage::Grace)) }),
        }
    }

    /// `actor` left or was removed: forget it.
    pub fn forget(&mut self, actor: &str) {
        self.records.retain(|r| r.actor != actor);
    }

    /// `new_host` was promoted at `now`. The previous host, still away, continues as a player
    /// whose timeline starts now (so it is not removed at the very moment it is demoted).
    pub fn set_host(&mut self, now: Instant, new_host: &str) {
        let old = std::mem::replace(&mut self.host, new_host.to_string());
        self.host_away = HostAway::Present;
        if let Some(record) = self.records.iter_mut().find(|r| r.actor == old) {
            if record.away.is_some() {
                record.away = Some((now, Stage::Grace));
            }
        }
    }

    /// Whether `actor` has an open connection.
    pub fn is_connected(&self, actor: &str) -> bool {
        self.records.iter().any(|r| r.actor == actor && r.away.is_none())
    }

    /// Whether a host promotion is waiting for a connected player.
    pub fn is_promotion_due(&self) -> bool {
        self.host_away == HostAway::PromotionDue
    }

    /// When [`Presence::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let players = self.records.iter().filter(|r| r.actor != self.host).filter_map(|r| {
            let (since, stage) = r.away?;
            Some(since + stage_end(&self.config, stage))
        });
        let host = match self.host_away {
            HostAway::Away { since, paused: false } => Some(since + self.config.host_pause_after.min(self.config.host_promote_after)),
            HostAway::Away { since, paused: true } => Some(since + self.config.host_promote_after),
            HostAway::Present | HostAway::PromotionDue => None,
        };
        players.chain(host).min()
    }

    /// Advances every timeline to `now`. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let config = self.config;
        if let HostAway::Away { since, paused } = self.host_away {
            if !paused && now >= since + config.host_pause_after {
                self.host_away = HostAway::Away { since, paused: true };
                self.events.push_back(PresenceEvent::HostPause);
            }
            if now >= since + config.host_promote_after {
                self.host_away = HostAway::PromotionDue;
                self.events.push_back(PresenceEvent::HostPromote);
            }
        }
        let mut removed = Vec::new();
        for record in self.records.iter_mut().filter(|r| r.actor != self.host) {
            while let Some((since, stage)) = record.away {
                if now < since + stage_end(&config, stage) {
                    break;
                }
                let actor = record.actor.clone();
                match stage {
                    Stage::Grace => {
                        record.away = Some((since, Stage::Absent));
                        self.events.push_back(PresenceEvent::Absent(actor));
                    }
                    Stage::Absent => {
                        record.away = Some((since, Stage::Warned));
                        self.events.push_back(PresenceEvent::Warn(actor));
                    }
                    Stage::Warned => {
                        self.events.push_back(PresenceEvent::Remove(actor.clone()));
                        removed.push(actor);
                        break;
                    }
                }
            }
        }
        self.records.retain(|r| !removed.contains(&r.actor));
    }

    /// The next consequence to act on.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PresenceEvent> {
        self.events.pop_front()
    }

    /// Number of actors tracked (bounded by the room's seats).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nobody is tracked.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Time from the drop to the step that ends `stage`.
fn stage_end(config: &PresenceConfig, stage: Stage) -> Duration {
    match stage {
        Stage::Grace => config.grace,
        Stage::Absent => config.warning,
        Stage::Warned => config.remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn drain(p: &mut Presence) -> Vec<PresenceEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    #[test]
    fn player_timeline_grace_warning_removal() {
        let t0 = Instant::now();
        let mut p = Presence::new(PresenceConfig::default(), "host");
        assert_eq!(p.on_connect(t0, "bob"), Arrival { gap: None, was_absent: false });
        p.on_drop(t0 + S, "bob");
        assert_eq!(p.poll_timeout(), Some(t0 + 6 * S));
        p.handle_timeout(t0 + 5 * S);
        assert!(drain(&mut p).is_empty(), "still in the silent grace");
        p.handle_timeout(t0 + 6 * S);
        assert_eq!(drain(&mut p), vec![PresenceEvent::Absent("bob".into())]);
        assert_eq!(p.poll_timeout(), Some(t0 + 16 * S));
        p.handle_timeout(t0 + 16 * S);
        assert_eq!(drain(&mut p), vec![PresenceEvent::Warn("bob".into())]);
        p.handle_timeout(t0 + 61 * S);
        assert_eq!(drain(&mut p), vec![PresenceEvent::Remove("bob".into())]);
        assert!(p.is_empty(), "forgotten once removed");
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn a_clock_jump_fires_every_step_in_order() {
        let t0 = Instant::now();
        let mut p = Presence::new(PresenceConfig::default(), "host");
        p.on_connect(t0, "bob");
        p.on_drop(t0, "bob");
        p.handle_timeout(t0 + 600 * S);
        let names = ["bob"].map(String::from);
        assert_eq!(
            drain(&mut p),
            vec![PresenceEvent::Absent(names[0].clone()), PresenceEvent::Warn(names[0].clone()), PresenceEvent::Remove(names[0].clone())]
        );
    }

    #[test]
    fn return_reports_the_gap_measured_by_the_server() {
        let t0 = Instant::now();
        let mut p = Presence::new(PresenceConfig::default(), "host");
        p.on_connect(t0, "bob");
        assert_eq!(p.on_connect(t0 + S, "bob"), Arrival { gap: Some(Duration::ZERO), was_absent: false }, "replacement");
        p.on_drop(t0 + 2 * S, "bob");
        let back = p.on_connect(t0 + 2 * S + Duration::from_millis(4_900), "bob");
        assert_eq!(back, Arrival { gap: Some(Duration::from_millis(4_900)), was_absent: false });
        p.on_drop(t0 + 10 * S, "bob");
        p.handle_timeout(t0 + 16 * S);
        drain(&mut p);
        assert_eq!(p.on_connect(t0 + 17 * S, "bob"), Arrival { gap: Some(7 * S), was_absent: true });
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn host_pause_then_promotion_until_the_host_returns() {
        let t0 = Instant::now();
        let mut p = Presence::new(PresenceConfig::default(), "host");
        p.on_connect(t0, "host");
        p.on_drop(t0, "host");
        assert_eq!(p.poll_timeout(), Some(t0 + 10 * S));
        p.handle_timeout(t0 + 10 * S);
        assert_eq!(drain(&mut p), vec![PresenceEvent::HostPause]);
        assert_eq!(p.poll_timeout(), Some(t0 + 60 * S));
        p.handle_timeout(t0 + 60 * S);
        assert_eq!(drain(&mut p), vec![PresenceEvent::HostPromote]);
        assert!(p.is_promotion_due());
        assert_eq!(p.poll_timeout(), None, "the promotion waits for a connected player, not a timer");
        p.set_host(t0 + 61 * S, "bob");
        assert!(!p.is_promotion_due());
        // The old host now follows the player timeline from the promotion on.
        p.handle_timeout(t0 + 61 * S + 59 * S);
        assert!(!drain(&mut p).contains(&PresenceEvent::Remove("host".into())));
        p.handle_timeout(t0 + 122 * S);
        assert!(drain(&mut p).contains(&PresenceEvent::Remove("host".into())));
    }

    #[test]
    fn host_back_before_the_pause() {
        let t0 = Instant::now();
        let mut p = Presence::new(PresenceConfig::default(), "host");
        p.on_connect(t0, "host");
        p.on_drop(t0, "host");
        p.on_connect(t0 + 9 * S, "host");
        p.handle_timeout(t0 + 100 * S);
        assert!(drain(&mut p).is_empty(), "no pause, no promotion");
    }
}
