//! `/pubsub` on a shard: its connections' sessions run the app's handlers, and what the shard's
//! [`PubSubShard`] asks for is carried out here (frames queued on local connections, messages
//! queued for the other shards).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{ConnId, ConnSettings, Endpoint, ShardState};
use crate::admission::Permit;
use crate::cluster::pubsub::{Adapter, Cast, PresenceReply};
use crate::metrics::{Metrics, ShardMetrics};
use crate::pubsub::shard::presence_reply;
use crate::pubsub::{Command, Conn, ConnRef, Grant, Handlers, MessageId, Output, ProxyAnswer, ProxyCall, PubSubShard, Session, ShardMessage};
use crate::rooms::RoomId;
use crate::runtime::mesh::{MeshOut, ShardMsg};
use crate::ws::DataKind;

/// What every shard's `/pubsub` runs with.
#[derive(Clone)]
pub(crate) struct PubSubSettings {
    pub(crate) handlers: Arc<Handlers>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_rooms: usize,
    pub(crate) messages_per_sec: f64,
    /// Random per process: connection ids differ between instances and restarts.
    pub(crate) nonce: u32,
    /// Whether rooms report their lifecycle as webhook events.
    pub(crate) webhooks: bool,
    /// The app's backend deciding connects, joins and publishes (`--proxy-*-url`).
    pub(crate) proxy: Option<crate::proxy::Proxy>,
}

/// A proxy answer on its way back to the shard of the connection that asked.
pub(crate) type ProxyReturn = (ConnRef, ProxyAnswer);

/// A shard's `/pubsub` part.
pub(crate) struct PubSub {
    core: PubSubShard,
    settings: PubSubSettings,
    /// The other instances (the in-memory adapter when there are none).
    adapter: Arc<dyn Adapter>,
    mesh: Rc<MeshOut>,
    next_serial: u64,
    /// What the handler being run asked for (kept to reuse its allocation).
    commands: Vec<Command>,
    /// Where proxy answers for this shard's connections go (drained by a task of the shard).
    proxy_answers: flume::Sender<ProxyReturn>,
}

impl PubSub {
    /// Shard `index` of `shards`, meeting other instances through `adapter`.
    pub(crate) fn new(
        index: usize,
        shards: usize,
        adapter: Arc<dyn Adapter>,
        settings: PubSubSettings,
        mesh: Rc<MeshOut>,
        proxy_answers: flume::Sender<ProxyReturn>,
    ) -> Self {
        let core = PubSubShard::new(index, shards, adapter.is_shared()).with_webhooks(settings.webhooks);
        PubSub { core, settings, adapter, mesh, next_serial: 0, commands: Vec::new(), proxy_answers }
    }
}

impl PubSub {
    /// The rooms this shard owns, with their members on this instance.
    pub(crate) fn owned_rooms(&self) -> impl Iterator<Item = (&RoomId, &[crate::pubsub::rooms::Member])> {
        self.core.owned()
    }
}

impl ShardState {
    /// Registers an upgraded `/pubsub` connection granted `grant` (`None`: open `/pubsub`, the
    /// connection is its own user) and runs the app's connect handler.
    /// A serial and id for a `/pubsub` connection about to be upgraded (the connect proxy call
    /// names it before it exists).
    pub(crate) fn reserve_pubsub_conn(&mut self) -> (u64, Arc<str>) {
        let index = self.index;
        let Some(ps) = self.pubsub.as_mut() else { return (0, "".into()) };
        ps.next_serial += 1;
        (ps.next_serial, format!("{:08x}.{index}.{}", ps.settings.nonce, ps.next_serial).into())
    }

    pub(crate) fn register_pubsub(
        &mut self,
        m: &ShardMetrics,
        now: Instant,
        grant: Option<Grant>,
        reserved: Option<(u64, Arc<str>)>,
        permit: Permit,
        settings: ConnSettings,
    ) -> ConnId {
        let index = self.index;
        if self.pubsub.is_none() {
            return self.register(m, now, Endpoint::Echo, permit, settings);
        }
        let (serial, label) = reserved.unwrap_or_else(|| self.reserve_pubsub_conn());
        let Some(ps) = self.pubsub.as_mut() else { return self.register(m, now, Endpoint::Echo, permit, settings) };
        let conn = ConnRef { shard: index, key: self.conns.vacant_key(), serial };
        let conn = match grant {
            Some(g) => Conn::new(conn, label, g.user, g.meta, g.rooms),
            None => Conn::new(conn, label.clone(), label, None, crate::pubsub::RoomPatterns::any()),
        };
        let gates = ps.settings.proxy.as_ref().map(crate::proxy::Proxy::gates).unwrap_or_default();
        let session = Session::new(conn, now, ps.settings.max_rooms, ps.settings.messages_per_sec).with_proxy(gates);
        let id = self.register(m, now, Endpoint::PubSub(Box::new(session)), permit, settings);
        if let (Some(ps), Some(Endpoint::PubSub(session))) = (self.pubsub.as_mut(), self.conns.get_mut(id).map(|c| &mut c.endpoint)) {
            ps.core.connect(&session.conn);
            let handlers = ps.settings.handlers.clone();
            session.run(handlers.connect(), &ps.settings.metrics, &mut ps.commands);
            run_commands(ps, session);
        }
        self.drain_pubsub(m, now);
        id
    }

    /// A data message from `/pubsub` connection `id`.
    pub(crate) fn on_pubsub_message(&mut self, m: &ShardMetrics, now: Instant, id: ConnId, kind: DataKind, payload: &[u8]) {
        let (Some(ps), Some(Endpoint::PubSub(session))) = (self.pubsub.as_mut(), self.conns.get_mut(id).map(|c| &mut c.endpoint)) else { return };
        let handlers = ps.settings.handlers.clone();
        session.handle_message(now, kind, payload, &handlers, &ps.settings.metrics, &mut ps.commands);
        run_commands(ps, session);
        self.drain_pubsub(m, now);
    }

    /// An operator kicks `user` from `room` (on every instance); with `ban` it stays out.
    pub(crate) fn pubsub_kick(&mut self, m: &ShardMetrics, now: Instant, room: RoomId, user: Arc<str>, ban: bool) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.core.kick(room, user, ban);
        }
        self.drain_pubsub(m, now);
    }

    /// The app's backend answered `conn`'s pending message.
    pub(crate) fn on_proxy_answer(&mut self, m: &ShardMetrics, now: Instant, conn: ConnRef, answer: ProxyAnswer) {
        let Some(ps) = self.pubsub.as_mut() else { return };
        let Some(Endpoint::PubSub(session)) = self.conns.get_mut(conn.key).map(|c| &mut c.endpoint) else { return };
        if session.conn.conn_ref() != conn {
            return;
        }
        let handlers = ps.settings.handlers.clone();
        session.on_proxy_answer(now, answer, &handlers, &ps.settings.metrics, &mut ps.commands);
        run_commands(ps, session);
        self.drain_pubsub(m, now);
    }

    /// Asks the app's backend about `conn`'s message; the answer comes back through the shard's
    /// proxy inbox.
    fn call_proxy(&mut self, conn: ConnRef, call: ProxyCall) {
        let Some(ps) = self.pubsub.as_ref() else { return };
        let (Some(proxy), Some(session)) = (
            ps.settings.proxy.clone(),
            self.conns.get(conn.key).and_then(|c| match &c.endpoint {
                Endpoint::PubSub(s) if s.conn.conn_ref() == conn => Some(s),
                _ => None,
            }),
        ) else {
            return;
        };
        let back = ps.proxy_answers.clone();
        let (user, label) = (session.conn.user(), session.conn.id());
        match call {
            ProxyCall::Join { room } => proxy.join(crate::proxy::request::join(user, label, room.as_str()), move |reply| {
                let _ = back.send((conn, crate::proxy::join_answer(reply)));
            }),
            ProxyCall::Publish { room, event, data } => {
                proxy.publish(crate::proxy::request::publish(user, label, room.as_str(), &event, &data), move |reply| {
                    let _ = back.send((conn, crate::proxy::publish_answer(reply)));
                })
            }
        }
    }

    /// `/pubsub` connection `id` is going: the app's disconnect handler runs (it can still reach
    /// the connection's rooms), then it leaves every room.
    pub(super) fn depart_pubsub(&mut self, m: &ShardMetrics, now: Instant, id: ConnId) {
        let (Some(ps), Some(Endpoint::PubSub(session))) = (self.pubsub.as_mut(), self.conns.get_mut(id).map(|c| &mut c.endpoint)) else { return };
        let handlers = ps.settings.handlers.clone();
        session.run(handlers.disconnect(), &ps.settings.metrics, &mut ps.commands);
        run_commands(ps, session);
        let rooms = std::mem::take(&mut session.rooms);
        ps.core.depart(&session.conn, &rooms);
        self.drain_pubsub(m, now);
    }

    /// A `/pubsub` message from another shard.
    pub(crate) fn on_shard_message(&mut self, m: &ShardMetrics, now: Instant, message: ShardMessage) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.core.handle_message(message);
        }
        self.drain_pubsub(m, now);
    }

    /// What another instance sent this shard (the owner of its room or user).
    pub(crate) fn on_remote_pubsub(&mut self, m: &ShardMetrics, now: Instant, cast: Cast) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.core.remote(cast);
        }
        self.drain_pubsub(m, now);
    }

    /// A frame the bus assembled for local connection `key` (a cluster-wide presence reply).
    pub(crate) fn on_pubsub_reply(&mut self, m: &ShardMetrics, now: Instant, key: usize, serial: u64, frame: Bytes) {
        self.send_pubsub(m, now, ConnRef { shard: self.index, key, serial }, frame);
    }

    /// The server API: `frame` to every member of `room`.
    pub(crate) fn api_publish(&mut self, m: &ShardMetrics, now: Instant, room: RoomId, frame: Bytes) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.core.publish(room, frame, None);
        }
        self.drain_pubsub(m, now);
    }

    /// The server API: `frame` to every connection of `user`.
    pub(crate) fn api_send(&mut self, m: &ShardMetrics, now: Instant, user: Arc<str>, frame: Bytes) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.core.send_to_user(user, frame);
        }
        self.drain_pubsub(m, now);
    }

    /// The server API: closes every connection of `user`.
    pub(crate) fn api_disconnect(&mut self, m: &ShardMetrics, now: Instant, user: Arc<str>) {
        if let Some(ps) = self.pubsub.as_mut() {
            ps.core.disconnect_user(user, crate::pubsub::CLOSE_DISCONNECTED);
        }
        self.drain_pubsub(m, now);
    }

    /// `room`'s members on this instance, as presence objects (this shard must own the room).
    pub(crate) fn pubsub_members(&self, room: &RoomId) -> Vec<String> {
        self.pubsub.as_ref().map(|ps| ps.core.local_members(room)).unwrap_or_default()
    }

    /// Carries out what the shard's `/pubsub` asks for.
    fn drain_pubsub(&mut self, m: &ShardMetrics, now: Instant) {
        loop {
            let Some(ps) = self.pubsub.as_mut() else { return };
            let Some(output) = ps.core.poll_output() else { return };
            match output {
                Output::ToShard(peer, message) => ps.mesh.push(peer, ShardMsg::PubSub(message)),
                Output::Send(conn, frame) => self.send_pubsub(m, now, conn, frame),
                Output::Joined(conn, room, frame) => {
                    if self.pubsub_session(conn).is_some_and(|s| s.rooms.contains(&room)) {
                        if let Some(ps) = self.pubsub.as_mut() {
                            ps.core.add_local(&room, conn);
                        }
                    }
                    self.send_pubsub(m, now, conn, frame);
                }
                Output::Close(conn, code) => {
                    if self.pubsub_session(conn).is_some() {
                        if let Some(c) = self.conns.get_mut(conn.key) {
                            c.begin_close(m, now, code, "disconnected by the server", false);
                        }
                        self.leave_game(m, now, conn.key);
                    }
                }
                Output::Rooms(delta) => m.rooms.add(delta),
                Output::Cast(cast) => ps.adapter.cast(&cast),
                Output::Subscribe(topic) => ps.adapter.subscribe(topic),
                Output::Unsubscribe(topic) => ps.adapter.unsubscribe(topic),
                Output::PresenceSet { room, conn, member } => ps.adapter.presence_set(room, conn, member),
                Output::PresenceRemove { room, conn } => ps.adapter.presence_remove(room, conn),
                Output::PresenceQuery { room, conn, id } => self.query_presence(room, conn, id),
                Output::Proxy(conn, call) => self.call_proxy(conn, call),
                Output::JoinRefused(conn, room, frame) => {
                    if let Some(session) = self.pubsub_session(conn) {
                        session.rooms.retain(|r| *r != room);
                    }
                    self.send_pubsub(m, now, conn, frame);
                }
                Output::Webhook(kind, room, seq, data) => {
                    if let Some(hooks) = &self.webhooks {
                        hooks.emit(kind, room.as_str(), seq, serde_json::from_str(&data).unwrap_or_default());
                    }
                }
            }
        }
    }

    /// Answers `conn` with `room`'s members on every instance, through the adapter (this
    /// instance's alone if the adapter cannot ask).
    fn query_presence(&mut self, room: RoomId, conn: ConnRef, id: Option<MessageId>) {
        let Some(adapter) = self.pubsub.as_ref().map(|ps| ps.adapter.clone()) else { return };
        let (answer, for_reply) = (adapter.clone(), room.clone());
        let reply: PresenceReply = Box::new(move |members| {
            answer.deliver(conn.shard, conn.key, conn.serial, presence_reply(&for_reply, id.as_ref(), members));
        });
        if let Err(reply) = adapter.presence(room.clone(), reply) {
            reply(self.pubsub_members(&room));
        }
    }

    /// The session of local `/pubsub` connection `conn`, if it is still the one that was meant.
    fn pubsub_session(&mut self, conn: ConnRef) -> Option<&mut Session> {
        match &mut self.conns.get_mut(conn.key)?.endpoint {
            Endpoint::PubSub(session) if session.conn.conn_ref() == conn => Some(session),
            _ => None,
        }
    }

    fn send_pubsub(&mut self, m: &ShardMetrics, now: Instant, conn: ConnRef, frame: Bytes) {
        if self.pubsub_session(conn).is_none() {
            return;
        }
        if let Some(c) = self.conns.get_mut(conn.key) {
            if !c.is_closing() && c.queue(m, now, frame, &self.limits) {
                m.messages_out.add(1);
            }
        }
    }
}

/// Hands what a handler asked for to the shard's `/pubsub` (the session keeps its metadata).
fn run_commands(ps: &mut PubSub, session: &mut Session) {
    for command in ps.commands.drain(..) {
        match command {
            Command::SetMeta { meta } => session.conn.set_meta(meta),
            command => ps.core.handle_command(&session.conn, command),
        }
    }
}
