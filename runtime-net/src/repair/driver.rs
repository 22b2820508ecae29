//! Notifications in, batches of owned objects to check out (pure): classification, own-change
//! filtering, coalescing, backoff and retries put together, with no clock or socket of its own.
//!
//! Three rules shape a batch beyond the coalescer's: a bridge's check covers its gateway (the
//! same repair), so a batch with both holds the bridge only; the peering objects (peer routes, tunnels,
//! their fdb entries) are all put back by one peering pass, so a batch holds at most one of them,
//! the most telling (a tunnel over routes over fdb entries: deleting a tunnel also flushes its
//! fdb); and a check that failed (say the device was still being torn down by the kernel) is
//! tried again after a short wait, 100 ms doubling to 5 s, until it succeeds or finds everything
//! in place, instead of waiting for the next notification or the safety pass.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rtnetlink::packet_route::link::LinkMessage;

use super::coalesce::{Batch, Coalescer};
use super::guard::{Guard, Verdict};
use super::links::{LinkClassifier, Owned};
use super::listen::Note;
use super::nft::{IsOwn, Transactions};
use super::Dirty;

/// Timing of the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A batch is handed out after this long without a new notification.
    pub quiet: Duration,
    /// … or at the latest this long after its oldest object.
    pub max_delay: Duration,
}

impl Default for Timing {
    /// 20 ms quiet, 250 ms at most: repairs well within a second, one pass per burst.
    fn default() -> Self {
        Timing {
            quiet: Duration::from_millis(20),
            max_delay: Duration::from_millis(250),
        }
    }
}

/// How a check of one object ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything was in place.
    InPlace,
    /// Something had to be put back.
    Repaired,
    /// The check or repair failed; it is tried again.
    Failed,
}

impl Outcome {
    /// The outcome of a repairer's answer (`Ok(changed)` or an error).
    pub fn of<E>(r: &Result<bool, E>) -> Self {
        match r {
            Ok(true) => Outcome::Repaired,
            Ok(false) => Outcome::InPlace,
            Err(_) => Outcome::Failed,
        }
    }
}

/// A failed object's next try.
#[derive(Debug, Clone, Copy)]
struct Retry {
    /// When the object was first seen changed (for the latency reported).
    first: Instant,
    at: Instant,
}

/// First wait after a failed check.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between tries of a failing check.
const RETRY_CEILING: Duration = Duration::from_secs(5);
/// Tries after the first failure (~30 s in all); then the object waits for its next
/// notification or the safety pass, so a lasting fault costs no steady work.
const RETRY_LIMIT: u32 = 10;

/// Rank of a peering object within a batch (lower wins); `None` for the others.
fn peering_rank(d: &Dirty) -> Option<u8> {
    match d {
        Dirty::Tunnel(_) => Some(0),
        Dirty::PeerRoutes => Some(1),
        Dirty::Fdb(_) => Some(2),
        _ => None,
    }
}

/// A bridge's check covers its gateway (one repair of the link, its addresses and routes): a
/// batch with both keeps the bridge, first seen at the earlier of the two.
fn bridge_covers_gateway(mut objects: Vec<(Dirty, Instant)>) -> Vec<(Dirty, Instant)> {
    let gateways: Vec<(String, Instant)> = objects
        .iter()
        .filter_map(|(d, t)| match d {
            Dirty::Gateway(b) => Some((b.clone(), *t)),
            _ => None,
        })
        .collect();
    for (b, t) in gateways {
        let Some(i) = objects
            .iter()
            .position(|(d, _)| matches!(d, Dirty::Bridge(x) if *x == b))
        else {
            continue;
        };
        objects[i].1 = objects[i].1.min(t);
        objects.retain(|(d, _)| !matches!(d, Dirty::Gateway(x) if *x == b));
    }
    objects
}

/// Keeps one peering object (the best ranked, with the earliest first-seen time of them all).
fn one_peering_pass(objects: Vec<(Dirty, Instant)>) -> Vec<(Dirty, Instant)> {
    let mut best: Option<(Dirty, Instant)> = None;
    let mut out = Vec::with_capacity(objects.len());
    for (d, first) in objects {
        let Some(rank) = peering_rank(&d) else {
            out.push((d, first));
            continue;
        };
        best = Some(match best {
            None => (d, first),
            Some((b, bf)) => {
                let keep = if peering_rank(&b).is_some_and(|r| r <= rank) {
                    b
                } else {
                    d
                };
                (keep, bf.min(first))
            }
        });
    }
    out.extend(best);
    out
}

/// The driver's state.
#[derive(Debug)]
pub struct Driver {
    links: LinkClassifier,
    nft: Transactions,
    coalesce: Coalescer,
    guard: Guard,
    /// Objects backed off, with their first-seen time, until their wait ends.
    waiting: BTreeMap<Dirty, Instant>,
    /// Objects whose last check failed, until their next try.
    failed: BTreeMap<Dirty, Retry>,
    /// The current wait between tries of each object still failing, and the tries made.
    retry_wait: BTreeMap<Dirty, (Duration, u32)>,
    /// Notifications read, owned or not (for the flood figures).
    pub notes_seen: u64,
}

impl Driver {
    /// A driver whose nftables transactions committed by threads `is_own` accepts are not drift.
    pub fn new(is_own: IsOwn, timing: Timing) -> Self {
        Driver {
            links: LinkClassifier::new(),
            nft: Transactions::new(is_own),
            coalesce: Coalescer::new(timing.quiet, timing.max_delay),
            guard: Guard::default(),
            waiting: BTreeMap::new(),
            failed: BTreeMap::new(),
            retry_wait: BTreeMap::new(),
            notes_seen: 0,
        }
    }

    /// Replaces the backoff policy.
    pub fn with_guard(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }

    /// Learns the links present (a dump taken after subscribing).
    pub fn seed<'a>(
        &mut self,
        links: impl IntoIterator<Item = &'a LinkMessage>,
        owned: &dyn Owned,
    ) {
        for l in links {
            self.links.learn(l, owned);
        }
    }

    /// Feeds one notification received at `now`.
    pub fn feed(&mut self, note: &Note, owned: &dyn Owned, now: Instant) {
        self.notes_seen += 1;
        match note {
            Note::Route(m) => match self.links.classify(m, owned) {
                // An endpoint's port up on its bridge: what any earlier notification about it
                // asked to check is answered (an attach's own notifications end this way).
                Some(d) if self.links.port_in_place(m, &d) => self.coalesce.settle(&d, now),
                Some(d) => self.coalesce.add(d, now),
                None => {}
            },
            Note::Nft(m) => {
                for d in self.nft.feed(m) {
                    self.coalesce.add(d, now);
                }
            }
            Note::Lost => self.coalesce.add(Dirty::All, now),
        }
    }

    /// Asks for a check of `d` (a periodic pass: [`Dirty::All`]).
    pub fn add(&mut self, d: Dirty, now: Instant) {
        self.coalesce.add(d, now);
    }

    /// When [`Driver::due`] has something next.
    pub fn deadline(&self) -> Option<Instant> {
        let waits = self.waiting.keys().filter_map(|d| self.guard.until(d));
        let retries = self.failed.values().map(|r| r.at);
        self.coalesce
            .deadline()
            .into_iter()
            .chain(waits)
            .chain(retries)
            .min()
    }

    /// The objects to check now, if any: a due batch, less those backed off (kept for later),
    /// plus those whose backoff has ended.
    pub fn due(&mut self, now: Instant) -> Option<Batch> {
        let mut batch = self.coalesce.take_due(now).unwrap_or(Batch {
            objects: Vec::new(),
            events: 0,
        });
        let ready: Vec<Dirty> = self
            .waiting
            .keys()
            .filter(|d| self.guard.verdict(d, now) == Verdict::Go)
            .cloned()
            .collect();
        for d in ready {
            let first = self.waiting.remove(&d).expect("listed");
            if !batch.objects.iter().any(|(o, _)| *o == d) {
                batch.objects.push((d, first));
            }
        }
        let retry: Vec<Dirty> = self
            .failed
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for d in retry {
            let first = self.failed.remove(&d).expect("listed").first;
            match batch.objects.iter_mut().find(|(o, _)| *o == d) {
                Some((_, f)) => *f = (*f).min(first),
                None => batch.objects.push((d, first)),
            }
        }
        // A gateway whose bridge waits for a retry: the bridge's check, now, covers both.
        let waiting_bridges: Vec<Dirty> = batch
            .objects
            .iter()
            .filter_map(|(d, _)| match d {
                Dirty::Gateway(b) => Some(Dirty::Bridge(b.clone())),
                _ => None,
            })
            .filter(|b| self.failed.contains_key(b))
            .collect();
        for b in waiting_bridges {
            let first = self.failed.remove(&b).expect("listed").first;
            batch.objects.push((b, first));
        }
        batch.objects = bridge_covers_gateway(one_peering_pass(batch.objects));
        let mut go = Vec::with_capacity(batch.objects.len());
        for (d, first) in batch.objects {
            match self.guard.verdict(&d, now) {
                Verdict::Go => go.push((d, first)),
                Verdict::Wait(_) => {
                    self.waiting.entry(d).or_insert(first);
                }
            }
        }
        go.sort();
        batch.objects = go;
        (!batch.objects.is_empty()).then_some(batch)
    }

    /// Records the outcome of checking `d` (first seen at `first`); a failure is tried again.
    pub fn done(&mut self, d: &Dirty, outcome: Outcome, first: Instant, now: Instant) {
        if outcome == Outcome::Failed {
            let (wait, tries) = self.retry_wait.get(d).map_or((RETRY_FIRST, 1), |(w, n)| {
                ((*w * 2).min(RETRY_CEILING), n + 1)
            });
            if tries > RETRY_LIMIT {
                self.failed.remove(d);
                self.retry_wait.remove(d);
                return;
            }
            self.retry_wait.insert(d.clone(), (wait, tries));
            let at = now + wait;
            self.failed
                .entry(d.clone())
                .and_modify(|r| r.at = at)
                .or_insert(Retry { first, at });
            return;
        }
        self.failed.remove(d);
        self.retry_wait.remove(d);
        self.guard.record(d, outcome == Outcome::Repaired, now);
    }

    /// Objects currently backed off because another manager keeps changing them.
    pub fn backed_off(&self, now: Instant) -> Vec<Dirty> {
        self.guard.backed_off(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::guard::Guard;
    use crate::repair::nft::{Message, Object};
    use rtnetlink::packet_route::link::LinkAttribute;
    use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use std::collections::HashSet;

    fn link(index: u32, name: &str, alias: Option<&str>) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(a) = alias {
            m.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        m
    }

    fn route(proto: u8, oif: u32) -> Note {
        let mut m = RouteMessage::default();
        m.header.protocol = RouteProtocol::from(proto);
        m.attributes.push(RouteAttribute::Oif(oif));
        Note::Route(RouteNetlinkMessage::DelRoute(m))
    }

    fn nft_rule(table: &str, chain: &str) -> Note {
        Note::Nft(Message::Change {
            family: 2,
            object: Object::Rule,
            deleted: true,
            table: table.into(),
            chain: Some(chain.into()),
        })
    }

    fn gen(pid: u32) -> Note {
        Note::Nft(Message::Generation {
            pid,
            name: "x".into(),
        })
    }

    fn driver() -> (Driver, HashSet<String>) {
        let owned = HashSet::new();
        let mut d = Driver::new(Box::new(|pid| pid == 100), Timing::default());
        d.seed(
            &[
                link(2, "eth0", None),
                link(5, "snbr1", Some("shimnet:net=n1")),
            ],
            &owned,
        );
        (d, owned)
    }

    /// A notification about port 6 (`snv…`, endpoint n1/c/eth0): AF_UNSPEC with its alias, or the
    /// bridge's (AF_BRIDGE, no alias); up or not; on bridge `master` (0: none).
    fn port(bridge_msg: bool, up: bool, master: u32) -> Note {
        use rtnetlink::packet_route::link::LinkFlags;
        use rtnetlink::packet_route::AddressFamily;
        let mut m = if bridge_msg {
            let mut m = link(6, "snv0123456789ab", None);
            m.header.interface_family = AddressFamily::Bridge;
            m
        } else {
            link(6, "snv0123456789ab", Some("shimnet:ep=n1/c/eth0"))
        };
        if up {
            m.header.flags |= LinkFlags::Up;
        }
        if master != 0 {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        Note::Route(RouteNetlinkMessage::NewLink(m))
    }

    #[test]
    fn an_attach_leaves_nothing_to_check_and_a_port_cut_off_is_checked() {
        let (mut d, o) = driver();
        let t0 = Instant::now();
        // An attach: the pair is created down on bridge 5, the bridge tells about its new port,
        // then the port comes up (and the bridge tells again).
        for (i, n) in [
            port(false, false, 5),
            port(true, false, 5),
            port(false, true, 5),
            port(true, true, 5),
        ]
        .iter()
        .enumerate()
        {
            d.feed(n, &o, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(d.deadline(), None, "an attach's own notifications");
        assert_eq!(d.due(t0 + Duration::from_secs(5)), None);
        // Cut off its bridge, or moved to another: checked.
        let port6 = Dirty::Port("snv0123456789ab".into());
        for cut in [
            port(false, true, 0),
            port(false, true, 9),
            port(false, false, 5),
        ] {
            d.feed(&cut, &o, t0);
            let b = d.due(d.deadline().expect("a check")).unwrap();
            assert_eq!(b.objects, vec![(port6.clone(), t0)]);
        }
        // The bridge letting the port go (its own deletion message) is a cut too, and the port
        // stays known.
        let Note::Route(RouteNetlinkMessage::NewLink(m)) = port(true, true, 5) else {
            unreachable!()
        };
        d.feed(&Note::Route(RouteNetlinkMessage::DelLink(m)), &o, t0);
        let b = d.due(d.deadline().expect("a check")).unwrap();
        assert_eq!(b.objects, vec![(port6.clone(), t0)]);
        // Cut off, then put back before the check was due: nothing left to check.
        d.feed(&port(false, true, 0), &o, t0);
        d.feed(&port(false, true, 5), &o, t0 + Duration::from_millis(1));
        assert_eq!(d.due(t0 + Duration::from_secs(5)), None);
        // Its deletion still names the endpoint.
        let Note::Route(RouteNetlinkMessage::NewLink(m)) = port(false, false, 0) else {
            unreachable!()
        };
        d.feed(&Note::Route(RouteNetlinkMessage::DelLink(m)), &o, t0);
        let b = d.due(d.deadline().expect("a check")).unwrap();
        assert_eq!(b.objects, vec![(Dirty::Endpoint("n1/c/eth0".into()), t0)]);
    }

    #[test]
    fn an_unrelated_flood_hands_out_nothing() {
        let (mut d, o) = driver();
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let at = t0 + Duration::from_micros(i as u64);
            d.feed(&route(4, 2), &o, at);
            d.feed(
                &Note::Route(RouteNetlinkMessage::NewLink(link(1000 + i, "fl", None))),
                &o,
                at,
            );
            d.feed(&nft_rule("firewalld", "x"), &o, at);
            d.feed(&gen(7), &o, at);
        }
        assert_eq!(d.notes_seen, 20_000);
        assert_eq!(d.deadline(), None);
        assert_eq!(d.due(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn owned_changes_come_out_once_and_own_nft_changes_not_at_all() {
        let (mut d, o) = driver();
        let t0 = Instant::now();
        d.feed(&nft_rule("shimnet", "forward"), &o, t0);
        d.feed(&gen(100), &o, t0);
        assert_eq!(d.deadline(), None, "the daemon's own transaction");
        for _ in 0..100 {
            d.feed(&route(2, 5), &o, t0);
            d.feed(&nft_rule("filter", "FORWARD"), &o, t0);
        }
        d.feed(&gen(7), &o, t0);
        let due = d.deadline().unwrap();
        let b = d.due(due).unwrap();
        assert_eq!(
            b.objects,
            vec![
                (Dirty::Gateway("snbr1".into()), t0),
                (Dirty::Iptables("filter".into()), t0)
            ]
        );
        assert_eq!(d.due(due + Duration::from_secs(1)), None);
    }

    #[test]
    fn a_fought_over_object_waits_and_comes_back() {
        let (d, o) = driver();
        let mut d = d.with_guard(Guard::new(
            Duration::from_secs(10),
            1,
            Duration::from_secs(8),
        ));
        let t0 = Instant::now();
        let gw = Dirty::Gateway("snbr1".into());
        d.done(&gw, Outcome::Repaired, t0, t0);
        d.done(&gw, Outcome::Repaired, t0, t0);
        d.feed(&route(2, 5), &o, t0);
        assert_eq!(d.due(t0 + Duration::from_millis(100)), None, "backed off");
        assert_eq!(d.backed_off(t0), vec![gw.clone()]);
        let b = d.due(t0 + Duration::from_millis(1001)).unwrap();
        assert_eq!(b.objects, vec![(gw, t0)]);
    }

    #[test]
    fn a_lost_notification_is_a_full_pass() {
        let (mut d, o) = driver();
        let t0 = Instant::now();
        d.feed(&route(2, 5), &o, t0);
        d.feed(&Note::Lost, &o, t0);
        let b = d.due(t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(b.objects, vec![(Dirty::All, t0)]);
    }

    #[test]
    fn a_batch_holds_one_peering_pass_named_after_the_most_telling_object() {
        let (mut d, _) = driver();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        d.add(Dirty::Fdb("snvx0".into()), ms(0));
        d.add(Dirty::Gateway("snbr1".into()), ms(1));
        d.add(Dirty::PeerRoutes, ms(2));
        d.add(Dirty::Tunnel("snvx0".into()), ms(3));
        let b = d.due(ms(100)).unwrap();
        assert_eq!(
            b.objects,
            vec![
                (Dirty::Gateway("snbr1".into()), ms(1)),
                (Dirty::Tunnel("snvx0".into()), ms(0)),
            ],
            "one pass, for the tunnel, timed from the first peering change"
        );
        d.add(Dirty::Fdb("snvx0".into()), ms(200));
        d.add(Dirty::PeerRoutes, ms(201));
        let b = d.due(ms(300)).unwrap();
        assert_eq!(b.objects, vec![(Dirty::PeerRoutes, ms(200))]);
    }

    #[test]
    fn a_bridges_check_covers_its_gateway() {
        let (mut d, _) = driver();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        d.add(Dirty::Gateway("snbr1".into()), ms(0));
        d.add(Dirty::Gateway("snbr2".into()), ms(1));
        d.add(Dirty::Bridge("snbr1".into()), ms(2));
        let b = d.due(ms(100)).unwrap();
        assert_eq!(
            b.objects,
            vec![
                (Dirty::Bridge("snbr1".into()), ms(0)),
                (Dirty::Gateway("snbr2".into()), ms(1)),
            ]
        );
        // The bridge's check failed (the kernel still tearing it down) and waits for a retry;
        // its gateway changes meanwhile: the bridge is checked at once, for both.
        d.done(
            &Dirty::Bridge("snbr1".into()),
            Outcome::Failed,
            ms(0),
            ms(101),
        );
        d.add(Dirty::Gateway("snbr1".into()), ms(110));
        let b = d.due(ms(150)).unwrap();
        assert_eq!(b.objects, vec![(Dirty::Bridge("snbr1".into()), ms(0))]);
    }

    #[test]
    fn a_failed_check_is_tried_again_until_it_succeeds() {
        let (mut d, _) = driver();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let tunnel = Dirty::Tunnel("snvx0".into());
        d.add(tunnel.clone(), t0);
        let b = d.due(ms(20)).unwrap();
        assert_eq!(b.objects, vec![(tunnel.clone(), t0)]);
        d.done(&tunnel, Outcome::Failed, t0, ms(25));
        assert_eq!(d.deadline(), Some(ms(125)), "first retry after 100 ms");
        assert_eq!(d.due(ms(124)), None);
        let b = d.due(ms(125)).unwrap();
        assert_eq!(
            b.objects,
            vec![(tunnel.clone(), t0)],
            "latency from the change"
        );
        d.done(&tunnel, Outcome::Failed, t0, ms(130));
        assert_eq!(d.deadline(), Some(ms(330)), "the wait doubles");
        let b = d.due(ms(330)).unwrap();
        d.done(&b.objects[0].0, Outcome::Repaired, t0, ms(340));
        assert_eq!(d.deadline(), None, "nothing more once it worked");
        d.done(&tunnel, Outcome::Failed, t0, ms(400));
        assert_eq!(
            d.deadline(),
            Some(ms(500)),
            "a new failure starts over at 100 ms"
        );
        let mut waits = Vec::new();
        let mut last = ms(400);
        while let Some(at) = d.deadline() {
            waits.push(at.duration_since(last).as_millis());
            let b = d.due(at).unwrap();
            d.done(&b.objects[0].0, Outcome::Failed, t0, at);
            last = at;
        }
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000],
            "doubling to 5 s, then left to the next notification"
        );
    }
}
