//! A shard's connections and rooms: plain data, touched only by the shard's own thread.
//!
//! The connection drivers and the shard's timer task borrow this for one synchronous step at a time
//! and never across an await. This file holds the table of connections and what happens to them
//! (register, messages, close, their deadlines); one connection's own state is [`conn`], the game
//! rooms run on the shard are [`games`], their persistence [`persist`], game rooms reached through
//! or served for another instance [`forwarding`], room leases [`leasing`], `/pubsub` [`pubsub`].

mod admin;
mod conn;
mod games;
use games::GameEntry;
mod forwarding;
mod isolation;
mod leasing;
mod persist;
mod pubsub;

pub(crate) use conn::{Conn, ConnLimits, ConnSettings, Endpoint, Forwarded};
pub(crate) use persist::Persist;
pub(crate) use pubsub::{PubSub, PubSubSettings};

pub(crate) use isolation::panic_message;

use std::task::Waker;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use slab::Slab;

use crate::admission::Permit;
use crate::cluster::forward::IdSource;
use crate::cluster::{BusHandle, Leases, RemoteMembers, Subscriptions};
use crate::deadlines::{round_up, Deadlines};
use crate::metrics::latency::{self, Latency};
use crate::metrics::ShardMetrics;
use crate::outbox::Outbox;
use crate::rooms::{RoomId, Rooms};
use crate::session::{Heartbeat, TokenBucket};
use crate::ws::{self, close_code, DataKind};

/// A connection's key in its shard's table.
pub(crate) type ConnId = usize;

/// A member of a game room on its owner shard: a connection here, or a client connected to
/// another instance (its key in [`RemoteMembers`]).
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

/// Connection deadlines need no precision: the shard wakes for them on this grain, each time
/// for all that are due, instead of once per connection.
const CONN_TIMER_GRAIN: Duration = Duration::from_millis(10);

/// All connections and rooms of one shard.
#[derive(Default)]
pub(crate) struct ShardState {
    conns: Slab<Conn>,
    /// What every connection is held to.
    limits: ConnLimits,
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
    remotes: RemoteMembers,
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
    pub(crate) fn new(index: usize, limits: ConnLimits, persist: Option<Persist>, leases: Option<Leases>, bus: Option<BusHandle>, pubsub: PubSub) -> Self {
        ShardState { index, limits, persist, leases, bus, origin: Some(Instant::now()), pubsub: Some(pubsub), ..ShardState::default() }
    }

    /// Adds an upgraded connection and joins its room.
    pub(crate) fn register(&mut self, m: &ShardMetrics, now: Instant, endpoint: Endpoint, permit: Permit, settings: ConnSettings) -> ConnId {
        let ConnSettings { first_ping, deflate_window_bits } = settings;
        let limits = &self.limits;
        let room = match &endpoint {
            Endpoint::Relay(room) => Some(room.clone()),
            Endpoint::Echo | Endpoint::Game(_) | Endpoint::Forwarded { .. } | Endpoint::PubSub(_) => None,
        };
        let id = self.conns.insert(Conn {
            outbox: Outbox::default(),
            queued_since: None,
            waker: None,
            heartbeat: Heartbeat::new(now, first_ping),
            endpoint,
            close_deadline: None,
            armed: None,
            terminate: false,
            departed: false,
            messages: TokenBucket::full(now, limits.messages),
            bytes: TokenBucket::full(now, limits.bytes),
            pings: TokenBucket::full(now, limits.pings),
            last_message: now,
            deflate_window_bits,
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
            Endpoint::Forwarded(f) => {
                self.links.remove(&f.link);
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
        if !conn.bytes.try_take_n(now, self.limits.bytes, payload.len() as f64) {
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
        if !conn.messages.try_take(now, self.limits.messages) {
            m.rate_limit_closes.add(1);
            conn.begin_close(m, now, close_code::POLICY_VIOLATION, "message rate limit exceeded", true);
            return;
        }
        #[cfg(feature = "fault-injection")]
        fault::on_message(&mut self.fault_abort, payload);
        let frame = ws::encode_data(kind, payload);
        match &conn.endpoint {
            Endpoint::Echo => {
                if conn.queue(m, now, frame, &self.limits) {
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
            Endpoint::Forwarded(f) => {
                let Forwarded { room, owner, link } = &**f;
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
                if !target.is_closing() && target.queue(m, now, frame.clone(), &self.limits) {
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
            if !conn.pings.try_take(now, self.limits.pings) {
                m.pings_ignored.add(1);
                return;
            }
            conn.queue(m, now, frame, &self.limits);
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
            Endpoint::Forwarded(f) => {
                let Forwarded { room, owner, link } = &**f;
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
        let Some(next) = conn.next_deadline(&self.limits) else { return };
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
            if conn.handle_timeout(m, now, &self.limits) {
                timed_out.push(id);
            }
            conn.armed = conn.next_deadline(&self.limits);
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
