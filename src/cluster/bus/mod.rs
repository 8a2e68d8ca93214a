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
//!
//! This file is the shards' side (the handle, the `/pubsub` adapter, start-up); each thread is
//! its own file ([`publisher`], [`subscriber`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ahash::AHashMap;

mod publisher;
mod subscriber;

use publisher::Publisher;
use subscriber::Subscriber;

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
