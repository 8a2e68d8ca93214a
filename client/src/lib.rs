//! A client for the partyflow server, for bots, tools and tests.
//!
//! - [`api`]: the room API over HTTP (create a room, join it, any other call);
//! - [`GameClient`]: a PartyFlow game connection (envelopes out, ACKs answered, events kept by
//!   sequence id for reconnection);
//! - [`PubSubClient`]: a `/pubsub` connection (join rooms, publish, read messages);
//! - [`RawClient`]: a WebSocket driven frame by frame, for conformance and hostile-client tools;
//! - sans-IO pieces any runtime can drive (the load generator drives them with tokio):
//!   [`http`] requests and responses, the [`handshake`], [`frame`] encoding and parsing,
//!   [`deflate`] (permessage-deflate inflation), the game [`envelope`].
//!
//! The blocking clients use `std::net::TcpStream` with a read timeout, so a silent server ends
//! a call with an error instead of hanging it.
//!
//! ```no_run
//! use partyflow_client::{api, GameClient};
//! use serde_json::json;
//!
//! let server: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
//! let room = api::create_room(&server, &json!({"hostName": "Hana"}))?;
//! let seat = api::join(&server, &room.room_id, "Pia")?;
//! let mut pia = GameClient::connect(&server, &room.room_id, &seat.player_id, &seat.token)?;
//! let connected = pia.recv_until("CONNECTED")?;
//! println!("{connected}");
//! # Ok::<(), partyflow_client::Error>(())
//! ```

pub mod api;
pub mod deflate;
pub mod envelope;
mod error;
pub mod frame;
mod game;
pub mod handshake;
pub mod http;
mod pubsub;
pub mod raw;

use std::net::SocketAddr;
use std::time::Duration;

pub use error::Error;
pub use game::GameClient;
pub use pubsub::PubSubClient;
pub use raw::RawClient;

/// How long a blocking read may wait for the server before the call fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Something that names a server's address: a `SocketAddr`, or a handle of one (a test
/// harness's process).
pub trait ServerAddr {
    fn server_addr(&self) -> SocketAddr;
}

impl ServerAddr for SocketAddr {
    fn server_addr(&self) -> SocketAddr {
        *self
    }
}

/// A TCP connection to `server` with the client's read timeout and Nagle off (as browsers do:
/// otherwise a message written right after a pong waits for the server's delayed ACK).
pub fn tcp(server: &impl ServerAddr) -> std::io::Result<std::net::TcpStream> {
    let stream = std::net::TcpStream::connect(server.server_addr())?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A plain WebSocket to `path` (`/relay?room=…`, `/echo`), with tungstenite's settings `config`.
pub fn websocket(
    server: &impl ServerAddr,
    path: &str,
    config: tungstenite::protocol::WebSocketConfig,
) -> Result<tungstenite::WebSocket<std::net::TcpStream>, Error> {
    let url = format!("ws://{}{path}", server.server_addr());
    let (ws, _) = tungstenite::client::client_with_config(url, tcp(server)?, Some(config))?;
    Ok(ws)
}

impl<T: ServerAddr> ServerAddr for std::sync::Arc<T> {
    fn server_addr(&self) -> SocketAddr {
        (**self).server_addr()
    }
}
