//! One shard: its listener, its connections, its timers.
//!
//! Every shard accepts on the shared port. A request for a room another shard owns is handed
//! over with the bytes already read; the owner answers the handshake and keeps the connection
//! for life. The shard's one timer task fires the deadlines of its rooms and connections
//! (pings, timeouts, close deadlines), all kept as data in the shard state, and watches for
//! shutdown.

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

use super::api::{self, Placement};
use super::conn::ConnDriver;
use super::handoff::Handoff;
use super::mesh::{MeshOut, ShardMsg};
use super::state::{ConnSettings, Deflate, Endpoint, Persist, PubSub, PubSubSettings, ShardState};
use super::turn::NextTurn;
use crate::admission::{Admission, ApiLimiter, Permit};
use crate::auth::{Claims, TokenKey};
use crate::cluster::{BusHandle, Call, Forward, Incoming, Leases};
use crate::config::ServeConfig;
use crate::game::words::WordPack;
use crate::http::{self, FramingError, HeadError, Request, Response, Route, RouteError, Status};
use crate::metrics::latency;
use crate::metrics::{Metrics, Refusal, ShardMetrics};
use crate::rooms::RoomId;
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
    /// Connection caps, for the whole process.
    pub(crate) admission: Arc<Admission>,
    /// Room-API requests per client address, for the whole process.
    pub(crate) api_limiter: Arc<ApiLimiter>,
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Set when a shard thread died of a panic: `/health` answers 503 with it.
    pub(crate) lost_shard: Arc<std::sync::OnceLock<String>>,
    pub(crate) tokens: TokenKey,
    pub(crate) packs: Arc<Vec<Arc<WordPack>>>,
    /// Redis, with `--redis`.
    pub(crate) store: Option<StoreHandle>,
    /// Relay rooms across instances, with `--redis`.
    pub(crate) bus: Option<BusHandle>,
    /// Each shard's receiver of other instances' relay messages, taken by the shard at start
    /// (indexed by shard index).
    pub(crate) bus_inbox: Arc<std::sync::Mutex<Vec<Option<flume::Receiver<Incoming>>>>>,
    /// `/pubsub`: the app's handlers and limits.
    pub(crate) pubsub: PubSubSettings,
    /// `/pubsub` token key (`--pubsub-secret`).
    pub(crate) pubsub_key: Option<crate::pubsub::TokenKey>,
    /// How `/pubsub` meets other instances: Redis with `--redis`, else the in-memory adapter.
    pub(crate) pubsub_adapter: Arc<dyn crate::cluster::pubsub::Adapter>,
    /// Webhook delivery (`--webhook-url`).
    pub(crate) webhooks: Option<crate::webhooks::WebhookHandle>,
    /// This instance's id (`--instance-id`, default host name and port).
    pub(crate) instance_id: Arc<str>,
}

/// A shard's runtime context, shared by its tasks through `Rc`.
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) shards: usize,
    pub(crate) shared: Shared,
    pub(crate) state: RefCell<ShardState>,
    /// Where connection drivers read into; borrowed only within one synchronous read.
    pub(crate) read_scratch: RefCell<Vec<u8>>,
    /// Room-API calls this shard waits on other instances for.
    pub(crate) calls: RefCell<api::Calls>,
    /// Connections that spent their poll budget, waiting for the next ring poll.
    pub(crate) next_turn: NextTurn,
    mesh: Rc<Senders<ShardMsg>>,
    /// What this shard's state sends the other shards, on its way to the mesh.
    pub(crate) mesh_out: Rc<MeshOut>,
}

/// Size of a shard's read scratch buffer: the largest single read.
const READ_SCRATCH_BYTES: usize = 256 * 1024;

impl Shard {
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        self.shared.metrics.shard(self.index)
    }
}

/// Runs shard `mesh.peer_id()` until shutdown has drained its connections.
pub(crate) async fn run(shared: Shared, listener: TcpListener, mesh: Senders<ShardMsg>, mut inbox: Receivers<ShardMsg>) {
    let instance = shared.bus.as_ref().map(|bus| bus.instance_id().to_string());
    let (index, shards) = (mesh.peer_id(), mesh.nr_consumers());
    let mesh_out = Rc::new(MeshOut::new(shards));
    let (proxy_answers, proxy_inbox) = flume::unbounded();
    let pubsub = PubSub::new(index, shards, shared.pubsub_adapter.clone(), shared.pubsub.clone(), mesh_out.clone(), proxy_answers);
    let persist = shared.store.clone().map(|store| Persist::new(store, shared.config.persist_interval, instance));
    let leases = shared.store.as_ref().map(|_| Leases::new(Instant::now(), shared.config.room_lease_ttl));
    let bus = shared.bus.clone();
    let webhooks = shared.webhooks.clone();
    let inbox_from_bus = shared.bus_inbox.lock().ok().and_then(|mut all| all.get_mut(mesh.peer_id()).and_then(Option::take));
    let mesh = Rc::new(mesh);
    let shard = Rc::new(Shard {
        index,
        shards,
        shared,
        state: RefCell::new({
            let mut state = ShardState::new(index, persist, leases, bus, pubsub);
            state.webhooks = webhooks;
            state
        }),
        read_scratch: RefCell::new(vec![0; READ_SCRATCH_BYTES]),
        calls: RefCell::new(api::Calls::new(index)),
        next_turn: NextTurn::default(),
        mesh: mesh.clone(),
        mesh_out: mesh_out.clone(),
    });
    for peer in (0..shards).filter(|peer| *peer != index) {
        glommio::spawn_local(mesh_out.clone().send_to(peer, mesh.clone())).detach();
    }
    {
        let shard = shard.clone();
        glommio::spawn_local(async move { shard.next_turn.run().await }).detach();
    }
    for (_, receiver) in inbox.streams() {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(message) = receiver.recv().await {
                match message {
                    ShardMsg::Handoff(handoff) => {
                        shard.metrics().handoffs_received.add(1);
                        let (fd, head, permit) = handoff.into_parts();
                        // SAFETY: the descriptor is an open TCP socket whose ownership the handoff carried.
                        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
                        glommio::spawn_local(serve(shard.clone(), stream, head, permit)).detach();
                    }
                    ShardMsg::PubSub(message) => shard.state.borrow_mut().on_shard_message(shard.metrics(), Instant::now(), message),
                    ShardMsg::Rows(answer) => {
                        let _ = answer.send(shard.state.borrow().admin_rows(&shard.shared.instance_id));
                    }
                }
            }
        })
        .detach();
    }
    {
        // Answers of the app's backend for this shard's `/pubsub` connections (one task per
        // shard: at most one call is pending per connection).
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Ok((conn, answer)) = proxy_inbox.recv_async().await {
                shard.state.borrow_mut().on_proxy_answer(shard.metrics(), Instant::now(), conn, answer);
            }
        })
        .detach();
    }
    if let Some(from_bus) = inbox_from_bus {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Ok(incoming) = from_bus.recv_async().await {
                on_bus_message(&shard, incoming);
            }
        })
        .detach();
    }
    let acceptor = glommio::spawn_local(accept_loop(shard.clone(), listener)).detach();
    run_timers_until_shutdown(&shard).await;
    acceptor.cancel();
    drain(&shard).await;
}

/// A message from another instance: relay traffic, a forwarded game connection's, or a room
/// API call and its answer.
fn on_bus_message(shard: &Rc<Shard>, incoming: Incoming) {
    let now = Instant::now();
    match incoming {
        Incoming::Relay { room, kind, payload } => shard.state.borrow_mut().on_remote_message(shard.metrics(), now, &room, kind, &payload),
        Incoming::Forward { from, message: Forward::Request { id, call: Call::Rows, .. } } => {
            // Every shard's rows: gathered on a task, since the other shards answer later.
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let rows = super::admin_http::local_rows(&shard).await;
                let answer = Forward::Response { id, status: 200, body: serde_json::to_vec(&rows).unwrap_or_default() };
                if let Some(bus) = &shard.shared.bus {
                    bus.forward(&from, &answer);
                }
            })
            .detach();
        }
        Incoming::Forward { from, message: Forward::Request { room, id, call } } => {
            let response = api::answer_call(shard, &room, call);
            let answer = Forward::Response { id, status: response.status().code(), body: response.body_bytes().to_vec() };
            if let Some(bus) = &shard.shared.bus {
                bus.forward(&from, &answer);
            }
        }
        Incoming::Forward { message: Forward::Response { id, status, body }, .. } => shard.calls.borrow_mut().answer(id, status, body),
        Incoming::Forward { from, message } => shard.state.borrow_mut().on_forward(shard.metrics(), now, &from, message),
        Incoming::PubSub(cast) => shard.state.borrow_mut().on_remote_pubsub(shard.metrics(), now, cast),
        Incoming::PubSubReply { key, serial, frame } => shard.state.borrow_mut().on_pubsub_reply(shard.metrics(), now, key, serial, frame),
    }
}

/// Hands the shard's due lease renewal to the store and applies the answer when it comes.
fn renew_leases(shard: &Rc<Shard>, now: Instant) {
    let Some(store) = &shard.shared.store else { return };
    let unix_ms = api::unix_now().as_millis() as i64;
    let Some(rooms) = shard.state.borrow_mut().poll_lease_renewal(shard.metrics(), now, unix_ms) else { return };
    let answer = store.renew_leases(rooms.iter().map(|r| r.as_str().to_string()).collect());
    let shard = shard.clone();
    // One task per batch (every third of the lease TTL), not per room.
    glommio::spawn_local(async move {
        let held = answer.recv_async().await.ok().and_then(Result::ok);
        shard.state.borrow_mut().on_leases_renewed(shard.metrics(), Instant::now(), now, rooms, held);
    })
    .detach();
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let Ok(peer) = stream.peer_addr() else { continue };
                match shard.shared.admission.try_admit(peer.ip()) {
                    Ok(permit) => {
                        glommio::spawn_local(serve(shard.clone(), stream, Vec::new(), permit)).detach();
                    }
                    // Answered at once, without reading: a flood of idle connections costs
                    // one short write each, and real clients behind the cap get a clear 503.
                    Err(cap) => {
                        shard.metrics().refused(Refusal::Overloaded);
                        let response = Response::error(Status::ServiceUnavailable, cap.code(), &cap.to_string()).header("Retry-After", "1");
                        glommio::spawn_local(async move {
                            let mut stream = stream;
                            let _ = glommio::timer::timeout(Duration::from_secs(1), async { Ok(stream.write_all(&response.to_bytes()).await) }).await;
                        })
                        .detach();
                    }
                }
            }
            Err(err) => {
                // Out of descriptors or a transient error: back off instead of spinning.
                warn!(shard = shard.index, %err, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The longest the shard's timer sleeps with nothing due: how soon it notices a shutdown and
/// checks the instances of forwarded clients.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(250);

/// The shard's one timer: sleeps until the earliest room, connection or store deadline (or the
/// housekeeping period), and is woken early when an earlier deadline is armed.
async fn run_timers_until_shutdown(shard: &Rc<Shard>) {
    let mut next_publish = Instant::now() + PUBLISH_LATENCY_EVERY;
    while !shard.shared.shutdown.load(Ordering::Relaxed) {
        let housekeeping = Instant::now() + HOUSEKEEPING_EVERY;
        let until = shard.state.borrow().next_deadline().map_or(housekeeping, |d| d.min(housekeeping));
        let sleep = glommio::timer::sleep(until.saturating_duration_since(Instant::now()));
        futures_lite::future::or(sleep, EarlierDeadline { shard, until }).await;
        let now = Instant::now();
        renew_leases(shard, now);
        let mut state = shard.state.borrow_mut();
        #[cfg(feature = "fault-injection")]
        #[allow(clippy::panic)] // The test-only fault hook: panicking is its job.
        if state.fault_abort {
            panic!("injected fault: shard {}", shard.index);
        }
        state.fire_deadlines(shard.metrics(), now);
        state.flush_store(now, api::unix_now().as_millis() as i64);
        drop(state);
        latency::record_work(now.elapsed());
        if now >= next_publish {
            latency::publish(&shard.metrics().latency);
            next_publish = now + PUBLISH_LATENCY_EVERY;
        }
    }
}

/// How often a shard moves its latency recordings where `/metrics` reads them.
const PUBLISH_LATENCY_EVERY: Duration = Duration::from_secs(1);

/// Completes when a room or a connection arms a deadline earlier than `until`.
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
    while shard.state.borrow().len() > 0 {
        if started.elapsed() >= shard.shared.config.shutdown_grace {
            shard.state.borrow_mut().terminate_all();
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
        shard.state.borrow_mut().fire_conn_deadlines(shard.metrics(), Instant::now());
    }
}

/// Serves one connection from its first byte (or from `head`, the bytes another shard read).
/// `permit` holds the connection's places (its address's, and among those still sending their
/// request until the upgrade) for as long as the connection lives.
async fn serve(shard: Rc<Shard>, mut stream: TcpStream, head: Vec<u8>, mut permit: Permit) {
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
            heartbeat: (config.ping_interval, config.pong_timeout),
            // A random phase, so that connections opened together are not pinged together.
            first_ping: config.ping_interval.mul_f64(rand::random_range(0.5..=1.0)),
            max_outbound_bytes: config.max_outbound_bytes,
            messages_per_sec: config.connection_message_rate,
            bytes_per_sec: (config.connection_byte_rate as f64, (2 * config.connection_byte_rate).max(config.max_message_bytes as u64) as f64),
            pings_per_sec: config.pings_per_sec,
            idle_timeout: (!config.idle_connection_timeout.is_zero()).then_some(config.idle_connection_timeout),
            deflate: accept.deflate.as_ref().map(|a| Deflate { window_bits: a.server_max_window_bits, min_bytes: config.compression_min_bytes }),
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
