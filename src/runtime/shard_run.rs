//! One shard's tasks: its listener, its connections, its timers.
//!
//! Every shard accepts on the shared port. A request for a room another shard owns is handed
//! over with the bytes already read; the owner answers the handshake and keeps the connection
//! for life. The shard's one timer task fires the deadlines of its rooms and connections
//! (pings, timeouts, close deadlines), all kept as data in the shard state, and watches for
//! shutdown.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::AsyncWriteExt;
use glommio::channels::channel_mesh::{Receivers, Senders};
use glommio::net::{TcpListener, TcpStream};
use tracing::warn;

use super::api;
use super::calls::Calls;
use super::mesh::{MeshOut, ShardMsg};
use super::serve::serve;
use super::shard::{Shard, Shared, READ_SCRATCH_BYTES};
use super::state::{ConnLimits, Persist, PubSub, ShardState};
use super::turn::NextTurn;
use crate::cluster::{Call, Forward, Incoming, Leases};
use crate::http::{Response, Status};
use crate::metrics::latency;
use crate::metrics::Refusal;

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
    let limits = ConnLimits::from_config(&shared.config);
    let shard = Rc::new(Shard {
        index,
        shards,
        shared,
        state: RefCell::new({
            let mut state = ShardState::new(index, limits, persist, leases, bus, pubsub);
            state.webhooks = webhooks;
            state
        }),
        read_scratch: RefCell::new(vec![0; READ_SCRATCH_BYTES]),
        calls: RefCell::new(Calls::new(index)),
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
            // The admin calls are the admin API's; the room API's are the room API's.
            let response = match call {
                Call::AdminDetail | Call::AdminClose { .. } | Call::AdminKick { .. } => super::admin_http::here(shard, &room, call),
                call => api::answer_call(shard, &room, call),
            };
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
