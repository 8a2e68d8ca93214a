//! Connection caps, checked before a byte of the request is read, and the room-API rate per
//! address.
//!
//! Every accepted connection takes a [`Permit`] at once: a place among the connections still
//! sending their request (`--max-pending-connections`, `--max-pending-per-ip`) and a place among
//! its address's connections (`--max-connections-per-ip`, which counts an address's pending and
//! upgraded connections together, so a client cannot hold more by staying before the upgrade).
//! At the upgrade the permit moves to the upgraded connections (`--max-connections`). The permit
//! travels with the connection (also across shards) and gives its places back when dropped.
//!
//! This and the [`ApiLimiter`] are the only state every shard touches: once when a connection
//! is accepted, upgraded and closed, and once per room-API request; never per message. Both are
//! counted for the whole process, so the documented number is the number whatever the shards.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::session::{Rate, TokenBucket};

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapReached {
    /// `--max-connections`.
    #[error("server connection limit reached")]
    Total,
    /// `--max-connections-per-ip`.
    #[error("connection limit for this address reached")]
    PerIp,
    /// `--max-pending-connections`.
    #[error("too many connections still sending their request; retry")]
    PendingTotal,
    /// `--max-pending-per-ip`.
    #[error("too many connections from this address still sending their request; retry")]
    PendingPerIp,
}

impl CapReached {
    /// The error code of the `503` that reports it.
    pub fn code(self) -> &'static str {
        match self {
            CapReached::Total => "SERVER_FULL",
            CapReached::PerIp => "TOO_MANY_CONNECTIONS_FROM_ADDRESS",
            CapReached::PendingTotal => "SERVER_BUSY",
            CapReached::PendingPerIp => "TOO_MANY_PENDING_FROM_ADDRESS",
        }
    }
}

/// The caps [`Admission`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    /// Upgraded WebSocket connections in the process.
    pub max_open: usize,
    /// Connections still sending their request, in the process.
    pub max_pending: usize,
    /// Connections of one address, pending and upgraded together.
    pub max_per_ip: usize,
    /// Connections of one address still sending their request.
    pub max_pending_per_ip: usize,
}

#[derive(Debug, Default, Clone, Copy)]
struct IpCount {
    pending: usize,
    open: usize,
}

#[derive(Debug, Default)]
struct Counts {
    pending: usize,
    open: usize,
    per_ip: HashMap<IpAddr, IpCount>,
}

/// Shared connection accounting.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    counts: Mutex<Counts>,
}

/// A place taken by one connection; released on drop.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
    upgraded: bool,
}

impl Admission {
    /// Accounting under `caps`.
    pub fn new(caps: Caps) -> Arc<Self> {
        Arc::new(Admission { caps, counts: Mutex::default() })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a place for a new connection from `ip`, still to send its request.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, CapReached> {
        let mut counts = self.counts();
        if counts.pending >= self.caps.max_pending {
            return Err(CapReached::PendingTotal);
        }
        let per_ip = counts.per_ip.entry(ip).or_default();
        let refused = if per_ip.pending + per_ip.open >= self.caps.max_per_ip {
            Some(CapReached::PerIp)
        } else if per_ip.pending >= self.caps.max_pending_per_ip {
            Some(CapReached::PendingPerIp)
        } else {
            None
        };
        if let Some(cap) = refused {
            if per_ip.pending + per_ip.open == 0 {
                counts.per_ip.remove(&ip);
            }
            return Err(cap);
        }
        per_ip.pending += 1;
        counts.pending += 1;
        Ok(Permit { admission: Arc::clone(self), ip, upgraded: false })
    }

    /// Upgraded connections in the process.
    pub fn open(&self) -> usize {
        self.counts().open
    }
}

impl Permit {
    /// Moves this connection from the pending to the upgraded ones (a no-op if it is already
    /// upgraded); its address's count does not change.
    pub fn upgrade(&mut self) -> Result<(), CapReached> {
        if self.upgraded {
            return Ok(());
        }
        let mut counts = self.admission.counts();
        if counts.open >= self.admission.caps.max_open {
            return Err(CapReached::Total);
        }
        counts.open += 1;
        counts.pending -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            n.pending -= 1;
            n.open += 1;
        }
        self.upgraded = true;
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.admission.counts();
        if self.upgraded {
            counts.open -= 1;
        } else {
            counts.pending -= 1;
        }
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            if self.upgraded {
                n.open -= 1;
            } else {
                n.pending -= 1;
            }
            if n.pending + n.open == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Room-API requests (room creation, joins) per client address, for the whole process: a token
/// bucket per address, bounded in how many addresses it tracks (quiet ones are forgotten first).
#[derive(Debug)]
pub struct ApiLimiter {
    per_sec: f64,
    buckets: Mutex<AHashMap<IpAddr, TokenBucket>>,
}

/// Most addresses tracked; past it, addresses whose bucket has refilled are dropped.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

impl ApiLimiter {
    /// `per_sec` requests per second per address, in bursts of twice that.
    pub fn new(per_sec: f64) -> Self {
        ApiLimiter { per_sec, buckets: Mutex::new(AHashMap::new()) }
    }

    /// Counts a request from `ip` at `now`; `Err(retry_after)` when it is over the rate.
    pub fn check(&self, now: Instant, ip: IpAddr) -> Result<(), Duration> {
        let (per_sec, rate) = (self.per_sec, Rate::with_double_burst(self.per_sec));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&ip) {
            buckets.retain(|_, b| !b.is_full(now, rate));
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                // Every tracked address is busy: refuse newcomers rather than grow.
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(ip).or_insert_with(|| TokenBucket::full(now, rate));
        if bucket.try_take(now, rate) {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 / per_sec).clamp(1.0, 3600.0)))
        }
    }

    /// Addresses tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max_open: usize, max_per_ip: usize, max_pending_per_ip: usize) -> Caps {
        Caps { max_open, max_pending: 100, max_per_ip, max_pending_per_ip }
    }

    #[test]
    fn caps_and_release() {
        let a = Admission::new(caps(3, 2, 2));
        let ip1: IpAddr = "127.0.0.1".parse().unwrap();
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let mut p1 = a.try_admit(ip1).unwrap();
        let mut p2 = a.try_admit(ip1).unwrap();
        assert_eq!(a.try_admit(ip1).unwrap_err(), CapReached::PerIp);
        p1.upgrade().unwrap();
        p2.upgrade().unwrap();
        let mut p3 = a.try_admit(ip2).unwrap();
        p3.upgrade().unwrap();
        let mut p4 = a.try_admit(ip2).unwrap();
        assert_eq!(p4.upgrade().unwrap_err(), CapReached::Total);
        drop(p1);
        assert_eq!(a.open(), 2);
        assert!(a.try_admit(ip1).is_ok());
    }

    #[test]
    fn an_address_counts_its_pending_and_upgraded_connections_together() {
        let a = Admission::new(caps(100, 3, 2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut upgraded = a.try_admit(ip).unwrap();
        upgraded.upgrade().unwrap();
        let _pending = [a.try_admit(ip).unwrap(), a.try_admit(ip).unwrap()];
        // One upgraded and two pending: the address holds its three places.
        assert_eq!(a.try_admit(ip).unwrap_err(), CapReached::PerIp);
        drop(upgraded);
        // Three places again, but only two may be pending.
        assert_eq!(a.try_admit(ip).unwrap_err(), CapReached::PendingPerIp);
    }

    #[test]
    fn the_pending_total_is_one_cap_for_every_address() {
        let a = Admission::new(Caps { max_open: 10, max_pending: 2, max_per_ip: 10, max_pending_per_ip: 10 });
        let _p = [a.try_admit("10.0.0.1".parse().unwrap()).unwrap(), a.try_admit("10.0.0.2".parse().unwrap()).unwrap()];
        assert_eq!(a.try_admit("10.0.0.3".parse().unwrap()).unwrap_err(), CapReached::PendingTotal);
    }

    #[test]
    fn api_rate_per_address_bursts_then_the_rate_and_a_bounded_table() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let limiter = ApiLimiter::new(5.0);
        assert_eq!((0..20).filter(|_| limiter.check(t0, a).is_ok()).count(), 10, "a burst of twice the rate");
        assert_eq!(limiter.check(t0, a), Err(Duration::from_secs(1)));
        assert!(limiter.check(t0, b).is_ok(), "addresses are independent");
        assert!(limiter.check(t0 + Duration::from_millis(200), a).is_ok(), "the rate refills");
        let later = t0 + Duration::from_secs(60);
        for i in 0..MAX_TRACKED_ADDRESSES as u32 + 10 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            let _ = limiter.check(later, ip);
        }
        assert!(limiter.tracked() <= MAX_TRACKED_ADDRESSES);
    }
}
