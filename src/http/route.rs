//! Which endpoint a request target names.

use crate::rooms::RoomId;

/// The endpoints served on the port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`
    Health,
    /// `GET /metrics`
    Metrics,
    /// `GET /echo` (WebSocket)
    Echo,
    /// `GET /relay?room=R` (WebSocket)
    Relay(RoomId),
}

/// A target that names no endpoint, or names one with bad parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No endpoint at this path.
    #[error("no endpoint at {0}")]
    NotFound(String),
    /// The endpoint exists but a query parameter is missing or invalid.
    #[error("{0}")]
    BadParameter(&'static str),
}

impl Route {
    /// Routes `target` (path and query).
    pub fn parse(target: &str) -> Result<Route, RouteError> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        match path {
            "/health" => Ok(Route::Health),
            "/metrics" => Ok(Route::Metrics),
            "/echo" => Ok(Route::Echo),
            "/relay" => {
                let room = query_param(query, "room")
                    .ok_or(RouteError::BadParameter("missing query parameter room"))?;
                RoomId::parse(&room)
                    .map(Route::Relay)
                    .ok_or(RouteError::BadParameter("room must be 1-64 characters of A-Z a-z 0-9 _ -"))
            }
            _ => Err(RouteError::NotFound(path.chars().take(64).collect())),
        }
    }

    /// Whether this endpoint is a WebSocket endpoint.
    pub fn is_websocket(&self) -> bool {
        matches!(self, Route::Echo | Route::Relay(_))
    }

    /// The room whose owner shard must serve this connection, if any.
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Route::Relay(room) => Some(room),
            _ => None,
        }
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/health").unwrap(), Route::Health);
        assert_eq!(Route::parse("/echo?x=1").unwrap(), Route::Echo);
        assert_eq!(Route::parse("/relay?room=abc-1_Z").unwrap(), Route::Relay(RoomId::parse("abc-1_Z").unwrap()));
        assert!(matches!(Route::parse("/relay"), Err(RouteError::BadParameter(_))));
        assert!(matches!(Route::parse("/relay?room="), Err(RouteError::BadParameter(_))));
        assert!(matches!(Route::parse("/relay?room=a%20b"), Err(RouteError::BadParameter(_))));
        assert!(matches!(Route::parse(&format!("/relay?room={}", "a".repeat(65))), Err(RouteError::BadParameter(_))));
        assert!(matches!(Route::parse("/nope"), Err(RouteError::NotFound(_))));
    }
}
