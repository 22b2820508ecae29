//! A per-source budget for UDP queries: at most `limit` queries per source address per second,
//! enforced while the socket is under pressure (see `listen`); the rest are dropped unread
//! (after `recvfrom`, before any decoding), so one container
//! flooding its gateway costs little more than the receive itself and leaves room in the socket
//! queue for everyone else's queries. Memory is bounded: at most [`MAX_SOURCES`] sources are
//! tracked per window; when more appear (spoofed sources), the untracked ones are let through and
//! cost what any query costs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Sources tracked per window at most.
pub const MAX_SOURCES: usize = 4096;
/// Length of a window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Counts per source in the current one-second window.
#[derive(Debug)]
pub struct Limiter {
    limit: u32,
    start: Instant,
    counts: HashMap<IpAddr, u32>,
}

impl Limiter {
    /// A budget of `limit` queries per source per second (0: no limit).
    pub fn new(limit: u32) -> Self {
        Limiter {
            limit,
            start: Instant::now(),
            counts: HashMap::new(),
        }
    }

    /// True if a query from `ip` at `now` is within its budget.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        if now.duration_since(self.start) >= WINDOW {
            self.counts.clear();
            self.start = now;
        }
        let tracked = self.counts.len();
        match self.counts.get_mut(&ip) {
            Some(c) => {
                *c = c.saturating_add(1);
                *c <= self.limit
            }
            None if tracked < MAX_SOURCES => {
                self.counts.insert(ip, 1);
                true
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_per_source_per_window() {
        let mut l = Limiter::new(3);
        let t0 = l.start;
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "10.0.0.3".parse().unwrap();
        assert!((0..3).all(|_| l.allow(a, t0)));
        assert!(!l.allow(a, t0), "a's fourth in the window");
        assert!(l.allow(b, t0), "b has its own budget");
        assert!(l.allow(a, t0 + WINDOW), "a new window");
        let mut off = Limiter::new(0);
        assert!((0..10_000).all(|_| off.allow(a, t0)));
    }

    #[test]
    fn memory_is_bounded_by_the_tracked_sources() {
        let mut l = Limiter::new(1);
        let t0 = l.start;
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.allow(ip, t0));
        }
        assert_eq!(l.counts.len(), MAX_SOURCES);
    }
}
