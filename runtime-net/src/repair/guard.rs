//! Not mistaking shimnet's own changes for drift, and not fighting another manager (pure).
//!
//! Own changes are kept out in three layers: nftables transactions committed by the daemon's
//! own process are dropped before classification ([`super::nft::Transactions`]); every repair
//! compares the object with its desired state first and changes nothing when they agree, so the
//! notifications a repair causes end in one check that finds nothing (no loop); and an object
//! that needs a real repair again and again (another manager undoing it each time) is backed
//! off here (more than 20 real repairs in 10 s by default), doubling the wait up to a ceiling,
//! instead of being fought over in a tight loop.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Dirty;

/// Repair bookkeeping per object.
#[derive(Debug)]
pub struct Guard {
    window: Duration,
    limit: usize,
    ceiling: Duration,
    repairs: HashMap<Dirty, VecDeque<Instant>>,
    backoff: HashMap<Dirty, (Instant, Duration)>,
}

/// What to do with an object now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check and repair it now.
    Go,
    /// Another manager keeps changing it: not before this instant.
    Wait(Instant),
}

impl Guard {
    /// More than `limit` real repairs of one object within `window` backs it off, starting at one
    /// second and doubling up to `ceiling`.
    pub fn new(window: Duration, limit: usize, ceiling: Duration) -> Self {
        Guard {
            window,
            limit: limit.max(1),
            ceiling,
            repairs: HashMap::new(),
            backoff: HashMap::new(),
        }
    }

    /// Whether `d` may be repaired at `now`.
    pub fn verdict(&self, d: &Dirty, now: Instant) -> Verdict {
        match self.backoff.get(d) {
            Some((until, _)) if now < *until => Verdict::Wait(*until),
            _ => Verdict::Go,
        }
    }

    /// The end of `d`'s backoff, if it has one.
    pub fn until(&self, d: &Dirty) -> Option<Instant> {
        self.backoff.get(d).map(|(until, _)| *until)
    }

    /// Records the outcome of a check of `d` at `now`: `changed` when something had to be put
    /// back (a check that found nothing is not counted, and ends any backoff).
    pub fn record(&mut self, d: &Dirty, changed: bool, now: Instant) {
        if !changed {
            self.repairs.remove(d);
            self.backoff.remove(d);
            return;
        }
        let times = self.repairs.entry(d.clone()).or_default();
        times.push_back(now);
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            times.pop_front();
        }
        if times.len() > self.limit {
            let next = match self.backoff.get(d) {
                Some((_, wait)) => (*wait * 2).min(self.ceiling),
                None => Duration::from_secs(1).min(self.ceiling),
            };
            self.backoff.insert(d.clone(), (now + next, next));
        }
    }

    /// Objects currently backed off (for status).
    pub fn backed_off(&self, now: Instant) -> Vec<Dirty> {
        let mut v: Vec<Dirty> = self
            .backoff
            .iter()
            .filter(|(_, (until, _))| now < *until)
            .map(|(d, _)| d.clone())
            .collect();
        v.sort();
        v
    }
}

impl Default for Guard {
    fn default() -> Self {
        Guard::new(Duration::from_secs(10), 20, Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_that_find_nothing_never_back_off() {
        let t0 = Instant::now();
        let mut g = Guard::default();
        let d = Dirty::NftTable("shimnet".into());
        for i in 0..100 {
            g.record(&d, false, t0 + Duration::from_millis(i));
            assert_eq!(g.verdict(&d, t0 + Duration::from_millis(i)), Verdict::Go);
        }
    }

    #[test]
    fn a_fight_backs_off_doubling_to_the_ceiling() {
        let t0 = Instant::now();
        let mut g = Guard::new(Duration::from_secs(10), 3, Duration::from_secs(4));
        let d = Dirty::Iptables("filter".into());
        let other = Dirty::Bridge("br".into());
        let ms = |n| t0 + Duration::from_millis(n);
        for i in 0..3 {
            g.record(&d, true, ms(i));
        }
        assert_eq!(
            g.verdict(&d, ms(3)),
            Verdict::Go,
            "three repairs are allowed"
        );
        g.record(&d, true, ms(3));
        assert_eq!(g.verdict(&d, ms(4)), Verdict::Wait(ms(1003)));
        assert_eq!(g.verdict(&other, ms(4)), Verdict::Go, "per object");
        assert_eq!(g.backed_off(ms(4)), vec![d.clone()]);
        g.record(&d, true, ms(1003));
        assert_eq!(g.verdict(&d, ms(1004)), Verdict::Wait(ms(3003)));
        g.record(&d, true, ms(3003));
        assert_eq!(g.verdict(&d, ms(3004)), Verdict::Wait(ms(7003)));
        g.record(&d, true, ms(7003));
        assert_eq!(
            g.verdict(&d, ms(7004)),
            Verdict::Wait(ms(11003)),
            "ceiling 4 s"
        );
        // Peace: the next check finds nothing, the backoff ends.
        g.record(&d, false, ms(11003));
        assert_eq!(g.verdict(&d, ms(11004)), Verdict::Go);
        assert!(g.backed_off(ms(11004)).is_empty());
    }

    #[test]
    fn repairs_spread_over_time_do_not_back_off() {
        let t0 = Instant::now();
        let mut g = Guard::new(Duration::from_secs(10), 3, Duration::from_secs(60));
        let d = Dirty::PeerRoutes;
        for i in 0..20u64 {
            let at = t0 + Duration::from_secs(i * 4);
            assert_eq!(g.verdict(&d, at), Verdict::Go);
            g.record(&d, true, at);
        }
    }
}
