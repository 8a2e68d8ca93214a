//! One shard: its listener, its connections, its timers.
//!
//! Every shard accepts on the shared port. A request for a room another shard owns is handed
//! over with the bytes already read; the owner answers the handshake and keeps the connection
//! for life. The shard's one periodic task (the sweeper) advances heartbeats and close
//! deadlines of all its connections and watches for shutdown.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::api;
use super::conn::ConnDriver;
use super::handoff::Handoff;
use super::state::{ConnSettings, Endpoint, Persist, ShardState};
use crate::admission::{Admission, ApiLimiter, CapReached, Permit};
use crate::auth::{Claims, TokenKey};
use crate::cluster::{BusHandle, Incoming};
use crate::config::ServeConfig;
use crate::game::words::WordPack;
use crate::http::{self, FramingError, HeadError, Request, Response, Route, RouteError, Status};
use crate::metrics::{Metrics, Refusal, ShardMetrics};
use crate::store::StoreHandle;
use crate::ws;

/// Most bytes read and dropped after an error response, so closing does not reset the
/// connection before the client has read the response.
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_TIME: Duration = Duration::from_millis(500);

/// Things every shard shares with the others and with the main thread.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) config: Arc<ServeConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admission: Arc<Admission>,
    pub(crate) shutdown: Arc<AtomicBool>,
    pub(crate) tokens: TokenKey,
    pub(crate) packs: Arc<Vec<Arc<WordPack>>>,
    /// Redis, with `--redis`.
    pub(crate) store: Option<StoreHandle>,
    /// Relay rooms across instances, with `--redis`.
    pub(crate) bus: Option<BusHandle>,
    /// Each shard's receiver of other instances' relay messages, taken by the shard at start
    /// (indexed by shard index).
    pub(crate) bus_inbox: Arc<std::sync::Mutex<Vec<Option<flume::Receiver<Incoming>>>>>,
}

/// A shard's runtime context, shared by its tasks through `Rc`.
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) shards: usize,
    pub(crate) shared: Shared,
    pub(crate) state: RefCell<ShardState>,
    /// Where connection drivers read into; borrowed only within one synchronous read.
    pub(crate) read_scratch: RefCell<Vec<u8>>,
    /// Room-API requests per client address on this shard.
    api_limiter: RefCell<ApiLimiter>,
    mesh: Senders<Handoff>,
}

/// Size of a shard's read scratch buffer: the largest single read.
const READ_SCRATCH_BYTES: usize = 256 * 1024;

impl Shard {
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        self.shared.metrics.shard(self.index)
    }
}

/// Runs shard `mesh.peer_id()` until shutdown has drained its connections.
pub(crate) async fn run(shared: Shared, listener: TcpListener, mesh: Senders<Handoff>, mut inbox: Receivers<Handoff>) {
    let instance = shared.bus.as_ref().map(|bus| bus.instance_id().to_string());
    let persist = shared.store.clone().map(|store| Persist::new(store, shared.config.persist_interval, instance));
    let bus = shared.bus.clone();
    let api_limiter = ApiLimiter::new(shared.config.api_rate_per_ip);
    let inbox_from_bus = shared.bus_inbox.lock().ok().and_then(|mut all| all.get_mut(mesh.peer_id()).and_then(Option::take));
    let shard = Rc::new(Shard {
        index: mesh.peer_id(),
        shards: mesh.nr_consumers(),
        shared,
        state: RefCell::new(ShardState::new(persist, bus)),
        read_scratch: RefCell::new(vec![0; READ_SCRATCH_BYTES]),
        api_limiter: RefCell::new(api_limiter),
        mesh,
    });
    for (_, receiver) in inbox.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(handoff) = receiver.recv().await {
                shard.metrics().handoffs_received.add(1);
                let (fd, head, permit) = handoff.into_parts();
                // SAFETY: the descriptor is an open TCP socket whose ownership the handoff carried.
                let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                glommio::spawn_local(serve(shard.clone(), stream, head, permit)).detach();
            }
        })
        .detach();
    }
    if let Some(from_bus) = inbox_from_bus {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Ok(incoming) = from_bus.recv_async().await {
                let mut state = shard.state.borrow_mut();
                state.on_remote_message(shard.metrics(), Instant::now(), &incoming.room, incoming.kind, &incoming.payload);
            }
        })
        .detach();
    }
    let acceptor = glommio::spawn_local(accept_loop(shard.clone(), listener)).detach();
    sweep_until_shutdown(&shard, &shard.shared.shutdown).await;
    acceptor.cancel();
    drain(&shard).await;
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(shard.clone(), stream, Vec::new(), None)).detach();
            }
            Err(err) => {
                // Out of descriptors or a transient error: back off instead of spinning.
                warn!(shard = shard.index, %err, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The sweeper's period: fine enough for the configured timeouts, coarse enough to be free.
fn sweep_period(config: &ServeConfig) -> Duration {
    (config.ping_interval.min(config.pong_timeout) / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// The shard's one timer: sleeps until the earliest room deadline or the next heartbeat sweep,
/// whichever is first, and is woken early when a room arms an earlier deadline.
async fn sweep_until_shutdown(shard: &Shard, shutdown: &AtomicBool) {
    let period = sweep_period(&shard.shared.config);
    let mut next_sweep = Instant::now() + period;
    while !shutdown.load(Ordering::Relaxed) {
        let until = shard.state.borrow().next_deadline().map_or(next_sweep, |d| d.min(next_sweep));
        let sleep = glommio::timer::sleep(until.saturating_duration_since(Instant::now()));
        futures_lite::future::or(sleep, EarlierDeadline { shard, until }).await;
        let now = Instant::now();
        let mut state = shard.state.borrow_mut();
        state.fire_deadlines(shard.metrics(), now);
        state.flush_store(now, api::unix_now().as_millis() as i64);
        if now >= next_sweep {
            state.handle_timeout(shard.metrics(), now);
            next_sweep = now + period;
        }
    }
}

/// Completes when a room arms a deadline earlier than `until`.
struct EarlierDeadline<'a> {
    shard: &'a Shard,
    until: Instant,
}

impl Future for EarlierDeadline<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.shard.state.borrow_mut();
        if state.next_deadline().is_some_and(|d| d < self.until) {
            return Poll::Ready(());
        }
        state.timer_sleeping(self.until, cx.waker());
        Poll::Pending
    }
}

/// Closes every connection with 1001 and waits for them, up to the shutdown grace.
async fn drain(shard: &Shard) {
    let started = Instant::now();
    shard.state.borrow_mut().close_all(shard.metrics(), started);
    let period = sweep_period(&shard.shared.config).min(Duration::from_millis(50));
    while shard.state.borrow().len() > 0 {
        if started.elapsed() >= shard.shared.config.shutdown_grace {
            shard.state.borrow_mut().terminate_all();
        }
        glommio::timer::sleep(period).await;
        shard.state.borrow_mut().handle_timeout(shard.metrics(), Instant::now());
    }
}

/// Serves one connection from its first byte (or from `head`, the bytes another shard read).
async fn serve(shard: Rc<Shard>, mut stream: TcpStream, head: Vec<u8>, permit: Option<Permit>) {
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
    // One unambiguous body length, and a body only where one is read (RFC 9112 §6.3).
    let takes_body = matches!(route, Route::Rooms(_) | Route::RoomPlayers(_)) && request.method == "POST";
    match request.body_length() {
        Ok(0) => {}
        Ok(_) if takes_body => {}
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
            return hand_off(&shard, stream, owner, buf, None, peer).await;
        }
        return serve_plain(&shard, stream, &request, &route, buf, head_len, peer.ip()).await;
    }
    let accept_key = match ws::validate_upgrade(&request, &shard.shared.config.allowed_origin) {
        Ok(key) => key,
        Err(err) => return refuse(&shard, stream, refusal_of(err.response().status()), err.response()).await,
    };
    let claims = match &route {
        Route::Game { room, token, .. } => match verify_token(&shard, room.as_str(), token) {
            Ok(claims) => Some(claims),
            Err(response) => return refuse(&shard, stream, Refusal::Unauthorized, response).await,
        },
        _ => None,
    };
    let permit = match permit {
        Some(permit) => permit,
        None => match shard.shared.admission.try_admit(peer.ip()) {
            Ok(permit) => permit,
            Err(cap) => {
                let message = cap.to_string();
                let code = if cap == CapReached::PerIp { "TOO_MANY_CONNECTIONS_FROM_ADDRESS" } else { "SERVER_FULL" };
                let response = Response::error(Status::ServiceUnavailable, code, &message).header("Retry-After", "1");
                return refuse(&shard, stream, Refusal::Overloaded, response).await;
            }
        },
    };
    if owner != shard.index {
        return hand_off(&shard, stream, owner, buf, Some(permit), peer).await;
    }
    let leftover = buf.get(head_len..).unwrap_or_default();
    match route {
        Route::Relay(room) => upgrade(shard, stream, &accept_key, Endpoint::Relay(room), leftover, permit, None).await,
        Route::Game { room, version, .. } => {
            let Some(claims) = claims else { return };
            if let Err((why, response)) = api::recover_room(&shard, &room).await {
                return refuse(&shard, stream, why, response).await;
            }
            if let Err((why, response)) = api::check_member(&shard, &room, &claims.actor_id) {
                return refuse(&shard, stream, why, response).await;
            }
            let player = Some((claims.actor_id, version));
            upgrade(shard, stream, &accept_key, Endpoint::Game(room), leftover, permit, player).await
        }
        _ => upgrade(shard, stream, &accept_key, Endpoint::Echo, leftover, permit, None).await,
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
            let n = stream.read(&mut buf[start..]).await.unwrap_or(0);
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
        _ => Refusal::BadRequest,
    }
}

async fn serve_plain(shard: &Shard, stream: TcpStream, request: &Request, route: &Route, buf: Vec<u8>, head_len: usize, ip: std::net::IpAddr) {
    let method = request.method.as_str();
    let allowed = match route {
        Route::Rooms(_) | Route::RoomPlayers(_) => "POST",
        _ => "GET",
    };
    if method != allowed {
        let response = Response::error(Status::MethodNotAllowed, "METHOD_NOT_ALLOWED", &format!("use {allowed}")).header("Allow", allowed);
        return refuse(shard, stream, Refusal::MethodNotAllowed, response).await;
    }
    if matches!(route, Route::Rooms(_) | Route::RoomPlayers(_)) {
        let limited = shard.api_limiter.borrow_mut().check(Instant::now(), ip);
        if let Err(retry_after) = limited {
            let response = Response::error(Status::TooManyRequests, "RATE_LIMITED", "too many room requests from this address; slow down")
                .header("Retry-After", retry_after.as_secs().to_string());
            return refuse(shard, stream, Refusal::RateLimited, response).await;
        }
    }
    if let Route::Room(room) | Route::RoomPlayers(room) | Route::Rooms(Some(room)) = route {
        if let Err((why, response)) = api::recover_room(shard, room).await {
            return refuse(shard, stream, why, response).await;
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
            Response::new(Status::Ok).body("text/plain; version=0.0.4", text.into_bytes())
        }
        Route::WordPacks => api::word_packs(shard),
        Route::Room(room) => api::room_summary(shard, room),
        Route::Rooms(_) | Route::RoomPlayers(_) => {
            let (mut stream, body) = match read_body(shard, stream, request, buf, head_len).await {
                Ok(read) => read,
                Err((stream, why, response)) => return refuse(shard, stream, why, response).await,
            };
            let response = match route {
                Route::RoomPlayers(room) => api::join_room(shard, request, room, &body),
                Route::Rooms(chosen) => api::create_room(shard, request, chosen.as_ref(), &body),
                _ => Response::new(Status::NotFound),
            };
            let _ = stream.write_all(&response.to_bytes()).await;
            return close_gracefully(stream).await;
        }
        _ => Response::json(Status::Ok, &api::health(shard, now)),
    };
    respond(stream, &response).await;
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
            let n = stream.read(&mut buf[start..]).await.unwrap_or(0);
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

async fn hand_off(shard: &Shard, stream: TcpStream, owner: usize, head: Vec<u8>, permit: Option<Permit>, peer: SocketAddr) {
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
    if shard.mesh.send_to(owner, Handoff::new(fd, head, permit)).await.is_err() {
        debug!(%peer, owner, "owner shard is gone; dropping connection");
    }
}

/// Completes the handshake and drives the connection; a game connection (`player`: actor id
/// and protocol version) is connected to its room first.
async fn upgrade(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    accept_key: &str,
    endpoint: Endpoint,
    leftover: &[u8],
    permit: Permit,
    player: Option<(String, String)>,
) {
    if stream.write_all(&ws::accept_response(accept_key).to_bytes()).await.is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let config = &shard.shared.config;
    let now = Instant::now();
    let room = match &endpoint {
        Endpoint::Game(room) => Some(room.clone()),
        _ => None,
    };
    let id = {
        let mut state = shard.state.borrow_mut();
        let settings = ConnSettings {
            heartbeat: (config.ping_interval, config.pong_timeout),
            max_outbound_bytes: config.max_outbound_bytes,
            messages_per_sec: config.connection_message_rate,
            pings_per_sec: config.pings_per_sec,
        };
        let id = state.register(shard.metrics(), now, endpoint, permit, settings);
        if let (Some(room), Some((actor, version))) = (room, player) {
            state.register_player(shard.metrics(), now, &room, id, &actor, &version);
        }
        id
    };
    shard.metrics().handshakes_ok.add(1);
    // The driver runs as its own task so that this function's request state (head buffer,
    // headers) is freed now rather than held for the connection's lifetime.
    glommio::spawn_local(ConnDriver::new(shard.clone(), id, stream, leftover)).detach();
}
