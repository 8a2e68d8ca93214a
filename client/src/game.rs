//! A PartyFlow game connection: envelopes out, ACKs answered, every message kept.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::envelope::{self, VERSION};
use crate::{Error, ServerAddr};

/// How long [`GameClient::recv_until`] waits by default.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// One actor's game connection (`/ws`).
pub struct GameClient {
    pub ws: WebSocket<TcpStream>,
    pub room: String,
    pub actor: String,
    /// Every message received, in order (a close as `{"close": code}`).
    pub seen: Vec<Value>,
    /// Answer `requiresAck` messages with an `ACK` (on by default).
    pub auto_ack: bool,
    /// How long [`recv_until`](Self::recv_until) waits.
    pub wait_limit: Duration,
    /// Why the connection ended, once it has.
    pub ended: Option<Error>,
}

impl GameClient {
    /// Connects `actor` to `room` with its token, speaking the current protocol version.
    pub fn connect(server: &impl ServerAddr, room: &str, actor: &str, token: &str) -> Result<GameClient, Error> {
        Self::connect_version(server, room, actor, token, VERSION)
    }

    /// Connects speaking protocol `version`.
    pub fn connect_version(server: &impl ServerAddr, room: &str, actor: &str, token: &str, version: &str) -> Result<GameClient, Error> {
        let url = format!("ws://{}/ws?roomId={room}&token={token}&version={version}", server.server_addr());
        let (ws, _) = tungstenite::client::client_with_config(url, crate::tcp(server)?, Some(WebSocketConfig::default()))?;
        Ok(GameClient { ws, room: room.into(), actor: actor.into(), seen: Vec::new(), auto_ack: true, wait_limit: WAIT_LIMIT, ended: None })
    }

    /// Connects, retrying while the server answers `503` (a room moving between instances) for
    /// up to `limit`.
    pub fn connect_when_ready(server: &impl ServerAddr, room: &str, actor: &str, token: &str, limit: Duration) -> Result<GameClient, Error> {
        let deadline = Instant::now() + limit;
        loop {
            match Self::connect(server, room, actor, token) {
                Err(Error::Status { status: 503, .. }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                other => return other,
            }
        }
    }

    /// Sends a message of `kind` with `payload`. A failed send ends the client: the next
    /// [`recv`](Self::recv) returns `None` and [`ended`](Self::ended) says why.
    pub fn send(&mut self, kind: &str, payload: Value) {
        let message = envelope::envelope(kind, &self.room, &self.actor, envelope::unix_ms(), payload);
        self.send_raw(&message.to_string());
    }

    /// Sends `text` as it is.
    pub fn send_raw(&mut self, text: &str) {
        if self.ended.is_none() {
            if let Err(e) = self.ws.send(Message::text(text)) {
                self.ended = Some(e.into());
            }
        }
    }

    /// The next game message (pings are answered); `None` once the connection has ended, why
    /// in [`ended`](Self::ended) (a close is also kept in `seen` as `{"close": code}`).
    pub fn recv(&mut self) -> Option<Value> {
        loop {
            if self.ended.is_some() {
                return None;
            }
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        self.ended = Some(Error::Protocol(format!("not JSON: {t}")));
                        return None;
                    };
                    if let Some(ack) = envelope::ack_payload(&v).filter(|_| self.auto_ack) {
                        self.send("ACK", ack);
                    }
                    self.seen.push(v.clone());
                    return Some(v);
                }
                Ok(Message::Close(frame)) => {
                    let code = frame.map(|f| u16::from(f.code));
                    self.seen.push(json!({"close": code.unwrap_or(1005)}));
                    self.ended = Some(Error::Closed { code, waiting_for: "nothing".into(), seen: Vec::new() });
                    return None;
                }
                Ok(_) => continue,
                Err(e) => self.ended = Some(e.into()),
            }
        }
    }

    /// The close code the server sent, once it has.
    pub fn close_code(&self) -> Option<u16> {
        match &self.ended {
            Some(Error::Closed { code, .. }) => *code,
            _ => None,
        }
    }

    /// Reads until a message of `kind` arrives and returns it.
    pub fn recv_until(&mut self, kind: &str) -> Result<Value, Error> {
        let deadline = Instant::now() + self.wait_limit;
        loop {
            if Instant::now() >= deadline {
                return Err(Error::TimedOut { waiting_for: format!("{}: {kind}", self.actor), seen: self.types() });
            }
            match self.recv() {
                Some(v) if v["type"] == kind => return Ok(v),
                Some(_) => {}
                None => return Err(self.ended_while(kind)),
            }
        }
    }

    /// The connection ended while waiting for `what`: the close code, or the error that ended it.
    fn ended_while(&self, what: &str) -> Error {
        let why = match &self.ended {
            Some(Error::Closed { .. }) | None => String::new(),
            Some(e) => format!(" ({e})"),
        };
        Error::Closed { code: self.close_code(), waiting_for: format!("{}: {what}{why}", self.actor), seen: self.types() }
    }

    /// The type of every message seen, in order (`<close>` for a close).
    pub fn types(&self) -> Vec<String> {
        self.seen.iter().map(|v| v["type"].as_str().unwrap_or("<close>").to_string()).collect()
    }

    /// Every room event seen (first delivery of each sequence id), by sequence id.
    pub fn events(&self) -> BTreeMap<u64, Value> {
        let mut out = BTreeMap::new();
        for v in &self.seen {
            if let Some(seq) = envelope::sequence_id(v) {
                out.entry(seq).or_insert_with(|| v.clone());
            }
        }
        out
    }

    /// The highest sequence id seen: what a `RECONNECT` resumes after.
    pub fn last_seq(&self) -> u64 {
        self.events().keys().next_back().copied().unwrap_or(0)
    }

    /// Sends a message the server answers with `ERROR UNKNOWN_TYPE` and returns everything that
    /// arrived before that answer: the server handles one connection's messages in order, so
    /// this is a barrier, not a timeout.
    pub fn fence(&mut self) -> Result<Vec<Value>, Error> {
        self.send("FENCE", json!({}));
        let mut before = Vec::new();
        loop {
            let Some(v) = self.recv() else {
                return Err(self.ended_while("the fence"));
            };
            if v["type"] == "ERROR" && v["payload"]["code"] == "UNKNOWN_TYPE" {
                return Ok(before);
            }
            before.push(v);
        }
    }
}
