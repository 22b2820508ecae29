//! Membership sources: where the peer set comes from. A source — the static peer file
//! ([`super::file_source`]) or etcd (crate `shimnet-membership-etcd`) — publishes complete,
//! validated peer sets into a [`PeerFeed`] and describes itself in a [`SourceStatus`]. The peering
//! loop takes each new set from its [`PeerSubscription`] and hands it to
//! [`super::Peering::take`], the one path by which a peer set reaches the data plane; the
//! data plane never learns which source it came from.
//!
//! A source that cannot reach its backend publishes nothing: the running peer set (and every
//! route built from it) stays until the source has a new complete set.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use ipnetwork::Ipv4Network;
use serde::Serialize;
use tokio::sync::watch;

use super::peers::{Peer, SourceKind};
use super::{now_unix, PeeringStatus, StatusHandle};

/// A pod subnet held by a node (etcd reservations), as `shimnetctl cluster` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    /// The subnet.
    pub subnet: Ipv4Network,
    /// The node holding it.
    pub node: String,
    /// Whether the node's record is present (its lease is alive).
    pub live: bool,
    /// The node's underlay address, when live.
    pub address: Option<Ipv4Addr>,
    /// Unix time at which the node's lease expires, when looked up.
    pub lease_expires: Option<u64>,
}

/// What a source knows about one peer beyond the peer itself (etcd: its lease).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerMeta {
    /// The lease the peer's record is attached to.
    pub lease_id: Option<i64>,
    /// Unix time at which that lease expires, when looked up.
    pub lease_expires: Option<u64>,
}

/// Cluster-wide settings a source holds (etcd: the cluster record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterInfo {
    /// Where the records live (etcd key prefix).
    pub prefix: String,
    /// All pod subnets.
    pub cluster_cidr: Ipv4Network,
    /// Prefix length of each node's subnet.
    pub subnet_len: u8,
}

/// A membership source's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// `file` or `etcd`.
    pub kind: SourceKind,
    /// The peer file's path or the etcd endpoints.
    pub detail: String,
    /// The etcd member in use.
    pub endpoint: Option<String>,
    /// File: readable and valid at the last look. etcd: lease kept alive and watch running.
    pub reachable: bool,
    /// Unix time since which `reachable` has had its value.
    pub since: Option<u64>,
    /// Unix time of the last peer set published.
    pub last_update: Option<u64>,
    /// Why the source is not reachable, or why its last input was refused.
    pub error: Option<String>,
    /// Entries skipped as invalid, each named (`/shimnet/nodes/x: subnet ...`).
    pub skipped: Vec<String>,
    /// Watch events received (etcd).
    pub watch_events: u64,
    /// Sessions (lease + watch) established (etcd); more than one means it reconnected.
    pub sessions: u64,
    /// Last revision seen (etcd).
    pub revision: Option<i64>,
    /// This node's own lease (etcd).
    pub lease_id: Option<i64>,
    /// Lease TTL in seconds (etcd).
    pub lease_ttl: Option<u64>,
    /// Unix time at which this node's own lease expires, as of its last renewal (etcd).
    pub lease_expires: Option<u64>,
    /// Per-peer facts, by peer name.
    #[serde(skip)]
    pub meta: BTreeMap<String, PeerMeta>,
    /// Subnet reservations (etcd).
    #[serde(skip)]
    pub reservations: Vec<Reservation>,
    /// Cluster settings (etcd).
    #[serde(skip)]
    pub cluster: Option<ClusterInfo>,
}

impl SourceStatus {
    /// A fresh status: not reachable yet, nothing published.
    pub fn new(kind: SourceKind, detail: impl Into<String>) -> Self {
        SourceStatus {
            kind,
            detail: detail.into(),
            endpoint: None,
            reachable: false,
            since: None,
            last_update: None,
            error: None,
            skipped: Vec::new(),
            watch_events: 0,
            sessions: 0,
            revision: None,
            lease_id: None,
            lease_ttl: None,
            lease_expires: None,
            meta: BTreeMap::new(),
            reservations: Vec::new(),
            cluster: None,
        }
    }

    /// Records whether the backend answers; `since` moves only when the value flips.
    pub fn set_reachable(&mut self, reachable: bool, error: Option<String>, now: u64) {
        if self.since.is_none() || self.reachable != reachable {
            self.since = Some(now);
        }
        self.reachable = reachable;
        self.error = error;
    }
}

/// Shared view of a source's status.
pub type SourceHandle = Arc<RwLock<SourceStatus>>;

type Set = Option<Arc<Vec<Peer>>>;

/// The sending half a source owns.
#[derive(Debug, Clone)]
pub struct PeerFeed {
    tx: Arc<watch::Sender<Set>>,
    status: SourceHandle,
}

/// The receiving half the peering loop owns.
#[derive(Debug)]
pub struct PeerSubscription {
    rx: watch::Receiver<Set>,
}

impl PeerFeed {
    /// A feed for a source of `kind` described by `detail`, and its subscription.
    pub fn new(kind: SourceKind, detail: impl Into<String>) -> (PeerFeed, PeerSubscription) {
        let (tx, rx) = watch::channel(None);
        (
            PeerFeed {
                tx: Arc::new(tx),
                status: Arc::new(RwLock::new(SourceStatus::new(kind, detail))),
            },
            PeerSubscription { rx },
        )
    }

    /// Publishes a complete, validated peer set; subscribers wake only when it differs from the
    /// last one. Returns whether it differed.
    pub fn publish(&self, peers: Vec<Peer>) -> bool {
        let changed = self.tx.send_if_modified(|cur| {
            if cur.as_deref() == Some(&peers) {
                false
            } else {
                *cur = Some(Arc::new(peers));
                true
            }
        });
        self.update(|s| s.last_update = Some(now_unix()));
        changed
    }

    /// The last set published.
    pub fn current(&self) -> Option<Arc<Vec<Peer>>> {
        self.tx.borrow().clone()
    }

    /// The status, shared with the API.
    pub fn status(&self) -> SourceHandle {
        self.status.clone()
    }

    /// Changes the status.
    pub fn update<R>(&self, f: impl FnOnce(&mut SourceStatus) -> R) -> R {
        f(&mut self.status.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records whether the backend answers (and why not).
    pub fn set_reachable(&self, reachable: bool, error: Option<String>) {
        self.update(|s| s.set_reachable(reachable, error, now_unix()));
    }
}

impl PeerSubscription {
    /// Waits for a new peer set. Never returns once every feed is gone (the running set stays).
    pub async fn changed(&mut self) -> Arc<Vec<Peer>> {
        loop {
            if self.rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if let Some(set) = self.rx.borrow_and_update().clone() {
                return set;
            }
        }
    }

    /// The last set published, if any.
    pub fn current(&self) -> Option<Arc<Vec<Peer>>> {
        self.rx.borrow().clone()
    }
}

/// Looks up source facts on demand (etcd: each peer's lease expiry); bounded in time by the
/// source itself.
pub type RefreshHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What the API serves about peering: the data plane's status and its source's, merged.
#[derive(Clone)]
pub struct MembershipView {
    /// The peering controller's status.
    pub peering: StatusHandle,
    /// The source's status.
    pub source: SourceHandle,
    /// On-demand lookups (lease expiries).
    pub refresh: Option<RefreshHook>,
    /// Brings the peers' reachability up to date when the last probe is stale (bounded by the
    /// probe timeout); run before the status or the metrics are served.
    pub freshen: Option<RefreshHook>,
}

impl MembershipView {
    /// Runs the source's on-demand lookups, if it has any.
    pub async fn refresh(&self) {
        if let Some(r) = &self.refresh {
            r().await;
        }
    }

    /// Probes the peers if the last result is stale (see [`MembershipView::freshen`]).
    pub async fn freshen(&self) {
        if let Some(f) = &self.freshen {
            f().await;
        }
    }

    /// The peering status with the source's status and per-peer facts filled in.
    pub fn snapshot(&self) -> PeeringStatus {
        let mut st = self
            .peering
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let src = self
            .source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for p in &mut st.peers {
            p.lease_expires = src.meta.get(&p.name).and_then(|m| m.lease_expires);
        }
        st.source = Some(src);
        st.with_live_counters()
    }

    /// The source's status alone.
    pub fn source(&self) -> SourceStatus {
        self.source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, cidr: &str) -> Peer {
        Peer {
            name: name.into(),
            address: "192.168.1.2".parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
            mode: None,
        }
    }

    #[tokio::test]
    async fn subscribers_wake_only_for_a_different_set() {
        let (feed, mut sub) = PeerFeed::new(SourceKind::Etcd, "e1:2379");
        assert!(sub.current().is_none());
        assert!(feed.publish(vec![peer("b", "10.2.0.0/24")]));
        assert_eq!(sub.changed().await.len(), 1);
        assert!(!feed.publish(vec![peer("b", "10.2.0.0/24")]), "same set");
        let quiet = tokio::time::timeout(std::time::Duration::from_millis(50), sub.changed()).await;
        assert!(quiet.is_err(), "no wake-up for an unchanged set");
        assert!(feed.publish(vec![]));
        assert!(sub.changed().await.is_empty());
        assert!(feed.status().read().unwrap().last_update.is_some());
    }

    #[tokio::test]
    async fn a_gone_feed_never_yields_an_empty_set() {
        let (feed, mut sub) = PeerFeed::new(SourceKind::File, "/p");
        feed.publish(vec![peer("b", "10.2.0.0/24")]);
        sub.changed().await;
        drop(feed);
        let r = tokio::time::timeout(std::time::Duration::from_millis(50), sub.changed()).await;
        assert!(r.is_err(), "the running set stays");
        assert_eq!(sub.current().unwrap().len(), 1);
    }

    #[test]
    fn since_moves_only_when_reachability_flips() {
        let mut s = SourceStatus::new(SourceKind::Etcd, "e");
        s.set_reachable(true, None, 100);
        s.set_reachable(true, None, 105);
        assert_eq!(s.since, Some(100));
        s.set_reachable(false, Some("down".into()), 110);
        s.set_reachable(false, Some("still down".into()), 120);
        assert_eq!(
            (s.since, s.error.as_deref()),
            (Some(110), Some("still down"))
        );
    }

    #[test]
    fn snapshot_merges_source_facts_into_peers() {
        use super::super::{mode::Plane, PeerStatus};
        let peering: StatusHandle = Arc::new(RwLock::new(PeeringStatus {
            node: "a".into(),
            peers: vec![PeerStatus {
                name: "b".into(),
                address: "192.168.1.2".parse().unwrap(),
                pod_cidr: "10.2.0.0/24".parse().unwrap(),
                mode: Plane::HostGw,
                reachable: true,
                probed_at: None,
                lease_expires: None,
            }],
            ..PeeringStatus::default()
        }));
        let mut src = SourceStatus::new(SourceKind::Etcd, "e");
        src.meta.insert(
            "b".into(),
            PeerMeta {
                lease_id: Some(7),
                lease_expires: Some(1234),
            },
        );
        let view = MembershipView {
            peering,
            source: Arc::new(RwLock::new(src)),
            refresh: None,
            freshen: None,
        };
        let s = view.snapshot();
        assert_eq!(s.peers[0].lease_expires, Some(1234));
        assert_eq!(s.source.unwrap().kind, SourceKind::Etcd);
    }
}
