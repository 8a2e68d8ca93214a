//! The final report: a table on stdout, full JSON, a self-contained HTML page, and SLO gates.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::sampler::Buckets;
use crate::stats::{Stats, PERCENTILES};

/// Server resource use over the measured window (what could be observed).
#[derive(Debug, Clone, Default)]
pub struct ServerUsage {
    /// Share of one core (local server only).
    pub cpu_share: Option<f64>,
    pub rss_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    /// RSS before the run's first connection (local server only).
    pub rss_before_kib: Option<u64>,
    /// Messages the server queued per second, from its /metrics.
    pub messages_out_per_sec: Option<f64>,
    /// What the server's own histograms counted in the measured window, in the order of
    /// [`SERVER_LATENCIES`] (empty when /metrics could not be read).
    pub latency: Vec<Buckets>,
}

/// The server's latency histograms the report quotes: the time frames waited in outbound
/// queues tells server time from client time in a capacity run.
pub const SERVER_LATENCIES: [(&str, &str); 3] = [
    ("partyflow_outbound_queue_delay_seconds", "outbound queue delay"),
    ("partyflow_room_timer_lateness_seconds", "room timer lateness"),
    ("partyflow_read_handling_seconds", "read handling"),
];

/// Quantiles of the server's histograms, as the bucket bounds they fall in.
const SERVER_QUANTILES: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// SLO gates; `None` disables one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gates {
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_error_rate: Option<f64>,
    pub max_lost: Option<u64>,
    /// KiB per minute (soak).
    pub max_rss_growth: Option<f64>,
}

pub struct Report {
    pub scenario: &'static str,
    pub command: String,
    pub measured: Duration,
    pub stats: Stats,
    pub server: Option<ServerUsage>,
    /// CPU of every client thread together, as a share of one core.
    pub loadgen_cpu_share: f64,
    /// Client threads (`--threads`).
    pub threads: usize,
}

/// A bucket bound in ms for the table (`+Inf` past the last bucket).
fn bound_ms(bound: Option<f64>) -> String {
    match bound {
        Some(b) if b.is_finite() => format!("{}", b * 1000.0),
        Some(_) => "+Inf".into(),
        None => "-".into(),
    }
}

/// Each server histogram's count and the bucket bounds (ms) its quantiles fall in.
fn server_latency_json(latency: &[Buckets]) -> Value {
    let mut m = serde_json::Map::new();
    for ((family, _), buckets) in SERVER_LATENCIES.iter().zip(latency) {
        let mut q = serde_json::Map::new();
        for (quantile, name) in SERVER_QUANTILES {
            let bound = buckets.quantile_bound(quantile).filter(|b| b.is_finite()).map(|b| b * 1000.0);
            q.insert(name.replace('.', ""), bound.into());
        }
        q.insert("count".into(), buckets.count().into());
        m.insert((*family).into(), Value::Object(q));
    }
    Value::Object(m)
}

fn ms(h: &Histogram<u64>, p: f64) -> f64 {
    h.value_at_percentile(p) as f64 / 1000.0
}

fn percentiles_json(h: &Histogram<u64>) -> Value {
    let mut m = serde_json::Map::new();
    for p in PERCENTILES {
        m.insert(format!("p{p}"), ms(h, p).into());
    }
    m.insert("max".into(), (h.max() as f64 / 1000.0).into());
    m.insert("count".into(), h.len().into());
    Value::Object(m)
}

fn percentile_row(name: &str, h: &Histogram<u64>) -> String {
    let mut row = format!("{name:22}");
    for p in PERCENTILES {
        let _ = write!(row, " {:>9.3}", ms(h, p));
    }
    let _ = write!(row, " {:>9.3} {:>9}", h.max() as f64 / 1000.0, h.len());
    row
}

impl Report {
    /// Bytes the clients read off their sockets per message delivered (framing, acknowledgements
    /// and messages not counted as deliveries included).
    pub fn wire_bytes_per_delivery(&self) -> f64 {
        self.stats.wire_bytes as f64 / self.stats.delivered.max(1) as f64
    }

    /// The server's memory per connection open at the end, less what it held before the run
    /// (its code and fixed buffers): the cost of one more connection.
    pub fn added_per_connection(&self) -> Option<f64> {
        let server = self.server.as_ref()?;
        let (end, before) = (server.rss_kib?, server.rss_before_kib?);
        let open = self.stats.soak.samples.last().and_then(|p| p.connections).unwrap_or(self.stats.connections as f64).max(1.0);
        Some((end as f64 - before as f64) * 1024.0 / open)
    }

    pub fn delivered_per_sec(&self) -> f64 {
        self.stats.delivered as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    fn error_rate(&self) -> f64 {
        self.stats.error_count() as f64 / (self.stats.delivered + self.stats.sent).max(1) as f64
    }

    /// The gates this run violated, each named with its measured value.
    pub fn violations(&self, gates: &Gates) -> Vec<String> {
        let mut out = Vec::new();
        let p95 = ms(&self.stats.latency, 95.0);
        let p99 = ms(&self.stats.latency, 99.0);
        if let Some(max) = gates.p95_ms.filter(|max| p95 > *max) {
            out.push(format!("--slo-p95-ms {max}: measured p95 {p95:.3} ms"));
        }
        if let Some(max) = gates.p99_ms.filter(|max| p99 > *max) {
            out.push(format!("--slo-p99-ms {max}: measured p99 {p99:.3} ms"));
        }
        if let Some(max) = gates.max_error_rate.filter(|max| self.error_rate() > *max) {
            out.push(format!("--max-error-rate {max}: measured {:.6} ({:?})", self.error_rate(), self.stats.errors));
        }
        let lost = self.stats.lost + self.stats.duplicated + self.stats.out_of_order + self.stats.reconnects.gaps_after_backfill;
        if let Some(max) = gates.max_lost.filter(|max| lost > *max) {
            out.push(format!(
                "--max-lost {max}: {} lost, {} duplicated, {} out of order, {} missing after backfill",
                self.stats.lost, self.stats.duplicated, self.stats.out_of_order, self.stats.reconnects.gaps_after_backfill
            ));
        }
        if let Some(max) = gates.max_rss_growth {
            match self.stats.soak.rss_slope_kib_per_min() {
                Some(slope) if slope > max => out.push(format!("--max-rss-growth-kib-per-min {max}: memory grew {slope:.0} KiB per minute")),
                Some(_) => {}
                None => out.push("--max-rss-growth-kib-per-min: fewer than three memory samples".into()),
            }
        }
        if self.stats.delivered == 0 {
            out.push("nothing was delivered in the measured window".into());
        }
        out
    }

    pub fn table(&self) -> String {
        let s = &self.stats;
        let mut out = String::new();
        let _ = writeln!(out, "\nscenario {}  connections {}  measured {:.1} s", self.scenario, s.connections, self.measured.as_secs_f64());
        let _ = writeln!(
            out,
            "sent {}  delivered {} ({:.0}/s)  lost {}  duplicated {}  out-of-order {}  resent {}  acks {}  late swipes {}",
            s.sent,
            s.delivered,
            self.delivered_per_sec(),
            s.lost,
            s.duplicated,
            s.out_of_order,
            s.resent,
            s.acks_sent,
            s.late_swipes
        );
        let errors: Vec<String> = s.errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "errors {} {}", s.error_count(), errors.join(" "));
        let _ = writeln!(out, "wire: {} bytes received, {:.1} per delivery", s.wire_bytes, self.wire_bytes_per_delivery());
        let mut head = format!("{:22}", "latency ms");
        for p in PERCENTILES {
            let _ = write!(head, " {:>9}", format!("p{p}"));
        }
        let _ = writeln!(out, "{head} {:>9} {:>9}", "max", "n");
        let _ = writeln!(out, "{}", percentile_row("all events", &s.latency));
        for (kind, h) in &s.by_type {
            let _ = writeln!(out, "{}", percentile_row(&format!("  {kind}"), h));
        }
        let _ = writeln!(out, "{}", percentile_row("connect", &s.connect));
        let r = &s.reconnects;
        if !r.latency.is_empty() {
            let _ = writeln!(out, "{}", percentile_row("reconnect", &r.latency));
            let _ = writeln!(
                out,
                "reconnects {}: backfill {}  snapshot {}  expired {}  backfilled events {}  gaps after backfill {}",
                r.latency.len(),
                r.backfill,
                r.snapshot,
                r.expired,
                r.backfilled_events,
                r.gaps_after_backfill
            );
        }
        if !s.tick_jitter.is_empty() {
            let _ = writeln!(out, "{}", percentile_row("timer tick jitter", &s.tick_jitter));
        }
        if !s.scheduling_lag.is_empty() {
            let _ = writeln!(out, "{}", percentile_row("loadgen sched. lag", &s.scheduling_lag));
        }
        if !s.soak.samples.is_empty() {
            out.push_str(&self.soak_table());
        }
        if let Some(server) = &self.server {
            if let Some(cpu) = server.cpu_share {
                let per_delivery = cpu * 1e6 / self.delivered_per_sec().max(1e-9);
                let _ = writeln!(out, "server: CPU {:.1} % of a core, {:.2} CPU-µs per delivery", cpu * 100.0, per_delivery);
            }
            if let (Some(rss), Some(peak)) = (server.rss_kib, server.peak_rss_kib) {
                // Connections open at the end: a soak's last sample (it opened many more in all).
                let open = s.soak.samples.last().and_then(|p| p.connections).unwrap_or(s.connections as f64).max(1.0);
                let _ = writeln!(out, "server: RSS {rss} KiB (peak {peak} KiB), {:.0} B per open connection", rss as f64 * 1024.0 / open);
                if let Some(added) = self.added_per_connection() {
                    let _ = writeln!(
                        out,
                        "server: {added:.0} B added per open connection (RSS less its {} KiB before the run)",
                        server.rss_before_kib.unwrap_or(0)
                    );
                }
            }
            if let Some(rate) = server.messages_out_per_sec {
                let _ = writeln!(out, "server /metrics: {rate:.0} messages queued per second");
            }
            for ((_, what), buckets) in SERVER_LATENCIES.iter().zip(&server.latency) {
                if buckets.count() > 0.0 {
                    let quantiles: Vec<String> =
                        SERVER_QUANTILES.iter().map(|(q, name)| format!("{name} <= {}", bound_ms(buckets.quantile_bound(*q)))).collect();
                    let _ = writeln!(out, "server /metrics: {what} {} ms ({:.0} counted)", quantiles.join(", "), buckets.count());
                }
            }
        }
        let _ = writeln!(
            out,
            "loadgen: CPU {:.1} % of a core ({} threads){}",
            self.loadgen_cpu_share * 100.0,
            self.threads,
            if self.loadgen_cpu_share > 0.9 * self.threads as f64 { "  (saturated: latencies include the client's own queueing)" } else { "" }
        );
        out
    }

    /// The soak's churn, its samples over time and the memory trend.
    fn soak_table(&self) -> String {
        let k = &self.stats.soak;
        let mut out = String::new();
        let _ = writeln!(out, "soak: {} rooms finished and replaced, {} drops, {} leaves, {} joins", k.rooms_finished, k.drops, k.leaves, k.joins);
        let _ = writeln!(out, "{:>8} {:>10} {:>12} {:>8} {:>8}", "at s", "RSS MiB", "connections", "rooms", "errors");
        let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        for p in &k.samples {
            let rss = p.rss_kib.map_or_else(|| "-".to_string(), |r| format!("{:.1}", r as f64 / 1024.0));
            let _ = writeln!(out, "{:>8.0} {rss:>10} {:>12} {:>8} {:>8}", p.at, opt(p.connections), opt(p.rooms), p.errors);
        }
        if let Some(slope) = k.rss_slope_kib_per_min() {
            let _ = writeln!(out, "RSS trend after warm-up: {slope:+.1} KiB per minute (least squares)");
        }
        out
    }

    pub fn json(&self) -> Value {
        let s = &self.stats;
        let by_type: serde_json::Map<String, Value> = s.by_type.iter().map(|(k, h)| (k.clone(), percentiles_json(h))).collect();
        let timeline: Vec<Value> =
            s.timeline.iter().map(|t| json!({"at": t.at, "delivered": t.delivered, "p50Ms": t.p50_ms, "p95Ms": t.p95_ms, "p99Ms": t.p99_ms})).collect();
        json!({
            "scenario": self.scenario,
            "command": self.command,
            "connections": s.connections,
            "measuredSec": self.measured.as_secs_f64(),
            "sent": s.sent,
            "delivered": s.delivered,
            "deliveredPerSec": self.delivered_per_sec(),
            "lost": s.lost,
            "duplicated": s.duplicated,
            "outOfOrder": s.out_of_order,
            "resent": s.resent,
            "acksSent": s.acks_sent,
            "wireBytes": s.wire_bytes,
            "wireBytesPerDelivery": self.wire_bytes_per_delivery(),
            "lateSwipes": s.late_swipes,
            "errors": s.errors,
            "latencyMs": percentiles_json(&s.latency),
            "latencyByTypeMs": by_type,
            "connectMs": percentiles_json(&s.connect),
            "timerTickJitterMs": percentiles_json(&s.tick_jitter),
            "loadgenSchedulingLagMs": percentiles_json(&s.scheduling_lag),
            "reconnects": {
                "latencyMs": percentiles_json(&s.reconnects.latency),
                "backfill": s.reconnects.backfill,
                "snapshot": s.reconnects.snapshot,
                "expired": s.reconnects.expired,
                "backfilledEvents": s.reconnects.backfilled_events,
                "gapsAfterBackfill": s.reconnects.gaps_after_backfill,
            },
            "server": self.server.as_ref().map(|u| json!({"cpuShare": u.cpu_share, "rssKiB": u.rss_kib, "peakRssKiB": u.peak_rss_kib,
                "rssBeforeKiB": u.rss_before_kib, "addedBytesPerConnection": self.added_per_connection(),
                "cpuUsPerDelivery": u.cpu_share.map(|c| c * 1e6 / self.delivered_per_sec().max(1e-9)),
                "messagesOutPerSec": u.messages_out_per_sec,
                "latencyBucketsMs": server_latency_json(&u.latency)})),
            "loadgenCpuShare": self.loadgen_cpu_share,
            "loadgenThreads": self.threads,
            "timeline": timeline,
            "soak": {
                "roomsFinished": s.soak.rooms_finished,
                "drops": s.soak.drops,
                "leaves": s.soak.leaves,
                "joins": s.soak.joins,
                "rssGrowthKiBPerMin": s.soak.rss_slope_kib_per_min(),
                "samples": s.soak.samples.iter().map(|p| json!({"at": p.at, "rssKiB": p.rss_kib, "connections": p.connections, "rooms": p.rooms, "errors": p.errors})).collect::<Vec<_>>(),
            },
        })
    }

    /// A self-contained HTML page: the table, a latency histogram and latency over time.
    pub fn html(&self) -> String {
        let table = html_escape(&self.table());
        let histogram = crate::html::latency_histogram(&self.stats.latency);
        let timeline = crate::html::timeline(&self.stats.timeline);
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>partyflow-loadgen {scenario}</title>\
             <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f6f6f6;padding:1em}}</style></head><body>\
             <h1>partyflow-loadgen: {scenario}</h1><p><code>{command}</code></p><pre>{table}</pre>\
             <h2>Latency distribution</h2>{histogram}<h2>Over time</h2>{timeline}</body></html>",
            scenario = self.scenario,
            command = html_escape(&self.command),
        )
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
