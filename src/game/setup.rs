//! The lobby and team setup: teams chosen, balanced, confirmed; the game started.

use super::*;

impl Game {
    pub(super) fn start_team_setup(&mut self, num_teams: Option<usize>) -> Result<(), Rejection> {
        if self.state != State::Lobby {
            return Err(invalid(format!("team setup cannot start in {}", self.state.as_str())));
        }
        let num_teams = num_teams.unwrap_or(self.config.num_teams);
        if self.player_count() < num_teams {
            return Err(invalid(format!("{num_teams} teams need at least {num_teams} players")));
        }
        self.num_teams = num_teams;
        self.teams = (0..num_teams).map(|_| Team { players: Vec::new(), score: 0, explainer_turns: 0 }).collect();
        for p in &mut self.participants {
            p.team = None;
        }
        self.transition(State::TeamSetup);
        let teams = self.teams_json();
        self.emit_all("TEAM_SETUP_STARTED", json!({ "teams": teams }));
        Ok(())
    }

    pub(super) fn join_team(&mut self, actor: &str, role: Role, team: &str) -> Result<(), Rejection> {
        if role != Role::Player {
            return Err(reject(ErrorCode::Unauthorized, "only players join teams"));
        }
        if !matches!(self.state, State::TeamSetup | State::ReadyToStart) {
            return Err(invalid(format!("teams cannot change in {}", self.state.as_str())));
        }
        let index = (0..self.teams.len()).find(|&i| team_id(i) == team).ok_or_else(|| reject(ErrorCode::InvalidMessage, format!("no team {team}")))?;
        let previous = self.participant(actor).and_then(|p| p.team);
        if previous == Some(index) {
            return Err(invalid(format!("already in {team}")));
        }
        if let Some(old) = previous.and_then(|t| self.teams.get_mut(t)) {
            old.players.retain(|p| p != actor);
        }
        if let Some(new) = self.teams.get_mut(index) {
            new.players.push(actor.to_string());
        }
        if let Some(p) = self.participants.iter_mut().find(|p| p.id == actor) {
            p.team = Some(index);
        }
        let teams = self.teams_json();
        self.emit_all("PLAYER_ASSIGNED_TEAM", json!({"playerId": actor, "teamId": team, "teams": teams}));
        self.check_balance();
        Ok(())
    }

    /// Teams are balanced when every player has a team, no team is empty, and sizes differ by
    /// at most one.
    pub(super) fn is_balanced(&self) -> bool {
        let everyone_placed = self.participants.iter().all(|p| p.role != Role::Player || p.team.is_some());
        let sizes = self.teams.iter().map(|t| t.players.len());
        let (min, max) = (sizes.clone().min().unwrap_or(0), sizes.max().unwrap_or(0));
        everyone_placed && min >= 1 && max - min <= 1
    }

    pub(super) fn check_balance(&mut self) {
        let teams = self.teams_json();
        match (self.state, self.is_balanced()) {
            (State::TeamSetup, true) => {
                self.transition(State::ReadyToStart);
                self.emit_all("TEAMS_BALANCED", json!({ "teams": teams }));
            }
            (State::ReadyToStart, false) => {
                self.transition(State::TeamSetup);
                self.emit_all("TEAMS_UNBALANCED", json!({ "teams": teams }));
            }
            _ => {}
        }
    }

    pub(super) fn cancel_setup(&mut self) -> Result<(), Rejection> {
        if !matches!(self.state, State::TeamSetup | State::ReadyToStart) {
            return Err(invalid(format!("no team setup to cancel in {}", self.state.as_str())));
        }
        self.teams.clear();
        for p in &mut self.participants {
            p.team = None;
        }
        self.transition(State::Lobby);
        self.emit_all("SETUP_CANCELLED", json!({}));
        Ok(())
    }

    pub(super) fn confirm_start(&mut self, now: Instant) -> Result<(), Rejection> {
        if self.state != State::ReadyToStart {
            return Err(invalid(format!("cannot start from {}", self.state.as_str())));
        }
        if !self.anyone_can_explain() {
            return Err(invalid("no connected player can explain"));
        }
        self.game_started_at = Some(now);
        self.turns_played = 0;
        self.words_played = 0;
        self.begin_turn(now);
        Ok(())
    }
}
