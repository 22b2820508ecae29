//! The side effects: start-up (cluster record, subnet claim, first listing) and the session loop
//! that [`crate::session::Session`] steers (register, watch, keep the lease alive, back off).
//! Every etcd call is bounded by `dial_timeout_secs`; nothing here ever publishes a peer set that
//! did not come from records actually read, so an outage leaves the running peers in place.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions, WatchStream,
};
use ipnetwork::Ipv4Network;
use runtime_net::peering::peers::{NodeConfig, NodeSettings, Peer, PeeringConfig, SourceKind};
use runtime_net::peering::plan::vxlan_mac;
use runtime_net::peering::source::{
    ClusterInfo, PeerFeed, PeerMeta, PeerSubscription, RefreshHook, SourceHandle,
};

use crate::claim::{self, ClaimError, ClaimInput};
use crate::client;
use crate::config::{ConfigError, EtcdConfig};
use crate::keys::Keys;
use crate::record::{mac_text, ClusterRecord, NodeRecord, Reservation};
use crate::session::{Backoff, Outcome, Session, Step};
use crate::store::Store;
use crate::view::{ClusterView, Event, Kv};

/// Claim attempts before giving up (each lost compare-and-set is one).
const CLAIM_ATTEMPTS: u32 = 64;

/// Why the etcd source could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A key of `[etcd]` (or a file it names) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// etcd did not answer in time and there is no remembered subnet to start with.
    #[error("etcd.endpoints: no member of {endpoints} answered within {secs} s ({detail}), and this node has no subnet remembered in its state dir to start with")]
    Unreachable {
        /// The endpoints.
        endpoints: String,
        /// How long start waited.
        secs: u64,
        /// The last error.
        detail: String,
    },
    /// The credentials were refused.
    #[error("etcd.username: {0}")]
    Auth(String),
    /// This node's settings contradict the cluster record.
    #[error("{0}")]
    Cluster(String),
    /// No subnet can be claimed.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// Too many lost races for a subnet.
    #[error("no subnet claimed after {0} attempts (every attempt lost a race with another node)")]
    Contention(u32),
}

/// What [`start`] needs.
#[derive(Debug, Clone)]
pub struct StartArgs {
    /// `[etcd]`.
    pub etcd: EtcdConfig,
    /// `[node]`.
    pub node: NodeSettings,
    /// `[peering]`.
    pub peering: PeeringConfig,
    /// The daemon's state dir.
    pub state_dir: std::path::PathBuf,
}

/// A started source.
pub struct Started {
    /// This node with its subnet.
    pub node: NodeConfig,
    /// The peer set known at start (listed now, or the one saved before); `None`: not known.
    pub initial: Option<Vec<Peer>>,
    /// The session loop, to be run with [`EtcdSource::run`].
    pub source: EtcdSource,
    /// What the peering loop reads.
    pub subscription: PeerSubscription,
    /// The source's status.
    pub status: SourceHandle,
    /// Looks up lease expiries on demand (`GET /v1/peers?leases=true`, `/v1/cluster`).
    pub refresh: RefreshHook,
}

enum Boot {
    Fatal(StartError),
    Again(String),
}

fn again(what: &str, e: impl std::fmt::Display) -> Boot {
    Boot::Again(format!("{what}: {e}"))
}

struct Booted {
    client: Client,
    subnet: Ipv4Network,
    view: ClusterView,
}

async fn within<T>(
    d: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", d.as_millis())),
    }
}

fn kvs(resp: &etcd_client::GetResponse) -> Vec<Kv> {
    resp.kvs()
        .iter()
        .map(|kv| Kv {
            key: kv.key().to_vec(),
            value: kv.value().to_vec(),
            lease: kv.lease(),
            mod_revision: kv.mod_revision(),
        })
        .collect()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn reservation_value(node: &str) -> Vec<u8> {
    Reservation {
        node: node.into(),
        reserved_at: now_unix(),
    }
    .encode()
}

/// Holders of every reservation under the prefix (undecodable ones skipped).
fn holders(keys: &Keys, resp: &etcd_client::GetResponse) -> BTreeMap<Ipv4Network, String> {
    resp.kvs()
        .iter()
        .filter_map(|kv| match keys.parse(kv.key()) {
            crate::keys::Key::Subnet(Ok(net)) => {
                Some((net, Reservation::decode(kv.value()).ok()?.node))
            }
            _ => None,
        })
        .collect()
}

async fn boot_once(
    cfg: &EtcdConfig,
    opts: &ConnectOptions,
    a: &StartArgs,
    remembered: Option<Ipv4Network>,
) -> Result<Booted, Boot> {
    let d = cfg.dial_timeout();
    let keys = Keys::new(&cfg.prefix);
    let mut c = client::connect(cfg, opts).await.map_err(|e| {
        if client::is_auth_failure(&e) {
            Boot::Fatal(StartError::Auth(e.to_string()))
        } else {
            again("connect", e)
        }
    })?;
    // The cluster record: written by the first node, checked by every other.
    let mine = ClusterRecord {
        cluster_cidr: a.peering.cluster_cidr,
        subnet_len: cfg.subnet_len,
    };
    let ck = keys.config();
    let txn = Txn::new()
        .when([Compare::create_revision(ck.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(ck.clone(), mine.encode(), None)])
        .or_else([TxnOp::get(ck.clone(), None)]);
    let r = within(d, c.txn(txn))
        .await
        .map_err(|e| again("cluster record", e))?;
    if !r.succeeded() {
        let stored = r.op_responses().into_iter().find_map(|o| match o {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let stored = stored.ok_or_else(|| Boot::Again("cluster record vanished".into()))?;
        let theirs = ClusterRecord::decode(&stored)
            .map_err(|e| Boot::Fatal(StartError::Cluster(format!("{ck}: {e}"))))?;
        if let Some(m) = theirs.mismatch(&mine, &ck) {
            return Err(Boot::Fatal(StartError::Cluster(m)));
        }
    } else {
        tracing::info!(key = %ck, cluster_cidr = %mine.cluster_cidr, subnet_len = mine.subnet_len, "etcd: cluster record written");
    }
    // The subnet: compare-and-set on the reservation's absence, retried after a lost race.
    let mut subnet = None;
    for attempt in 0..CLAIM_ATTEMPTS {
        let listed = within(
            d,
            c.get(keys.subnets(), Some(GetOptions::new().with_prefix())),
        )
        .await
        .map_err(|e| again("list reservations", e))?;
        let held = holders(&keys, &listed);
        let plan = claim::plan(&ClaimInput {
            me: &a.node.name,
            address: a.node.address,
            cluster: a.peering.cluster_cidr,
            len: cfg.subnet_len,
            wanted: a.node.pod_cidr,
            remembered,
            reservations: &held,
            attempt,
        })
        .map_err(|e| Boot::Fatal(e.into()))?;
        if !plan.create && plan.release.is_empty() {
            subnet = Some(plan.subnet);
            break;
        }
        let key = keys.subnet(plan.subnet);
        let mut when = Vec::new();
        let mut ops = Vec::new();
        if plan.create {
            when.push(Compare::create_revision(key.clone(), CompareOp::Equal, 0));
            ops.push(TxnOp::put(
                key.clone(),
                reservation_value(&a.node.name),
                None,
            ));
        }
        for old in &plan.release {
            let k = keys.subnet(*old);
            // Released only while it is still this node's.
            when.push(Compare::value(
                k.clone(),
                CompareOp::Equal,
                listed
                    .kvs()
                    .iter()
                    .find(|kv| kv.key() == k.as_bytes())
                    .map(|kv| kv.value().to_vec())
                    .unwrap_or_default(),
            ));
            ops.push(TxnOp::delete(k, None));
        }
        let r = within(d, c.txn(Txn::new().when(when).and_then(ops)))
            .await
            .map_err(|e| again("claim subnet", e))?;
        if r.succeeded() {
            tracing::info!(subnet = %plan.subnet, key = %key, attempt, released = ?plan.release, "etcd: subnet reserved");
            subnet = Some(plan.subnet);
            break;
        }
        tracing::debug!(subnet = %plan.subnet, attempt, "etcd: lost the race for a subnet; trying again");
    }
    let subnet = subnet.ok_or(Boot::Fatal(StartError::Contention(CLAIM_ATTEMPTS)))?;
    // The first listing, so the data plane starts with the peers already known.
    let listed = within(d, c.get(keys.root(), Some(GetOptions::new().with_prefix())))
        .await
        .map_err(|e| again("list", e))?;
    let revision = listed.header().map_or(0, |h| h.revision());
    let mut view = ClusterView::new(keys, &a.node.name, subnet, mine);
    view.reset(kvs(&listed), revision);
    Ok(Booted {
        client: c,
        subnet,
        view,
    })
}

/// Starts the etcd source: checks the cluster record, claims this node's subnet and lists the
/// cluster — waiting up to `start_timeout_secs` for etcd. When etcd does not answer in time the
/// node starts with the subnet remembered in its state dir and its saved peers (registering once
/// etcd answers); without a remembered subnet it cannot start.
pub async fn start(a: StartArgs) -> Result<Started, StartError> {
    let cfg = a.etcd.clone();
    cfg.validate(a.peering.cluster_cidr)?;
    let opts = client::options(&cfg)?;
    let store = Store::new(&a.state_dir);
    let remembered = store.subnet(&a.node.name);
    let seed = crate::session_seed(&a.node.name);
    let deadline = Instant::now() + Duration::from_secs(cfg.start_timeout_secs);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2), seed);
    let mut last = String::from("no attempt finished");
    let booted = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        match tokio::time::timeout(left, boot_once(&cfg, &opts, &a, remembered)).await {
            Ok(Ok(b)) => break Some(b),
            Ok(Err(Boot::Fatal(e))) => return Err(e),
            Ok(Err(Boot::Again(e))) => {
                tracing::warn!(endpoints = %cfg.endpoints_line(), "etcd: {e}; trying again");
                last = e;
                let pause = backoff
                    .next_delay()
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
            Err(_) => break None,
        }
    };
    let keys = Keys::new(&cfg.prefix);
    let cluster = ClusterRecord {
        cluster_cidr: a.peering.cluster_cidr,
        subnet_len: cfg.subnet_len,
    };
    let (client, subnet, view, initial) = match booted {
        Some(b) => {
            if let Err(e) = store.set_subnet(&a.node.name, b.subnet) {
                tracing::warn!("etcd: cannot remember the subnet in the state dir: {e}");
            }
            let node = a.node.resolve(b.subnet);
            let (peers, _) = b.view.peers(&node);
            (Some(b.client), b.subnet, b.view, Some(peers))
        }
        None => {
            let usable = remembered.filter(|r| a.node.pod_cidr.is_none_or(|w| w == *r));
            let Some(r) = usable else {
                return Err(StartError::Unreachable {
                    endpoints: cfg.endpoints_line(),
                    secs: cfg.start_timeout_secs,
                    detail: last,
                });
            };
            let saved = store.peers();
            tracing::warn!(
                subnet = %r,
                saved_peers = saved.as_ref().map(Vec::len),
                "etcd unreachable at start ({last}); starting with the remembered subnet and the saved peers, registering once etcd answers"
            );
            let view = ClusterView::new(keys.clone(), &a.node.name, r, cluster);
            (None, r, view, saved)
        }
    };
    let node = a.node.resolve(subnet);
    let (feed, subscription) = PeerFeed::new(SourceKind::Etcd, cfg.endpoints_line());
    feed.update(|s| {
        s.lease_ttl = Some(cfg.lease_ttl_secs);
        s.cluster = Some(ClusterInfo {
            prefix: cfg.prefix.clone(),
            cluster_cidr: a.peering.cluster_cidr,
            subnet_len: cfg.subnet_len,
        });
    });
    if let Some(p) = &initial {
        feed.publish(p.clone());
    }
    let resume = (view.revision > 0).then_some(view.revision);
    let shared = Arc::new(Mutex::new(client.clone()));
    let status = feed.status();
    let refresh = refresh_hook(shared.clone(), status.clone(), cfg.dial_timeout());
    let keepalive = cfg.keepalive_every();
    let mut source = EtcdSource {
        record: NodeRecord {
            name: node.name.clone(),
            address: node.address,
            subnet,
            vtep_mac: mac_text(vxlan_mac(node.address)),
            mode: a.peering.mode,
            vxlan_vni: a.peering.vxlan_vni,
            vxlan_port: a.peering.vxlan_port,
            version: env!("CARGO_PKG_VERSION").into(),
        },
        keys,
        node: node.clone(),
        cfg,
        opts,
        client,
        shared,
        view,
        feed,
        store,
        session: Session::new(
            Backoff::new(
                Duration::from_millis(200),
                keepalive.min(Duration::from_secs(5)),
                seed,
            ),
            resume,
        ),
        lease: None,
        watch: None,
        logged: BTreeSet::new(),
    };
    if resume.is_some() {
        // Listed at start: the view is the cluster's. (Started from the saved peers, the view is
        // empty until etcd answers, and must not replace them.)
        source.note_view();
    }
    Ok(Started {
        node,
        initial,
        source,
        subscription,
        status,
        refresh,
    })
}

fn refresh_hook(
    shared: Arc<Mutex<Option<Client>>>,
    status: SourceHandle,
    limit: Duration,
) -> RefreshHook {
    Arc::new(move || {
        let shared = shared.clone();
        let status = status.clone();
        Box::pin(async move {
            let Some(c) = shared.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
                return;
            };
            let leases: Vec<(String, i64)> = {
                let s = status.read().unwrap_or_else(|e| e.into_inner());
                s.meta
                    .iter()
                    .filter_map(|(n, m)| Some((n.clone(), m.lease_id?)))
                    .collect()
            };
            let asks = leases.into_iter().map(|(name, id)| {
                let mut c = c.clone();
                async move {
                    let ttl = tokio::time::timeout(
                        limit.min(Duration::from_secs(2)),
                        c.lease_time_to_live(id, None),
                    )
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|r| r.ttl());
                    (name, ttl)
                }
            });
            let answers = futures::future::join_all(asks).await;
            let now = now_unix();
            let mut s = status.write().unwrap_or_else(|e| e.into_inner());
            for (name, ttl) in answers {
                if let (Some(m), Some(ttl)) = (s.meta.get_mut(&name), ttl) {
                    m.lease_expires = (ttl > 0).then(|| now + ttl as u64);
                }
            }
            let expiry: BTreeMap<String, Option<u64>> = s
                .meta
                .iter()
                .map(|(n, m)| (n.clone(), m.lease_expires))
                .collect();
            for r in &mut s.reservations {
                r.lease_expires = expiry.get(&r.node).copied().flatten();
            }
        })
    })
}

/// The running etcd source: one session at a time, steered by [`Session`].
pub struct EtcdSource {
    cfg: EtcdConfig,
    opts: ConnectOptions,
    keys: Keys,
    node: NodeConfig,
    record: NodeRecord,
    client: Option<Client>,
    shared: Arc<Mutex<Option<Client>>>,
    view: ClusterView,
    feed: PeerFeed,
    store: Store,
    session: Session,
    lease: Option<i64>,
    watch: Option<WatchStream>,
    /// Skipped entries already logged.
    logged: BTreeSet<String>,
}

impl EtcdSource {
    /// Runs sessions until `stop`: register, watch, keep the lease alive, back off on failure.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last_error: Option<String> = None;
        loop {
            let step = self.session.step();
            let outcome = tokio::select! {
                o = self.do_step(step) => o,
                () = &mut stop => break,
            };
            if let Outcome::Failed(e) = &outcome {
                self.watch = None;
                self.feed.set_reachable(false, Some(e.clone()));
                if last_error.as_ref() != Some(e) {
                    tracing::warn!(endpoints = %self.cfg.endpoints_line(), "etcd: {e}; keeping the last known peers and retrying");
                } else {
                    tracing::debug!("etcd: still failing: {e}");
                }
                last_error = Some(e.clone());
            }
            let before = self.session.live();
            self.session.on(outcome);
            if self.session.live() && !before {
                last_error = None;
                self.feed.set_reachable(true, None);
                let n = self.session.established();
                self.feed.update(|s| s.sessions = n);
                tracing::info!(revision = ?self.session.revision(), lease = ?self.lease.map(|l| format!("{l:x}")), sessions = n, "etcd: session established (lease kept alive, watching {})", self.keys.root());
            }
        }
        tracing::info!("etcd: membership source stopped (the lease runs out on its own)");
    }

    async fn do_step(&mut self, step: Step) -> Outcome {
        match step {
            Step::Register => self.register().await,
            Step::Sync { resume_after } => self.sync(resume_after).await,
            Step::Live => self.live().await,
            Step::Wait(d) => {
                tokio::time::sleep(d).await;
                Outcome::Waited
            }
        }
    }

    async fn client(&mut self) -> Result<Client, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = client::connect(&self.cfg, &self.opts)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        self.client = Some(c.clone());
        Ok(c)
    }

    async fn register(&mut self) -> Outcome {
        match self.try_register().await {
            Ok(()) => Outcome::Registered,
            Err(e) => Outcome::Failed(e),
        }
    }

    async fn try_register(&mut self) -> Result<(), String> {
        let d = self.cfg.dial_timeout();
        let mut c = self.client().await?;
        // The lease: kept if alive, else a new one.
        let alive = match self.lease {
            Some(id) => within(d, c.lease_time_to_live(id, None))
                .await
                .map(|r| r.ttl() > 0)
                .map_err(|e| format!("lease check: {e}"))?,
            None => false,
        };
        if !alive {
            let ttl = self.cfg.lease_ttl_secs as i64;
            let g = within(d, c.lease_grant(ttl, None))
                .await
                .map_err(|e| format!("lease grant: {e}"))?;
            if self.lease.is_some() {
                tracing::warn!(old = ?self.lease.map(|l| format!("{l:x}")), new = %format!("{:x}", g.id()), "etcd: lease had expired; registering again with a new one");
            }
            self.lease = Some(g.id());
            self.feed.update(|s| s.lease_id = Some(g.id()));
        }
        let lease = self.lease.expect("set above");
        // The reservation: re-created if it vanished; another holder is a conflict to report.
        let sk = self.keys.subnet(self.record.subnet);
        let txn = Txn::new()
            .when([Compare::create_revision(sk.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                sk.clone(),
                reservation_value(&self.node.name),
                None,
            )])
            .or_else([TxnOp::get(sk.clone(), None)]);
        let r = within(d, c.txn(txn))
            .await
            .map_err(|e| format!("reservation: {e}"))?;
        if r.succeeded() {
            tracing::warn!(key = %sk, "etcd: this node's reservation was missing; re-created");
        } else {
            let holder = r.op_responses().into_iter().find_map(|o| match o {
                TxnOpResponse::Get(g) => g
                    .kvs()
                    .first()
                    .and_then(|kv| Reservation::decode(kv.value()).ok())
                    .map(|r| r.node),
                _ => None,
            });
            if holder.as_deref() != Some(self.node.name.as_str()) {
                return Err(format!(
                    "{sk}: subnet {} of this node is now held by {:?}; not registering (routes and containers stay)",
                    self.record.subnet,
                    holder.unwrap_or_else(|| "an unreadable reservation".into())
                ));
            }
        }
        // The node record, attached to the lease (written only when it differs).
        let nk = self.keys.node(&self.node.name);
        let value = self.record.encode();
        let txn = Txn::new()
            .when([
                Compare::value(nk.clone(), CompareOp::Equal, value.clone()),
                Compare::lease(nk.clone(), CompareOp::Equal, lease),
            ])
            .or_else([TxnOp::put(
                nk.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let r = within(d, c.txn(txn))
            .await
            .map_err(|e| format!("node record: {e}"))?;
        if !r.succeeded() {
            tracing::info!(key = %nk, subnet = %self.record.subnet, lease = %format!("{lease:x}"), "etcd: node record published");
        }
        Ok(())
    }

    async fn sync(&mut self, resume_after: Option<i64>) -> Outcome {
        match self.try_sync(resume_after).await {
            Ok(Some(rev)) => Outcome::Synced { revision: rev },
            Ok(None) => Outcome::Compacted,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Starts the watch (after a listing when `resume_after` is `None`); `Ok(None)` when the
    /// resume revision was compacted away.
    async fn try_sync(&mut self, resume_after: Option<i64>) -> Result<Option<i64>, String> {
        let d = self.cfg.dial_timeout();
        let mut c = self.client().await?;
        let root = self.keys.root();
        let from = match resume_after {
            Some(r) => r,
            None => {
                let listed = within(
                    d,
                    c.get(root.clone(), Some(GetOptions::new().with_prefix())),
                )
                .await
                .map_err(|e| format!("list: {e}"))?;
                let rev = listed.header().map_or(0, |h| h.revision());
                self.view.reset(kvs(&listed), rev);
                tracing::info!(
                    revision = rev,
                    keys = listed.kvs().len(),
                    "etcd: listed {root}"
                );
                self.note_view();
                rev
            }
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(from + 1);
        let mut ws = within(d, c.watch(root.clone(), Some(opts)))
            .await
            .map_err(|e| format!("watch: {e}"))?;
        let first = within(d, ws.message())
            .await
            .map_err(|e| format!("watch: {e}"))?
            .ok_or_else(|| "watch: stream closed".to_string())?;
        if first.canceled() {
            if first.compact_revision() > 0 {
                tracing::info!(
                    resume = from + 1,
                    compacted = first.compact_revision(),
                    "etcd: history compacted past the last revision seen; listing again"
                );
                return Ok(None);
            }
            return Err(format!("watch cancelled: {}", first.cancel_reason()));
        }
        if !first.events().is_empty() {
            self.take_events(&first);
        }
        self.watch = Some(ws);
        Ok(Some(from))
    }

    fn take_events(&mut self, resp: &etcd_client::WatchResponse) -> crate::view::OwnChanges {
        let events: Vec<Event> = resp
            .events()
            .iter()
            .filter_map(|e| {
                let kv = e.kv()?;
                Some(match e.event_type() {
                    EventType::Put => Event::Put(Kv {
                        key: kv.key().to_vec(),
                        value: kv.value().to_vec(),
                        lease: kv.lease(),
                        mod_revision: kv.mod_revision(),
                    }),
                    EventType::Delete => Event::Delete {
                        key: kv.key().to_vec(),
                        mod_revision: kv.mod_revision(),
                    },
                })
            })
            .collect();
        let n = events.len() as u64;
        let own = self.view.apply(events);
        if let Some(h) = resp.header() {
            self.view.revision = self.view.revision.max(h.revision());
        }
        self.feed.update(|s| s.watch_events += n);
        self.note_view();
        own
    }

    /// Publishes the view's peer set and mirrors it into the status; logs newly skipped entries.
    fn note_view(&mut self) {
        let (peers, skipped) = self.view.peers(&self.node);
        for s in &skipped {
            if !self.logged.contains(s) {
                tracing::warn!("etcd: skipping invalid entry (never applied): {s}");
            }
        }
        self.logged = skipped.iter().cloned().collect();
        let leases = self.view.leases();
        let reservations = self.view.reservations();
        let revision = self.view.revision;
        let count = peers.len();
        let changed = self.feed.publish(peers.clone());
        if changed {
            tracing::info!(peers = count, revision, "etcd: peer set changed");
            if let Err(e) = self.store.set_peers(&peers) {
                tracing::warn!("etcd: cannot save the peer set in the state dir: {e}");
            }
        }
        self.feed.update(|s| {
            s.skipped = skipped;
            s.revision = Some(revision);
            let old = std::mem::take(&mut s.meta);
            s.meta = leases
                .into_iter()
                .map(|(name, id)| {
                    let kept = old
                        .get(&name)
                        .filter(|m| m.lease_id == Some(id))
                        .and_then(|m| m.lease_expires);
                    (
                        name,
                        PeerMeta {
                            lease_id: Some(id),
                            lease_expires: kept,
                        },
                    )
                })
                .collect();
            s.reservations = reservations;
        });
    }

    async fn live(&mut self) -> Outcome {
        let d = self.cfg.dial_timeout();
        let Some(lease) = self.lease else {
            return Outcome::OwnLost;
        };
        let mut c = match self.client().await {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e),
        };
        let (mut keeper, mut acks) = match within(d, c.lease_keep_alive(lease)).await {
            Ok(k) => k,
            Err(e) if e.contains("lease not found") => return Outcome::OwnLost,
            Err(e) => return Outcome::Failed(format!("lease keep-alive: {e}")),
        };
        let Some(mut ws) = self.watch.take() else {
            return Outcome::Failed("no watch".into());
        };
        let every = self.cfg.keepalive_every();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A keep-alive sent and not answered yet: the member must answer within the dial
        // timeout, or it is gone or cut off (found well before the lease could run out).
        let mut awaiting: Option<tokio::time::Instant> = None;
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let note_ack = |feed: &PeerFeed, ttl: i64| {
            feed.update(|s| s.lease_expires = Some(now_unix() + ttl.max(0) as u64));
        };
        note_ack(&self.feed, self.cfg.lease_ttl_secs as i64);
        loop {
            let deadline = awaiting.map_or_else(far, |t| t + d);
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        return Outcome::Failed(format!("lease keep-alive: {e}"));
                    }
                    awaiting.get_or_insert_with(tokio::time::Instant::now);
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Outcome::Failed(format!(
                        "lease keep-alive not answered within {} ms",
                        d.as_millis()
                    ));
                }
                m = acks.message() => match m {
                    Ok(Some(r)) if r.ttl() > 0 => {
                        awaiting = None;
                        note_ack(&self.feed, r.ttl());
                    }
                    Ok(Some(_)) => {
                        tracing::warn!(lease = %format!("{lease:x}"), "etcd: lease expired");
                        return Outcome::OwnLost;
                    }
                    Ok(None) => return Outcome::Failed("lease keep-alive stream closed".into()),
                    Err(e) => return Outcome::Failed(format!("lease keep-alive: {e}")),
                },
                m = ws.message() => match m {
                    Ok(Some(resp)) => {
                        if resp.canceled() {
                            if resp.compact_revision() > 0 {
                                tracing::info!(compacted = resp.compact_revision(), "etcd: history compacted past the last revision seen; listing again");
                                return Outcome::Compacted;
                            }
                            return Outcome::Failed(format!("watch cancelled: {}", resp.cancel_reason()));
                        }
                        let own = self.take_events(&resp);
                        self.session.on(Outcome::Progress { revision: self.view.revision });
                        if own.record_gone || own.reservation_lost {
                            tracing::warn!(record_gone = own.record_gone, reservation_lost = own.reservation_lost, "etcd: this node's own entry changed; registering again");
                            return Outcome::OwnLost;
                        }
                    }
                    Ok(None) => return Outcome::Failed("watch stream closed".into()),
                    Err(e) => return Outcome::Failed(format!("watch: {e}")),
                },
            }
        }
    }
}
