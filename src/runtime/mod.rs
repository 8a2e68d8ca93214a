//! The glommio driver: the only module that knows about the executor, sockets and time.
//!
//! [`run`] checks the process limits, binds one `SO_REUSEPORT` listener per shard, starts one
//! pinned executor per shard joined by a channel mesh (for connection hand-off), and waits for
//! them to drain after SIGTERM/SIGINT. Everything it drives (`ws`, `http`, `rooms`, `session`,
//! `outbox`) is runtime-agnostic.

mod admin_http;
mod api;
mod calls;
mod conn;
mod handoff;
pub mod limits;
mod mesh;
mod pubsub_http;
mod serve;
mod shard;
mod shard_run;
mod state;
mod turn;

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{info, warn};

use crate::admission::{Admission, ApiLimiter, Caps};
use crate::auth::TokenKey;
use crate::config::ServeConfig;
use crate::game::words::WordPack;
use crate::metrics::Metrics;
use crate::pubsub::{Handlers, TokenKey as PubSubKey};
use crate::store::{RedisStore, StoreConfig};

/// Depth of each shard's io_uring rings. Deeper rings cut a party shard's CPU (glommio cancels
/// its preemption timer every reactor turn, and each cancel searches the ring's armed polls, one
/// per idle connection, in cq_entries / 32 buckets): 4,096 gave -10 % CPU per delivery, but +9 %
/// memory per relay connection, and glommio then preempts tasks only after that many
/// completions (perf/RESULTS.md, "Where a party shard's CPU goes").
const RING_DEPTH: usize = 1024;
/// How often the process's memory and open descriptors are read for `/metrics`.
const PROCESS_STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Capacity of each shard-to-shard channel (hand-offs and `/pubsub` traffic).
const MESH_CHANNEL: usize = 4096;

/// Runs the server until SIGTERM or SIGINT and its connections have drained; `/pubsub` messages
/// are answered by `handlers`.
pub fn run(config: ServeConfig, handlers: Handlers) -> anyhow::Result<()> {
    Bound::bind(config, handlers, Signals::Watch)?.run()
}

/// Whether the server starts its graceful shutdown on SIGTERM/SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    /// The first SIGTERM or SIGINT starts the graceful shutdown, the second exits at once.
    Watch,
    /// The embedding program owns the signals; only a [`ShutdownHandle`] stops the server.
    Ignore,
}

/// Stops a running server: connections are closed with 1001 and drained, then
/// [`Bound::run`] returns. Cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<AtomicBool>);

impl ShutdownHandle {
    /// Starts the graceful shutdown (idempotent).
    pub fn shutdown(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A server whose listeners are bound (so its address is known) but whose shards have not
/// started yet.
pub struct Bound {
    listeners: Vec<Socket>,
    addr: SocketAddr,
    cpus: Vec<usize>,
    io_memory: usize,
    max_connections: usize,
    signals: Signals,
    shared: shard::Shared,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").field("addr", &self.addr).field("shards", &self.listeners.len()).finish_non_exhaustive()
    }
}

impl Bound {
    /// Checks the process limits, binds one listener per shard and connects to Redis when
    /// configured; `/pubsub` messages will be answered by `handlers`.
    pub fn bind(config: ServeConfig, handlers: Handlers, signals: Signals) -> anyhow::Result<Bound> {
        let started = Instant::now();
        let cpus = limits::allowed_cpus().context("cannot read this process's CPU affinity")?;
        let shards = config.shards.unwrap_or(cpus.len());
        if shards == 0 {
            bail!("--shards must be at least 1");
        }
        let io_memory = limits::io_memory_per_shard(limits::memlock_limit()?, shards)?;
        let open_files = limits::open_file_limit()?;
        let max_connections = config.effective_max_connections(open_files);
        if max_connections as u64 + 64 > open_files {
            warn!(open_files, max_connections, "the open-file limit is below --max-connections; accepts will fail before the cap answers 503");
        }
        let listeners = bind_listeners(config.listen, shards)?;
        let addr = listeners.first().context("no listener")?.local_addr()?.as_socket().context("listener has no IP address")?;

        let shutdown = Arc::new(AtomicBool::new(false));
        let tokens = match &config.secret {
            Some(secret) => TokenKey::from_secret(secret),
            None => {
                warn!("no --secret given: tokens are signed with a random key, so other instances cannot verify them and they die with this process");
                TokenKey::from_bytes(rand::random())
            }
        };
        let packs = Arc::new(WordPack::shipped().into_iter().map(Arc::new).collect());
        let instance_id = config.instance_id.clone().unwrap_or_else(|| format!("{}:{}", hostname(), addr.port()));
        let webhooks = match (&config.webhook_url, &config.webhook_secret) {
            (Some(url), Some(secret)) => {
                let hooks = crate::webhooks::start(crate::webhooks::SenderConfig {
                    url: url.clone(),
                    secret: secret.clone(),
                    events: config.webhook_events.clone(),
                    timeout: config.webhook_timeout,
                    delivery: crate::webhooks::DeliveryConfig {
                        batch: config.webhook_batch,
                        queue: config.webhook_queue,
                        max_age: config.webhook_max_age,
                        ..crate::webhooks::DeliveryConfig::default()
                    },
                    instance_id: instance_id.clone(),
                    durable: config.redis.as_ref().map(|url| crate::webhooks::StreamConfig { url: url.clone(), prefix: config.redis_prefix.clone() }),
                })
                .map_err(|e| anyhow::anyhow!("cannot start webhook delivery: {e}"))?;
                // The URL may carry credentials: log its host only.
                let kept = if config.redis.is_some() { "kept in a redis stream until delivered" } else { "kept in memory: lost on a crash" };
                info!(host = url.split('/').nth(2).unwrap_or("").rsplit('@').next().unwrap_or(""), kept, "webhooks on");
                Some(hooks)
            }
            _ => None,
        };
        let store = match &config.redis {
            None => None,
            Some(url) => {
                let store = RedisStore::start(StoreConfig {
                    url: url.clone(),
                    prefix: config.redis_prefix.clone(),
                    ttl: config.persist_ttl,
                    queue: config.persist_queue,
                    instance: instance_id.clone(),
                    lease_ttl: config.room_lease_ttl,
                    webhook_events_written: webhooks.as_ref().map_or_else(Default::default, crate::webhooks::WebhookHandle::stored_counter),
                })?;
                info!(prefix = config.redis_prefix.as_str(), "persisting game rooms to redis (write-behind), each owned through a lease");
                Some(store)
            }
        };
        let (bus, bus_inbox) = match &config.redis {
            None => (None, Vec::new()),
            Some(url) => {
                let (bus, inboxes) = crate::cluster::bus::start(crate::cluster::BusConfig {
                    url: url.clone(),
                    prefix: config.redis_prefix.clone(),
                    instance_id: instance_id.clone(),
                    shards,
                    queue: config.persist_queue,
                })
                .map_err(|e| anyhow::anyhow!(e))?;
                info!(instance = instance_id.as_str(), "relay rooms are joined with other instances through redis pub/sub");
                (Some(bus), inboxes.into_iter().map(Some).collect())
            }
        };
        let lost_shard = Arc::new(std::sync::OnceLock::new());
        let metrics = Arc::new(Metrics::new(shards, started));
        let pubsub_key = config.pubsub_secret.as_deref().map(PubSubKey::new).transpose().map_err(|e| anyhow::anyhow!("--pubsub-secret: {e}"))?;
        let pubsub = state::PubSubSettings {
            handlers: Arc::new(handlers),
            metrics: metrics.clone(),
            max_rooms: config.pubsub_max_rooms_per_connection,
            messages_per_sec: config.connection_message_rate,
            nonce: rand::random(),
            webhooks: config.webhook_url.is_some(),
            proxy: start_proxy(&config)?,
        };
        let pubsub_adapter: Arc<dyn crate::cluster::pubsub::Adapter> = match &bus {
            Some(bus) => Arc::new(bus.clone()),
            None => Arc::new(crate::cluster::pubsub::Memory),
        };
        let shared = shard::Shared {
            instance_id: instance_id.as_str().into(),
            lost_shard: lost_shard.clone(),
            tokens,
            packs,
            store,
            bus,
            bus_inbox: Arc::new(std::sync::Mutex::new(bus_inbox)),
            admission: Admission::new(Caps {
                max_open: max_connections,
                max_pending: config.max_pending_connections,
                max_per_ip: config.max_connections_per_ip,
                max_pending_per_ip: config.max_pending_per_ip,
            }),
            api_limiter: Arc::new(ApiLimiter::new(config.api_rate_per_ip)),
            config: Arc::new(config),
            metrics,
            pubsub,
            pubsub_key,
            pubsub_adapter,
            webhooks,
            shutdown,
        };
        Ok(Bound { listeners, addr, cpus, io_memory, max_connections, signals, shared })
    }

    /// The address the server listens on (the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops the server once it runs.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shared.shutdown.clone())
    }

    /// Starts one pinned executor per shard and blocks until shutdown has drained them.
    pub fn run(self) -> anyhow::Result<()> {
        let Bound { listeners, addr, cpus, io_memory, max_connections, signals, shared } = self;
        if signals == Signals::Watch {
            watch_signals(shared.shutdown.clone())?;
        }
        let (metrics, stop) = (shared.metrics.clone(), shared.shutdown.clone());
        std::thread::Builder::new().name("process-stats".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(PROCESS_STATS_EVERY);
                metrics.process.refresh();
            }
        })?;
        let shards = listeners.len();
        let lost_shard = shared.lost_shard.clone();
        let mesh = MeshBuilder::full(shards, MESH_CHANNEL);
        let mut handles = Vec::with_capacity(shards);
        for (i, listener) in listeners.into_iter().enumerate() {
            let (shared, mesh) = (shared.clone(), mesh.clone());
            let fd = listener.into_raw_fd();
            let cpu = cpus.iter().cycle().nth(i).copied().unwrap_or(0);
            let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("shard-{i}"))
                .io_memory(io_memory)
                .ring_depth(RING_DEPTH)
                .spawn(move || {
                    let lost = LostShardGuard { index: i, listener: fd, lost: shared.lost_shard.clone(), shutdown: shared.shutdown.clone() };
                    async move {
                        let _lost = lost;
                        // SAFETY: `fd` is the listening socket bound above, owned by this shard alone.
                        let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                        match mesh.join().await {
                            Ok((senders, receivers)) => shard_run::run(shared, listener, senders, receivers).await,
                            // Only if another shard failed to start, which ends the process anyway.
                            Err(e) => tracing::error!(shard = i, error = %e, "cannot join the hand-off mesh"),
                        }
                    }
                })
                .map_err(|e| anyhow::anyhow!("cannot start shard {i} on CPU {cpu}: {e}"))?;
            handles.push(handle);
        }
        info!(%addr, shards, io_memory, max_connections, "partyflow listening on {addr}");
        // Every shard is joined (the others drain) before a failure is reported.
        let joined: Vec<_> = handles.into_iter().map(|handle| handle.join()).collect();
        if let Some(reason) = lost_shard.get() {
            bail!("{reason}; exiting so that a supervisor restarts the server");
        }
        for result in joined {
            result.map_err(|e| anyhow::anyhow!("a shard failed: {e}"))?;
        }
        info!("all connections closed; exiting");
        Ok(())
    }
}

/// How long a server that lost a shard keeps answering `/health` with 503 (so that a probe or
/// a load balancer sees it) before it shuts the other shards down and exits non-zero.
const LOST_SHARD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Held by each shard thread for its whole life: if the thread unwinds (a panic outside the
/// room and connection boundaries), the server is marked failing and shut down.
struct LostShardGuard {
    index: usize,
    /// The shard's listening socket: shut down so that the kernel stops queueing new
    /// connections where nobody will accept them (the other shards' listeners take them).
    listener: std::os::fd::RawFd,
    lost: Arc<std::sync::OnceLock<String>>,
    shutdown: Arc<AtomicBool>,
}

impl Drop for LostShardGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let reason = format!("shard {} stopped after a panic", self.index);
        tracing::error!(shard = self.index, "{reason}; /health answers 503 and the server exits in {LOST_SHARD_GRACE:?}");
        // SAFETY: shutdown() on a descriptor this process owns; the descriptor is not closed,
        // so whatever still holds it cannot touch a reused number.
        unsafe { libc::shutdown(self.listener, libc::SHUT_RDWR) };
        let _ = self.lost.set(reason);
        let shutdown = self.shutdown.clone();
        let _ = std::thread::Builder::new().name("lost-shard".into()).spawn(move || {
            std::thread::sleep(LOST_SHARD_GRACE);
            shutdown.store(true, Ordering::Relaxed);
        });
    }
}

/// One listener per shard on the same address; with port 0 the first picks the port.
fn bind_listeners(addr: SocketAddr, shards: usize) -> anyhow::Result<Vec<Socket>> {
    if addr.port() != 0 {
        // SO_REUSEPORT would let a second server of the same user bind silently and take half
        // the connections; a plain bind first makes "address in use" an error again.
        let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        probe.set_reuse_address(true)?;
        probe.bind(&addr.into()).with_context(|| format!("cannot listen on {addr} (another server running?)"))?;
    }
    let mut listeners: Vec<Socket> = Vec::with_capacity(shards);
    let mut bound = addr;
    for _ in 0..shards {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&bound.into()).with_context(|| format!("cannot listen on {bound}"))?;
        socket.listen(limits::LISTEN_BACKLOG)?;
        if let Some(actual) = socket.local_addr()?.as_socket() {
            bound = actual;
        }
        listeners.push(socket);
    }
    Ok(listeners)
}

/// The `/pubsub` proxy's threads, when a `--proxy-*-url` is set.
fn start_proxy(config: &ServeConfig) -> anyhow::Result<Option<crate::proxy::Proxy>> {
    if config.proxy_connect_url.is_none() && config.proxy_join_url.is_none() && config.proxy_publish_url.is_none() {
        return Ok(None);
    }
    let proxy = crate::proxy::Proxy::start(crate::proxy::ProxyConfig {
        connect_url: config.proxy_connect_url.clone(),
        join_url: config.proxy_join_url.clone(),
        publish_url: config.proxy_publish_url.clone(),
        // Validation requires it with any proxy URL.
        secret: config.webhook_secret.clone().unwrap_or_default(),
        timeout: config.proxy_timeout,
    })
    .map_err(|e| anyhow::anyhow!("cannot start the /pubsub proxy: {e}"))?;
    info!(
        connect = config.proxy_connect_url.is_some(),
        join = config.proxy_join_url.is_some(),
        publish = config.proxy_publish_url.is_some(),
        "/pubsub asks the app's backend"
    );
    Ok(Some(proxy))
}

/// This machine's host name (for the default instance id).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "localhost".into())
}

/// First SIGTERM/SIGINT: start the graceful shutdown. Second: exit at once.
fn watch_signals(shutdown: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])?;
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for signal in signals.forever() {
            if shutdown.swap(true, Ordering::Relaxed) {
                warn!(signal, "second signal: exiting without waiting for connections");
                std::process::exit(1);
            }
            info!(signal, "shutting down: closing connections with 1001");
        }
    })?;
    Ok(())
}
