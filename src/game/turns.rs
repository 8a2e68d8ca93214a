//! Turns and rounds: the countdown, the explainer's words and swipes, pauses, the clock, the
//! score review, the end of the game and a restart.

use super::*;

impl Game {
    /// Picks the next team with a player who can explain and starts its countdown, or ends
    /// the game. Teams nobody can explain for are skipped; if no team has anyone, the turn
    /// waits (in `READY_FOR_NEXT`) for a player to come back.
    pub(super) fn begin_turn(&mut self, now: Instant) {
        self.benched.clear();
        let total_turns = self.config.rounds * self.num_teams as u32;
        if self.turns_played < total_turns && !self.anyone_can_explain() {
            self.waiting_for_players = true;
            return;
        }
        self.waiting_for_players = false;
        while self.turns_played < total_turns {
            let turn = self.turns_played + 1;
            let team = (self.turns_played as usize) % self.num_teams;
            self.turns_played = turn;
            let Some(explainer) = self.next_explainer(team) else {
                if self.teams.get(team).is_some_and(|t| !t.players.is_empty()) {
                    self.emit_all("TURN_SKIPPED", json!({"turnNumber": turn, "teamId": team_id(team), "reason": "no_connected_player"}));
                }
                continue;
            };
            self.round = Some(Round {
                turn,
                team,
                explainer,
                clock: Clock::Paused { remaining: self.config.round_duration },
                word: None,
                guessed: 0,
                skipped: 0,
                points: 0,
                started_at: now,
            });
            self.countdown_left = self.config.countdown;
            self.transition(State::RoundStarting);
            self.countdown_step(now);
            return;
        }
        self.end_game(now);
    }

    pub(super) fn countdown_step(&mut self, now: Instant) {
        if self.countdown_left == 0 {
            return self.start_round(now);
        }
        let Some(r) = &self.round else { return };
        let payload = json!({
            "count": self.countdown_left,
            "roundNumber": self.round_number(r.turn),
            "turnNumber": r.turn,
            "activeTeamId": team_id(r.team),
            "explainerPlayerId": r.explainer,
        });
        self.emit_all("COUNTDOWN_TICK", payload);
        self.countdown_left -= 1;
        self.set_timer(Timer::Countdown, Some(now + SECOND));
    }

    pub(super) fn start_round(&mut self, now: Instant) {
        let duration = self.config.round_duration;
        let Some(r) = self.round.as_mut() else { return };
        r.clock = Clock::Running { ends_at: now + duration };
        r.started_at = now;
        let payload = json!({
            "roundNumber": (r.turn - 1) / self.num_teams as u32 + 1,
            "turnNumber": r.turn,
            "activeTeamId": team_id(r.team),
            "explainerPlayerId": r.explainer,
            "roundDurationSec": duration.as_secs(),
            "wordPackId": self.config.pack.id,
        });
        self.transition(State::RoundActive);
        self.emit_acked("ROUND_STARTED", payload);
        self.schedule_clock(now);
        self.reveal_next_word(now);
        if let Some(reason) = self.pause_when_round_starts.take() {
            let _ = self.pause_with(now, reason);
        }
    }

    /// Deals the next word to the host, or ends the round when the pack is exhausted.
    pub(super) fn reveal_next_word(&mut self, now: Instant) {
        let Some(word) = self.deck.deal() else {
            let round_number = self.round.as_ref().map(|r| self.round_number(r.turn));
            self.emit_all("PACK_EXHAUSTED", json!({"roundNumber": round_number, "wordPackId": self.config.pack.id}));
            return self.end_round(now, "pack_exhausted");
        };
        if let Some(r) = self.round.as_mut() {
            r.word = Some(word);
        }
        let mut payload = self.word_json(word);
        crate::protocol::set_field(&mut payload, "remainingInPack", self.deck.remaining());
        self.emit("WORD_REVEALED", Scope::Host, payload);
    }

    pub(super) fn swipe(&mut self, now: Instant, word_id: &str, action: Swipe) -> Result<(), Rejection> {
        if self.state != State::RoundActive {
            return Err(invalid(format!("no word to swipe in {}", self.state.as_str())));
        }
        let Some(r) = self.round.as_mut() else { return Err(invalid("no round")) };
        if r.word.map(word_id_of) != Some(word_id.to_string()) {
            return Err(invalid(format!("{word_id} is not the current word (already swiped?)")));
        }
        r.word = None;
        let points = match action {
            Swipe::Guessed => {
                r.guessed += 1;
                1
            }
            Swipe::Skipped => {
                r.skipped += 1;
                0
            }
        };
        r.points += points;
        let (team, explainer) = (r.team, r.explainer.clone());
        self.words_played += 1;
        if action == Swipe::Guessed {
            if let Some(p) = self.participants.iter_mut().find(|p| p.id == explainer) {
                p.words_explained += 1;
            }
        }
        let score = self.teams.get_mut(team).map_or(0, |t| {
            t.score += points;
            t.score
        });
        let payload = json!({
            "wordId": word_id, "action": action.as_str(), "teamId": team_id(team),
            "pointsAwarded": points, "newScore": score,
        });
        self.emit_all("WORD_RESULT", payload);
        self.reveal_next_word(now);
        Ok(())
    }

    pub(super) fn pause_with(&mut self, now: Instant, reason: &str) -> Result<(), Rejection> {
        if self.state != State::RoundActive {
            return Err(invalid(format!("nothing to pause in {}", self.state.as_str())));
        }
        let Some(r) = self.round.as_mut() else { return Err(invalid("no round")) };
        let Clock::Running { ends_at } = r.clock else { return Err(invalid("already paused")) };
        let remaining = ends_at.saturating_duration_since(now);
        r.clock = Clock::Paused { remaining };
        self.set_timer(Timer::Tick, None);
        self.set_timer(Timer::RoundEnd, None);
        self.transition(State::RoundPaused);
        let message = match reason {
            "host_disconnected" => "Waiting for the host to reconnect",
            _ => "Paused by the host",
        };
        self.emit_all(
            "GAME_PAUSED",
            json!({
                "reason": reason, "message": message, "remainingMs": remaining.as_millis() as u64,
                "remainingSeconds": ceil_secs(remaining),
            }),
        );
        Ok(())
    }

    pub(super) fn resume(&mut self, now: Instant) -> Result<(), Rejection> {
        if self.state != State::RoundPaused {
            return Err(invalid(format!("nothing to resume in {}", self.state.as_str())));
        }
        let Some(r) = self.round.as_mut() else { return Err(invalid("no round")) };
        let Clock::Paused { remaining } = r.clock else { return Err(invalid("not paused")) };
        r.clock = Clock::Running { ends_at: now + remaining };
        self.transition(State::RoundActive);
        self.emit_all(
            "GAME_RESUMED",
            json!({
                "remainingMs": remaining.as_millis() as u64, "remainingSeconds": ceil_secs(remaining),
            }),
        );
        self.schedule_clock(now);
        Ok(())
    }

    /// Arms the round-end timer and the next whole-second tick of the running clock.
    pub(super) fn schedule_clock(&mut self, now: Instant) {
        let Some(Round { clock: Clock::Running { ends_at }, .. }) = self.round else { return };
        self.set_timer(Timer::RoundEnd, Some(ends_at));
        let remaining = ends_at.saturating_duration_since(now);
        // Ticks fall where the remaining time crosses a whole second, end excluded.
        let k = ceil_secs(remaining).saturating_sub(1);
        if k >= 1 {
            self.tick_remaining = k;
            self.set_timer(Timer::Tick, Some(ends_at - SECOND * k as u32));
        }
    }

    pub(super) fn tick(&mut self, now: Instant) {
        self.emit_all("TIMER_TICK", json!({"remainingSeconds": self.tick_remaining}));
        self.schedule_clock(now);
    }

    pub(super) fn end_round(&mut self, now: Instant, reason: &str) {
        self.set_timer(Timer::Countdown, None);
        self.set_timer(Timer::Tick, None);
        self.set_timer(Timer::RoundEnd, None);
        let Some(r) = self.round.take() else { return };
        let swiped = r.guessed + r.skipped;
        let elapsed = now.saturating_duration_since(r.started_at).as_secs_f64();
        let average = if swiped > 0 { (elapsed / swiped as f64 * 10.0).round() / 10.0 } else { 0.0 };
        self.transition(State::RoundEnded);
        self.emit_acked(
            "ROUND_ENDED",
            json!({
                "reason": reason,
                "roundNumber": self.round_number(r.turn),
                "turnNumber": r.turn,
                "teamId": team_id(r.team),
                "wordsGuessed": r.guessed,
                "wordsSkipped": r.skipped,
                "pointsEarned": r.points,
                "averageTimePerWord": average,
            }),
        );
        let last = reason == "pack_exhausted" || self.turns_played >= self.config.rounds * self.num_teams as u32;
        let next_in = (!last).then_some(self.config.score_review.as_secs());
        self.transition(State::ScoreReview);
        let leaderboard = self.leaderboard();
        self.emit_all("SCORE_SUMMARY", json!({"leaderboard": leaderboard, "nextRoundIn": next_in}));
        self.set_timer(Timer::Review, Some(now + self.config.score_review));
    }

    pub(super) fn after_review(&mut self, now: Instant) {
        let total = self.config.rounds * self.num_teams as u32;
        if self.turns_played >= total || self.deck.remaining() == 0 {
            return self.end_game(now);
        }
        self.transition(State::ReadyForNext);
        let next_team = (self.turns_played as usize) % self.num_teams;
        self.emit_all(
            "NEXT_ROUND_READY",
            json!({
                "turnNumber": self.turns_played + 1,
                "roundNumber": self.round_number(self.turns_played + 1),
                "activeTeamId": team_id(next_team),
            }),
        );
        self.begin_turn(now);
    }

    pub(super) fn end_game(&mut self, now: Instant) {
        let leaderboard = self.leaderboard();
        let top = self.teams.iter().map(|t| t.score).max().unwrap_or(0);
        let leaders: Vec<usize> = self.teams.iter().enumerate().filter(|(_, t)| t.score == top).map(|(i, _)| i).collect();
        let winner = match leaders.as_slice() {
            [only] => Some(team_id(*only)),
            _ => None,
        };
        let mvp = self.participants.iter().filter(|p| p.words_explained > 0).max_by_key(|p| p.words_explained).map(|p| p.id.clone());
        let duration = self.game_started_at.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.transition(State::GameEnded);
        self.emit_acked(
            "GAME_ENDED",
            json!({
                "winnerTeamId": winner,
                "finalScores": self.teams.iter().enumerate().map(|(i, t)| json!({"teamId": team_id(i), "score": t.score})).collect::<Vec<_>>(),
                "gameDurationMin": duration.as_secs() / 60,
                "gameDurationSec": duration.as_secs(),
                "totalWordsPlayed": self.words_played,
                "mvpPlayerId": mvp,
            }),
        );
        self.transition(State::FinalResults);
        let players: Vec<Value> = self
            .participants
            .iter()
            .filter(|p| p.role == Role::Player)
            .map(|p| json!({"playerId": p.id, "playerName": p.name, "teamId": p.team.map(team_id), "wordsExplained": p.words_explained}))
            .collect();
        self.emit_all("FINAL_RESULTS", json!({"leaderboard": leaderboard, "players": players}));
    }

    pub(super) fn restart(&mut self) -> Result<(), Rejection> {
        if !matches!(self.state, State::GameEnded | State::FinalResults) {
            return Err(invalid(format!("cannot restart from {}", self.state.as_str())));
        }
        self.games_started += 1;
        self.deck = Deck::shuffled(self.config.pack.words.len(), self.config.seed.wrapping_add(self.games_started));
        self.teams.clear();
        self.round = None;
        self.waiting_for_players = false;
        let max_players = self.config.max_players;
        let mut players = self.player_count();
        for p in &mut self.participants {
            p.team = None;
            p.words_explained = 0;
            if p.role == Role::Spectator && players < max_players {
                p.role = Role::Player;
                players += 1;
            }
        }
        self.transition(State::Lobby);
        let participants: Vec<Value> = self.participants.iter().map(|p| json!({"id": p.id, "role": p.role.as_str()})).collect();
        self.emit_all("GAME_RESTARTED", json!({"participants": participants}));
        Ok(())
    }
}
