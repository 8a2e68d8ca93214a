//! `partyflow doctor`: checks the host against the configuration the server would run with and
//! prints each finding with its fix. The checks are a pure function of [`HostFacts`] and the
//! configuration (unit-tested with made-up hosts); `host.rs` reads the facts of this machine.

mod host;

use std::fmt::Write as _;

pub use host::HostFacts;

use crate::config::ServeConfig;
use crate::runtime::limits;

/// How serious a finding is; the worst one decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Fine as it is.
    Ok,
    /// The server runs, but below what it could do, or with a known latency risk.
    Warn,
    /// The server cannot start (or cannot serve) with this host and configuration.
    Fail,
}

impl Level {
    /// `partyflow doctor`'s exit code for a run whose worst finding is this: 0, 1 or 2.
    pub fn exit_code(self) -> u8 {
        match self {
            Level::Ok => 0,
            Level::Warn => 1,
            Level::Fail => 2,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One finding: what was checked, what was found, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Fine, a warning, or a failure.
    pub level: Level,
    /// What was checked (`kernel`, `open files`, ...).
    pub topic: &'static str,
    /// What was found.
    pub detail: String,
    /// How to fix it (empty when nothing needs fixing).
    pub fix: String,
}

fn ok(topic: &'static str, detail: String) -> Finding {
    Finding { level: Level::Ok, topic, detail, fix: String::new() }
}

fn warn(topic: &'static str, detail: String, fix: &str) -> Finding {
    Finding { level: Level::Warn, topic, detail, fix: fix.to_string() }
}

fn fail(topic: &'static str, detail: String, fix: &str) -> Finding {
    Finding { level: Level::Fail, topic, detail, fix: fix.to_string() }
}

/// Oldest kernel glommio runs on.
const MIN_KERNEL: (u32, u32) = (5, 8);
/// Connections a production host should be able to hold before the open-file limit bites.
const WANTED_CONNECTIONS: u64 = 65_536;
/// Descriptors the server keeps for itself (listeners, rings, Redis, files) beyond connections.
const RESERVED_FDS: u64 = 256;
/// Listen backlog and SYN queue depth that absorb a reconnect storm.
const WANTED_BACKLOG: u64 = limits::LISTEN_BACKLOG as u64;

/// Every check, in the order printed.
pub fn check(host: &HostFacts, config: &ServeConfig) -> Vec<Finding> {
    let shards = config.shards.unwrap_or(host.cpus.max(1));
    let mut out = vec![kernel(host), io_uring(host), memlock(host, shards)];
    out.extend(open_files(host, config));
    out.push(sysctl_at_least("somaxconn", host.somaxconn, WANTED_BACKLOG, "net.core.somaxconn caps every listener's accept backlog"));
    out.push(sysctl_at_least("tcp_max_syn_backlog", host.tcp_max_syn_backlog, WANTED_BACKLOG, "half-open connections queued during a reconnect storm"));
    out.push(port_range(host));
    out.push(cpus(host, shards));
    out.push(hugepages(host));
    out
}

fn kernel(host: &HostFacts) -> Finding {
    match host.kernel_version {
        Some(v) if v >= MIN_KERNEL => ok("kernel", format!("{} (io_uring networking needs {}.{} or newer)", host.kernel_release, MIN_KERNEL.0, MIN_KERNEL.1)),
        Some(_) => fail(
            "kernel",
            format!("{} is older than {}.{}, which glommio needs", host.kernel_release, MIN_KERNEL.0, MIN_KERNEL.1),
            "run on a newer kernel (any current distribution release)",
        ),
        None => warn("kernel", format!("cannot read the version of {:?}", host.kernel_release), "check that the kernel is 5.8 or newer"),
    }
}

fn io_uring(host: &HostFacts) -> Finding {
    let setting = host.io_uring_disabled.map_or_else(|| "not present".to_string(), |v| v.to_string());
    match (&host.io_uring_probe, host.io_uring_disabled) {
        (Ok(()), _) => ok("io_uring", format!("a ring could be created (kernel.io_uring_disabled: {setting})")),
        (Err(why), Some(1 | 2)) => fail(
            "io_uring",
            format!("disabled by kernel.io_uring_disabled = {setting}: {why}"),
            "sysctl -w kernel.io_uring_disabled=0 (or, for 1, run the server in kernel.io_uring_group); see tuning/sysctl.d/60-partyflow.conf",
        ),
        (Err(why), _) => fail(
            "io_uring",
            format!("cannot create a ring: {why}"),
            "allow io_uring (containers: the seccomp profile must permit io_uring_setup/enter/register)",
        ),
    }
}

fn memlock(host: &HostFacts, shards: usize) -> Finding {
    let (_, hard) = host.memlock;
    match limits::io_memory_per_shard(hard, shards) {
        Ok(per_shard) => ok("locked memory", format!("limit {} KiB: {} KiB of io_uring buffers for each of {shards} shards", kib(hard), per_shard / 1024)),
        Err(err) => {
            fail("locked memory", err.to_string(), "LimitMEMLOCK=64M in the systemd unit (tuning/partyflow.service), or tuning/limits.d/partyflow.conf")
        }
    }
}

fn open_files(host: &HostFacts, config: &ServeConfig) -> Vec<Finding> {
    // The server raises its soft limit to the hard one at start.
    let (_, hard) = host.nofile;
    let capacity = hard.saturating_sub(RESERVED_FDS);
    let fix = "LimitNOFILE=1048576 in the systemd unit (tuning/partyflow.service), or nofile in tuning/limits.d/partyflow.conf";
    let mut out = Vec::new();
    out.push(match config.max_connections {
        Some(max) if max as u64 > capacity => {
            fail("open files", format!("hard limit {hard}: room for {capacity} connections, below --max-connections {max}; accepts would fail first"), fix)
        }
        Some(max) => ok("open files", format!("hard limit {hard}: room for --max-connections {max}")),
        None if capacity < WANTED_CONNECTIONS => {
            warn("open files", format!("hard limit {hard}: at most {capacity} connections (--max-connections follows it)"), fix)
        }
        None => ok("open files", format!("hard limit {hard}: up to {capacity} connections")),
    });
    if let Some(nr_open) = host.nr_open {
        let wanted = config.max_connections.map_or(1_048_576, |m| m as u64 + RESERVED_FDS);
        out.push(if nr_open < wanted {
            warn(
                "fs.nr_open",
                format!("{nr_open}: no process may open more files than this"),
                "sysctl -w fs.nr_open=1048576 (tuning/sysctl.d/60-partyflow.conf)",
            )
        } else {
            ok("fs.nr_open", format!("{nr_open}"))
        });
    }
    out
}

fn sysctl_at_least(topic: &'static str, value: Option<u64>, wanted: u64, why: &str) -> Finding {
    match value {
        Some(v) if v >= wanted => ok(topic, format!("{v}")),
        Some(v) => warn(topic, format!("{v}, below {wanted} ({why})"), "apply tuning/sysctl.d/60-partyflow.conf"),
        None => ok(topic, "not readable here (not checked)".into()),
    }
}

fn port_range(host: &HostFacts) -> Finding {
    match host.ephemeral_ports {
        Some((low, high)) if high.saturating_sub(low) >= 28_000 => ok("ephemeral ports", format!("{low}-{high}")),
        Some((low, high)) => warn(
            "ephemeral ports",
            format!("{low}-{high}: few outgoing connections per address (Redis, other instances, a load generator on this host)"),
            "net.ipv4.ip_local_port_range = 1024 65535 (tuning/sysctl.d/60-partyflow.conf)",
        ),
        None => ok("ephemeral ports", "not readable here (not checked)".into()),
    }
}

fn cpus(host: &HostFacts, shards: usize) -> Finding {
    let isolated = if host.isolated_cpus.is_empty() { "none isolated".to_string() } else { format!("isolated: {}", host.isolated_cpus) };
    if shards > host.cpus {
        warn(
            "cpus",
            format!("{shards} shards on {} CPUs this process may use ({isolated}): shards would share cores and wait for each other", host.cpus),
            "leave --shards unset (one per CPU) or give the process more CPUs",
        )
    } else {
        ok("cpus", format!("{shards} shards on {} CPUs ({isolated})", host.cpus))
    }
}

fn hugepages(host: &HostFacts) -> Finding {
    match host.transparent_hugepages.as_deref() {
        Some("always") => warn(
            "transparent hugepages",
            "always: khugepaged compaction can stall a shard for milliseconds".into(),
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled",
        ),
        Some(mode) => ok("transparent hugepages", mode.to_string()),
        None => ok("transparent hugepages", "not available (not checked)".into()),
    }
}

fn kib(bytes: u64) -> u64 {
    bytes / 1024
}

/// The printed report and the exit code of a doctor run.
pub fn report(findings: &[Finding]) -> (String, u8) {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(out, "{:<5} {:<22} {}", f.level.label(), f.topic, f.detail);
        if !f.fix.is_empty() {
            let _ = writeln!(out, "{:<5} {:<22} fix: {}", "", "", f.fix);
        }
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    let count = |level| findings.iter().filter(|f| f.level == level).count();
    let verdict = match worst {
        Level::Ok => "ready to run".to_string(),
        Level::Warn => format!("runs, with {} warnings", count(Level::Warn)),
        Level::Fail => format!("cannot run: {} failures, {} warnings", count(Level::Fail), count(Level::Warn)),
    };
    let _ = writeln!(out, "\n{verdict} (exit {})", worst.exit_code());
    (out, worst.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> HostFacts {
        HostFacts {
            kernel_release: "6.8.0-45-generic".into(),
            kernel_version: Some((6, 8)),
            io_uring_disabled: Some(0),
            io_uring_probe: Ok(()),
            memlock: (64 << 20, 64 << 20),
            nofile: (1 << 20, 1 << 20),
            nr_open: Some(1 << 20),
            somaxconn: Some(4096),
            tcp_max_syn_backlog: Some(8192),
            ephemeral_ports: Some((1024, 65535)),
            cpus: 16,
            isolated_cpus: String::new(),
            transparent_hugepages: Some("madvise".into()),
        }
    }

    fn config(args: &[&str]) -> ServeConfig {
        ServeConfig::load([&["partyflow"], args].concat()).unwrap()
    }

    fn levels(host: &HostFacts, args: &[&str]) -> Vec<(&'static str, Level)> {
        check(host, &config(args)).into_iter().filter(|f| f.level != Level::Ok).map(|f| (f.topic, f.level)).collect()
    }

    #[test]
    fn a_tuned_host_is_ready() {
        let (text, code) = report(&check(&healthy(), &config(&[])));
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("16 shards on 16 CPUs") && text.ends_with("ready to run (exit 0)\n"), "{text}");
    }

    #[test]
    fn each_problem_is_found_with_its_fix() {
        let mut host = healthy();
        host.somaxconn = Some(128);
        host.transparent_hugepages = Some("always".into());
        host.nofile = (1024, 20_000);
        host.ephemeral_ports = Some((32768, 60999));
        host.isolated_cpus = "2-3".into();
        assert_eq!(
            levels(&host, &["--shards", "32"]),
            vec![("open files", Level::Warn), ("somaxconn", Level::Warn), ("cpus", Level::Warn), ("transparent hugepages", Level::Warn)]
        );
        let (text, code) = report(&check(&host, &config(&["--shards", "32"])));
        assert_eq!(code, 1);
        assert!(text.contains("hard limit 20000: at most 19744 connections") && text.contains("fix: LimitNOFILE="), "{text}");
        assert!(text.contains("isolated: 2-3") && text.contains("runs, with 4 warnings"), "{text}");
    }

    #[test]
    fn what_stops_the_server_is_a_failure() {
        let mut host = healthy();
        host.kernel_version = Some((5, 4));
        host.io_uring_disabled = Some(2);
        host.io_uring_probe = Err("Operation not permitted".into());
        host.memlock = (64 * 1024, 64 * 1024);
        let found = levels(&host, &["--max-connections", "2000000"]);
        assert_eq!(
            found,
            vec![("kernel", Level::Fail), ("io_uring", Level::Fail), ("locked memory", Level::Fail), ("open files", Level::Fail), ("fs.nr_open", Level::Warn)]
        );
        let (text, code) = report(&check(&host, &config(&["--max-connections", "2000000"])));
        assert_eq!(code, 2);
        assert!(text.contains("kernel.io_uring_disabled = 2") && text.contains("RLIMIT_MEMLOCK"), "{text}");
    }
}
