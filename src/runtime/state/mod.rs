//! A shard's connections and rooms: plain data, touched only by the shard's own thread.
//!
//! The connection drivers and the shard's timer task borrow this for one synchronous step at a time
//! and never across an await. Game rooms reached through or served for another instance are in
//! [`forwarding`]; room leases in [`leasing`].

mod admin;
mod forwarding;
mod isolation;
mod leasing;
mod pubsub;

pub(crate) use pubsub::{PubSub, PubSubSettings};

pub(crate) use isolation::panic_message;

use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use slab::Slab;

use crate::admission::Permit;
use crate::cluster::forward::IdSource;
use crate::cluster::{BusHandle, Leases, Subscriptions};
use crate::deadlines::{round_up, Deadlines};
use crate::metrics::latency::{self, Latency};
use crate::metrics::ShardMetrics;
use crate::outbox::Outbox;
use crate::rooms::{GameRoom, RoomCount, RoomId, RoomOutput, Rooms};
use crate::session::{Heartbeat, HeartbeatAction, TokenBucket};
use crate::store::{StoreHandle, WriteBehind};
use crate::ws::{self, close_code, DataKind};

/// A connection's key in its shard's table.
pub(crate) type ConnId = usize;

/// A member of a game room on its owner shard: a connection here, or a client connected to
/// another instance (the key of its [`forwarding::RemoteMember`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Member {
    Local(ConnId),
    Remote(usize),
}

/// Who a game room's handling acts for: named in the log if the room panics.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Acting<'a> {
    /// The room's timers or the server itself.
    Server,
    /// A member's message or departure.
    Member(Member),
    /// An actor joining, connecting or being checked.
    Actor(&'a str),
}

/// How long a closing connection may take to flush its close frame and hear the peer's.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a connection's messages do.
#[derive(Debug)]
pub(crate) enum Endpoint {
    /// Every message comes back to its sender.
    Echo,
    /// Every message goes to every member of the room, sender included.
    Relay(RoomId),
    /// Messages are game protocol for this room.
    Game(RoomId),
    /// Messages are game protocol for this room, which instance `owner` serves; `link` names
    /// the connection there.
    Forwarded { room: RoomId, owner: Arc<str>, link: u64 },
    /// Messages are the `/pubsub` protocol, run by the app's handlers.
    PubSub(Box<crate::pubsub::Session>),
}

/// One WebSocket connection as the shard sees it.
pub(crate) struct Conn {
    pub(crate) outbox: Outbox,
    /// When a frame was queued on the empty outbox: its wait ends when the outbox is written out.
    queued_since: Option<Instant>,
    waker: Option<Waker>,
    heartbeat: Heartbeat,
    endpoint: Endpoint,
    /// Set once a close frame is queued: the moment the connection is cut regardless.
    close_deadline: Option<Instant>,
    /// The deadline this connection holds in the shard's timer heap.
    armed: Option<Instant>,
    /// The driver must stop now and drop the socket.
    pub(crate) terminate: bool,
    /// A game connection's room, or a `/pubsub` connection's rooms, were told it is gone (at
    /// the first sign: close, error, timeout).
    departed: bool,
    /// `/relay` and `/echo` messages this connection may still send (game rooms limit their own).
    messages: TokenBucket,
    /// Message bytes this connection may still send (every endpoint).
    bytes: TokenBucket,
    /// Pings this connection may still have answered; past that they are not.
    pings: TokenBucket,
    /// When the peer last sent a data message (or connected), and how long it may stay silent.
    last_message: Instant,
    idle_timeout: Option<Duration>,
    /// permessage-deflate: the window bits this connection's messages are compressed with.
    deflate: Option<Deflate>,
    _permit: Permit,
}

/// What permessage-deflate settled for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    /// The server's window (9-15).
    pub(crate) window_bits: u8,
    /// Messages smaller than this go plain (`--compression-min-bytes`).
    pub(crate) min_bytes: usize,
}

thread_local! {
    /// This shard's compressors and the frames they compressed (see [`ws::FrameDeflater`]).
    static DEFLATER: std::cell::RefCell<Option<ws::FrameDeflater>> = const { std::cell::RefCell::new(None) };
}

/// `frame` as a connection with `deflate` gets it, compressed at most once per frame per shard.
fn deflated(m: &ShardMetrics, frame: Bytes, deflate: Deflate) -> Bytes {
    DEFLATER.with(|d| {
        let mut d = d.borrow_mut();
        let d = d.get_or_insert_with(|| ws::FrameDeflater::new(deflate.min_bytes));
        let before = d.stats();
        let sent = d.frame_for(&frame, deflate.window_bits);
        let after = d.stats();
        m.deflate_bytes_before.add(after.bytes_before - before.bytes_before);
        m.deflate_bytes_after.add(after.bytes_after - before.bytes_after);
        m.deflate_compressed.add(after.compressed - before.compressed);
        m.deflate_skipped.add(after.skipped - before.skipped);
        sent
    })
}

/// What every new connection is set up with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnSettings {
    /// Ping interval and pong timeout.
    pub(crate) heartbeat: (Duration, Duration),
    /// When the first ping is due (a random phase within the ping interval).
    pub(crate) first_ping: Duration,
    /// Outbound bytes queued before the connection is cut as a slow consumer.
    pub(crate) max_outbound_bytes: usize,
    /// Messages on `/relay` and `/echo` per second (bursts of twice that).
    pub(crate) messages_per_sec: f64,
    /// Message bytes per second any connection may send, and its burst.
    pub(crate) bytes_per_sec: (f64, f64),
    /// Pings answered per second (bursts of twice that).
    pub(crate) pings_per_sec: f64,
    /// A connection that sends no data message this long is closed (`None`: never).
    pub(crate) idle_timeout: Option<Duration>,
    /// permessage-deflate, when negotiated.
    pub(crate) deflate: Option<Deflate>,
}

impl Conn {
    /// Sets the waker the driver will be woken through.
    pub(crate) fn set_waker(&mut self, waker: &Waker) {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.waker = Some(waker.clone());
        }
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether this is a `/pubsub` connection (whose messages feed the other shards).
    pub(crate) fn is_pubsub(&self) -> bool {
        matches!(self.endpoint, Endpoint::PubSub(_))
    }

    /// Whether a close frame is queued (nothing else will be sent).
    pub(crate) fn is_closing(&self) -> bool {
        self.outbox.is_sealed()
    }

    /// When this connection's timers next have something to do: its close deadline once it is
    /// closing, else the earlier of its heartbeat and its idle timeout. `None` once cut.
    fn next_deadline(&self) -> Option<Instant> {
        if self.terminate {
            return None;
        }
        if let Some(deadline) = self.close_deadline {
            return Some(deadline);
        }
        let heartbeat = self.heartbeat.poll_timeout();
        Some(self.idle_timeout.map_or(heartbeat, |idle| heartbeat.min(self.last_message + idle)))
    }

    /// Advances this connection's timers to `now`: cuts it past its close deadline, closes it
    /// when idle or silent (returning `true`: its room must hear it left), pings it when due.
    fn handle_timeout(&mut self, m: &ShardMetrics, now: Instant) -> bool {
        if let Some(deadline) = self.close_deadline {
            if now >= deadline && !self.terminate {
                self.terminate = true;
                self.wake();
            }
            return false;
        }
        if self.idle_timeout.is_some_and(|idle| now >= self.last_message + idle) {
            m.idle_closes.add(1);
            self.begin_close(m, now, close_code::GOING_AWAY, "idle: no message within the idle timeout", false);
            return true;
        }
        match self.heartbeat.handle_timeout(now) {
            Some(HeartbeatAction::SendPing) => {
                self.queue(m, now, ws::ping_frame());
                false
            }
            Some(HeartbeatAction::TimedOut) => {
                m.heartbeat_timeouts.add(1);
                self.begin_close(m, now, close_code::GOING_AWAY, "no data or pong within the pong timeout", true);
                true
            }
            None => false,
        }
    }

    /// Queues a close frame. `discard` drops what is still queued (a slow or dead reader would
    /// never take it); otherwise queued frames go out first.
    fn begin_close(&mut self, m: &ShardMetrics, now: Instant, code: u16, reason: &str, discard: bool) {
        if self.is_closing() {
            return;
        }
        if discard {
            self.outbox.discard_unsent();
        }
        self.outbox.seal(ws::encode_close(code, reason));
        m.close_sent(code);
        m.frames_out.add(1);
        self.close_deadline = Some(now + CLOSE_TIMEOUT);
        self.wake();
    }

    /// Records that `n` bytes were written; once the outbox is empty, how long its oldest frame
    /// waited.
    pub(crate) fn wrote(&mut self, n: usize) {
        self.outbox.advance(n);
        if self.outbox.is_empty() {
            if let Some(since) = self.queued_since.take() {
                latency::record(Latency::QueueDelay, since.elapsed());
            }
        }
    }

    /// Queues a frame; a member whose queue is full is closed as a slow consumer.
    fn queue(&mut self, m: &ShardMetrics, now: Instant, frame: Bytes) -> bool {
        let frame = match self.deflate {
            Some(deflate) => deflated(m, frame, deflate),
            None => frame,
        };
        if self.outbox.is_empty() {
            self.queued_since = Some(now);
        }
        match self.outbox.push(frame) {
            Ok(()) => {
                m.frames_out.add(1);
                self.wake();
                true
            }
            Err(overflow) => {
                m.slow_consumer_disconnects.add(1);
                let reason = format!("slow consumer: more than {} bytes queued", overflow.limit);
                self.begin_close(m, now, close_code::POLICY_VIOLATION, &reason, true);
                false
            }
        }
    }
}

/// A game room and the deadline the shard timer holds for it.
struct GameEntry {
    room: GameRoom<Member>,
    armed: Option<Instant>,
    /// The sequence id up to which the room's changes are scheduled for persistence.
    marked_seq: u64,
}

/// Write-behind persistence of this shard's game rooms (with `--redis`).
pub(crate) struct Persist {
    write_behind: WriteBehind,
    store: StoreHandle,
    /// The store's resync epoch last seen: when it moves, every room is written again.
    epoch: u64,
    last_warned: Option<Instant>,
    /// This instance's id, written into every snapshot (with several instances).
    instance: Option<String>,
    /// Each room's webhook events (JSON) since its last write: they go to Redis with its next
    /// snapshot, in one step, so a recovered room and its events always agree.
    pub(super) events: AHashMap<RoomId, Vec<String>>,
}

/// Webhook events one room may hold while Redis is away; past it the oldest go (counted).
const MAX_PENDING_EVENTS: usize = 10_000;

impl Persist {
    pub(crate) fn new(store: StoreHandle, interval: Duration, instance: Option<String>) -> Self {
        let epoch = store.resync_epoch();
        Persist { write_behind: WriteBehind::new(interval), store, epoch, last_warned: None, instance, events: AHashMap::new() }
    }

    /// Keeps `room`'s webhook event for its next write.
    fn keep_event(&mut self, room: &RoomId, event: String) {
        let events = self.events.entry(room.clone()).or_default();
        if events.len() >= MAX_PENDING_EVENTS {
            events.remove(0);
            tracing::warn!(room = room.as_str(), "redis away too long: a webhook event of this room is dropped");
        }
        events.push(event);
    }

    /// `room`'s events waiting for its next write (left in place until the store takes them).
    pub(super) fn events_of(&self, room: &RoomId) -> Vec<String> {
        self.events.get(room).cloned().unwrap_or_default()
    }
}

/// Connection deadlines need no precision: the shard wakes for them on this grain, each time
/// for all that are due, instead of once per connection.
const CONN_TIMER_GRAIN: Duration = Duration::from_millis(10);

/// How often a full persistence queue is logged, at most.
const QUEUE_FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// All connections and rooms of one shard.
#[derive(Default)]
pub(crate) struct ShardState {
    conns: Slab<Conn>,
    rooms: Rooms<ConnId>,
    games: AHashMap<RoomId, GameEntry>,
    /// Room deadlines (an entry whose time is not its room's `armed` is stale).
    deadlines: Deadlines<RoomId>,
    /// Connection deadlines: pings, pong and idle timeouts, close deadlines (an entry whose
    /// time is not its connection's `armed` is stale).
    conn_deadlines: Deadlines<ConnId>,
    /// Where the wake-ups for connection deadlines are counted from (see [`CONN_TIMER_GRAIN`]).
    origin: Option<Instant>,
    /// What the shard's timer task sleeps until, and how to wake it for an earlier deadline.
    timer_sleeps_until: Option<Instant>,
    timer_waker: Option<Waker>,
    persist: Option<Persist>,
    /// Relay rooms joined with other instances (with `--redis`).
    bus: Option<BusHandle>,
    /// The app's backend hears of rooms and games (`--webhook-url`).
    pub(crate) webhooks: Option<crate::webhooks::WebhookHandle>,
    subscriptions: Subscriptions,
    /// This shard's index (in the ids of its forwarded links).
    index: usize,
    /// The leases of this shard's game rooms (with `--redis`).
    leases: Option<Leases>,
    /// Clients of this shard's game rooms connected to other instances.
    remotes: forwarding::RemoteMembers,
    /// This shard's connections forwarded to game rooms on other instances, by link id.
    links: AHashMap<u64, ConnId>,
    /// Ids for this shard's forwarded links (made at the first one).
    link_ids: Option<IdSource>,
    /// `/pubsub` (absent in unit tests of the rest).
    pubsub: Option<PubSub>,
    /// Test hook: the shard's timer panics (outside every boundary) at its next wake-up.
    #[cfg(feature = "fault-injection")]
    pub(crate) fault_abort: bool,
}

/// Test-only faults (`--features fault-injection`): magic `/echo` or `/relay` messages.
#[cfg(feature = "fault-injection")]
mod fault {
    #[allow(clippy::panic)] // The test-only fault hook: panicking is its job.
    pub(super) fn on_message(abort: &mut bool, payload: &[u8]) {
        match payload {
            b"FAULT:panic-connection" => panic!("injected fault: connection"),
            b"FAULT:abort-shard" => *abort = true,
            _ => {}
        }
    }
}

impl ShardState {
    /// An empty shard `index`; with `persist`, its game rooms are written behind to Redis and
    /// held through `leases`; with `bus`, its rooms are joined with other instances'.
    pub(crate) fn new(index: usize, persist: Option<Persist>, leases: Option<Leases>, bus: Option<BusHandle>, pubsub: PubSub) -> Self {
        ShardState { index, persist, leases, bus, origin: Some(Instant::now()), pubsub: Some(pubsub), ..ShardState::default() }
    }

    /// Adds an upgraded connection and joins its room.
    pub(crate) fn register(&mut self, m: &ShardMetrics, now: Instant, endpoint: Endpoint, permit: Permit, settings: ConnSettings) -> ConnId {
        let ConnSettings { heartbeat, first_ping, max_outbound_bytes, messages_per_sec, bytes_per_sec, pings_per_sec, idle_timeout, deflate } = settings;
        let room = match &endpoint {
            Endpoint::Relay(room) => Some(room.clone()),
            Endpoint::Echo | Endpoint::Game(_) | Endpoint::Forwarded { .. } | Endpoint::PubSub(_) => None,
        };
        let id = self.conns.insert(Conn {
            outbox: Outbox::new(max_outbound_bytes),
            queued_since: None,
            waker: None,
            heartbeat: Heartbeat::new(now, heartbeat.0, heartbeat.1, first_ping),
            endpoint,
            close_deadline: None,
            armed: None,
            terminate: false,
            departed: false,
            messages: TokenBucket::new(now, messages_per_sec, 2.0 * messages_per_sec),
            bytes: TokenBucket::new(now, bytes_per_sec.0, bytes_per_sec.1),
            pings: TokenBucket::new(now, pings_per_sec, 2.0 * pings_per_sec),
            last_message: now,
            idle_timeout,
            deflate,
            _permit: permit,
        });
        self.arm_conn(id);
        let rooms_before = self.rooms.len();
        if let Some(room) = room {
            self.rooms.join(&room, id);
            if let (Some(bus), Some(change)) = (&self.bus, self.subscriptions.join(&room)) {
                bus.change(change);
            }
        }
        m.connections.add(1);
        m.rooms.add(self.rooms.len() as i64 - rooms_before as i64);
        if let Some(conn) = self.conns.get(id) {
            tracing::debug!(shard = self.index, conn = id, endpoint = ?conn.endpoint, "connection opened");
        }
        id
    }

    /// Registers a game connection and connects it to its room as `actor_id`.
    pub(crate) fn register_player(&mut self, m: &ShardMetrics, now: Instant, room: &RoomId, conn: ConnId, actor_id: &str, version: &str) {
        let connected = self.with_game_for(m, now, room, Acting::Actor(actor_id), |r| {
            let _ = r.connect(now, Member::Local(conn), actor_id, version);
        });
        if connected.is_none() {
            // The room closed between the token check and the upgrade.
            if let Some(c) = self.conns.get_mut(conn) {
                c.departed = true;
                c.begin_close(m, now, close_code::NORMAL, "room closed", false);
            }
        }
    }

    /// Removes a finished connection and leaves its room.
    pub(crate) fn unregister(&mut self, m: &ShardMetrics, now: Instant, id: ConnId) {
        self.leave_game(m, now, id);
        let Some(conn) = self.conns.try_remove(id) else { return };
        tracing::debug!(shard = self.index, conn = id, endpoint = ?conn.endpoint, "connection closed");
        let rooms_before = self.rooms.len();
        match &conn.endpoint {
            Endpoint::Relay(room) => {
                self.rooms.leave(room, id);
                if let (Some(bus), Some(change)) = (&self.bus, self.subscriptions.leave(room)) {
                    bus.change(change);
                }
            }
            Endpoint::Forwarded { link, .. } => {
                self.links.remove(link);
            }
            Endpoint::Echo | Endpoint::Game(_) | Endpoint::PubSub(_) => {}
        }
        m.connections.add(-1);
        m.rooms.add(self.rooms.len() as i64 - rooms_before as i64);
    }

    /// The connection `id`, if it is still registered.
    pub(crate) fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id)
    }

    /// Something arrived from `id`'s peer.
    pub(crate) fn on_activity(&mut self, id: ConnId, now: Instant) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.heartbeat.on_activity(now);
        }
    }

    /// A complete data message from `id`: encode its frame once and deliver it.
    pub(crate) fn on_message(&mut self, m: &ShardMetrics, now: Instant, id: ConnId, kind: DataKind, payload: &[u8]) {
        m.messages_in.add(1);
        let Some(conn) = self.conns.get_mut(id) else { return };
        if conn.is_closing() {
            return;
        }
        conn.last_message = now;
        if !conn.bytes.try_take_n(now, payload.len() as f64) {
            m.rate_limit_closes.add(1);
            conn.begin_close(m, now, close_code::POLICY_VIOLATION, "byte rate limit exceeded", true);
            return;
        }
        if let Endpoint::Game(room) = &conn.endpoint {
            let room = room.clone();
            if self.fence_if_expired(m, now, &room) {
                return;
            }
            self.with_game_for(m, now, &room, Acting::Member(Member::Local(id)), |r| r.handle_message(now, Member::Local(id), kind, payload));
            return;
        }
        if let Endpoint::PubSub(_) = &conn.endpoint {
            // Its session limits its own rate (RATE_LIMITED, the connection stays open).
            return self.on_pubsub_message(m, now, id, kind, payload);
        }
        if !conn.messages.try_take(now) {
            m.rate_limit_closes.add(1);
            conn.begin_close(m, now, close_code::POLICY_VIOLATION, "message rate limit exceeded", true);
            return;
        }
        #[cfg(feature = "fault-injection")]
        fault::on_message(&mut self.fault_abort, payload);
        let frame = ws::encode_data(kind, payload);
        match &conn.endpoint {
            Endpoint::Echo => {
                if conn.queue(m, now, frame) {
                    m.messages_out.add(1);
                }
            }
            Endpoint::Relay(room) => {
                let room = room.clone();
                if let Some(bus) = &self.bus {
                    bus.publish(&room, kind, payload);
                }
                self.fan_out(m, now, &room, frame);
            }
            Endpoint::Forwarded { room, owner, link } => {
                // The owner's room applies its own per-member limits; the edge's rate above
                // bounds what one client can make this instance publish.
                let message = crate::cluster::Forward::FromClient { room: room.clone(), link: *link, kind, payload: payload.to_vec() };
                if let Some(bus) = &self.bus {
                    bus.forward(owner, &message);
                }
            }
            Endpoint::Game(_) | Endpoint::PubSub(_) => {}
        }
    }

    /// A relay message another instance published: deliver it to this shard's members.
    pub(crate) fn on_remote_message(&mut self, m: &ShardMetrics, now: Instant, room: &RoomId, kind: DataKind, payload: &[u8]) {
        self.fan_out(m, now, room, ws::encode_data(kind, payload));
    }

    /// Queues one shared frame on every member of a relay room.
    fn fan_out(&mut self, m: &ShardMetrics, now: Instant, room: &RoomId, frame: Bytes) {
        let mut delivered = 0;
        for &member in self.rooms.members(room) {
            if let Some(target) = self.conns.get_mut(member) {
                if !target.is_closing() && target.queue(m, now, frame.clone()) {
                    delivered += 1;
                }
            }
        }
        m.messages_out.add(delivered);
    }

    /// Queues a control frame (a pong) for `id`.
    pub(crate) fn send_control(&mut self, m: &ShardMetrics, now: Instant, id: ConnId, frame: Bytes) {
        if let Some(conn) = self.conns.get_mut(id) {
            if conn.is_closing() {
                return;
            }
            // A ping flood costs the sender, not the server: past the rate, pings go unanswered.
            if !conn.pings.try_take(now) {
                m.pings_ignored.add(1);
                return;
            }
            conn.queue(m, now, frame);
        }
    }

    /// Starts the close handshake on `id` with `code` (the peer closed, or broke the protocol).
    pub(crate) fn close(&mut self, m: &ShardMetrics, now: Instant, id: ConnId, code: u16, reason: &str) {
        if let Some(conn) = self.conns.get_mut(id) {
            conn.begin_close(m, now, code, reason, false);
        }
        self.leave_game(m, now, id);
    }

    /// Tells a game connection's room (or a `/pubsub` connection's rooms), once, that the
    /// connection is gone as of `now`: the disconnect timeline starts when the server first sees
    /// the close, the error or the timeout, not when the socket is finally dropped.
    fn leave_game(&mut self, m: &ShardMetrics, now: Instant, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else { return };
        if !matches!(conn.endpoint, Endpoint::Game(_) | Endpoint::Forwarded { .. } | Endpoint::PubSub(_)) || std::mem::replace(&mut conn.departed, true) {
            return;
        }
        match &conn.endpoint {
            Endpoint::Game(room) => {
                let room = room.clone();
                self.with_game_for(m, now, &room, Acting::Member(Member::Local(id)), |r| r.disconnect(now, Member::Local(id)));
            }
            Endpoint::Forwarded { room, owner, link } => {
                if let Some(bus) = &self.bus {
                    bus.forward(owner, &crate::cluster::Forward::Detach { room: room.clone(), link: *link });
                }
            }
            Endpoint::PubSub(_) => self.depart_pubsub(m, now, id),
            Endpoint::Echo | Endpoint::Relay(_) => {}
        }
    }

    /// Closes every connection with 1001 (server shutdown).
    pub(crate) fn close_all(&mut self, m: &ShardMetrics, now: Instant) {
        for (_, conn) in self.conns.iter_mut() {
            conn.begin_close(m, now, close_code::GOING_AWAY, "server shutting down", false);
        }
    }

    /// Arms `id`'s next deadline in the timer heap if it is earlier than the one armed (a later
    /// one is found when the armed entry fires: activity never touches the heap). Called when a
    /// connection opens and by its driver once it is closing.
    pub(crate) fn arm_conn(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id) else { return };
        let Some(next) = conn.next_deadline() else { return };
        if conn.armed.is_none_or(|armed| next < armed) {
            conn.armed = Some(next);
            self.conn_deadlines.arm(next, id);
            let origin = self.origin.unwrap_or(next);
            self.wake_timer_for(Some(round_up(next, origin, CONN_TIMER_GRAIN)));
        }
    }

    /// Advances the timers of the connections whose deadline is due at `now` (pings, pong and
    /// idle timeouts, close deadlines) and re-arms them.
    pub(crate) fn fire_conn_deadlines(&mut self, m: &ShardMetrics, now: Instant) {
        let mut timed_out = Vec::new();
        while let Some((at, id)) = self.conn_deadlines.pop_due(now) {
            let Some(conn) = self.conns.get_mut(id) else { continue };
            if conn.armed != Some(at) {
                continue;
            }
            if conn.handle_timeout(m, now) {
                timed_out.push(id);
            }
            conn.armed = conn.next_deadline();
            if let Some(next) = conn.armed {
                self.conn_deadlines.arm(next, id);
            }
        }
        let conns = &self.conns;
        self.conn_deadlines.compact(conns.len(), || conns.iter().filter_map(|(id, c)| c.armed.map(|at| (at, id))).collect());
        for id in timed_out {
            self.leave_game(m, now, id);
        }
        self.check_instances(m, now);
    }

    /// Cuts every connection at once (the shutdown grace ran out).
    pub(crate) fn terminate_all(&mut self) {
        for (_, conn) in self.conns.iter_mut() {
            conn.terminate = true;
            conn.wake();
        }
    }

    /// Number of registered connections.
    pub(crate) fn len(&self) -> usize {
        self.conns.len()
    }

    // ----- game rooms ------------------------------------------------------------------------

    /// Adds a new game room (its lease, with `--redis`, taken by a request sent at `leased_at`).
    pub(crate) fn create_game(&mut self, m: &ShardMetrics, now: Instant, room: GameRoom<Member>, leased_at: Instant) {
        if let Some(leases) = self.leases.as_mut() {
            leases.acquired(room.id().clone(), leased_at);
        }
        let id = room.id().clone();
        self.games.insert(id.clone(), GameEntry { room, armed: None, marked_seq: 0 });
        m.rooms.add(1);
        tracing::info!(room = id.as_str(), "room opened");
        self.with_game(m, now, &id, |_| ());
    }

    /// Whether `room` closed here and its Redis key is still to be deleted.
    pub(crate) fn is_deleting(&self, room: &RoomId) -> bool {
        self.persist.as_ref().is_some_and(|p| p.write_behind.is_deleting(room))
    }

    /// Game rooms on this shard.
    pub(crate) fn game_count(&self) -> usize {
        self.games.len()
    }

    /// Whether a game room with this id lives here.
    pub(crate) fn has_game(&self, id: &RoomId) -> bool {
        self.games.contains_key(id)
    }

    /// Runs `f` on a game room, then carries out what the room asks for (sends, closes),
    /// re-arms its timer, and drops the room once it is closed. `None` if no such room.
    pub(crate) fn with_game<R>(&mut self, m: &ShardMetrics, now: Instant, id: &RoomId, f: impl FnOnce(&mut GameRoom<Member>) -> R) -> Option<R> {
        self.with_game_for(m, now, id, Acting::Server, f)
    }

    /// [`ShardState::with_game`] on behalf of `acting`, who is named in the log if the room
    /// panics.
    pub(crate) fn with_game_for<R>(
        &mut self,
        m: &ShardMetrics,
        now: Instant,
        id: &RoomId,
        acting: Acting<'_>,
        f: impl FnOnce(&mut GameRoom<Member>) -> R,
    ) -> Option<R> {
        let entry = self.games.get_mut(id)?;
        // The room boundary: a panic in the room's handling closes that room, not the shard.
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut entry.room))) {
            Ok(result) => result,
            Err(panic) => {
                // A lookup in the member list names the member; nothing else of the room is used.
                let actor = match acting {
                    Acting::Server => "(server)".to_string(),
                    Acting::Member(member) => entry.room.actor_of(member).unwrap_or("(unknown member)").to_string(),
                    Acting::Actor(actor) => actor.to_string(),
                };
                self.room_panicked(m, now, id, &actor, panic_message(panic.as_ref()));
                return None;
            }
        };
        let mut outgoing = forwarding::Outgoing::default();
        loop {
            // Members whose queue overflowed are cut off; their room hears of it at once.
            let mut overflowed = Vec::new();
            while let Some(output) = entry.room.poll_output() {
                match output {
                    RoomOutput::Send(Member::Local(conn), frame) => {
                        if let Some(c) = self.conns.get_mut(conn) {
                            if !c.is_closing() {
                                if c.queue(m, now, frame) {
                                    m.messages_out.add(1);
                                } else {
                                    c.departed = true;
                                    overflowed.push(Member::Local(conn));
                                }
                            }
                        }
                    }
                    RoomOutput::Close(Member::Local(conn), code, reason) => {
                        if let Some(c) = self.conns.get_mut(conn) {
                            c.begin_close(m, now, code, &reason, false);
                            // The room already let this member go.
                            c.departed = true;
                        }
                    }
                    RoomOutput::Send(Member::Remote(key), frame) => self.remotes.gather(&mut outgoing, key, frame),
                    RoomOutput::Close(Member::Remote(key), code, reason) => {
                        // What the member was sent before goes first.
                        overflowed.extend(outgoing.flush(self.bus.as_ref(), m).into_iter().map(Member::Remote));
                        self.remotes.close(self.bus.as_ref(), key, code, reason);
                    }
                    RoomOutput::Count(what) => count(m, what),
                    RoomOutput::Webhook(kind, seq, data) => match (&self.webhooks, self.persist.as_mut()) {
                        // With Redis, the event is written with the room's next snapshot.
                        (Some(hooks), Some(p)) => {
                            if let Some(event) = hooks.event_json(kind, entry.room.id().as_str(), seq, data) {
                                p.keep_event(entry.room.id(), event);
                                p.write_behind.mark_dirty(now, entry.room.id());
                            }
                        }
                        (Some(hooks), None) => hooks.emit(kind, entry.room.id().as_str(), seq, data),
                        _ => {}
                    },
                }
            }
            overflowed.extend(outgoing.flush(self.bus.as_ref(), m).into_iter().map(Member::Remote));
            if overflowed.is_empty() {
                break;
            }
            for member in overflowed {
                entry.room.disconnect(now, member);
                if let Member::Remote(key) = member {
                    // Its edge could not be reached: the client is let go there by the
                    // liveness check, or hears nothing more and reconnects.
                    self.remotes.remove(key);
                }
            }
        }
        if entry.room.is_closed() {
            tracing::info!(room = id.as_str(), reason = entry.room.closed_reason().unwrap_or("closed"), "room closed");
            self.games.remove(id);
            m.rooms.add(-1);
            if let Some(p) = self.persist.as_mut() {
                p.write_behind.mark_closed(now, id);
            }
            if let Some(leases) = self.leases.as_mut() {
                leases.release(id);
            }
            self.wake_timer_for(self.next_deadline());
            return Some(result);
        }
        let mut earliest = None;
        if let Some(p) = self.persist.as_mut() {
            let seq = entry.room.last_sequence_id();
            if seq != entry.marked_seq {
                entry.marked_seq = seq;
                p.write_behind.mark_dirty(now, id);
                earliest = p.write_behind.poll_timeout();
            }
        }
        let deadline = entry.room.poll_timeout();
        if deadline != entry.armed {
            entry.armed = deadline;
            if let Some(at) = deadline {
                self.deadlines.arm(at, id.clone());
                earliest = Some(earliest.map_or(at, |e: Instant| e.min(at)));
            }
        }
        self.compact_deadlines();
        self.wake_timer_for(earliest);
        Some(result)
    }

    /// Keeps the room heap within a small multiple of the rooms (see [`Deadlines::compact`]).
    fn compact_deadlines(&mut self) {
        let games = &self.games;
        self.deadlines.compact(games.len(), || games.iter().filter_map(|(id, e)| e.armed.map(|at| (at, id.clone()))).collect());
    }

    /// Entries in the deadline heap (live and stale).
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.deadlines.len()
    }

    /// Wakes the shard's timer task if it sleeps past `at`.
    fn wake_timer_for(&mut self, at: Option<Instant>) {
        let Some(at) = at else { return };
        if self.timer_sleeps_until.is_none_or(|until| at < until) {
            if let Some(w) = self.timer_waker.take() {
                w.wake();
            }
        }
    }

    /// Hands the rooms that are due to the store (`unix_ms`: the wall clock now). A full queue
    /// keeps them for the next flush; the shard never waits.
    pub(crate) fn flush_store(&mut self, now: Instant, unix_ms: i64) {
        let Some(p) = self.persist.as_mut() else { return };
        let epoch = p.store.resync_epoch();
        if epoch != p.epoch {
            p.epoch = epoch;
            p.write_behind.mark_all(now, self.games.keys().cloned());
        }
        let Some(flush) = p.write_behind.take_due(now) else { return };
        let mut refused = crate::store::Flush::default();
        for (id, changed_at) in flush.writes {
            let Some(entry) = self.games.get(&id) else { continue };
            let mut snapshot = entry.room.save(now, unix_ms);
            snapshot.instance.clone_from(&p.instance);
            let snapshot = snapshot.encode();
            match p.store.try_put(id.as_str(), snapshot, changed_at, p.events_of(&id)) {
                Ok(()) => drop(p.events.remove(&id)),
                Err(_) => refused.writes.push((id, changed_at)),
            }
        }
        for id in flush.deletes {
            match p.store.try_delete(id.as_str(), p.events_of(&id)) {
                Ok(()) => drop(p.events.remove(&id)),
                Err(_) => refused.deletes.push(id),
            }
        }
        if refused != crate::store::Flush::default() {
            if p.last_warned.is_none_or(|t| now >= t + QUEUE_FULL_LOG_EVERY) {
                p.last_warned = Some(now);
                tracing::warn!(
                    rooms = refused.writes.len() + refused.deletes.len(),
                    "persistence queue full; retrying with the next flush (gameplay is unaffected)"
                );
            }
            let games = &self.games;
            p.write_behind.hand_back(now, refused, |id| !games.contains_key(id));
        }
    }

    /// The earliest room, connection or persistence deadline (possibly stale, which only costs
    /// an early wake-up). Connection deadlines are rounded up to [`CONN_TIMER_GRAIN`].
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let room = self.deadlines.next();
        let conn = self.conn_deadlines.next().map(|at| self.origin.map_or(at, |origin| round_up(at, origin, CONN_TIMER_GRAIN)));
        let flush = self.persist.as_ref().and_then(|p| p.write_behind.poll_timeout());
        let lease = self.leases.as_ref().and_then(Leases::poll_timeout);
        [room, conn, flush, lease].into_iter().flatten().min()
    }

    /// Records what the timer task sleeps until and the waker for an earlier deadline.
    pub(crate) fn timer_sleeping(&mut self, until: Instant, waker: &Waker) {
        self.timer_sleeps_until = Some(until);
        self.timer_waker = Some(waker.clone());
    }

    /// Fires every room and connection deadline due at `now`.
    pub(crate) fn fire_deadlines(&mut self, m: &ShardMetrics, now: Instant) {
        self.timer_sleeps_until = None;
        self.fire_conn_deadlines(m, now);
        while let Some((at, id)) = self.deadlines.pop_due(now) {
            let current = self.games.get_mut(&id).is_some_and(|e| e.armed == Some(at));
            if current {
                if let Some(e) = self.games.get_mut(&id) {
                    e.armed = None;
                }
                latency::record(Latency::TimerLateness, Instant::now().saturating_duration_since(at));
                self.with_game(m, now, &id, |r| r.handle_timeout(now));
            }
        }
    }
}

fn count(m: &ShardMetrics, what: RoomCount) {
    match what {
        RoomCount::Backfilled(events) => {
            m.reconnects_backfilled.add(1);
            m.backfilled_events.add(events as u64);
        }
        RoomCount::SnapshotOnly => m.reconnects_snapshot.add(1),
        RoomCount::Expired => m.reconnects_expired.add(1),
        RoomCount::DegradedConnection => m.degraded_connections.add(1),
        RoomCount::UnmatchedAck => m.unmatched_acks.add(1),
        RoomCount::StateResync => m.state_resyncs.add(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::words::WordPack;
    use crate::game::GameConfig;
    use crate::metrics::Metrics;
    use crate::rooms::RoomPolicy;
    use std::sync::Arc;

    #[test]
    fn the_deadline_heap_stays_bounded_under_re_arming() {
        let t0 = Instant::now();
        let metrics = Metrics::new(1, t0);
        let m = metrics.shard(0);
        let mut state = ShardState::default();
        let host = Member::Local(0);
        let config = GameConfig {
            max_players: 10,
            num_teams: 2,
            rounds: 1,
            round_duration: Duration::from_secs(60),
            countdown: 1,
            score_review: Duration::from_secs(1),
            pack: Arc::new(WordPack::shipped().remove(0)),
            seed: 1,
        };
        let id = RoomId::parse("HEAP42").unwrap();
        let room = GameRoom::new(id.clone(), "host", "H", config, RoomPolicy::default(), t0, 0);
        state.create_game(m, t0, room, t0);
        for i in 0..10_000u64 {
            // The host leaving and coming back moves the room's deadline (idle reclaim, host
            // pause) every time: one new heap entry per move.
            let now = t0 + Duration::from_millis(i);
            state.with_game(m, now, &id, |r| r.disconnect(now, host));
            state.with_game(m, now, &id, |r| {
                let _ = r.connect(now, host, "host", "1.0");
            });
        }
        assert!(state.heap_len() <= 2 + 64, "{} heap entries for one room (bound: twice the rooms plus 64)", state.heap_len());
        assert!(state.next_deadline().is_some());
    }
}
