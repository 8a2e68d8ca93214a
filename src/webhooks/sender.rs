//! The thread that delivers webhooks, off the shards: it runs the [`Delivery`] state machine
//! with the real clock, and a few worker threads make the HTTP requests (keep-alive, one
//! request each at a time, so at most `max_in_flight` are out). Shards only `try_send` events
//! into a bounded channel: a receiver that hangs or is down slows no room.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{sign, Batch, BatchId, Delivery, DeliveryConfig, Event, Outcome, SIGNATURE_HEADER, TIMESTAMP_HEADER};
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
}

#[derive(Default)]
struct Counters {
    emitted: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    dropped: AtomicU64,
    queued: AtomicU64,
    requests_failed: AtomicU64,
    /// Events a shard could not hand to the delivery thread (its channel full).
    shed: AtomicU64,
}

enum Msg {
    Event(Event),
    Done(BatchId, Outcome),
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

/// Starts the delivery thread and its workers.
pub fn start(config: SenderConfig) -> Result<WebhookHandle, String> {
    let (tx, rx) = flume::bounded(config.delivery.queue.max(1));
    let counters = Arc::new(Counters::default());
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
    let handle = WebhookHandle { tx, counters: counters.clone(), events: Arc::new(config.events.clone()), instance_id: config.instance_id.clone().into() };
    let delivery = Delivery::new(config.delivery.clone(), rand::random());
    std::thread::Builder::new().name("webhooks".into()).spawn(move || run(delivery, rx, jobs_tx, counters)).map_err(|e| e.to_string())?;
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

fn run(mut delivery: Delivery, rx: flume::Receiver<Msg>, jobs: flume::Sender<Batch>, counters: Arc<Counters>) {
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
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl WebhookHandle {
    /// Emits `kind` for `room` (its event number `seq`) with `data`, if selected; dropped and
    /// counted when the channel to the delivery thread is full.
    pub fn emit(&self, kind: &'static str, room: &str, seq: u64, data: serde_json::Value) {
        let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let event = Event { id: uuid::Uuid::new_v4().to_string(), kind, time, room_id: room.to_string(), seq, instance_id: self.instance_id.to_string(), data };
        if !event.selected_by(&self.events) {
            return;
        }
        self.counters.emitted.fetch_add(1, Relaxed);
        if self.tx.try_send(Msg::Event(event)).is_err() {
            self.counters.shed.fetch_add(1, Relaxed);
        }
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
            ],
        );
        write_unlabelled(out, "gauge", &[("partyflow_webhook_queue_depth", "Webhook events waiting for a batch", c.queued.load(Relaxed))]);
    }
}
