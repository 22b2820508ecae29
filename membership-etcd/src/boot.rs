//! Start-up of the etcd source: the cluster record (written by the first node, checked by every
//! other), the subnet claim (compare-and-set, retried after a lost race), the first listing —
//! or, when etcd does not answer in time, the subnet remembered in the state dir and the saved
//! peers. Also the on-demand lease lookup behind `GET /v1/peers?leases=true`.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use ipnetwork::Ipv4Network;
use runtime_net::peering::peers::{NodeConfig, NodeSettings, Peer, PeeringConfig, SourceKind};
use runtime_net::peering::plan::vxlan_mac;
use runtime_net::peering::source::{
    ClusterInfo, PeerFeed, PeerSubscription, RefreshHook, SourceHandle,
};

use crate::claim::{self, ClaimError, ClaimInput};
use crate::client;
use crate::config::{ConfigError, EtcdConfig};
use crate::driver::EtcdSource;
use crate::keys::Keys;
use crate::record::{mac_text, ClusterRecord, NodeRecord, Reservation};
use crate::session::{Backoff, Session};
use crate::store::Store;
use crate::view::{ClusterView, Kv};

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

pub(crate) async fn within<T>(
    d: Duration,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", d.as_millis())),
    }
}

pub(crate) fn kvs(resp: &etcd_client::GetResponse) -> Vec<Kv> {
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

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn reservation_value(node: &str) -> Vec<u8> {
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
    endpoint: &str,
    a: &StartArgs,
    remembered: Option<Ipv4Network>,
) -> Result<Booted, Boot> {
    let d = cfg.dial_timeout();
    let keys = Keys::new(&cfg.prefix);
    let mut c = client::connect(cfg, opts, endpoint).await.map_err(|e| {
        if client::is_auth_failure(&e) {
            Boot::Fatal(StartError::Auth(e.to_string()))
        } else {
            again(&format!("connect {endpoint}"), e)
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
    let mut endpoints = client::Endpoints::new(&cfg.endpoints, seed);
    let booted = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break None;
        }
        let at = endpoints.current().to_string();
        match tokio::time::timeout(left, boot_once(&cfg, &opts, &at, &a, remembered)).await {
            Ok(Ok(b)) => break Some(b),
            Ok(Err(Boot::Fatal(e))) => return Err(e),
            Ok(Err(Boot::Again(e))) => {
                tracing::warn!(endpoint = %at, "etcd: {e}; trying the next member");
                endpoints.advance();
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
    let at = client.as_ref().map(|_| endpoints.current().to_string());
    feed.update(|s| {
        s.endpoint = at;
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
    let refresh = refresh_hook(
        shared.clone(),
        status.clone(),
        a.node.name.clone(),
        cfg.dial_timeout(),
    );
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
        endpoints,
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
    me: String,
    limit: Duration,
) -> RefreshHook {
    Arc::new(move || {
        let shared = shared.clone();
        let status = status.clone();
        let me = me.clone();
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
            let own = s.lease_expires;
            for r in &mut s.reservations {
                r.lease_expires = if r.node == me && r.live {
                    own
                } else {
                    expiry.get(&r.node).copied().flatten()
                };
            }
        })
    })
}
