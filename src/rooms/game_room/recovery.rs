//! A room as a snapshot, and a room rebuilt from one after a crash.
//!
//! Sequence ids never go backwards across a recovery: the recovered room resumes
//! [`SEQUENCE_GAP`] above the last persisted id (a persisted snapshot trails the live room by
//! at most the write-behind interval, far fewer events than that, unless Redis was unreachable
//! for hours while the room played). Its event log starts empty and says so, and every actor
//! counts as having dropped at the moment of recovery, so a `RECONNECT` naming an id from before
//! the crash gets the snapshot path (`missedEvents: null`), never a wrong backfill, and the
//! usual timelines (host pause and promotion, player removal) run from there.

use std::sync::Arc;
use std::time::Instant;

use super::{GameRoom, RoomPolicy};
use crate::game::words::WordPack;
use crate::game::{Game, RestoreError};
use crate::rooms::RoomId;
use crate::session::{EventLog, Presence};
use crate::store::{RoomSnapshot, SNAPSHOT_FORMAT};

/// How far above the last persisted sequence id a recovered room resumes.
pub const SEQUENCE_GAP: u64 = 1_000_000;

impl<C: Copy + PartialEq> GameRoom<C> {
    /// The room as persisted at `now` (`unix_ms` being the wall clock then).
    pub fn save(&self, now: Instant, unix_ms: i64) -> RoomSnapshot {
        RoomSnapshot {
            format: SNAPSHOT_FORMAT,
            room_id: self.id.as_str().to_string(),
            saved_at_unix_ms: unix_ms,
            sequence: self.sequence,
            webhook_seq: self.webhook_seq,
            instance: None,
            game: self.game.save(now),
        }
    }

    /// Rebuilds a room from `snapshot` at `now`; a running turn comes back paused.
    pub fn recover(snapshot: &RoomSnapshot, packs: &[Arc<WordPack>], policy: RoomPolicy, now: Instant, unix_ms: i64) -> Result<GameRoom<C>, RestoreError> {
        let id = RoomId::parse(&snapshot.room_id).ok_or_else(|| RestoreError::State(format!("bad room id {}", snapshot.room_id)))?;
        let game = Game::restore(&snapshot.game, packs, now)?;
        let resume_at = snapshot.sequence.saturating_add(SEQUENCE_GAP);
        let mut presence = Presence::new(policy.presence, game.host_id());
        for actor in snapshot.game.participants.iter().map(|p| p.id.as_str()) {
            presence.on_connect(now, actor);
            presence.on_drop(now, actor);
        }
        let mut room = GameRoom {
            id,
            game,
            presence,
            log: EventLog::resuming_after(policy.event_log, resume_at),
            policy,
            epoch: (now, unix_ms),
            sequence: resume_at,
            members: Vec::new(),
            recovered_at: Some(resume_at),
            idle_since: Some(now),
            webhook_seq: snapshot.webhook_seq,
            outputs: Default::default(),
        };
        room.drain_game(now);
        Ok(room)
    }
}
