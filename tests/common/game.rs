//! A game client over a real WebSocket: JSON envelopes in and out, ACKs answered.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use super::{connect, http_raw, parse_response, Client, Server};

/// POST `body` as JSON to `path`; returns (status, parsed body).
pub fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let raw = http_raw(
        server.addr,
        &format!("POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", server.addr, body.len()),
    );
    let (status, body) = parse_response(&raw);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

pub fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let (status, body) = server.get(path);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A room with a host: (roomId, hostId, hostToken).
pub fn create_room(server: &Server, settings: Value) -> (String, String, String) {
    let mut body = json!({"hostName": "Hana"});
    body.as_object_mut().unwrap().extend(settings.as_object().unwrap().clone());
    let (status, v) = post(server, "/rooms", &body);
    assert_eq!(status, 201, "{v}");
    (v["roomId"].as_str().unwrap().into(), v["hostId"].as_str().unwrap().into(), v["hostToken"].as_str().unwrap().into())
}

/// Joins `name`: (playerId, token, role).
pub fn join(server: &Server, room: &str, name: &str) -> (String, String, String) {
    let (status, v) = post(server, &format!("/rooms/{room}/players"), &json!({"playerName": name}));
    assert_eq!(status, 201, "{v}");
    (v["playerId"].as_str().unwrap().into(), v["token"].as_str().unwrap().into(), v["role"].as_str().unwrap().into())
}

pub struct GameClient {
    pub ws: Client,
    pub room: String,
    pub actor: String,
    /// Every message received, in order.
    pub seen: Vec<Value>,
    pub auto_ack: bool,
}

impl GameClient {
    pub fn connect(server: &Server, room: &str, actor: &str, token: &str) -> GameClient {
        Self::connect_version(server, room, actor, token, "1.0")
    }

    pub fn connect_version(server: &Server, room: &str, actor: &str, token: &str, version: &str) -> GameClient {
        let ws = connect(server, &format!("/ws?roomId={room}&token={token}&version={version}"));
        GameClient { ws, room: room.into(), actor: actor.into(), seen: Vec::new(), auto_ack: true }
    }

    pub fn send(&mut self, kind: &str, payload: Value) {
        let msg = json!({"type": kind, "roomId": self.room, "actorId": self.actor, "timestamp": 0, "version": "1.0", "payload": payload});
        self.ws.send(Message::text(msg.to_string())).unwrap();
    }

    pub fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next game message (pings are answered by tungstenite); `None` when the server
    /// closed the connection, with the close code recorded as a pseudo-message `{"close": code}`.
    pub fn recv(&mut self) -> Option<Value> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if self.auto_ack && v["requiresAck"] == true {
                        let ack = v["ackId"].clone();
                        self.send("ACK", json!({"ackId": ack, "status": "received"}));
                    }
                    self.seen.push(v.clone());
                    return Some(v);
                }
                Ok(Message::Close(frame)) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    self.seen.push(json!({"close": code}));
                    return None;
                }
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => return None,
                Err(e) => panic!("{}: {e}", self.actor),
            }
        }
    }

    /// Reads until a message of `kind` arrives and returns it.
    pub fn recv_until(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "{} waited too long for {kind}", self.actor);
            match self.recv() {
                Some(v) if v["type"] == kind => return v,
                Some(_) => {}
                None => panic!("{}: connection closed while waiting for {kind}; saw {:?}", self.actor, self.types()),
            }
        }
    }

    pub fn types(&self) -> Vec<String> {
        self.seen.iter().map(|v| v["type"].as_str().unwrap_or("<close>").to_string()).collect()
    }
}
