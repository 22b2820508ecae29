//! Gathering dirty objects until the notifications go quiet (pure).
//!
//! Every owned object a notification touches is added with the time it was first seen; the set
//! is handed out once no new notification arrived for a quiet window, or once the oldest entry
//! has waited a longest delay (so a never-ending flood still gets repaired). An object seen many
//! times is repaired once; [`Dirty::All`] swallows everything else.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Dirty;

/// One pass's worth of work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Each object once, with the time it was first seen (for event → repaired latency).
    pub objects: Vec<(Dirty, Instant)>,
    /// Notifications folded into this batch.
    pub events: u64,
}

/// The coalescer.
#[derive(Debug)]
pub struct Coalescer {
    quiet: Duration,
    max_delay: Duration,
    dirty: BTreeMap<Dirty, Instant>,
    last: Option<Instant>,
    events: u64,
}

impl Coalescer {
    /// Hands a batch out after `quiet` without news, or `max_delay` after its oldest object.
    pub fn new(quiet: Duration, max_delay: Duration) -> Self {
        Coalescer {
            quiet,
            max_delay: max_delay.max(quiet),
            dirty: BTreeMap::new(),
            last: None,
            events: 0,
        }
    }

    /// Records that `d` changed at `now`.
    pub fn add(&mut self, d: Dirty, now: Instant) {
        self.events += 1;
        self.last = Some(now);
        self.dirty.entry(d).or_insert(now);
    }

    /// Records that `d` was seen in place at `now`: a check it waits for is dropped (the
    /// notifications that asked for it are answered by this later one).
    pub fn settle(&mut self, d: &Dirty, now: Instant) {
        self.events += 1;
        self.last = Some(now);
        self.dirty.remove(d);
    }

    /// Whether anything waits.
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty()
    }

    /// When the waiting batch is due, if anything waits.
    pub fn deadline(&self) -> Option<Instant> {
        let oldest = self.dirty.values().min()?;
        let quiet = self.last.unwrap_or(*oldest) + self.quiet;
        Some(quiet.min(*oldest + self.max_delay))
    }

    /// The batch, if it is due at `now`; the coalescer is empty afterwards.
    pub fn take_due(&mut self, now: Instant) -> Option<Batch> {
        if now < self.deadline()? {
            return None;
        }
        let events = std::mem::take(&mut self.events);
        self.last = None;
        let dirty = std::mem::take(&mut self.dirty);
        let objects = match dirty.get(&Dirty::All) {
            Some(_) => {
                let first = *dirty.values().min().expect("not empty");
                vec![(Dirty::All, first)]
            }
            None => dirty.into_iter().collect(),
        };
        Some(Batch { objects, events })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_millis(200);

    #[test]
    fn nothing_waits_nothing_is_due() {
        let mut c = Coalescer::new(Q, MAX);
        assert!(c.is_empty());
        assert_eq!(c.deadline(), None);
        assert_eq!(c.take_due(Instant::now()), None);
    }

    #[test]
    fn a_flood_is_one_batch_after_the_quiet_window() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Q, MAX);
        for i in 0..5000u64 {
            let at = t0 + Duration::from_micros(i * 10); // 50 ms of notifications
            c.add(Dirty::NftTable("shimnet".into()), at);
            c.add(Dirty::Bridge(format!("br{}", i % 3)), at);
            assert_eq!(c.take_due(at), None, "not while notifications keep coming");
        }
        let last = t0 + Duration::from_micros(49_990);
        assert_eq!(c.deadline(), Some(last + Q));
        assert_eq!(c.take_due(last + Q - Duration::from_millis(1)), None);
        let b = c.take_due(last + Q).unwrap();
        assert_eq!(b.events, 10_000);
        assert_eq!(b.objects.len(), 4, "each object once: {:?}", b.objects);
        assert!(b
            .objects
            .iter()
            .all(|(_, first)| *first < t0 + Duration::from_millis(1)));
        assert!(c.is_empty());
        assert_eq!(c.take_due(last + MAX), None);
    }

    #[test]
    fn an_endless_flood_is_still_served_after_the_longest_delay() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Q, MAX);
        let mut served = 0;
        for ms in 0..1000u64 {
            let at = t0 + Duration::from_millis(ms);
            c.add(Dirty::PeerRoutes, at);
            if c.take_due(at).is_some() {
                served += 1;
            }
        }
        assert_eq!(served, 4, "one batch every 200 ms of a 1 s flood");
    }

    #[test]
    fn a_lost_notification_swallows_the_rest() {
        let t0 = Instant::now();
        let mut c = Coalescer::new(Q, MAX);
        c.add(Dirty::Gateway("br".into()), t0);
        c.add(Dirty::All, t0 + Q / 2);
        let b = c.take_due(t0 + Q * 2).unwrap();
        assert_eq!(b.objects, vec![(Dirty::All, t0)]);
    }
}
