//! Per-connection session policies as plain state machines with the clock passed in.

mod ack;
mod heartbeat;
mod rate;

pub use ack::{AckAction, AckPolicy, AckTracker};
pub use heartbeat::{Heartbeat, HeartbeatAction};
pub use rate::TokenBucket;
