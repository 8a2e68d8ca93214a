//! What `partyflow doctor` reads from this machine: `/proc/sys`, `/sys`, resource limits, and
//! whether an io_uring can actually be created.

use crate::runtime::limits;

/// The facts about the host that the checks look at.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// `uname -r`.
    pub kernel_release: String,
    /// (major, minor) parsed from the release.
    pub kernel_version: Option<(u32, u32)>,
    /// `kernel.io_uring_disabled` (absent before Linux 6.6).
    pub io_uring_disabled: Option<u64>,
    /// Whether this process could create a ring, and why not.
    pub io_uring_probe: Result<(), String>,
    /// RLIMIT_MEMLOCK (soft, hard) in bytes.
    pub memlock: (u64, u64),
    /// RLIMIT_NOFILE (soft, hard).
    pub nofile: (u64, u64),
    /// `fs.nr_open`.
    pub nr_open: Option<u64>,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`.
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.ip_local_port_range`.
    pub ephemeral_ports: Option<(u64, u64)>,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// `/sys/devices/system/cpu/isolated` (empty: none).
    pub isolated_cpus: String,
    /// The selected mode of `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub transparent_hugepages: Option<String>,
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn read_u64(path: &str) -> Option<u64> {
    read(path)?.parse().ok()
}

/// "6.8.0-45-generic" → (6, 8).
fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// "always [madvise] never" → "madvise".
fn selected(modes: &str) -> Option<String> {
    Some(modes.split_once('[')?.1.split_once(']')?.0.to_string())
}

/// Creates and closes a small io_uring, as the server's shards will.
fn probe_io_uring() -> Result<(), String> {
    // struct io_uring_params is 120 bytes; zeroed asks for the defaults.
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the params buffer given, which is as large
    // as the kernel's struct io_uring_params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd is the ring descriptor just created and owned here.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

impl HostFacts {
    /// Reads this machine.
    pub fn read() -> HostFacts {
        let kernel_release = read("/proc/sys/kernel/osrelease").unwrap_or_default();
        HostFacts {
            kernel_version: parse_version(&kernel_release),
            kernel_release,
            io_uring_disabled: read_u64("/proc/sys/kernel/io_uring_disabled"),
            io_uring_probe: probe_io_uring(),
            memlock: limits::get(libc::RLIMIT_MEMLOCK).unwrap_or((0, 0)),
            nofile: limits::get(libc::RLIMIT_NOFILE).unwrap_or((0, 0)),
            nr_open: read_u64("/proc/sys/fs/nr_open"),
            somaxconn: read_u64("/proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: read_u64("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
            ephemeral_ports: read("/proc/sys/net/ipv4/ip_local_port_range").and_then(|r| {
                let mut it = r.split_whitespace().map(str::parse::<u64>);
                Some((it.next()?.ok()?, it.next()?.ok()?))
            }),
            cpus: limits::allowed_cpus().map_or(1, |c| c.len()),
            isolated_cpus: read("/sys/devices/system/cpu/isolated").unwrap_or_default(),
            transparent_hugepages: read("/sys/kernel/mm/transparent_hugepage/enabled").and_then(|m| selected(&m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_kernel_writes() {
        assert_eq!(parse_version("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(parse_version("5.15.153.1-microsoft-standard-WSL2"), Some((5, 15)));
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(selected("always [madvise] never").as_deref(), Some("madvise"));
        assert_eq!(selected("[always] madvise never").as_deref(), Some("always"));
    }

    #[test]
    fn reads_this_machine() {
        let facts = HostFacts::read();
        assert!(facts.kernel_version.is_some(), "{facts:?}");
        assert!(facts.cpus >= 1 && facts.nofile.1 >= facts.nofile.0);
    }
}
