//! One connection's request on a shard: its head read under the limits, then a plain HTTP
//! answer (API, health, metrics, pages), a hand-off to the shard that owns its room, or the
//! WebSocket upgrade after which [`super::conn::ConnDriver`] drives it.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use tracing::{debug, warn};

use super::api::{self, Placement};
use super::conn::ConnDriver;
use super::handoff::Handoff;
use super::mesh::ShardMsg;
use super::shard::Shard;
use super::state::{ConnSettings, Endpoint};
use crate::admission::Permit;
use crate::auth::Claims;
use crate::cluster::Call;
use crate::http::{self, FramingError, HeadError, Request, Response, Route, RouteError, Status};
use crate::metrics::Refusal;
use crate::rooms::RoomId;
use crate::ws;

/// Most bytes read and dropped after an error response, so closing does not reset the
/// connection before the client has read the response.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_TIME: Duration = Duration::from_millis(500);

/// Serves one connection from its first byte (or from `head`, the bytes another shard read).
/// `permit` holds the connection's places (its address's, and among those still sending their
/// request until the upgrade) for as long as the connection lives.
pub(crate) async fn serve(shard: Rc<Shard>, mut stream: TcpStream, head: Vec<u8>, mut permit: Permit) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(_) => return,
    };
    let (request, buf, head_len) = match read_head(&shard, &mut stream, head).await {
        Ok(parsed) => parsed,
        Err((why, response)) => return refuse(&shard, stream, why, response).await,
    };
    let route = match Route::parse(&request.target) {
        Ok(route) => route,
        Err(RouteError::NotFound(path)) => {
            let response = Response::error(Status::NotFound, "NOT_FOUND", &format!("no endpoint at {path}"));
            return refuse(&shard, stream, Refusal::NotFound, response).await;
        }
        Err(err @ RouteError::BadParameter(_)) => {
            let response = Response::error(Status::BadRequest, "BAD_REQUEST", &err.to_string());
            return refuse(&shard, stream, Refusal::BadRequest, response).await;
        }
    };
    // A browser's preflight for the room API from another origin (CORS headers only for the
    // origins of --allowed-origin).
    if request.method == "OPTIONS" && http::cors::applies(&route) {
        return respond(stream, &http::cors::preflight(&request, &route, &shard.shared.config.allowed_origin)).await;
    }
    // The method first: a wrong one is 405 whatever the body (the connection closes after any
    // refusal, so an unread body cannot be taken for a next request).
    let allowed = route.method();
    if request.method != allowed {
        let response = Response::error(Status::MethodNotAllowed, "METHOD_NOT_ALLOWED", &format!("use {allowed}")).header("Allow", allowed);
        return refuse(&shard, stream, Refusal::MethodNotAllowed, response).await;
    }
    // One unambiguous body length, and a body only where one is read (RFC 9112 §6.3).
    match request.body_length() {
        Ok(0) => {}
        Ok(_) if route.takes_body() => {}
        Ok(_) => {
            let response = Response::error(Status::BadRequest, "BAD_REQUEST", "this request takes no body");
            return refuse(&shard, stream, Refusal::BadRequest, response).await;
        }
        Err(err @ FramingError::TransferEncoding) => {
            let response = Response::error(Status::NotImplemented, "NOT_IMPLEMENTED", &err.to_string());
            return refuse(&shard, stream, Refusal::BadRequest, response).await;
        }
        Err(err @ FramingError::ContentLength(_)) => {
            let response = Response::error(Status::BadRequest, "BAD_REQUEST", &err.to_string());
            return refuse(&shard, stream, Refusal::BadRequest, response).await;
        }
    }
    let owner = route.room().map_or(shard.index, |room| room.owner_shard(shard.shards));
    if !route.is_websocket() {
        if owner != shard.index {
            return hand_off(&shard, stream, owner, buf, permit, peer).await;
        }
        return serve_plain(&shard, stream, &request, &route, buf, head_len, peer.ip()).await;
    }
    let accept_key = match ws::validate_upgrade(&request, &shard.shared.config.allowed_origin) {
        Ok(key) => key,
        Err(err) => return refuse(&shard, stream, refusal_of(err.response().status()), err.response()).await,
    };
    // permessage-deflate (RFC 7692), unless --compression off (then the header is ignored).
    let deflate = if shard.shared.config.compression {
        let offers =
            request.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions")).filter_map(|(_, v)| std::str::from_utf8(v).ok());
        match ws::negotiate(offers) {
            Ok(agreed) => agreed,
            Err(e) => return refuse(&shard, stream, Refusal::BadRequest, Response::error(Status::BadRequest, "BAD_HANDSHAKE", &e.to_string())).await,
        }
    } else {
        None
    };
    // The endpoint's subprotocol, and the token a browser offers there instead of in the URL.
    let spoken = match &route {
        Route::Game { .. } => Some(ws::subprotocol::GAME),
        Route::PubSub { .. } => Some(ws::subprotocol::PUBSUB),
        _ => None,
    };
    // A value that is not UTF-8 reads as "", which is no list of tokens (400).
    let protocols = request.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol")).map(|(_, v)| std::str::from_utf8(v).unwrap_or(""));
    let offered = match ws::subprotocol::negotiate(protocols, spoken) {
        Ok(offered) => offered,
        Err(e) => return refuse(&shard, stream, Refusal::BadRequest, Response::error(Status::BadRequest, "BAD_HANDSHAKE", &e.to_string())).await,
    };
    let query_token = match &route {
        Route::Game { token, .. } => Some(token.as_str()).filter(|t| !t.is_empty()),
        Route::PubSub { token } => token.as_deref(),
        _ => None,
    };
    let token = match (offered.token.as_deref(), query_token) {
        (Some(_), Some(_)) => {
            let response = Response::error(Status::BadRequest, "BAD_HANDSHAKE", "the token is both in the URL and in Sec-WebSocket-Protocol; send it once");
            return refuse(&shard, stream, Refusal::BadRequest, response).await;
        }
        (header, query) => header.or(query),
    };
    let accept_key = Accept { key: accept_key, deflate, protocol: offered.selected };
    let claims = match &route {
        Route::Game { room, .. } => match verify_token(&shard, room.as_str(), token.unwrap_or_default()) {
            Ok(claims) => Some(claims),
            Err(response) => return refuse(&shard, stream, Refusal::Unauthorized, response).await,
        },
        _ => None,
    };
    let (grant, reserved) = match &route {
        Route::PubSub { .. } => match super::pubsub_http::admit(&shard, &request, token, peer).await {
            Ok(admitted) => admitted,
            Err((why, response)) => return refuse(&shard, stream, why, response).await,
        },
        _ => (None, None),
    };
    if let Err(cap) = permit.upgrade() {
        let response = Response::error(Status::ServiceUnavailable, cap.code(), &cap.to_string()).header("Retry-After", "1");
        return refuse(&shard, stream, Refusal::Overloaded, response).await;
    }
    if owner != shard.index {
        return hand_off(&shard, stream, owner, buf, permit, peer).await;
    }
    let leftover = buf.get(head_len..).unwrap_or_default();
    match route {
        Route::Relay(room) => upgrade(shard, stream, &accept_key, Joining::Plain(Endpoint::Relay(room)), leftover, permit).await,
        Route::PubSub { .. } => upgrade(shard, stream, &accept_key, Joining::PubSub(grant, reserved), leftover, permit).await,
        Route::Game { room, version, .. } => {
            let Some(claims) = claims else { return };
            let player = (claims.actor_id, version);
            match api::place_room(&shard, &room).await {
                Err((why, response)) => refuse(&shard, stream, why, response).await,
                Ok(Placement::Here) => {
                    if let Err((why, response)) = api::check_member(&shard, &room, &player.0) {
                        return refuse(&shard, stream, why, response).await;
                    }
                    upgrade(shard, stream, &accept_key, Joining::Game { room, player }, leftover, permit).await
                }
                Ok(Placement::Elsewhere(owner)) => {
                    let answer = api::call_owner(&shard, &owner, &room, Call::Member { actor: player.0.clone() }).await;
                    if answer.status() != Status::Ok {
                        return refuse(&shard, stream, refusal_of(answer.status()), answer).await;
                    }
                    upgrade(shard, stream, &accept_key, Joining::Forwarded { room, owner, player }, leftover, permit).await
                }
            }
        }
        _ => upgrade(shard, stream, &accept_key, Joining::Plain(Endpoint::Echo), leftover, permit).await,
    }
}

/// A valid, unexpired token for `room`, or the 401 to answer with.
fn verify_token(shard: &Shard, room: &str, token: &str) -> Result<Claims, Response> {
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let claims = shard.shared.tokens.verify(token, unix).map_err(|e| Response::error(Status::Unauthorized, "UNAUTHORIZED", &e.to_string()))?;
    if claims.room_id != room {
        return Err(Response::error(Status::Unauthorized, "UNAUTHORIZED", "token is for another room"));
    }
    Ok(claims)
}

/// Reads until a complete request head is in the buffer, within the size limit and deadline.
async fn read_head(shard: &Shard, stream: &mut TcpStream, mut buf: Vec<u8>) -> Result<(Request, Vec<u8>, usize), (Refusal, Response)> {
    let limit = shard.shared.config.max_request_head_bytes;
    let reading = async {
        loop {
            match http::parse_head(&buf, limit) {
                Ok(Some((request, head_len))) => return Ok((request, head_len)),
                Ok(None) => {}
                Err(HeadError::TooLarge) => {
                    let response = Response::error(Status::HeaderFieldsTooLarge, "HEADER_TOO_LARGE", "request head too large");
                    return Err((Refusal::HeaderTooLarge, response));
                }
                Err(err @ HeadError::Malformed(_)) => {
                    let response = Response::error(Status::BadRequest, "BAD_REQUEST", &err.to_string());
                    return Err((Refusal::BadRequest, response));
                }
            }
            let start = buf.len();
            buf.resize(start + 2048, 0);
            let n = stream.read(buf.get_mut(start..).unwrap_or_default()).await.unwrap_or(0);
            buf.truncate(start + n);
            if n == 0 {
                return Err((Refusal::BadRequest, Response::new(Status::BadRequest)));
            }
        }
    };
    let timed = glommio::timer::timeout(shard.shared.config.request_timeout, async { Ok(reading.await) }).await;
    match timed {
        Ok(Ok((request, head_len))) => Ok((request, buf, head_len)),
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err((Refusal::Timeout, Response::error(Status::RequestTimeout, "REQUEST_TIMEOUT", "request head not received in time"))),
    }
}

fn refusal_of(status: Status) -> Refusal {
    match status {
        Status::MethodNotAllowed => Refusal::MethodNotAllowed,
        Status::UpgradeRequired => Refusal::UpgradeRequired,
        Status::Forbidden => Refusal::Forbidden,
        Status::Unauthorized => Refusal::Unauthorized,
        Status::NotFound => Refusal::NotFound,
        Status::ServiceUnavailable => Refusal::Overloaded,
        _ => Refusal::BadRequest,
    }
}

async fn serve_plain(shard: &Shard, stream: TcpStream, request: &Request, route: &Route, buf: Vec<u8>, head_len: usize, ip: std::net::IpAddr) {
    // Answers to a browser on an allowed other origin carry the CORS headers, errors included.
    let origin = http::cors::allowed_origin(request, route, &shard.shared.config.allowed_origin);
    let cors = |response: Response| http::cors::decorate(response, origin);
    if matches!(route, Route::Rooms(_) | Route::RoomPlayers(_)) {
        let limited = shard.shared.api_limiter.check(Instant::now(), ip);
        if let Err(retry_after) = limited {
            let response = Response::error(Status::TooManyRequests, "RATE_LIMITED", "too many room requests from this address; slow down")
                .header("Retry-After", retry_after.as_secs().to_string());
            return refuse(shard, stream, Refusal::RateLimited, cors(response)).await;
        }
    }
    let mut owner = None;
    if let Route::Room(room) | Route::RoomPlayers(room) | Route::Rooms(Some(room)) = route {
        match api::place_room(shard, room).await {
            Err((why, response)) => return refuse(shard, stream, why, cors(response)).await,
            Ok(Placement::Here) => {}
            Ok(Placement::Elsewhere(_)) if matches!(route, Route::Rooms(_)) => {
                let response = Response::error(Status::Conflict, "ROOM_EXISTS", "a room with this id exists");
                return refuse(shard, stream, Refusal::BadRequest, cors(response)).await;
            }
            Ok(Placement::Elsewhere(instance)) => owner = Some(instance),
        }
    }
    let now = Instant::now();
    let response = match route {
        Route::Metrics => {
            let mut text = shard.shared.metrics.render_prometheus(now);
            if let Some(store) = &shard.shared.store {
                store.render_prometheus(&mut text);
            }
            if let Some(bus) = &shard.shared.bus {
                bus.render_prometheus(&mut text);
            }
            if let Some(hooks) = &shard.shared.webhooks {
                hooks.render_prometheus(&mut text);
            }
            if let Some(proxy) = &shard.shared.pubsub.proxy {
                proxy.render_prometheus(&mut text);
            }
            Response::new(Status::Ok).body("text/plain; version=0.0.4", text.into_bytes())
        }
        Route::WordPacks => api::word_packs(shard),
        Route::Web(asset) if shard.shared.config.web_client => Response::new(Status::Ok)
            .header("Cache-Control", asset.cache_control)
            .header("Content-Security-Policy", crate::web::CONTENT_SECURITY_POLICY)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .body(asset.content_type, asset.body.to_vec()),
        Route::Web(_) => Response::error(Status::NotFound, "NOT_FOUND", "the web client is off (--web-client false)"),
        Route::AdminPage(asset) if shard.shared.config.admin_page => Response::new(Status::Ok)
            .header("Cache-Control", asset.cache_control)
            .header("Content-Security-Policy", crate::web::CONTENT_SECURITY_POLICY)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .body(asset.content_type, asset.body.to_vec()),
        Route::AdminPage(_) => Response::error(Status::NotFound, "NOT_FOUND", "the admin page is off (--admin-page false)"),
        Route::Room(room) => match &owner {
            Some(owner) => api::call_owner(shard, owner, room, Call::Summary).await,
            None => api::room_summary(shard, room),
        },
        Route::Api(call) => {
            let (mut stream, body) = match read_body(shard, stream, request, buf, head_len).await {
                Ok(read) => read,
                Err((stream, why, response)) => return refuse(shard, stream, why, response).await,
            };
            let response = super::pubsub_http::answer(shard, request, call, &body).await;
            let _ = stream.write_all(&response.to_bytes()).await;
            return close_gracefully(stream).await;
        }
        Route::Rooms(_) | Route::RoomPlayers(_) => {
            let (mut stream, body) = match read_body(shard, stream, request, buf, head_len).await {
                Ok(read) => read,
                Err((stream, why, response)) => return refuse(shard, stream, why, cors(response)).await,
            };
            let host = api::host_of(shard, request);
            let response = match (route, owner) {
                (Route::RoomPlayers(room), Some(owner)) => api::call_owner(shard, &owner, room, Call::Join { host, body }).await,
                (Route::RoomPlayers(room), None) => api::join_room(shard, &host, room, &body),
                (Route::Rooms(chosen), _) => api::create_room(shard, request, chosen.as_ref(), &body).await,
                _ => Response::new(Status::NotFound),
            };
            let _ = stream.write_all(&cors(response).to_bytes()).await;
            return close_gracefully(stream).await;
        }
        _ => {
            let health = api::health(shard, now);
            let status = if shard.shared.lost_shard.get().is_some() { Status::ServiceUnavailable } else { Status::Ok };
            Response::json(status, &health)
        }
    };
    respond(stream, &cors(response)).await;
}

/// Reads the request body announced by `Content-Length`, within the body limit and the
/// request deadline.
async fn read_body(
    shard: &Shard,
    mut stream: TcpStream,
    request: &Request,
    mut buf: Vec<u8>,
    head_len: usize,
) -> Result<(TcpStream, Vec<u8>), (TcpStream, Refusal, Response)> {
    // Checked (and refused) before routing; a failure here cannot happen.
    let length = request.body_length().unwrap_or(0);
    if length > shard.shared.config.max_body_bytes {
        let message = format!("bodies are limited to {} bytes", shard.shared.config.max_body_bytes);
        return Err((stream, Refusal::BodyTooLarge, Response::error(Status::PayloadTooLarge, "BODY_TOO_LARGE", &message)));
    }
    let expect = request.header("expect");
    if expect.is_some_and(|e| !e.eq_ignore_ascii_case("100-continue")) {
        let response = Response::error(Status::ExpectationFailed, "EXPECTATION_FAILED", "only Expect: 100-continue is supported");
        return Err((stream, Refusal::BadRequest, response));
    }
    // With Expect: 100-continue the client waits for this before sending the body.
    if expect.is_some() && buf.len() < head_len + length && stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.is_err() {
        return Err((stream, Refusal::BadRequest, Response::new(Status::BadRequest)));
    }
    let want = head_len + length;
    let reading = async {
        while buf.len() < want {
            let start = buf.len();
            buf.resize(want, 0);
            let n = stream.read(buf.get_mut(start..).unwrap_or_default()).await.unwrap_or(0);
            buf.truncate(start + n);
            if n == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    };
    match glommio::timer::timeout(shard.shared.config.request_timeout, reading).await {
        Ok(true) => Ok((stream, buf.get(head_len..want).unwrap_or_default().to_vec())),
        Ok(false) => Err((stream, Refusal::BadRequest, Response::error(Status::BadRequest, "BAD_REQUEST", "body ended early"))),
        Err(_) => Err((stream, Refusal::Timeout, Response::error(Status::RequestTimeout, "REQUEST_TIMEOUT", "body not received in time"))),
    }
}

async fn refuse(shard: &Shard, stream: TcpStream, why: Refusal, response: Response) {
    shard.metrics().refused(why);
    debug!(shard = shard.index, status = response.status().code(), "request refused");
    respond(stream, &response).await;
}

/// Writes a response and closes gracefully.
async fn respond(mut stream: TcpStream, response: &Response) {
    if stream.write_all(&response.to_bytes()).await.is_ok() {
        close_gracefully(stream).await;
    }
}

/// Half-closes, and reads a little of what the client may still send so that closing does not
/// turn into a reset that destroys the response in flight.
async fn close_gracefully(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let linger = async {
        let mut sink = [0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        Ok(())
    };
    let _ = glommio::timer::timeout(LINGER_TIME, linger).await;
}

async fn hand_off(shard: &Shard, stream: TcpStream, owner: usize, head: Vec<u8>, permit: Permit, peer: SocketAddr) {
    // glommio streams cannot give up their descriptor, so the owner gets a duplicate and this
    // shard's copy closes when `stream` drops; the socket stays open through the duplicate.
    // SAFETY: the descriptor is open for as long as `stream`, which outlives this borrow.
    let fd = match unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }.try_clone_to_owned() {
        Ok(fd) => fd,
        Err(err) => {
            warn!(%err, "cannot duplicate a connection for hand-off");
            return;
        }
    };
    drop(stream);
    shard.metrics().handoffs_sent.add(1);
    if shard.mesh.send_to(owner, ShardMsg::Handoff(Handoff::new(fd, head, permit))).await.is_err() {
        debug!(%peer, owner, "owner shard is gone; dropping connection");
    }
}

/// What an upgraded connection becomes.
enum Joining {
    /// `/echo` or `/relay`.
    Plain(Endpoint),
    /// `/pubsub`, as the user a token or the backend granted (`None`: open `/pubsub`), with the
    /// connection id the backend was told, if it was asked.
    PubSub(Option<crate::pubsub::Grant>, Option<(u64, Arc<str>)>),
    /// A player (actor id, protocol version) of a game room served here.
    Game { room: RoomId, player: (String, String) },
    /// A player of a game room instance `owner` serves: this shard forwards.
    Forwarded { room: RoomId, owner: Arc<str>, player: (String, String) },
}

/// What the 101 answers: the accept key and the permessage-deflate agreement, if any.
struct Accept {
    key: String,
    deflate: Option<ws::Agreed>,
    /// The subprotocol to answer with.
    protocol: Option<&'static str>,
}

/// Completes the handshake and drives the connection; a game connection is connected to its
/// room (here or on its owner instance) first.
async fn upgrade(shard: Rc<Shard>, mut stream: TcpStream, accept: &Accept, joining: Joining, leftover: &[u8], permit: Permit) {
    let agreed = accept.deflate.as_ref().map(|a| a.response.as_str());
    if stream.write_all(&ws::accept_response(&accept.key, agreed, accept.protocol).to_bytes()).await.is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let config = &shard.shared.config;
    let now = Instant::now();
    let id = {
        let mut state = shard.state.borrow_mut();
        let settings = ConnSettings {
            // A random phase, so that connections opened together are not pinged together.
            first_ping: config.ping_interval.mul_f64(rand::random_range(0.5..=1.0)),
            deflate_window_bits: accept.deflate.as_ref().map(|a| a.server_max_window_bits),
        };
        let m = shard.metrics();
        match joining {
            Joining::Plain(endpoint) => state.register(m, now, endpoint, permit, settings),
            Joining::PubSub(grant, reserved) => state.register_pubsub(m, now, grant, reserved, permit, settings),
            Joining::Game { room, player: (actor, version) } => {
                let id = state.register(m, now, Endpoint::Game(room.clone()), permit, settings);
                state.register_player(m, now, &room, id, &actor, &version);
                id
            }
            Joining::Forwarded { room, owner, player } => state.register_forwarded(m, now, (room, owner), player, permit, settings),
        }
    };
    shard.metrics().handshakes_ok.add(1);
    // The driver runs as its own task so that this function's request state (head buffer,
    // headers) is freed now rather than held for the connection's lifetime.
    let inflate = accept.deflate.is_some();
    glommio::spawn_local(ConnDriver::new(shard.clone(), id, stream, leftover, inflate)).detach();
}
