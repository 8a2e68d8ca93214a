//! CPU and memory of the server (from /proc when it is local) and of the load generator itself.

use std::time::Instant;

/// CPU seconds and resident memory of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    pub cpu_secs: f64,
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` "self" for this process).
pub fn sample(pid: &str) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| status.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0);
    Some(ProcSample { cpu_secs: ticks / ticks_per_sec(), rss_kib: kib("VmRSS:"), peak_rss_kib: kib("VmHWM:") })
}

/// CPU used by a process between two samples, as a share of one core.
pub fn cpu_share(from: (Instant, ProcSample), to: (Instant, ProcSample)) -> f64 {
    let wall = to.0.saturating_duration_since(from.0).as_secs_f64().max(1e-9);
    (to.1.cpu_secs - from.1.cpu_secs) / wall
}

/// Sums the samples of a Prometheus metric family from `/metrics` text.
pub fn metric_total(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> =
        text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])).filter_map(|l| l.rsplit_once(' ')?.1.parse().ok()).collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_itself() {
        let s = sample("self").unwrap();
        assert!(s.rss_kib > 0 && s.peak_rss_kib >= s.rss_kib);
    }

    #[test]
    fn sums_metric_series() {
        let text =
            "# TYPE partyflow_connections gauge\npartyflow_connections{shard=\"0\"} 3\npartyflow_connections{shard=\"1\"} 4\npartyflow_connections_total 9\n";
        assert_eq!(metric_total(text, "partyflow_connections"), Some(7.0));
        assert_eq!(metric_total(text, "nope"), None);
    }
}
