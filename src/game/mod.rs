//! The PartyFlow game: a server-authoritative state machine, sans-IO.
//!
//! Inputs are joins, commands and the passing of time, each with `now`; outputs are events
//! naming a [`Scope`], drained with [`Game::poll_output`]. Timers (countdown, round clock,
//! score review) are data: [`Game::poll_timeout`] says when [`Game::handle_timeout`] next has
//! work. Nothing here reads a clock, draws a random number (the deck seed comes in) or knows
//! about connections, so every rule is tested with a simulated clock.
//!
//! Call order: after any input, drain `poll_output` until `None`, then re-read `poll_timeout`.
//!
//! This file holds the game's types, its inputs and outputs and the helpers every phase uses;
//! the lobby and team setup are [`setup`], turns and rounds to the end of the game [`turns`],
//! absence rules [`absence`], saving and restoring [`persist`].
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod absence;
mod command;
mod persist;
mod setup;
mod state;
mod turns;
pub mod words;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use command::{Command, Swipe};
pub use persist::{RestoreError, SavedGame};
pub use state::State;
use words::{Deck, WordPack};

use crate::protocol::{ErrorCode, Rejection, Scope};

/// Every event type the game emits (the room layer adds `CONNECTED` and `ERROR`).
pub const EVENT_TYPES: [&str; 28] = [
    "ROOM_CREATED",
    "PLAYER_JOINED",
    "PLAYER_LEFT",
    "TEAM_SETUP_STARTED",
    "PLAYER_ASSIGNED_TEAM",
    "TEAMS_BALANCED",
    "TEAMS_UNBALANCED",
    "SETUP_CANCELLED",
    "COUNTDOWN_TICK",
    "ROUND_STARTED",
    "WORD_REVEALED",
    "WORD_RESULT",
    "TIMER_TICK",
    "GAME_PAUSED",
    "GAME_RESUMED",
    "PACK_EXHAUSTED",
    "ROUND_ENDED",
    "SCORE_SUMMARY",
    "NEXT_ROUND_READY",
    "GAME_ENDED",
    "FINAL_RESULTS",
    "GAME_RESTARTED",
    "ROOM_CLOSED",
    "PLAYER_CONNECTION_LOST",
    "PLAYER_RECONNECTED",
    "HOST_PROMOTED",
    "EXPLAINER_CHANGED",
    "TURN_SKIPPED",
];

/// Spectator seats beyond the player limit.
pub const MAX_SPECTATORS: usize = 10;
const TEAM_STYLES: [(&str, &str); 4] = [("Team Red", "#FF0000"), ("Team Blue", "#0000FF"), ("Team Green", "#00AA00"), ("Team Yellow", "#FFCC00")];
const AVATAR_COLORS: [&str; 10] = ["#FF5733", "#33A1FF", "#8E44AD", "#27AE60", "#F1C40F", "#E67E22", "#1ABC9C", "#E84393", "#2C3E50", "#7F8C8D"];
const SECOND: Duration = Duration::from_secs(1);

/// Settings of one room's game.
#[derive(Debug, Clone)]
pub struct GameConfig {
    /// Most players (1-10).
    pub max_players: usize,
    /// Teams (2-4), unless START_TEAM_SETUP says otherwise.
    pub num_teams: usize,
    /// Rounds; in each round every team explains once.
    pub rounds: u32,
    /// Length of one team's turn.
    pub round_duration: Duration,
    /// Countdown ticks before a turn (3 → "3, 2, 1").
    pub countdown: u32,
    /// How long scores are shown between turns.
    pub score_review: Duration,
    /// The word pack.
    pub pack: Arc<WordPack>,
    /// Seed of the deck's shuffle.
    pub seed: u64,
}

/// What someone is in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Created the room; runs the game; sees the words.
    Host,
    /// Plays in a team.
    Player,
    /// Joined after setup began: watches `all` broadcasts, may not act.
    Spectator,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Player => "player",
            Role::Spectator => "spectator",
        }
    }

    /// Parses a wire name.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "host" => Some(Role::Host),
            "player" => Some(Role::Player),
            "spectator" => Some(Role::Spectator),
            _ => None,
        }
    }
}

/// An event for the room layer to sequence, serialize once per scope and deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Message type.
    pub kind: &'static str,
    /// Recipients.
    pub scope: Scope,
    /// Type-specific data.
    pub payload: Value,
    /// Whether recipients must acknowledge it.
    pub requires_ack: bool,
}

#[derive(Debug, Clone)]
struct Participant {
    id: String,
    name: String,
    role: Role,
    team: Option<usize>,
    avatar: &'static str,
    words_explained: u32,
}

#[derive(Debug, Clone)]
struct Team {
    players: Vec<String>,
    score: i64,
    explainer_turns: usize,
}

/// Where the round clock is.
#[derive(Debug, Clone, Copy)]
enum Clock {
    Running { ends_at: Instant },
    Paused { remaining: Duration },
}

#[derive(Debug, Clone)]
struct Round {
    turn: u32,
    team: usize,
    explainer: String,
    clock: Clock,
    word: Option<usize>,
    guessed: u32,
    skipped: u32,
    points: i64,
    started_at: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Countdown,
    Tick,
    RoundEnd,
    Review,
}

const TIMERS: [Timer; 4] = [Timer::Countdown, Timer::Tick, Timer::RoundEnd, Timer::Review];

/// One room's game.
#[derive(Debug)]
pub struct Game {
    host_id: String,
    config: GameConfig,
    num_teams: usize,
    state: State,
    state_version: u64,
    participants: Vec<Participant>,
    teams: Vec<Team>,
    deck: Deck,
    games_started: u64,
    turns_played: u32,
    round: Option<Round>,
    countdown_left: u32,
    timers: [Option<Instant>; 4],
    tick_remaining: u64,
    game_started_at: Option<Instant>,
    words_played: u32,
    /// Participants whose connection is gone past the silent grace: never chosen to explain.
    absent: Vec<String>,
    /// Players back after their session expired: they watch until the next turn begins.
    benched: Vec<String>,
    /// The next turn waits for a player to come back (nobody could explain).
    waiting_for_players: bool,
    /// Pause the next round as soon as it starts, with this reason (`host_disconnected`:
    /// the host is away; `server_restarted`: recovered during a countdown).
    pause_when_round_starts: Option<&'static str>,
    /// Why the room was closed (`ROOM_CLOSED.reason`), once it is.
    closed_reason: Option<String>,
    outputs: VecDeque<Event>,
}

fn reject(code: ErrorCode, message: impl Into<String>) -> Rejection {
    Rejection::new(code, message)
}

fn invalid(message: impl Into<String>) -> Rejection {
    reject(ErrorCode::InvalidTransition, message)
}

impl Game {
    /// A new room hosted by `host_id`; emits `ROOM_CREATED`.
    pub fn new(host_id: &str, host_name: &str, config: GameConfig) -> Game {
        let deck = Deck::shuffled(config.pack.words.len(), config.seed);
        let mut game = Game {
            host_id: host_id.to_string(),
            num_teams: config.num_teams,
            state: State::RoomCreated,
            state_version: 1,
            participants: vec![Participant {
                id: host_id.to_string(),
                name: host_name.to_string(),
                role: Role::Host,
                team: None,
                avatar: AVATAR_COLORS[0],
                words_explained: 0,
            }],
            teams: Vec::new(),
            deck,
            games_started: 0,
            turns_played: 0,
            round: None,
            countdown_left: 0,
            timers: [None; 4],
            tick_remaining: 0,
            game_started_at: None,
            words_played: 0,
            absent: Vec::new(),
            benched: Vec::new(),
            waiting_for_players: false,
            pause_when_round_starts: None,
            closed_reason: None,
            outputs: VecDeque::new(),
            config,
        };
        let payload = json!({
            "hostId": host_id,
            "hostName": host_name,
            "maxPlayers": game.config.max_players,
            "numTeams": game.config.num_teams,
            "rounds": game.config.rounds,
            "roundDurationSec": game.config.round_duration.as_secs(),
            "wordPackId": game.config.pack.id,
        });
        game.emit_all("ROOM_CREATED", payload);
        game
    }

    // ----- getters -------------------------------------------------------------------------

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Incremented on every state change.
    pub fn state_version(&self) -> u64 {
        self.state_version
    }

    /// `id`'s current role, if `id` is in the room.
    pub fn role_of(&self, id: &str) -> Option<Role> {
        self.participant(id).map(|p| p.role)
    }

    /// Everyone seated: host, players and spectators.
    pub fn participant_count(&self) -> usize {
        self.participants.len()
    }

    /// Players (not host, not spectators).
    pub fn player_count(&self) -> usize {
        self.count(Role::Player)
    }

    /// The player limit.
    pub fn max_players(&self) -> usize {
        self.config.max_players
    }

    /// Whether the room was closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::RoomClosed
    }

    /// The room as `role` may see it (the current word only for the host).
    pub fn snapshot(&self, role: Role) -> Value {
        let round = self.round.as_ref().map(|r| {
            json!({
                "roundNumber": self.round_number(r.turn),
                "turnNumber": r.turn,
                "activeTeamId": team_id(r.team),
                "explainerPlayerId": r.explainer,
                "paused": matches!(r.clock, Clock::Paused { .. }),
            })
        });
        let mut snapshot = json!({
            "hostId": self.host_id,
            "settings": {
                "maxPlayers": self.config.max_players,
                "numTeams": self.num_teams,
                "rounds": self.config.rounds,
                "roundDurationSec": self.config.round_duration.as_secs(),
                "wordPackId": self.config.pack.id,
            },
            "participants": self.participants.iter().map(|p| json!({
                "id": p.id, "name": p.name, "role": p.role.as_str(),
                "teamId": p.team.map(team_id), "avatarColor": p.avatar,
            })).collect::<Vec<_>>(),
            "teams": self.teams_json(),
            "round": round,
        });
        if role == Role::Host {
            if let Some(word) = self.round.as_ref().and_then(|r| r.word) {
                crate::protocol::set_field(&mut snapshot, "currentWord", self.word_json(word));
            }
        }
        snapshot
    }

    // ----- inputs --------------------------------------------------------------------------

    /// Seats `id` (named `name`): a player before team setup, a spectator after.
    pub fn join(&mut self, id: &str, name: &str) -> Result<Role, Rejection> {
        if self.is_closed() {
            return Err(reject(ErrorCode::RoomNotFound, "the room is closed"));
        }
        let role = if !self.state.is_in_game() && self.player_count() < self.config.max_players {
            Role::Player
        } else if self.state.is_in_game() && self.count(Role::Spectator) < MAX_SPECTATORS {
            Role::Spectator
        } else {
            return Err(reject(ErrorCode::RoomFull, "no seat left in this room"));
        };
        let avatar = AVATAR_COLORS.iter().cycle().nth(self.participants.len()).copied().unwrap_or_default();
        self.participants.push(Participant { id: id.to_string(), name: name.to_string(), role, team: None, avatar, words_explained: 0 });
        if self.state == State::RoomCreated {
            self.transition(State::Lobby);
        }
        let payload = json!({
            "playerId": id, "playerName": name, "playerCount": self.player_count(),
            "avatarColor": avatar, "role": role.as_str(),
        });
        self.emit_all("PLAYER_JOINED", payload);
        Ok(role)
    }

    /// Removes `id` (a player or spectator) at `now`; `reason` is `voluntary` or
    /// `disconnected`. A removed explainer is replaced (or the turn ends).
    pub fn remove(&mut self, now: Instant, id: &str, reason: &str) {
        let Some(pos) = self.participants.iter().position(|p| p.id == id && p.role != Role::Host) else { return };
        let gone = self.participants.remove(pos);
        if let Some(team) = gone.team.and_then(|t| self.teams.get_mut(t)) {
            team.players.retain(|p| *p != gone.id);
        }
        let payload = json!({
            "playerId": gone.id, "playerName": gone.name,
            "playerCount": self.player_count(), "reason": reason,
        });
        self.emit_all("PLAYER_LEFT", payload);
        self.absent.retain(|a| *a != gone.id);
        self.benched.retain(|a| *a != gone.id);
        if matches!(self.state, State::TeamSetup | State::ReadyToStart) {
            self.check_balance();
        }
        self.repair_explainer(now);
    }

    /// Applies `command` from `actor`; the first of two racing identical commands wins and the
    /// second fails with `INVALID_TRANSITION`.
    pub fn handle_command(&mut self, now: Instant, actor: &str, command: Command) -> Result<(), Rejection> {
        let role = self.role_of(actor).ok_or_else(|| reject(ErrorCode::Unauthorized, "not a member of this room"))?;
        if self.is_closed() {
            return Err(reject(ErrorCode::RoomNotFound, "the room is closed"));
        }
        let host_only = !matches!(command, Command::JoinTeam { .. } | Command::Leave);
        if host_only && role != Role::Host {
            return Err(reject(ErrorCode::Unauthorized, "only the host may do this"));
        }
        match command {
            Command::StartTeamSetup { num_teams } => self.start_team_setup(num_teams),
            Command::JoinTeam { team_id } => self.join_team(actor, role, &team_id),
            Command::ConfirmStart => self.confirm_start(now),
            Command::CancelSetup => self.cancel_setup(),
            Command::SwipeWord { word_id, action } => self.swipe(now, &word_id, action),
            Command::Pause => self.pause_with(now, "host"),
            Command::Resume => self.resume(now),
            Command::Restart => self.restart(),
            Command::CloseRoom => {
                self.close("closed by host");
                Ok(())
            }
            Command::Leave => {
                if role == Role::Host {
                    return Err(reject(ErrorCode::Unauthorized, "the host closes the room with ROOM_CLOSE"));
                }
                self.remove(now, actor, "voluntary");
                Ok(())
            }
        }
    }

    /// Closes the room (`closed by host`, `idle`): `ROOM_CLOSED {reason}` to everyone.
    pub fn close(&mut self, reason: &str) {
        if self.is_closed() {
            return;
        }
        self.timers = [None; 4];
        self.waiting_for_players = false;
        self.transition(State::RoomClosed);
        self.closed_reason = Some(reason.to_string());
        self.emit_all("ROOM_CLOSED", json!({ "reason": reason }));
    }

    /// Why the room was closed, once it is.
    pub fn closed_reason(&self) -> Option<&str> {
        self.closed_reason.as_deref()
    }

    /// When [`Game::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// Fires every timer due at `now`, earliest first. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((timer, at)) = self.due(now) {
            self.set_timer(timer, None);
            match timer {
                Timer::Countdown => self.countdown_step(at),
                Timer::Tick => self.tick(at),
                Timer::RoundEnd => self.end_round(at, "timer_expired"),
                Timer::Review => self.after_review(at),
            }
        }
    }

    /// The next output event.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Event> {
        self.outputs.pop_front()
    }

    // ----- helpers -------------------------------------------------------------------------

    fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    fn count(&self, role: Role) -> usize {
        self.participants.iter().filter(|p| p.role == role).count()
    }

    fn round_number(&self, turn: u32) -> u32 {
        (turn.max(1) - 1) / self.num_teams.max(1) as u32 + 1
    }

    fn teams_json(&self) -> Vec<Value> {
        self.teams
            .iter()
            .enumerate()
            .zip(TEAM_STYLES.iter().cycle())
            .map(|((i, t), &(name, color))| json!({"id": team_id(i), "name": name, "color": color, "players": t.players, "score": t.score}))
            .collect()
    }

    fn leaderboard(&self) -> Vec<Value> {
        let mut order: Vec<(usize, i64, &str)> =
            self.teams.iter().zip(TEAM_STYLES.iter().cycle()).enumerate().map(|(i, (t, &(name, _)))| (i, t.score, name)).collect();
        order.sort_by_key(|&(_, score, _)| std::cmp::Reverse(score));
        order
            .iter()
            .map(|&(i, score, name)| {
                let rank = self.teams.iter().filter(|t| t.score > score).count().saturating_add(1);
                json!({"teamId": team_id(i), "teamName": name, "score": score, "rank": rank})
            })
            .collect()
    }

    fn word_json(&self, word: usize) -> Value {
        let w = self.config.pack.words.get(word);
        json!({
            "wordId": word_id_of(word),
            "wordText": w.map(|w| w.text.as_str()),
            "difficulty": w.map(|w| w.difficulty),
        })
    }

    fn transition(&mut self, state: State) {
        self.state = state;
        self.state_version += 1;
    }

    /// Queues an event; every payload carries the room's `state` and `stateVersion`, so a
    /// client can always tell which state an event belongs to.
    fn emit(&mut self, kind: &'static str, scope: Scope, mut payload: Value) {
        crate::protocol::set_field(&mut payload, "state", self.state.as_str());
        crate::protocol::set_field(&mut payload, "stateVersion", self.state_version);
        self.outputs.push_back(Event { kind, scope, payload, requires_ack: false });
    }

    fn emit_all(&mut self, kind: &'static str, payload: Value) {
        self.emit(kind, Scope::All, payload);
    }

    fn emit_acked(&mut self, kind: &'static str, payload: Value) {
        self.emit_all(kind, payload);
        if let Some(last) = self.outputs.back_mut() {
            last.requires_ack = true;
        }
    }

    fn set_timer(&mut self, timer: Timer, at: Option<Instant>) {
        if let Some(slot) = TIMERS.iter().position(|t| *t == timer).and_then(|i| self.timers.get_mut(i)) {
            *slot = at;
        }
    }

    fn due(&self, now: Instant) -> Option<(Timer, Instant)> {
        TIMERS.iter().zip(self.timers.iter()).filter_map(|(t, at)| at.filter(|at| *at <= now).map(|at| (*t, at))).min_by_key(|(_, at)| *at)
    }
}

fn team_id(index: usize) -> String {
    format!("team_{}", index + 1)
}

fn word_id_of(index: usize) -> String {
    format!("word_{index}")
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

#[cfg(test)]
mod tests;
