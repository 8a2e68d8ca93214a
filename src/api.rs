//! The room API's request bodies and their validation, sans-IO.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::http::{Response, Status};

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// `POST /rooms` body, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRoom {
    /// The host's display name.
    pub host_name: String,
    /// 1-10.
    pub max_players: usize,
    /// 2-4.
    pub num_teams: usize,
    /// 1-20.
    pub rounds: u32,
    /// Between the server's minimum and 300 s.
    pub round_duration: Duration,
    /// One of the shipped packs.
    pub word_pack_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRoomBody {
    host_name: Option<Value>,
    max_players: Option<Value>,
    num_teams: Option<Value>,
    rounds: Option<Value>,
    round_duration_sec: Option<Value>,
    word_pack_id: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinBody {
    player_name: Option<Value>,
}

fn bad(code: &str, message: impl AsRef<str>) -> Response {
    Response::error(Status::BadRequest, code, message.as_ref())
}

fn number_in(value: Option<Value>, field: &str, default: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, Response> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| range.contains(n))
            .ok_or_else(|| bad("INVALID_MESSAGE", format!("{field} must be an integer from {} to {}", range.start(), range.end()))),
    }
}

/// Checks a display name: 1-32 characters after trimming, no control characters.
pub fn validate_name(value: Option<Value>, field: &str) -> Result<String, Response> {
    let Some(Value::String(name)) = value else {
        return Err(bad("MISSING_FIELD", format!("{field} is required (a string)")));
    };
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(bad("INVALID_NAME", format!("{field} must be 1 to {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("INVALID_NAME", format!("{field} must not contain control characters")));
    }
    Ok(name.to_string())
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() { "unknown or ill-typed field" } else { "body is not a JSON object" };
        bad("INVALID_MESSAGE", what)
    })
}

impl CreateRoom {
    /// Parses and validates a `POST /rooms` body; `packs` are the known word pack ids.
    pub fn parse(body: &[u8], min_round: Duration, packs: &[&str]) -> Result<CreateRoom, Response> {
        let b: CreateRoomBody = parse_json(body)?;
        let host_name = validate_name(b.host_name, "hostName")?;
        let max_players = number_in(b.max_players, "maxPlayers", 10, 1..=10)? as usize;
        let num_teams = number_in(b.num_teams, "numTeams", 2, 2..=4)? as usize;
        let rounds = number_in(b.rounds, "rounds", 3, 1..=20)? as u32;
        let min_secs = min_round.as_secs().max(1);
        let secs = number_in(b.round_duration_sec, "roundDurationSec", 60u64.max(min_secs), min_secs..=300)?;
        let word_pack_id = match b.word_pack_id {
            None | Some(Value::Null) => "default_animals".to_string(),
            Some(Value::String(id)) if packs.contains(&id.as_str()) => id,
            Some(_) => return Err(bad("UNKNOWN_WORD_PACK", format!("wordPackId must be one of {}", packs.join(", ")))),
        };
        Ok(CreateRoom { host_name, max_players, num_teams, rounds, round_duration: Duration::from_secs(secs), word_pack_id })
    }
}

/// Parses a `POST /rooms/{id}/players` body and returns the player's name.
pub fn parse_join(body: &[u8]) -> Result<String, Response> {
    let b: JoinBody = parse_json(body)?;
    validate_name(b.player_name, "playerName")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(r: Result<impl std::fmt::Debug, Response>) -> u16 {
        r.unwrap_err().status().code()
    }

    #[test]
    fn create_room_defaults_and_limits() {
        let packs = ["default_animals", "kitchen_and_food"];
        let ok = CreateRoom::parse(br#"{"hostName":"  Ada "}"#, Duration::from_secs(10), &packs).unwrap();
        assert_eq!((ok.host_name.as_str(), ok.max_players, ok.num_teams, ok.rounds), ("Ada", 10, 2, 3));
        assert_eq!(ok.round_duration, Duration::from_secs(60));
        assert_eq!(ok.word_pack_id, "default_animals");
        for bad in [
            r#"{}"#,
            r#"{"hostName":""}"#,
            r#"{"hostName":"a\u0007b"}"#,
            r#"{"hostName":"x","maxPlayers":11}"#,
            r#"{"hostName":"x","numTeams":1}"#,
            r#"{"hostName":"x","roundDurationSec":5}"#,
            r#"{"hostName":"x","wordPackId":"nope"}"#,
            r#"{"hostName":"x","extra":1}"#,
            r#"[1]"#,
            r#"not json"#,
        ] {
            assert_eq!(status(CreateRoom::parse(bad.as_bytes(), Duration::from_secs(10), &packs)), 400, "{bad}");
        }
        let long = format!(r#"{{"hostName":"{}"}}"#, "é".repeat(33));
        assert_eq!(status(CreateRoom::parse(long.as_bytes(), Duration::from_secs(10), &packs)), 400);
        let short = CreateRoom::parse(br#"{"hostName":"x","roundDurationSec":2}"#, Duration::from_secs(1), &packs).unwrap();
        assert_eq!(short.round_duration, Duration::from_secs(2));
    }

    #[test]
    fn join_body() {
        assert_eq!(parse_join(br#"{"playerName":"Bob"}"#).unwrap(), "Bob");
        assert_eq!(status(parse_join(br#"{"playerName":5}"#)), 400);
    }
}
