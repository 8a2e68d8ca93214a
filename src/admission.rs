//! Connection caps: a total and a per-IP limit, checked before the upgrade.
//!
//! This is the one piece of state every shard touches, once when a WebSocket connection is
//! admitted and once when it ends; never per message. A [`Permit`] travels with the connection
//! (also across shards) and gives its place back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapReached {
    /// `--max-connections`.
    #[error("server connection limit reached")]
    Total,
    /// `--max-connections-per-ip`.
    #[error("connection limit for this address reached")]
    PerIp,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Shared connection accounting.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_ip: Option<usize>,
    counts: Mutex<Counts>,
}

/// A place taken by one connection; released on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Caps of `max_total` connections and, if given, `max_per_ip` per address.
    pub fn new(max_total: usize, max_per_ip: Option<usize>) -> Arc<Self> {
        Arc::new(Admission { max_total, max_per_ip, counts: Mutex::default() })
    }

    /// Takes a place for a connection from `ip`.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, CapReached> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return Err(CapReached::Total);
        }
        let per_ip = counts.per_ip.entry(ip).or_default();
        if self.max_per_ip.is_some_and(|max| *per_ip >= max) {
            return Err(CapReached::PerIp);
        }
        *per_ip += 1;
        counts.total += 1;
        Ok(Permit { admission: Arc::clone(self), ip })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let a = Admission::new(3, Some(2));
        let ip1: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let p1 = a.try_admit(ip1).unwrap();
        let _p2 = a.try_admit(ip1).unwrap();
        assert_eq!(a.try_admit(ip1).unwrap_err(), CapReached::PerIp);
        let _p3 = a.try_admit(ip2).unwrap();
        assert_eq!(a.try_admit(ip2).unwrap_err(), CapReached::Total);
        drop(p1);
        assert!(a.try_admit(ip1).is_ok());
    }
}
