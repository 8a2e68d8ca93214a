//! Server metrics: per-shard counters, Prometheus text and the /health summary.
//!
//! Each shard writes only its own [`ShardMetrics`]; any shard may read all of them to answer a
//! scrape. Single-writer counters need no read-modify-write instruction: a relaxed load and
//! store compile to plain moves, so counting on the hot path costs no more than a local
//! variable, while a scrape still sees every shard's values without messaging them.

pub mod latency;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// A monotonically increasing count, written by one thread only.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard may call this.
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down, written by one thread only.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (may be negative). Only the owning shard may call this.
    pub fn add(&self, n: i64) {
        self.0.store(self.0.load(Relaxed) + n, Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Why a request or WebSocket upgrade was refused, for `partyflow_handshakes_failed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed request or handshake (400).
    BadRequest,
    /// Unknown path (404).
    NotFound,
    /// Wrong method (405).
    MethodNotAllowed,
    /// Plain GET on a WebSocket path or wrong version (426).
    UpgradeRequired,
    /// Origin not allowed (403).
    Forbidden,
    /// Head over the size limit (431).
    HeaderTooLarge,
    /// Body over the size limit (413).
    BodyTooLarge,
    /// Head not complete before the deadline (408).
    Timeout,
    /// Connection caps reached (503).
    Overloaded,
    /// Missing, forged or expired token (401).
    Unauthorized,
    /// Room-API requests over the per-address rate (429).
    RateLimited,
}

impl Refusal {
    const ALL: [Refusal; 11] = [
        Refusal::BadRequest,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::UpgradeRequired,
        Refusal::Forbidden,
        Refusal::HeaderTooLarge,
        Refusal::BodyTooLarge,
        Refusal::Timeout,
        Refusal::Overloaded,
        Refusal::Unauthorized,
        Refusal::RateLimited,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::BadRequest => "bad_request",
            Refusal::NotFound => "not_found",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::UpgradeRequired => "upgrade_required",
            Refusal::Forbidden => "forbidden",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::Timeout => "timeout",
            Refusal::Overloaded => "overloaded",
            Refusal::Unauthorized => "unauthorized",
            Refusal::RateLimited => "rate_limited",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Close codes counted individually; any other code is counted as `other`.
const CLOSE_CODES: [u16; 7] = [1000, 1001, 1002, 1007, 1008, 1009, 1011];

/// Counters of one shard. Aligned so two shards never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardMetrics {
    /// Open WebSocket connections owned by this shard.
    pub connections: Gauge,
    /// Rooms with at least one member on this shard.
    pub rooms: Gauge,
    /// WebSocket frames received.
    pub frames_in: Counter,
    /// WebSocket frames queued for sending (data, control and close).
    pub frames_out: Counter,
    /// Complete data messages received.
    pub messages_in: Counter,
    /// Data messages queued for delivery (one per recipient).
    pub messages_out: Counter,
    /// Bytes read from sockets.
    pub bytes_in: Counter,
    /// Bytes written to sockets.
    pub bytes_out: Counter,
    /// Completed WebSocket handshakes.
    pub handshakes_ok: Counter,
    /// Connections this shard accepted and passed to the room's owner shard.
    pub handoffs_sent: Counter,
    /// Connections this shard received from other shards.
    pub handoffs_received: Counter,
    /// Members closed with 1008 because their outbound queue passed its limit.
    pub slow_consumer_disconnects: Counter,
    /// Peers closed because nothing arrived within the pong timeout.
    pub heartbeat_timeouts: Counter,
    /// `/relay` and `/echo` connections closed for sending over their message rate.
    pub rate_limit_closes: Counter,
    /// Pings left unanswered because the peer sent them faster than its rate.
    pub pings_ignored: Counter,
    /// `RECONNECT`s answered with a backfill.
    pub reconnects_backfilled: Counter,
    /// `RECONNECT`s answered with a snapshot only.
    pub reconnects_snapshot: Counter,
    /// `RECONNECT`s answered with `RECONNECT_FAILED`.
    pub reconnects_expired: Counter,
    /// Events replayed in backfills.
    pub backfilled_events: Counter,
    /// Game connections that left an ACK unanswered through every resend.
    pub degraded_connections: Counter,
    /// ACKs that matched nothing awaited (unknown, foreign or late).
    pub unmatched_acks: Counter,
    /// HEARTBEATs that disagreed with the room and got a STATE_SNAPSHOT.
    pub state_resyncs: Counter,
    /// Game rooms given up because their lease was lost or ran out.
    pub rooms_fenced: Counter,
    /// Connections closed for sending no message within the idle timeout.
    pub idle_closes: Counter,
    /// Game rooms closed because their handling panicked.
    pub room_panics: Counter,
    /// Connections closed with 1011 because their handling panicked.
    pub connection_panics: Counter,
    /// Times a connection spent its poll budget and waited for the shard's next ring poll.
    pub poll_budget_deferrals: Counter,
    /// Payload bytes of the messages compressed, before (permessage-deflate).
    pub deflate_bytes_before: Counter,
    /// Their payload bytes after.
    pub deflate_bytes_after: Counter,
    /// Messages compressed (once each, whatever the number of recipients).
    pub deflate_compressed: Counter,
    /// Messages sent plain on compressed connections (small, or not smaller compressed).
    pub deflate_skipped: Counter,
    /// Rooms closed through the admin API.
    pub admin_closes: Counter,
    /// Kicks through the admin API.
    pub admin_kicks: Counter,
    handshake_failures: [Counter; Refusal::ALL.len()],
    close_codes_sent: [Counter; CLOSE_CODES.len() + 1],
    /// The shard's latency histograms as last published (about once a second) by the shard.
    pub latency: Mutex<latency::Published>,
}

impl ShardMetrics {
    /// Counts a refused request.
    pub fn refused(&self, why: Refusal) {
        if let Some(c) = self.handshake_failures.get(why.index()) {
            c.add(1);
        }
    }

    /// Counts a close frame sent with `code`.
    pub fn close_sent(&self, code: u16) {
        let i = CLOSE_CODES.iter().position(|c| *c == code).unwrap_or(CLOSE_CODES.len());
        if let Some(c) = self.close_codes_sent.get(i) {
            c.add(1);
        }
    }
}

/// The seed's server statistics: connections and rooms now, messages and bytes since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Open WebSocket connections.
    pub connections: i64,
    /// Rooms with members: relay rooms with a member on the shard, game rooms and `/pubsub`
    /// rooms the shard owns.
    pub rooms: i64,
    /// Data messages queued for delivery, one per recipient.
    pub messages_sent: u64,
    /// Data messages received.
    pub messages_recv: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Bytes read from sockets.
    pub bytes_recv: u64,
}

impl std::ops::Add for Stats {
    type Output = Stats;

    fn add(self, o: Stats) -> Stats {
        Stats {
            connections: self.connections + o.connections,
            rooms: self.rooms + o.rooms,
            messages_sent: self.messages_sent.wrapping_add(o.messages_sent),
            messages_recv: self.messages_recv.wrapping_add(o.messages_recv),
            bytes_sent: self.bytes_sent.wrapping_add(o.bytes_sent),
            bytes_recv: self.bytes_recv.wrapping_add(o.bytes_recv),
        }
    }
}

impl ShardMetrics {
    /// This shard's [`Stats`].
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.connections.get(),
            rooms: self.rooms.get(),
            messages_sent: self.messages_out.get(),
            messages_recv: self.messages_in.get(),
            bytes_sent: self.bytes_out.get(),
            bytes_recv: self.bytes_in.get(),
        }
    }
}

/// All shards' metrics plus process facts.
#[derive(Debug)]
pub struct Metrics {
    shards: Vec<ShardMetrics>,
    started: Instant,
    /// Resident memory and open descriptors, as last refreshed.
    pub process: ProcessStats,
}

impl Metrics {
    /// Metrics for `shards` shards, the process having started at `started`.
    pub fn new(shards: usize, started: Instant) -> Self {
        let process = ProcessStats::default();
        process.refresh();
        Metrics { shards: (0..shards).map(|_| ShardMetrics::default()).collect(), started, process }
    }

    /// The counters of shard `index`.
    #[allow(clippy::indexing_slicing)] // Only the runtime calls this, with its own shard index (< shards).
    pub fn shard(&self, index: usize) -> &ShardMetrics {
        &self.shards[index]
    }

    /// The [`Stats`] of every shard, summed.
    pub fn stats(&self) -> Stats {
        self.shards.iter().map(ShardMetrics::stats).fold(Stats::default(), |a, b| a + b)
    }

    fn total(&self, f: impl Fn(&ShardMetrics) -> i64) -> i64 {
        self.shards.iter().map(f).sum()
    }

    /// The `/health` body.
    pub fn health(&self, now: Instant) -> serde_json::Value {
        serde_json::json!({
            "status": "ok",
            "version": crate::VERSION,
            "shards": self.shards.len(),
            "connections": self.total(|s| s.connections.get()),
            "rooms": self.total(|s| s.rooms.get()),
            "uptimeSec": now.saturating_duration_since(self.started).as_secs(),
            "latencyMs": latency::summary(self.shards.iter().map(|s| &s.latency)),
            "stats": self.stats_json(),
        })
    }

    /// `{connections, rooms, messagesSent, …, "shards": [{…}, …]}`: the sum and each shard.
    fn stats_json(&self) -> serde_json::Value {
        let mut total = serde_json::to_value(self.stats()).unwrap_or_default();
        let shards: Vec<serde_json::Value> = self.shards.iter().map(|s| serde_json::to_value(s.stats()).unwrap_or_default()).collect();
        crate::protocol::set_field(&mut total, "shards", shards);
        total
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self, now: Instant) -> String {
        let mut out = String::with_capacity(4096);
        let gauges: [Family<i64>; 2] = [
            ("partyflow_connections", "Open WebSocket connections", |s| s.connections.get()),
            ("partyflow_rooms", "Rooms with at least one member", |s| s.rooms.get()),
        ];
        for (name, help, get) in gauges {
            family(&mut out, name, help, "gauge");
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(s));
            }
        }
        let counters: [Family<u64>; 26] = [
            ("partyflow_frames_in_total", "WebSocket frames received", |s| s.frames_in.get()),
            ("partyflow_frames_out_total", "WebSocket frames queued for sending", |s| s.frames_out.get()),
            ("partyflow_messages_in_total", "Data messages received", |s| s.messages_in.get()),
            ("partyflow_messages_out_total", "Data messages queued, one per recipient", |s| s.messages_out.get()),
            ("partyflow_bytes_in_total", "Bytes read from sockets", |s| s.bytes_in.get()),
            ("partyflow_bytes_out_total", "Bytes written to sockets", |s| s.bytes_out.get()),
            ("partyflow_handshakes_ok_total", "Completed WebSocket handshakes", |s| s.handshakes_ok.get()),
            ("partyflow_handoffs_sent_total", "Connections passed to the room's owner shard", |s| s.handoffs_sent.get()),
            ("partyflow_handoffs_received_total", "Connections received from other shards", |s| s.handoffs_received.get()),
            ("partyflow_slow_consumer_disconnects_total", "Members closed for a full outbound queue", |s| s.slow_consumer_disconnects.get()),
            ("partyflow_heartbeat_timeouts_total", "Peers closed for silence past the pong timeout", |s| s.heartbeat_timeouts.get()),
            ("partyflow_backfilled_events_total", "Events replayed to reconnecting clients", |s| s.backfilled_events.get()),
            ("partyflow_rate_limit_closes_total", "Relay and echo connections closed with 1008 for their message rate", |s| s.rate_limit_closes.get()),
            ("partyflow_pings_ignored_total", "Pings left unanswered past the per-connection ping rate", |s| s.pings_ignored.get()),
            ("partyflow_degraded_connections_total", "Game connections that left an ACK unanswered through every resend", |s| s.degraded_connections.get()),
            ("partyflow_unmatched_acks_total", "ACKs that matched nothing awaited (unknown, foreign or late)", |s| s.unmatched_acks.get()),
            ("partyflow_state_resyncs_total", "HEARTBEATs whose state disagreed, answered with STATE_SNAPSHOT", |s| s.state_resyncs.get()),
            ("partyflow_rooms_fenced_total", "Game rooms given up because their lease was lost or ran out", |s| s.rooms_fenced.get()),
            ("partyflow_idle_closes_total", "Connections closed for sending no message within --idle-connection-timeout", |s| s.idle_closes.get()),
            ("partyflow_room_panics_total", "Game rooms closed (ROOM_CLOSED internal_error) because their handling panicked", |s| s.room_panics.get()),
            ("partyflow_connection_panics_total", "Connections closed with 1011 because their handling panicked", |s| s.connection_panics.get()),
            ("partyflow_compression_bytes_before_total", "Payload bytes of the messages compressed, before (permessage-deflate)", |s| {
                s.deflate_bytes_before.get()
            }),
            ("partyflow_compression_bytes_after_total", "Payload bytes of the messages compressed, after", |s| s.deflate_bytes_after.get()),
            ("partyflow_compression_messages_compressed_total", "Messages compressed, once each whatever the number of recipients", |s| {
                s.deflate_compressed.get()
            }),
            ("partyflow_compression_messages_skipped_total", "Messages sent plain on compressed connections (small or not smaller compressed)", |s| {
                s.deflate_skipped.get()
            }),
            ("partyflow_poll_budget_deferrals_total", "Times a connection spent its poll budget and waited for the shard's next ring poll", |s| {
                s.poll_budget_deferrals.get()
            }),
        ];
        let name = "partyflow_reconnects_total";
        family(&mut out, name, "RECONNECT answers, by outcome", "counter");
        for (i, s) in self.shards.iter().enumerate() {
            for (outcome, c) in [("backfill", &s.reconnects_backfilled), ("snapshot", &s.reconnects_snapshot), ("expired", &s.reconnects_expired)] {
                let _ = writeln!(out, "{name}{{shard=\"{i}\",outcome=\"{outcome}\"}} {}", c.get());
            }
        }
        for (name, help, get) in counters {
            family(&mut out, name, help, "counter");
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", get(s));
            }
        }
        let name = "partyflow_admin_actions_total";
        family(&mut out, name, "Admin API actions, by action", "counter");
        for (i, s) in self.shards.iter().enumerate() {
            for (action, c) in [("close", &s.admin_closes), ("kick", &s.admin_kicks)] {
                let _ = writeln!(out, "{name}{{shard=\"{i}\",action=\"{action}\"}} {}", c.get());
            }
        }
        let name = "partyflow_handshakes_failed_total";
        family(&mut out, name, "Requests refused before or during the upgrade", "counter");
        for (i, s) in self.shards.iter().enumerate() {
            for (why, c) in Refusal::ALL.iter().zip(&s.handshake_failures) {
                let _ = writeln!(out, "{name}{{shard=\"{i}\",reason=\"{}\"}} {}", why.label(), c.get());
            }
        }
        let name = "partyflow_close_codes_sent_total";
        family(&mut out, name, "Close frames sent, by status code", "counter");
        for (i, s) in self.shards.iter().enumerate() {
            for (j, c) in s.close_codes_sent.iter().enumerate() {
                let code = CLOSE_CODES.get(j).map_or_else(|| "other".to_string(), u16::to_string);
                let _ = writeln!(out, "{name}{{shard=\"{i}\",code=\"{code}\"}} {}", c.get());
            }
        }
        family(&mut out, "partyflow_uptime_seconds", "Seconds since the server started", "gauge");
        let _ = writeln!(out, "partyflow_uptime_seconds {}", now.saturating_duration_since(self.started).as_secs());
        latency::render(&mut out, self.shards.iter().map(|s| &s.latency));
        self.process.render(&mut out);
        out
    }
}

/// The standard process series (resident memory, open descriptors), so a soak or a dashboard
/// sees memory without access to the host. Read from `/proc/self` by [`ProcessStats::refresh`]
/// on a thread of its own, never by the shard answering a scrape: listing `/proc/self/fd` takes
/// about a millisecond per thousand connections, a stall of the whole shard.
#[derive(Debug, Default)]
pub struct ProcessStats {
    resident_bytes: AtomicU64,
    open_fds: AtomicU64,
}

impl ProcessStats {
    /// Reads the process's resident memory and open descriptors now.
    pub fn refresh(&self) {
        // statm's second field is resident pages.
        let resident_pages = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
        // SAFETY: sysconf has no preconditions.
        let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if let Some(pages) = resident_pages {
            self.resident_bytes.store(pages.saturating_mul(page_size), Relaxed);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.store(fds.count() as u64, Relaxed);
        }
    }

    fn render(&self, out: &mut String) {
        family(out, "process_resident_memory_bytes", "Resident memory size in bytes", "gauge");
        let _ = writeln!(out, "process_resident_memory_bytes {}", self.resident_bytes.load(Relaxed));
        family(out, "process_open_fds", "Number of open file descriptors", "gauge");
        let _ = writeln!(out, "process_open_fds {}", self.open_fds.load(Relaxed));
    }
}

/// A metric family: name, help text, and how to read it from one shard.
type Family<T> = (&'static str, &'static str, fn(&ShardMetrics) -> T);

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes unlabelled process-wide series (`kind`: `gauge` or `counter`) with their help text:
/// the metrics of the Redis and pub/sub threads, which have no shard.
pub fn write_unlabelled(out: &mut String, kind: &str, series: &[(&str, &str, u64)]) {
    for (name, help, value) in series {
        family(out, name, help, kind);
        let _ = writeln!(out, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_exposition() {
        let t0 = Instant::now();
        let m = Metrics::new(2, t0);
        m.shard(0).connections.add(3);
        m.shard(1).connections.add(2);
        m.shard(1).connections.add(-1);
        m.shard(1).close_sent(1008);
        m.shard(1).close_sent(4000);
        m.shard(0).refused(Refusal::Overloaded);
        assert_eq!(m.health(t0)["connections"], 4);
        let text = m.render_prometheus(t0);
        assert!(text.contains("partyflow_connections{shard=\"1\"} 1\n"));
        assert!(text.contains("partyflow_close_codes_sent_total{shard=\"1\",code=\"1008\"} 1\n"));
        assert!(text.contains("partyflow_close_codes_sent_total{shard=\"1\",code=\"other\"} 1\n"));
        assert!(text.contains("partyflow_handshakes_failed_total{shard=\"0\",reason=\"overloaded\"} 1\n"));
    }
}
