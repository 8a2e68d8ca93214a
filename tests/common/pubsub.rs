//! A `/pubsub` client over a real WebSocket: JSON messages in and out.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::Message;

use super::{http_raw, parse_response, Client, Server};

/// A server API call: `(status, JSON body)` (`null` when the body is not JSON).
pub fn api(server: &Server, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    api_at(server.addr, method, path, key, body)
}

/// [`api`] on the server at `addr`.
pub fn api_at(addr: std::net::SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    let raw = http_raw(addr, &format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len()));
    let (status, body) = parse_response(&raw);
    (status, serde_json::from_str::<Value>(&body).unwrap_or(Value::Null))
}

/// A `/pubsub` token for `sub`, signed with `secret`, valid for ten minutes, any room.
pub fn token_for(secret: &str, sub: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    partyflow::pubsub::TokenKey::new(secret).unwrap().sign(&partyflow::pubsub::Claims { sub: sub.into(), exp: Some(exp), rooms: None, meta: None })
}

pub struct PubSubClient {
    pub ws: Client,
    /// Every message received, in order.
    pub seen: Vec<Value>,
    /// The close code, once the server closed.
    pub closed: Option<u16>,
    /// The user and connection id the server announced.
    pub user: String,
    pub conn: String,
    /// Messages that arrived before `connected`, not read yet.
    early: std::collections::VecDeque<Value>,
}

impl PubSubClient {
    /// Connects to `/pubsub` (with `?token=` when given).
    pub fn connect(server: &Server, token: Option<&str>) -> PubSubClient {
        Self::connect_to(server.addr, token)
    }

    /// Connects to `/pubsub` at `addr` (with `?token=` when given).
    pub fn connect_to(addr: std::net::SocketAddr, token: Option<&str>) -> PubSubClient {
        let path = token.map_or_else(|| "/pubsub".to_string(), |t| format!("/pubsub?token={t}"));
        Self::connect_with(addr, format!("ws://{addr}{path}").into_client_request().unwrap())
    }

    /// Connects with the token in `Authorization: Bearer`.
    pub fn connect_bearer(server: &Server, token: &str) -> PubSubClient {
        let mut request = server.url("/pubsub").into_client_request().unwrap();
        request.headers_mut().insert("Authorization", format!("Bearer {token}").parse().unwrap());
        Self::connect_with(server.addr, request)
    }

    fn connect_with(addr: std::net::SocketAddr, request: tungstenite::handshake::client::Request) -> PubSubClient {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.set_nodelay(true).unwrap();
        let (ws, _) = tungstenite::client(request, MaybeTlsStream::Plain(stream)).expect("pubsub handshake");
        let mut client = PubSubClient { ws, seen: Vec::new(), closed: None, user: String::new(), conn: String::new(), early: Default::default() };
        // Directs reach the connection once it has been told `connected`; what came before it
        // (replies of a connect handler) is kept for the next reads.
        let connected = loop {
            let v = client.read_next().expect("closed before connected");
            if v["event"] == "connected" {
                break v;
            }
            client.early.push_back(v);
        };
        client.user = connected["data"]["user"].as_str().unwrap().to_string();
        client.conn = connected["data"]["conn"].as_str().unwrap().to_string();
        client
    }

    pub fn send(&mut self, message: Value) {
        self.ws.send(Message::text(message.to_string())).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    /// The next message; `None` once the server closed (its code in `closed`).
    pub fn recv(&mut self) -> Option<Value> {
        match self.early.pop_front() {
            Some(v) => Some(v),
            None => self.read_next(),
        }
    }

    /// The next message from the socket.
    fn read_next(&mut self) -> Option<Value> {
        // Pings keep a silent connection's reads from timing out: bound the wait here.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "nothing received for 20 s; saw {:?}", self.seen);
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    self.seen.push(v.clone());
                    return Some(v);
                }
                Ok(Message::Close(frame)) => {
                    self.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    return None;
                }
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return None,
                Err(e) => panic!("pubsub client: {e}"),
            }
        }
    }

    /// Reads until a message with `event` arrives and returns it.
    pub fn recv_event(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(Instant::now() < deadline, "waited too long for {event}; saw {:?}", self.seen);
            match self.recv() {
                Some(v) if v["event"] == event => return v,
                Some(_) => {}
                None => panic!("closed ({:?}) while waiting for {event}; saw {:?}", self.closed, self.seen),
            }
        }
    }

    /// Joins `room` and returns the `joined` reply.
    pub fn join(&mut self, room: &str) -> Value {
        self.send(json!({"event": "join", "room": room, "id": format!("join-{room}")}));
        self.recv_event("joined")
    }

    /// Whether anything arrives within `wait`.
    pub fn silent_for(&mut self, wait: Duration) -> bool {
        let stream = match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s,
            _ => unreachable!(),
        };
        stream.set_read_timeout(Some(wait)).unwrap();
        let quiet = match self.ws.read() {
            Ok(Message::Text(t)) => {
                self.seen.push(serde_json::from_str(t.as_str()).unwrap());
                false
            }
            Ok(_) => true,
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => true,
            Err(e) => panic!("pubsub client: {e}"),
        };
        let stream = match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s,
            _ => unreachable!(),
        };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        quiet
    }
}
