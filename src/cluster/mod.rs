//! Several instances: each instance's identity, and `/relay` rooms whose members are connected
//! to different instances, joined through Redis pub/sub.
//!
//! The decisions and the wire format are sans-IO ([`envelope`], [`Subscriptions`]); [`bus`] is
//! the one place that talks to Redis for this: one connection that publishes (and keeps the
//! instance's heartbeat key), one that subscribes, each on its own thread, so a shard never
//! waits on Redis.

pub mod bus;
pub mod envelope;
mod subscriptions;

pub use bus::{BusConfig, BusHandle, Incoming};
pub use subscriptions::{SubscriptionChange, Subscriptions};
