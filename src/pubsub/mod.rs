//! Generic rooms and pub/sub for any real-time app (chats, notifications, dashboards): the
//! `/pubsub` endpoint, its JWT identity, and the handler API an embedding application writes
//! against ([`Ctx`], [`Conn`], [`Handlers`]).
//!
//! Everything here is sans-IO: messages parse into [`Message`]s, handlers turn them into
//! [`Command`]s, and the owner of a room or user ([`rooms`]) keeps members and presence. The
//! runtime moves the commands between shards (and instances) and the frames to sockets.
//!
//! Rooms are owned by the shard their id hashes to, users by the shard their id hashes to; a
//! connection stays on the shard that accepted it, whatever rooms it joins.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod app;
pub mod message;
pub mod protocol;
pub mod proxy;
pub mod rooms;
pub mod session;
pub mod shard;
pub mod token;

pub use app::{Command, Conn, ConnHandler, Ctx, Handlers, MessageHandler, CLOSE_DISCONNECTED};
pub use message::{Message, MessageId, Request};
pub use proxy::{ProxyAnswer, ProxyCall, ProxyGates};
pub use rooms::ConnRef;
pub use session::Session;
pub use shard::{Output, PubSubShard, ShardMessage};
pub use token::{Claims, Grant, RoomPatterns, TokenError, TokenKey};

/// Error codes of `{"event":"error","data":{"code":C,…}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, no `event`, both or neither of `room`/`to` for a custom event, or a reserved
    /// event name.
    InvalidMessage,
    /// Publishing to (or leaving) a room the connection is not in.
    NotInRoom,
    /// The token does not admit the room.
    Forbidden,
    /// Past `--pubsub-max-rooms-per-connection`.
    TooManyRooms,
    /// Past the connection's message rate.
    RateLimited,
    /// A room id outside the rules (1-64 of `[A-Za-z0-9_-]`).
    RoomInvalid,
    /// The app's backend (`--proxy-join-url`, `--proxy-publish-url`) did not answer in time.
    ProxyUnavailable,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 7] = [
        ErrorCode::InvalidMessage,
        ErrorCode::NotInRoom,
        ErrorCode::Forbidden,
        ErrorCode::TooManyRooms,
        ErrorCode::RateLimited,
        ErrorCode::RoomInvalid,
        ErrorCode::ProxyUnavailable,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::NotInRoom => "NOT_IN_ROOM",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::TooManyRooms => "TOO_MANY_ROOMS",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::RoomInvalid => "ROOM_INVALID",
            ErrorCode::ProxyUnavailable => "PROXY_UNAVAILABLE",
        }
    }
}
