//! Client commands the game understands, parsed from `{type, payload}`.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use serde_json::Value;

use crate::protocol::{ErrorCode, Rejection};

/// What a swipe says about the word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swipe {
    /// The team guessed it: one point.
    Guessed,
    /// Skipped: no point.
    Skipped,
}

impl Swipe {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Swipe::Guessed => "guessed",
            Swipe::Skipped => "skipped",
        }
    }
}

/// A game action from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Host: `START_TEAM_SETUP {numTeams?}`.
    StartTeamSetup {
        /// 2-4 teams; the room's setting when absent.
        num_teams: Option<usize>,
    },
    /// Player: `JOIN_TEAM {teamId}`.
    JoinTeam {
        /// e.g. `team_1`.
        team_id: String,
    },
    /// Host: `HOST_CONFIRM_START`.
    ConfirmStart,
    /// Host: `HOST_CANCEL_SETUP`.
    CancelSetup,
    /// Host: `WORD_SWIPED {wordId, action}`.
    SwipeWord {
        /// The word being swiped; a stale id loses the race.
        word_id: String,
        /// Guessed or skipped.
        action: Swipe,
    },
    /// Host: `HOST_PAUSE`.
    Pause,
    /// Host: `HOST_RESUME`.
    Resume,
    /// Host: `HOST_RESTART`.
    Restart,
    /// Host: `ROOM_CLOSE`.
    CloseRoom,
    /// Player or spectator: `LEAVE_ROOM`.
    Leave,
}

impl Command {
    /// The client message types that are game commands.
    pub const TYPES: [&'static str; 10] = [
        "START_TEAM_SETUP",
        "JOIN_TEAM",
        "HOST_CONFIRM_START",
        "HOST_CANCEL_SETUP",
        "WORD_SWIPED",
        "HOST_PAUSE",
        "HOST_RESUME",
        "HOST_RESTART",
        "ROOM_CLOSE",
        "LEAVE_ROOM",
    ];

    /// Parses a command; `Ok(None)` if `kind` is not a game command.
    pub fn parse(kind: &str, payload: &Value) -> Result<Option<Command>, Rejection> {
        Ok(Some(match kind {
            "START_TEAM_SETUP" => Command::StartTeamSetup {
                num_teams: match payload.get("numTeams") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(
                        v.as_u64().filter(|n| (2..=4).contains(n)).ok_or_else(|| Rejection::new(ErrorCode::InvalidMessage, "numTeams must be 2, 3 or 4"))?
                            as usize,
                    ),
                },
            },
            "JOIN_TEAM" => Command::JoinTeam { team_id: string_field(payload, "teamId")? },
            "HOST_CONFIRM_START" => Command::ConfirmStart,
            "HOST_CANCEL_SETUP" => Command::CancelSetup,
            "WORD_SWIPED" => Command::SwipeWord {
                word_id: string_field(payload, "wordId")?,
                action: match string_field(payload, "action")?.as_str() {
                    "guessed" => Swipe::Guessed,
                    "skipped" => Swipe::Skipped,
                    _ => return Err(Rejection::new(ErrorCode::InvalidMessage, "action must be guessed or skipped")),
                },
            },
            "HOST_PAUSE" => Command::Pause,
            "HOST_RESUME" => Command::Resume,
            "HOST_RESTART" => Command::Restart,
            "ROOM_CLOSE" => Command::CloseRoom,
            "LEAVE_ROOM" => Command::Leave,
            _ => return Ok(None),
        }))
    }
}

fn string_field(payload: &Value, field: &str) -> Result<String, Rejection> {
    match payload.get(field) {
        None | Some(Value::Null) => Err(Rejection::new(ErrorCode::MissingField, format!("payload.{field} is required"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Rejection::new(ErrorCode::InvalidMessage, format!("payload.{field} must be a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parsing() {
        assert_eq!(Command::parse("HOST_PAUSE", &json!({})).unwrap(), Some(Command::Pause));
        assert_eq!(Command::parse("NOPE", &json!({})).unwrap(), None);
        assert_eq!(
            Command::parse("WORD_SWIPED", &json!({"wordId": "w1", "action": "skipped"})).unwrap(),
            Some(Command::SwipeWord { word_id: "w1".into(), action: Swipe::Skipped })
        );
        assert_eq!(Command::parse("JOIN_TEAM", &json!({})).unwrap_err().code, ErrorCode::MissingField);
        assert_eq!(Command::parse("JOIN_TEAM", &json!({"teamId": 1})).unwrap_err().code, ErrorCode::InvalidMessage);
        assert_eq!(Command::parse("START_TEAM_SETUP", &json!({"numTeams": 9})).unwrap_err().code, ErrorCode::InvalidMessage);
        for kind in Command::TYPES {
            let payload = json!({"teamId": "team_1", "wordId": "w", "action": "guessed"});
            assert!(Command::parse(kind, &payload).unwrap().is_some(), "{kind}");
        }
    }
}
