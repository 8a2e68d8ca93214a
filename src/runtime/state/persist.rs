//! Write-behind persistence of a shard's game rooms (with `--redis`): the rooms due are handed
//! to the store's writer thread, never waited for.

use std::time::{Duration, Instant};

use ahash::AHashMap;

use super::ShardState;
use crate::rooms::RoomId;
use crate::store::{StoreHandle, WriteBehind};

/// Write-behind persistence of this shard's game rooms (with `--redis`).
pub(crate) struct Persist {
    pub(super) write_behind: WriteBehind,
    pub(super) store: StoreHandle,
    /// The store's resync epoch last seen: when it moves, every room is written again.
    pub(super) epoch: u64,
    pub(super) last_warned: Option<Instant>,
    /// This instance's id, written into every snapshot (with several instances).
    pub(super) instance: Option<String>,
    /// Each room's webhook events (JSON) since its last write: they go to Redis with its next
    /// snapshot, in one step, so a recovered room and its events always agree.
    pub(super) events: AHashMap<RoomId, Vec<String>>,
}

/// Webhook events one room may hold while Redis is away; past it the oldest go (counted).
pub(super) const MAX_PENDING_EVENTS: usize = 10_000;

impl Persist {
    pub(crate) fn new(store: StoreHandle, interval: Duration, instance: Option<String>) -> Self {
        let epoch = store.resync_epoch();
        Persist { write_behind: WriteBehind::new(interval), store, epoch, last_warned: None, instance, events: AHashMap::new() }
    }

    /// Keeps `room`'s webhook event for its next write.
    pub(super) fn keep_event(&mut self, room: &RoomId, event: String) {
        let events = self.events.entry(room.clone()).or_default();
        if events.len() >= MAX_PENDING_EVENTS {
            events.remove(0);
            tracing::warn!(room = room.as_str(), "redis away too long: a webhook event of this room is dropped");
        }
        events.push(event);
    }

    /// `room`'s events waiting for its next write (left in place until the store takes them).
    pub(super) fn events_of(&self, room: &RoomId) -> Vec<String> {
        self.events.get(room).cloned().unwrap_or_default()
    }
}

/// How often a full persistence queue is logged, at most.
pub(super) const QUEUE_FULL_LOG_EVERY: Duration = Duration::from_secs(10);

impl ShardState {
    /// Hands the rooms that are due to the store (`unix_ms`: the wall clock now). A full queue
    /// keeps them for the next flush; the shard never waits.
    pub(crate) fn flush_store(&mut self, now: Instant, unix_ms: i64) {
        let Some(p) = self.persist.as_mut() else { return };
        let epoch = p.store.resync_epoch();
        if epoch != p.epoch {
            p.epoch = epoch;
            p.write_behind.mark_all(now, self.games.keys().cloned());
        }
        let Some(flush) = p.write_behind.take_due(now) else { return };
        let mut refused = crate::store::Flush::default();
        for (id, changed_at) in flush.writes {
            let Some(entry) = self.games.get(&id) else { continue };
            let mut snapshot = entry.room.save(now, unix_ms);
            snapshot.instance.clone_from(&p.instance);
            let snapshot = snapshot.encode();
            match p.store.try_put(id.as_str(), snapshot, changed_at, p.events_of(&id)) {
                Ok(()) => drop(p.events.remove(&id)),
                Err(_) => refused.writes.push((id, changed_at)),
            }
        }
        for id in flush.deletes {
            match p.store.try_delete(id.as_str(), p.events_of(&id)) {
                Ok(()) => drop(p.events.remove(&id)),
                Err(_) => refused.deletes.push(id),
            }
        }
        if refused != crate::store::Flush::default() {
            if p.last_warned.is_none_or(|t| now >= t + QUEUE_FULL_LOG_EVERY) {
                p.last_warned = Some(now);
                tracing::warn!(
                    rooms = refused.writes.len() + refused.deletes.len(),
                    "persistence queue full; retrying with the next flush (gameplay is unaffected)"
                );
            }
            let games = &self.games;
            p.write_behind.hand_back(now, refused, |id| !games.contains_key(id));
        }
    }
}
