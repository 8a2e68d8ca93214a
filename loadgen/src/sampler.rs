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

/// A Prometheus histogram family's cumulative bucket counts (`le` in seconds, `+Inf` last),
/// summed over its series (the shards).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets(pub Vec<(f64, f64)>);

impl Buckets {
    /// Reads `{name}_bucket` series from `/metrics` text.
    pub fn read(text: &str, name: &str) -> Buckets {
        let prefix = format!("{name}_bucket{{");
        let mut sums: Vec<(f64, f64)> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Some(le) = series.split("le=\"").nth(1).and_then(|rest| rest.split('"').next()) else { continue };
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
            let Ok(count) = value.parse::<f64>() else { continue };
            match sums.iter_mut().find(|(bound, _)| *bound == le) {
                Some((_, sum)) => *sum += count,
                None => sums.push((le, count)),
            }
        }
        sums.retain(|(le, _)| !le.is_nan());
        sums.sort_by(|a, b| a.0.total_cmp(&b.0));
        Buckets(sums)
    }

    /// What was counted between `earlier` and this scrape.
    pub fn since(&self, earlier: &Buckets) -> Buckets {
        let before = |le: f64| earlier.0.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
        Buckets(self.0.iter().map(|(le, c)| (*le, (c - before(*le)).max(0.0))).collect())
    }

    /// Observations counted.
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// The upper bound (seconds) of the bucket holding quantile `q`: "p99 ≤ this".
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        self.0.iter().find(|(_, c)| *c >= q * total).map(|(le, _)| *le)
    }
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
    fn bucket_quantiles_over_shards_and_a_window() {
        let scrape = |a: u32, b: u32| {
            format!(
                "h_bucket{{shard=\"0\",le=\"0.001\"}} {a}\nh_bucket{{shard=\"0\",le=\"0.0025\"}} {b}\nh_bucket{{shard=\"0\",le=\"+Inf\"}} {b}\n\
                 h_bucket{{shard=\"1\",le=\"0.001\"}} {a}\nh_bucket{{shard=\"1\",le=\"0.0025\"}} {b}\nh_bucket{{shard=\"1\",le=\"+Inf\"}} {b}\nh_sum 3\n"
            )
        };
        let before = Buckets::read(&scrape(10, 10), "h");
        let after = Buckets::read(&scrape(1000, 1010), "h");
        let window = after.since(&before);
        assert_eq!(window.count(), 2000.0);
        assert_eq!(window.quantile_bound(0.5), Some(0.001));
        assert_eq!(window.quantile_bound(0.999), Some(0.0025));
        assert_eq!(Buckets::default().quantile_bound(0.5), None);
    }

    #[test]
    fn sums_metric_series() {
        let text =
            "# TYPE partyflow_connections gauge\npartyflow_connections{shard=\"0\"} 3\npartyflow_connections{shard=\"1\"} 4\npartyflow_connections_total 9\n";
        assert_eq!(metric_total(text, "partyflow_connections"), Some(7.0));
        assert_eq!(metric_total(text, "nope"), None);
    }
}
