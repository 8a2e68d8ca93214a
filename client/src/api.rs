//! The room API (PROTOCOL.md, "HTTP API"): create a room, join it, and any other call.

use serde_json::{json, Value};

use crate::http::{self, Response};
use crate::{Error, ServerAddr};

/// A room just created: its id and the host's identity.
#[derive(Debug, Clone)]
pub struct CreatedRoom {
    pub room_id: String,
    pub host_id: String,
    pub host_token: String,
}

/// A seat just taken in a room.
#[derive(Debug, Clone)]
pub struct Seat {
    pub player_id: String,
    pub token: String,
    /// `player`, or `host` when the host's own name re-joined.
    pub role: String,
}

/// A call with a JSON body (`Content-Type: application/json`); `key` goes in
/// `Authorization: Bearer`. The response, whatever its status.
pub fn call(server: &impl ServerAddr, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Result<Response, Error> {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    let body = body.map(Value::to_string).unwrap_or_default();
    http::request(server, method, path, &headers, body.as_bytes())
}

/// `POST /rooms` with `settings` (`hostName` and the optional room settings).
pub fn create_room(server: &impl ServerAddr, settings: &Value) -> Result<CreatedRoom, Error> {
    let v = call(server, "POST", "/rooms", None, Some(settings))?.expect(201)?.json();
    Ok(CreatedRoom { room_id: field(&v, "roomId")?, host_id: field(&v, "hostId")?, host_token: field(&v, "hostToken")? })
}

/// `POST /rooms/{room}/players` as `name`.
pub fn join(server: &impl ServerAddr, room: &str, name: &str) -> Result<Seat, Error> {
    let v = call(server, "POST", &format!("/rooms/{room}/players"), None, Some(&json!({"playerName": name})))?.expect(201)?.json();
    Ok(Seat { player_id: field(&v, "playerId")?, token: field(&v, "token")?, role: field(&v, "role")? })
}

fn field(v: &Value, name: &str) -> Result<String, Error> {
    v[name].as_str().map(str::to_string).ok_or_else(|| Error::Protocol(format!("no {name} in {v}")))
}
