//! Several instances: each instance's identity; `/relay` rooms whose members are connected to
//! different instances, joined through Redis pub/sub; game rooms owned by one instance at a
//! time through a lease, and reached through any other (the edge forwards).
//!
//! The decisions and the wire formats are sans-IO ([`envelope`], [`forward`], [`Leases`],
//! [`Subscriptions`], [`RemoteMembers`]: the clients of this instance's game rooms connected
//! elsewhere); [`bus`] is the one place that talks to Redis pub/sub: one connection that
//! publishes (and keeps the instance's heartbeat key), one that subscribes, each on its own
//! thread, so a shard never waits on Redis. Leases are taken and renewed through the store's
//! connection ([`crate::store`]), which also fences the snapshot writes.

pub mod bus;
pub mod envelope;
pub mod forward;
mod lease;
pub mod pubsub;
mod remote;
mod subscriptions;

pub use bus::{BusConfig, BusHandle, Incoming};
pub use forward::{Call, Forward};
pub use lease::{Leases, Renewal};
pub use remote::{Outgoing, RemoteMembers, CLOSE_RECONNECT};
pub use subscriptions::{SubscriptionChange, Subscriptions};
