//! The app's backend decides for `/pubsub` (`--proxy-connect-url`, `--proxy-join-url`,
//! `--proxy-publish-url`): what is asked ([`request`]), what the answers mean ([`answer`]), and
//! the threads that make the calls off the shards ([`client`]).
//!
//! Every call is a signed `POST` (the webhook signature headers, `--webhook-secret`) with a
//! time limit (`--proxy-timeout`); a call that cannot be made, fails or runs out of time is
//! `503` on connect and `PROXY_UNAVAILABLE` on join and publish. Shards never wait: a
//! connection's upgrade awaits its own answer, and a connection's messages wait in its session
//! ([`crate::pubsub::Session`]) while other connections go on.

pub mod answer;
mod client;
pub mod request;

pub use answer::{connect_answer, join_answer, publish_answer, Admission};
pub use client::{Proxy, ProxyConfig, Reply};
