//! The one place that talks to Redis: a thread of its own, fed by a bounded queue.
//!
//! Shards hand it snapshots with [`StoreHandle::try_put`] and never wait: a full queue is an
//! error they count and retry with their next flush. The thread drains everything queued,
//! keeps only the newest snapshot per room (coalescing), and writes the batch in one pipeline
//! (`SET key value PX ttl` / `DEL key`). When Redis is unreachable it keeps the newest snapshot
//! of each room (one per room: bounded by the rooms that exist), reconnects with capped
//! exponential backoff, and, once back, bumps the resync epoch so that every shard re-sends all
//! its live rooms: a Redis that restarted empty gets everything that is in memory again.
//! Loads for crash recovery go through the same thread and answer on a per-request channel.
//!
//! Writes are fenced by the room's lease: every write and delete is a small Lua script that
//! only acts while this instance holds the room's lease (or nobody does, after Redis lost its
//! keys). Taking and renewing leases has its own connection and thread ([`super::leases`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::answer::{Answer, Reply, StoreError};
use super::leases::{evalsha, LeaseCommand};
use super::snapshot::RoomSnapshot;
use crate::metrics::write_unlabelled;

/// How the store connects and writes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key.
    pub prefix: String,
    /// TTL of a room's key, refreshed on every write.
    pub ttl: Duration,
    /// Snapshots and deletes that may wait for the Redis thread.
    pub queue: usize,
    /// This instance's id: the value of the lease keys it holds.
    pub instance: String,
    /// TTL of a room's lease.
    pub lease_ttl: Duration,
    /// Counts the webhook events written with the snapshots (shared with the webhook metrics).
    pub webhook_events_written: Arc<AtomicU64>,
}

/// What `/health` says about the store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreStatus {
    /// Whether the last attempt to talk to Redis worked.
    pub up: bool,
    /// Commands waiting for the Redis thread.
    pub queue_depth: u64,
    /// Age of the oldest change in the last batch written, ms.
    pub lag_ms: u64,
}

enum Command {
    Put {
        room: String,
        value: String,
        changed_at: Instant,
        events: Vec<String>,
    },
    Delete {
        room: String,
        events: Vec<String>,
    },
    /// `room`'s snapshot at `key`: its pending write, if any, answers instead of Redis.
    Load {
        room: String,
        key: String,
        reply: Reply<Option<String>>,
    },
}

/// Writes a snapshot unless another instance holds the lease: 1 written, 0 fenced. The room's
/// webhook events since its last write (ARGV[5..]) go into this instance's webhook stream
/// (KEYS[3], listed in KEYS[4]) in the same step: a room's state and the events it emitted are
/// kept together or not at all.
const PUT: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[2] then return 0 end
if not holder then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4]) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
for i = 5, #ARGV do redis.call('XADD', KEYS[3], '*', 'e', ARGV[i]) end
if #ARGV >= 5 then redis.call('SADD', KEYS[4], ARGV[2]) end
return 1";

/// Deletes a closed room's snapshot and lease unless another instance holds the lease, writing
/// its last webhook events (ARGV[2..]) as [`PUT`] does.
const DELETE: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
for i = 2, #ARGV do redis.call('XADD', KEYS[3], '*', 'e', ARGV[i]) end
if #ARGV >= 2 then redis.call('SADD', KEYS[4], ARGV[1]) end
return 1";

/// What is waiting for Redis for one room: its newest snapshot (or its deletion) and every
/// webhook event it emitted since its last write, in order.
enum Pending {
    Put { value: String, changed_at: Instant, events: Vec<String> },
    Delete { events: Vec<String> },
}

impl Pending {
    fn take_events(&mut self) -> Vec<String> {
        match self {
            Pending::Put { events, .. } | Pending::Delete { events } => std::mem::take(events),
        }
    }
}

/// Upper bounds (ms) of the persistence-lag histogram buckets.
const LAG_BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

#[derive(Default)]
struct Stats {
    up: AtomicBool,
    queued: AtomicU64,
    written: AtomicU64,
    deleted: AtomicU64,
    failures: AtomicU64,
    coalesced: AtomicU64,
    queue_full: AtomicU64,
    fenced: AtomicU64,
    lag_ms: AtomicU64,
    resync_epoch: AtomicU64,
    write_us_sum: AtomicU64,
    write_batches: AtomicU64,
    lag_buckets: [AtomicU64; LAG_BUCKETS_MS.len() + 1],
    lag_ms_sum: AtomicU64,
}

/// A shard's (or the API's) handle on the store; cheap to clone.
#[derive(Clone)]
pub struct StoreHandle {
    tx: SyncSender<Command>,
    leases: SyncSender<LeaseCommand>,
    stats: Arc<Stats>,
    prefix: Arc<str>,
    instance: Arc<str>,
}

/// Starts the Redis thread.
pub struct RedisStore;

impl RedisStore {
    /// Checks the URL and starts the thread; Redis itself may be down (the thread keeps trying).
    pub fn start(config: StoreConfig) -> Result<StoreHandle, StoreError> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| StoreError::Url(format!("{}: {e}", config.url)))?;
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let leases = super::leases::start(client.clone(), config.instance.clone(), config.lease_ttl).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let stats = Arc::new(Stats::default());
        let handle = StoreHandle { tx, leases, stats: stats.clone(), prefix: config.prefix.clone().into(), instance: config.instance.clone().into() };
        std::thread::Builder::new()
            .name("redis".into())
            .spawn(move || Writer::new(client, config, stats).run(rx))
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(handle)
    }
}

impl StoreHandle {
    /// This instance's id (the value of its leases).
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// Queues the newest snapshot of `room_id` (changed first at `changed_at`) with the webhook
    /// events (JSON) it emitted since its last write.
    pub fn try_put(&self, room_id: &str, value: String, changed_at: Instant, events: Vec<String>) -> Result<(), StoreError> {
        self.send(Command::Put { room: room_id.to_string(), value, changed_at, events })
    }

    /// Queues the deletion of `room_id`'s key, with its last webhook events.
    pub fn try_delete(&self, room_id: &str, events: Vec<String>) -> Result<(), StoreError> {
        self.send(Command::Delete { room: room_id.to_string(), events })
    }

    /// Asks for `room_id`'s snapshot; the answer arrives on the returned channel.
    pub fn load(&self, room_id: &str) -> Answer<Option<String>> {
        self.ask(|reply| Command::Load { room: room_id.to_string(), key: RoomSnapshot::key(&self.prefix, room_id), reply })
    }

    /// Asks whether instance `id`'s heartbeat key is live (`Some` while it is).
    pub fn instance_heartbeat(&self, id: &str) -> Answer<Option<String>> {
        self.ask_lease(|reply| LeaseCommand::Get { key: super::instance_key(&self.prefix, id), reply })
    }

    /// Asks which instance holds `room_id`'s lease (`None`: nobody).
    pub fn lease_holder(&self, room_id: &str) -> Answer<Option<String>> {
        self.ask_lease(|reply| LeaseCommand::Get { key: super::lease_key(&self.prefix, room_id), reply })
    }

    /// Takes `room_id`'s lease for this instance if it is free; answers the holder (this
    /// instance's id when taken or already held; `None` only if Redis lost the key meanwhile).
    pub fn acquire_lease(&self, room_id: &str) -> Answer<Option<String>> {
        self.ask_lease(|reply| LeaseCommand::Acquire { key: super::lease_key(&self.prefix, room_id), reply })
    }

    /// Renews the leases of `rooms`; answers, per room, whether this instance still holds it.
    pub fn renew_leases(&self, rooms: Vec<String>) -> Answer<Vec<bool>> {
        let keys = rooms.iter().map(|room| super::lease_key(&self.prefix, room)).collect();
        self.ask_lease(|reply| LeaseCommand::Renew { keys, reply })
    }

    fn ask_lease<T>(&self, command: impl FnOnce(Reply<T>) -> LeaseCommand) -> Answer<T> {
        let (reply, answer) = flume::bounded(1);
        let refused = match self.leases.try_send(command(reply.clone())) {
            Ok(()) => return answer,
            Err(TrySendError::Full(_)) => StoreError::Full,
            Err(TrySendError::Disconnected(_)) => StoreError::Unavailable("the lease thread stopped".into()),
        };
        let _ = reply.send(Err(refused));
        answer
    }

    fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Answer<T> {
        let (reply, answer) = flume::bounded(1);
        if let Err(e) = self.send(command(reply.clone())) {
            let _ = reply.send(Err(e));
        }
        answer
    }

    /// Bumped each time Redis comes back after a failure: live rooms must be written again.
    pub fn resync_epoch(&self) -> u64 {
        self.stats.resync_epoch.load(Relaxed)
    }

    /// Up or down, queue depth and lag.
    pub fn status(&self) -> StoreStatus {
        StoreStatus { up: self.stats.up.load(Relaxed), queue_depth: self.stats.queued.load(Relaxed), lag_ms: self.stats.lag_ms.load(Relaxed) }
    }

    /// Appends the store's Prometheus metrics to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        let s = &self.stats;
        let status = self.status();
        let gauges = [
            ("partyflow_redis_up", "Whether the last attempt to talk to Redis worked", u64::from(status.up)),
            ("partyflow_persist_queue_depth", "Snapshots and deletes waiting for the Redis thread", status.queue_depth),
        ];
        write_unlabelled(out, "gauge", &gauges);
        let counters = [
            ("partyflow_persist_writes_total", "Room snapshots written to Redis", s.written.load(Relaxed)),
            ("partyflow_persist_deletes_total", "Room keys deleted from Redis", s.deleted.load(Relaxed)),
            ("partyflow_persist_failures_total", "Redis batches that failed (retried)", s.failures.load(Relaxed)),
            ("partyflow_persist_coalesced_total", "Snapshots dropped because a newer one of the same room was queued", s.coalesced.load(Relaxed)),
            ("partyflow_persist_queue_full_total", "Snapshots the queue could not take (retried with the next flush)", s.queue_full.load(Relaxed)),
            ("partyflow_persist_fenced_total", "Writes refused because another instance holds the room's lease", s.fenced.load(Relaxed)),
        ];
        write_unlabelled(out, "counter", &counters);
        let name = "partyflow_persist_write_seconds";
        let _ = writeln!(out, "# HELP {name} Time of one pipelined Redis write batch\n# TYPE {name} summary");
        let _ = writeln!(out, "{name}_sum {}", s.write_us_sum.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {}", s.write_batches.load(Relaxed));
        let name = "partyflow_persist_lag_seconds";
        let _ = writeln!(out, "# HELP {name} From a room's change to its snapshot written\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in s.lag_buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = LAG_BUCKETS_MS.get(i).map_or_else(|| "+Inf".to_string(), |ms| format!("{}", *ms as f64 / 1000.0));
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum {}", s.lag_ms_sum.load(Relaxed) as f64 / 1000.0);
        let _ = writeln!(out, "{name}_count {cumulative}");
    }

    fn send(&self, command: Command) -> Result<(), StoreError> {
        // Counted before it can be received, so the thread's decrement never underflows.
        self.stats.queued.fetch_add(1, Relaxed);
        let sent = self.tx.try_send(command);
        if sent.is_err() {
            self.stats.queued.fetch_sub(1, Relaxed);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.stats.queue_full.fetch_add(1, Relaxed);
                Err(StoreError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(StoreError::Unavailable("the Redis thread stopped".into())),
        }
    }
}

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Socket timeouts: a stalled Redis fails the batch instead of stalling the thread for good.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// The SHA1 of the write scripts, as `SCRIPT LOAD` answered on this connection.
#[derive(Default)]
struct Scripts {
    put: String,
    delete: String,
}

impl Scripts {
    /// Loads both scripts, so pipelines can use `EVALSHA`.
    fn load(conn: &mut redis::Connection) -> redis::RedisResult<Self> {
        Ok(Scripts { put: load_script(conn, PUT)?, delete: load_script(conn, DELETE)? })
    }
}

/// `SCRIPT LOAD`: the script's SHA1 for `EVALSHA`.
pub(super) fn load_script(conn: &mut redis::Connection, source: &str) -> redis::RedisResult<String> {
    redis::cmd("SCRIPT").arg("LOAD").arg(source).query(conn)
}

struct Writer {
    client: redis::Client,
    config: StoreConfig,
    stats: Arc<Stats>,
    scripts: Scripts,
    conn: Option<redis::Connection>,
    pending: BTreeMap<String, Pending>,
    backoff: Duration,
    next_attempt: Instant,
    failed_since_up: bool,
}

impl Writer {
    fn new(client: redis::Client, config: StoreConfig, stats: Arc<Stats>) -> Self {
        Writer {
            client,
            config,
            stats,
            scripts: Scripts::default(),
            conn: None,
            pending: BTreeMap::new(),
            backoff: MIN_BACKOFF,
            next_attempt: Instant::now(),
            failed_since_up: false,
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        self.connect();
        loop {
            let wait = if self.pending.is_empty() {
                Duration::from_secs(1)
            } else {
                self.next_attempt.saturating_duration_since(Instant::now()).max(Duration::from_millis(10))
            };
            match rx.recv_timeout(wait) {
                Ok(command) => self.accept(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write();
                    return;
                }
            }
            // Everything already queued joins this batch.
            while let Ok(command) = rx.try_recv() {
                self.accept(command);
            }
            if self.conn.is_none() && Instant::now() >= self.next_attempt {
                self.connect();
            }
            self.write();
        }
    }

    fn accept(&mut self, command: Command) {
        self.stats.queued.fetch_sub(1, Relaxed);
        match command {
            Command::Put { room, value, changed_at, events } => {
                let earliest = match self.pending.get(&room) {
                    Some(Pending::Put { changed_at: earlier, .. }) => {
                        self.stats.coalesced.fetch_add(1, Relaxed);
                        (*earlier).min(changed_at)
                    }
                    _ => changed_at,
                };
                // A newer snapshot replaces the older one; the events of both are written.
                let mut all = self.pending.get_mut(&room).map(Pending::take_events).unwrap_or_default();
                all.extend(events);
                self.pending.insert(room, Pending::Put { value, changed_at: earliest, events: all });
            }
            Command::Delete { room, events } => {
                let mut all = self.pending.get_mut(&room).map(Pending::take_events).unwrap_or_default();
                all.extend(events);
                self.pending.insert(room, Pending::Delete { events: all });
            }
            Command::Load { room, key, reply } => {
                let answer = match self.pending.get(&room) {
                    Some(Pending::Put { value, .. }) => Ok(Some(value.clone())),
                    Some(Pending::Delete { .. }) => Ok(None),
                    None => self.query(&redis::cmd("GET").arg(key).clone()),
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Runs one command now (reconnecting first if needed).
    fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        if self.conn.is_none() {
            self.connect();
        }
        let conn = self.conn.as_mut().ok_or_else(|| StoreError::Unavailable("not connected".into()))?;
        match cmd.query::<T>(conn) {
            Ok(value) => Ok(value),
            Err(e) => {
                self.fail(&e);
                Err(StoreError::Unavailable(e.to_string()))
            }
        }
    }

    fn connect(&mut self) {
        let connected = self.client.get_connection_with_timeout(IO_TIMEOUT).and_then(|mut c| {
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            c.set_write_timeout(Some(IO_TIMEOUT))?;
            let scripts = Scripts::load(&mut c)?;
            Ok((c, scripts))
        });
        match connected {
            Ok((conn, scripts)) => {
                self.conn = Some(conn);
                self.scripts = scripts;
                self.backoff = MIN_BACKOFF;
                self.stats.up.store(true, Relaxed);
                if std::mem::take(&mut self.failed_since_up) {
                    // Redis may have restarted empty: every live room is written again.
                    self.stats.resync_epoch.fetch_add(1, Relaxed);
                    info!("redis is reachable again; rewriting every live room");
                }
            }
            Err(e) => {
                if self.stats.up.swap(false, Relaxed) || !self.failed_since_up {
                    warn!(error = %e, "redis is unreachable; games go on in memory until their leases run out; retrying");
                }
                self.failed_since_up = true;
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn fail(&mut self, e: &redis::RedisError) {
        self.stats.failures.fetch_add(1, Relaxed);
        if self.stats.up.swap(false, Relaxed) {
            warn!(error = %e, "redis write failed; keeping the newest snapshots and reconnecting");
        }
        self.conn = None;
        self.failed_since_up = true;
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn write(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else { return };
        let ttl_ms = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let lease_ttl_ms = u64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let (prefix, instance) = (&self.config.prefix, &self.config.instance);
        let mut pipe = redis::pipe();
        let (stream, streams) = (crate::webhooks::stream_key(prefix, instance), crate::webhooks::streams_key(prefix));
        let mut event_counts = Vec::with_capacity(self.pending.len());
        for (room, p) in &self.pending {
            let (key, lease) = (RoomSnapshot::key(prefix, room), super::lease_key(prefix, room));
            let keys = [key, lease, stream.clone(), streams.clone()];
            let call = match p {
                Pending::Put { value, events, .. } => {
                    event_counts.push(events.len() as u64);
                    evalsha(&self.scripts.put, &keys).arg(value).arg(instance).arg(ttl_ms).arg(lease_ttl_ms).arg(events).clone()
                }
                Pending::Delete { events } => {
                    event_counts.push(events.len() as u64);
                    evalsha(&self.scripts.delete, &keys).arg(instance).arg(events).clone()
                }
            };
            pipe.add_command(call);
        }
        let started = Instant::now();
        match pipe.query::<Vec<i64>>(conn) {
            Ok(done) => {
                let now = Instant::now();
                let s = &self.stats;
                s.fenced.fetch_add(done.iter().filter(|d| **d == 0).count() as u64, Relaxed);
                s.write_us_sum.fetch_add(now.duration_since(started).as_micros() as u64, Relaxed);
                s.write_batches.fetch_add(1, Relaxed);
                // A fenced room's events go with its state: only those written are counted.
                let written: u64 = event_counts.iter().zip(&done).filter(|(_, d)| **d == 1).map(|(n, _)| n).sum();
                self.config.webhook_events_written.fetch_add(written, Relaxed);
                let mut oldest = Duration::ZERO;
                for p in std::mem::take(&mut self.pending).into_values() {
                    match p {
                        Pending::Put { changed_at, .. } => {
                            let lag = now.saturating_duration_since(changed_at);
                            oldest = oldest.max(lag);
                            let lag_ms = lag.as_millis() as u64;
                            let bucket = LAG_BUCKETS_MS.iter().position(|b| lag_ms <= *b).unwrap_or(LAG_BUCKETS_MS.len());
                            if let Some(b) = s.lag_buckets.get(bucket) {
                                b.fetch_add(1, Relaxed);
                            }
                            s.lag_ms_sum.fetch_add(lag_ms, Relaxed);
                            s.written.fetch_add(1, Relaxed);
                        }
                        Pending::Delete { .. } => {
                            s.deleted.fetch_add(1, Relaxed);
                        }
                    }
                }
                s.lag_ms.store(oldest.as_millis() as u64, Relaxed);
            }
            Err(e) => self.fail(&e),
        }
    }
}
