//! Durable webhooks (`--redis`): every event goes into this instance's Redis Stream
//! (`{prefix}webhooks:{instance}`) as soon as a room emits it, is read back through the consumer
//! group `partyflow` into the [`super::Delivery`] state machine, and is acknowledged (`XACK`) and
//! removed (`XDEL`) only once the receiver answered 2xx (or the event aged out). Nothing is kept
//! only in memory: a process that dies leaves its unacknowledged events in Redis.
//!
//! - After a restart with the same `--instance-id`, the instance first reads its own pending
//!   entries (id `0`), then new ones (`>`).
//! - An instance whose heartbeat key is gone is dead: one live instance at a time (the holder of
//!   the stream's claim key, `SET NX PX`) takes its pending entries (`XAUTOCLAIM`) and its unread
//!   ones (`XREADGROUP >`), delivers them and, once the stream is empty, deletes it.
//!
//! One thread does all of this with its own connection; the shards only `try_send` to it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::sender::{Counters, Msg};
use super::{Event, StreamRef};
use crate::store::instance_key;

/// Where the durable streams live.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `redis://…`
    pub url: String,
    /// Key prefix (`--redis-prefix`).
    pub prefix: String,
}

const GROUP: &str = "partyflow";
const IO_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often dead instances' streams are looked for.
const CLAIM_EVERY: Duration = Duration::from_secs(1);
/// A claim on a dead instance's stream lasts this long unless renewed (every [`CLAIM_EVERY`]).
const CLAIM_TTL_MS: u64 = 10_000;
/// Longest idle wait of the thread (new entries written by this instance are read at once).
const IDLE: Duration = Duration::from_millis(50);

/// Deletes a dead instance's stream once it is empty, unless the instance came back meanwhile.
const DROP_IF_DONE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('XLEN', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2], KEYS[4])
  redis.call('SREM', KEYS[3], ARGV[1])
  return 1
end
return 0";

/// The stream of `instance`'s webhook events.
pub fn stream_key(prefix: &str, instance: &str) -> String {
    format!("{prefix}webhooks:{instance}")
}

/// The set of instances that have a webhook stream.
pub fn streams_key(prefix: &str) -> String {
    format!("{prefix}webhooks:streams")
}

/// The keys of one instance's stream.
struct Keys {
    stream: Arc<str>,
    heartbeat: String,
    claim: String,
}

impl Keys {
    fn of(prefix: &str, instance: &str) -> Keys {
        Keys {
            stream: format!("{prefix}webhooks:{instance}").into(),
            heartbeat: instance_key(prefix, instance),
            claim: format!("{prefix}webhooks:{instance}:claim"),
        }
    }
}

/// A dead instance's stream this instance has claimed.
struct Claimed {
    keys: Keys,
    /// Where `XAUTOCLAIM` goes on in its pending entries; `None` once all are taken (entries
    /// before the cursor are this instance's now, so they are never taken twice).
    cursor: Option<String>,
}

pub(super) struct Durable {
    client: redis::Client,
    conn: Option<redis::Connection>,
    prefix: String,
    me: String,
    own: Keys,
    streams_key: String,
    /// Most events handed to the delivery and not yet settled.
    capacity: usize,
    /// Events handed to the delivery and not yet settled (the delivery thread subtracts).
    handed: Arc<AtomicUsize>,
    unwritten: VecDeque<Event>,
    acks: Vec<StreamRef>,
    /// Read this instance's own pending entries first (after a restart).
    own_pending_first: bool,
    claimed: HashMap<String, Claimed>,
    groups: HashSet<Arc<str>>,
    next_claim: Instant,
    backoff: Duration,
    next_attempt: Instant,
    to_delivery: flume::Sender<Msg>,
    counters: Arc<Counters>,
}

impl Durable {
    pub(super) fn new(
        config: &StreamConfig,
        me: &str,
        capacity: usize,
        handed: Arc<AtomicUsize>,
        to_delivery: flume::Sender<Msg>,
        counters: Arc<Counters>,
    ) -> Result<Self, String> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| format!("--redis: {e}"))?;
        Ok(Durable {
            client,
            conn: None,
            prefix: config.prefix.clone(),
            me: me.to_string(),
            own: Keys::of(&config.prefix, me),
            streams_key: streams_key(&config.prefix),
            capacity: capacity.max(1),
            handed,
            unwritten: VecDeque::new(),
            acks: Vec::new(),
            own_pending_first: true,
            claimed: HashMap::new(),
            groups: HashSet::new(),
            next_claim: Instant::now(),
            backoff: MIN_BACKOFF,
            next_attempt: Instant::now(),
            to_delivery,
            counters,
        })
    }

    pub(super) fn run(mut self, rx: flume::Receiver<Msg>) {
        loop {
            let busy = self.conn.is_some() && (!self.unwritten.is_empty() || !self.acks.is_empty());
            let wait = if busy { Duration::ZERO } else { IDLE };
            match rx.recv_timeout(wait) {
                Ok(msg) => self.accept(msg),
                Err(flume::RecvTimeoutError::Timeout) => {}
                Err(flume::RecvTimeoutError::Disconnected) => {
                    // Shutting down: write what is left, once.
                    let _ = self.write();
                    return;
                }
            }
            while let Ok(msg) = rx.try_recv() {
                self.accept(msg);
            }
            if self.conn.is_none() {
                if Instant::now() < self.next_attempt {
                    continue;
                }
                self.connect();
            }
            let step = self.write().and_then(|()| self.read_own()).and_then(|()| self.claim_dead());
            if let Err(e) = step {
                self.fail(&e);
            }
        }
    }

    fn accept(&mut self, msg: Msg) {
        match msg {
            Msg::Event(event) => {
                if self.unwritten.len() >= self.capacity {
                    // Redis has been away for a while: the oldest unwritten event goes.
                    self.unwritten.pop_front();
                    self.counters.shed.fetch_add(1, Relaxed);
                }
                self.unwritten.push_back(event);
            }
            Msg::Settled(refs) => self.acks.extend(refs),
            Msg::Done(..) => {}
        }
    }

    fn connect(&mut self) {
        let connected = self.client.get_connection_with_timeout(IO_TIMEOUT).and_then(|c| {
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            c.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(c)
        });
        match connected {
            Ok(conn) => {
                self.conn = Some(conn);
                self.backoff = MIN_BACKOFF;
                self.groups.clear();
            }
            Err(e) => self.fail(&e),
        }
    }

    fn fail(&mut self, e: &redis::RedisError) {
        if self.conn.take().is_some() || self.backoff == MIN_BACKOFF {
            warn!(error = %e, "webhook stream: redis failed; events wait in memory and are written when it is back");
        }
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn conn(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        self.conn.as_mut().ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "not connected")))
    }

    /// Makes sure `stream` has the consumer group (created with the stream when `create`).
    fn ensure_group(&mut self, stream: &Arc<str>, create: bool) -> redis::RedisResult<bool> {
        if self.groups.contains(stream) {
            return Ok(true);
        }
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE").arg(&**stream).arg(GROUP).arg("0");
        if create {
            cmd.arg("MKSTREAM");
        }
        match cmd.query::<()>(self.conn()?) {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            // The stream is gone (a dead instance's, deleted once drained).
            Err(e) if !create && e.code() == Some("ERR") => return Ok(false),
            Err(e) => return Err(e),
        }
        self.groups.insert(stream.clone());
        Ok(true)
    }

    /// Writes the new events to this instance's stream and acknowledges the settled ones, in one
    /// round trip.
    fn write(&mut self) -> redis::RedisResult<()> {
        if self.unwritten.is_empty() && self.acks.is_empty() {
            return Ok(());
        }
        let own = self.own.stream.clone();
        self.ensure_group(&own, true)?;
        let mut pipe = redis::pipe();
        if !self.unwritten.is_empty() {
            pipe.cmd("SADD").arg(&self.streams_key).arg(&self.me).ignore();
        }
        for event in &self.unwritten {
            let json = serde_json::to_string(event).unwrap_or_default();
            pipe.cmd("XADD").arg(&*own).arg("*").arg("e").arg(json).ignore();
        }
        let mut by_stream: HashMap<Arc<str>, Vec<&str>> = HashMap::new();
        for r in &self.acks {
            by_stream.entry(r.stream.clone()).or_default().push(&r.entry);
        }
        for (stream, ids) in &by_stream {
            pipe.cmd("XACK").arg(&**stream).arg(GROUP).arg(ids).ignore();
            pipe.cmd("XDEL").arg(&**stream).arg(ids).ignore();
        }
        pipe.query::<()>(self.conn()?)?;
        self.counters.stored.fetch_add(self.unwritten.len() as u64, Relaxed);
        self.unwritten.clear();
        self.acks.clear();
        Ok(())
    }

    fn space(&self) -> usize {
        self.capacity.saturating_sub(self.handed.load(Relaxed))
    }

    /// Reads this instance's entries into the delivery: its own pending ones first (a restart),
    /// then new ones.
    fn read_own(&mut self) -> redis::RedisResult<()> {
        let space = self.space();
        if space == 0 {
            return Ok(());
        }
        let own = self.own.stream.clone();
        self.ensure_group(&own, true)?;
        let from = if self.own_pending_first { "0" } else { ">" };
        let me = self.me.clone();
        let read = read_group(self.conn()?, &own, &me, from, space)?;
        if self.own_pending_first && read.len() < space {
            self.own_pending_first = false;
            if !read.is_empty() {
                info!(events = read.len(), "webhook events left pending by this instance's previous run are delivered again");
            }
        }
        self.hand_over(&own, read);
        Ok(())
    }

    /// Finds dead instances' streams and delivers what they left.
    fn claim_dead(&mut self) -> redis::RedisResult<()> {
        let now = Instant::now();
        if now < self.next_claim {
            return Ok(());
        }
        self.next_claim = now + CLAIM_EVERY;
        let streams_key = self.streams_key.clone();
        let mut instances: Vec<String> = redis::cmd("SMEMBERS").arg(&streams_key).query(self.conn()?)?;
        instances.retain(|i| *i != self.me);
        for instance in instances {
            let keys = Keys::of(&self.prefix, &instance);
            let alive: bool = redis::cmd("EXISTS").arg(&keys.heartbeat).query(self.conn()?)?;
            if alive {
                // Back (or never gone): what this instance took is still delivered and acked.
                self.claimed.remove(&instance);
                continue;
            }
            let me = self.me.clone();
            let claim = keys.claim.clone();
            let mine = if self.claimed.contains_key(&instance) {
                let renewed: Option<String> = redis::cmd("SET").arg(&claim).arg(&me).arg("XX").arg("PX").arg(CLAIM_TTL_MS).arg("GET").query(self.conn()?)?;
                renewed.as_deref() == Some(me.as_str())
            } else {
                let taken: Option<String> = redis::cmd("SET").arg(&claim).arg(&me).arg("NX").arg("PX").arg(CLAIM_TTL_MS).query(self.conn()?)?;
                taken.is_some()
            };
            if !mine {
                self.claimed.remove(&instance);
                continue;
            }
            let entry = self.claimed.entry(instance.clone()).or_insert(Claimed { keys, cursor: Some("0-0".into()) });
            let (stream, cursor) = (entry.keys.stream.clone(), entry.cursor.clone());
            if !self.ensure_group(&stream, false)? {
                self.claimed.remove(&instance);
                continue;
            }
            let space = self.space();
            if let Some(cursor) = cursor.filter(|_| space > 0) {
                // The dead instance's pending entries (and any earlier claimer's, if it died too).
                let (next, taken) = auto_claim(self.conn()?, &stream, &me, &cursor, space)?;
                if let Some(c) = self.claimed.get_mut(&instance) {
                    c.cursor = (next != "0-0").then_some(next);
                }
                if !taken.is_empty() {
                    info!(instance = instance.as_str(), events = taken.len(), "claimed webhook events left pending by a dead instance");
                }
                self.counters.claimed.fetch_add(taken.len() as u64, Relaxed);
                self.hand_over(&stream, taken);
            }
            let space = self.space();
            if self.claimed.get(&instance).is_some_and(|c| c.cursor.is_none()) && space > 0 {
                let unread = read_group(self.conn()?, &stream, &me, ">", space)?;
                self.counters.claimed.fetch_add(unread.len() as u64, Relaxed);
                self.hand_over(&stream, unread);
                self.drop_if_done(&instance)?;
            }
        }
        Ok(())
    }

    /// Deletes a drained dead stream (and forgets it), unless its instance is back.
    fn drop_if_done(&mut self, instance: &str) -> redis::RedisResult<()> {
        let Some(keys) =
            self.claimed.get(instance).map(|c| [c.keys.heartbeat.clone(), c.keys.stream.to_string(), self.streams_key.clone(), c.keys.claim.clone()])
        else {
            return Ok(());
        };
        let dropped: i64 = redis::cmd("EVAL").arg(DROP_IF_DONE).arg(keys.len()).arg(&keys[..]).arg(instance).query(self.conn()?)?;
        if dropped == 1 {
            if let Some(c) = self.claimed.remove(instance) {
                self.groups.remove(&c.keys.stream);
            }
        }
        Ok(())
    }

    fn hand_over(&mut self, stream: &Arc<str>, entries: Vec<Entry>) {
        let mut broken = Vec::new();
        for (entry, json) in entries {
            match json.as_deref().map(serde_json::from_str::<Event>) {
                Some(Ok(mut event)) => {
                    event.stored = Some(StreamRef { stream: stream.clone(), entry });
                    self.handed.fetch_add(1, Relaxed);
                    if self.to_delivery.send(Msg::Event(event)).is_err() {
                        return;
                    }
                }
                // Not an event this version can read: acknowledged so it does not block others.
                _ => broken.push(StreamRef { stream: stream.clone(), entry }),
            }
        }
        if !broken.is_empty() {
            warn!(stream = &**stream, entries = broken.len(), "unreadable webhook stream entries skipped");
            self.acks.extend(broken);
        }
    }
}

/// A stream entry: its id, and the event's JSON (`None`: not an event this version reads).
type Entry = (String, Option<String>);

/// `XREADGROUP … COUNT n STREAMS stream from`: the entries as (id, the event's JSON).
fn read_group(conn: &mut redis::Connection, stream: &str, me: &str, from: &str, count: usize) -> redis::RedisResult<Vec<Entry>> {
    let reply: redis::Value =
        redis::cmd("XREADGROUP").arg("GROUP").arg(GROUP).arg(me).arg("COUNT").arg(count).arg("STREAMS").arg(stream).arg(from).query(conn)?;
    // [[stream, [entry, …]]] or nil.
    let Some(first) = items(&reply).first().copied() else { return Ok(Vec::new()) };
    Ok(items(first).get(1).map(|e| entries(e)).unwrap_or_default())
}

/// `XAUTOCLAIM stream group me 0 cursor COUNT n`: takes pending entries whatever their idle
/// time; answers the next cursor (`0-0` at the end) and the entries.
fn auto_claim(conn: &mut redis::Connection, stream: &str, me: &str, cursor: &str, count: usize) -> redis::RedisResult<(String, Vec<Entry>)> {
    let reply: redis::Value = redis::cmd("XAUTOCLAIM").arg(stream).arg(GROUP).arg(me).arg(0).arg(cursor).arg("COUNT").arg(count).query(conn)?;
    // [next cursor, [entry, …], [deleted ids]]
    let parts = items(&reply);
    let next = parts.first().and_then(|c| text(c)).unwrap_or_else(|| "0-0".into());
    Ok((next, parts.get(1).map(|e| entries(e)).unwrap_or_default()))
}

fn items(value: &redis::Value) -> Vec<&redis::Value> {
    match value {
        redis::Value::Array(items) | redis::Value::Set(items) => items.iter().collect(),
        redis::Value::Map(pairs) => pairs.iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// `[[id, [field, value, …]], …]` as (id, the value of field `e`).
fn entries(value: &redis::Value) -> Vec<Entry> {
    items(value)
        .into_iter()
        .filter_map(|entry| {
            let parts = items(entry);
            let id = text(parts.first()?)?;
            let fields = parts.get(1).map(|f| items(f)).unwrap_or_default();
            let json = fields.chunks(2).find(|kv| kv.first().and_then(|k| text(k)).as_deref() == Some("e")).and_then(|kv| kv.get(1).and_then(|v| text(v)));
            Some((id, json))
        })
        .collect()
}
