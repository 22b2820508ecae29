//! The endpoint pipeline, one for every front door: the caller's request, already translated to
//! an [`AttachRequest`], is **reserved** in the store (addresses and host ports in one
//! transaction, made durable while the kernel work runs, before the caller hears back), the
//! kernel is **observed**, the change is **planned** as a value ([`crate::plan::endpoint`]),
//! **applied** through the executors and, when a step (or making the reservation durable) fails,
//! undone in reverse together with the reservation. Detaching tears down first and releases last.
//!
//! What differs between front doors is the recorded [`EndpointKind`] and where the pipeline is
//! split: a prepared endpoint is attached (pair built, container end left beside the host end),
//! then [`Engine::join`]ed once the caller moved it into its namespace, then gets its ports
//! ([`Engine::publish`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use super::{collect, Engine, EngineError, Result};
use crate::kernel::ContainerEnd;
use crate::naming;
use crate::netlink::NetlinkError;
use crate::plan::bridges::endpoint_bridge;
use crate::plan::check::{self, checks_container, Seen};
use crate::plan::endpoint::{self as planner, container_end_name, EndpointPlan, Observed};
use crate::plan::ports::PortRequest;
use crate::plan::FieldError;
use crate::store::AllocRequest;
use crate::types::{
    ContainerId, EndpointKey, EndpointKind, EndpointRecord, HostName, IfName, MacAddr, NetworkName,
    NetworkSpec, PortMapping,
};

/// A request to attach a container to a network.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// Network.
    pub network: NetworkName,
    /// Container (or endpoint) id.
    pub container_id: ContainerId,
    /// Interface name inside the container.
    pub ifname: IfName,
    /// Who puts the container end in place.
    pub kind: EndpointKind,
    /// Managed: the namespace the container end is created in (required). Prepared: none; the
    /// namespace is named at [`Engine::join`].
    pub netns: Option<PathBuf>,
    /// Static IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Static IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Requested MAC.
    pub mac: Option<MacAddr>,
    /// Ports to publish.
    pub ports: Vec<PortRequest>,
    /// Names the container answers to on a network with name resolution (recorded).
    pub names: Vec<HostName>,
}

impl AttachRequest {
    /// The endpoint key this request addresses.
    pub fn key(&self) -> EndpointKey {
        EndpointKey {
            network: self.network.clone(),
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// What an attach did.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The record.
    pub record: EndpointRecord,
    /// Whether this call created it (else it was a retry).
    pub created: bool,
    /// The container end's name where the engine left it (a prepared endpoint's temporary
    /// name, which the caller moves into the namespace).
    pub container_end: IfName,
    /// The change as it was planned and applied.
    pub plan: EndpointPlan,
}

impl Engine {
    /// Attaches a container: reserve, plan, apply (while the reservation is made durable), roll
    /// back in reverse on failure. Idempotent per (network, container, ifname): a retry gets the
    /// recorded endpoint, rebuilt if it is not intact; it must not contradict the record (kind,
    /// namespace, static address).
    pub async fn attach(&self, req: AttachRequest) -> Result<Attachment> {
        let _r = self.topology.read().await;
        let key = req.key();
        let lock = self.key_lock(&key);
        let _k = lock.lock().await;
        let spec = self.network(&req.network).await?;
        let netns = match (req.kind, &req.netns) {
            (EndpointKind::Managed, Some(p)) => {
                if let Err(e) = self.kernel.netns.check(p) {
                    return Err(FieldError::new("netns", e.to_string()).into());
                }
                p.clone()
            }
            (EndpointKind::Managed, None) => {
                return Err(FieldError::new("netns", "a namespace path is required").into())
            }
            (EndpointKind::Prepared, _) => PathBuf::from(naming::UNJOINED_NETNS),
        };
        let alloc = AllocRequest {
            key: key.clone(),
            kind: req.kind,
            netns: netns.clone(),
            host_ifname: naming::host_veth_name(&key),
            ipv4: req.ipv4,
            ipv6: req.ipv6,
            mac: req.mac,
            ports: req.ports.clone(),
            names: req.names.clone(),
            bridges: Some(self.bridge_layout(&spec)),
        };
        let t0 = std::time::Instant::now();
        let (rec, created, unflushed) = self.store(move |s| s.reserve_endpoint(&alloc)).await?;
        let reserved = t0.elapsed();
        if !created {
            check_retry(&rec, &req, &netns)?;
        }
        let mut rebuilt = created;
        let build = async {
            let obs = self.observe(&spec, &rec, !created).await?;
            rebuilt |= !obs.intact;
            let plan = planner::attach(&spec, &rec, &obs);
            self.apply(&plan).await.map(|()| plan)
        };
        // A new reservation reaches the disk while the kernel work runs; the caller hears back
        // only once both are done. (A retry's record was made durable by the call that made it.)
        let flush = async {
            if created {
                self.store(move |s| s.flush(unflushed)).await
            } else {
                Ok(())
            }
        };
        let (built, flushed) = futures::join!(build, flush);
        let built = match (built, flushed) {
            (Ok(plan), Err(e)) => {
                // Built but not recorded: take down what was built; the rollback below releases
                // whatever of the reservation is left.
                if let Err(u) = self.apply_all(&plan.undone()).await {
                    tracing::warn!(endpoint = %key, "undoing an attach whose record failed: {u}");
                }
                Err(e)
            }
            (built, _) => built,
        };
        let plan = match built {
            Ok(plan) => {
                if rebuilt {
                    self.proxy_endpoint(&spec, &rec, true).await;
                }
                plan
            }
            Err(e) => {
                let mut errors = vec![self.bridge_full(e, &spec)];
                if rebuilt {
                    let k = key.clone();
                    if let Err(s) = self.store(move |s| s.release_endpoint(&k)).await {
                        errors.push(s);
                    }
                }
                return Err(collect(errors).expect_err("at least one error"));
            }
        };
        // Record point: reserved, built and recorded — now the endpoint's names exist.
        if let Some(o) = self.observer() {
            o.endpoint_up(&spec, &rec);
        }
        tracing::debug!(
            endpoint = %key,
            ip = %rec.ipv4,
            reserve_us = reserved.as_micros() as u64,
            build_us = (t0.elapsed() - reserved).as_micros() as u64,
            plan = %plan,
            "attached"
        );
        Ok(Attachment {
            container_end: container_end_name(&rec),
            record: rec,
            created,
            plan,
        })
    }

    /// The second half of a prepared endpoint's attach: records the namespace the caller moved
    /// the container end into, first rebuilding the pair if it is not intact. Returns the record,
    /// the name the container end has beside the host end, and what was done.
    pub async fn join(
        &self,
        key: &EndpointKey,
        netns: &Path,
    ) -> Result<(EndpointRecord, IfName, EndpointPlan)> {
        let _r = self.topology.read().await;
        let lock = self.key_lock(key);
        let _k = lock.lock().await;
        let spec = self.network(&key.network).await?;
        let mut rec = self.endpoint(key).await?;
        let obs = self.observe(&spec, &rec, true).await?;
        let plan = planner::join(&spec, &rec, &obs);
        self.apply(&plan)
            .await
            .map_err(|e| self.bridge_full(e, &spec))?;
        if rec.netns != netns {
            rec.netns = netns.to_path_buf();
            let r = rec.clone();
            self.store(move |s| s.update_endpoint(&r)).await?;
        }
        Ok((rec.clone(), container_end_name(&rec), plan))
    }

    /// Publishes `requests` for an endpoint, replacing what it published before: each gets the
    /// first host port of its range no other endpoint has, chosen in the store transaction that
    /// records it. On failure the previous ports are back in place. Returns the chosen mappings
    /// and what was done.
    pub async fn publish(
        &self,
        key: &EndpointKey,
        requests: Vec<PortRequest>,
    ) -> Result<(Vec<PortMapping>, EndpointPlan)> {
        let _r = self.topology.read().await;
        let lock = self.key_lock(key);
        let _k = lock.lock().await;
        let spec = self.network(&key.network).await?;
        let rec = self.endpoint(key).await?;
        if requests.is_empty() && rec.ports.is_empty() {
            return Ok((Vec::new(), planner::publish(&spec, &rec, &rec)));
        }
        let k = key.clone();
        let (old, new) = self.store(move |s| s.replace_ports(&k, &requests)).await?;
        let plan = planner::publish(&spec, &old, &new);
        if let Err(e) = self.apply(&plan).await {
            let mut errors = vec![e];
            let back = old.clone();
            if let Err(s) = self.store(move |s| s.update_endpoint(&back)).await {
                errors.push(s);
            }
            return Err(collect(errors).expect_err("at least one error"));
        }
        tracing::debug!(endpoint = %key, plan = %plan, "published");
        Ok((new.ports, plan))
    }

    /// Withdraws every port the endpoint published (nothing to do for an unknown endpoint).
    pub async fn unpublish(&self, key: &EndpointKey) -> Result<()> {
        let _r = self.topology.read().await;
        let lock = self.key_lock(key);
        let _k = lock.lock().await;
        let k = key.clone();
        let Some(mut rec) = self.store(move |s| s.endpoint(&k)).await? else {
            return Ok(());
        };
        if rec.ports.is_empty() {
            return Ok(());
        }
        let spec = self.network(&key.network).await?;
        self.apply(&planner::unpublish(&spec, &rec)).await?;
        rec.ports.clear();
        self.store(move |s| s.update_endpoint(&rec)).await
    }

    /// Detaches an endpoint. Idempotent: an unknown endpoint, a vanished namespace or a missing
    /// veth all succeed. Returns the released record, if there was one.
    pub async fn detach(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>> {
        let _r = self.topology.read().await;
        self.detach_locked(key).await
    }

    /// Detach under a topology lock the caller holds: tear down (every step attempted), then
    /// release the record — only when teardown succeeded, so a retry can finish the job.
    pub(super) async fn detach_locked(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>> {
        let lock = self.key_lock(key);
        let _k = lock.lock().await;
        let k = key.clone();
        let Some(rec) = self.store(move |s| s.endpoint(&k)).await? else {
            // Nothing recorded; still remove a veth a crashed attach may have left behind.
            let host = naming::host_veth_name(key);
            self.kernel.links.retire_link(host.as_str()).await?;
            return Ok(None);
        };
        let n = key.network.clone();
        let spec = self.store(move |s| s.network(&n)).await?;
        // Proxy entries go before the pair is retired: retiring starts the pair's deletion in
        // the background, which holds the kernel's link lock for a time that grows with the
        // bridge's port count, and would make these requests wait behind it (and find the port
        // gone: a second round with fresh indexes).
        if let Some(spec) = &spec {
            self.proxy_endpoint(spec, &rec, false).await;
        }
        let plan = planner::detach(spec.as_ref(), &rec);
        self.apply_all(&plan).await?;
        // Names go before the addresses are released: a new endpoint that gets one of them can
        // never be found under this endpoint's names.
        if let Some(o) = self.observer() {
            o.endpoint_down(key);
        }
        let k = key.clone();
        let released = match self.store(move |s| s.release_endpoint(&k)).await {
            Ok(r) => r,
            Err(e) => {
                // Still recorded: its names stay with it.
                if let (Some(o), Some(spec)) = (self.observer(), &spec) {
                    o.endpoint_up(spec, &rec);
                }
                return Err(e);
            }
        };
        tracing::debug!(endpoint = %key, "detached");
        Ok(released)
    }

    /// Differences between the kernel and an endpoint's record (empty when intact): links,
    /// addresses and routes, and the firewall state of its network and published ports.
    pub async fn check_endpoint(&self, key: &EndpointKey) -> Result<Vec<String>> {
        let rec = self.endpoint(key).await?;
        let spec = self.network(&key.network).await?;
        let seen = self.seen(&spec, &rec).await?;
        let mut problems = check::problems(&spec, &rec, &seen);
        if !self
            .fw(|fw| fw.owned_networks())
            .await?
            .contains(&spec.name)
        {
            problems.push(format!("firewall rules of network {} missing", spec.name));
        }
        if !rec.ports.is_empty()
            && !self
                .fw(|fw| fw.owned_ports())
                .await?
                .contains(&rec.host_ifname)
        {
            problems.push(format!(
                "published port rules of {} ({}) missing",
                rec.key, rec.host_ifname
            ));
        }
        Ok(problems)
    }

    /// What the kernel shows of an endpoint: bridge, host end and (for a managed endpoint) the
    /// container end inside its namespace.
    async fn seen(&self, spec: &NetworkSpec, rec: &EndpointRecord) -> Result<Seen> {
        let links = &self.kernel.links;
        let container = async {
            if !checks_container(rec.kind) {
                return Ok(None);
            }
            Ok::<_, EngineError>(Some(match self.kernel.netns.enter(&rec.netns).await {
                Ok(ns) => ns.observe(&rec.key.ifname).await?,
                Err(e) => ContainerEnd::NetnsMissing(e.to_string()),
            }))
        };
        let bridge = endpoint_bridge(spec, rec);
        let (bridge, host, container) = futures::join!(
            links.link(bridge.as_str()),
            links.link(rec.host_ifname.as_str()),
            container,
        );
        Ok(Seen {
            bridge: bridge?.map(|b| b.index),
            host: host?,
            container: container?,
        })
    }

    /// Builds a recorded endpoint's pair again where it is not intact, as an attach retry does
    /// (the caller holds its lock); `Ok(true)` when something was built. The record stays as it
    /// is whatever happens.
    pub(super) async fn rebuild(&self, spec: &NetworkSpec, rec: &EndpointRecord) -> Result<bool> {
        let obs = self.observe(spec, rec, true).await?;
        if obs.intact {
            return Ok(false);
        }
        let plan = planner::attach(spec, rec, &obs);
        self.apply(&plan).await?;
        tracing::debug!(endpoint = %rec.key, plan = %plan, "rebuilt");
        // Its interfaces are new: observers that hold on to them learn it (idempotent for the
        // rest).
        if let Some(o) = self.observer() {
            o.endpoint_up(spec, rec);
        }
        Ok(true)
    }

    /// What an attach or join must take into account: the bridge's index, whether the endpoint
    /// is already intact (`retry` only: a first attach has nothing built yet), and leftovers under
    /// the names it needs. A first attach only looks the names up (no link messages to build and
    /// parse).
    async fn observe(
        &self,
        spec: &NetworkSpec,
        rec: &EndpointRecord,
        retry: bool,
    ) -> Result<Observed> {
        let links = &self.kernel.links;
        let (bridge, host) = if retry {
            let seen = self.seen(spec, rec).await?;
            if check::problems(spec, rec, &seen).is_empty() {
                return Ok(Observed {
                    bridge: seen.bridge,
                    leftovers: Vec::new(),
                    intact: true,
                });
            }
            (seen.bridge, seen.host.is_some())
        } else {
            let bridge = endpoint_bridge(spec, rec);
            (
                links.index(bridge.as_str())?,
                links.index(rec.host_ifname.as_str())?.is_some(),
            )
        };
        let mut leftovers = Vec::new();
        if host {
            leftovers.push(rec.host_ifname.clone());
        }
        // A prepared endpoint's container end waits beside the host end under a temporary name.
        if rec.kind == EndpointKind::Prepared {
            let temp = container_end_name(rec);
            if links.index(temp.as_str())?.is_some() {
                leftovers.push(temp);
            }
        }
        Ok(Observed {
            bridge,
            leftovers,
            intact: false,
        })
    }
}

/// A retry must not contradict the record it finds: same kind, same namespace (managed), the
/// same static address when one is asked for.
fn check_retry(rec: &EndpointRecord, req: &AttachRequest, netns: &Path) -> Result<()> {
    let key = &rec.key;
    if rec.kind != req.kind {
        return Err(EngineError::Conflict(format!(
            "endpoint {key} already exists as a {} endpoint",
            rec.kind
        )));
    }
    if rec.kind == EndpointKind::Managed && rec.netns != netns {
        return Err(EngineError::Conflict(format!(
            "endpoint {key} already exists in namespace {}",
            rec.netns.display()
        )));
    }
    if req.ipv4.is_some_and(|ip| ip != rec.ipv4.ip()) {
        return Err(EngineError::Conflict(format!(
            "endpoint {key} already exists with address {}",
            rec.ipv4.ip()
        )));
    }
    Ok(())
}

impl Engine {
    /// The kernel's `EXFULL` on one of the network's bridges (something else took ports, or the
    /// count was wrong) is the same refusal as the count in the store: the network is full.
    fn bridge_full(&self, e: EngineError, spec: &NetworkSpec) -> EngineError {
        match e {
            EngineError::Netlink(NetlinkError::BridgeFull { .. }) => EngineError::NetworkFull {
                network: spec.name.clone(),
                capacity: self.bridge_layout(spec).total(),
            },
            other => other,
        }
    }
}
