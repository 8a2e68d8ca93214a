//! Command line, environment and TOML configuration.
//!
//! Precedence, highest first: command-line flag, `PARTYFLOW_*` environment variable, the TOML
//! file named by `--config`, built-in default. File keys are the flag names without dashes
//! (`max-message-bytes = 1048576`).
//!
//! This file declares the flags (their defaults are the flag table's); reading them in that
//! order is [`load`], checking them together [`validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand};

mod load;
mod validate;

/// PartyFlow: a thread-per-core WebSocket room server for real-time party games.
#[derive(Debug, Parser)]
#[command(name = "partyflow", version = crate::VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeConfig,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve(ServeConfig),
    /// Check this host against the configuration these flags give (kernel, io_uring, limits,
    /// sysctls, CPUs) and print each finding with its fix. Exit 0: fine, 1: warnings, 2: cannot
    /// run.
    Doctor(ServeConfig),
    /// Print a `/pubsub` token (a JWT signed HS256 with --pubsub-secret) for one user, for
    /// operations and testing; an app's backend mints its own with any JWT library.
    Token(TokenArgs),
}

/// What `partyflow token` signs.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (the token's `sub`).
    #[arg(long)]
    pub sub: String,
    /// Rooms the token admits (comma-separated or repeated; a trailing `*` matches a prefix).
    /// Default: any room.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// A JSON object shown beside the user in presence.
    #[arg(long)]
    pub meta: Option<String>,
    /// The server's --pubsub-secret.
    #[arg(long, env = "PARTYFLOW_PUBSUB_SECRET", hide_env_values = true)]
    pub pubsub_secret: String,
}

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Run the server.
    Serve,
    /// Check the host (`partyflow doctor`).
    Doctor,
    /// Print a `/pubsub` token (`partyflow token`).
    Token(TokenArgs),
}

/// Settings of a running server.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// TOML file with any of these settings (keys are the flag names, e.g. `ping-interval = "5s"`).
    #[arg(long, env = "PARTYFLOW_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address every shard listens on (SO_REUSEPORT).
    #[arg(long, env = "PARTYFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Number of shards (one pinned executor each). Default: one per CPU this process may use.
    #[arg(long, env = "PARTYFLOW_SHARDS")]
    pub shards: Option<usize>,

    /// Largest WebSocket message accepted, in bytes (larger: close 1009).
    #[arg(long, env = "PARTYFLOW_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Outbound bytes a connection may have queued before it is closed with 1008.
    #[arg(long, env = "PARTYFLOW_MAX_OUTBOUND_BYTES", default_value_t = 1024 * 1024)]
    pub max_outbound_bytes: usize,

    /// How often the server pings each connection.
    #[arg(long, env = "PARTYFLOW_PING_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Close a peer from which nothing arrived for this long.
    #[arg(long, env = "PARTYFLOW_PONG_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub pong_timeout: Duration,

    /// Most WebSocket connections in the process. Default: the open-file limit less 256.
    #[arg(long, env = "PARTYFLOW_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Most connections from one IP address, those still sending their request and upgraded
    /// ones together (more: 503 at once). A carrier-grade NAT puts many players behind one
    /// address; raise it for load tests from a few addresses.
    #[arg(long, env = "PARTYFLOW_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: usize,

    /// Origins allowed to open WebSockets (repeat, or comma-separate). Default: any origin.
    #[arg(long, env = "PARTYFLOW_ALLOWED_ORIGIN", value_delimiter = ',')]
    pub allowed_origin: Vec<String>,

    /// Largest HTTP request head (request line and headers), in bytes (larger: 431).
    #[arg(long, env = "PARTYFLOW_MAX_REQUEST_HEAD_BYTES", default_value_t = 8 * 1024)]
    pub max_request_head_bytes: usize,

    /// Time a client has to send its whole request head (slower: 408 and closed).
    #[arg(long, env = "PARTYFLOW_REQUEST_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// On SIGTERM/SIGINT, how long clients get to finish the close handshake before exit.
    #[arg(long, env = "PARTYFLOW_SHUTDOWN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Secret that signs room tokens; instances sharing it accept each other's tokens.
    /// Default: random per process (tokens then die with the process).
    #[arg(long, env = "PARTYFLOW_SECRET", hide_env_values = true)]
    pub secret: Option<String>,

    /// How long a room token stays valid.
    #[arg(long, env = "PARTYFLOW_TOKEN_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,

    /// Reclaim a game room after this long with nobody connected.
    #[arg(long, env = "PARTYFLOW_ROOM_IDLE_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub room_idle_timeout: Duration,

    /// Shortest round a room may ask for (roundDurationSec); the API's upper bound is 300 s.
    #[arg(long, env = "PARTYFLOW_MIN_ROUND_DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub min_round_duration: Duration,

    /// Countdown ticks before each round (3 means 3-2-1).
    #[arg(long, env = "PARTYFLOW_COUNTDOWN", default_value_t = 3)]
    pub countdown: u32,

    /// How long scores are shown between rounds.
    #[arg(long, env = "PARTYFLOW_SCORE_REVIEW", default_value = "5s", value_parser = humantime::parse_duration)]
    pub score_review: Duration,

    /// Game messages a connection may send per second (bursts of twice that); more get
    /// RATE_LIMITED.
    #[arg(long, env = "PARTYFLOW_CLIENT_MESSAGE_RATE", default_value_t = 20.0)]
    pub client_message_rate: f64,

    /// How long a game room keeps its sequenced events for backfill. Default: the longest
    /// reconnect window (--host-backfill-window, --reconnect-snapshot-window; 30 s), as no
    /// reconnect reads further back.
    #[arg(long, env = "PARTYFLOW_EVENT_LOG_RETENTION", value_parser = humantime::parse_duration)]
    pub event_log_retention: Option<Duration>,

    /// Most events a game room keeps for backfill (older ones are dropped first).
    #[arg(long, env = "PARTYFLOW_EVENT_LOG_MAX_EVENTS", default_value_t = 1024)]
    pub event_log_max_events: usize,

    /// A player or spectator back within this gets every missed event in RECONNECTED.
    #[arg(long, env = "PARTYFLOW_RECONNECT_BACKFILL_WINDOW", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconnect_backfill_window: Duration,

    /// The host back within this gets every missed event; later, a snapshot.
    #[arg(long, env = "PARTYFLOW_HOST_BACKFILL_WINDOW", default_value = "30s", value_parser = humantime::parse_duration)]
    pub host_backfill_window: Duration,

    /// A player back within this (past the backfill window) gets a snapshot; later,
    /// RECONNECT_FAILED and it watches until the next turn.
    #[arg(long, env = "PARTYFLOW_RECONNECT_SNAPSHOT_WINDOW", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reconnect_snapshot_window: Duration,

    /// Silent grace after a player's connection drops; past it the player is not chosen to
    /// explain.
    #[arg(long, env = "PARTYFLOW_DISCONNECT_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub disconnect_grace: Duration,

    /// After this long away the room gets PLAYER_CONNECTION_LOST.
    #[arg(long, env = "PARTYFLOW_DISCONNECT_WARNING", default_value = "15s", value_parser = humantime::parse_duration)]
    pub disconnect_warning: Duration,

    /// After this long away the player is removed (PLAYER_LEFT, reason "disconnected").
    #[arg(long, env = "PARTYFLOW_DISCONNECT_REMOVE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub disconnect_remove: Duration,

    /// A host away this long during a round pauses it (GAME_PAUSED, reason "host_disconnected").
    #[arg(long, env = "PARTYFLOW_HOST_PAUSE_AFTER", default_value = "10s", value_parser = humantime::parse_duration)]
    pub host_pause_after: Duration,

    /// A host away this long is replaced by the first connected player in seat order.
    #[arg(long, env = "PARTYFLOW_HOST_PROMOTE_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub host_promote_after: Duration,

    /// Wait this long for an ACK before resending the event.
    #[arg(long, env = "PARTYFLOW_ACK_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,

    /// Resends of an unacknowledged event before the connection is marked degraded.
    #[arg(long, env = "PARTYFLOW_ACK_RETRIES", default_value_t = 2)]
    pub ack_retries: u32,

    /// Redis for write-behind persistence and crash recovery (`redis://host:port/db`).
    /// Default: none, everything stays in memory. Needs --secret.
    #[arg(long, env = "PARTYFLOW_REDIS")]
    pub redis: Option<String>,

    /// This instance's id among several sharing one Redis. Default: host name and port.
    #[arg(long, env = "PARTYFLOW_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Prefix of every Redis key this server writes.
    #[arg(long, env = "PARTYFLOW_REDIS_PREFIX", default_value = "partyflow:")]
    pub redis_prefix: String,

    /// A changed room is written to Redis at most this long after its change.
    #[arg(long, env = "PARTYFLOW_PERSIST_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub persist_interval: Duration,

    /// TTL of a game room's ownership lease in Redis (renewed every third of it). An instance
    /// that cannot renew it for this long stops serving the room; after an instance dies,
    /// another takes its rooms over this long after its last renewal.
    #[arg(long, env = "PARTYFLOW_ROOM_LEASE_TTL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub room_lease_ttl: Duration,

    /// TTL of a room's key in Redis, refreshed on every write.
    #[arg(long, env = "PARTYFLOW_PERSIST_TTL", default_value = "2h", value_parser = humantime::parse_duration)]
    pub persist_ttl: Duration,

    /// Snapshots that may wait for the Redis thread; beyond that a room is retried with the
    /// next flush (counted as queue-full).
    #[arg(long, env = "PARTYFLOW_PERSIST_QUEUE", default_value_t = 8192)]
    pub persist_queue: usize,

    /// Messages a `/relay` or `/echo` connection may send per second (bursts of twice that);
    /// more closes it with 1008. Game connections have --client-message-rate.
    #[arg(long, env = "PARTYFLOW_CONNECTION_MESSAGE_RATE", default_value_t = 2000.0)]
    pub connection_message_rate: f64,

    /// Message bytes any connection (game, `/relay`, `/echo`) may send per second, in bursts of
    /// twice that (at least one largest message); more closes it with 1008.
    #[arg(long, env = "PARTYFLOW_CONNECTION_BYTE_RATE", default_value_t = 1024 * 1024)]
    pub connection_byte_rate: u64,

    /// Pings answered per second per connection (bursts of twice that); more go unanswered.
    #[arg(long, env = "PARTYFLOW_PINGS_PER_SEC", default_value_t = 10.0)]
    pub pings_per_sec: f64,

    /// Room-API requests (room creation, joins) per second per client address and shard
    /// (bursts of twice that); more get 429 with Retry-After.
    #[arg(long, env = "PARTYFLOW_API_RATE_PER_IP", default_value_t = 200.0)]
    pub api_rate_per_ip: f64,

    /// Connections still sending their HTTP request (not yet upgraded or answered), in the
    /// whole process; past it new connections get 503 at once.
    #[arg(long, env = "PARTYFLOW_MAX_PENDING_CONNECTIONS", default_value_t = 4096)]
    pub max_pending_connections: usize,

    /// The same, per client address.
    #[arg(long, env = "PARTYFLOW_MAX_PENDING_PER_IP", default_value_t = 64)]
    pub max_pending_per_ip: usize,

    /// Close a WebSocket connection that sent no message for this long (pongs do not count);
    /// 0 keeps silent connections open.
    #[arg(long, env = "PARTYFLOW_IDLE_CONNECTION_TIMEOUT", default_value = "10m", value_parser = humantime::parse_duration)]
    pub idle_connection_timeout: Duration,

    /// Most frames one WebSocket message may be fragmented into (more: close 1009). Default:
    /// one frame per 64 bytes of --max-message-bytes, at least 1024, so any message within the
    /// size limit may come in 64-byte frames while an endless run of empty frames is cut off.
    #[arg(long, env = "PARTYFLOW_MAX_FRAGMENTS")]
    pub max_fragments: Option<usize>,

    /// Most game rooms one shard holds; creating more answers 503 SERVER_FULL.
    #[arg(long, env = "PARTYFLOW_MAX_ROOMS_PER_SHARD", default_value_t = 20_000)]
    pub max_rooms_per_shard: usize,

    /// A game room is closed (ROOM_CLOSED, reason "max_lifetime") this long after it was
    /// created or loaded.
    #[arg(long, env = "PARTYFLOW_ROOM_MAX_LIFETIME", default_value = "12h", value_parser = humantime::parse_duration)]
    pub room_max_lifetime: Duration,

    /// Largest HTTP request body, in bytes (larger: 413).
    #[arg(long, env = "PARTYFLOW_MAX_BODY_BYTES", default_value_t = 16 * 1024)]
    pub max_body_bytes: usize,

    /// HS256 secret of `/pubsub` tokens (JWTs with `sub`, optional `exp`, `rooms`, `meta`):
    /// the upgrade then needs one in `?token=` or `Authorization: Bearer`. Default: `/pubsub`
    /// is open and each connection is its own user (for development).
    #[arg(long, env = "PARTYFLOW_PUBSUB_SECRET", hide_env_values = true)]
    pub pubsub_secret: Option<String>,

    /// Rooms one `/pubsub` connection may be in at once (more: TOO_MANY_ROOMS).
    #[arg(long, env = "PARTYFLOW_PUBSUB_MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub pubsub_max_rooms_per_connection: usize,

    /// Key of the server API (`/api/...`, `Authorization: Bearer KEY`) for an app's backend:
    /// publish, send to a user, presence, disconnect. Default: the API is off (404).
    #[arg(long, env = "PARTYFLOW_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Send room and game events to this URL (http or https) as signed JSON batches.
    #[arg(long, env = "PARTYFLOW_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Signs webhook requests (HMAC-SHA256); required with --webhook-url, at least 16 characters.
    #[arg(long, env = "PARTYFLOW_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Webhook event types or prefixes to send (comma-separated, e.g. `game.,room.closed`; default all).
    #[arg(long, env = "PARTYFLOW_WEBHOOK_EVENTS", value_delimiter = ',')]
    pub webhook_events: Vec<String>,

    /// Most events in one webhook request.
    #[arg(long, env = "PARTYFLOW_WEBHOOK_BATCH", default_value_t = 100)]
    pub webhook_batch: usize,

    /// One webhook request's time limit (then it is retried).
    #[arg(long, env = "PARTYFLOW_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,

    /// Undelivered webhook events older than this are dropped (logged and counted).
    #[arg(long, env = "PARTYFLOW_WEBHOOK_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub webhook_max_age: Duration,

    /// Webhook events waiting in memory (full: the oldest is dropped and counted).
    #[arg(long, env = "PARTYFLOW_WEBHOOK_QUEUE", default_value_t = 100_000)]
    pub webhook_queue: usize,

    /// Ask the app's backend (POST, signed like webhooks) before answering a `/pubsub` upgrade: it
    /// answers who the connection is (`200 {"user", "meta"?, "rooms"?}`) or refuses it (`403`).
    #[arg(long, env = "PARTYFLOW_PROXY_CONNECT_URL")]
    pub proxy_connect_url: Option<String>,

    /// Ask the app's backend before a `/pubsub` join (`200` allows, `403` refuses: FORBIDDEN).
    #[arg(long, env = "PARTYFLOW_PROXY_JOIN_URL")]
    pub proxy_join_url: Option<String>,

    /// Ask the app's backend before a `/pubsub` publish (it may allow, replace the data or refuse).
    #[arg(long, env = "PARTYFLOW_PROXY_PUBLISH_URL")]
    pub proxy_publish_url: Option<String>,

    /// How long a proxy call may take: past it, `503` on connect, `PROXY_UNAVAILABLE` on join
    /// and publish.
    #[arg(long, env = "PARTYFLOW_PROXY_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub proxy_timeout: Duration,

    /// Negotiate permessage-deflate (RFC 7692) with clients that offer it (`false`: declined).
    #[arg(long, env = "PARTYFLOW_COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub compression: bool,

    /// Messages smaller than this go uncompressed on a compressed connection (compressing them
    /// costs more than it saves; perf/RESULTS.md).
    #[arg(long, env = "PARTYFLOW_COMPRESSION_MIN_BYTES", default_value_t = 256)]
    pub compression_min_bytes: usize,

    /// Serve the web client at `/` (`false`: only the API and the WebSocket endpoints).
    #[arg(long, env = "PARTYFLOW_WEB_CLIENT", default_value_t = true, action = clap::ArgAction::Set)]
    pub web_client: bool,

    /// Serve the admin page at `/admin` (it asks for --api-key and uses the admin API; `false`:
    /// no page, the API stays).
    #[arg(long, env = "PARTYFLOW_ADMIN_PAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub admin_page: bool,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `partyflow=debug`).
    #[arg(long, env = "PARTYFLOW_LOG", default_value = "info")]
    pub log: String,

    /// Log lines as `text` (for people) or `json` (one object per line, for log collectors).
    #[arg(long, env = "PARTYFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Default of `--max-connections-per-ip`: far above what one household or office holds, and
/// enough for a carrier-grade NAT's share of players on one server; a flood of idle connections
/// from one address stops there.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1000;

/// The smallest average frame the default `--max-fragments` allows a message to arrive in.
const MIN_AVERAGE_FRAGMENT_BYTES: usize = 64;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: timestamp, level, target, message and fields.
    Json,
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A key names no setting, or a value has the wrong shape.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Flags, environment or file values clap refused.
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// Values that parse but make no sense (the message names the flag).
    #[error("{0}")]
    Value(String),
}

impl Default for ServeConfig {
    /// The built-in defaults, as the flag table gives them; the environment is not read (an
    /// embedding program decides what its own environment means).
    fn default() -> Self {
        let command = ServeConfig::augment_args(clap::Command::new("partyflow")).mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["partyflow"]);
        // Every field has a default or is optional, so the empty command line always parses.
        ServeConfig::from_arg_matches(&matches).unwrap_or_else(|e| unreachable!("the built-in defaults parse: {e}"))
    }
}

#[cfg(test)]
mod tests;
