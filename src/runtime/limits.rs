//! Process limits that decide whether and how the shards can start.

use std::io;

/// One io_uring buffer registration per ring; glommio keeps three rings per executor.
const RINGS_PER_SHARD: u64 = 3;
/// glommio rounds smaller io_memory up to this.
const MIN_IO_MEMORY: u64 = 64 * 1024;
/// glommio refuses to start an executor below this much locked memory.
const MIN_MEMLOCK: u64 = 512 * 1024;
/// More registered memory helps only file I/O, which the server does not do.
const MAX_IO_MEMORY: u64 = 1024 * 1024;

/// The limits were too low for the requested shards.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// RLIMIT_MEMLOCK cannot hold every shard's io_uring buffers.
    #[error(
        "the locked-memory limit (RLIMIT_MEMLOCK) is {have_kib} KiB, but {shards} shards need at least \
         {need_kib} KiB for their io_uring buffers. Raise it (`ulimit -l`, systemd `LimitMEMLOCK=`, \
         docker `--ulimit memlock=`) or start fewer shards with --shards"
    )]
    MemLock {
        /// The limit in force.
        have_kib: u64,
        /// What the shards need.
        need_kib: u64,
        /// Shards requested.
        shards: usize,
    },
}

/// The io_uring buffer memory each shard gets so that all shards fit under `memlock_limit`.
pub fn io_memory_per_shard(memlock_limit: u64, shards: usize) -> Result<usize, LimitError> {
    let shards_u = shards.max(1) as u64;
    let need = (RINGS_PER_SHARD * shards_u * MIN_IO_MEMORY).max(MIN_MEMLOCK);
    if memlock_limit < need {
        return Err(LimitError::MemLock { have_kib: memlock_limit / 1024, need_kib: need / 1024, shards });
    }
    // Keep a quarter of the limit free for anything else in the process that locks memory.
    let share = memlock_limit / 4 * 3 / (RINGS_PER_SHARD * shards_u);
    let per_shard = share.clamp(MIN_IO_MEMORY, MAX_IO_MEMORY) / 4096 * 4096;
    Ok(per_shard as usize)
}

/// Each listener's accept backlog (glommio's own bind fixes it at 1024; the kernel caps it at
/// `net.core.somaxconn`).
pub const LISTEN_BACKLOG: i32 = 4096;

/// The CPUs this process may run on.
pub fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    // SAFETY: sched_getaffinity fills the zeroed set it is given.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        set
    };
    // SAFETY: CPU_ISSET reads the set initialised above.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

/// The soft and hard limits of `resource`.
pub fn get(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct passed in.
    if unsafe { libc::getrlimit(resource, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Soft limit of `resource`, raised to the hard limit first where allowed.
fn raise_to_hard(resource: libc::__rlimit_resource_t) -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(resource, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(resource, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// The locked-memory limit in bytes (raised to its hard limit).
pub fn memlock_limit() -> io::Result<u64> {
    raise_to_hard(libc::RLIMIT_MEMLOCK)
}

/// The open-file limit (raised to its hard limit).
pub fn open_file_limit() -> io::Result<u64> {
    raise_to_hard(libc::RLIMIT_NOFILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizing_under_8_mib() {
        let eight = 8 << 20;
        let one = io_memory_per_shard(eight, 1).unwrap();
        assert_eq!(one, 1 << 20);
        for shards in [2, 4, 16, 32] {
            let per = io_memory_per_shard(eight, shards).unwrap() as u64;
            assert!(per * 3 * shards as u64 <= eight, "{shards}: {per}");
            assert!(per >= MIN_IO_MEMORY);
        }
        assert!(io_memory_per_shard(eight, 64).is_err());
        let err = io_memory_per_shard(256 * 1024, 1).unwrap_err().to_string();
        assert!(err.contains("RLIMIT_MEMLOCK") && err.contains("--shards"), "{err}");
        assert_eq!(io_memory_per_shard(u64::MAX, 4).unwrap() as u64, MAX_IO_MEMORY);
    }
}
