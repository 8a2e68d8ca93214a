//! Which game events the app's backend hears, and with what: a pure mapping from a game event
//! (its type and payload) to a webhook type and data. `game.started` and `game.ended` carry the
//! teams with their players' ids and names (what a leaderboard stores), read from the game's
//! snapshot when the event happens.

use serde_json::{json, Value};

/// The webhook type and data for game event `kind` with `payload`; `snapshot` gives the game's
/// state (only called for the events that need it). `None`: not a webhook event.
pub fn webhook_of(kind: &str, payload: &Value, snapshot: impl FnOnce() -> Value) -> Option<(&'static str, Value)> {
    let pick = |fields: &[&str]| Value::Object(fields.iter().filter_map(|f| payload.get(*f).map(|v| (f.to_string(), v.clone()))).collect());
    Some(match kind {
        "ROOM_CREATED" => ("room.created", pick(&["hostId", "hostName", "maxPlayers", "numTeams", "rounds", "roundDurationSec", "wordPackId"])),
        "PLAYER_JOINED" => ("player.joined", pick(&["playerId", "playerName", "role"])),
        "PLAYER_LEFT" => ("player.left", pick(&["playerId", "playerName", "reason"])),
        "PLAYER_CONNECTION_LOST" => ("player.disconnected", pick(&["playerId", "playerName"])),
        "PLAYER_RECONNECTED" => ("player.reconnected", pick(&["playerId", "playerName"])),
        "HOST_PROMOTED" => ("host.changed", pick(&["hostId", "hostName", "previousHostId"])),
        "ROUND_STARTED" if payload.get("roundNumber") == Some(&json!(1)) && payload.get("turnNumber") == Some(&json!(1)) => {
            let game = snapshot();
            ("game.started", json!({"settings": game.get("settings"), "teams": teams(&game)}))
        }
        "ROUND_ENDED" => ("round.ended", strip_state(payload)),
        "GAME_ENDED" => {
            let game = snapshot();
            let mut data = strip_state(payload);
            if let Some(object) = data.as_object_mut() {
                object.insert("teams".into(), teams(&game));
            }
            ("game.ended", data)
        }
        "ROOM_CLOSED" => ("room.closed", pick(&["reason"])),
        _ => return None,
    })
}

/// The payload without the room-state fields every game event carries.
fn strip_state(payload: &Value) -> Value {
    let mut data = payload.clone();
    if let Some(object) = data.as_object_mut() {
        object.remove("state");
        object.remove("stateVersion");
    }
    data
}

/// `[{id, name, score, players: [{id, name}]}]` from a game snapshot.
fn teams(game: &Value) -> Value {
    let name_of = |id: &Value| {
        game.get("participants")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().find(|p| p.get("id") == Some(id)))
            .and_then(|p| p.get("name"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let teams = game.get("teams").and_then(Value::as_array).cloned().unwrap_or_default();
    Value::Array(
        teams
            .iter()
            .map(|t| {
                let players: Vec<Value> =
                    t.get("players").and_then(Value::as_array).into_iter().flatten().map(|id| json!({"id": id, "name": name_of(id)})).collect();
                json!({"id": t.get("id"), "name": t.get("name"), "score": t.get("score"), "players": players})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn game_events_become_webhooks_with_what_a_backend_stores() {
        let game = json!({"settings": {"rounds": 1}, "participants": [{"id": "p1", "name": "Ann"}, {"id": "p2", "name": "Bob"}],
            "teams": [{"id": "team_1", "name": "Team Red", "players": ["p1"], "score": 3}, {"id": "team_2", "name": "Team Blue", "players": ["p2"], "score": 5}]});
        let joined = webhook_of(
            "PLAYER_JOINED",
            &json!({"playerId": "p1", "playerName": "Ann", "role": "player", "avatarColor": "#fff", "state": "LOBBY"}),
            || unreachable!(),
        );
        assert_eq!(joined, Some(("player.joined", json!({"playerId": "p1", "playerName": "Ann", "role": "player"}))));
        let (kind, data) = webhook_of("GAME_ENDED", &json!({"winnerTeamId": "team_2", "state": "GAME_ENDED", "stateVersion": 9}), || game.clone()).unwrap();
        assert_eq!(kind, "game.ended");
        assert_eq!(data["winnerTeamId"], "team_2");
        assert!(data.get("state").is_none());
        assert_eq!(data["teams"][1], json!({"id": "team_2", "name": "Team Blue", "score": 5, "players": [{"id": "p2", "name": "Bob"}]}));
        assert_eq!(webhook_of("ROUND_STARTED", &json!({"roundNumber": 1, "turnNumber": 1}), || game.clone()).unwrap().0, "game.started");
        assert_eq!(webhook_of("ROUND_STARTED", &json!({"roundNumber": 1, "turnNumber": 2}), || game.clone()), None, "only the first turn starts the game");
        assert_eq!(webhook_of("TIMER_TICK", &json!({}), || game.clone()), None);
    }
}
