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
    /// `GET /word-packs`
    WordPacks,
    /// `POST /rooms[?roomId=R]`: with `roomId`, the room is created under that id (so a load
    /// balancer hashing room ids sends its creation where all its later requests will go).
    Rooms(Option<RoomId>),
    /// `GET /rooms/{id}`
    Room(RoomId),
    /// `POST /rooms/{id}/players`
    RoomPlayers(RoomId),
    /// `GET /pubsub[?token=..]` (WebSocket): the generic rooms and pub/sub protocol.
    PubSub {
        /// The JWT from the query, if any (it may come in `Authorization` instead).
        token: Option<String>,
    },
    /// The server API for an app's backend (`/api/...`, with `--api-key`).
    Api(ApiCall),
    /// `GET /`, `/app.js`, `/style.css`, `/partyflow.js`: the web client (`--web-client`).
    Web(crate::web::Asset),
    /// `GET /admin`, `/admin.js`, `/admin.css`: the admin page (`--admin-page`).
    AdminPage(crate::web::Asset),
    /// `GET /ws?roomId=..&token=..[&version=1.0]` (WebSocket)
    Game {
        /// The room.
        room: RoomId,
        /// The bearer token (checked later; empty when absent).
        token: String,
        /// Requested protocol version (`1.0` when absent).
        version: String,
    },
}

/// The calls of the server API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCall {
    /// `POST /api/publish {"room","event","data"}`
    Publish,
    /// `POST /api/send {"to","event","data"}`
    Send,
    /// `POST /api/disconnect {"user"}`
    Disconnect,
    /// `GET /api/rooms/{room}/presence`
    Presence(RoomId),
    /// `GET /api/rooms[?kind=&state=&cursor=&limit=]` (the query string)
    ListRooms(String),
    /// `GET /api/rooms/{room}`
    RoomDetail(RoomId),
    /// `POST /api/rooms/{room}/close {"reason"}`
    CloseRoom(RoomId),
    /// `POST /api/rooms/{room}/kick {"playerId" | "user", "ban"}`
    Kick(RoomId),
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
            "/relay" => room_param(query, "room").map(Route::Relay),
            "/pubsub" => Ok(Route::PubSub { token: query_param(query, "token") }),
            "/api/publish" => Ok(Route::Api(ApiCall::Publish)),
            "/api/send" => Ok(Route::Api(ApiCall::Send)),
            "/api/disconnect" => Ok(Route::Api(ApiCall::Disconnect)),
            "/api/rooms" => Ok(Route::Api(ApiCall::ListRooms(query.to_string()))),
            "/word-packs" => Ok(Route::WordPacks),
            "/rooms" => match query_param(query, "roomId") {
                None => Ok(Route::Rooms(None)),
                Some(id) => RoomId::parse(&id)
                    .filter(|r| r.as_str().len() >= MIN_CHOSEN_ROOM_ID)
                    .map(|r| Route::Rooms(Some(r)))
                    .ok_or(RouteError::BadParameter("a chosen room id is 6-64 characters of A-Z a-z 0-9 _ -")),
            },
            "/ws" => Ok(Route::Game {
                room: room_param(query, "roomId")?,
                token: query_param(query, "token").unwrap_or_default(),
                version: query_param(query, "version").unwrap_or_else(|| "1.0".to_string()),
            }),
            _ => {
                if let Some(asset) = crate::web::asset(path) {
                    return Ok(Route::Web(asset));
                }
                if let Some(asset) = crate::web::admin_asset(path) {
                    return Ok(Route::AdminPage(asset));
                }
                let not_found = || RouteError::NotFound(path.chars().take(64).collect());
                if let Some(rest) = path.strip_prefix("/api/rooms/") {
                    let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
                    let room = RoomId::parse(id).ok_or_else(not_found)?;
                    return match sub {
                        "" => Ok(Route::Api(ApiCall::RoomDetail(room))),
                        "presence" => Ok(Route::Api(ApiCall::Presence(room))),
                        "close" => Ok(Route::Api(ApiCall::CloseRoom(room))),
                        "kick" => Ok(Route::Api(ApiCall::Kick(room))),
                        _ => Err(not_found()),
                    };
                }
                let rest = path.strip_prefix("/rooms/").ok_or_else(not_found)?;
                let (id, sub) = rest.split_once('/').unwrap_or((rest, ""));
                let room = RoomId::parse(id).ok_or_else(not_found)?;
                match sub {
                    "" => Ok(Route::Room(room)),
                    "players" => Ok(Route::RoomPlayers(room)),
                    _ => Err(not_found()),
                }
            }
        }
    }

    /// The one method this endpoint answers (others: 405 with `Allow`).
    pub fn method(&self) -> &'static str {
        match self {
            Route::Rooms(_)
            | Route::RoomPlayers(_)
            | Route::Api(ApiCall::Publish | ApiCall::Send | ApiCall::Disconnect | ApiCall::CloseRoom(_) | ApiCall::Kick(_)) => "POST",
            _ => "GET",
        }
    }

    /// Whether requests to this endpoint carry a body.
    pub fn takes_body(&self) -> bool {
        self.method() == "POST"
    }

    /// Whether this endpoint is a WebSocket endpoint.
    pub fn is_websocket(&self) -> bool {
        matches!(self, Route::Echo | Route::Relay(_) | Route::PubSub { .. } | Route::Game { .. })
    }

    /// The room whose owner shard must serve this connection, if any.
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Route::Relay(room)
            | Route::Room(room)
            | Route::RoomPlayers(room)
            | Route::Game { room, .. }
            | Route::Api(ApiCall::Presence(room) | ApiCall::RoomDetail(room) | ApiCall::CloseRoom(room) | ApiCall::Kick(room)) => Some(room),
            Route::Rooms(room) => room.as_ref(),
            _ => None,
        }
    }
}

/// Shortest room id a client may choose (short ids would be easy to guess).
const MIN_CHOSEN_ROOM_ID: usize = 6;

fn room_param(query: &str, name: &'static str) -> Result<RoomId, RouteError> {
    let room = query_param(query, name).ok_or(RouteError::BadParameter("missing room id query parameter"))?;
    RoomId::parse(&room).ok_or(RouteError::BadParameter("room ids are 1-64 characters of A-Z a-z 0-9 _ -"))
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
        let room = RoomId::parse("ABC234").unwrap();
        assert_eq!(Route::parse("/rooms").unwrap(), Route::Rooms(None));
        assert_eq!(Route::parse("/rooms?roomId=ABC234").unwrap(), Route::Rooms(Some(room.clone())));
        assert_eq!(Route::parse("/rooms?roomId=ABC234").unwrap().room(), Some(&room));
        assert!(matches!(Route::parse("/rooms?roomId=AB"), Err(RouteError::BadParameter(_))));
        assert_eq!(Route::parse("/rooms/ABC234").unwrap(), Route::Room(room.clone()));
        assert_eq!(Route::parse("/rooms/ABC234/players").unwrap(), Route::RoomPlayers(room.clone()));
        assert!(matches!(Route::parse("/rooms/ABC234/x"), Err(RouteError::NotFound(_))));
        assert!(matches!(Route::parse("/rooms/a.b"), Err(RouteError::NotFound(_))));
        assert_eq!(Route::parse("/ws?roomId=ABC234&token=t.k").unwrap(), Route::Game { room, token: "t.k".into(), version: "1.0".into() });
        assert!(matches!(Route::parse("/ws?token=x"), Err(RouteError::BadParameter(_))));
        assert_eq!(Route::parse("/pubsub").unwrap(), Route::PubSub { token: None });
        assert_eq!(Route::parse("/pubsub?token=a.b.c").unwrap(), Route::PubSub { token: Some("a.b.c".into()) });
        assert_eq!(Route::parse("/api/publish").unwrap().method(), "POST");
        let presence = Route::parse("/api/rooms/lobby/presence").unwrap();
        assert_eq!(presence.room().map(RoomId::as_str), Some("lobby"));
        assert_eq!(presence.method(), "GET");
        assert!(matches!(Route::parse("/api/rooms/a%20b/presence"), Err(RouteError::NotFound(_))));
        assert!(matches!(Route::parse("/api/nope"), Err(RouteError::NotFound(_))));
    }
}
