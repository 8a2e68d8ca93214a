//! What can go wrong talking to the server.

use std::fmt;

/// An error of a client call.
#[derive(Debug)]
pub enum Error {
    /// The socket failed (refused, reset, timed out).
    Io(std::io::Error),
    /// The server answered an HTTP request (or a WebSocket upgrade) with this status and body.
    Status { status: u16, body: String },
    /// The WebSocket failed.
    WebSocket(tungstenite::Error),
    /// The server's answer is not what the protocol says.
    Protocol(String),
    /// The connection ended (its close code, when it sent one) while waiting for something.
    Closed { code: Option<u16>, waiting_for: String, seen: Vec<String> },
    /// Nothing wanted arrived in time.
    TimedOut { waiting_for: String, seen: Vec<String> },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Status { status, body } => write!(f, "the server answered {status}: {body}"),
            Error::WebSocket(e) => write!(f, "WebSocket: {e}"),
            Error::Protocol(what) => write!(f, "unexpected answer: {what}"),
            Error::Closed { code, waiting_for, seen } => write!(f, "closed ({code:?}) while waiting for {waiting_for}; saw {seen:?}"),
            Error::TimedOut { waiting_for, seen } => write!(f, "waited too long for {waiting_for}; saw {seen:?}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        match e {
            // A refused upgrade: the server's reason (a cap, a moving room) is in the body.
            tungstenite::Error::Http(response) => {
                Error::Status { status: response.status().as_u16(), body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned() }
            }
            e => Error::WebSocket(e),
        }
    }
}

impl From<tungstenite::HandshakeError<tungstenite::ClientHandshake<std::net::TcpStream>>> for Error {
    fn from(e: tungstenite::HandshakeError<tungstenite::ClientHandshake<std::net::TcpStream>>) -> Self {
        match e {
            tungstenite::HandshakeError::Failure(e) => e.into(),
            tungstenite::HandshakeError::Interrupted(_) => Error::Protocol("the handshake would block".into()),
        }
    }
}
