//! Who may ask a network's server: sources inside the network's subnets, and the host itself
//! (a query whose source is one of the host's own addresses, e.g. `nslookup web 10.89.0.1` run
//! on the host). Everyone else — other networks' containers, peers, the outside — is refused.
//!
//! The host's addresses come from `getifaddrs` and are cached; the cache is refreshed when a
//! source is neither in the subnets nor cached, at most once per [`REFRESH`], so a flood from
//! outside costs one lookup in a short list per packet.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

/// Least time between two refreshes of the host's addresses.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The host's own addresses (of the namespace shimnetd runs in), cached.
#[derive(Debug)]
pub struct LocalAddrs {
    addrs: ArcSwap<Vec<IpAddr>>,
    epoch: Instant,
    next_refresh: AtomicU64,
}

impl Default for LocalAddrs {
    fn default() -> Self {
        Self::new()
    }
}

fn host_addrs() -> Vec<IpAddr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    list.filter_map(|i| {
        let a = i.address?;
        if let Some(v4) = a.as_sockaddr_in() {
            return Some(IpAddr::V4(v4.ip()));
        }
        a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    })
    .collect()
}

impl LocalAddrs {
    /// Reads the host's addresses now.
    pub fn new() -> Self {
        LocalAddrs {
            addrs: ArcSwap::from_pointee(host_addrs()),
            epoch: Instant::now(),
            next_refresh: AtomicU64::new(REFRESH.as_millis() as u64),
        }
    }

    /// True if `ip` is an address of this host (loopback included).
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_loopback() || self.addrs.load().contains(&ip) {
            return true;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let due = self.next_refresh.load(Ordering::Relaxed);
        if now < due
            || self
                .next_refresh
                .compare_exchange(
                    due,
                    now + REFRESH.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        let fresh = host_addrs();
        let found = fresh.contains(&ip);
        self.addrs.store(Arc::new(fresh));
        found
    }
}

/// IPv4 addresses written as IPv4-mapped IPv6 (a dual-stack socket's view) become plain IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_own_addresses_are_local() {
        let l = LocalAddrs::new();
        assert!(l.contains("127.0.0.1".parse().unwrap()));
        assert!(l.contains("::1".parse().unwrap()));
        // TEST-NET-3 is never configured on a test machine.
        assert!(!l.contains("203.0.113.77".parse().unwrap()));
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
