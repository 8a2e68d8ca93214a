//! Which rooms must be written, and when: the write-behind decisions of one shard, sans-IO.
//!
//! A room is marked dirty on every change; the first mark schedules a flush `interval` later,
//! so a change is at most one interval behind. A flush takes every dirty room once (many
//! changes coalesce into one write of the newest state). What the store could not take (its
//! queue was full) is handed back and goes out with the next flush.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::rooms::RoomId;

/// What to write now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// Rooms whose newest snapshot must be written, with when each first changed.
    pub writes: Vec<(RoomId, Instant)>,
    /// Closed rooms whose key must be deleted.
    pub deletes: Vec<RoomId>,
}

/// The write-behind state of one shard.
#[derive(Debug)]
pub struct WriteBehind {
    interval: Duration,
    /// Dirty rooms and when each first changed since its last write.
    dirty: BTreeMap<RoomId, Instant>,
    deletes: BTreeSet<RoomId>,
    due: Option<Instant>,
}

impl WriteBehind {
    /// Nothing dirty; flushes at most `interval` after a change.
    pub fn new(interval: Duration) -> Self {
        WriteBehind { interval, dirty: BTreeMap::new(), deletes: BTreeSet::new(), due: None }
    }

    /// `room` changed at `now`.
    pub fn mark_dirty(&mut self, now: Instant, room: &RoomId) {
        if !self.dirty.contains_key(room) {
            self.dirty.insert(room.clone(), now);
        }
        self.schedule(now);
    }

    /// `room` closed at `now`: its key goes, and any pending write with it.
    pub fn mark_closed(&mut self, now: Instant, room: &RoomId) {
        self.dirty.remove(room);
        self.deletes.insert(room.clone());
        self.schedule(now);
    }

    /// Everything live must be written again (the store lost it): mark `rooms` dirty.
    pub fn mark_all(&mut self, now: Instant, rooms: impl IntoIterator<Item = RoomId>) {
        for room in rooms {
            self.dirty.entry(room).or_insert(now);
        }
        if !self.dirty.is_empty() {
            self.schedule(now);
        }
    }

    /// When the next flush is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    /// The flush due at `now`, if any.
    pub fn take_due(&mut self, now: Instant) -> Option<Flush> {
        if self.due.is_none_or(|due| now < due) {
            return None;
        }
        self.due = None;
        Some(Flush { writes: std::mem::take(&mut self.dirty).into_iter().collect(), deletes: std::mem::take(&mut self.deletes).into_iter().collect() })
    }

    /// What the store did not take goes with the next flush (unless it changed meanwhile, in
    /// which case it is dirty already; a room closed meanwhile is not written).
    pub fn hand_back(&mut self, now: Instant, flush: Flush, closed: impl Fn(&RoomId) -> bool) {
        for (room, changed_at) in flush.writes {
            if !closed(&room) && !self.deletes.contains(&room) {
                let first = self.dirty.entry(room).or_insert(changed_at);
                *first = (*first).min(changed_at);
            }
        }
        self.deletes.extend(flush.deletes);
        if !self.dirty.is_empty() || !self.deletes.is_empty() {
            self.schedule(now);
        }
    }

    /// `room` left this instance without closing (another instance serves it now): nothing of
    /// it is written or deleted any more.
    pub fn forget(&mut self, room: &RoomId) {
        self.dirty.remove(room);
        self.deletes.remove(room);
    }

    /// Whether `room` closed and its key is not yet handed to the store (its snapshot in Redis
    /// must not bring it back meanwhile).
    pub fn is_deleting(&self, room: &RoomId) -> bool {
        self.deletes.contains(room)
    }

    /// Rooms waiting to be written (bounded by the shard's rooms).
    pub fn pending(&self) -> usize {
        self.dirty.len() + self.deletes.len()
    }

    fn schedule(&mut self, now: Instant) {
        if self.due.is_none() {
            self.due = Some(now + self.interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    #[test]
    fn changes_coalesce_and_are_at_most_one_interval_behind() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut wb = WriteBehind::new(100 * ms);
        assert_eq!(wb.poll_timeout(), None);
        wb.mark_dirty(t0, &id("A"));
        wb.mark_dirty(t0 + 30 * ms, &id("A"));
        wb.mark_dirty(t0 + 60 * ms, &id("B"));
        assert_eq!(wb.poll_timeout(), Some(t0 + 100 * ms), "the first change sets the deadline");
        assert_eq!(wb.take_due(t0 + 99 * ms), None);
        let flush = wb.take_due(t0 + 100 * ms).unwrap();
        assert_eq!(flush.writes, vec![(id("A"), t0), (id("B"), t0 + 60 * ms)], "one write per room, aged from its first change");
        assert_eq!(wb.poll_timeout(), None);
    }

    #[test]
    fn closing_replaces_a_write_with_a_delete_and_refused_work_comes_back() {
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        let mut wb = WriteBehind::new(100 * ms);
        wb.mark_dirty(t0, &id("A"));
        wb.mark_closed(t0, &id("A"));
        wb.mark_dirty(t0, &id("B"));
        let flush = wb.take_due(t0 + 100 * ms).unwrap();
        assert_eq!(flush, Flush { writes: vec![(id("B"), t0)], deletes: vec![id("A")] });
        wb.hand_back(t0 + 100 * ms, flush, |_| false);
        assert_eq!(wb.pending(), 2);
        assert_eq!(wb.poll_timeout(), Some(t0 + 200 * ms));
        wb.mark_all(t0 + 150 * ms, [id("C")]);
        assert_eq!(wb.take_due(t0 + 200 * ms).unwrap().writes, vec![(id("B"), t0), (id("C"), t0 + 150 * ms)]);
    }
}
