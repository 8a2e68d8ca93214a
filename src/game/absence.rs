//! What the game does about people who are not there: absent players are never chosen to
//! explain (a running turn gets another explainer, or ends), a session that expired sits out
//! the current turn, an away host pauses the round and may be replaced.
//!
//! Who is absent is decided outside the rules (`session::Presence`); these are the inputs the
//! room feeds in, with the clock, and the events they cause.

use std::time::Instant;

use serde_json::json;

use super::{team_id, Game, Role, State};
use crate::session::state_checksum;

impl Game {
    /// The current host's id.
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// Players (not host or spectators) in seat order: the order of host promotion.
    pub fn players_in_seat_order(&self) -> impl Iterator<Item = &str> {
        self.participants.iter().filter(|p| p.role == Role::Player).map(|p| p.id.as_str())
    }

    /// The explainer of the running turn, if a turn is running.
    pub fn explainer(&self) -> Option<(&str, String)> {
        self.round.as_ref().map(|r| (r.explainer.as_str(), team_id(r.team)))
    }

    /// The team `id` plays in.
    pub fn team_of(&self, id: &str) -> Option<String> {
        self.participant(id).and_then(|p| p.team).map(team_id)
    }

    /// Team scores in team order, as `(teamId, score)`.
    pub fn scores(&self) -> Vec<(String, i64)> {
        self.teams.iter().enumerate().map(|(i, t)| (team_id(i), t.score)).collect()
    }

    /// The documented state checksum (`session::state_checksum`) of the room as it is now.
    pub fn checksum(&self) -> String {
        state_checksum(self.state.as_str(), self.state_version, &self.host_id, &self.scores())
    }

    /// Whether `id` is currently present (not away past the grace).
    pub fn is_present(&self, id: &str) -> bool {
        !self.absent.iter().any(|a| a == id)
    }

    /// `id` is present again (`true`) or away past the grace (`false`), at `now`.
    pub fn set_present(&mut self, now: Instant, id: &str, present: bool) {
        if present {
            self.absent.retain(|a| a != id);
            if self.waiting_for_players && self.state == State::ReadyForNext && self.anyone_can_explain() {
                self.begin_turn(now);
            }
        } else if !self.absent.iter().any(|a| a == id) && self.participant(id).is_some() {
            self.absent.push(id.to_string());
            self.repair_explainer(now);
        }
    }

    /// Tells the room `id` lost its connection (`PLAYER_CONNECTION_LOST`).
    pub fn player_connection_lost(&mut self, id: &str) {
        if let Some(name) = self.participant(id).map(|p| p.name.clone()) {
            self.emit_all("PLAYER_CONNECTION_LOST", json!({"playerId": id, "playerName": name}));
        }
    }

    /// Tells the room `id` is back (`PLAYER_RECONNECTED`).
    pub fn player_reconnected(&mut self, id: &str) {
        if let Some(name) = self.participant(id).map(|p| p.name.clone()) {
            self.emit_all("PLAYER_RECONNECTED", json!({"playerId": id, "playerName": name}));
        }
    }

    /// `id` came back after its session expired: it watches until the next turn begins and is
    /// not chosen to explain before then.
    pub fn bench(&mut self, now: Instant, id: &str) {
        if self.role_of(id) == Some(Role::Player) && !self.benched.iter().any(|b| b == id) {
            self.benched.push(id.to_string());
            self.repair_explainer(now);
        }
    }

    /// The host has been away for the pause delay: a running round pauses now; otherwise the
    /// next round pauses as soon as it starts (unless the host is back by then).
    pub fn pause_for_host(&mut self, now: Instant) {
        match self.state {
            State::RoundActive => {
                let _ = self.pause_with(now, "host_disconnected");
            }
            State::RoomClosed => {}
            _ => {
                self.pause_when_round_starts.get_or_insert("host_disconnected");
            }
        }
    }

    /// The host is back: nothing is paused on its behalf any more (a paused round waits for
    /// the host's `HOST_RESUME`; a pause for a server restart stays).
    pub fn host_returned(&mut self) {
        if self.pause_when_round_starts == Some("host_disconnected") {
            self.pause_when_round_starts = None;
        }
    }

    /// Makes player `new_host` the host (`HOST_PROMOTED`); the previous host becomes a player
    /// without a team. False if `new_host` is not a player.
    pub fn promote_host(&mut self, now: Instant, new_host: &str) -> bool {
        if self.role_of(new_host) != Some(Role::Player) || self.is_closed() {
            return false;
        }
        let previous = std::mem::replace(&mut self.host_id, new_host.to_string());
        for p in &mut self.participants {
            if p.id == previous {
                p.role = Role::Player;
                p.team = None;
            } else if p.id == new_host {
                if let Some(team) = p.team.take().and_then(|t| self.teams.get_mut(t)) {
                    team.players.retain(|id| id != new_host);
                }
                p.role = Role::Host;
            }
        }
        self.benched.retain(|b| b != new_host);
        self.host_returned();
        let name = self.participant(new_host).map(|p| p.name.clone());
        self.emit_all("HOST_PROMOTED", json!({"hostId": new_host, "hostName": name, "previousHostId": previous}));
        if matches!(self.state, State::TeamSetup | State::ReadyToStart) {
            self.check_balance();
        }
        self.repair_explainer(now);
        true
    }

    pub(super) fn can_explain(&self, id: &str) -> bool {
        self.is_present(id) && !self.benched.iter().any(|b| b == id) && self.role_of(id) == Some(Role::Player)
    }

    pub(super) fn anyone_can_explain(&self) -> bool {
        self.teams.iter().flat_map(|t| &t.players).any(|p| self.can_explain(p))
    }

    /// The team's next explainer in rotation who can explain, advancing the rotation past it.
    pub(super) fn next_explainer(&mut self, team: usize) -> Option<String> {
        let t = self.teams.get(team)?;
        let n = t.players.len();
        let (start, players) = (t.explainer_turns, t.players.clone());
        let k = (0..n).find(|k| players.get((start + k) % n).is_some_and(|p| self.can_explain(p)))?;
        if let Some(t) = self.teams.get_mut(team) {
            t.explainer_turns = start + k + 1;
        }
        players.get((start + k) % n).cloned()
    }

    /// If the running turn's explainer can no longer explain, hands the turn to a teammate
    /// (`EXPLAINER_CHANGED`) or, with nobody left, ends it (`ROUND_ENDED` with reason
    /// `team_disconnected`): the game never waits for one player.
    pub(super) fn repair_explainer(&mut self, now: Instant) {
        if !matches!(self.state, State::RoundStarting | State::RoundActive | State::RoundPaused) {
            return;
        }
        let Some((previous, team)) = self.round.as_ref().map(|r| (r.explainer.clone(), r.team)) else { return };
        if self.can_explain(&previous) {
            return;
        }
        match self.next_explainer(team) {
            Some(next) => {
                let turn = self.round.as_mut().map(|r| {
                    r.explainer = next.clone();
                    r.turn
                });
                self.emit_all(
                    "EXPLAINER_CHANGED",
                    json!({
                        "turnNumber": turn, "teamId": team_id(team), "explainerPlayerId": next, "previousExplainerId": previous,
                    }),
                );
            }
            None => self.end_round(now, "team_disconnected"),
        }
    }
}
