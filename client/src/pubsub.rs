//! A `/pubsub` connection (PROTOCOL.md, "/pubsub"): JSON messages in and out.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use crate::{Error, ServerAddr, READ_TIMEOUT};

/// How long [`PubSubClient::recv_event`] waits by default.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// One `/pubsub` connection, told its user and connection id by the server.
pub struct PubSubClient {
    pub ws: WebSocket<TcpStream>,
    /// Every message received, in order.
    pub seen: Vec<Value>,
    /// The close code, once the server closed.
    pub closed: Option<u16>,
    /// Why the connection ended, when not by a close from the server.
    pub ended: Option<Error>,
    /// The user and connection id the server announced.
    pub user: String,
    pub conn: String,
    /// How long [`recv_event`](Self::recv_event) waits.
    pub wait_limit: Duration,
    /// Messages that arrived before `connected`, not read yet.
    early: VecDeque<Value>,
}

impl PubSubClient {
    /// Connects to `/pubsub` (with `?token=` when given) and waits for `connected`.
    pub fn connect(server: &impl ServerAddr, token: Option<&str>) -> Result<PubSubClient, Error> {
        let path = token.map_or_else(|| "/pubsub".to_string(), |t| format!("/pubsub?token={t}"));
        Self::connect_with(server, format!("ws://{}{path}", server.server_addr()).into_client_request()?)
    }

    /// Connects with the token in `Authorization: Bearer` (for clients that can set headers).
    pub fn connect_bearer(server: &impl ServerAddr, token: &str) -> Result<PubSubClient, Error> {
        let mut request = format!("ws://{}/pubsub", server.server_addr()).into_client_request()?;
        let value = format!("Bearer {token}").parse().map_err(|_| Error::Protocol("a token that is no header value".into()))?;
        request.headers_mut().insert("Authorization", value);
        Self::connect_with(server, request)
    }

    fn connect_with(server: &impl ServerAddr, request: tungstenite::handshake::client::Request) -> Result<PubSubClient, Error> {
        let (ws, _) = tungstenite::client(request, crate::tcp(server)?)?;
        let mut client = PubSubClient {
            ws,
            seen: Vec::new(),
            closed: None,
            ended: None,
            user: String::new(),
            conn: String::new(),
            wait_limit: WAIT_LIMIT,
            early: VecDeque::new(),
        };
        // Directs reach the connection once it has been told `connected`; what came before it
        // (replies of a connect handler) is kept for the next reads.
        let connected = loop {
            let Some(v) = client.read_next() else { return Err(client.closed_while("connected")) };
            if v["event"] == "connected" {
                break v;
            }
            client.early.push_back(v);
        };
        let text = |name: &str| connected["data"][name].as_str().map(str::to_string).ok_or_else(|| Error::Protocol(format!("no {name} in {connected}")));
        client.user = text("user")?;
        client.conn = text("conn")?;
        Ok(client)
    }

    /// Sends `message` as JSON text. A failed send ends the client: the next
    /// [`recv`](Self::recv) returns `None` and [`ended`](Self::ended) says why.
    pub fn send(&mut self, message: Value) {
        self.send_text(&message.to_string());
    }

    /// Sends `text` as it is.
    pub fn send_text(&mut self, text: &str) {
        if self.ended.is_none() && self.closed.is_none() {
            if let Err(e) = self.ws.send(Message::text(text)) {
                self.ended = Some(e.into());
            }
        }
    }

    /// The next message; `None` once the connection has ended (the server's close code in
    /// [`closed`](Self::closed), any other reason in [`ended`](Self::ended)).
    pub fn recv(&mut self) -> Option<Value> {
        match self.early.pop_front() {
            Some(v) => Some(v),
            None => self.read_next(),
        }
    }

    /// The next message from the socket.
    fn read_next(&mut self) -> Option<Value> {
        while self.ended.is_none() && self.closed.is_none() {
            match self.ws.read() {
                Ok(Message::Text(t)) => match serde_json::from_str::<Value>(t.as_str()) {
                    Ok(v) => {
                        self.seen.push(v.clone());
                        return Some(v);
                    }
                    Err(_) => self.ended = Some(Error::Protocol(format!("not JSON: {t}"))),
                },
                Ok(Message::Close(frame)) => self.closed = Some(frame.map_or(1005, |f| u16::from(f.code))),
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => self.closed = Some(1005),
                Err(e) => self.ended = Some(e.into()),
            }
        }
        None
    }

    /// Reads until a message with `event` arrives and returns it.
    pub fn recv_event(&mut self, event: &str) -> Result<Value, Error> {
        let deadline = Instant::now() + self.wait_limit;
        loop {
            if Instant::now() >= deadline {
                return Err(Error::TimedOut { waiting_for: event.into(), seen: self.seen_texts() });
            }
            match self.recv() {
                Some(v) if v["event"] == event => return Ok(v),
                Some(_) => {}
                None => return Err(self.closed_while(event)),
            }
        }
    }

    /// Joins `room` and returns the `joined` reply.
    pub fn join(&mut self, room: &str) -> Result<Value, Error> {
        self.send(json!({"event": "join", "room": room, "id": format!("join-{room}")}));
        self.recv_event("joined")
    }

    /// Whether nothing arrives within `wait` (a close or pings count as nothing).
    pub fn silent_for(&mut self, wait: Duration) -> Result<bool, Error> {
        self.ws.get_ref().set_read_timeout(Some(wait))?;
        let quiet = match self.ws.read() {
            Ok(Message::Text(t)) => {
                self.seen.push(serde_json::from_str(t.as_str()).unwrap_or(Value::String(t.as_str().into())));
                Ok(false)
            }
            Ok(_) => Ok(true),
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(true),
            Err(e) => Err(e.into()),
        };
        self.ws.get_ref().set_read_timeout(Some(READ_TIMEOUT))?;
        quiet
    }

    fn closed_while(&self, what: &str) -> Error {
        let why = self.ended.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
        Error::Closed { code: self.closed, waiting_for: format!("{what}{why}"), seen: self.seen_texts() }
    }

    fn seen_texts(&self) -> Vec<String> {
        self.seen.iter().map(Value::to_string).collect()
    }
}
