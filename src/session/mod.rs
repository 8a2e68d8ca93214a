//! Per-connection and per-actor session policies as plain state machines with the clock passed
//! in: ACK retries, rate limits, heartbeats, the disconnect timeline, the backfill log and the
//! state checksum.

mod ack;
mod checksum;
mod event_log;
mod heartbeat;
mod presence;
mod rate;

pub use ack::{AckAction, AckPolicy, AckTracker};
pub use checksum::state_checksum;
pub use event_log::{EventLog, EventLogConfig, LoggedEvent};
pub use heartbeat::{Heartbeat, HeartbeatAction, HeartbeatConfig};
pub use presence::{Arrival, Presence, PresenceConfig, PresenceEvent};
pub use rate::{Rate, TokenBucket};
