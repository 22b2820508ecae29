//! Prometheus metrics of the daemon, served as `GET /metrics` on the API socket (OpenMetrics
//! text, [`CONTENT_TYPE`]).
//!
//! One [`Metrics`] is shared by every front door: the REST API (and the CNI plugin, which calls
//! it with a `shimnet-cni/` user agent), the Docker plugin, the reconcile loop and — through
//! [`Metrics::set_peer_up`] — the peering code, and the name service (whose families,
//! `shimnet_dns_*`, are registered here and counted by `shimnet_dns`). Per-network gauges are
//! computed from the engine's records at each scrape ([`usage`] is the pure part), so they can
//! never drift.

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use runtime_net::engine::{Engine, ReconcileReport};
use runtime_net::store::StoreHealth;
use runtime_net::types::{EndpointRecord, NetworkSpec};
use shimnet_dns::DnsMetrics;

/// Content type of the exposition (OpenMetrics 1.0.0 text, which Prometheus negotiates).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// User-agent prefix the CNI plugin sends; its REST calls are counted as `front_door="cni"`.
pub const CNI_USER_AGENT_PREFIX: &str = "shimnet-cni/";

/// Which front door an operation came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontDoor {
    /// shimnet's own REST API (shimnetctl, scripts).
    Rest,
    /// The Docker network/IPAM plugin socket.
    Docker,
    /// The CNI plugin (REST calls carrying the CNI user agent).
    Cni,
}

impl FrontDoor {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontDoor::Rest => "rest",
            FrontDoor::Docker => "docker",
            FrontDoor::Cni => "cni",
        }
    }

    /// The front door of a REST request with this `User-Agent` header.
    pub fn of_user_agent(ua: Option<&str>) -> Self {
        match ua {
            Some(ua) if ua.starts_with(CNI_USER_AGENT_PREFIX) => FrontDoor::Cni,
            _ => FrontDoor::Rest,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    front_door: &'static str,
    operation: String,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpKind {
    front_door: &'static str,
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetLabels {
    network: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

/// The membership source's state at one moment, for [`Metrics::set_membership`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipSample {
    /// `file` or `etcd`.
    pub source: &'static str,
    /// Whether the source answers (etcd: lease kept alive and watch running).
    pub up: bool,
    /// Peers in the running set.
    pub peers: u64,
    /// Entries skipped as invalid.
    pub skipped: u64,
    /// Watch events received so far.
    pub watch_events: u64,
    /// Sessions established so far.
    pub sessions: u64,
}

type DurationFamily = Family<OpKind, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Usage of one network at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkUsage {
    /// Network name.
    pub network: String,
    /// Endpoints recorded on it.
    pub endpoints: u64,
    /// IPv4 addresses handed out.
    pub ipv4_used: u64,
    /// IPv4 addresses of the subnet that can be handed out (not network, broadcast, gateway).
    pub ipv4_capacity: u64,
    /// Bridge ports its endpoints take (one each).
    pub ports_used: u64,
    /// Bridge ports it can take; endpoints beyond are refused (`network_full`).
    pub ports_capacity: u64,
}

/// Assignable IPv4 addresses of a network's subnet: all of it except the network and broadcast
/// addresses (for prefixes up to /30) and the gateway.
pub fn ipv4_capacity(spec: &NetworkSpec) -> u64 {
    let size = 1u64 << (32 - u32::from(spec.subnet.prefix()));
    let structural = if spec.subnet.prefix() < 31 { 2 } else { 0 };
    let gw = u64::from(spec.subnet.contains(spec.gateway) && !is_structural(spec, spec.gateway));
    size.saturating_sub(structural + gw)
}

fn is_structural(spec: &NetworkSpec, ip: Ipv4Addr) -> bool {
    spec.subnet.prefix() < 31 && (ip == spec.subnet.network() || ip == spec.subnet.broadcast())
}

/// Per-network usage from the engine's records (networks without endpoints included); a
/// network takes `port_capacity(network)` endpoints at most (the ports of its main bridge and
/// every extension bridge it may have).
pub fn usage(
    networks: &[NetworkSpec],
    endpoints: &[EndpointRecord],
    port_capacity: impl Fn(&NetworkSpec) -> usize,
) -> Vec<NetworkUsage> {
    networks
        .iter()
        .map(|n| {
            let eps = endpoints.iter().filter(|e| e.key.network == n.name);
            let used: std::collections::BTreeSet<Ipv4Addr> =
                eps.clone().map(|e| e.ipv4.ip()).collect();
            let count = eps.count() as u64;
            NetworkUsage {
                network: n.name.to_string(),
                endpoints: count,
                ipv4_used: used.len() as u64,
                ipv4_capacity: ipv4_capacity(n),
                ports_used: count,
                ports_capacity: port_capacity(n) as u64,
            }
        })
        .collect()
}

/// Operation name of a REST request, from its method and path (bounded set of values).
pub fn rest_operation(method: &str, path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["v1", "health"]) => "health",
        ("GET", ["v1", "status"]) => "status",
        ("GET", ["v1", "features"]) => "features",
        ("POST", ["v1", "reconcile"]) => "reconcile",
        ("GET", ["v1", "networks"]) => "network_list",
        ("POST", ["v1", "networks"]) => "network_create",
        ("GET", ["v1", "networks", _]) => "network_inspect",
        ("PUT", ["v1", "networks", _]) => "network_ensure",
        ("DELETE", ["v1", "networks", _]) => "network_delete",
        ("GET", ["v1", "networks", _, "names"]) => "network_names",
        ("GET", ["v1", "networks", _, "endpoints"]) => "endpoint_list",
        ("POST", ["v1", "networks", _, "endpoints"]) => "endpoint_attach",
        ("POST", ["v1", "networks", _, "attach"]) => "network_attach",
        ("GET", ["v1", "networks", _, "endpoints", _]) => "endpoint_inspect",
        ("DELETE", ["v1", "networks", _, "endpoints", _]) => "endpoint_detach",
        ("GET", ["v1", "networks", _, "endpoints", _, "check"]) => "endpoint_check",
        ("GET", ["v1", "endpoints"]) => "endpoint_list",
        _ => "other",
    }
}

/// The daemon's metrics registry.
pub struct Metrics {
    registry: Registry,
    operations: Family<OpLabels, Counter>,
    durations: DurationFamily,
    endpoints: Family<NetLabels, Gauge>,
    ipam_used: Family<NetLabels, Gauge>,
    ipam_capacity: Family<NetLabels, Gauge>,
    ports_used: Family<NetLabels, Gauge>,
    ports_capacity: Family<NetLabels, Gauge>,
    reconcile_runs: Family<ResultLabels, Counter>,
    repairs: Family<RepairLabels, Counter>,
    peer_up: Family<PeerLabels, Gauge>,
    dns: DnsMetrics,
    source_up: Family<SourceLabels, Gauge>,
    members: Family<SourceLabels, Gauge>,
    skipped: Family<SourceLabels, Gauge>,
    watch_events: Family<SourceLabels, Counter>,
    sessions: Family<SourceLabels, Counter>,
    encap_dropped: Family<ModeLabels, Counter>,
    /// Last totals the data plane reported (vxlan, ipip), to turn them into increments.
    encap_seen: Mutex<[u64; 2]>,
    store_healthy: Gauge,
    store_io_errors: Counter,
    store_reopens: Counter,
    /// Serialises refresh + encode of the per-network gauges.
    scrape: Mutex<()>,
    /// Event-driven repair.
    pub repair: crate::repair_metrics::RepairMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every shimnet metric family registered (and empty).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let operations = Family::<OpLabels, Counter>::default();
        registry.register(
            "shimnet_operations",
            "Operations served, by front door (rest, docker, cni), operation and result (ok, error)",
            operations.clone(),
        );
        let durations: DurationFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "shimnet_operation_duration_seconds",
            "Time to answer an operation, by front door and operation",
            durations.clone(),
        );
        let endpoints = Family::<NetLabels, Gauge>::default();
        registry.register(
            "shimnet_endpoints",
            "Endpoints recorded per network",
            endpoints.clone(),
        );
        let ipam_used = Family::<NetLabels, Gauge>::default();
        registry.register(
            "shimnet_ipam_ipv4_addresses_used",
            "IPv4 addresses handed out per network",
            ipam_used.clone(),
        );
        let ipam_capacity = Family::<NetLabels, Gauge>::default();
        registry.register(
            "shimnet_ipam_ipv4_addresses_capacity",
            "Assignable IPv4 addresses per network (subnet less network, broadcast and gateway)",
            ipam_capacity.clone(),
        );
        let ports_used = Family::<NetLabels, Gauge>::default();
        registry.register(
            "shimnet_bridge_ports_used",
            "Bridge ports taken by endpoints per network",
            ports_used.clone(),
        );
        let ports_capacity = Family::<NetLabels, Gauge>::default();
        registry.register(
            "shimnet_bridge_ports_capacity",
            "Bridge ports a network can take over its main and extension bridges (a Linux bridge holds at most 1023); more endpoints are refused",
            ports_capacity.clone(),
        );
        let reconcile_runs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "shimnet_reconcile_runs",
            "Reconciliation passes, by result (ok, error)",
            reconcile_runs.clone(),
        );
        let repairs = Family::<RepairLabels, Counter>::default();
        registry.register(
            "shimnet_reconcile_repairs",
            "Repairs made by reconciliation, by kind (endpoint_reclaimed, link_removed, firewall_removed)",
            repairs.clone(),
        );
        let peer_up = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "shimnet_peer_up",
            "1 when the peer is reachable, 0 when it is down",
            peer_up.clone(),
        );
        let dns = DnsMetrics::new();
        dns.register(&mut registry);
        let source_up = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "shimnet_membership_source_up",
            "1 while the membership source answers (etcd: lease kept alive and watch running; file: readable and valid)",
            source_up.clone(),
        );
        let members = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "shimnet_membership_peers",
            "Peers in the running peer set",
            members.clone(),
        );
        let skipped = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "shimnet_membership_skipped_entries",
            "Entries the membership source skipped as invalid",
            skipped.clone(),
        );
        let watch_events = Family::<SourceLabels, Counter>::default();
        registry.register(
            "shimnet_etcd_watch_events",
            "Watch events received from etcd",
            watch_events.clone(),
        );
        let sessions = Family::<SourceLabels, Counter>::default();
        registry.register(
            "shimnet_etcd_sessions",
            "etcd sessions (lease + watch) established; more than one means it reconnected",
            sessions.clone(),
        );
        let encap_dropped = Family::<ModeLabels, Counter>::default();
        registry.register(
            "shimnet_peering_encap_dropped",
            "Encapsulated packets dropped because their outer source is not a peer, by mode (vxlan, ipip)",
            encap_dropped.clone(),
        );
        let store_healthy = Gauge::default();
        registry.register(
            "shimnet_store_healthy",
            "1 while the state store writes, 0 from an I/O failure (e.g. a full disk) until a write succeeds again",
            store_healthy.clone(),
        );
        let store_io_errors = Counter::default();
        registry.register(
            "shimnet_store_io_errors",
            "I/O failures of the state store (calls, and attempts to open it again)",
            store_io_errors.clone(),
        );
        let store_reopens = Counter::default();
        registry.register(
            "shimnet_store_reopens",
            "Times the state store was closed and opened again after an I/O failure",
            store_reopens.clone(),
        );
        let repair = crate::repair_metrics::RepairMetrics::register(
            &mut registry,
            &runtime_net::repair::Kind::ALL.map(|k| k.label()),
        );
        Metrics {
            repair,
            registry,
            dns,
            source_up,
            members,
            skipped,
            watch_events,
            sessions,
            operations,
            durations,
            endpoints,
            ipam_used,
            ipam_capacity,
            ports_used,
            ports_capacity,
            reconcile_runs,
            repairs,
            peer_up,
            encap_dropped,
            encap_seen: Mutex::new([0; 2]),
            store_healthy,
            store_io_errors,
            store_reopens,
            scrape: Mutex::new(()),
        }
    }

    /// The name service's families (hand them to `shimnet_dns::Dns::start`).
    pub fn dns(&self) -> &DnsMetrics {
        &self.dns
    }

    /// Counts one operation and observes its duration.
    pub fn record(&self, door: FrontDoor, operation: &str, ok: bool, elapsed: Duration) {
        self.operations
            .get_or_create(&OpLabels {
                front_door: door.as_str(),
                operation: operation.to_string(),
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        self.durations
            .get_or_create(&OpKind {
                front_door: door.as_str(),
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one reconciliation pass and its repairs (`None`: the pass failed outright).
    pub fn record_reconcile(&self, report: Option<&ReconcileReport>) {
        let ok = report.is_some_and(|r| r.errors.is_empty());
        self.reconcile_runs
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "error" },
            })
            .inc();
        let Some(r) = report else { return };
        for (kind, n) in [
            ("endpoint_reclaimed", r.reclaimed),
            ("link_removed", r.links_removed),
            ("firewall_removed", r.firewall_removed),
            ("port_reattached", r.ports_reattached),
        ] {
            // Touch every kind so a zero is visible before the first repair.
            self.repairs
                .get_or_create(&RepairLabels { kind })
                .inc_by(n as u64);
        }
    }

    /// Sets the state of a peer (for the peering code): `shimnet_peer_up{peer} 1` or `0`.
    pub fn set_peer_up(&self, peer: &str, up: bool) {
        self.peer_up
            .get_or_create(&PeerLabels {
                peer: peer.to_string(),
            })
            .set(i64::from(up));
    }

    /// Forgets a peer that is no longer configured.
    pub fn remove_peer(&self, peer: &str) {
        self.peer_up.remove(&PeerLabels {
            peer: peer.to_string(),
        });
    }

    /// Mirrors the membership source's state (the counters only ever move up).
    pub fn set_membership(&self, m: &MembershipSample) {
        let l = SourceLabels { source: m.source };
        self.source_up.get_or_create(&l).set(i64::from(m.up));
        self.members.get_or_create(&l).set(m.peers as i64);
        self.skipped.get_or_create(&l).set(m.skipped as i64);
        if m.source == "etcd" {
            for (family, total) in [
                (&self.watch_events, m.watch_events),
                (&self.sessions, m.sessions),
            ] {
                let c = family.get_or_create(&l);
                let now = c.get();
                if total > now {
                    c.inc_by(total - now);
                }
            }
        }
    }

    /// Records the data plane's running totals of encapsulated packets dropped from non-peers
    /// (`shimnet_peering_encap_dropped_total{mode}`). A total below the last one means the data
    /// plane's counter started over (filter recreated, userspace data plane restarted): it is
    /// counted from zero again, so the metric never goes back.
    pub fn record_encap_dropped(&self, vxlan: u64, ipip: u64) {
        let mut seen = self.encap_seen.lock().unwrap_or_else(|e| e.into_inner());
        for (i, (mode, total)) in [("vxlan", vxlan), ("ipip", ipip)].into_iter().enumerate() {
            let inc = if total >= seen[i] {
                total - seen[i]
            } else {
                total
            };
            seen[i] = total;
            self.encap_dropped
                .get_or_create(&ModeLabels { mode })
                .inc_by(inc);
        }
    }

    /// Replaces the per-network gauges with `usage` (networks gone disappear).
    pub fn set_usage(&self, usage: &[NetworkUsage]) {
        self.endpoints.clear();
        self.ipam_used.clear();
        self.ipam_capacity.clear();
        self.ports_used.clear();
        self.ports_capacity.clear();
        for u in usage {
            let l = NetLabels {
                network: u.network.clone(),
            };
            self.endpoints.get_or_create(&l).set(u.endpoints as i64);
            self.ipam_used.get_or_create(&l).set(u.ipv4_used as i64);
            self.ipam_capacity
                .get_or_create(&l)
                .set(i64::try_from(u.ipv4_capacity).unwrap_or(i64::MAX));
            self.ports_used.get_or_create(&l).set(u.ports_used as i64);
            self.ports_capacity
                .get_or_create(&l)
                .set(u.ports_capacity as i64);
        }
    }

    /// The exposition text of the current values.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// Sets the state store's metrics from its health (the counters only ever move forward).
    pub fn set_store(&self, h: &StoreHealth) {
        self.store_healthy.set(i64::from(h.healthy && h.open));
        for (c, v) in [
            (&self.store_io_errors, h.io_errors),
            (&self.store_reopens, h.reopens),
        ] {
            c.inc_by(v.saturating_sub(c.get()));
        }
    }

    /// Refreshes the per-network gauges from `engine`'s records and the store's health, and
    /// encodes everything. While the store cannot be read the per-network gauges keep their last
    /// values, so the health metrics are still served.
    pub async fn scrape(&self, engine: &Engine) -> runtime_net::engine::Result<String> {
        let records = match engine.networks().await {
            Ok(n) => engine.endpoints(None).await.map(|e| (n, e)),
            Err(e) => Err(e),
        };
        let _one = self.scrape.lock().expect("scrape lock");
        self.set_store(&engine.store_health());
        match records {
            Ok((networks, endpoints)) => self.set_usage(&usage(&networks, &endpoints, |n| {
                engine.bridge_layout(n).total()
            })),
            Err(e) => tracing::warn!("metrics: per-network gauges not refreshed: {e}"),
        }
        Ok(self.encode())
    }
}

#[cfg(test)]
mod tests;
