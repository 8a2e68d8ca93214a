//! The API an application's handlers are written against: a connection ([`Conn`]), what a
//! handler may do ([`Ctx`]), and the handler table ([`Handlers`]). The built-in `/pubsub`
//! protocol is a set of handlers on this API ([`super::protocol`]).
//!
//! A handler runs on the shard that serves its connection, synchronously, and returns quickly:
//! what it asks for (join a room, publish, send to a user) is recorded as a [`Command`] that the
//! shard carries out once the handler returns, on this shard or by a message to the shard (or
//! instance) that owns the room or user. So a handler never waits on another shard, and one
//! connection's commands reach every room in the order it issued them.

use std::sync::Arc;

use ahash::AHashMap;
use bytes::Bytes;
use serde_json::value::RawValue;

use super::message::{self, Message, MessageId, Outgoing};
use super::rooms::ConnRef;
use super::token::RoomPatterns;
use super::ErrorCode;
use crate::metrics::{Metrics, Stats};
use crate::rooms::RoomId;
use crate::ws::{self, DataKind};

/// A `/pubsub` connection as handlers see it.
#[derive(Debug, Clone)]
pub struct Conn {
    pub(crate) conn: ConnRef,
    pub(crate) label: Arc<str>,
    pub(crate) user: Arc<str>,
    pub(crate) meta: Option<Arc<RawValue>>,
    pub(crate) allowed: RoomPatterns,
}

impl Conn {
    /// A connection `conn` of `user` called `label`, with `meta`, admitted to `allowed` rooms.
    pub fn new(conn: ConnRef, label: Arc<str>, user: Arc<str>, meta: Option<Arc<RawValue>>, allowed: RoomPatterns) -> Self {
        Conn { conn, label, user, meta, allowed }
    }

    /// Replaces the connection's metadata (a JSON object).
    pub(crate) fn set_meta(&mut self, meta: Arc<RawValue>) {
        self.meta = Some(meta);
    }

    /// The connection's id (what presence and `user_joined` call `conn`), unique in the cluster.
    pub fn id(&self) -> &str {
        &self.label
    }

    /// The user: the token's `sub`, or the connection id when `/pubsub` runs without tokens.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The connection's metadata (a JSON object), from its token or [`Ctx::set_meta`].
    pub fn meta(&self) -> Option<&RawValue> {
        self.meta.as_deref()
    }

    /// Where the connection is served: what [`Ctx::send_to_conn`] takes.
    pub fn conn_ref(&self) -> ConnRef {
        self.conn
    }

    /// Whether its token admits it to `room`.
    pub fn may_join(&self, room: &RoomId) -> bool {
        self.allowed.allows(room)
    }
}

/// What a handler asked for, carried out by the shard after the handler returns.
#[derive(Debug)]
pub enum Command {
    /// The connection joins `room`; it is answered `joined` with `id` once the room has it.
    Join {
        /// The room.
        room: RoomId,
        /// The id the `joined` reply carries.
        id: Option<MessageId>,
    },
    /// The connection leaves `room` (others get `user_left`); it is answered `left` with `id`
    /// once the room let it go, so its replies keep the order of its requests.
    Leave {
        /// The room.
        room: RoomId,
        /// The id the `left` reply carries.
        id: Option<MessageId>,
    },
    /// The connection gets `room`'s presence, answered with `id`.
    Presence {
        /// The room.
        room: RoomId,
        /// The id the `presence` reply carries.
        id: Option<MessageId>,
    },
    /// `frame` to every member of `room` but `exclude`.
    Publish {
        /// The room.
        room: RoomId,
        /// The encoded message.
        frame: Bytes,
        /// A connection not to send it to.
        exclude: Option<ConnRef>,
    },
    /// `frame` to every connection of `user`.
    ToUser {
        /// The user.
        user: Arc<str>,
        /// The encoded message.
        frame: Bytes,
    },
    /// `frame` to one connection of this process.
    ToConn {
        /// The connection.
        conn: ConnRef,
        /// The encoded message.
        frame: Bytes,
    },
    /// `frame` to the connection whose handler runs.
    Reply {
        /// The encoded message.
        frame: Bytes,
    },
    /// The connection's metadata becomes `meta` (rooms joined later show it).
    SetMeta {
        /// A JSON object.
        meta: Arc<RawValue>,
    },
    /// The app's backend must decide the connection's message first (its later messages wait).
    Proxy(super::ProxyCall),
    /// Every connection of `user` is closed with `code`.
    DisconnectUser {
        /// The user.
        user: Arc<str>,
        /// The close code.
        code: u16,
    },
}

/// What a handler can do. Every operation is recorded and carried out after the handler
/// returns (see the module documentation); checks that need only this connection's own state
/// (room limits, membership) are answered at once.
pub struct Ctx<'a> {
    rooms: &'a mut Vec<RoomId>,
    max_rooms: usize,
    out: &'a mut Vec<Command>,
    metrics: &'a Metrics,
}

impl<'a> Ctx<'a> {
    /// A context over a connection's joined `rooms` (at most `max_rooms`), recording into `out`.
    pub(crate) fn new(rooms: &'a mut Vec<RoomId>, max_rooms: usize, out: &'a mut Vec<Command>, metrics: &'a Metrics) -> Self {
        Ctx { rooms, max_rooms, out, metrics }
    }

    /// Joins the connection to `room`; it is answered `{"event":"joined","room":R,"data":
    /// {"members":N},"id":X}` once the room has it, and the other members get `user_joined`.
    /// Joining a room again only answers `joined` again. `TOO_MANY_ROOMS` past the limit.
    pub fn join(&mut self, room: &RoomId, id: Option<&MessageId>) -> Result<(), ErrorCode> {
        if !self.rooms.contains(room) {
            if self.rooms.len() >= self.max_rooms {
                return Err(ErrorCode::TooManyRooms);
            }
            self.rooms.push(room.clone());
        }
        self.out.push(Command::Join { room: room.clone(), id: id.cloned() });
        Ok(())
    }

    /// Leaves `room`: the connection is answered `{"event":"left","room":R,"id":X}` and the others
    /// get `user_left`; `NOT_IN_ROOM` if the connection is not in it.
    pub fn leave(&mut self, room: &RoomId, id: Option<&MessageId>) -> Result<(), ErrorCode> {
        let pos = self.rooms.iter().position(|r| r == room).ok_or(ErrorCode::NotInRoom)?;
        self.rooms.swap_remove(pos);
        self.out.push(Command::Leave { room: room.clone(), id: id.cloned() });
        Ok(())
    }

    /// Whether the connection is in `room`.
    pub fn is_member(&self, room: &RoomId) -> bool {
        self.rooms.contains(room)
    }

    /// The rooms the connection is in.
    pub fn rooms(&self) -> &[RoomId] {
        self.rooms
    }

    /// Answers the connection with `room`'s members (`{"event":"presence",…}` with `id`).
    pub fn presence(&mut self, room: &RoomId, id: Option<&MessageId>) {
        self.out.push(Command::Presence { room: room.clone(), id: id.cloned() });
    }

    /// Sends `{"event":E,"room":R,"from":F?,"data":D}` to every member of `room` (on every shard
    /// and, with Redis, every instance), but `exclude`. `data` is raw JSON, sent as it is.
    pub fn broadcast(&mut self, room: &RoomId, event: &str, data: &RawValue, from: Option<&str>, exclude: Option<ConnRef>) {
        let frame = frame(&Outgoing { event, room: Some(room.as_str()), from, data: Some(data.get()), id: None });
        self.out.push(Command::Publish { room: room.clone(), frame, exclude });
    }

    /// Sends `{"event":E,"from":F?,"data":D}` to every connection of `user` (nothing when the
    /// user is offline).
    pub fn send_to_user(&mut self, user: &str, event: &str, data: &RawValue, from: Option<&str>) {
        let frame = frame(&Outgoing { event, from, data: Some(data.get()), ..Outgoing::default() });
        self.out.push(Command::ToUser { user: user.into(), frame });
    }

    /// Sends `{"event":E,"data":D}` to one connection of this process.
    pub fn send_to_conn(&mut self, conn: ConnRef, event: &str, data: &RawValue) {
        let frame = frame(&Outgoing { event, data: Some(data.get()), ..Outgoing::default() });
        self.out.push(Command::ToConn { conn, frame });
    }

    /// Answers the connection with `{"event":E,"room":R?,"data":D?,"id":X?}`.
    pub fn reply(&mut self, event: &str, room: Option<&RoomId>, data: Option<&RawValue>, id: Option<&MessageId>) {
        let frame = frame(&Outgoing { event, room: room.map(RoomId::as_str), data: data.map(RawValue::get), id, ..Outgoing::default() });
        self.out.push(Command::Reply { frame });
    }

    /// Answers the connection with `{"event":"error","id":X?,"data":{"code":C,"message":M}}`.
    pub fn error(&mut self, code: ErrorCode, text: &str, id: Option<&MessageId>) {
        self.out.push(Command::Reply { frame: ws::encode_data(DataKind::Text, &message::error(code, text, id)) });
    }

    /// Replaces the connection's metadata (a JSON object; anything else is ignored). Presence in
    /// rooms joined from now on shows it.
    pub fn set_meta(&mut self, meta: &RawValue) {
        if meta.get().trim_start().starts_with('{') {
            self.out.push(Command::SetMeta { meta: Arc::from(meta.to_owned()) });
        }
    }

    /// Closes every connection of `user` (on every instance, with Redis) with close code 4003.
    pub fn disconnect_user(&mut self, user: &str) {
        self.out.push(Command::DisconnectUser { user: user.into(), code: CLOSE_DISCONNECTED });
    }

    /// The server's counters, summed over its shards.
    pub fn stats(&self) -> Stats {
        self.metrics.stats()
    }
}

/// The close code of a connection the server API or a handler disconnected.
pub const CLOSE_DISCONNECTED: u16 = 4003;

/// A text frame of `message`.
pub(crate) fn frame(message: &Outgoing<'_>) -> Bytes {
    ws::encode_data(DataKind::Text, &message.encode())
}

/// A handler of one event.
pub type MessageHandler = dyn Fn(&mut Ctx<'_>, &Conn, &Message<'_>) + Send + Sync;
/// A handler of a connection opening or closing.
pub type ConnHandler = dyn Fn(&mut Ctx<'_>, &Conn) + Send + Sync;

/// Which handler answers which event.
#[derive(Clone)]
pub struct Handlers {
    events: AHashMap<String, Arc<MessageHandler>>,
    others: Arc<MessageHandler>,
    connect: Option<Arc<ConnHandler>>,
    disconnect: Option<Arc<ConnHandler>>,
}

impl Default for Handlers {
    /// The built-in `/pubsub` protocol: `join`, `leave`, `presence`, and every other event
    /// published to its room or sent to its user.
    fn default() -> Self {
        let mut events: AHashMap<String, Arc<MessageHandler>> = AHashMap::new();
        events.insert("join".into(), Arc::new(super::protocol::join));
        events.insert("leave".into(), Arc::new(super::protocol::leave));
        events.insert("presence".into(), Arc::new(super::protocol::presence));
        Handlers { events, others: Arc::new(super::protocol::route), connect: None, disconnect: None }
    }
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut events: Vec<&String> = self.events.keys().collect();
        events.sort();
        f.debug_struct("Handlers").field("events", &events).finish_non_exhaustive()
    }
}

impl Handlers {
    /// `handler` answers `event` instead of the built-in behaviour.
    pub fn on_message(&mut self, event: &str, handler: Arc<MessageHandler>) {
        self.events.insert(event.to_string(), handler);
    }

    /// `handler` answers every event without a handler of its own, instead of the built-in
    /// routing (publish to `room`, send to `to`).
    pub fn on_other(&mut self, handler: Arc<MessageHandler>) {
        self.others = handler;
    }

    /// `handler` runs when a connection opens.
    pub fn on_connect(&mut self, handler: Arc<ConnHandler>) {
        self.connect = Some(handler);
    }

    /// `handler` runs when a connection closes (after it left its rooms).
    pub fn on_disconnect(&mut self, handler: Arc<ConnHandler>) {
        self.disconnect = Some(handler);
    }

    /// The handler of `message`.
    pub(crate) fn for_message(&self, message: &Message<'_>) -> &MessageHandler {
        self.events.get(message.event()).map_or(&*self.others, |h| &**h)
    }

    pub(crate) fn connect(&self) -> Option<&ConnHandler> {
        self.connect.as_deref()
    }

    pub(crate) fn disconnect(&self) -> Option<&ConnHandler> {
        self.disconnect.as_deref()
    }
}
