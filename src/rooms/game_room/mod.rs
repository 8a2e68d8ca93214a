//! A game room: the [`Game`] plus its connected members and their session policies, turned
//! into a fan-out plan.
//!
//! Game events name a scope; this layer numbers them (per-room `sequenceId`), serializes each
//! once per protocol version among its recipients, encodes the WebSocket frame once, emits one
//! [`RoomOutput::Send`] per recipient (each a clone of the same buffer) and keeps the frame in
//! the room's [`EventLog`] for backfill. It drives the per-actor policies (the disconnect
//! timeline and host rules in [`Presence`], ACK retries, rate limits), answers `RECONNECT` and
//! `HEARTBEAT` (`reconnect.rs`), and turns every bad message into an `ERROR` for its sender
//! alone (the encoding and fan-out are `delivery.rs`). Sans-IO: `C` is whatever handle the runtime uses for a connection, and `now` comes in
//! with every input.
//!
//! Call order: after any input, drain [`GameRoom::poll_output`], then re-read
//! [`GameRoom::poll_timeout`].

mod admin;
pub use admin::KickRefused;
mod delivery;
mod reconnect;
mod recovery;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{json, Value};

use super::RoomId;
use crate::game::{Command, Event, Game, GameConfig, Role};
use crate::protocol::{self, ErrorCode, Rejection, Scope, ServerMsg, Version, SERVER_VERSION};
use crate::session::{AckAction, AckPolicy, AckTracker, EventLog, EventLogConfig, LoggedEvent, Presence, PresenceConfig, PresenceEvent, Rate, TokenBucket};
use crate::ws::{self, DataKind};

pub use reconnect::ReconnectWindows;
pub use recovery::SEQUENCE_GAP;

/// Close code for a client whose protocol major version is not served.
pub const CLOSE_UPGRADE_REQUIRED: u16 = 4001;
/// Close code for a connection replaced by a newer one of the same actor.
pub const CLOSE_REPLACED: u16 = 4002;
/// Largest game message accepted (the WebSocket limit may be higher).
pub const MAX_GAME_MESSAGE_BYTES: usize = 16 * 1024;

/// Room-level settings that are not game rules.
#[derive(Debug, Clone, Copy)]
pub struct RoomPolicy {
    /// Reclaim the room after this long with nobody connected.
    pub idle_timeout: Duration,
    /// ACK retry policy.
    pub acks: AckPolicy,
    /// Messages a connection may send per second (sustained), and in a burst.
    pub messages_per_sec: Rate,
    /// ERROR replies per second and burst; beyond that errors are dropped.
    pub errors_per_sec: Rate,
    /// The disconnect timeline and host rules.
    pub presence: PresenceConfig,
    /// Bounds of the backfill log.
    pub event_log: EventLogConfig,
    /// Which reconnect gets a backfill, a snapshot or nothing.
    pub reconnect: ReconnectWindows,
    /// The room closes (`ROOM_CLOSED`, reason `max_lifetime`) this long after it was created or
    /// loaded, whatever it is doing: no room holds memory forever.
    pub max_lifetime: Duration,
    /// Whether the room reports its lifecycle and results as webhook events
    /// ([`RoomOutput::Webhook`]).
    pub webhooks: bool,
}

impl Default for RoomPolicy {
    fn default() -> Self {
        RoomPolicy {
            idle_timeout: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(12 * 3600),
            acks: AckPolicy::default(),
            messages_per_sec: Rate::with_double_burst(20.0),
            errors_per_sec: Rate::with_double_burst(5.0),
            presence: PresenceConfig::default(),
            event_log: EventLogConfig::default(),
            reconnect: ReconnectWindows::default(),
            webhooks: false,
        }
    }
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomOutput<C> {
    /// Queue `frame` (a complete WebSocket frame) on `conn`.
    Send(C, Bytes),
    /// Close `conn` with `code`.
    Close(C, u16, String),
    /// Count something in the server's metrics.
    Count(RoomCount),
    /// Report an event to the app's backend: webhook type, the room's event number (from 1,
    /// without gaps, kept across a recovery) and data.
    Webhook(&'static str, u64, serde_json::Value),
}

/// Things a room counts for the server's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomCount {
    /// A `RECONNECT` was answered with a backfill of this many events.
    Backfilled(usize),
    /// A `RECONNECT` was answered with a snapshot only.
    SnapshotOnly,
    /// A `RECONNECT` came too late: `RECONNECT_FAILED`.
    Expired,
    /// A connection went unacknowledged through every resend (first time for it).
    DegradedConnection,
    /// An `ACK` for nothing this connection awaits (unknown, foreign, or already given up).
    UnmatchedAck,
    /// A `HEARTBEAT` disagreed with the room and got a `STATE_SNAPSHOT`.
    StateResync,
}

struct Member<C> {
    conn: C,
    actor_id: String,
    version: String,
    acks: AckTracker,
    messages: TokenBucket,
    errors: TokenBucket,
    /// `lastSequenceId` of this connection's `CONNECTED`: live delivery starts after it.
    connected_seq: u64,
    /// Time from the actor's previous connection dropping to this one opening (`None`: its
    /// first connection).
    gap: Option<Duration>,
}

/// One game room on its owner shard.
pub struct GameRoom<C> {
    id: RoomId,
    game: Game,
    policy: RoomPolicy,
    /// Maps the monotonic clock to Unix milliseconds for message timestamps.
    epoch: (Instant, i64),
    sequence: u64,
    members: Vec<Member<C>>,
    presence: Presence,
    log: EventLog,
    /// The first sequence id after a crash recovery: ids before it are not in the log.
    recovered_at: Option<u64>,
    idle_since: Option<Instant>,
    /// The last webhook event number handed out.
    webhook_seq: u64,
    outputs: VecDeque<RoomOutput<C>>,
}

impl<C: Copy + PartialEq> GameRoom<C> {
    /// A new room created at `now` (`unix_ms` being the wall clock at that moment).
    pub fn new(id: RoomId, host_id: &str, host_name: &str, config: GameConfig, policy: RoomPolicy, now: Instant, unix_ms: i64) -> Self {
        let mut room = GameRoom {
            id,
            game: Game::new(host_id, host_name, config),
            presence: Presence::new(policy.presence, host_id),
            log: EventLog::new(policy.event_log),
            policy,
            epoch: (now, unix_ms),
            sequence: 0,
            members: Vec::new(),
            recovered_at: None,
            idle_since: Some(now),
            webhook_seq: 0,
            outputs: VecDeque::new(),
        };
        room.drain_game(now);
        room
    }

    /// The room id.
    pub fn id(&self) -> &RoomId {
        &self.id
    }

    /// The actor `conn` is connected as, if it is a member.
    pub fn actor_of(&self, conn: C) -> Option<&str> {
        self.members.iter().find(|m| m.conn == conn).map(|m| m.actor_id.as_str())
    }

    /// `actor_id`'s role, if it is in the room.
    pub fn role_of(&self, actor_id: &str) -> Option<Role> {
        self.game.role_of(actor_id)
    }

    /// The game (read-only).
    pub fn game(&self) -> &Game {
        &self.game
    }

    /// The last sequence id handed out.
    pub fn last_sequence_id(&self) -> u64 {
        self.sequence
    }

    /// The events held for backfill (bounded by the event-log settings).
    pub fn event_log(&self) -> &EventLog {
        &self.log
    }

    /// Connections currently in the room.
    pub fn connections(&self) -> usize {
        self.members.len()
    }

    /// Public summary: `{roomId, state, playerCount, maxPlayers, connectedCount, degradedConnections}`.
    pub fn summary(&self) -> Value {
        json!({
            "roomId": self.id.as_str(),
            "state": self.game.state().as_str(),
            "playerCount": self.game.player_count(),
            "maxPlayers": self.game.max_players(),
            "connectedCount": self.members.len(),
            "degradedConnections": self.members.iter().filter(|m| m.acks.is_degraded()).count(),
        })
    }

    /// Whether the room is finished (closed, or reclaimed after idling) and may be dropped once
    /// its outputs are delivered.
    pub fn is_closed(&self) -> bool {
        self.game.is_closed()
    }

    /// Why the room was closed (`ROOM_CLOSED.reason`), once it is.
    pub fn closed_reason(&self) -> Option<&str> {
        self.game.closed_reason()
    }

    /// Seats a new participant (HTTP join).
    pub fn join(&mut self, now: Instant, actor_id: &str, name: &str) -> Result<Role, Rejection> {
        let role = self.game.join(actor_id, name)?;
        self.drain_game(now);
        Ok(role)
    }

    /// `conn` authenticated as `actor_id` and asked for protocol `version`. On refusal the
    /// outputs already hold the `ERROR` and the close.
    pub fn connect(&mut self, now: Instant, conn: C, actor_id: &str, version: &str) -> Result<(), Rejection> {
        let negotiated = Version::parse(version).and_then(Version::negotiate);
        let Some(role) = self.game.role_of(actor_id) else {
            let rejection = Rejection::new(ErrorCode::Unauthorized, "not a member of this room");
            self.reject_and_close(now, conn, version, rejection.clone(), ws::close_code::POLICY_VIOLATION);
            return Err(rejection);
        };
        let version = match negotiated {
            Ok(v) => v.to_string(),
            Err(e) => {
                let rejection = Rejection::new(ErrorCode::UpgradeRequired, e.to_string());
                self.reject_and_close(now, conn, &SERVER_VERSION.to_string(), rejection.clone(), CLOSE_UPGRADE_REQUIRED);
                return Err(rejection);
            }
        };
        // A newer connection replaces an older one without the actor ever counting as gone.
        for old in self.members.iter().filter(|m| m.actor_id == actor_id) {
            self.outputs.push_back(RoomOutput::Close(old.conn, CLOSE_REPLACED, "replaced by a newer connection".into()));
        }
        self.members.retain(|m| m.actor_id != actor_id);
        let arrival = self.presence.on_connect(now, actor_id);
        self.members.push(Member {
            conn,
            actor_id: actor_id.to_string(),
            version: version.clone(),
            acks: AckTracker::new(self.policy.acks),
            messages: TokenBucket::full(now, self.policy.messages_per_sec),
            errors: TokenBucket::full(now, self.policy.errors_per_sec),
            connected_seq: self.sequence,
            gap: arrival.gap,
        });
        self.idle_since = None;
        let payload = json!({
            "serverVersion": SERVER_VERSION.to_string(),
            "version": version,
            "actorId": actor_id,
            "role": role.as_str(),
            "state": self.game.state().as_str(),
            "stateVersion": self.game.state_version(),
            "stateChecksum": self.game.checksum(),
            "lastSequenceId": self.sequence,
            "snapshot": self.game.snapshot(role),
        });
        let frame = self.frame("CONNECTED", &Scope::Actor(actor_id.to_string()), &payload, &version, None, None, now);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
        if role == Role::Host {
            self.game.host_returned();
        }
        if arrival.was_absent {
            self.game.player_reconnected(actor_id);
        }
        // Present again (also after a recovery, where absence was restored from the snapshot).
        self.game.set_present(now, actor_id, true);
        if self.presence.is_promotion_due() {
            self.try_promote(now);
        }
        self.drain_game(now);
        Ok(())
    }

    /// `conn` went away (closed, failed, or timed out) at `now`. Unknown or already removed
    /// connections are ignored, so the runtime may report a connection more than once.
    pub fn disconnect(&mut self, now: Instant, conn: C) {
        let Some(pos) = self.members.iter().position(|m| m.conn == conn) else { return };
        let gone = self.members.remove(pos);
        if !self.members.iter().any(|m| m.actor_id == gone.actor_id) && self.game.role_of(&gone.actor_id).is_some() {
            self.presence.on_drop(now, &gone.actor_id);
        }
        if self.members.is_empty() {
            self.idle_since = Some(now);
        }
    }

    /// A text or binary message from `conn`.
    pub fn handle_message(&mut self, now: Instant, conn: C, kind: DataKind, data: &[u8]) {
        #[cfg(feature = "fault-injection")]
        #[allow(clippy::panic)] // The test-only fault hook: panicking is its job.
        if data == b"FAULT:panic-room" {
            panic!("injected fault: room");
        }
        let Some(member) = self.members.iter_mut().find(|m| m.conn == conn) else { return };
        if !member.messages.try_take(now, self.policy.messages_per_sec) {
            return self.reject(now, conn, Rejection::new(ErrorCode::RateLimited, "too many messages; slow down"));
        }
        if data.len() > MAX_GAME_MESSAGE_BYTES {
            let message = format!("game messages are limited to {MAX_GAME_MESSAGE_BYTES} bytes");
            return self.reject(now, conn, Rejection::new(ErrorCode::MessageTooLarge, message));
        }
        if kind == DataKind::Binary {
            return self.reject(now, conn, Rejection::new(ErrorCode::InvalidMessage, "messages are JSON text"));
        }
        let actor = member.actor_id.clone();
        let left = match self.apply(now, conn, &actor, data) {
            Ok(left) => left,
            Err(rejection) => {
                self.reject(now, conn, rejection);
                false
            }
        };
        self.drain_game(now);
        if left {
            // The leaver saw its own PLAYER_LEFT; now it leaves the fan-out and the connection.
            self.presence.forget(&actor);
            self.members.retain(|m| m.conn != conn);
            self.outputs.push_back(RoomOutput::Close(conn, ws::close_code::NORMAL, "left the room".into()));
            if self.members.is_empty() {
                self.idle_since = Some(now);
            }
        }
    }

    /// Applies one message; `Ok(true)` when the actor left the room.
    fn apply(&mut self, now: Instant, conn: C, actor: &str, data: &[u8]) -> Result<bool, Rejection> {
        let msg = protocol::parse_client(data)?;
        if msg.room_id != self.id.as_str() {
            return Err(Rejection::new(ErrorCode::RoomNotFound, "roomId is not this connection's room"));
        }
        if msg.actor_id.as_deref().is_some_and(|claimed| claimed != actor) {
            return Err(Rejection::new(ErrorCode::Unauthorized, "actorId does not match your token"));
        }
        if let Some(version) = &msg.version {
            if let Err(e) = Version::parse(version).and_then(Version::negotiate) {
                self.reject_and_close(
                    now,
                    conn,
                    &SERVER_VERSION.to_string(),
                    Rejection::new(ErrorCode::UpgradeRequired, e.to_string()),
                    CLOSE_UPGRADE_REQUIRED,
                );
                return Ok(false);
            }
        }
        match msg.kind.as_str() {
            "ACK" => {
                let ack_id =
                    msg.payload.get("ackId").and_then(Value::as_str).ok_or_else(|| Rejection::new(ErrorCode::MissingField, "payload.ackId is required"))?;
                let matched = self.members.iter_mut().find(|m| m.conn == conn).is_some_and(|m| m.acks.on_ack(ack_id));
                if !matched {
                    self.outputs.push_back(RoomOutput::Count(RoomCount::UnmatchedAck));
                }
                return Ok(false);
            }
            "RECONNECT" => return self.on_reconnect(now, conn, actor, &msg.payload).map(|()| false),
            "HEARTBEAT" => return self.on_heartbeat(now, conn, actor, &msg.payload).map(|()| false),
            _ => {}
        }
        let command = Command::parse(&msg.kind, &msg.payload)?
            .ok_or_else(|| Rejection::new(ErrorCode::UnknownType, format!("unknown message type {}", msg.kind.chars().take(40).collect::<String>())))?;
        let leaving = command == Command::Leave;
        self.game.handle_command(now, actor, command)?;
        Ok(leaving)
    }

    /// Closes the room for good because it sat idle (a host's `ROOM_CLOSE` arrives through
    /// `handle_message`).
    pub fn close(&mut self, now: Instant) {
        self.game.close("idle");
        self.drain_game(now);
    }

    /// Lets every connection go with `code` (the room is leaving this server as it is, to be
    /// served elsewhere: nothing is announced and the game does not change).
    pub fn evict(&mut self, code: u16, reason: &str) {
        for member in self.members.drain(..) {
            self.outputs.push_back(RoomOutput::Close(member.conn, code, reason.to_string()));
        }
    }

    /// When [`GameRoom::handle_timeout`] next has work (never, once closed).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let idle = self.idle_since.map(|t| t + self.policy.idle_timeout);
        let acks = self.members.iter().filter_map(|m| m.acks.poll_timeout()).min();
        let end_of_life = Some(self.epoch.0 + self.policy.max_lifetime);
        [self.game.poll_timeout(), idle, acks, self.presence.poll_timeout(), end_of_life].into_iter().flatten().min()
    }

    /// Advances game timers, the disconnect timeline, ACK retries and the idle reclaim to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.game.handle_timeout(now);
        self.presence.handle_timeout(now);
        while let Some(event) = self.presence.poll_event() {
            match event {
                PresenceEvent::Absent(actor) => self.game.set_present(now, &actor, false),
                PresenceEvent::Warn(actor) => self.game.player_connection_lost(&actor),
                PresenceEvent::Remove(actor) => self.game.remove(now, &actor, "disconnected"),
                PresenceEvent::HostPause => self.game.pause_for_host(now),
                PresenceEvent::HostPromote => self.try_promote(now),
            }
        }
        self.drain_game(now);
        for i in 0..self.members.len() {
            let Some(m) = self.members.get_mut(i) else { break };
            let was_degraded = m.acks.is_degraded();
            let (conn, version) = (m.conn, m.version.clone());
            for action in m.acks.handle_timeout(now) {
                match action {
                    AckAction::Resend(frame) => self.outputs.push_back(RoomOutput::Send(conn, frame)),
                    AckAction::GaveUp { ack_id, attempts } => {
                        let payload = json!({"ackId": ack_id, "attempts": attempts});
                        let frame = self.frame("CONNECTION_WARNING", &Scope::Actor(String::new()), &payload, &version, None, None, now);
                        self.outputs.push_back(RoomOutput::Send(conn, frame));
                    }
                }
            }
            if !was_degraded && self.members.get(i).is_some_and(|m| m.acks.is_degraded()) {
                self.outputs.push_back(RoomOutput::Count(RoomCount::DegradedConnection));
            }
        }
        if self.idle_since.is_some_and(|t| now >= t + self.policy.idle_timeout) {
            self.close(now);
        } else if now >= self.epoch.0 + self.policy.max_lifetime {
            self.game.close("max_lifetime");
            self.drain_game(now);
        }
    }

    /// The next thing for the runtime to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<RoomOutput<C>> {
        let output = self.outputs.pop_front();
        if output.is_none() && self.outputs.capacity() > 0 {
            // Drained: an idle room holds no queue (a broadcast fills one for every member).
            self.outputs = VecDeque::new();
        }
        output
    }

    /// Promotes the first player in seat order who has a connection open and is not
    /// explaining the running turn (the explainer only if nobody else is connected); with
    /// nobody connected the promotion stays due until a player connects or the host returns.
    /// The new host gets a `STATE_SNAPSHOT` with the host's view, current word included.
    fn try_promote(&mut self, now: Instant) {
        let explainer = self.game.explainer().map(|(id, _)| id.to_string());
        let connected: Vec<String> = self.game.players_in_seat_order().filter(|p| self.presence.is_connected(p)).map(str::to_string).collect();
        let candidate = connected.iter().find(|p| Some(p.as_str()) != explainer.as_deref()).or(connected.first()).cloned();
        let Some(new_host) = candidate else { return };
        if !self.game.promote_host(now, &new_host) {
            return;
        }
        self.presence.set_host(now, &new_host);
        self.drain_game(now);
        let conns: Vec<C> = self.members.iter().filter(|m| m.actor_id == new_host).map(|m| m.conn).collect();
        for conn in conns {
            self.send_snapshot(now, conn, &new_host);
        }
    }
}

#[cfg(test)]
mod tests;
