//! The embeddable server: [`Server::builder`] configures it, adds an application's handlers to
//! the `/pubsub` protocol, binds it and runs it.
//!
//! # Thread-per-core rules
//! The server runs one executor per CPU core, each on its own pinned thread, and a connection
//! stays on the shard (thread) that accepted it. Handlers run on that thread, one message at a
//! time, with no lock around them. So:
//!
//! - **Never block in a handler.** No blocking I/O, no `std::thread::sleep`, no waiting on a
//!   lock another thread may hold for long, no synchronous HTTP or database call: while a
//!   handler runs, every other connection of its shard waits. Hand slow work to your own thread
//!   (a channel) and push its result back through the server API (`POST /api/send`,
//!   `/api/publish`) or a connection's next message.
//! - **State shared between connections is shared between threads.** Handlers are `Send + Sync`
//!   closures called from every shard; keep shared state in atomics, or behind a `Mutex` held
//!   only for a few instructions. Per-connection state belongs in the connection's metadata
//!   ([`Ctx::set_meta`]) or in a map keyed by [`Conn::id`].
//! - **Room operations are commands.** [`Ctx::join`], [`Ctx::broadcast`], [`Ctx::send_to_user`]
//!   and the rest are recorded and carried out after the handler returns, by the shard that
//!   owns the room or user (and, with Redis, by every instance). A handler never waits for
//!   another shard, and one connection's messages reach a room in the order it sent them.
//!
//! # Example
//! A server with one event of its own, `whoami`, next to the built-in protocol; a client
//! joins a room, publishes, and asks who it is:
//!
//! ```
//! use partyflow::pubsub::{Conn, Ctx, Message};
//! use partyflow::Server;
//! use serde_json::value::RawValue;
//! use tungstenite::Message as Frame;
//!
//! # fn main() -> anyhow::Result<()> {
//! let server = Server::builder()
//!     .listen("127.0.0.1:0".parse()?)
//!     .shards(2)
//!     .handle_signals(false)
//!     .on_message("whoami", |ctx: &mut Ctx<'_>, conn: &Conn, msg: &Message<'_>| {
//!         let me = serde_json::json!({ "user": conn.user(), "rooms": ctx.rooms().len() });
//!         if let Ok(me) = RawValue::from_string(me.to_string()) {
//!             ctx.reply("whoami", None, Some(&me), msg.id.as_ref());
//!         }
//!     })
//!     .build()?;
//! let (addr, stop) = (server.local_addr(), server.shutdown_handle());
//! let running = std::thread::spawn(move || server.run());
//!
//! let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/pubsub"))?;
//! let hello: serde_json::Value = serde_json::from_str(ws.read()?.to_text()?)?;
//! assert_eq!(hello["event"], "connected");
//! let mut ask = |text: &str| -> anyhow::Result<serde_json::Value> {
//!     ws.send(Frame::text(text))?;
//!     Ok(serde_json::from_str(ws.read()?.to_text()?)?)
//! };
//! assert_eq!(ask(r#"{"event":"join","room":"lobby","id":1}"#)?["data"]["members"], 1);
//! assert_eq!(ask(r#"{"event":"chat","room":"lobby","data":"hi"}"#)?["data"], "hi");
//! assert_eq!(ask(r#"{"event":"whoami","to":"me","id":"w"}"#)?["data"]["rooms"], 1);
//!
//! stop.shutdown();
//! running.join().expect("the server thread")?;
//! # Ok(())
//! # }
//! ```
//!
//! A custom event reaches its handler whatever it carries (`room` or `to`); [`Message::room`],
//! [`Message::to`] and [`Message::data`] give the fields. `examples/` has fuller programs: `basic`,
//! `chat`, `notifications` and `with-redis`.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::ServeConfig;
use crate::pubsub::{Conn, Ctx, Handlers, Message};
use crate::runtime::{Bound, ShutdownHandle, Signals};

/// A bound server, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    bound: Bound,
}

impl Server {
    /// A builder with the built-in defaults (those of the flag table) and the built-in
    /// `/pubsub` protocol.
    pub fn builder() -> ServerBuilder {
        ServerBuilder { config: ServeConfig::default(), handlers: Handlers::default(), signals: Signals::Watch }
    }

    /// The address the server listens on (the port the system chose, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.bound.local_addr()
    }

    /// A handle that stops the server gracefully, from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.bound.shutdown_handle()
    }

    /// Runs the server on this thread until it is shut down (a [`ShutdownHandle`], or
    /// SIGTERM/SIGINT unless [`ServerBuilder::handle_signals`] turned that off) and its
    /// connections have drained.
    pub fn run(self) -> anyhow::Result<()> {
        self.bound.run()
    }
}

/// Configures a [`Server`]. Every setting of the command line is available through
/// [`ServerBuilder::config`]; the common ones have their own method.
#[derive(Debug)]
#[must_use = "a builder does nothing until build()"]
pub struct ServerBuilder {
    config: ServeConfig,
    handlers: Handlers,
    signals: Signals,
}

impl ServerBuilder {
    /// Listen on `addr` (port 0: a free port, see [`Server::local_addr`]). Default `127.0.0.1:8080`.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// Run `shards` executors. Default: one per CPU this process may use.
    pub fn shards(mut self, shards: usize) -> Self {
        self.config.shards = Some(shards);
        self
    }

    /// Replace every setting at once (e.g. from [`ServeConfig::load`]).
    pub fn config(mut self, config: ServeConfig) -> Self {
        self.config = config;
        self
    }

    /// Require a JWT signed HS256 with `secret` on every `/pubsub` connection (`--pubsub-secret`).
    pub fn pubsub_secret(mut self, secret: impl Into<String>) -> Self {
        self.config.pubsub_secret = Some(secret.into());
        self
    }

    /// The key that signs game-room tokens (`--secret`); instances sharing rooms share it.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.config.secret = Some(secret.into());
        self
    }

    /// Enable the server API (`/api/…`) for callers presenting `key` (`--api-key`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// Join other instances through Redis at `url` (`--redis`). Needs [`ServerBuilder::secret`]
    /// too, shared by the instances.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.config.redis = Some(url.into());
        self
    }

    /// Whether SIGTERM/SIGINT start the graceful shutdown (default true). Turn it off when the
    /// embedding program handles signals itself and stops the server with a [`ShutdownHandle`].
    pub fn handle_signals(mut self, handle: bool) -> Self {
        self.signals = if handle { Signals::Watch } else { Signals::Ignore };
        self
    }

    /// `handler` runs when a `/pubsub` connection opens (e.g. to join it to its own room).
    pub fn on_connect(mut self, handler: impl Fn(&mut Ctx<'_>, &Conn) + Send + Sync + 'static) -> Self {
        self.handlers.on_connect(Arc::new(handler));
        self
    }

    /// `handler` runs when a `/pubsub` connection closes, after it left its rooms.
    pub fn on_disconnect(mut self, handler: impl Fn(&mut Ctx<'_>, &Conn) + Send + Sync + 'static) -> Self {
        self.handlers.on_disconnect(Arc::new(handler));
        self
    }

    /// `handler` answers `event` instead of the built-in behaviour (for `join`, `leave` and
    /// `presence` too: call [`crate::pubsub::protocol`]'s handlers to keep it after your checks).
    pub fn on_message(mut self, event: &str, handler: impl Fn(&mut Ctx<'_>, &Conn, &Message<'_>) + Send + Sync + 'static) -> Self {
        self.handlers.on_message(event, Arc::new(handler));
        self
    }

    /// `handler` answers every event that has no handler of its own (by default: published to
    /// its `room`, or sent to its `to`; [`crate::pubsub::protocol::route`] does that).
    pub fn on_other(mut self, handler: impl Fn(&mut Ctx<'_>, &Conn, &Message<'_>) + Send + Sync + 'static) -> Self {
        self.handlers.on_other(Arc::new(handler));
        self
    }

    /// Checks the settings, binds the listeners and connects to Redis when configured.
    pub fn build(self) -> anyhow::Result<Server> {
        self.config.validate().map_err(anyhow::Error::msg)?;
        Ok(Server { bound: Bound::bind(self.config, self.handlers, self.signals)? })
    }
}
