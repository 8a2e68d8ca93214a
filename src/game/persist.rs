//! The game's state as data, for write-behind persistence and crash recovery.
//!
//! [`Game::save`] captures everything needed to continue the game (timers as remaining
//! durations, the deck as its seed and how far it was dealt); [`Game::restore`] rebuilds the
//! game at a new `now`. A turn that was running comes back paused (`GAME_PAUSED` with reason
//! `server_restarted`) for the host to resume; a countdown pauses as its round starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::words::{Deck, WordPack};
use super::{Clock, Game, GameConfig, Participant, Role, Round, State, Team, AVATAR_COLORS};

/// A game's settings as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedSettings {
    /// Most players.
    pub max_players: usize,
    /// Teams asked for at creation.
    pub num_teams: usize,
    /// Rounds.
    pub rounds: u32,
    /// Turn length, ms.
    pub round_duration_ms: u64,
    /// Countdown ticks.
    pub countdown: u32,
    /// Score review, ms.
    pub score_review_ms: u64,
    /// The word pack's id.
    pub word_pack_id: String,
    /// The deck's base seed.
    pub seed: u64,
}

/// One participant as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedParticipant {
    /// Actor id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `host`, `player` or `spectator`.
    pub role: String,
    /// Team index.
    pub team: Option<usize>,
    /// Avatar colour.
    pub avatar: String,
    /// Words explained this game.
    pub words_explained: u32,
}

/// One team as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedTeam {
    /// Player ids in join order.
    pub players: Vec<String>,
    /// Score.
    pub score: i64,
    /// Turns this team has explained (the rotation).
    pub explainer_turns: usize,
}

/// The running turn as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedRound {
    /// Turn number.
    pub turn: u32,
    /// Team index.
    pub team: usize,
    /// Explainer id.
    pub explainer: String,
    /// Time left on the clock, ms.
    pub remaining_ms: u64,
    /// Whether the clock was running.
    pub running: bool,
    /// The word on screen (index into the pack).
    pub word: Option<usize>,
    /// Words guessed.
    pub guessed: u32,
    /// Words skipped.
    pub skipped: u32,
    /// Points this turn.
    pub points: i64,
    /// Time since the turn started, ms.
    pub elapsed_ms: u64,
}

/// Everything needed to continue a game.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedGame {
    /// The current host.
    pub host_id: String,
    /// Settings.
    pub settings: SavedSettings,
    /// Teams in play.
    pub num_teams: usize,
    /// State (wire name).
    pub state: String,
    /// State version.
    pub state_version: u64,
    /// Participants in seat order.
    pub participants: Vec<SavedParticipant>,
    /// Teams.
    pub teams: Vec<SavedTeam>,
    /// Games started before this one (the deck's seed offset).
    pub games_started: u64,
    /// Words dealt from the deck.
    pub deck_dealt: usize,
    /// Turns begun.
    pub turns_played: u32,
    /// The running turn.
    pub round: Option<SavedRound>,
    /// Countdown ticks left.
    pub countdown_left: u32,
    /// Timers (countdown, tick, round end, review): time left, ms.
    pub timers_ms: [Option<u64>; 4],
    /// The next tick's remaining-seconds value.
    pub tick_remaining: u64,
    /// Time since the game started, ms.
    pub game_elapsed_ms: Option<u64>,
    /// Words played this game.
    pub words_played: u32,
    /// The next turn waits for a player.
    pub waiting_for_players: bool,
    /// Participants away past the grace (never chosen to explain until they return).
    #[serde(default)]
    pub absent: Vec<String>,
    /// Players sitting out the current turn.
    #[serde(default)]
    pub benched: Vec<String>,
}

/// Why a saved game cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// An unknown state name.
    #[error("unknown state {0}")]
    State(String),
    /// An unknown role name.
    #[error("unknown role {0}")]
    Role(String),
    /// The word pack is not shipped with this server.
    #[error("word pack {0} is not available")]
    Pack(String),
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Game {
    /// The game as data at `now`.
    pub fn save(&self, now: Instant) -> SavedGame {
        let c = &self.config;
        SavedGame {
            host_id: self.host_id.clone(),
            settings: SavedSettings {
                max_players: c.max_players,
                num_teams: c.num_teams,
                rounds: c.rounds,
                round_duration_ms: ms(c.round_duration),
                countdown: c.countdown,
                score_review_ms: ms(c.score_review),
                word_pack_id: c.pack.id.clone(),
                seed: c.seed,
            },
            num_teams: self.num_teams,
            state: self.state.as_str().to_string(),
            state_version: self.state_version,
            participants: self
                .participants
                .iter()
                .map(|p| SavedParticipant {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    role: p.role.as_str().to_string(),
                    team: p.team,
                    avatar: p.avatar.to_string(),
                    words_explained: p.words_explained,
                })
                .collect(),
            teams: self.teams.iter().map(|t| SavedTeam { players: t.players.clone(), score: t.score, explainer_turns: t.explainer_turns }).collect(),
            games_started: self.games_started,
            deck_dealt: self.deck.dealt(),
            turns_played: self.turns_played,
            round: self.round.as_ref().map(|r| {
                let (remaining, running) = match r.clock {
                    Clock::Running { ends_at } => (ends_at.saturating_duration_since(now), true),
                    Clock::Paused { remaining } => (remaining, false),
                };
                SavedRound {
                    turn: r.turn,
                    team: r.team,
                    explainer: r.explainer.clone(),
                    remaining_ms: ms(remaining),
                    running,
                    word: r.word,
                    guessed: r.guessed,
                    skipped: r.skipped,
                    points: r.points,
                    elapsed_ms: ms(now.saturating_duration_since(r.started_at)),
                }
            }),
            countdown_left: self.countdown_left,
            timers_ms: self.timers.map(|t| t.map(|at| ms(at.saturating_duration_since(now)))),
            tick_remaining: self.tick_remaining,
            game_elapsed_ms: self.game_started_at.map(|t| ms(now.saturating_duration_since(t))),
            words_played: self.words_played,
            waiting_for_players: self.waiting_for_players,
            absent: self.absent.clone(),
            benched: self.benched.clone(),
        }
    }

    /// Rebuilds a saved game at `now`, with `packs` the word packs this server ships. A turn
    /// whose clock was running comes back paused (`GAME_PAUSED`, reason `server_restarted`).
    pub fn restore(saved: &SavedGame, packs: &[Arc<WordPack>], now: Instant) -> Result<Game, RestoreError> {
        let s = &saved.settings;
        let pack = packs.iter().find(|p| p.id == s.word_pack_id).cloned().ok_or_else(|| RestoreError::Pack(s.word_pack_id.clone()))?;
        let config = GameConfig {
            max_players: s.max_players,
            num_teams: s.num_teams,
            rounds: s.rounds,
            round_duration: Duration::from_millis(s.round_duration_ms),
            countdown: s.countdown,
            score_review: Duration::from_millis(s.score_review_ms),
            pack,
            seed: s.seed,
        };
        let state = State::parse(&saved.state).ok_or_else(|| RestoreError::State(saved.state.clone()))?;
        let mut participants = Vec::with_capacity(saved.participants.len());
        for p in &saved.participants {
            let role = Role::parse(&p.role).ok_or_else(|| RestoreError::Role(p.role.clone()))?;
            let avatar = AVATAR_COLORS.iter().copied().find(|a| *a == p.avatar).unwrap_or(AVATAR_COLORS[0]);
            participants.push(Participant { id: p.id.clone(), name: p.name.clone(), role, team: p.team, avatar, words_explained: p.words_explained });
        }
        let mut deck = Deck::shuffled(config.pack.words.len(), config.seed.wrapping_add(saved.games_started));
        deck.skip(saved.deck_dealt);
        let later = |ms: u64| now.checked_add(Duration::from_millis(ms)).unwrap_or(now);
        let earlier = |ms: u64| now.checked_sub(Duration::from_millis(ms)).unwrap_or(now);
        let round = saved.round.as_ref().map(|r| Round {
            turn: r.turn,
            team: r.team,
            explainer: r.explainer.clone(),
            clock: Clock::Paused { remaining: Duration::from_millis(r.remaining_ms) },
            word: r.word,
            guessed: r.guessed,
            skipped: r.skipped,
            points: r.points,
            started_at: earlier(r.elapsed_ms),
        });
        let mut game = Game {
            host_id: saved.host_id.clone(),
            num_teams: saved.num_teams,
            state,
            state_version: saved.state_version,
            participants,
            teams: saved.teams.iter().map(|t| Team { players: t.players.clone(), score: t.score, explainer_turns: t.explainer_turns }).collect(),
            deck,
            games_started: saved.games_started,
            turns_played: saved.turns_played,
            round,
            countdown_left: saved.countdown_left,
            timers: saved.timers_ms.map(|t| t.map(later)),
            tick_remaining: saved.tick_remaining,
            game_started_at: saved.game_elapsed_ms.map(earlier),
            words_played: saved.words_played,
            absent: saved.absent.clone(),
            benched: saved.benched.clone(),
            waiting_for_players: saved.waiting_for_players,
            pause_when_round_starts: (state == State::RoundStarting).then_some("server_restarted"),
            closed_reason: None,
            outputs: Default::default(),
            config,
        };
        if state == State::RoundActive {
            // The clock stopped when the server did; it stays stopped until the host resumes.
            game.state = State::RoundActive;
            if let Some(r) = game.round.as_mut() {
                r.clock = Clock::Running { ends_at: now + Duration::from_millis(saved.round.as_ref().map_or(0, |r| r.remaining_ms)) };
            }
            let _ = game.pause_with(now, "server_restarted");
        }
        Ok(game)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::Command;

    #[test]
    fn a_running_turn_survives_a_save_and_comes_back_paused() {
        let t0 = Instant::now();
        let pack = Arc::new(WordPack::shipped().remove(0));
        let config = GameConfig {
            max_players: 10,
            num_teams: 2,
            rounds: 2,
            round_duration: Duration::from_secs(60),
            countdown: 1,
            score_review: Duration::from_secs(5),
            pack: pack.clone(),
            seed: 9,
        };
        let mut game = Game::new("host", "H", config);
        game.join("a", "A").unwrap();
        game.join("b", "B").unwrap();
        game.handle_command(t0, "host", Command::StartTeamSetup { num_teams: None }).unwrap();
        game.handle_command(t0, "a", Command::JoinTeam { team_id: "team_1".into() }).unwrap();
        game.handle_command(t0, "b", Command::JoinTeam { team_id: "team_2".into() }).unwrap();
        game.handle_command(t0, "host", Command::ConfirmStart).unwrap();
        let t1 = t0 + Duration::from_secs(1);
        game.handle_timeout(t1);
        let word = game.snapshot(Role::Host)["currentWord"]["wordId"].as_str().unwrap().to_string();
        game.handle_command(t1, "host", Command::SwipeWord { word_id: word, action: crate::game::Swipe::Guessed }).unwrap();
        while game.poll_output().is_some() {}
        let t2 = t1 + Duration::from_secs(10);
        let saved = game.save(t2);
        let json = serde_json::to_string(&saved).unwrap();
        let back: SavedGame = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved, "field for field through JSON");
        let later = t2 + Duration::from_secs(100);
        let mut restored = Game::restore(&back, &[pack], later).unwrap();
        assert_eq!(restored.state(), State::RoundPaused);
        let paused = restored.poll_output().unwrap();
        assert_eq!((paused.kind, paused.payload["reason"].as_str()), ("GAME_PAUSED", Some("server_restarted")));
        assert_eq!(paused.payload["remainingSeconds"], 50);
        assert_eq!(restored.scores(), game.scores());
        assert_eq!(restored.snapshot(Role::Host)["currentWord"], game.snapshot(Role::Host)["currentWord"]);
        let mut resaved = restored.save(later);
        assert_eq!(resaved.state, "ROUND_PAUSED");
        assert_eq!(resaved.state_version, saved.state_version + 1);
        resaved.state = saved.state.clone();
        resaved.state_version = saved.state_version;
        resaved.timers_ms = saved.timers_ms;
        resaved.tick_remaining = saved.tick_remaining;
        if let (Some(a), Some(b)) = (resaved.round.as_mut(), saved.round.as_ref()) {
            a.running = b.running;
            a.elapsed_ms = b.elapsed_ms;
        }
        assert_eq!(resaved, saved, "nothing else changed: scores, teams, deck, turn");
        // The deck continues where it was: no word is dealt twice.
        restored.handle_command(later, "host", Command::Resume).unwrap();
        let next = restored.snapshot(Role::Host)["currentWord"]["wordId"].as_str().unwrap().to_string();
        restored.handle_command(later, "host", Command::SwipeWord { word_id: next.clone(), action: crate::game::Swipe::Skipped }).unwrap();
        let dealt = restored.snapshot(Role::Host)["currentWord"]["wordId"].as_str().unwrap().to_string();
        assert_ne!(dealt, next);
        assert_eq!(restored.save(later).deck_dealt, saved.deck_dealt + 1);
    }
}
