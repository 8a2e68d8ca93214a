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

    /// Connects, retrying while the server answers `503` (a room moving between instances),
    /// up to `limit`.
    pub fn connect_when_ready(server: &Server, room: &str, actor: &str, token: &str, limit: Duration) -> GameClient {
        let deadline = Instant::now() + limit;
        loop {
            let stream = std::net::TcpStream::connect(server.addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let url = server.url(&format!("/ws?roomId={room}&token={token}&version=1.0"));
            match tungstenite::client::client(url, tungstenite::stream::MaybeTlsStream::Plain(stream)) {
                Ok((ws, _)) => return GameClient { ws, room: room.into(), actor: actor.into(), seen: Vec::new(), auto_ack: true },
                Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) if response.status() == 503 => {
                    assert!(Instant::now() < deadline, "{actor}: still 503 after {limit:?}: {:?}", response.body());
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("{actor}: {e}"),
            }
        }
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

impl GameClient {
    /// Every room event seen (first delivery of each sequence id), by sequence id.
    pub fn events(&self) -> std::collections::BTreeMap<u64, Value> {
        let mut out = std::collections::BTreeMap::new();
        for v in &self.seen {
            if let Some(seq) = v["sequenceId"].as_u64() {
                out.entry(seq).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// The highest sequence id seen.
    pub fn last_seq(&self) -> u64 {
        self.events().keys().next_back().copied().unwrap_or(0)
    }

    /// Sends a message the server answers with `ERROR UNKNOWN_TYPE` and returns everything that
    /// arrived before that answer: the server handles one connection's messages in order, so
    /// this is a barrier, not a timeout.
    pub fn fence(&mut self) -> Vec<Value> {
        self.send("FENCE", json!({}));
        let mut before = Vec::new();
        loop {
            let v = self.recv().unwrap_or_else(|| panic!("{}: closed before the fence", self.actor));
            if v["type"] == "ERROR" && v["payload"]["code"] == "UNKNOWN_TYPE" {
                return before;
            }
            before.push(v);
        }
    }
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
        let mut client = GameClient::connect(at.players, &room, &id, &token);
        // A player is in the room once its CONNECTED arrives: through another instance that is
        // a moment after the upgrade, and the host must not start before.
        client.recv_until("CONNECTED");
        clients.push((client, token));
    }
    let mut host = GameClient::connect(at.host, &room, &host_id, &host_token);
    host.recv_until("CONNECTED");
    host.send("START_TEAM_SETUP", json!({"numTeams": 2}));
    for (i, (c, _)) in clients.iter_mut().enumerate() {
        c.recv_until("TEAM_SETUP_STARTED");
        c.send("JOIN_TEAM", json!({"teamId": format!("team_{}", i % 2 + 1)}));
    }
    host.recv_until("TEAMS_BALANCED");
    host.send("HOST_CONFIRM_START", json!({}));
    host.recv_until("ROUND_STARTED");
    host.recv_until("WORD_REVEALED");
    for (c, _) in clients.iter_mut() {
        c.recv_until("ROUND_STARTED");
    }
    (room, (host, host_token), clients)
}
