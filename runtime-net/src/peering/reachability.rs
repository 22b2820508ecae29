//! When peers are probed across the data plane: after every pass that the peering loop runs
//! (a new peer set, a repair, SIGHUP, the safety pass) and on demand, when someone reads the
//! status (`GET /v1/peers`, `/metrics`, `shimnetctl peers`) and the last probe is stale. There is
//! no probe timer: a daemon that nobody asks sends no probe between events.
//!
//! [`Freshness`] (pure) decides whether the last probe still answers; [`Prober`] runs one probe
//! at a time (a read that arrives while a probe runs waits for that probe's result) and writes
//! each peer's reachability and probe time into the status. [`Prober::freshen`], run for each
//! reader, also reads the encapsulation filter's drop counters, which a pass would otherwise be
//! the only one to read.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{blocking, now_unix, probe, PeerStatus, StatusHandle};
use crate::firewall::encap::EncapFilter;

/// How long a probe's result answers for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// While every peer answered.
    pub up: Duration,
    /// While some peer did not (short, so that a reader waiting for a peer to come up sees it
    /// soon).
    pub down: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            up: Duration::from_secs(10),
            down: Duration::from_secs(1),
        }
    }
}

impl Freshness {
    /// Whether a reader at `now` needs a new probe: never probed, a peer in `peers` not yet
    /// probed (new in the set), or the last probe (finished at `last`) older than the window
    /// for its result.
    pub fn stale(&self, last: Option<Instant>, peers: &[PeerStatus], now: Instant) -> bool {
        if peers.is_empty() {
            return false;
        }
        let Some(last) = last else {
            return true;
        };
        if peers.iter().any(|p| p.probed_at.is_none()) {
            return true;
        }
        let window = if peers.iter().all(|p| p.reachable) {
            self.up
        } else {
            self.down
        };
        now.saturating_duration_since(last) >= window
    }
}

/// Probes the peers in a status, one probe at a time.
pub struct Prober {
    status: StatusHandle,
    src: Ipv4Addr,
    freshness: Freshness,
    timeout: Duration,
    last: tokio::sync::Mutex<Option<Instant>>,
    filter: Option<Arc<dyn EncapFilter>>,
}

impl Prober {
    /// A prober of the peers in `status`, with echoes sent from `src` (this node's gateway)
    /// and answered within `timeout` (all peers at once).
    pub fn new(
        status: StatusHandle,
        src: Ipv4Addr,
        freshness: Freshness,
        timeout: Duration,
    ) -> Self {
        Prober {
            status,
            src,
            freshness,
            timeout,
            last: tokio::sync::Mutex::new(None),
            filter: None,
        }
    }

    /// Also reads `filter`'s drop counters in [`Prober::freshen`].
    pub fn with_filter(mut self, filter: Arc<dyn EncapFilter>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// For a reader of the status: the drop counters as they are now, and the peers probed if
    /// the last result is stale. Returns whether it probed.
    pub async fn freshen(&self) -> bool {
        if let Some(f) = self.filter.clone() {
            match blocking(move || f.dropped()).await {
                Ok(mut d) => {
                    let mut st = self.status.write().unwrap_or_else(|e| e.into_inner());
                    // As a pass counts them: the userspace data plane's drops as of its last
                    // snapshot (the status moves them on with the live counters).
                    d.ipip += st.userspace_ipip.map_or(0, |u| u.non_peer);
                    st.encap_dropped = d;
                }
                // Unreadable this time: the last figures stay (a pass reports the error).
                Err(e) => tracing::debug!("encapsulation drop counters: {e}"),
            }
        }
        self.probe_if_stale().await
    }

    /// Probes every peer now (after a pass).
    pub async fn probe(&self) {
        let mut last = self.last.lock().await;
        self.probe_locked().await;
        *last = Some(Instant::now());
    }

    /// Probes every peer if the last result is stale (see [`Freshness::stale`]); returns
    /// whether it probed. A call made while another probe runs waits for it and uses its
    /// result when that is fresh.
    pub async fn probe_if_stale(&self) -> bool {
        let mut last = self.last.lock().await;
        let stale = {
            let st = self.status.read().unwrap_or_else(|e| e.into_inner());
            self.freshness.stale(*last, &st.peers, Instant::now())
        };
        if stale {
            self.probe_locked().await;
            *last = Some(Instant::now());
        }
        stale
    }

    async fn probe_locked(&self) {
        let targets: Vec<PeerStatus> = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .peers
            .clone();
        if targets.is_empty() {
            return;
        }
        let (src, timeout) = (self.src, self.timeout);
        let dsts: Vec<_> = targets.iter().map(|p| probe::gateway(p.pod_cidr)).collect();
        // One blocking thread for all peers, however many (a thread each would fill the
        // daemon's small blocking pool while peers are down).
        let up = tokio::task::spawn_blocking(move || probe::ping_all(src, &dsts, timeout))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| vec![false; targets.len()]);
        let results: Vec<_> = targets.into_iter().zip(up).collect();
        let at = now_unix();
        let mut st = self.status.write().unwrap_or_else(|e| e.into_inner());
        record(&mut st.peers, &results, at);
    }
}

/// Writes each probe result into the peers still the same (a peer changed or removed while the
/// probe ran keeps what it has).
fn record(peers: &mut [PeerStatus], results: &[(PeerStatus, bool)], at: u64) {
    for s in peers {
        if let Some((_, up)) = results.iter().find(|(p, _)| p.same_peer(s)) {
            s.reachable = *up;
            s.probed_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::mode::Plane;

    fn peer(name: &str, reachable: bool, probed_at: Option<u64>) -> PeerStatus {
        PeerStatus {
            name: name.into(),
            address: "192.168.1.2".parse().unwrap(),
            pod_cidr: "10.2.0.0/24".parse().unwrap(),
            mode: Plane::HostGw,
            reachable,
            probed_at,
            lease_expires: None,
        }
    }

    #[test]
    fn staleness_follows_the_result_and_new_peers() {
        let f = Freshness::default();
        let t0 = Instant::now();
        let up = [peer("b", true, Some(1))];
        let down = [peer("b", false, Some(1))];
        assert!(!f.stale(None, &[], t0), "no peers: nothing to probe");
        assert!(f.stale(None, &up, t0), "never probed");
        assert!(!f.stale(Some(t0), &up, t0 + Duration::from_secs(9)));
        assert!(f.stale(Some(t0), &up, t0 + Duration::from_secs(10)));
        assert!(!f.stale(Some(t0), &down, t0 + Duration::from_millis(900)));
        assert!(f.stale(Some(t0), &down, t0 + Duration::from_secs(1)));
        let with_new = [peer("b", true, Some(1)), peer("c", false, None)];
        assert!(
            f.stale(Some(t0), &with_new, t0),
            "a new peer is probed at once"
        );
    }

    #[test]
    fn results_go_only_to_peers_unchanged_since() {
        let mut now = vec![peer("b", false, None), peer("c", false, Some(5))];
        now[1].pod_cidr = "10.3.0.0/24".parse().unwrap();
        let mut moved = peer("c", false, None);
        moved.pod_cidr = "10.9.0.0/24".parse().unwrap();
        let results = vec![(peer("b", false, None), true), (moved, true)];
        record(&mut now, &results, 42);
        assert!(now[0].reachable && now[0].probed_at == Some(42));
        assert!(
            !now[1].reachable && now[1].probed_at == Some(5),
            "c changed subnet while probed: its result is not taken"
        );
    }

    #[tokio::test]
    async fn a_read_within_the_window_does_not_probe_again() {
        // The peer's "gateway" is 127.0.0.1: the probe never leaves loopback.
        let mut b = peer("b", false, None);
        b.pod_cidr = "127.0.0.0/24".parse().unwrap();
        let status = StatusHandle::default();
        status.write().unwrap().peers = vec![b.clone()];
        let p = Prober::new(
            status.clone(),
            Ipv4Addr::LOCALHOST,
            Freshness {
                up: Duration::from_secs(60),
                down: Duration::from_secs(60),
            },
            Duration::from_millis(900),
        );
        assert!(p.probe_if_stale().await, "never probed");
        let got = status.read().unwrap().peers[0].clone();
        assert!(got.reachable, "loopback answers (tests run as root)");
        assert!(got.probed_at.is_some());
        assert!(!p.probe_if_stale().await, "fresh");
        let mut c = b.clone();
        c.name = "c".into();
        status.write().unwrap().peers.push(c);
        assert!(p.probe_if_stale().await, "new peer");
    }
}
