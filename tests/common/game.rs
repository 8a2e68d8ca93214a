//! Game rooms for tests: the room API's shorthands and rooms set up to a started game.

use partyflow_client::api;
pub use partyflow_client::GameClient;
use serde_json::{json, Value};

use super::Server;

/// POST `body` as JSON to `path`; returns (status, parsed body).
pub fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let response = api::call(server, "POST", path, None, Some(body)).expect("POST");
    (response.status, response.json())
}

pub fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let (status, body) = server.get(path);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A room with a host named Hana and `settings`: (roomId, hostId, hostToken).
pub fn create_room(server: &Server, settings: Value) -> (String, String, String) {
    let mut body = json!({"hostName": "Hana"});
    body.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    let room = api::create_room(server, &body).expect("create a room");
    (room.room_id, room.host_id, room.host_token)
}

/// Joins `name`: (playerId, token, role).
pub fn join(server: &Server, room: &str, name: &str) -> (String, String, String) {
    let seat = api::join(server, room, name).expect("join");
    (seat.player_id, seat.token, seat.role)
}

/// A room of a host and `players` players, all connected, teams assigned alternately
/// (player i to team i % 2 + 1), the game started, the first turn's `ROUND_STARTED` seen by
/// everyone and its first `WORD_REVEALED` by the host. `settings` are extra room settings.
pub fn started_game(server: &Server, players: usize, settings: Value) -> (String, (GameClient, String), Vec<(GameClient, String)>) {
    started_game_at(Where { create: server, host: server, players: server }, players, settings)
}

/// Which server (instance) a room is created on, and which ones its host and its players
/// connect to (players also join there).
#[derive(Clone, Copy)]
pub struct Where<'a> {
    pub create: &'a Server,
    pub host: &'a Server,
    pub players: &'a Server,
}

/// [`started_game`] across instances.
pub fn started_game_at(at: Where<'_>, players: usize, settings: Value) -> (String, (GameClient, String), Vec<(GameClient, String)>) {
    let mut body = json!({"numTeams": 2, "rounds": 3, "roundDurationSec": 30});
    body.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    let (room, host_id, host_token) = create_room(at.create, body);
    let mut clients = Vec::new();
    for i in 0..players {
        let (id, token, _) = join(at.players, &room, &format!("P{i}"));
        let mut client = GameClient::connect(at.players, &room, &id, &token).unwrap();
        // A player is in the room once its CONNECTED arrives: through another instance that is
        // a moment after the upgrade, and the host must not start before.
        client.recv_until("CONNECTED").unwrap();
        clients.push((client, token));
    }
    let mut host = GameClient::connect(at.host, &room, &host_id, &host_token).unwrap();
    host.recv_until("CONNECTED").unwrap();
    host.send("START_TEAM_SETUP", json!({"numTeams": 2}));
    for (i, (c, _)) in clients.iter_mut().enumerate() {
        c.recv_until("TEAM_SETUP_STARTED").unwrap();
        c.send("JOIN_TEAM", json!({"teamId": format!("team_{}", i % 2 + 1)}));
    }
    host.recv_until("TEAMS_BALANCED").unwrap();
    host.send("HOST_CONFIRM_START", json!({}));
    host.recv_until("ROUND_STARTED").unwrap();
    host.recv_until("WORD_REVEALED").unwrap();
    for (c, _) in clients.iter_mut() {
        c.recv_until("ROUND_STARTED").unwrap();
    }
    (room, (host, host_token), clients)
}
