//! The PartyFlow JSON protocol, sans-IO: client envelopes in, server envelopes out.
//!
//! Client messages are parsed with simd-json; server messages are serialized once per broadcast
//! scope and protocol version. Every rejection carries an [`ErrorCode`] from the protocol's
//! fixed list, so clients can react to codes rather than to message text.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod envelope;
mod version;

pub use envelope::{encode_server, parse_client, ClientMsg, Rejection, ServerMsg};

/// Sets `key` of a JSON object (does nothing to anything else: no panic on a non-object, unlike
/// `value[key] = …`).
pub fn set_field(object: &mut serde_json::Value, key: &str, value: impl Into<serde_json::Value>) {
    if let Some(map) = object.as_object_mut() {
        map.insert(key.to_string(), value.into());
    }
}
pub use version::{Version, VersionError, SERVER_VERSION};

/// Error codes of the `ERROR` message (seed `000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not JSON, not an object, or a field of the wrong type.
    InvalidMessage,
    /// A `type` the server does not know.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// The actor may not do this (wrong role, forged actorId).
    Unauthorized,
    /// The room does not exist (or the message names another room).
    RoomNotFound,
    /// Not allowed in the room's current state, or lost a race.
    InvalidTransition,
    /// The client's protocol major version is not served.
    UpgradeRequired,
    /// Message over the size limit.
    MessageTooLarge,
    /// Too many messages.
    RateLimited,
    /// No seat left.
    RoomFull,
    /// A server fault.
    InternalError,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidMessage,
        ErrorCode::UnknownType,
        ErrorCode::MissingField,
        ErrorCode::Unauthorized,
        ErrorCode::RoomNotFound,
        ErrorCode::InvalidTransition,
        ErrorCode::UpgradeRequired,
        ErrorCode::MessageTooLarge,
        ErrorCode::RateLimited,
        ErrorCode::RoomFull,
        ErrorCode::InternalError,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::MissingField => "MISSING_FIELD",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::RoomNotFound => "ROOM_NOT_FOUND",
            ErrorCode::InvalidTransition => "INVALID_TRANSITION",
            ErrorCode::UpgradeRequired => "UPGRADE_REQUIRED",
            ErrorCode::MessageTooLarge => "MESSAGE_TOO_LARGE",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::RoomFull => "ROOM_FULL",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// Who receives a server message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Host, players and spectators.
    All,
    /// The host only.
    Host,
    /// Players only (not the host, not spectators).
    Players,
    /// One actor.
    Actor(String),
}

impl Scope {
    /// The `broadcast` field's value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Host => "host",
            Scope::Players => "players",
            Scope::Actor(_) => "actor",
        }
    }
}
