//! Results of a run: latency percentiles from an HDR histogram, throughput and losses.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// What one run measured.
pub struct Report {
    pub scenario: &'static str,
    pub connections: usize,
    pub measured: Duration,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub errors: u64,
    /// End-to-end latency in microseconds.
    pub latency_us: Histogram<u64>,
    pub connect_us: Histogram<u64>,
}

const PERCENTILES: [f64; 5] = [50.0, 90.0, 95.0, 99.0, 99.9];

impl Report {
    pub fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    /// Lost or duplicated messages, or errors, fail the run.
    pub fn failed(&self) -> bool {
        self.lost > 0 || self.out_of_order > 0 || self.errors > 0
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario {}  connections {}  measured {:.1}s", self.scenario, self.connections, self.measured.as_secs_f64());
        let _ = writeln!(out, "sent {}  delivered {} ({:.0}/s)  lost {}  out-of-order {}  errors {}",
            self.sent, self.delivered, self.delivered_per_sec(), self.lost, self.out_of_order, self.errors);
        for (name, h) in [("latency", &self.latency_us), ("connect", &self.connect_us)] {
            let _ = write!(out, "{name:8} ms:");
            for p in PERCENTILES {
                let _ = write!(out, "  p{p} {:.3}", h.value_at_percentile(p) as f64 / 1000.0);
            }
            let _ = writeln!(out, "  max {:.3}  (n={})", h.max() as f64 / 1000.0, h.len());
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let percentiles = |h: &Histogram<u64>| {
            let mut m = serde_json::Map::new();
            for p in PERCENTILES {
                m.insert(format!("p{p}"), (h.value_at_percentile(p) as f64 / 1000.0).into());
            }
            m.insert("max".into(), (h.max() as f64 / 1000.0).into());
            m.insert("count".into(), h.len().into());
            serde_json::Value::Object(m)
        };
        serde_json::json!({
            "scenario": self.scenario,
            "connections": self.connections,
            "measuredSec": self.measured.as_secs_f64(),
            "sent": self.sent,
            "delivered": self.delivered,
            "deliveredPerSec": self.delivered_per_sec(),
            "lost": self.lost,
            "outOfOrder": self.out_of_order,
            "errors": self.errors,
            "latencyMs": percentiles(&self.latency_us),
            "connectMs": percentiles(&self.connect_us),
        })
    }
}
