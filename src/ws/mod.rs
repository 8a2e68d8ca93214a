//! RFC 6455 WebSocket pieces, sans-IO: bytes in, events out; frames encoded once into `Bytes`.
//!
//! The wire-level details (frame header layout, opcodes, close-code classes, the accept key) come
//! from tungstenite's public building blocks; this module adds what a server with shared
//! broadcast buffers needs on top: an incremental [`Decoder`] that validates as bytes arrive
//! (fail-fast UTF-8, limits checked before allocation) and an encoder that produces a complete
//! frame in one [`bytes::Bytes`] so that fan-out only clones a reference.
#![cfg_attr(not(test), deny(clippy::arithmetic_side_effects))]
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod decoder;
mod deflate_offer;
mod deflate_out;
mod frame;
mod handshake;
pub mod subprotocol;

pub use decoder::{Decoder, Event, ProtocolError};
pub use deflate_offer::{negotiate, Agreed, Malformed};
pub use deflate_out::{DeflateStats, FrameDeflater};
pub use frame::{encode_close, encode_data, encode_pong, frame_payload, ping_frame, DataKind};
pub use handshake::{accept_response, validate_upgrade, HandshakeError};

/// Close codes the server sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown) or peer silent past the pong timeout.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Text that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation; used for slow consumers.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// Message larger than the configured limit.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Unexpected server condition.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// Removed by an operator (`POST /api/rooms/{id}/kick`).
    pub const KICKED: u16 = 4004;
}
