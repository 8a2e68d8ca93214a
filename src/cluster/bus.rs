//! Redis pub/sub for `/relay` rooms across instances, and the instance heartbeat.
//!
//! Two connections, one purpose each, on their own threads:
//! - the **publisher** takes what shards hand it over a bounded queue and sends it with one
//!   pipelined `PUBLISH` per batch, one publication per relayed message (never one per member);
//!   it also keeps this instance's heartbeat key (`{prefix}instance:{id}`, refreshed every
//!   second, expiring after five) and lists the instances it sees. Messages handed to it while
//!   Redis is unreachable are dropped and counted: other instances miss them (documented).
//! - the **subscriber** is subscribed to `{prefix}relay:{room}` for exactly the rooms with a
//!   local member (shards tell it as their first member joins and their last leaves), skips this
//!   instance's own publications, and hands each message to the room's owner shard, which fans
//!   it out to its local members with the usual encode-once path. After a reconnection it
//!   subscribes to everything again.
//!
//! The subscriber is also always subscribed to this instance's inbox (`{prefix}inst:{id}`),
//! where other instances send [`Forward`] messages for game rooms one owns and a client reached
//! through the other; they go to the room's shard (owner side) or to the shard in the link id
//! (edge side).
//!
//! One publisher connection per instance keeps each sender's messages in order everywhere.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use ahash::AHashMap;

use super::envelope;
use super::forward::{self, Forward};
use super::pubsub::{self as ps, Adapter, Cast, PresenceReply, Topic};
use super::subscriptions::SubscriptionChange;
use crate::metrics::write_unlabelled;
use crate::rooms::RoomId;
use crate::store::instance_key;
use crate::ws::DataKind;

/// How the bus connects.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Key and channel prefix.
    pub prefix: String,
    /// This instance's id.
    pub instance_id: String,
    /// Shards of this instance (incoming messages go to the room's owner shard).
    pub shards: usize,
    /// Messages that may wait for the publisher.
    pub queue: usize,
}

/// A message from another instance, for one shard.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A message for a local relay room.
    Relay {
        /// The room.
        room: RoomId,
        /// Text or binary.
        kind: DataKind,
        /// The message.
        payload: Vec<u8>,
    },
    /// A game-room message from the instance `from`.
    Forward {
        /// The sending instance.
        from: String,
        /// The message.
        message: Forward,
    },
    /// A `/pubsub` publication of another instance, for the owner of its room or user.
    PubSub(Cast),
    /// A frame for `/pubsub` connection `key` (serial `serial`) of the receiving shard (a
    /// presence reply assembled by the bus).
    PubSubReply {
        /// The connection's key on the shard.
        key: usize,
        /// Its serial.
        serial: u64,
        /// The encoded frame.
        frame: bytes::Bytes,
    },
}

/// What the publisher thread is handed.
enum Outbound {
    /// One `PUBLISH`.
    Publish(String, Vec<u8>),
    /// Connection `conn` of this instance is in `room` as `member` (JSON).
    PresenceSet { room: RoomId, conn: Arc<str>, member: String },
    /// It left.
    PresenceRemove { room: RoomId, conn: Arc<str> },
    /// `room`'s members on every live instance.
    PresenceQuery { room: RoomId, reply: PresenceReply },
}

#[derive(Default)]
struct Stats {
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
    published: AtomicU64,
    publish_dropped: AtomicU64,
    received: AtomicU64,
    received_dropped: AtomicU64,
    forwarded: AtomicU64,
    forward_dropped: AtomicU64,
    forward_received: AtomicU64,
    pubsub_published: AtomicU64,
    pubsub_publish_dropped: AtomicU64,
    pubsub_received: AtomicU64,
    pubsub_received_dropped: AtomicU64,
    instances: Mutex<Vec<String>>,
}

/// A shard's handle on the bus; cheap to clone.
#[derive(Clone)]
pub struct BusHandle {
    publish: SyncSender<Outbound>,
    control: Sender<SubscriptionChange>,
    stats: Arc<Stats>,
    instance: Arc<str>,
    prefix: Arc<str>,
    to_shards: Arc<Vec<flume::Sender<Incoming>>>,
}

fn channel(prefix: &str, room: &str) -> String {
    format!("{prefix}relay:{room}")
}

/// The inbox channel of instance `id`.
fn inbox(prefix: &str, id: &str) -> String {
    format!("{prefix}inst:{id}")
}

const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
const HEARTBEAT_TTL_MS: u64 = 5_000;
const LIST_EVERY: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the subscriber blocks on a read before it looks at subscription changes.
const SUBSCRIBER_POLL: Duration = Duration::from_millis(20);
/// How long an instance's `/pubsub` presence outlives its last refresh.
const PRESENCE_TTL_MS: u64 = 15_000;
/// How often the publisher refreshes that TTL.
const PRESENCE_REFRESH: Duration = Duration::from_secs(5);

/// Starts both threads; returns the handle and one receiver of incoming messages per shard.
pub fn start(config: BusConfig) -> Result<(BusHandle, Vec<flume::Receiver<Incoming>>), String> {
    let client = redis::Client::open(config.url.as_str()).map_err(|e| format!("--redis {}: {e}", config.url))?;
    let (publish, publish_rx) = mpsc::sync_channel(config.queue.max(1));
    let (control, control_rx) = mpsc::channel();
    let stats = Arc::new(Stats::default());
    let (to_shards, from_bus): (Vec<_>, Vec<_>) = (0..config.shards.max(1)).map(|_| flume::bounded(config.queue.max(1))).unzip();
    let to_shards = Arc::new(to_shards);
    let handle = BusHandle {
        publish,
        control,
        stats: stats.clone(),
        instance: config.instance_id.clone().into(),
        prefix: config.prefix.clone().into(),
        to_shards: to_shards.clone(),
    };
    let publisher = Publisher { client: client.clone(), config: config.clone(), stats: stats.clone(), presence: AHashMap::new() };
    std::thread::Builder::new().name("redis-pub".into()).spawn(move || publisher.run(publish_rx)).map_err(|e| e.to_string())?;
    let subscriber = Subscriber { client, config, stats, to_shards };
    std::thread::Builder::new().name("redis-sub".into()).spawn(move || subscriber.run(control_rx)).map_err(|e| e.to_string())?;
    Ok((handle, from_bus))
}

impl BusHandle {
    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Publishes one message of `room` to the other instances (dropped and counted if the
    /// queue is full).
    pub fn publish(&self, room: &RoomId, kind: DataKind, payload: &[u8]) {
        let message = envelope::encode(&self.instance, kind, payload);
        match self.publish.try_send(Outbound::Publish(channel(&self.prefix, room.as_str()), message)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.publish_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Sends a game-room message to instance `to` (dropped and counted if the queue is full;
    /// `false` then).
    pub fn forward(&self, to: &str, message: &Forward) -> bool {
        let bytes = forward::encode(&self.instance, message);
        match self.publish.try_send(Outbound::Publish(inbox(&self.prefix, to), bytes)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.forward_dropped.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Whether instance `id` was live at the last look (the list refreshes every two seconds;
    /// while it is unknown, every instance counts as live).
    pub fn is_live(&self, id: &str) -> bool {
        self.stats.instances.lock().map_or(true, |list| list.is_empty() || list.iter().any(|i| i == id))
    }

    /// A room gained its first or lost its last local member.
    pub fn change(&self, change: SubscriptionChange) {
        let _ = self.control.send(change);
    }

    /// Whether both connections work.
    pub fn is_up(&self) -> bool {
        self.stats.publisher_up.load(Relaxed) && self.stats.subscriber_up.load(Relaxed)
    }

    /// The instances whose heartbeat key is live, this one included.
    pub fn instances(&self) -> Vec<String> {
        self.stats.instances.lock().map(|list| list.clone()).unwrap_or_default()
    }

    /// Appends the bus's Prometheus metrics to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        let s = &self.stats;
        write_unlabelled(out, "gauge", &[("partyflow_cluster_up", "Whether both Redis pub/sub connections work", u64::from(self.is_up()))]);
        let counters = [
            ("partyflow_relay_published_total", "Relay messages published to other instances", s.published.load(Relaxed)),
            ("partyflow_relay_publish_dropped_total", "Relay messages not published (queue full or Redis unreachable)", s.publish_dropped.load(Relaxed)),
            ("partyflow_relay_received_total", "Relay messages received from other instances", s.received.load(Relaxed)),
            ("partyflow_relay_received_dropped_total", "Relay messages from other instances dropped (shard queue full)", s.received_dropped.load(Relaxed)),
            ("partyflow_forward_sent_total", "Game-room messages sent to another instance (edge and owner)", s.forwarded.load(Relaxed)),
            (
                "partyflow_forward_dropped_total",
                "Game-room messages for another instance dropped (queue full or Redis unreachable)",
                s.forward_dropped.load(Relaxed),
            ),
            ("partyflow_forward_received_total", "Game-room messages received from another instance", s.forward_received.load(Relaxed)),
            ("partyflow_pubsub_published_total", "/pubsub publications, directs and disconnects sent to other instances", s.pubsub_published.load(Relaxed)),
            (
                "partyflow_pubsub_publish_dropped_total",
                "/pubsub messages and presence changes not sent to Redis (queue full or Redis unreachable)",
                s.pubsub_publish_dropped.load(Relaxed),
            ),
            ("partyflow_pubsub_received_total", "/pubsub messages received from other instances", s.pubsub_received.load(Relaxed)),
            (
                "partyflow_pubsub_received_dropped_total",
                "/pubsub messages from other instances dropped (shard queue full)",
                s.pubsub_received_dropped.load(Relaxed),
            ),
        ];
        write_unlabelled(out, "counter", &counters);
    }
}

/// The Redis adapter of `/pubsub`.
impl Adapter for BusHandle {
    fn is_shared(&self) -> bool {
        true
    }

    /// One `PUBLISH` (dropped and counted if the queue is full).
    fn cast(&self, cast: &Cast) {
        let (channel, payload) = ps::encode(&self.prefix, &self.instance, cast);
        if self.publish.try_send(Outbound::Publish(channel, payload)).is_err() {
            self.stats.pubsub_publish_dropped.fetch_add(1, Relaxed);
        }
    }

    fn subscribe(&self, topic: Topic) {
        self.change(SubscriptionChange::SubscribePubSub(topic));
    }

    fn unsubscribe(&self, topic: Topic) {
        self.change(SubscriptionChange::UnsubscribePubSub(topic));
    }

    fn presence_set(&self, room: RoomId, conn: Arc<str>, member: String) {
        if self.publish.try_send(Outbound::PresenceSet { room, conn, member }).is_err() {
            self.stats.pubsub_publish_dropped.fetch_add(1, Relaxed);
        }
    }

    fn presence_remove(&self, room: RoomId, conn: Arc<str>) {
        if self.publish.try_send(Outbound::PresenceRemove { room, conn }).is_err() {
            self.stats.pubsub_publish_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Answered from the publisher thread (this instance's members from its memory when Redis is
    /// unreachable).
    fn presence(&self, room: RoomId, reply: PresenceReply) -> Result<(), PresenceReply> {
        match self.publish.try_send(Outbound::PresenceQuery { room, reply }) {
            Err(TrySendError::Full(Outbound::PresenceQuery { reply, .. }) | TrySendError::Disconnected(Outbound::PresenceQuery { reply, .. })) => Err(reply),
            _ => Ok(()),
        }
    }

    fn deliver(&self, shard: usize, key: usize, serial: u64, frame: bytes::Bytes) -> bool {
        self.to_shards.get(shard).is_some_and(|tx| tx.try_send(Incoming::PubSubReply { key, serial, frame }).is_ok())
    }
}

fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(IO_TIMEOUT)?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    Ok(conn)
}

struct Publisher {
    client: redis::Client,
    config: BusConfig,
    stats: Arc<Stats>,
    /// This instance's `/pubsub` presence: room → connection id → member JSON. Written to Redis
    /// as it changes, rewritten whole after a reconnection (changes made while Redis was
    /// unreachable are not lost), and this instance's part of every presence answer.
    presence: AHashMap<RoomId, AHashMap<Arc<str>, String>>,
}

/// Commands and queries of one batch.
#[derive(Default)]
struct Batch {
    publishes: Vec<(String, Vec<u8>)>,
    presence_changed: Vec<(RoomId, Arc<str>, bool)>,
    queries: Vec<(RoomId, PresenceReply)>,
}

impl Publisher {
    /// Counts a batch that was published (`sent`) or lost: relay messages, game-room messages
    /// for other instances and `/pubsub` messages each in their own counters.
    fn count(&self, batch: &[(String, Vec<u8>)], sent: bool) {
        let inbox_prefix = inbox(&self.config.prefix, "");
        let pubsub_prefix = format!("{}ps:", self.config.prefix);
        let forwards = batch.iter().filter(|(channel, _)| channel.starts_with(&inbox_prefix)).count() as u64;
        let pubsubs = batch.iter().filter(|(channel, _)| channel.starts_with(&pubsub_prefix)).count() as u64;
        let relays = (batch.len() as u64).saturating_sub(forwards).saturating_sub(pubsubs);
        let s = &self.stats;
        let (relay, forward, pubsub) =
            if sent { (&s.published, &s.forwarded, &s.pubsub_published) } else { (&s.publish_dropped, &s.forward_dropped, &s.pubsub_publish_dropped) };
        relay.fetch_add(relays, Relaxed);
        forward.fetch_add(forwards, Relaxed);
        pubsub.fetch_add(pubsubs, Relaxed);
    }

    /// Takes `message` into the batch; presence changes update the local copy at once.
    fn take(&mut self, batch: &mut Batch, message: Outbound) {
        match message {
            Outbound::Publish(channel, payload) => batch.publishes.push((channel, payload)),
            Outbound::PresenceSet { room, conn, member } => {
                self.presence.entry(room.clone()).or_default().insert(conn.clone(), member);
                batch.presence_changed.push((room, conn, true));
            }
            Outbound::PresenceRemove { room, conn } => {
                if let Some(members) = self.presence.get_mut(&room) {
                    members.remove(&conn);
                    if members.is_empty() {
                        self.presence.remove(&room);
                    }
                }
                batch.presence_changed.push((room, conn, false));
            }
            Outbound::PresenceQuery { room, reply } => batch.queries.push((room, reply)),
        }
    }

    /// The local members of `room`.
    fn local_members(&self, room: &RoomId) -> Vec<String> {
        self.presence.get(room).map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    fn run(mut self, rx: Receiver<Outbound>) {
        let mut conn: Option<redis::Connection> = None;
        let mut backoff = MIN_BACKOFF;
        let mut next_attempt = Instant::now();
        let mut next_heartbeat = Instant::now();
        let mut next_list = Instant::now();
        let mut next_presence_refresh = Instant::now() + PRESENCE_REFRESH;
        let mut resync_presence = false;
        let mut batch = Batch::default();
        loop {
            let wait = next_heartbeat.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            match rx.recv_timeout(wait) {
                Ok(message) => self.take(&mut batch, message),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.publishes.len() < 4096 {
                match rx.try_recv() {
                    Ok(message) => self.take(&mut batch, message),
                    Err(_) => break,
                }
            }
            if conn.is_none() && Instant::now() >= next_attempt {
                match connect(&self.client) {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = MIN_BACKOFF;
                        resync_presence = true;
                        if !self.stats.publisher_up.swap(true, Relaxed) {
                            info!("relay publisher connected to redis");
                        }
                    }
                    Err(e) => {
                        if self.stats.publisher_up.swap(false, Relaxed) {
                            warn!(error = %e, "relay publisher cannot reach redis; cross-instance messages are dropped until it can");
                        }
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            let Some(c) = conn.as_mut() else {
                self.count(&batch.publishes, false);
                // Without Redis, a presence query sees this instance only.
                for (room, reply) in batch.queries.drain(..) {
                    reply(self.local_members(&room));
                }
                batch = Batch::default();
                continue;
            };
            let now = Instant::now();
            let mut pipe = redis::pipe();
            for (channel, message) in &batch.publishes {
                pipe.cmd("PUBLISH").arg(channel).arg(message.as_slice()).ignore();
            }
            let prefix = &self.config.prefix;
            let me = &self.config.instance_id;
            if resync_presence || now >= next_presence_refresh {
                next_presence_refresh = now + PRESENCE_REFRESH;
                for (room, members) in &self.presence {
                    let key = ps::presence_key(prefix, room, me);
                    if resync_presence {
                        pipe.cmd("DEL").arg(&key).ignore();
                        pipe.cmd("HSET").arg(&key).arg(members.iter().map(|(c, m)| (&**c, m.as_str())).collect::<Vec<_>>()).ignore();
                    }
                    pipe.cmd("PEXPIRE").arg(&key).arg(PRESENCE_TTL_MS).ignore();
                }
            } else {
                for (room, conn, joined) in &batch.presence_changed {
                    let key = ps::presence_key(prefix, room, me);
                    match self.presence.get(room).and_then(|m| m.get(conn)).filter(|_| *joined) {
                        Some(member) => pipe.cmd("HSET").arg(&key).arg(&**conn).arg(member).ignore().cmd("PEXPIRE").arg(&key).arg(PRESENCE_TTL_MS).ignore(),
                        None => pipe.cmd("HDEL").arg(&key).arg(&**conn).ignore(),
                    };
                }
            }
            if now >= next_heartbeat {
                next_heartbeat = now + HEARTBEAT_EVERY;
                let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                pipe.cmd("SET").arg(instance_key(prefix, me)).arg(unix_ms).arg("PX").arg(HEARTBEAT_TTL_MS).ignore();
            }
            // A batch of presence queries alone has nothing to pipeline.
            let piped = if pipe.is_empty() { Ok(()) } else { pipe.query::<()>(c) };
            let result = piped.and_then(|()| {
                if now >= next_list {
                    next_list = now + LIST_EVERY;
                    let pattern = instance_key(prefix, "*");
                    let keys: Vec<String> =
                        redis::cmd("SCAN").cursor_arg(0).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000).clone().iter(c)?.collect::<Result<_, _>>()?;
                    let mut ids: Vec<String> = keys.into_iter().filter_map(|k| k.strip_prefix(&pattern[..pattern.len() - 1]).map(str::to_string)).collect();
                    ids.sort();
                    if let Ok(mut list) = self.stats.instances.lock() {
                        *list = ids;
                    }
                }
                Ok(())
            });
            let result = result.and_then(|()| self.answer_queries(c, &mut batch.queries));
            if result.is_ok() {
                resync_presence = false;
            }
            self.count(&batch.publishes, result.is_ok());
            for (room, reply) in batch.queries.drain(..) {
                reply(self.local_members(&room));
            }
            batch = Batch::default();
            match result {
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %e, "relay publish failed; reconnecting");
                    self.stats.publisher_up.store(false, Relaxed);
                    conn = None;
                    next_attempt = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Answers presence queries with this instance's members and the other live instances'
    /// (one `HGETALL` each, pipelined); what it cannot answer stays in `queries`.
    fn answer_queries(&self, c: &mut redis::Connection, queries: &mut Vec<(RoomId, PresenceReply)>) -> redis::RedisResult<()> {
        if queries.is_empty() {
            return Ok(());
        }
        let others: Vec<String> =
            self.stats.instances.lock().map(|l| l.iter().filter(|i| **i != self.config.instance_id).cloned().collect()).unwrap_or_default();
        let mut pipe = redis::pipe();
        for (room, _) in queries.iter() {
            for instance in &others {
                pipe.cmd("HVALS").arg(ps::presence_key(&self.config.prefix, room, instance));
            }
        }
        let mut remote: std::vec::IntoIter<Vec<String>> = pipe.query::<Vec<Vec<String>>>(c)?.into_iter();
        for (room, reply) in queries.drain(..) {
            let mut members = self.local_members(&room);
            for _ in &others {
                members.extend(remote.next().unwrap_or_default());
            }
            reply(members);
        }
        Ok(())
    }
}

struct Subscriber {
    client: redis::Client,
    config: BusConfig,
    stats: Arc<Stats>,
    to_shards: Arc<Vec<flume::Sender<Incoming>>>,
}

impl Subscriber {
    fn run(self, control: Receiver<SubscriptionChange>) {
        let mut wanted: BTreeSet<String> = BTreeSet::from([inbox(&self.config.prefix, &self.config.instance_id)]);
        let mut backoff = MIN_BACKOFF;
        loop {
            // Changes made while disconnected only update what is wanted.
            if !self.apply_changes(&control, &mut wanted, None) {
                return;
            }
            let mut conn = match connect(&self.client) {
                Ok(conn) => conn,
                Err(e) => {
                    if self.stats.subscriber_up.swap(false, Relaxed) {
                        warn!(error = %e, "relay subscriber cannot reach redis; retrying");
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            if let Err(e) = self.session(&mut conn, &control, &mut wanted) {
                self.stats.subscriber_up.store(false, Relaxed);
                match e {
                    SessionEnd::Closed => return,
                    SessionEnd::Redis(e) => warn!(error = %e, "relay subscription lost; resubscribing"),
                }
            }
        }
    }

    /// One connection's life: subscribe to what is wanted, then relay messages until an error.
    fn session(&self, conn: &mut redis::Connection, control: &Receiver<SubscriptionChange>, wanted: &mut BTreeSet<String>) -> Result<(), SessionEnd> {
        let mut pubsub = conn.as_pubsub();
        pubsub.set_read_timeout(Some(SUBSCRIBER_POLL)).map_err(SessionEnd::Redis)?;
        for channel in wanted.iter() {
            pubsub.subscribe(channel).map_err(SessionEnd::Redis)?;
        }
        if !self.stats.subscriber_up.swap(true, Relaxed) {
            info!(rooms = wanted.len() - 1, "relay subscriber connected to redis");
        }
        let my_inbox = inbox(&self.config.prefix, &self.config.instance_id);
        loop {
            if !self.apply_changes(control, wanted, Some(&mut pubsub)) {
                return Err(SessionEnd::Closed);
            }
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Err(SessionEnd::Redis(e)),
            };
            let channel = message.get_channel_name();
            if channel == my_inbox {
                let Some(envelope) = forward::decode(message.get_payload_bytes()) else { continue };
                self.stats.forward_received.fetch_add(1, Relaxed);
                // The owner's shard for the room; on the edge, the shard that made the id.
                let shard = envelope.message.room().map_or(forward::shard_of(envelope.message.id()), |room| room.owner_shard(self.to_shards.len()));
                let incoming = Incoming::Forward { from: envelope.from, message: envelope.message };
                if self.to_shards.get(shard).is_none_or(|tx| tx.try_send(incoming).is_err()) {
                    self.stats.forward_dropped.fetch_add(1, Relaxed);
                }
                continue;
            }
            if let Some(topic) = ps::topic_of(&self.config.prefix, channel) {
                self.pubsub_message(topic, channel, message.get_payload_bytes());
                continue;
            }
            let Some(room) = channel.strip_prefix(&format!("{}relay:", self.config.prefix)).and_then(RoomId::parse) else { continue };
            let Some(publication) = envelope::decode(message.get_payload_bytes()) else { continue };
            if publication.instance == self.config.instance_id {
                continue;
            }
            self.stats.received.fetch_add(1, Relaxed);
            let shard = room.owner_shard(self.to_shards.len());
            let incoming = Incoming::Relay { room, kind: publication.kind, payload: publication.payload.to_vec() };
            if self.to_shards.get(shard).is_none_or(|tx| tx.try_send(incoming).is_err()) {
                self.stats.received_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Hands another instance's `/pubsub` publication to the owner shard of its room or user.
    fn pubsub_message(&self, topic: Topic, channel: &str, payload: &[u8]) {
        let Some((from, cast)) = ps::decode(&self.config.prefix, channel, payload) else { return };
        if from == self.config.instance_id {
            return;
        }
        self.stats.pubsub_received.fetch_add(1, Relaxed);
        let shard = match &topic {
            Topic::Room(room) => room.owner_shard(self.to_shards.len()),
            Topic::User(user) => crate::rooms::owner_shard_of(user, self.to_shards.len()),
        };
        if self.to_shards.get(shard).is_none_or(|tx| tx.try_send(Incoming::PubSub(cast)).is_err()) {
            self.stats.pubsub_received_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Applies pending subscription changes to `wanted` (and to the live subscription). False
    /// once every shard has gone.
    fn apply_changes(&self, control: &Receiver<SubscriptionChange>, wanted: &mut BTreeSet<String>, mut pubsub: Option<&mut redis::PubSub<'_>>) -> bool {
        loop {
            let change = match control.try_recv() {
                Ok(change) => change,
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            };
            let result = match change {
                SubscriptionChange::Subscribe(room) => {
                    let ch = channel(&self.config.prefix, room.as_str());
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.subscribe(&ch));
                    wanted.insert(ch);
                    r
                }
                SubscriptionChange::Unsubscribe(room) => {
                    let ch = channel(&self.config.prefix, room.as_str());
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.unsubscribe(&ch));
                    wanted.remove(&ch);
                    r
                }
                SubscriptionChange::SubscribePubSub(topic) => {
                    let ch = ps::channel(&self.config.prefix, &topic);
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.subscribe(&ch));
                    wanted.insert(ch);
                    r
                }
                SubscriptionChange::UnsubscribePubSub(topic) => {
                    let ch = ps::channel(&self.config.prefix, &topic);
                    let r = pubsub.as_mut().map_or(Ok(()), |p| p.unsubscribe(&ch));
                    wanted.remove(&ch);
                    r
                }
            };
            if result.is_err() {
                // The session notices the broken connection on its next read and resubscribes.
                return true;
            }
        }
    }
}

enum SessionEnd {
    Closed,
    Redis(redis::RedisError),
}
