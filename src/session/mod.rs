//! Per-connection session policies as plain state machines with the clock passed in.

mod heartbeat;

pub use heartbeat::{Heartbeat, HeartbeatAction};
