//! The server's own latency: how late room timers fire, how long frames wait in a connection's
//! outbound queue, how long one read's messages take to handle, and the reactor stalls (work
//! sections over 1 ms) that delay everything else on the shard.
//!
//! Each shard thread records into thread-local HDR histograms (no lock, no atomic on the hot
//! path) and moves what it recorded into its shard's [`Published`] copy about once a second;
//! `/metrics` renders the copies as Prometheus histograms and `/health` quotes percentiles.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    /// A room's deadline (timer tick, countdown, turn end, ACK resend) to its handling.
    TimerLateness,
    /// A frame queued on an empty outbound queue to the queue written out to the socket.
    QueueDelay,
    /// Decoding and handling the messages of one read from a socket.
    Handling,
}

impl Latency {
    const ALL: [Latency; 3] = [Latency::TimerLateness, Latency::QueueDelay, Latency::Handling];

    fn index(self) -> usize {
        self as usize
    }

    /// The Prometheus metric family and its help text.
    fn family(self) -> (&'static str, &'static str) {
        match self {
            Latency::TimerLateness => ("partyflow_room_timer_lateness_seconds", "From a room's deadline to its handling"),
            Latency::QueueDelay => ("partyflow_outbound_queue_delay_seconds", "From a frame queued on an empty outbound queue to the queue written out"),
            Latency::Handling => ("partyflow_read_handling_seconds", "Decoding and handling the messages of one socket read"),
        }
    }

    /// The `/health` key.
    fn key(self) -> &'static str {
        match self {
            Latency::TimerLateness => "roomTimerLateness",
            Latency::QueueDelay => "outboundQueueDelay",
            Latency::Handling => "readHandling",
        }
    }
}

/// A work section longer than this holds up everything else on its shard.
pub const STALL: Duration = Duration::from_millis(1);

/// Largest value kept exactly (µs); longer ones are recorded as this.
const MAX_US: u64 = 60_000_000;

/// Prometheus bucket bounds, seconds.
const BUCKETS: [f64; 15] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

fn histogram() -> Histogram<u64> {
    // Two significant digits (1 %) from 1 µs to a minute: constant, valid bounds.
    Histogram::new_with_bounds(1, MAX_US, 2).unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

/// What one shard recorded: histograms in µs with their exact sums, and the stalls.
#[derive(Debug, Clone)]
pub struct Published {
    histograms: [Histogram<u64>; 3],
    sums_us: [u64; 3],
    stalls: u64,
    longest_stall_us: u64,
}

impl Default for Published {
    fn default() -> Self {
        Published { histograms: [histogram(), histogram(), histogram()], sums_us: [0; 3], stalls: 0, longest_stall_us: 0 }
    }
}

impl Published {
    fn record(&mut self, which: Latency, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_US);
        let i = which.index();
        if let Some(h) = self.histograms.get_mut(i) {
            h.saturating_record(us);
        }
        if let Some(sum) = self.sums_us.get_mut(i) {
            *sum = sum.saturating_add(us);
        }
    }

    fn record_work(&mut self, elapsed: Duration) {
        if elapsed > STALL {
            self.stalls += 1;
            self.longest_stall_us = self.longest_stall_us.max(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        }
    }

    fn absorb(&mut self, other: &mut Published) {
        for (mine, theirs) in self.histograms.iter_mut().zip(other.histograms.iter_mut()) {
            // Same bounds on both sides: adding cannot fail.
            let _ = mine.add(&*theirs);
            theirs.reset();
        }
        for (mine, theirs) in self.sums_us.iter_mut().zip(other.sums_us.iter_mut()) {
            *mine = mine.saturating_add(std::mem::take(theirs));
        }
        self.stalls += std::mem::take(&mut other.stalls);
        self.longest_stall_us = self.longest_stall_us.max(std::mem::take(&mut other.longest_stall_us));
    }
}

thread_local! {
    /// This shard thread's recordings since it last published.
    static RECORDED: RefCell<Published> = RefCell::new(Published::default());
}

/// Records how long `which` took on this thread.
pub fn record(which: Latency, elapsed: Duration) {
    RECORDED.with(|r| r.borrow_mut().record(which, elapsed));
}

/// Records one section of work that ran without yielding; over [`STALL`] it counts as a stall.
pub fn record_work(elapsed: Duration) {
    RECORDED.with(|r| r.borrow_mut().record_work(elapsed));
}

/// Moves this thread's recordings into its shard's published copy.
pub fn publish(into: &Mutex<Published>) {
    RECORDED.with(|r| {
        if let Ok(mut published) = into.lock() {
            published.absorb(&mut r.borrow_mut());
        }
    });
}

/// All shards' copies, merged (for `/health`).
fn merged<'a>(shards: impl Iterator<Item = &'a Mutex<Published>>) -> Published {
    let mut all = Published::default();
    for shard in shards {
        if let Ok(p) = shard.lock() {
            all.absorb(&mut p.clone());
        }
    }
    all
}

/// Writes the histograms and stall series of every shard in Prometheus text format.
pub fn render<'a>(out: &mut String, shards: impl Iterator<Item = &'a Mutex<Published>> + Clone) {
    let copies: Vec<Published> = shards.filter_map(|s| s.lock().ok().map(|p| p.clone())).collect();
    for which in Latency::ALL {
        let (name, help) = which.family();
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (shard, p) in copies.iter().enumerate() {
            let Some(h) = p.histograms.get(which.index()) else { continue };
            for le in BUCKETS {
                let count = h.count_between(0, (le * 1e6) as u64);
                let _ = writeln!(out, "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {count}");
            }
            let _ = writeln!(out, "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {}", h.len());
            let sum = p.sums_us.get(which.index()).copied().unwrap_or(0) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{shard=\"{shard}\"}} {sum}\n{name}_count{{shard=\"{shard}\"}} {}", h.len());
        }
    }
    let name = "partyflow_reactor_stalls_total";
    let _ = writeln!(out, "# HELP {name} Work sections that ran over 1 ms without yielding (a read's handling, a timer pass)\n# TYPE {name} counter");
    for (shard, p) in copies.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", p.stalls);
    }
    let name = "partyflow_reactor_longest_stall_seconds";
    let _ = writeln!(out, "# HELP {name} The longest such section since the start\n# TYPE {name} gauge");
    for (shard, p) in copies.iter().enumerate() {
        let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", p.longest_stall_us as f64 / 1e6);
    }
}

/// Percentiles (ms) of every histogram over all shards, and the stalls, for `/health`.
pub fn summary<'a>(shards: impl Iterator<Item = &'a Mutex<Published>>) -> serde_json::Value {
    let all = merged(shards);
    let ms = |us: u64| us as f64 / 1000.0;
    let mut out = serde_json::Map::new();
    for which in Latency::ALL {
        let Some(h) = all.histograms.get(which.index()) else { continue };
        let q = |q: f64| ms(h.value_at_quantile(q));
        out.insert(which.key().into(), serde_json::json!({"count": h.len(), "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": ms(h.max())}));
    }
    out.insert("stalls".into(), serde_json::json!({"count": all.stalls, "longestMs": ms(all.longest_stall_us)}));
    serde_json::Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_on_a_thread_reaches_the_published_copy_and_renders_as_a_histogram() {
        let shard = Mutex::new(Published::default());
        std::thread::scope(|s| {
            s.spawn(|| {
                for ms in [1u64, 2, 3, 200] {
                    record(Latency::TimerLateness, Duration::from_millis(ms));
                }
                record(Latency::Handling, Duration::from_micros(30));
                record_work(Duration::from_micros(500));
                record_work(Duration::from_millis(7));
                publish(&shard);
                // Published once: a second publish adds nothing.
                publish(&shard);
            });
        });
        let mut text = String::new();
        render(&mut text, std::iter::once(&shard));
        assert!(text.contains("# TYPE partyflow_room_timer_lateness_seconds histogram"));
        assert!(text.contains("partyflow_room_timer_lateness_seconds_bucket{shard=\"0\",le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("partyflow_room_timer_lateness_seconds_bucket{shard=\"0\",le=\"0.005\"} 3\n"), "{text}");
        assert!(text.contains("partyflow_room_timer_lateness_seconds_bucket{shard=\"0\",le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("partyflow_room_timer_lateness_seconds_sum{shard=\"0\"} 0.206\n"), "{text}");
        assert!(text.contains("partyflow_read_handling_seconds_count{shard=\"0\"} 1\n"), "{text}");
        assert!(text.contains("partyflow_reactor_stalls_total{shard=\"0\"} 1\n"), "{text}");
        assert!(text.contains("partyflow_reactor_longest_stall_seconds{shard=\"0\"} 0.007\n"), "{text}");
        let summary = summary(std::iter::once(&shard));
        assert_eq!(summary["roomTimerLateness"]["count"], 4);
        assert_eq!(summary["stalls"]["count"], 1);
        assert!((summary["roomTimerLateness"]["max"].as_f64().unwrap() - 200.0).abs() < 2.0, "{summary}");
    }
}
