//! The `/pubsub` wire format: the seed's `Message` `{"event", "data", "room"?, "to"?, "id"?}`
//! parsed from client frames, and the server's messages encoded once into JSON bytes.
//!
//! `data` is parsed once to validate it and then passed on as the bytes the sender wrote, which
//! is why this module uses serde_json's borrowed [`RawValue`] (simd-json has no raw spans).
//! Outgoing messages are written by hand around those raw bytes: one encoding per broadcast.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::ErrorCode;
use crate::rooms::RoomId;

/// Longest event name a client may send.
pub const MAX_EVENT_LEN: usize = 64;
/// Longest user id (`to`, a token's `sub`).
pub const MAX_USER_LEN: usize = 128;

/// Event names only the server sends.
const SERVER_EVENTS: [&str; 6] = ["connected", "joined", "left", "user_joined", "user_left", "error"];

/// A message id: a JSON number or string, echoed verbatim in every reply it causes.
#[derive(Debug, Clone)]
pub struct MessageId(Box<RawValue>);

impl PartialEq for MessageId {
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Eq for MessageId {}

impl MessageId {
    /// The id as the JSON text it was sent as.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// An id from JSON text (a number or a string literal); `None` for anything else.
    pub fn from_json(text: &str) -> Option<MessageId> {
        let raw = RawValue::from_string(text.to_string()).ok()?;
        valid_id(&raw).then_some(MessageId(raw))
    }
}

fn valid_id(raw: &RawValue) -> bool {
    let text = raw.get();
    text.starts_with('"') || text.starts_with('-') || text.starts_with(|c: char| c.is_ascii_digit())
}

/// What a client asked for.
#[derive(Debug, Clone)]
pub enum Request<'a> {
    /// `{"event":"join","room":R}`.
    Join {
        /// The room.
        room: RoomId,
    },
    /// `{"event":"leave","room":R}`.
    Leave {
        /// The room.
        room: RoomId,
    },
    /// `{"event":"presence","room":R}`.
    Presence {
        /// The room.
        room: RoomId,
    },
    /// Any other event with `room`: to every member of the room.
    Publish {
        /// The room.
        room: RoomId,
        /// The event name.
        event: &'a str,
        /// The payload, as sent.
        data: &'a RawValue,
    },
    /// Any other event with `to`: to every connection of a user.
    Direct {
        /// The user.
        to: &'a str,
        /// The event name.
        event: &'a str,
        /// The payload, as sent.
        data: &'a RawValue,
    },
}

impl PartialEq for Request<'_> {
    /// Payloads compare as the JSON text sent.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Request::Join { room: a }, Request::Join { room: b })
            | (Request::Leave { room: a }, Request::Leave { room: b })
            | (Request::Presence { room: a }, Request::Presence { room: b }) => a == b,
            (Request::Publish { room: a, event: e, data: d }, Request::Publish { room: b, event: f, data: g }) => a == b && e == f && d.get() == g.get(),
            (Request::Direct { to: a, event: e, data: d }, Request::Direct { to: b, event: f, data: g }) => a == b && e == f && d.get() == g.get(),
            _ => false,
        }
    }
}

/// A parsed client message: the request and the id its replies carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Message<'a> {
    /// What is asked.
    pub request: Request<'a>,
    /// The id to echo, if one was sent.
    pub id: Option<MessageId>,
}

impl Message<'_> {
    /// The event name (`join`, `leave`, `presence` or the custom one).
    pub fn event(&self) -> &str {
        match &self.request {
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Presence { .. } => "presence",
            Request::Publish { event, .. } | Request::Direct { event, .. } => event,
        }
    }

    /// The room the message names (`join`, `leave`, `presence`, a publish), if any.
    pub fn room(&self) -> Option<&RoomId> {
        match &self.request {
            Request::Join { room } | Request::Leave { room } | Request::Presence { room } | Request::Publish { room, .. } => Some(room),
            Request::Direct { .. } => None,
        }
    }

    /// The user a direct message is for.
    pub fn to(&self) -> Option<&str> {
        match &self.request {
            Request::Direct { to, .. } => Some(to),
            _ => None,
        }
    }

    /// The payload as the JSON the client wrote (`null` when it sent none); `join`, `leave` and
    /// `presence` carry none.
    pub fn data(&self) -> Option<&RawValue> {
        match &self.request {
            Request::Publish { data, .. } | Request::Direct { data, .. } => Some(data),
            _ => None,
        }
    }
}

/// A message refused before anything was done: its error code, what to say, and the id to echo.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `INVALID_MESSAGE` or `ROOM_INVALID`.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: &'static str,
    /// The message's id, when it had a valid one.
    pub id: Option<MessageId>,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// The JSON `null`, for a message sent without `data`.
fn null() -> &'static RawValue {
    // A valid JSON literal: cannot fail.
    serde_json::from_str::<&RawValue>("null").unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// A JSON string field's value (escapes resolved), or `None` if it is not a string.
fn string(raw: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    serde_json::from_str::<std::borrow::Cow<'_, str>>(raw.get()).ok()
}

/// Parses one client text message.
pub fn parse(text: &str) -> Result<Message<'_>, Refused> {
    let refuse = |code, message, id: &Option<MessageId>| Refused { code, message, id: id.clone() };
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|_| refuse(ErrorCode::InvalidMessage, "not a JSON object with valid fields", &None))?;
    let id = match wire.id {
        None => None,
        Some(raw) if valid_id(raw) => Some(MessageId(raw.to_owned())),
        Some(_) => return Err(refuse(ErrorCode::InvalidMessage, "id must be a number or a string", &None)),
    };
    let event = match wire.event.and_then(|raw| serde_json::from_str::<&str>(raw.get()).ok()) {
        Some(event) if !event.is_empty() && event.len() <= MAX_EVENT_LEN && !event.chars().any(char::is_control) => event,
        Some(_) => return Err(refuse(ErrorCode::InvalidMessage, "event must be 1-64 characters without escapes or control characters", &id)),
        None => return Err(refuse(ErrorCode::InvalidMessage, "event is required and must be a string", &id)),
    };
    if SERVER_EVENTS.contains(&event) {
        return Err(refuse(ErrorCode::InvalidMessage, "this event name is reserved for the server", &id));
    }
    let room = match wire.room {
        None => None,
        Some(raw) => {
            let name = string(raw).ok_or_else(|| refuse(ErrorCode::RoomInvalid, "room must be a string", &id))?;
            Some(RoomId::parse(&name).ok_or_else(|| refuse(ErrorCode::RoomInvalid, "room ids are 1-64 characters of A-Z a-z 0-9 _ -", &id))?)
        }
    };
    let data: &RawValue = match wire.data {
        Some(data) => data,
        None => null(),
    };
    let request = match (event, room, wire.to) {
        ("join" | "leave" | "presence", None, _) | ("join" | "leave" | "presence", Some(_), Some(_)) => {
            return Err(refuse(ErrorCode::InvalidMessage, "join, leave and presence take a room and no to", &id));
        }
        ("join", Some(room), None) => Request::Join { room },
        ("leave", Some(room), None) => Request::Leave { room },
        ("presence", Some(room), None) => Request::Presence { room },
        (event, Some(room), None) => Request::Publish { room, event, data },
        (event, None, Some(to)) => {
            let to = serde_json::from_str::<&str>(to.get()).ok().filter(|to| !to.is_empty() && to.len() <= MAX_USER_LEN);
            let to = to.ok_or_else(|| refuse(ErrorCode::InvalidMessage, "to must be a user id of 1-128 characters without escapes", &id))?;
            Request::Direct { to, event, data }
        }
        (_, Some(_), Some(_)) | (_, None, None) => {
            return Err(refuse(ErrorCode::InvalidMessage, "a custom event takes either room (publish) or to (direct), not both or neither", &id));
        }
    };
    Ok(Message { request, id })
}

/// Appends `value` as a JSON string literal.
fn push_str(out: &mut Vec<u8>, value: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Builds a server message: `{"event":E[,"room":R][,"from":F][,"data":D][,"id":X]}`.
#[derive(Debug, Default)]
pub struct Outgoing<'a> {
    /// The event name.
    pub event: &'a str,
    /// The room it concerns.
    pub room: Option<&'a str>,
    /// The sending user (publishes and directs from clients).
    pub from: Option<&'a str>,
    /// The payload (raw JSON).
    pub data: Option<&'a str>,
    /// The id of the message this answers.
    pub id: Option<&'a MessageId>,
}

impl Outgoing<'_> {
    /// The JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.event.len().saturating_add(self.data.map_or(0, str::len)).saturating_add(48));
        out.extend_from_slice(b"{\"event\":");
        push_str(&mut out, self.event);
        if let Some(room) = self.room {
            out.extend_from_slice(b",\"room\":");
            push_str(&mut out, room);
        }
        if let Some(from) = self.from {
            out.extend_from_slice(b",\"from\":");
            push_str(&mut out, from);
        }
        if let Some(data) = self.data {
            out.extend_from_slice(b",\"data\":");
            out.extend_from_slice(data.as_bytes());
        }
        if let Some(id) = self.id {
            out.extend_from_slice(b",\"id\":");
            out.extend_from_slice(id.as_json().as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// `{"event":"error","id":X?,"data":{"code":C,"message":M}}`.
pub fn error(code: ErrorCode, message: &str, id: Option<&MessageId>) -> Vec<u8> {
    error_coded(code.as_str(), message, id)
}

/// `{"event":"error","data":{"code":C,"message":M},"id":X?}` with any code (the app's backend
/// chooses its own).
pub fn error_coded(code: &str, message: &str, id: Option<&MessageId>) -> Vec<u8> {
    let mut data = Vec::with_capacity(message.len().saturating_add(40));
    data.extend_from_slice(b"{\"code\":");
    push_str(&mut data, code);
    data.extend_from_slice(b",\"message\":");
    push_str(&mut data, message);
    data.push(b'}');
    let data = String::from_utf8_lossy(&data);
    Outgoing { event: "error", data: Some(&data), id, ..Outgoing::default() }.encode()
}

/// `{"user":U,"conn":C}`, the data of `user_joined` and `user_left`.
pub fn member_data(user: &str, conn: &str) -> String {
    let mut out = Vec::with_capacity(user.len().saturating_add(conn.len()).saturating_add(24));
    out.extend_from_slice(b"{\"user\":");
    push_str(&mut out, user);
    out.extend_from_slice(b",\"conn\":");
    push_str(&mut out, conn);
    out.push(b'}');
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Request<'_> {
        parse(text).unwrap().request
    }

    fn refused(text: &str) -> (ErrorCode, Option<String>) {
        let r = parse(text).unwrap_err();
        (r.code, r.id.map(|id| id.as_json().to_string()))
    }

    #[test]
    fn the_four_requests_and_their_ids() {
        let room = RoomId::parse("lobby").unwrap();
        assert_eq!(req(r#"{"event":"join","room":"lobby"}"#), Request::Join { room: room.clone() });
        assert_eq!(req(r#"{"event":"leave","room":"lobby"}"#), Request::Leave { room: room.clone() });
        assert_eq!(req(r#"{"event":"presence","room":"lobby"}"#), Request::Presence { room: room.clone() });
        let m = parse(r#"{"event":"chat","room":"lobby","data":{"text":"hi", "n": [1, 2.50]},"id":7}"#).unwrap();
        assert_eq!(m.id.unwrap().as_json(), "7");
        let Request::Publish { data, event, .. } = m.request else { panic!() };
        // The bytes the sender wrote, spacing and number format included.
        assert_eq!((event, data.get()), ("chat", r#"{"text":"hi", "n": [1, 2.50]}"#));
        let Request::Direct { to, data, .. } = req(r#"{"event":"dm","to":"u-42","id":"a-1"}"#) else { panic!() };
        assert_eq!((to, data.get()), ("u-42", "null"));
    }

    #[test]
    fn invalid_messages_are_refused_with_the_id_when_it_is_valid() {
        assert_eq!(refused("not json"), (ErrorCode::InvalidMessage, None));
        assert_eq!(refused("[1,2]"), (ErrorCode::InvalidMessage, None));
        assert_eq!(refused(r#"{"room":"a","id":3}"#), (ErrorCode::InvalidMessage, Some("3".into())));
        assert_eq!(refused(r#"{"event":5,"room":"a","id":"x"}"#), (ErrorCode::InvalidMessage, Some("\"x\"".into())));
        assert_eq!(refused(r#"{"event":"chat","id":1}"#), (ErrorCode::InvalidMessage, Some("1".into())));
        assert_eq!(refused(r#"{"event":"chat","room":"a","to":"u","id":1}"#).0, ErrorCode::InvalidMessage);
        assert_eq!(refused(r#"{"event":"joined","room":"a"}"#).0, ErrorCode::InvalidMessage);
        assert_eq!(refused(r#"{"event":"error","to":"u"}"#).0, ErrorCode::InvalidMessage);
        assert_eq!(refused(r#"{"event":"join","to":"u"}"#).0, ErrorCode::InvalidMessage);
        assert_eq!(refused(r#"{"event":"chat","room":"a","id":{"x":1}}"#), (ErrorCode::InvalidMessage, None));
        assert_eq!(refused(r#"{"event":"chat","room":"a b","id":2}"#), (ErrorCode::RoomInvalid, Some("2".into())));
        assert_eq!(refused(r#"{"event":"chat","room":7}"#).0, ErrorCode::RoomInvalid);
        assert_eq!(refused(&format!(r#"{{"event":"{}","room":"a"}}"#, "e".repeat(65))).0, ErrorCode::InvalidMessage);
        assert_eq!(refused(r#"{"event":"chat","to":""}"#).0, ErrorCode::InvalidMessage);
        // A truncated data value is not JSON.
        assert_eq!(refused(r#"{"event":"chat","room":"a","data":{"x":}"#).0, ErrorCode::InvalidMessage);
    }

    #[test]
    fn outgoing_messages_wrap_the_raw_data() {
        let id = MessageId::from_json("\"r1\"").unwrap();
        let publish = Outgoing { event: "chat", room: Some("lobby"), from: Some("ann \"a\""), data: Some(r#"{"t": 1}"#), id: None }.encode();
        assert_eq!(String::from_utf8(publish).unwrap(), r#"{"event":"chat","room":"lobby","from":"ann \"a\"","data":{"t": 1}}"#);
        let joined = Outgoing { event: "joined", room: Some("lobby"), data: Some(r#"{"members":3}"#), id: Some(&id), ..Outgoing::default() }.encode();
        assert_eq!(String::from_utf8(joined).unwrap(), r#"{"event":"joined","room":"lobby","data":{"members":3},"id":"r1"}"#);
        let err = error(ErrorCode::NotInRoom, "join \"a\" first", Some(&id));
        let v: serde_json::Value = serde_json::from_slice(&err).unwrap();
        assert_eq!(v, serde_json::json!({"event": "error", "id": "r1", "data": {"code": "NOT_IN_ROOM", "message": "join \"a\" first"}}));
        assert_eq!(member_data("u", "c"), r#"{"user":"u","conn":"c"}"#);
        assert!(MessageId::from_json("{}").is_none());
    }
}
