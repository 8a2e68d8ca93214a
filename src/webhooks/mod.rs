//! Webhooks: the app's backend hears about rooms and games (results, players, lifecycle).
//!
//! Sans-IO like the rest: [`Event`]s are made where rooms change, [`Delivery`] decides what to
//! send when (batches, a room's events in `seq` order, retries with backoff, the age limit, the
//! bounded queue) with the clock passed in, and [`sign`] computes the signature headers. A thread
//! off the shards moves the batches over HTTP; with Redis, another keeps every event in a Redis
//! Stream until it is acknowledged.

mod delivery;
mod event;
pub mod game;
mod sender;
mod sign;
mod stream;

pub use delivery::{Batch, BatchId, Delivery, DeliveryConfig, Outcome, Settled};
pub use event::{Event, StreamRef};
pub use sender::{start, SenderConfig, WebhookHandle};
pub use sign::{sign, verify, SIGNATURE_HEADER, TIMESTAMP_HEADER};
pub use stream::{stream_key, streams_key, StreamConfig};
