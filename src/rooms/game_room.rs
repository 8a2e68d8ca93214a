//! A game room: the [`Game`] plus its connected members, turned into a fan-out plan.
//!
//! Game events name a scope; this layer numbers them (per-room `sequenceId`), serializes each
//! once per protocol version among its recipients, encodes the WebSocket frame once, and emits
//! one [`RoomOutput::Send`] per recipient, each holding a clone of the same buffer. It also
//! applies the per-connection policies (ACK retries, rate limits) and turns every bad message
//! into an `ERROR` for its sender alone. Sans-IO: `C` is whatever handle the runtime uses for a
//! connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use super::RoomId;
use crate::game::{Command, Event, Game, GameConfig, Role};
use crate::protocol::{self, ErrorCode, Rejection, Scope, ServerMsg, Version, SERVER_VERSION};
use crate::session::{AckAction, AckPolicy, AckTracker, TokenBucket};
use crate::ws::{self, DataKind};

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
    pub messages_per_sec: (f64, f64),
    /// ERROR replies per second and burst; beyond that errors are dropped.
    pub errors_per_sec: (f64, f64),
}

impl Default for RoomPolicy {
    fn default() -> Self {
        RoomPolicy {
            idle_timeout: Duration::from_secs(600),
            acks: AckPolicy::default(),
            messages_per_sec: (20.0, 40.0),
            errors_per_sec: (5.0, 10.0),
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
}

struct Member<C> {
    conn: C,
    actor_id: String,
    version: String,
    acks: AckTracker,
    messages: TokenBucket,
    errors: TokenBucket,
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
    idle_since: Option<Instant>,
    outputs: VecDeque<RoomOutput<C>>,
}

impl<C: Copy + PartialEq> GameRoom<C> {
    /// A new room created at `now` (`unix_ms` being the wall clock at that moment).
    pub fn new(id: RoomId, host_id: &str, host_name: &str, config: GameConfig, policy: RoomPolicy, now: Instant, unix_ms: i64) -> Self {
        let mut room = GameRoom {
            id,
            game: Game::new(host_id, host_name, config),
            policy,
            epoch: (now, unix_ms),
            sequence: 0,
            members: Vec::new(),
            idle_since: Some(now),
            outputs: VecDeque::new(),
        };
        room.drain_game(now);
        room
    }

    /// The room id.
    pub fn id(&self) -> &RoomId {
        &self.id
    }

    /// `actor_id`'s role, if it is in the room.
    pub fn role_of(&self, actor_id: &str) -> Option<Role> {
        self.game.role_of(actor_id)
    }

    /// Public summary: `{roomId, state, playerCount, maxPlayers}`.
    pub fn summary(&self) -> Value {
        json!({
            "roomId": self.id.as_str(),
            "state": self.game.state().as_str(),
            "playerCount": self.game.player_count(),
            "maxPlayers": self.game.max_players(),
        })
    }

    /// Whether the room is finished (closed, or reclaimed after idling) and may be dropped once
    /// its outputs are delivered.
    pub fn is_closed(&self) -> bool {
        self.game.is_closed()
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
        for old in self.members.iter().filter(|m| m.actor_id == actor_id) {
            self.outputs.push_back(RoomOutput::Close(old.conn, CLOSE_REPLACED, "replaced by a newer connection".into()));
        }
        self.members.retain(|m| m.actor_id != actor_id);
        let (msg_rate, msg_burst) = self.policy.messages_per_sec;
        let (err_rate, err_burst) = self.policy.errors_per_sec;
        self.members.push(Member {
            conn,
            actor_id: actor_id.to_string(),
            version: version.clone(),
            acks: AckTracker::new(self.policy.acks),
            messages: TokenBucket::new(now, msg_rate, msg_burst),
            errors: TokenBucket::new(now, err_rate, err_burst),
        });
        self.idle_since = None;
        let payload = json!({
            "serverVersion": SERVER_VERSION.to_string(),
            "version": version,
            "actorId": actor_id,
            "role": role.as_str(),
            "state": self.game.state().as_str(),
            "stateVersion": self.game.state_version(),
            "lastSequenceId": self.sequence,
            "snapshot": self.game.snapshot(role),
        });
        let frame = self.frame("CONNECTED", &Scope::Actor(actor_id.to_string()), &payload, &version, None, None, now);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
        Ok(())
    }

    /// `conn` went away.
    pub fn disconnect(&mut self, now: Instant, conn: C) {
        self.members.retain(|m| m.conn != conn);
        if self.members.is_empty() {
            self.idle_since = Some(now);
        }
    }

    /// A text or binary message from `conn`.
    pub fn handle_message(&mut self, now: Instant, conn: C, kind: DataKind, data: &[u8]) {
        let Some(member) = self.members.iter_mut().find(|m| m.conn == conn) else { return };
        if !member.messages.try_take(now) {
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
        if let Err(rejection) = self.apply(now, conn, &actor, data) {
            self.reject(now, conn, rejection);
        }
        self.drain_game(now);
    }

    fn apply(&mut self, now: Instant, conn: C, actor: &str, data: &[u8]) -> Result<(), Rejection> {
        let msg = protocol::parse_client(data)?;
        if msg.room_id != self.id.as_str() {
            return Err(Rejection::new(ErrorCode::RoomNotFound, "roomId is not this connection's room"));
        }
        if msg.actor_id.as_deref().is_some_and(|claimed| claimed != actor) {
            return Err(Rejection::new(ErrorCode::Unauthorized, "actorId does not match your token"));
        }
        if let Some(version) = &msg.version {
            if let Err(e) = Version::parse(version).and_then(Version::negotiate) {
                self.reject_and_close(now, conn, &SERVER_VERSION.to_string(), Rejection::new(ErrorCode::UpgradeRequired, e.to_string()), CLOSE_UPGRADE_REQUIRED);
                return Ok(());
            }
        }
        if msg.kind == "ACK" {
            let ack_id = msg.payload.get("ackId").and_then(Value::as_str)
                .ok_or_else(|| Rejection::new(ErrorCode::MissingField, "payload.ackId is required"))?;
            if let Some(m) = self.members.iter_mut().find(|m| m.conn == conn) {
                m.acks.on_ack(ack_id);
            }
            return Ok(());
        }
        let command = Command::parse(&msg.kind, &msg.payload)?
            .ok_or_else(|| Rejection::new(ErrorCode::UnknownType, format!("unknown message type {}", msg.kind.chars().take(40).collect::<String>())))?;
        self.game.handle_command(now, actor, command)
    }

    /// Closes the room for good (host command arrives through `handle_message`; this is the
    /// idle reclaim).
    pub fn close(&mut self, now: Instant) {
        self.game.close();
        self.drain_game(now);
    }

    /// When [`GameRoom::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle_since.map(|t| t + self.policy.idle_timeout);
        let acks = self.members.iter().filter_map(|m| m.acks.poll_timeout()).min();
        [self.game.poll_timeout(), idle, acks].into_iter().flatten().min()
    }

    /// Advances game timers, ACK retries and the idle reclaim to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.game.handle_timeout(now);
        self.drain_game(now);
        for m in &mut self.members {
            for action in m.acks.handle_timeout(now) {
                if let AckAction::Resend(frame) = action {
                    self.outputs.push_back(RoomOutput::Send(m.conn, frame));
                }
            }
        }
        if self.idle_since.is_some_and(|t| now >= t + self.policy.idle_timeout) {
            self.close(now);
        }
    }

    /// The next thing for the runtime to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<RoomOutput<C>> {
        self.outputs.pop_front()
    }

    /// Turns the game's events into sends, encoding each once per version among recipients.
    fn drain_game(&mut self, now: Instant) {
        while let Some(event) = self.game.poll_output() {
            self.sequence += 1;
            self.deliver(now, &event);
        }
        if self.game.is_closed() {
            for m in &self.members {
                self.outputs.push_back(RoomOutput::Close(m.conn, ws::close_code::NORMAL, "room closed".into()));
            }
            self.members.clear();
        }
    }

    fn deliver(&mut self, now: Instant, event: &Event) {
        let ack_id = event.requires_ack.then(|| format!("ack_{}", self.sequence));
        // One encoding per protocol version among the recipients (nearly always one).
        let mut plan: Vec<(usize, Bytes)> = Vec::with_capacity(self.members.len());
        let mut encoded: Vec<(&str, Bytes)> = Vec::with_capacity(1);
        for (i, member) in self.members.iter().enumerate() {
            if !self.receives(member, &event.scope) {
                continue;
            }
            let frame = match encoded.iter().find(|(v, _)| *v == member.version) {
                Some((_, frame)) => frame.clone(),
                None => {
                    let frame = self.frame(event.kind, &event.scope, &event.payload, &member.version, Some(self.sequence), ack_id.as_deref(), now);
                    encoded.push((&member.version, frame.clone()));
                    frame
                }
            };
            plan.push((i, frame));
        }
        for (i, frame) in plan {
            let member = &mut self.members[i];
            if let Some(ack_id) = &ack_id {
                member.acks.track(now, ack_id, frame.clone());
            }
            self.outputs.push_back(RoomOutput::Send(member.conn, frame));
        }
    }

    fn receives(&self, member: &Member<C>, scope: &Scope) -> bool {
        let role = self.game.role_of(&member.actor_id);
        match scope {
            Scope::All => true,
            Scope::Host => role == Some(Role::Host),
            Scope::Players => role == Some(Role::Player),
            Scope::Actor(id) => member.actor_id == *id,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn frame(&self, kind: &str, scope: &Scope, payload: &Value, version: &str, sequence_id: Option<u64>, ack_id: Option<&str>, now: Instant) -> Bytes {
        let timestamp = self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as i64;
        let msg = ServerMsg {
            kind,
            room_id: self.id.as_str(),
            timestamp,
            version,
            broadcast: scope.as_str(),
            payload,
            sequence_id,
            requires_ack: ack_id.is_some(),
            ack_id,
        };
        ws::encode_data(DataKind::Text, &protocol::encode_server(&msg))
    }

    /// Sends `ERROR` to `conn` unless its error budget is spent.
    fn reject(&mut self, now: Instant, conn: C, rejection: Rejection) {
        let Some(member) = self.members.iter_mut().find(|m| m.conn == conn) else { return };
        if !member.errors.try_take(now) {
            return;
        }
        let version = member.version.clone();
        let frame = self.error_frame(now, &rejection, &version);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
    }

    fn reject_and_close(&mut self, now: Instant, conn: C, version: &str, rejection: Rejection, code: u16) {
        let frame = self.error_frame(now, &rejection, version);
        self.outputs.push_back(RoomOutput::Send(conn, frame));
        self.outputs.push_back(RoomOutput::Close(conn, code, rejection.message));
        self.members.retain(|m| m.conn != conn);
    }

    fn error_frame(&self, now: Instant, rejection: &Rejection, version: &str) -> Bytes {
        let payload = json!({"code": rejection.code.as_str(), "message": rejection.message});
        self.frame("ERROR", &Scope::Actor(String::new()), &payload, version, None, None, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::words::WordPack;
    use std::sync::Arc;

    fn room(now: Instant) -> GameRoom<u32> {
        let config = GameConfig {
            max_players: 10,
            num_teams: 2,
            rounds: 1,
            round_duration: Duration::from_secs(10),
            countdown: 1,
            score_review: Duration::from_secs(1),
            pack: Arc::new(WordPack::shipped().remove(0)),
            seed: 1,
        };
        GameRoom::new(RoomId::parse("ROOM42").unwrap(), "host", "H", config, RoomPolicy::default(), now, 1_700_000_000_000)
    }

    fn sends(room: &mut GameRoom<u32>) -> Vec<(u32, Value)> {
        std::iter::from_fn(|| room.poll_output())
            .filter_map(|o| match o {
                RoomOutput::Send(c, frame) => Some((c, serde_json::from_slice(&frame[frame_header_len(&frame)..]).unwrap())),
                RoomOutput::Close(..) => None,
            })
            .collect()
    }

    fn frame_header_len(frame: &[u8]) -> usize {
        match frame[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        }
    }

    fn msg(kind: &str, payload: Value) -> Vec<u8> {
        json!({"type": kind, "roomId": "ROOM42", "version": "1.0", "payload": payload}).to_string().into_bytes()
    }

    /// A room with the host (conn 0) and two players (conns 1, 2) connected.
    fn room_of_three(t0: Instant, p2_version: &str) -> GameRoom<u32> {
        let mut r = room(t0);
        r.join(t0, "p1", "A").unwrap();
        r.join(t0, "p2", "B").unwrap();
        r.connect(t0, 0, "host", "1.0").unwrap();
        r.connect(t0, 1, "p1", "1.0").unwrap();
        r.connect(t0, 2, "p2", p2_version).unwrap();
        r
    }

    #[test]
    fn connected_then_scoped_fan_out_with_one_buffer_per_scope() {
        let t0 = Instant::now();
        let mut r = room_of_three(t0, "1.1");
        let hello = sends(&mut r);
        assert_eq!(hello.len(), 3);
        assert_eq!(hello[0].1["type"], "CONNECTED");
        assert_eq!(hello[2].1["version"], "1.1");
        assert_eq!(hello[2].1["payload"]["role"], "player");
        assert!(hello[0].1.get("sequenceId").is_none());
        r.handle_message(t0, 0, DataKind::Text, &msg("START_TEAM_SETUP", json!({})));
        let out: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
        let frames: Vec<&Bytes> = out.iter().map(|o| match o { RoomOutput::Send(_, f) => f, _ => panic!() }).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].as_ptr(), frames[1].as_ptr(), "same version: one shared buffer");
        assert_ne!(frames[0].as_ptr(), frames[2].as_ptr(), "other minor version: its own encoding");
    }

    #[test]
    fn errors_go_to_the_actor_only_and_are_rate_limited() {
        let t0 = Instant::now();
        let mut r = room(t0);
        r.join(t0, "p1", "A").unwrap();
        r.connect(t0, 0, "host", "1.0").unwrap();
        r.connect(t0, 1, "p1", "1.0").unwrap();
        sends(&mut r);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{nope".to_vec(), "INVALID_MESSAGE"),
            (msg("DANCE", json!({})), "UNKNOWN_TYPE"),
            (br#"{"roomId":"ROOM42"}"#.to_vec(), "MISSING_FIELD"),
            (msg("HOST_PAUSE", json!({})), "UNAUTHORIZED"),
            (json!({"type": "JOIN_TEAM", "roomId": "OTHER1", "payload": {}}).to_string().into_bytes(), "ROOM_NOT_FOUND"),
            (json!({"type": "LEAVE_ROOM", "roomId": "ROOM42", "actorId": "host"}).to_string().into_bytes(), "UNAUTHORIZED"),
            (msg("JOIN_TEAM", json!({"teamId": "team_1"})), "INVALID_TRANSITION"),
        ];
        for (i, (bytes, code)) in cases.into_iter().enumerate() {
            r.handle_message(t0 + Duration::from_secs(i as u64), 1, DataKind::Text, &bytes);
            let out = sends(&mut r);
            assert_eq!(out.len(), 1, "{code}");
            assert_eq!(out[0].0, 1);
            assert_eq!(out[0].1["type"], "ERROR");
            assert_eq!(out[0].1["broadcast"], "actor");
            assert_eq!(out[0].1["payload"]["code"], code);
        }
        // A flood of bad messages: error replies stop at the error burst.
        let flood = t0 + Duration::from_secs(100);
        for _ in 0..100 {
            r.handle_message(flood, 1, DataKind::Text, b"{nope");
        }
        assert_eq!(sends(&mut r).len(), 10, "error replies are bounded by the error burst");
        // A flood of valid messages: past the message burst they are refused with RATE_LIMITED.
        let later = flood + Duration::from_secs(100);
        for _ in 0..60 {
            r.handle_message(later, 1, DataKind::Text, &msg("ACK", json!({"ackId": "none"})));
        }
        let out = sends(&mut r);
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|(c, v)| *c == 1 && v["payload"]["code"] == "RATE_LIMITED"));
    }

    #[test]
    fn unsupported_major_gets_upgrade_required_then_4001() {
        let t0 = Instant::now();
        let mut r = room(t0);
        assert!(r.connect(t0, 9, "host", "2.0").is_err());
        let out: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
        assert!(matches!(&out[0], RoomOutput::Send(9, f) if String::from_utf8_lossy(f).contains("UPGRADE_REQUIRED")));
        assert_eq!(out[1], RoomOutput::Close(9, CLOSE_UPGRADE_REQUIRED, "protocol 2.0 is not supported; this server speaks 1.0".into()));
    }

    #[test]
    fn acks_are_retried_and_sequence_ids_increase() {
        let t0 = Instant::now();
        let mut r = room_of_three(t0, "1.0");
        r.handle_message(t0, 0, DataKind::Text, &msg("START_TEAM_SETUP", json!({})));
        r.handle_message(t0, 1, DataKind::Text, &msg("JOIN_TEAM", json!({"teamId": "team_1"})));
        r.handle_message(t0, 2, DataKind::Text, &msg("JOIN_TEAM", json!({"teamId": "team_2"})));
        r.handle_message(t0, 0, DataKind::Text, &msg("HOST_CONFIRM_START", json!({})));
        let mut now = t0;
        let mut seqs = vec![];
        let mut all = sends(&mut r);
        while let Some(at) = r.poll_timeout().filter(|at| *at <= t0 + Duration::from_secs(3)) {
            now = at;
            r.handle_timeout(now);
            all.extend(sends(&mut r));
        }
        for (conn, v) in &all {
            if *conn == 1 {
                if let Some(s) = v.get("sequenceId").and_then(Value::as_u64) {
                    seqs.push(s);
                }
            }
        }
        // Resends repeat their sequence id; first deliveries strictly increase.
        let mut first = seqs.clone();
        first.dedup();
        let mut seen = std::collections::HashSet::new();
        first.retain(|s| seen.insert(*s));
        assert!(first.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let started: Vec<_> = all.iter().filter(|(c, v)| *c == 1 && v["type"] == "ROUND_STARTED").collect();
        assert!(started.len() >= 2, "resent after 2 s without ACK: {}", started.len());
        let ack_id = started[0].1["ackId"].as_str().unwrap().to_string();
        assert_eq!(started[0].1["requiresAck"], true);
        r.handle_message(now, 1, DataKind::Text, &msg("ACK", json!({"ackId": ack_id})));
        // Player 1 acknowledged; only the others are still being retried.
        r.handle_timeout(now + Duration::from_secs(2));
        let resent = sends(&mut r);
        assert!(resent.iter().all(|(c, v)| *c != 1 || v["type"] != "ROUND_STARTED"));
        assert!(resent.iter().any(|(c, v)| *c == 2 && v["type"] == "ROUND_STARTED"));
    }
}
