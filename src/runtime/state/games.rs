//! A shard's game rooms: created, run on behalf of a member or the server, their outputs carried
//! out and their timers re-armed.

use std::time::Instant;

use super::{forwarding, panic_message, Acting, Member, ShardState};
use crate::cluster::Outgoing;
use crate::metrics::ShardMetrics;
use crate::rooms::{GameRoom, RoomCount, RoomId, RoomOutput};

/// A game room and the deadline the shard timer holds for it.
pub(super) struct GameEntry {
    /// Boxed: the table of rooms grows by doubling, and its empty slots would otherwise each
    /// hold a room's size.
    pub(super) room: Box<GameRoom<Member>>,
    pub(super) armed: Option<Instant>,
    /// The sequence id up to which the room's changes are scheduled for persistence.
    pub(super) marked_seq: u64,
}

impl ShardState {
    /// Adds a new game room (its lease, with `--redis`, taken by a request sent at `leased_at`).
    pub(crate) fn create_game(&mut self, m: &ShardMetrics, now: Instant, room: GameRoom<Member>, leased_at: Instant) {
        if let Some(leases) = self.leases.as_mut() {
            leases.acquired(room.id().clone(), leased_at);
        }
        let id = room.id().clone();
        self.games.insert(id.clone(), GameEntry { room: Box::new(room), armed: None, marked_seq: 0 });
        m.rooms.add(1);
        tracing::info!(room = id.as_str(), "room opened");
        self.with_game(m, now, &id, |_| ());
    }

    /// Whether `room` closed here and its Redis key is still to be deleted.
    pub(crate) fn is_deleting(&self, room: &RoomId) -> bool {
        self.persist.as_ref().is_some_and(|p| p.write_behind.is_deleting(room))
    }

    /// Game rooms on this shard.
    pub(crate) fn game_count(&self) -> usize {
        self.games.len()
    }

    /// Whether a game room with this id lives here.
    pub(crate) fn has_game(&self, id: &RoomId) -> bool {
        self.games.contains_key(id)
    }

    /// Runs `f` on a game room, then carries out what the room asks for (sends, closes),
    /// re-arms its timer, and drops the room once it is closed. `None` if no such room.
    pub(crate) fn with_game<R>(&mut self, m: &ShardMetrics, now: Instant, id: &RoomId, f: impl FnOnce(&mut GameRoom<Member>) -> R) -> Option<R> {
        self.with_game_for(m, now, id, Acting::Server, f)
    }

    /// [`ShardState::with_game`] on behalf of `acting`, who is named in the log if the room
    /// panics.
    pub(crate) fn with_game_for<R>(
        &mut self,
        m: &ShardMetrics,
        now: Instant,
        id: &RoomId,
        acting: Acting<'_>,
        f: impl FnOnce(&mut GameRoom<Member>) -> R,
    ) -> Option<R> {
        let entry = self.games.get_mut(id)?;
        // The room boundary: a panic in the room's handling closes that room, not the shard.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut entry.room))) {
            Ok(result) => result,
            Err(panic) => {
                // A lookup in the member list names the member; nothing else of the room is used.
                let actor = match acting {
                    Acting::Server => "(server)".to_string(),
                    Acting::Member(member) => entry.room.actor_of(member).unwrap_or("(unknown member)").to_string(),
                    Acting::Actor(actor) => actor.to_string(),
                };
                self.room_panicked(m, now, id, &actor, panic_message(panic.as_ref()));
                return None;
            }
        };
        let mut outgoing = Outgoing::default();
        loop {
            // Members whose queue overflowed are cut off; their room hears of it at once.
            let mut overflowed = Vec::new();
            while let Some(output) = entry.room.poll_output() {
                match output {
                    RoomOutput::Send(Member::Local(conn), frame) => {
                        if let Some(c) = self.conns.get_mut(conn) {
                            if !c.is_closing() {
                                if c.queue(m, now, frame, &self.limits) {
                                    m.messages_out.add(1);
                                } else {
                                    c.departed = true;
                                    overflowed.push(Member::Local(conn));
                                }
                            }
                        }
                    }
                    RoomOutput::Close(Member::Local(conn), code, reason) => {
                        if let Some(c) = self.conns.get_mut(conn) {
                            c.begin_close(m, now, code, &reason, false);
                            // The room already let this member go.
                            c.departed = true;
                        }
                    }
                    RoomOutput::Send(Member::Remote(key), frame) => self.remotes.gather(&mut outgoing, key, frame),
                    RoomOutput::Close(Member::Remote(key), code, reason) => {
                        // What the member was sent before goes first.
                        overflowed.extend(forwarding::flush_outgoing(self.bus.as_ref(), m, &mut outgoing).into_iter().map(Member::Remote));
                        if let Some(close) = self.remotes.close(key, code, reason) {
                            forwarding::forward(self.bus.as_ref(), close);
                        }
                    }
                    RoomOutput::Count(what) => count(m, what),
                    RoomOutput::Webhook(kind, seq, data) => match (&self.webhooks, self.persist.as_mut()) {
                        // With Redis, the event is written with the room's next snapshot.
                        (Some(hooks), Some(p)) => {
                            if let Some(event) = hooks.event_json(kind, entry.room.id().as_str(), seq, data) {
                                p.keep_event(entry.room.id(), event);
                                p.write_behind.mark_dirty(now, entry.room.id());
                            }
                        }
                        (Some(hooks), None) => hooks.emit(kind, entry.room.id().as_str(), seq, data),
                        _ => {}
                    },
                }
            }
            overflowed.extend(forwarding::flush_outgoing(self.bus.as_ref(), m, &mut outgoing).into_iter().map(Member::Remote));
            if overflowed.is_empty() {
                break;
            }
            for member in overflowed {
                entry.room.disconnect(now, member);
                if let Member::Remote(key) = member {
                    // Its edge could not be reached: the client is let go there by the
                    // liveness check, or hears nothing more and reconnects.
                    self.remotes.remove(key);
                }
            }
        }
        if entry.room.is_closed() {
            tracing::info!(room = id.as_str(), reason = entry.room.closed_reason().unwrap_or("closed"), "room closed");
            self.games.remove(id);
            m.rooms.add(-1);
            if let Some(p) = self.persist.as_mut() {
                p.write_behind.mark_closed(now, id);
            }
            if let Some(leases) = self.leases.as_mut() {
                leases.release(id);
            }
            self.wake_timer_for(self.next_deadline());
            return Some(result);
        }
        let mut earliest = None;
        if let Some(p) = self.persist.as_mut() {
            let seq = entry.room.last_sequence_id();
            if seq != entry.marked_seq {
                entry.marked_seq = seq;
                p.write_behind.mark_dirty(now, id);
                earliest = p.write_behind.poll_timeout();
            }
        }
        let deadline = entry.room.poll_timeout();
        if deadline != entry.armed {
            entry.armed = deadline;
            if let Some(at) = deadline {
                self.deadlines.arm(at, id.clone());
                earliest = Some(earliest.map_or(at, |e: Instant| e.min(at)));
            }
        }
        self.compact_deadlines();
        self.wake_timer_for(earliest);
        Some(result)
    }
}

fn count(m: &ShardMetrics, what: RoomCount) {
    match what {
        RoomCount::Backfilled(events) => {
            m.reconnects_backfilled.add(1);
            m.backfilled_events.add(events as u64);
        }
        RoomCount::SnapshotOnly => m.reconnects_snapshot.add(1),
        RoomCount::Expired => m.reconnects_expired.add(1),
        RoomCount::DegradedConnection => m.degraded_connections.add(1),
        RoomCount::UnmatchedAck => m.unmatched_acks.add(1),
        RoomCount::StateResync => m.state_resyncs.add(1),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::game::words::WordPack;
    use crate::game::GameConfig;
    use crate::metrics::Metrics;
    use crate::rooms::RoomPolicy;
    use std::sync::Arc;

    #[test]
    fn the_deadline_heap_stays_bounded_under_re_arming() {
        let t0 = Instant::now();
        let metrics = Metrics::new(1, t0);
        let m = metrics.shard(0);
        let mut state = ShardState::default();
        let host = Member::Local(0);
        let config = GameConfig {
            max_players: 10,
            num_teams: 2,
            rounds: 1,
            round_duration: Duration::from_secs(60),
            countdown: 1,
            score_review: Duration::from_secs(1),
            pack: Arc::new(WordPack::shipped().remove(0)),
            seed: 1,
        };
        let id = RoomId::parse("HEAP42").unwrap();
        let room = GameRoom::new(id.clone(), "host", "H", config, RoomPolicy::default(), t0, 0);
        state.create_game(m, t0, room, t0);
        for i in 0..10_000u64 {
            // The host leaving and coming back moves the room's deadline (idle reclaim, host
            // pause) every time: one new heap entry per move.
            let now = t0 + Duration::from_millis(i);
            state.with_game(m, now, &id, |r| r.disconnect(now, host));
            state.with_game(m, now, &id, |r| {
                let _ = r.connect(now, host, "host", "1.0");
            });
        }
        assert!(state.heap_len() <= 2 + 64, "{} heap entries for one room (bound: twice the rooms plus 64)", state.heap_len());
        assert!(state.next_deadline().is_some());
    }
}
