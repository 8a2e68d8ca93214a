//! One `/pubsub` connection on the shard that serves it: who it is, the rooms it is in, and the
//! rates it may send at. A text message in, the handler's [`Command`]s out.

use std::collections::VecDeque;
use std::time::Instant;

use super::app::{Conn, Ctx, Handlers};
use super::message::{self, Message, Request};
use super::{Command, ErrorCode, ProxyAnswer, ProxyCall, ProxyGates};
use crate::metrics::Metrics;
use crate::rooms::RoomId;
use crate::session::{Rate, TokenBucket};
use crate::ws::{self, DataKind};

/// Error replies a connection gets per second at most (bursts of twice that): a client that
/// floods bad messages cannot make the server flood it back.
const ERRORS_RATE: Rate = Rate { per_sec: 5.0, burst: 10.0 };

/// Messages a connection may send while one waits for the app's backend; past this they are
/// refused (`RATE_LIMITED`) instead of queued without bound.
const MAX_HELD: usize = 64;

/// A connection's `/pubsub` state.
#[derive(Debug)]
pub struct Session {
    /// Who it is.
    pub conn: Conn,
    /// The rooms it is in (or asked to join), in no order.
    pub rooms: Vec<RoomId>,
    max_rooms: usize,
    messages: TokenBucket,
    messages_rate: Rate,
    errors: TokenBucket,
    gates: ProxyGates,
    /// The message waiting for the backend's answer (its text as received).
    pending: Option<String>,
    /// Messages that arrived meanwhile, in order.
    held: VecDeque<(DataKind, Vec<u8>)>,
}

impl Session {
    /// A new connection's session: at most `max_rooms` rooms, `messages_per_sec` messages a
    /// second (bursts of twice that) before `RATE_LIMITED`.
    pub fn new(conn: Conn, now: Instant, max_rooms: usize, messages_per_sec: f64) -> Self {
        Session {
            conn,
            rooms: Vec::new(),
            max_rooms,
            messages: TokenBucket::full(now, Rate::with_double_burst(messages_per_sec)),
            messages_rate: Rate::with_double_burst(messages_per_sec),
            errors: TokenBucket::full(now, ERRORS_RATE),
            gates: ProxyGates::default(),
            pending: None,
            held: VecDeque::new(),
        }
    }

    /// The app's backend decides the actions `gates` names.
    pub fn with_proxy(mut self, gates: ProxyGates) -> Self {
        self.gates = gates;
        self
    }

    /// A data message arrived at `now`: parses it and runs its handler; what the handler asks
    /// for goes to `out`.
    pub fn handle_message(&mut self, now: Instant, kind: DataKind, payload: &[u8], handlers: &Handlers, metrics: &Metrics, out: &mut Vec<Command>) {
        if !self.messages.try_take(now, self.messages_rate) {
            return self.refuse(now, ErrorCode::RateLimited, "too many messages; slow down", None, out);
        }
        if self.pending.is_some() {
            // One connection's messages keep their order: they wait behind the one the backend
            // is deciding.
            if self.held.len() >= MAX_HELD {
                return self.refuse(now, ErrorCode::RateLimited, "too many messages waiting for the app's backend", None, out);
            }
            self.held.push_back((kind, payload.to_vec()));
            return;
        }
        self.dispatch(now, kind, payload, handlers, metrics, out);
    }

    fn dispatch(&mut self, now: Instant, kind: DataKind, payload: &[u8], handlers: &Handlers, metrics: &Metrics, out: &mut Vec<Command>) {
        let text = match (kind, std::str::from_utf8(payload)) {
            (DataKind::Text, Ok(text)) => text,
            _ => return self.refuse(now, ErrorCode::InvalidMessage, "messages are JSON text frames", None, out),
        };
        let message: Message<'_> = match message::parse(text) {
            Ok(message) => message,
            Err(refused) => return self.refuse(now, refused.code, refused.message, refused.id.as_ref(), out),
        };
        if let Some(call) = self.proxy_call(&message) {
            self.pending = Some(text.to_string());
            out.push(Command::Proxy(call));
            return;
        }
        let mut ctx = Ctx::new(&mut self.rooms, self.max_rooms, out, metrics);
        handlers.for_message(&message)(&mut ctx, &self.conn, &message);
    }

    /// What to ask the backend before `message` is carried out, if anything: a join the token
    /// admits (not a repeated one), a publish to a room the connection is in. What the server
    /// refuses anyway is refused without asking.
    fn proxy_call(&self, message: &Message<'_>) -> Option<ProxyCall> {
        match &message.request {
            Request::Join { room } if self.gates.join && self.conn.may_join(room) && !self.rooms.contains(room) => Some(ProxyCall::Join { room: room.clone() }),
            Request::Publish { room, event, data } if self.gates.publish && self.rooms.contains(room) => {
                Some(ProxyCall::Publish { room: room.clone(), event: (*event).to_string(), data: data.get().to_string() })
            }
            _ => None,
        }
    }

    /// The backend answered the pending message: it is carried out (as the backend changed it),
    /// or refused; then the messages held behind it go on, until one waits again.
    pub fn on_proxy_answer(&mut self, now: Instant, answer: ProxyAnswer, handlers: &Handlers, metrics: &Metrics, out: &mut Vec<Command>) {
        let Some(text) = self.pending.take() else { return };
        if let Ok(message) = message::parse(&text) {
            let id = message.id.as_ref();
            let refusal = match (&message.request, &answer) {
                (_, ProxyAnswer::Unavailable) => Some(message::error(ErrorCode::ProxyUnavailable, "the app's backend did not answer in time", id)),
                (Request::Join { .. }, ProxyAnswer::Refuse { message: why, .. }) => Some(message::error(ErrorCode::Forbidden, why, id)),
                (_, ProxyAnswer::Refuse { code, message: why }) => Some(message::error_coded(code, why, id)),
                _ => None,
            };
            match (refusal, &message.request, &answer) {
                (Some(error), ..) => out.push(Command::Reply { frame: ws::encode_data(DataKind::Text, &error) }),
                (None, Request::Publish { room, event, .. }, ProxyAnswer::Replace(data)) => {
                    let changed = Message { request: Request::Publish { room: room.clone(), event, data }, id: message.id.clone() };
                    let mut ctx = Ctx::new(&mut self.rooms, self.max_rooms, out, metrics);
                    handlers.for_message(&changed)(&mut ctx, &self.conn, &changed);
                }
                _ => {
                    let mut ctx = Ctx::new(&mut self.rooms, self.max_rooms, out, metrics);
                    handlers.for_message(&message)(&mut ctx, &self.conn, &message);
                }
            }
        }
        while self.pending.is_none() {
            let Some((kind, payload)) = self.held.pop_front() else { break };
            self.dispatch(now, kind, &payload, handlers, metrics, out);
        }
    }

    /// Runs `handler` (connect or disconnect) for this connection.
    pub fn run(&mut self, handler: Option<&super::ConnHandler>, metrics: &Metrics, out: &mut Vec<Command>) {
        if let Some(handler) = handler {
            let mut ctx = Ctx::new(&mut self.rooms, self.max_rooms, out, metrics);
            handler(&mut ctx, &self.conn);
        }
    }

    fn refuse(&mut self, now: Instant, code: ErrorCode, text: &str, id: Option<&message::MessageId>, out: &mut Vec<Command>) {
        if self.errors.try_take(now, ERRORS_RATE) {
            out.push(Command::Reply { frame: ws::encode_data(DataKind::Text, &message::error(code, text, id)) });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::pubsub::{ConnRef, RoomPatterns};

    fn session(now: Instant, rooms: Option<Vec<String>>) -> Session {
        let conn = Conn {
            conn: ConnRef { shard: 0, key: 1, serial: 1 },
            label: "c1".into(),
            user: "ann".into(),
            meta: None,
            allowed: rooms.map_or_else(RoomPatterns::any, RoomPatterns::only),
        };
        Session::new(conn, now, 2, 10.0)
    }

    fn run(s: &mut Session, now: Instant, text: &str) -> Vec<Command> {
        let metrics = Metrics::new(1, now);
        let mut out = Vec::new();
        s.handle_message(now, DataKind::Text, text.as_bytes(), &Handlers::default(), &metrics, &mut out);
        out
    }

    fn reply(commands: &[Command]) -> serde_json::Value {
        match commands {
            [Command::Reply { frame }] => serde_json::from_slice(ws::frame_payload(frame)).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_built_in_protocol_turns_messages_into_commands() {
        let t0 = Instant::now();
        let mut s = session(t0, Some(vec!["a".into(), "b".into(), "c".into(), "x*".into()]));
        assert!(matches!(&run(&mut s, t0, r#"{"event":"join","room":"a","id":1}"#)[..], [Command::Join { room, id: Some(_) }] if room.as_str() == "a"));
        assert!(matches!(&run(&mut s, t0, r#"{"event":"chat","room":"a","data":"hi"}"#)[..], [Command::Publish { exclude: None, .. }]));
        let e = reply(&run(&mut s, t0, r#"{"event":"chat","room":"b","id":"p"}"#));
        assert_eq!((e["event"].as_str(), e["data"]["code"].as_str(), e["id"].as_str()), (Some("error"), Some("NOT_IN_ROOM"), Some("p")));
        assert_eq!(reply(&run(&mut s, t0, r#"{"event":"join","room":"zzz"}"#))["data"]["code"], "FORBIDDEN");
        assert!(matches!(&run(&mut s, t0, r#"{"event":"join","room":"x1"}"#)[..], [Command::Join { .. }]));
        assert_eq!(reply(&run(&mut s, t0, r#"{"event":"join","room":"c"}"#))["data"]["code"], "TOO_MANY_ROOMS");
        assert!(matches!(&run(&mut s, t0, r#"{"event":"leave","room":"a","id":2}"#)[..], [Command::Leave { .. }]));
        assert_eq!(reply(&run(&mut s, t0 + Duration::from_secs(1), r#"{"event":"leave","room":"a"}"#))["data"]["code"], "NOT_IN_ROOM");
        assert!(matches!(&run(&mut s, t0 + Duration::from_secs(1), r#"{"event":"dm","to":"bob"}"#)[..], [Command::ToUser { user, .. }] if &**user == "bob"));
    }

    #[test]
    fn floods_are_rate_limited_and_so_are_the_errors_they_get() {
        let t0 = Instant::now();
        let mut s = session(t0, None);
        let commands: Vec<Command> = (0..100).flat_map(|_| run(&mut s, t0, r#"{"event":"join","room":"a"}"#)).collect();
        // 20 joins (a burst of twice the rate), then 10 RATE_LIMITED errors (twice the error rate).
        assert_eq!(commands.iter().filter(|c| matches!(c, Command::Join { .. })).count(), 20);
        assert_eq!(commands.iter().filter(|c| matches!(c, Command::Reply { .. })).count(), 10);
        let metrics = Metrics::new(1, t0);
        let mut out = Vec::new();
        s.handle_message(t0 + Duration::from_secs(5), DataKind::Binary, b"x", &Handlers::default(), &metrics, &mut out);
        assert_eq!(reply(&out)["data"]["code"], "INVALID_MESSAGE");
    }

    #[test]
    fn messages_wait_in_order_behind_the_backends_decision() {
        let t0 = Instant::now();
        let mut s = session(t0, None).with_proxy(ProxyGates { join: true, publish: true });
        let call = run(&mut s, t0, r#"{"event":"join","room":"a","id":1}"#);
        assert!(matches!(&call[..], [Command::Proxy(ProxyCall::Join { room })] if room.as_str() == "a"));
        // Held while the backend decides: nothing goes out.
        assert!(run(&mut s, t0, r#"{"event":"chat","room":"a","data":1,"id":2}"#).is_empty());
        assert!(run(&mut s, t0, r#"{"event":"chat","room":"a","data":2,"id":3}"#).is_empty());
        let metrics = Metrics::new(1, t0);
        let mut out = Vec::new();
        s.on_proxy_answer(t0, ProxyAnswer::Allow, &Handlers::default(), &metrics, &mut out);
        // The join is carried out, then the first publish asks the backend and the second waits.
        assert!(matches!(&out[..], [Command::Join { .. }, Command::Proxy(ProxyCall::Publish { data, .. })] if data == "1"), "{out:?}");
        out.clear();
        let replaced: std::sync::Arc<serde_json::value::RawValue> = serde_json::value::RawValue::from_string("\"edited\"".into()).unwrap().into();
        s.on_proxy_answer(t0, ProxyAnswer::Replace(replaced), &Handlers::default(), &metrics, &mut out);
        let published = match &out[..] {
            [Command::Publish { frame, .. }, Command::Proxy(ProxyCall::Publish { data, .. })] if data == "2" => frame.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(serde_json::from_slice::<serde_json::Value>(ws::frame_payload(&published)).unwrap()["data"], "edited");
        out.clear();
        s.on_proxy_answer(t0, ProxyAnswer::Refuse { code: "SPAM".into(), message: "no".into() }, &Handlers::default(), &metrics, &mut out);
        assert_eq!(reply(&out), serde_json::json!({"event": "error", "data": {"code": "SPAM", "message": "no"}, "id": 3}));
        // A refused join is FORBIDDEN with the backend's message; no answer is PROXY_UNAVAILABLE.
        out.clear();
        assert!(matches!(&run(&mut s, t0 + Duration::from_secs(1), r#"{"event":"join","room":"b","id":4}"#)[..], [Command::Proxy(_)]));
        s.on_proxy_answer(t0, ProxyAnswer::Refuse { code: "x".into(), message: "members only".into() }, &Handlers::default(), &metrics, &mut out);
        assert_eq!(reply(&out)["data"], serde_json::json!({"code": "FORBIDDEN", "message": "members only"}));
        out.clear();
        assert!(matches!(&run(&mut s, t0 + Duration::from_secs(1), r#"{"event":"join","room":"c","id":5}"#)[..], [Command::Proxy(_)]));
        s.on_proxy_answer(t0, ProxyAnswer::Unavailable, &Handlers::default(), &metrics, &mut out);
        assert_eq!(reply(&out)["data"]["code"], "PROXY_UNAVAILABLE");
        // What the server refuses anyway is not asked: a publish to a room it is not in.
        assert_eq!(reply(&run(&mut s, t0 + Duration::from_secs(1), r#"{"event":"chat","room":"zz"}"#))["data"]["code"], "NOT_IN_ROOM");
    }

    #[test]
    fn an_app_handler_answers_its_event_and_the_rest_stay_built_in() {
        let t0 = Instant::now();
        let mut s = session(t0, None);
        let mut handlers = Handlers::default();
        handlers.on_message(
            "ping",
            Arc::new(|ctx: &mut Ctx<'_>, conn: &Conn, m: &Message<'_>| {
                let data = serde_json::value::RawValue::from_string(format!("\"{}\"", conn.user())).unwrap();
                ctx.reply("pong", None, Some(&data), m.id.as_ref());
            }),
        );
        let metrics = Metrics::new(1, t0);
        let mut out = Vec::new();
        s.handle_message(t0, DataKind::Text, br#"{"event":"ping","to":"x","id":9}"#, &handlers, &metrics, &mut out);
        assert_eq!(reply(&out), serde_json::json!({"event": "pong", "data": "ann", "id": 9}));
        out.clear();
        s.handle_message(t0, DataKind::Text, br#"{"event":"join","room":"r"}"#, &handlers, &metrics, &mut out);
        assert!(matches!(&out[..], [Command::Join { .. }]));
    }
}
