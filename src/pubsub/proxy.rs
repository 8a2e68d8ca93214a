//! The app's backend in the loop (`--proxy-join-url`, `--proxy-publish-url`): which messages of
//! a connection wait for the backend's decision, what is asked, and what its answer means.
//! Sans-IO: the session emits a [`ProxyCall`], the runtime makes the HTTP request off the shard
//! and hands back a [`ProxyAnswer`].

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::rooms::RoomId;

/// Which actions the backend decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyGates {
    /// `join`s wait for `--proxy-join-url`.
    pub join: bool,
    /// Publishes wait for `--proxy-publish-url`.
    pub publish: bool,
}

/// A question for the backend about one connection's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyCall {
    /// May the connection join `room`?
    Join {
        /// The room.
        room: RoomId,
    },
    /// May it publish `event` with `data` (raw JSON) to `room`, and as what?
    Publish {
        /// The room.
        room: RoomId,
        /// The event name.
        event: String,
        /// The payload as sent.
        data: String,
    },
}

/// What the backend decided.
#[derive(Debug, Clone)]
pub enum ProxyAnswer {
    /// `200 {}`: go ahead, unchanged.
    Allow,
    /// `200 {"data": D}`: publish D instead.
    Replace(Arc<RawValue>),
    /// `403` (join) or `200 {"error": {"code", "message"}}` (publish): refused with this error.
    Refuse {
        /// The error code sent to the client.
        code: String,
        /// Its message.
        message: String,
    },
    /// No usable answer in time (`PROXY_UNAVAILABLE`).
    Unavailable,
}
