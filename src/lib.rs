//! PartyFlow: a thread-per-core io_uring WebSocket room server for real-time party games.
//!
//! # Design
//! One glommio executor per core owns its rooms outright; a connection that lands on another
//! shard is handed to the owner of its room. Everything except [`runtime`] is sans-IO and
//! runtime-agnostic: protocol codecs ([`ws`], [`http`]) turn bytes into events, state machines
//! ([`session`], [`rooms`]) take events and the current time and produce output, and the runtime
//! only moves bytes and time between sockets and those machines. A broadcast is encoded once
//! into a shared [`bytes::Bytes`] frame and every recipient's [`outbox::Outbox`] holds a clone.
#![warn(missing_docs)]
// Panic-free by construction outside tests: no unwrap/expect/panic!/indexing in server code
// (`.get()` and typed errors instead; the few provably safe exceptions carry an `allow` with
// the reason). Arithmetic on input-derived values is checked in the modules that decode input
// (`ws`, `http`, `protocol`, `auth`, `api`, the cluster wire formats, the snapshot format).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing))]

pub mod admin;
pub mod admission;
pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod deadlines;
pub mod doctor;
pub mod game;
pub mod http;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod proxy;
pub mod pubsub;
pub mod rooms;
pub mod runtime;
mod server;
pub mod session;
pub mod store;
pub mod web;
pub mod webhooks;
pub mod ws;

pub use runtime::ShutdownHandle;
pub use server::{Server, ServerBuilder};

/// The server's version and the git commit it was built from, e.g. `0.1.0 (3f2a9c01b4de)`.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("PARTYFLOW_GIT_COMMIT"), ")");
