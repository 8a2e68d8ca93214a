//! One shard: its listener, its connections, its timers.
//!
//! Every shard accepts on the shared port. A request for a room another shard owns is handed
//! over with the bytes already read; the owner answers the handshake and keeps the connection
//! for life. The shard's one periodic task (the sweeper) advances heartbeats and close
//! deadlines of all its connections and watches for shutdown.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::conn::ConnDriver;
use super::handoff::Handoff;
use super::state::{Endpoint, ShardState};
use crate::admission::{Admission, CapReached, Permit};
use crate::config::ServeConfig;
use crate::http::{self, HeadError, Request, Response, Route, RouteError, Status};
use crate::metrics::{Metrics, Refusal, ShardMetrics};
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
}

/// A shard's runtime context, shared by its tasks through `Rc`.
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) shards: usize,
    pub(crate) config: Arc<ServeConfig>,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
    pub(crate) state: RefCell<ShardState>,
    mesh: Senders<Handoff>,
}

impl Shard {
    pub(crate) fn metrics(&self) -> &ShardMetrics {
        self.metrics.shard(self.index)
    }
}

/// Runs shard `mesh.peer_id()` until shutdown has drained its connections.
pub(crate) async fn run(shared: Shared, listener: TcpListener, mesh: Senders<Handoff>, mut inbox: Receivers<Handoff>) {
    let shard = Rc::new(Shard {
        index: mesh.peer_id(),
        shards: mesh.nr_consumers(),
        config: shared.config.clone(),
        metrics: shared.metrics.clone(),
        admission: shared.admission.clone(),
        state: RefCell::new(ShardState::default()),
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
                glommio::spawn_local(serve(shard.clone(), stream, head, Some(permit))).detach();
            }
        })
        .detach();
    }
    let acceptor = glommio::spawn_local(accept_loop(shard.clone(), listener)).detach();
    sweep_until_shutdown(&shard, &shared.shutdown).await;
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

async fn sweep_until_shutdown(shard: &Shard, shutdown: &AtomicBool) {
    let period = sweep_period(&shard.config);
    while !shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(period).await;
        shard.state.borrow_mut().handle_timeout(shard.metrics(), Instant::now());
    }
}

/// Closes every connection with 1001 and waits for them, up to the shutdown grace.
async fn drain(shard: &Shard) {
    let started = Instant::now();
    shard.state.borrow_mut().close_all(shard.metrics(), started);
    let period = sweep_period(&shard.config).min(Duration::from_millis(50));
    while shard.state.borrow().len() > 0 {
        if started.elapsed() >= shard.config.shutdown_grace {
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
    if !route.is_websocket() {
        return serve_plain(&shard, stream, &request, &route).await;
    }
    let accept_key = match ws::validate_upgrade(&request, &shard.config.allowed_origin) {
        Ok(key) => key,
        Err(err) => return refuse(&shard, stream, refusal_of(err.response().status()), err.response()).await,
    };
    let permit = match permit {
        Some(permit) => permit,
        None => match shard.admission.try_admit(peer.ip()) {
            Ok(permit) => permit,
            Err(cap) => {
                let message = cap.to_string();
                let code = if cap == CapReached::PerIp { "TOO_MANY_CONNECTIONS_FROM_ADDRESS" } else { "SERVER_FULL" };
                let response = Response::error(Status::ServiceUnavailable, code, &message).header("Retry-After", "1");
                return refuse(&shard, stream, Refusal::Overloaded, response).await;
            }
        },
    };
    let owner = route.room().map_or(shard.index, |room| room.owner_shard(shard.shards));
    if owner != shard.index {
        return hand_off(&shard, stream, owner, buf, permit, peer).await;
    }
    let endpoint = match route {
        Route::Relay(room) => Endpoint::Relay(room),
        _ => Endpoint::Echo,
    };
    upgrade(shard, stream, &accept_key, endpoint, buf.get(head_len..).unwrap_or_default(), permit).await;
}

/// Reads until a complete request head is in the buffer, within the size limit and deadline.
async fn read_head(
    shard: &Shard,
    stream: &mut TcpStream,
    mut buf: Vec<u8>,
) -> Result<(Request, Vec<u8>, usize), (Refusal, Response)> {
    let limit = shard.config.max_request_head_bytes;
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
    let timed = glommio::timer::timeout(shard.config.request_timeout, async { Ok(reading.await) }).await;
    match timed {
        Ok(Ok((request, head_len))) => Ok((request, buf, head_len)),
        Ok(Err(refused)) => Err(refused),
        Err(_) => Err((
            Refusal::Timeout,
            Response::error(Status::RequestTimeout, "REQUEST_TIMEOUT", "request head not received in time"),
        )),
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

async fn serve_plain(shard: &Shard, stream: TcpStream, request: &Request, route: &Route) {
    if request.method != "GET" {
        let response = Response::error(Status::MethodNotAllowed, "METHOD_NOT_ALLOWED", "use GET").header("Allow", "GET");
        return refuse(shard, stream, Refusal::MethodNotAllowed, response).await;
    }
    let now = Instant::now();
    let response = match route {
        Route::Metrics => Response::new(Status::Ok)
            .body("text/plain; version=0.0.4", shard.metrics.render_prometheus(now).into_bytes()),
        _ => Response::json(Status::Ok, &shard.metrics.health(now)),
    };
    respond(stream, &response).await;
}

async fn refuse(shard: &Shard, stream: TcpStream, why: Refusal, response: Response) {
    shard.metrics().refused(why);
    debug!(shard = shard.index, status = response.status().code(), "request refused");
    respond(stream, &response).await;
}

/// Writes a response, half-closes, and reads a little of what the client may still send so
/// that closing does not turn into a reset that destroys the response in flight.
async fn respond(mut stream: TcpStream, response: &Response) {
    if stream.write_all(&response.to_bytes()).await.is_err() {
        return;
    }
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
    if shard.mesh.send_to(owner, Handoff::new(fd, head, permit)).await.is_err() {
        debug!(%peer, owner, "owner shard is gone; dropping connection");
    }
}

async fn upgrade(shard: Rc<Shard>, mut stream: TcpStream, accept_key: &str, endpoint: Endpoint, leftover: &[u8], permit: Permit) {
    if stream.write_all(&ws::accept_response(accept_key).to_bytes()).await.is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let config = &shard.config;
    let id = shard.state.borrow_mut().register(
        shard.metrics(),
        Instant::now(),
        endpoint,
        Some(permit),
        (config.ping_interval, config.pong_timeout),
        config.max_outbound_bytes,
    );
    shard.metrics().handshakes_ok.add(1);
    ConnDriver::new(shard.clone(), id, stream, leftover).await;
}
