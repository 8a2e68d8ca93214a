//! `RECONNECT` (backfill, snapshot or expiry; seed 002 §3.2-3.4, ADR-004) and `HEARTBEAT`
//! (desync repair, §3.5).
//!
//! The decision uses the server's own record of how long the actor was gone (the gap between
//! its previous connection dropping and this one opening, measured by `Presence`), never the
//! client's `disconnectTimestamp`. Backfilled events are the frames the log kept, in the
//! recipient's protocol version, so they are byte for byte what a connected peer of the same
//! role received live.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::delivery::entitled;
use super::{GameRoom, RoomCount, RoomOutput};
use crate::game::Role;
use crate::protocol::{ErrorCode, Rejection, Scope};
use crate::session::LoggedEvent;
use crate::ws;

/// How long an absence may last for each kind of answer to `RECONNECT`.
#[derive(Debug, Clone, Copy)]
pub struct ReconnectWindows {
    /// A player or spectator gone less than this gets every missed event.
    pub player_backfill: Duration,
    /// The host gone less than this gets every missed event; longer, a snapshot.
    pub host_backfill: Duration,
    /// A player or spectator gone less than this (and past its backfill window) gets a
    /// snapshot; longer, `RECONNECT_FAILED`.
    pub snapshot: Duration,
}

impl Default for ReconnectWindows {
    fn default() -> Self {
        ReconnectWindows { player_backfill: Duration::from_secs(5), host_backfill: Duration::from_secs(30), snapshot: Duration::from_secs(30) }
    }
}

/// `RECONNECTED` and `STATE_SNAPSHOT` payloads (`missed_events` only in the former).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Recovery<'a> {
    current_state: &'a str,
    state_version: u64,
    state_checksum: String,
    game_state: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    missed_events: Option<Option<Vec<Box<RawValue>>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl<C: Copy + PartialEq> GameRoom<C> {
    /// `RECONNECT {lastSeqId, sessionId?, disconnectTimestamp?}` from `conn`.
    pub(super) fn on_reconnect(&mut self, now: Instant, conn: C, actor: &str, payload: &Value) -> Result<(), Rejection> {
        let last_seq = match payload.get("lastSeqId") {
            None | Some(Value::Null) => return Err(Rejection::new(ErrorCode::MissingField, "payload.lastSeqId is required")),
            Some(v) => v.as_u64().ok_or_else(|| Rejection::new(ErrorCode::InvalidMessage, "payload.lastSeqId must be a non-negative integer"))?,
        };
        if last_seq > self.sequence {
            return Err(Rejection::new(ErrorCode::InvalidMessage, format!("lastSeqId {last_seq} is ahead of the room ({})", self.sequence)));
        }
        let Some(member) = self.members.iter().find(|m| m.conn == conn) else { return Ok(()) };
        let (gap, upto, version) = (member.gap, member.connected_seq, member.version.clone());
        let role = self.game.role_of(actor);
        let Some(gap) = gap else {
            // The actor never had an earlier connection: there is nothing to recover, only the
            // state to confirm.
            self.send_snapshot(now, conn, actor);
            return Ok(());
        };
        if !self.log.covers(last_seq) && self.recovered_at.is_some_and(|r| last_seq <= r) {
            // The server restarted since: what happened before is gone, the state is not.
            let message = "the server restarted; this is the current state".to_string();
            self.send_recovery(now, conn, actor, &version, "RECONNECTED", Some(None), Some(message));
            self.outputs.push_back(RoomOutput::Count(RoomCount::SnapshotOnly));
            return Ok(());
        }
        let windows = self.policy.reconnect;
        let backfill_window = if role == Some(Role::Host) { windows.host_backfill } else { windows.player_backfill };
        let missed = || self.log.range(last_seq, upto).filter(|e| entitled(role, actor, &e.scope));
        if gap < backfill_window {
            if !self.log.covers(last_seq) && role != Some(Role::Host) {
                return self.expire(now, conn, actor, &version);
            }
            if self.log.covers(last_seq) {
                let events: Vec<Box<RawValue>> = missed().filter_map(|e| event_in_version(e, &version)).collect();
                let count = events.len();
                let message = format!("welcome back: {count} missed events replayed");
                self.send_recovery(now, conn, actor, &version, "RECONNECTED", Some(Some(events)), Some(message));
                self.outputs.push_back(RoomOutput::Count(RoomCount::Backfilled(count)));
                return Ok(());
            }
        } else if gap >= windows.snapshot && role != Some(Role::Host) {
            return self.expire(now, conn, actor, &version);
        }
        let summary = self.log.covers(last_seq).then(|| summarize(missed()));
        let message = format!("reconnected after {:.1} s; {}", gap.as_secs_f64(), summary.unwrap_or_else(|| "you missed some action".into()));
        self.send_recovery(now, conn, actor, &version, "RECONNECTED", Some(None), Some(message));
        self.outputs.push_back(RoomOutput::Count(RoomCount::SnapshotOnly));
        Ok(())
    }

    /// `HEARTBEAT {stateVersion?, stateChecksum?}`: a mismatch on either field is answered with
    /// `STATE_SNAPSHOT`; a match (or neither field) with nothing.
    pub(super) fn on_heartbeat(&mut self, now: Instant, conn: C, actor: &str, payload: &Value) -> Result<(), Rejection> {
        let version_differs = match payload.get("stateVersion") {
            None | Some(Value::Null) => false,
            Some(v) => {
                v.as_u64().ok_or_else(|| Rejection::new(ErrorCode::InvalidMessage, "payload.stateVersion must be an integer"))? != self.game.state_version()
            }
        };
        let checksum_differs = match payload.get("stateChecksum") {
            None | Some(Value::Null) => false,
            Some(Value::String(sum)) => *sum != self.game.checksum(),
            Some(_) => return Err(Rejection::new(ErrorCode::InvalidMessage, "payload.stateChecksum must be a string")),
        };
        if version_differs || checksum_differs {
            self.send_snapshot(now, conn, actor);
            self.outputs.push_back(RoomOutput::Count(RoomCount::StateResync));
        }
        Ok(())
    }

    /// `STATE_SNAPSHOT` to `conn`: the room as `actor`'s role may see it.
    pub(super) fn send_snapshot(&mut self, now: Instant, conn: C, actor: &str) {
        let Some(version) = self.members.iter().find(|m| m.conn == conn).map(|m| m.version.clone()) else { return };
        self.send_recovery(now, conn, actor, &version, "STATE_SNAPSHOT", None, None);
    }

    /// `RECONNECT_FAILED`: the actor stays in the room but watches until the next turn.
    fn expire(&mut self, now: Instant, conn: C, actor: &str, version: &str) -> Result<(), Rejection> {
        let payload = json!({
            "reason": "SESSION_EXPIRED",
            "message": "disconnected too long: watching until the next turn",
            "canRejoin": true,
            "currentState": self.game.state().as_str(),
        });
        let frame = self.frame("RECONNECT_FAILED", &Scope::Actor(String::new()), &payload, version, None, None, now);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
        self.outputs.push_back(RoomOutput::Count(RoomCount::Expired));
        self.game.bench(now, actor);
        self.drain_game(now);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn send_recovery(
        &mut self,
        now: Instant,
        conn: C,
        actor: &str,
        version: &str,
        kind: &str,
        missed_events: Option<Option<Vec<Box<RawValue>>>>,
        message: Option<String>,
    ) {
        let role = self.game.role_of(actor).unwrap_or(Role::Spectator);
        let payload = Recovery {
            current_state: self.game.state().as_str(),
            state_version: self.game.state_version(),
            state_checksum: self.game.checksum(),
            game_state: self.game.snapshot(role),
            missed_events,
            message,
        };
        let frame = self.frame(kind, &Scope::Actor(String::new()), &payload, version, None, None, now);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
    }
}

/// The logged event's envelope as JSON text in protocol `version` (re-encoded only when the
/// log holds another minor version's form).
fn event_in_version(event: &LoggedEvent, version: &str) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(ws::frame_payload(&event.frame)).ok()?;
    if event.version == version {
        return RawValue::from_string(text.to_string()).ok();
    }
    let mut envelope: Value = serde_json::from_str(text).ok()?;
    crate::protocol::set_field(&mut envelope, "version", version);
    RawValue::from_string(envelope.to_string()).ok()
}

/// "missed N events: 3 WORD_RESULT, 12 TIMER_TICK".
fn summarize<'a>(events: impl Iterator<Item = &'a LoggedEvent>) -> String {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events {
        *kinds.entry(e.kind).or_default() += 1;
    }
    let total: usize = kinds.values().sum();
    let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    format!("missed {total} events: {}", parts.join(", "))
}
