//! What the admin API sees of a game room and does to it: its summary, its members with their
//! connection state, closing it (`ROOM_CLOSED {"reason": "admin"}`) and kicking a player.

use std::time::Instant;

use serde_json::{json, Value};

use super::{GameRoom, RoomOutput};
use crate::game::Role;
use crate::ws::close_code;

/// Why a kick was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickRefused {
    /// No such player in the room.
    NotFound,
    /// The host cannot be kicked (close the room instead).
    Host,
}

impl<C: Copy + PartialEq> GameRoom<C> {
    /// When the room was created (Unix ms).
    pub fn created_unix_ms(&self) -> i64 {
        self.epoch.1
    }

    /// Members seated (host included) and connections open.
    pub fn head_count(&self) -> (usize, usize) {
        (self.game.participant_count(), self.members.len())
    }

    /// The admin API's detail: members with role, connection state and degraded flag, and the
    /// game's state (settings, teams, round; never the current word).
    pub fn admin_detail(&self) -> Value {
        let snapshot = self.game.snapshot(Role::Player);
        let field = |name: &str| snapshot.get(name).cloned().unwrap_or(Value::Null);
        let members: Vec<Value> = snapshot
            .get("participants")
            .and_then(Value::as_array)
            .map(|all| {
                all.iter()
                    .map(|p| {
                        let id = p.get("id").and_then(Value::as_str).unwrap_or_default();
                        let conns: Vec<_> = self.members.iter().filter(|m| m.actor_id == id).collect();
                        let of = |name: &str| p.get(name).cloned().unwrap_or(Value::Null);
                        json!({
                            "id": id, "name": of("name"), "role": of("role"), "teamId": of("teamId"),
                            "connected": !conns.is_empty(),
                            "degraded": conns.iter().any(|m| m.acks.is_degraded()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": self.id.as_str(),
            "kind": "game",
            "state": self.game.state().as_str(),
            "created": self.epoch.1,
            "members": members,
            "game": {"settings": field("settings"), "teams": field("teams"), "round": field("round"), "lastSequenceId": self.sequence},
        })
    }

    /// Closes the room for an operator: `ROOM_CLOSED {"reason": "admin"}` to everyone.
    pub fn admin_close(&mut self, now: Instant) {
        self.game.close("admin");
        self.drain_game(now);
    }

    /// Kicks `actor`: its connections are closed with 4004. With `ban`, it also loses its seat
    /// (`PLAYER_LEFT`, reason `kicked`), so its token no longer admits it; without, it may
    /// reconnect. The host cannot be kicked (close the room instead).
    pub fn admin_kick(&mut self, now: Instant, actor: &str, ban: bool) -> Result<(), KickRefused> {
        match self.game.role_of(actor) {
            None => return Err(KickRefused::NotFound),
            Some(Role::Host) => return Err(KickRefused::Host),
            Some(_) => {}
        }
        let conns: Vec<C> = self.members.iter().filter(|m| m.actor_id == actor).map(|m| m.conn).collect();
        for conn in conns {
            self.disconnect(now, conn);
            self.outputs.push_back(RoomOutput::Close(conn, close_code::KICKED, "kicked by an operator".into()));
        }
        if ban {
            self.game.remove(now, actor, "kicked");
            self.drain_game(now);
        }
        Ok(())
    }
}
