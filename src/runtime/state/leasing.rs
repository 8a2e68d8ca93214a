//! The leases of this shard's game rooms, acted on: renewals handed to the store, and rooms
//! fenced the moment their lease is lost or runs out (see [`crate::cluster::Leases`]).

use std::time::Instant;

use super::ShardState;
use crate::cluster::{Renewal, CLOSE_RECONNECT};
use crate::metrics::ShardMetrics;
use crate::rooms::RoomId;

impl ShardState {
    /// Fences rooms whose lease ran out and returns the renewal batch due at `now`, if any
    /// (to hand to the store; its answer goes to [`ShardState::on_leases_renewed`]).
    pub(crate) fn poll_lease_renewal(&mut self, m: &ShardMetrics, now: Instant, unix_ms: i64) -> Option<Vec<RoomId>> {
        let leases = self.leases.as_mut()?;
        let expired = leases.expired(now);
        let batch = leases.poll_renewal(now);
        for room in expired {
            tracing::warn!(room = room.as_str(), "room lease could not be renewed in time; giving the room up");
            self.fence(m, now, &room, Some(unix_ms));
        }
        batch
    }

    /// The store answered the renewal of `rooms` sent at `sent_at` (`None`: it could not).
    pub(crate) fn on_leases_renewed(&mut self, m: &ShardMetrics, now: Instant, sent_at: Instant, rooms: Vec<RoomId>, held: Option<Vec<bool>>) {
        let Some(leases) = self.leases.as_mut() else { return };
        let answers = held.map(|held| rooms.into_iter().zip(held).map(|(room, h)| (room, if h { Renewal::Held } else { Renewal::Lost })).collect());
        for room in leases.on_renewed(now, sent_at, answers) {
            tracing::warn!(room = room.as_str(), "another instance holds the room's lease; giving the room up");
            self.fence(m, now, &room, None);
        }
        self.wake_timer_for(self.next_deadline());
    }

    /// Fences `room` if its lease is no longer valid here; true if it did (or the room is
    /// gone). Checked before every action, so a room never acts past its lease.
    pub(crate) fn fence_if_expired(&mut self, m: &ShardMetrics, now: Instant, room: &RoomId) -> bool {
        let Some(leases) = self.leases.as_ref() else { return false };
        if leases.is_valid(room, now) {
            return false;
        }
        let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.fence(m, now, room, Some(unix_ms));
        true
    }

    /// Gives `room` up as it is: every client is told to reconnect (1012) and the room leaves
    /// memory. With `keep` (the wall clock now: the lease only ran out, Redis did not answer),
    /// its last state goes to the store, which keeps it until Redis answers and writes it only
    /// if no other instance took the lease meanwhile; the room is then served from it again
    /// (by whichever instance a client reaches first). Without (another instance holds the
    /// lease), nothing of it is written: the new owner's snapshot is the room.
    fn fence(&mut self, m: &ShardMetrics, now: Instant, room: &RoomId, keep: Option<i64>) {
        let reason = if keep.is_some() { "the room store is unreachable; reconnect" } else { "the room moved to another server; reconnect" };
        if self.with_game(m, now, room, |r| r.evict(CLOSE_RECONNECT, reason)).is_none() {
            return;
        }
        if let (Some(unix_ms), Some(entry), Some(p)) = (keep, self.games.get(room), self.persist.as_ref()) {
            let mut snapshot = entry.room.save(now, unix_ms);
            snapshot.instance.clone_from(&p.instance);
            if p.store.try_put(room.as_str(), snapshot.encode(), now, p.events_of(room)).is_err() {
                tracing::warn!(room = room.as_str(), "persistence queue full: the fenced room's last state is lost; its last written snapshot stands");
            }
        }
        self.games.remove(room);
        m.rooms.add(-1);
        m.rooms_fenced.add(1);
        if let Some(p) = self.persist.as_mut() {
            p.write_behind.forget(room);
            // Written with its last state above, or void with it (the new owner's snapshot is
            // the room, and its events are the new owner's).
            p.events.remove(room);
        }
        if let Some(leases) = self.leases.as_mut() {
            leases.release(room);
        }
    }
}
