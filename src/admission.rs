//! Connection caps: a total and a per-IP limit, checked before the upgrade.
//!
//! This is the one piece of state every shard touches, once when a WebSocket connection is
//! admitted and once when it ends; never per message. A [`Permit`] travels with the connection
//! (also across shards) and gives its place back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ahash::AHashMap;

use crate::session::TokenBucket;

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

/// Room-API requests (room creation, joins) per client address, on one shard: a token bucket
/// per address, bounded in how many addresses it tracks (quiet ones are forgotten first).
#[derive(Debug)]
pub struct ApiLimiter {
    per_sec: f64,
    buckets: AHashMap<IpAddr, TokenBucket>,
}

/// Most addresses one shard tracks; past it, addresses whose bucket has refilled are dropped.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

impl ApiLimiter {
    /// `per_sec` requests per second per address, in bursts of twice that.
    pub fn new(per_sec: f64) -> Self {
        ApiLimiter { per_sec, buckets: AHashMap::new() }
    }

    /// Counts a request from `ip` at `now`; `Err(retry_after)` when it is over the rate.
    pub fn check(&mut self, now: Instant, ip: IpAddr) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_TRACKED_ADDRESSES && !self.buckets.contains_key(&ip) {
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= MAX_TRACKED_ADDRESSES {
                // Every tracked address is busy: refuse newcomers rather than grow.
                return Err(Duration::from_secs(1));
            }
        }
        let per_sec = self.per_sec;
        let bucket = self.buckets.entry(ip).or_insert_with(|| TokenBucket::new(now, per_sec, 2.0 * per_sec));
        if bucket.try_take(now) {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 / per_sec).clamp(1.0, 3600.0)))
        }
    }

    /// Addresses tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
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

#[cfg(test)]
mod api_limiter_tests {
    use super::*;

    #[test]
    fn per_address_bursts_then_the_rate_and_a_bounded_table() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut limiter = ApiLimiter::new(5.0);
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
