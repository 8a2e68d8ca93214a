//! The thread that delivers webhooks, off the shards: it runs the [`Delivery`] state machine
//! with the real clock, and a few worker threads make the HTTP requests (keep-alive, one
//! request each at a time, so at most `max_in_flight` are out). Shards only `try_send` events
//! into a bounded channel: a receiver that hangs or is down slows no room. With Redis the
//! events go through this instance's stream first ([`super::stream`]) and are acknowledged
//! there once delivered.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

use super::stream::{Durable, StreamConfig};
use super::{sign, Batch, BatchId, Delivery, DeliveryConfig, Event, Outcome, StreamRef, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::metrics::write_unlabelled;

/// Where and how to deliver.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// The receiver (`http://` or `https://`).
    pub url: String,
    /// Signs every request.
    pub secret: String,
    /// Event types or prefixes to send (empty: all).
    pub events: Vec<String>,
    /// One request's limit.
    pub timeout: Duration,
    /// Batching, retries, bounds.
    pub delivery: DeliveryConfig,
    /// This instance, named in every event.
    pub instance_id: String,
    /// Keep events in Redis until delivered (`--redis`).
    pub durable: Option<StreamConfig>,
}

pub(super) struct Counters {
    emitted: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
    requests_failed: AtomicU64,
    /// Events that could not be kept (a shard's channel full, or Redis away too long).
    pub(super) shed: AtomicU64,
    /// Events written to this instance's Redis Stream (by the stream thread, and by the store
    /// with the game rooms' snapshots).
    pub(super) stored: Arc<AtomicU64>,
    /// Events taken over from dead instances' streams.
    pub(super) claimed: AtomicU64,
    /// From an event's `time` to its acknowledgement, ms.
    latency_ms: Mutex<Histogram<u64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            emitted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            stored: Arc::new(AtomicU64::new(0)),
            claimed: AtomicU64::new(0),
            // Two significant digits from 1 ms to a day: constant, valid bounds.
            latency_ms: Mutex::new(Histogram::new_with_bounds(1, 86_400_000, 2).unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))),
        }
    }
}

/// What the webhook threads tell each other.
pub(super) enum Msg {
    /// A room's event (from a shard, or read back from Redis).
    Event(Event),
    /// A request ended.
    Done(BatchId, Outcome),
    /// Stream entries to acknowledge (durable mode).
    Settled(Vec<StreamRef>),
}

/// A shard's handle: emits events (never blocks).
#[derive(Clone)]
pub struct WebhookHandle {
    tx: flume::Sender<Msg>,
    counters: Arc<Counters>,
    events: Arc<Vec<String>>,
    instance_id: Arc<str>,
}

impl std::fmt::Debug for WebhookHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookHandle").finish_non_exhaustive()
    }
}

/// Starts the delivery thread and its workers (and the stream thread with Redis).
pub fn start(config: SenderConfig) -> Result<WebhookHandle, String> {
    let (tx, rx) = flume::bounded(config.delivery.queue.max(1));
    let counters = Arc::new(Counters::default());
    // Events read back from Redis and not yet settled: the stream thread reads no more than the
    // queue holds, so the backlog stays in Redis.
    let handed = Arc::new(AtomicUsize::new(0));
    let (intake, to_stream) = match &config.durable {
        None => (tx.clone(), None),
        Some(stream) => {
            let (stream_tx, stream_rx) = flume::bounded(config.delivery.queue.max(1));
            let durable = Durable::new(stream, &config.instance_id, config.delivery.queue, handed.clone(), tx.clone(), counters.clone())?;
            std::thread::Builder::new().name("webhooks-redis".into()).spawn(move || durable.run(stream_rx)).map_err(|e| e.to_string())?;
            (stream_tx.clone(), Some(stream_tx))
        }
    };
    let (jobs_tx, jobs_rx) = flume::bounded::<Batch>(config.delivery.max_in_flight.max(1));
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(config.timeout)).http_status_as_error(false).build().into();
    for i in 0..config.delivery.max_in_flight.max(1) {
        let (jobs, done, agent, url, secret, counters) =
            (jobs_rx.clone(), tx.clone(), agent.clone(), config.url.clone(), config.secret.clone(), counters.clone());
        std::thread::Builder::new()
            .name(format!("webhook-{i}"))
            .spawn(move || {
                while let Ok(batch) = jobs.recv() {
                    let outcome = post(&agent, &url, &secret, &batch);
                    if outcome == Outcome::Failed {
                        counters.requests_failed.fetch_add(1, Relaxed);
                    }
                    if done.send(Msg::Done(batch.id, outcome)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| e.to_string())?;
    }
    drop(tx);
    let handle =
        WebhookHandle { tx: intake, counters: counters.clone(), events: Arc::new(config.events.clone()), instance_id: config.instance_id.clone().into() };
    let delivery = Delivery::new(config.delivery.clone(), rand::random());
    let settle = Settle { to_stream, handed, counters };
    std::thread::Builder::new().name("webhooks".into()).spawn(move || run(delivery, rx, jobs_tx, settle)).map_err(|e| e.to_string())?;
    Ok(handle)
}

/// One request: `POST {"events": [...]}` with the signature headers; a 2xx delivers.
fn post(agent: &ureq::Agent, url: &str, secret: &str, batch: &Batch) -> Outcome {
    let body = serde_json::to_vec(&serde_json::json!({ "events": batch.events })).unwrap_or_default();
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let result = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(secret, timestamp, &body))
        .send(&body[..]);
    match result {
        Ok(response) if response.status().is_success() => Outcome::Delivered,
        Ok(response) => {
            tracing::debug!(status = response.status().as_u16(), attempt = batch.attempt, "webhook receiver refused a batch; retrying");
            Outcome::Failed
        }
        Err(e) => {
            tracing::debug!(error = %e, attempt = batch.attempt, "webhook request failed; retrying");
            Outcome::Failed
        }
    }
}

/// What happens to settled events: their latency is recorded and, with Redis, their stream
/// entries are acknowledged.
struct Settle {
    to_stream: Option<flume::Sender<Msg>>,
    handed: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

impl Settle {
    fn settled(&self, delivery: &mut Delivery) {
        let settled = delivery.take_settled();
        if settled.is_empty() {
            return;
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        if let Ok(mut h) = self.counters.latency_ms.lock() {
            for s in settled.iter().filter(|s| s.delivered) {
                h.saturating_record(now_ms.saturating_sub(s.time).max(1));
            }
        }
        if let Some(to_stream) = &self.to_stream {
            let refs: Vec<StreamRef> = settled.into_iter().filter_map(|s| s.stored).collect();
            let _ = self.handed.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(refs.len())));
            // Blocking is fine here (this is not a shard); the stream thread drains quickly.
            let _ = to_stream.send(Msg::Settled(refs));
        }
    }
}

fn run(mut delivery: Delivery, rx: flume::Receiver<Msg>, jobs: flume::Sender<Batch>, settle: Settle) {
    let counters = settle.counters.clone();
    loop {
        let now = Instant::now();
        while let Some(batch) = delivery.poll_batch(now) {
            // The job channel holds as many as there are workers, and the delivery never has
            // more out: this does not block for long.
            if jobs.send(batch).is_err() {
                return;
            }
        }
        let stats = delivery.stats();
        counters.delivered.store(stats.delivered, Relaxed);
        counters.retried.store(stats.retried, Relaxed);
        counters.dropped.store(stats.dropped, Relaxed);
        counters.queued.store(delivery.queued() as u64, Relaxed);
        let wait = delivery.poll_timeout().map_or(Duration::from_secs(1), |at| at.saturating_duration_since(now));
        match rx.recv_timeout(wait) {
            Ok(Msg::Event(event)) => delivery.push(event, Instant::now()),
            Ok(Msg::Done(id, outcome)) => delivery.finished(id, outcome, Instant::now()),
            Ok(Msg::Settled(_)) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        settle.settled(&mut delivery);
    }
}

impl WebhookHandle {
    /// Emits `kind` for `room` (its event number `seq`) with `data`, if selected; dropped and
    /// counted when the channel to the delivery thread is full.
    pub fn emit(&self, kind: &'static str, room: &str, seq: u64, data: serde_json::Value) {
        let Some(event) = self.event(kind, room, seq, data) else { return };
        if self.tx.try_send(Msg::Event(event)).is_err() {
            self.counters.shed.fetch_add(1, Relaxed);
        }
    }

    /// The event as the JSON kept in Redis, if selected: a game room's events are written by
    /// the store with the room's snapshot (see [`crate::store`]) and read back from the stream.
    pub fn event_json(&self, kind: &'static str, room: &str, seq: u64, data: serde_json::Value) -> Option<String> {
        self.event(kind, room, seq, data).map(|e| serde_json::to_string(&e).unwrap_or_default())
    }

    /// Counts what the store writes to the stream.
    pub fn stored_counter(&self) -> Arc<AtomicU64> {
        self.counters.stored.clone()
    }

    /// A new event, if selected (counted as emitted).
    fn event(&self, kind: &'static str, room: &str, seq: u64, data: serde_json::Value) -> Option<Event> {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let event = Event {
            id: uuid::Uuid::new_v4().to_string(),
            kind: kind.into(),
            time,
            room_id: room.to_string(),
            seq,
            instance_id: self.instance_id.to_string(),
            data,
            stored: None,
        };
        if !event.selected_by(&self.events) {
            return None;
        }
        self.counters.emitted.fetch_add(1, Relaxed);
        Some(event)
    }

    /// Appends the webhook metrics to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        let c = &self.counters;
        write_unlabelled(
            out,
            "counter",
            &[
                ("partyflow_webhook_events_emitted_total", "Webhook events emitted by rooms", c.emitted.load(Relaxed)),
                ("partyflow_webhook_events_delivered_total", "Webhook events acknowledged by the receiver (2xx)", c.delivered.load(Relaxed)),
                ("partyflow_webhook_batches_retried_total", "Webhook batches sent again after a failure", c.retried.load(Relaxed)),
                (
                    "partyflow_webhook_events_dropped_total",
                    "Webhook events dropped (queue full, or undelivered past --webhook-max-age)",
                    c.dropped.load(Relaxed) + c.shed.load(Relaxed),
                ),
                ("partyflow_webhook_requests_failed_total", "Webhook requests that failed (status, timeout, connection)", c.requests_failed.load(Relaxed)),
                ("partyflow_webhook_events_stored_total", "Webhook events written to this instance's Redis Stream (--redis)", c.stored.load(Relaxed)),
                ("partyflow_webhook_events_claimed_total", "Webhook events taken over from dead instances' streams (--redis)", c.claimed.load(Relaxed)),
            ],
        );
        write_unlabelled(out, "gauge", &[("partyflow_webhook_queue_depth", "Webhook events waiting for a batch", c.queued.load(Relaxed))]);
        let name = "partyflow_webhook_delivery_latency_seconds";
        let _ = writeln!(out, "# HELP {name} From an event to the receiver's 2xx for it\n# TYPE {name} histogram");
        if let Ok(h) = c.latency_ms.lock() {
            for le in [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0] {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {}", h.count_between(0, (le * 1000.0) as u64));
            }
            let sum: f64 = h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>() / 1000.0;
            let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {sum}\n{name}_count {}", h.len(), h.len());
        }
    }
}
