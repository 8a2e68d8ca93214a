//! The proxy calls, made by a pool of threads off the shards (ureq, keep-alive). A call is a job
//! in a bounded queue; its answer is handed to a callback on the worker thread, which sends it
//! to the shard that asked. A full queue or a call that waited past its time limit is answered
//! at once as failed, so nothing waits without bound.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::write_unlabelled;
use crate::webhooks::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Calls at once at most (one per worker thread).
const WORKERS: usize = 32;
/// Calls waiting for a worker at most.
const QUEUE: usize = 4096;
/// Most bytes of an answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// Where and how to call.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `--proxy-connect-url`.
    pub connect_url: Option<String>,
    /// `--proxy-join-url`.
    pub join_url: Option<String>,
    /// `--proxy-publish-url`.
    pub publish_url: Option<String>,
    /// Signs every call (`--webhook-secret`).
    pub secret: String,
    /// One call's limit, queueing included.
    pub timeout: Duration,
}

/// How a call ended.
#[derive(Debug)]
pub enum Reply {
    /// The backend answered with this status and body.
    Answered(u16, Vec<u8>),
    /// No answer (why, for the log): refused connection, timeout, queue full.
    Failed(String),
}

struct Job {
    url: Arc<str>,
    body: Vec<u8>,
    deadline: Instant,
    reply: Box<dyn FnOnce(Reply) + Send>,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    failed: AtomicU64,
}

/// The proxy, shared by the shards.
#[derive(Clone)]
pub struct Proxy {
    jobs: flume::Sender<Job>,
    connect: Option<Arc<str>>,
    join: Option<Arc<str>>,
    publish: Option<Arc<str>>,
    timeout: Duration,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts the worker threads.
    pub fn start(config: ProxyConfig) -> Result<Proxy, String> {
        let (jobs, queue) = flume::bounded::<Job>(QUEUE);
        let counters = Arc::new(Counters::default());
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(config.timeout)).http_status_as_error(false).build().into();
        for i in 0..WORKERS {
            let (queue, agent, secret, counters) = (queue.clone(), agent.clone(), config.secret.clone(), counters.clone());
            std::thread::Builder::new()
                .name(format!("proxy-{i}"))
                .spawn(move || {
                    while let Ok(job) = queue.recv() {
                        let reply = if Instant::now() >= job.deadline {
                            Reply::Failed("waited past --proxy-timeout for a free worker".into())
                        } else {
                            post(&agent, &secret, &job)
                        };
                        if matches!(reply, Reply::Failed(_)) {
                            counters.failed.fetch_add(1, Relaxed);
                        }
                        (job.reply)(reply);
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        let url = |u: &Option<String>| u.as_deref().map(Arc::from);
        Ok(Proxy { jobs, connect: url(&config.connect_url), join: url(&config.join_url), publish: url(&config.publish_url), timeout: config.timeout, counters })
    }

    /// Which `/pubsub` messages wait for the backend.
    pub fn gates(&self) -> crate::pubsub::ProxyGates {
        crate::pubsub::ProxyGates { join: self.join.is_some(), publish: self.publish.is_some() }
    }

    /// Whether upgrades of `/pubsub` ask the backend first.
    pub fn decides_connect(&self) -> bool {
        self.connect.is_some()
    }

    /// A connect call; `reply` runs on a worker thread (or at once when the queue is full).
    pub fn connect(&self, body: Vec<u8>, reply: impl FnOnce(Reply) + Send + 'static) {
        self.call(self.connect.clone(), body, reply);
    }

    /// A join call.
    pub fn join(&self, body: Vec<u8>, reply: impl FnOnce(Reply) + Send + 'static) {
        self.call(self.join.clone(), body, reply);
    }

    /// A publish call.
    pub fn publish(&self, body: Vec<u8>, reply: impl FnOnce(Reply) + Send + 'static) {
        self.call(self.publish.clone(), body, reply);
    }

    fn call(&self, url: Option<Arc<str>>, body: Vec<u8>, reply: impl FnOnce(Reply) + Send + 'static) {
        let Some(url) = url else { return reply(Reply::Failed("no URL for this call".into())) };
        self.counters.calls.fetch_add(1, Relaxed);
        let job = Job { url, body, deadline: Instant::now() + self.timeout, reply: Box::new(reply) };
        if let Err(e) = self.jobs.try_send(job) {
            self.counters.failed.fetch_add(1, Relaxed);
            (e.into_inner().reply)(Reply::Failed("too many proxy calls waiting".into()));
        }
    }

    /// Appends the proxy metrics to `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        write_unlabelled(
            out,
            "counter",
            &[
                ("partyflow_proxy_calls_total", "Calls to the app's backend (connect, join, publish)", self.counters.calls.load(Relaxed)),
                (
                    "partyflow_proxy_calls_failed_total",
                    "Proxy calls without a usable answer in time (503 or PROXY_UNAVAILABLE)",
                    self.counters.failed.load(Relaxed),
                ),
            ],
        );
    }
}

/// One signed `POST`.
fn post(agent: &ureq::Agent, secret: &str, job: &Job) -> Reply {
    let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let result = agent
        .post(&*job.url)
        .header("Content-Type", "application/json")
        .header(TIMESTAMP_HEADER, timestamp.to_string())
        .header(SIGNATURE_HEADER, sign(secret, timestamp, &job.body))
        .send(&job.body[..]);
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            match response.body_mut().with_config().limit(MAX_ANSWER).read_to_vec() {
                Ok(body) => Reply::Answered(status, body),
                Err(e) => Reply::Failed(e.to_string()),
            }
        }
        Err(e) => Reply::Failed(e.to_string()),
    }
}
