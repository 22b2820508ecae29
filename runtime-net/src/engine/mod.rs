//! The engine: bridge networks and endpoints, decided by [`crate::plan`], carried out by the
//! netlink/firewall/sysctl executors and recorded in the [`Store`] in crash-safe order
//! (allocate and persist first, then build; tear down first, then release).

pub mod docker;
mod error;
mod observer;
mod reconcile;

use error::collect;
pub use error::{EngineError, Result};
pub use observer::Observer;
pub use reconcile::ReconcileReport;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Instant;

use ipnetwork::IpNetwork;
use tokio::sync::{Mutex, RwLock};

use crate::firewall::{self, BackendKind, Firewall, FirewallError, NetworkRules, PortRules};
use crate::naming;
use crate::netlink::{BridgeConfig, Netlink, VethConfig};
use crate::plan::{self, FieldError, NetworkRequest};
use crate::store::{AllocRequest, Store, StoreError, StoreHealth};
use crate::sysctl;
use crate::types::{
    ContainerId, EndpointKey, EndpointRecord, HostName, IfName, MacAddr, NetworkName, NetworkSpec,
    PortMapping,
};

/// A request to attach a container to a network.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    /// Network.
    pub network: NetworkName,
    /// Container id.
    pub container_id: ContainerId,
    /// Network namespace path.
    pub netns: PathBuf,
    /// Interface name inside the container.
    pub ifname: IfName,
    /// Static IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// Static IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// Requested MAC.
    pub mac: Option<MacAddr>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
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

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory of the state store.
    pub state_dir: PathBuf,
    /// Firewall backend; auto-detected when `None`.
    pub firewall: Option<BackendKind>,
}

/// Counts for the status endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Firewall backend.
    pub firewall: BackendKind,
    /// Networks.
    pub networks: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Seconds since the engine started.
    pub uptime_seconds: u64,
    /// The state store's health.
    pub store: StoreHealth,
}

/// The engine. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<Store>,
    nl: Netlink,
    fw: Arc<dyn Firewall>,
    /// Network create/delete take it for writing, endpoint operations for reading.
    topology: RwLock<()>,
    /// Serialises operations on one endpoint key.
    key_locks: StdMutex<HashMap<EndpointKey, Arc<Mutex<()>>>>,
    started: Instant,
    /// Told about every recorded change (set once, see [`Engine::observe`]).
    observer: OnceLock<Arc<dyn Observer>>,
}

impl Engine {
    /// Opens the store, connects netlink, picks the firewall backend and installs its base.
    pub async fn new(cfg: &EngineConfig) -> Result<Self> {
        let dir = cfg.state_dir.clone();
        let store = blocking(move || Store::open(&dir)).await?;
        let nl = Netlink::connect().await?;
        let pref = cfg.firewall;
        let fw: Arc<dyn Firewall> = Arc::from(blocking(move || firewall::detect(pref)).await?);
        let f = fw.clone();
        blocking(move || f.ensure_base()).await?;
        Ok(Engine {
            store: Arc::new(store),
            nl,
            fw,
            topology: RwLock::new(()),
            key_locks: StdMutex::new(HashMap::new()),
            started: Instant::now(),
            observer: OnceLock::new(),
        })
    }

    /// Installs the observer (once; a second call is refused with `false`) and tells it about
    /// every recorded network and endpoint. Changes made meanwhile wait for the replay, so none
    /// is missed or told twice out of order.
    pub async fn observe(&self, observer: Arc<dyn Observer>) -> Result<bool> {
        let _w = self.topology.write().await;
        if self.observer.set(observer.clone()).is_err() {
            return Ok(false);
        }
        let (networks, endpoints) = self
            .store(|s| Ok((s.networks()?, s.endpoints(None)?)))
            .await?;
        for spec in &networks {
            observer.network_up(spec);
        }
        for rec in &endpoints {
            if let Some(spec) = networks.iter().find(|n| n.name == rec.key.network) {
                observer.endpoint_up(spec, rec);
            }
        }
        Ok(true)
    }

    fn observer(&self) -> Option<&dyn Observer> {
        self.observer.get().map(|o| o.as_ref())
    }

    /// The firewall backend in use.
    pub fn firewall_kind(&self) -> BackendKind {
        self.fw.kind()
    }

    async fn store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> std::result::Result<T, StoreError> + Send + 'static,
    ) -> Result<T> {
        let s = self.store.clone();
        blocking(move || f(&s)).await
    }

    async fn fw<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Firewall) -> std::result::Result<T, FirewallError> + Send + 'static,
    ) -> Result<T> {
        let fw = self.fw.clone();
        blocking(move || f(fw.as_ref())).await
    }

    /// All networks.
    pub async fn networks(&self) -> Result<Vec<NetworkSpec>> {
        self.store(|s| s.networks()).await
    }

    /// One network.
    pub async fn network(&self, name: &NetworkName) -> Result<NetworkSpec> {
        let n = name.clone();
        self.store(move |s| s.network(&n))
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "network",
                name: name.to_string(),
            })
    }

    /// Endpoints of one network, or all.
    pub async fn endpoints(&self, network: Option<&NetworkName>) -> Result<Vec<EndpointRecord>> {
        if let Some(n) = network {
            self.network(n).await?;
        }
        let n = network.cloned();
        self.store(move |s| s.endpoints(n.as_ref())).await
    }

    /// One endpoint.
    pub async fn endpoint(&self, key: &EndpointKey) -> Result<EndpointRecord> {
        let k = key.clone();
        self.store(move |s| s.endpoint(&k))
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "endpoint",
                name: key.to_string(),
            })
    }

    /// Counts for status reports.
    pub async fn status(&self) -> Result<Status> {
        let (n, e) = self
            .store(|s| Ok((s.networks()?.len(), s.endpoints(None)?.len())))
            .await?;
        Ok(Status {
            firewall: self.fw.kind(),
            networks: n,
            endpoints: e,
            uptime_seconds: self.started.elapsed().as_secs(),
            store: self.store.health(),
        })
    }

    /// How the state store is doing (I/O failures, reopens; see `store::handle`).
    pub fn store_health(&self) -> StoreHealth {
        self.store.health()
    }

    /// Like [`Engine::store_health`], after one small write when the store is unhealthy (at
    /// most once a second), so the answer follows the disk even while nothing else writes.
    pub async fn check_store(&self) -> StoreHealth {
        let s = self.store.clone();
        match tokio::task::spawn_blocking(move || s.probe()).await {
            Ok(h) => h,
            Err(_) => self.store.health(),
        }
    }

    /// The store's health as it changes; `fatal` set means the daemon must exit (reopening the
    /// store in this process is not safe) so that the service manager restarts it.
    pub fn store_health_changes(&self) -> tokio::sync::watch::Receiver<StoreHealth> {
        self.store.subscribe_health()
    }

    /// Validates, records and builds a new network.
    pub async fn create_network(&self, req: NetworkRequest) -> Result<NetworkSpec> {
        let spec = plan::build_spec(req)?;
        let _w = self.topology.write().await;
        let existing = self.networks().await?;
        plan::check_clash(&spec, &existing).map_err(|c| EngineError::Conflict(c.to_string()))?;
        plan::check_host_overlap(&spec, &self.nl.host_addresses().await?)
            .map_err(|f| EngineError::Conflict(f.to_string()))?;
        if self.nl.link_exists(&spec.bridge).await? {
            let owned = self.nl.owned_links().await?;
            let ours = owned.iter().any(|l| {
                l.name == spec.bridge.as_str()
                    && l.alias.as_deref() == Some(naming::bridge_alias(&spec.name).as_str())
            });
            if !ours {
                return Err(EngineError::Conflict(format!(
                    "bridge: a link named {} already exists and is not shimnet's",
                    spec.bridge
                )));
            }
        }
        let s = spec.clone();
        self.store(move |st| st.insert_network(&s)).await?;
        if let Err(e) = self.apply_network(&spec).await {
            let rollback = self.teardown_network(&spec).await;
            let n = spec.name.clone();
            let _ = self.store(move |st| st.remove_network(&n)).await;
            return Err(match rollback {
                Ok(()) => e,
                Err(r) => EngineError::Many(vec![e, r]),
            });
        }
        if let Some(o) = self.observer() {
            o.network_up(&spec);
        }
        tracing::info!(network = %spec.name, bridge = %spec.bridge, subnet = %spec.subnet, "network created");
        Ok(spec)
    }

    /// Creates the network unless one of that name exists; an existing one must match `req`'s
    /// subnet (used for declared networks and CNI configs).
    pub async fn ensure_network(&self, req: NetworkRequest) -> Result<NetworkSpec> {
        let wanted = plan::build_spec(req.clone())?;
        let n = wanted.name.clone();
        if let Some(have) = self.store(move |s| s.network(&n)).await? {
            if have.subnet != wanted.subnet || have.bridge != wanted.bridge {
                return Err(EngineError::Conflict(format!(
                    "network {} exists with subnet {} on bridge {}, not {} on {}",
                    have.name, have.subnet, have.bridge, wanted.subnet, wanted.bridge
                )));
            }
            if have.dns != wanted.dns {
                return Err(EngineError::Conflict(format!(
                    "dns: network {} exists with name resolution {}; delete it first to change that",
                    have.name,
                    if have.dns { "on" } else { "off" }
                )));
            }
            return Ok(have);
        }
        match self.create_network(req).await {
            Err(EngineError::Conflict(_)) if self.network(&wanted.name).await.is_ok() => {
                self.network(&wanted.name).await
            }
            other => other,
        }
    }

    fn network_rules(spec: &NetworkSpec) -> NetworkRules {
        NetworkRules {
            name: spec.name.clone(),
            bridge: spec.bridge.clone(),
            subnet4: spec.subnet,
            subnet6: spec.subnet6,
            masquerade: spec.masquerade,
            icc: spec.icc,
            internal: spec.internal,
            no_masquerade_to: spec.no_masquerade_to.clone(),
            allow_from: spec.allow_from.clone(),
        }
    }

    /// Makes the kernel match a recorded network (idempotent; repairs drift).
    async fn apply_network(&self, spec: &NetworkSpec) -> Result<()> {
        let mut addrs = vec![
            IpNetwork::new(IpAddr::V4(spec.gateway), spec.subnet.prefix())
                .expect("prefix of a valid subnet"),
        ];
        if let (Some(s6), Some(g6)) = (spec.subnet6, spec.gateway6) {
            addrs.push(
                IpNetwork::new(IpAddr::V6(g6), s6.prefix()).expect("prefix of a valid subnet"),
            );
        }
        let cfg = BridgeConfig {
            name: spec.bridge.clone(),
            alias: naming::bridge_alias(&spec.name),
            mtu: spec.mtu,
            addrs,
        };
        self.nl.ensure_bridge(&cfg).await?;
        if !spec.internal {
            sysctl::enable_forwarding(spec.subnet6.is_some())?;
        }
        // Lets the host reach published ports through 127.0.0.1 (DNAT to the bridge).
        sysctl::set(
            &format!("net/ipv4/conf/{}/route_localnet", spec.bridge),
            "1",
        )?;
        let rules = Self::network_rules(spec);
        self.fw(move |fw| fw.apply_network(&rules)).await?;
        Ok(())
    }

    /// Removes a network's kernel objects, continuing past failures.
    async fn teardown_network(&self, spec: &NetworkSpec) -> Result<()> {
        let mut errors = Vec::new();
        let name = spec.name.clone();
        if let Err(e) = self.fw(move |fw| fw.remove_network(&name)).await {
            errors.push(e);
        }
        if let Err(e) = self.nl.delete_link(&spec.bridge).await {
            errors.push(e.into());
        }
        collect(errors)
    }

    /// Deletes a network. With `force`, its endpoints are detached first; otherwise a network
    /// with endpoints is refused.
    pub async fn delete_network(&self, name: &NetworkName, force: bool) -> Result<NetworkSpec> {
        let _w = self.topology.write().await;
        let spec = self.network(name).await?;
        let n = name.clone();
        let eps = self.store(move |s| s.endpoints(Some(&n))).await?;
        if !eps.is_empty() {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "network {name} still has {} endpoint(s); detach them first or use force",
                    eps.len()
                )));
            }
            for ep in eps {
                self.detach_locked(&ep.key).await?;
            }
        }
        self.teardown_network(&spec).await?;
        let n = name.clone();
        self.store(move |s| s.remove_network(&n)).await?;
        if let Some(o) = self.observer() {
            o.network_down(name);
        }
        tracing::info!(network = %name, "network deleted");
        Ok(spec)
    }

    fn key_lock(&self, key: &EndpointKey) -> Arc<Mutex<()>> {
        let mut map = self.key_locks.lock().expect("key lock map poisoned");
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.clone()).or_default().clone()
    }

    fn veth_config(spec: &NetworkSpec, rec: &EndpointRecord) -> VethConfig {
        VethConfig {
            bridge: spec.bridge.clone(),
            host_ifname: rec.host_ifname.clone(),
            host_alias: naming::veth_alias(&rec.key),
            netns: rec.netns.clone(),
            container_ifname: rec.key.ifname.clone(),
            mac: rec.mac,
            ipv4: rec.ipv4,
            ipv6: rec.ipv6,
            gateway: Some(rec.gateway),
            gateway6: rec.gateway6,
            mtu: rec.mtu,
            hairpin: spec.hairpin,
            isolated: !spec.icc,
        }
    }

    fn port_rules(spec: &NetworkSpec, rec: &EndpointRecord) -> PortRules {
        let ports = rec
            .ports
            .iter()
            .map(|p| PortMapping {
                host_ip: p.host_ip.or(spec.host_binding_ipv4.map(IpAddr::V4)),
                ..*p
            })
            .collect();
        PortRules {
            id: rec.host_ifname.clone(),
            network: spec.name.clone(),
            bridge: spec.bridge.clone(),
            subnet4: spec.subnet,
            ip4: rec.ipv4.ip(),
            ip6: rec.ipv6.map(|n| n.ip()),
            ports,
        }
    }

    /// Attaches a container. Idempotent per (network, container, ifname): a retry returns the
    /// recorded endpoint, rebuilding kernel state if it is incomplete. Returns the record and
    /// whether it was created by this call.
    pub async fn attach(&self, req: AttachRequest) -> Result<(EndpointRecord, bool)> {
        let _r = self.topology.read().await;
        let key = req.key();
        let lock = self.key_lock(&key);
        let _k = lock.lock().await;
        let spec = self.network(&req.network).await?;
        if let Err(e) = crate::nspath::check_netns(&req.netns) {
            return Err(FieldError::new("netns", e.to_string()).into());
        }
        if !req.ports.is_empty() {
            self.check_port_conflicts(&key, &req.ports).await?;
        }
        let alloc = AllocRequest {
            key: key.clone(),
            netns: req.netns.clone(),
            host_ifname: naming::host_veth_name(&key),
            ipv4: req.ipv4,
            ipv6: req.ipv6,
            mac: req.mac,
            ports: req.ports.clone(),
            names: req.names.clone(),
        };
        let t0 = std::time::Instant::now();
        let (rec, created) = self.store(move |s| s.allocate_endpoint(&alloc)).await?;
        let allocated = t0.elapsed();
        if !created {
            if rec.netns != req.netns {
                return Err(EngineError::Conflict(format!(
                    "endpoint {key} already exists in namespace {}",
                    rec.netns.display()
                )));
            }
            let cfg = Self::veth_config(&spec, &rec);
            if self.nl.check_veth(&cfg).await?.is_empty() {
                self.install_ports(&spec, &rec).await?;
                if let Some(o) = self.observer() {
                    o.endpoint_up(&spec, &rec);
                }
                return Ok((rec, false));
            }
        }
        let cfg = Self::veth_config(&spec, &rec);
        let built = match self.nl.attach_veth(&cfg).await {
            Ok(()) => self.install_ports(&spec, &rec).await,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = built {
            let mut errors = vec![e];
            if let Err(t) = self.teardown_endpoint(&spec, &rec).await {
                errors.push(t);
            }
            let k = key.clone();
            if let Err(s) = self.store(move |s| s.release_endpoint(&k)).await {
                errors.push(s);
            }
            return Err(collect(errors).expect_err("at least one error"));
        }
        if let Some(o) = self.observer() {
            o.endpoint_up(&spec, &rec);
        }
        tracing::debug!(
            endpoint = %key,
            ip = %rec.ipv4,
            alloc_us = allocated.as_micros() as u64,
            build_us = (t0.elapsed() - allocated).as_micros() as u64,
            "attached"
        );
        Ok((rec, created))
    }

    async fn install_ports(&self, spec: &NetworkSpec, rec: &EndpointRecord) -> Result<()> {
        if rec.ports.is_empty() {
            return Ok(());
        }
        let rules = Self::port_rules(spec, rec);
        self.fw(move |fw| fw.add_ports(&rules)).await
    }

    async fn check_port_conflicts(&self, key: &EndpointKey, ports: &[PortMapping]) -> Result<()> {
        let all = self.store(|s| s.endpoints(None)).await?;
        for ep in all.iter().filter(|e| &e.key != key) {
            for mine in ports {
                if let Some(theirs) = ep.ports.iter().find(|p| ports_clash(mine, p)) {
                    return Err(EngineError::Conflict(format!(
                        "ports: host port {}/{} is already published by endpoint {} ({})",
                        mine.host_port,
                        mine.protocol,
                        ep.key,
                        theirs
                            .host_ip
                            .map_or("all addresses".to_string(), |i| i.to_string())
                    )));
                }
            }
        }
        Ok(())
    }

    /// Removes an endpoint's kernel objects, continuing past failures.
    async fn teardown_endpoint(&self, spec: &NetworkSpec, rec: &EndpointRecord) -> Result<()> {
        let mut errors = Vec::new();
        if !rec.ports.is_empty() {
            let rules = Self::port_rules(spec, rec);
            if let Err(e) = self.fw(move |fw| fw.remove_ports(&rules)).await {
                errors.push(e);
            }
        }
        if let Err(e) = self.nl.detach_veth(&rec.host_ifname).await {
            errors.push(e.into());
        }
        collect(errors)
    }

    /// Detaches an endpoint. Idempotent: an unknown endpoint, a vanished namespace or a missing
    /// veth all succeed. Returns the released record, if there was one.
    pub async fn detach(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>> {
        let _r = self.topology.read().await;
        self.detach_locked(key).await
    }

    async fn detach_locked(&self, key: &EndpointKey) -> Result<Option<EndpointRecord>> {
        let lock = self.key_lock(key);
        let _k = lock.lock().await;
        let k = key.clone();
        let Some(rec) = self.store(move |s| s.endpoint(&k)).await? else {
            // Nothing recorded; still remove a veth a crashed attach may have left behind.
            self.nl.detach_veth(&naming::host_veth_name(key)).await?;
            return Ok(None);
        };
        let n = key.network.clone();
        let spec = self.store(move |s| s.network(&n)).await?;
        match &spec {
            Some(spec) => self.teardown_endpoint(spec, &rec).await?,
            None => {
                self.nl.detach_veth(&rec.host_ifname).await?;
            }
        }
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
        let cfg = Self::veth_config(&spec, &rec);
        let mut problems = if key.ifname.as_str() == docker::DOCKER_IFNAME {
            // libnetwork owns the container end of a Docker endpoint.
            self.nl.check_prepared(&cfg).await?
        } else {
            self.nl.check_veth(&cfg).await?
        };
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
}

fn ports_clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && match (a.host_ip, b.host_ip) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

async fn blocking<T, E>(f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static) -> Result<T>
where
    T: Send + 'static,
    E: Into<EngineError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Protocol;

    fn pm(ip: Option<&str>, port: u16, proto: Protocol) -> PortMapping {
        PortMapping {
            protocol: proto,
            host_ip: ip.map(|s| s.parse().unwrap()),
            host_port: port,
            container_port: 80,
        }
    }

    #[test]
    fn port_clash_rules() {
        assert!(ports_clash(
            &pm(None, 80, Protocol::Tcp),
            &pm(None, 80, Protocol::Tcp)
        ));
        assert!(ports_clash(
            &pm(None, 80, Protocol::Tcp),
            &pm(Some("127.0.0.1"), 80, Protocol::Tcp)
        ));
        assert!(!ports_clash(
            &pm(Some("127.0.0.2"), 80, Protocol::Tcp),
            &pm(Some("127.0.0.1"), 80, Protocol::Tcp)
        ));
        assert!(!ports_clash(
            &pm(None, 80, Protocol::Tcp),
            &pm(None, 80, Protocol::Udp)
        ));
        assert!(!ports_clash(
            &pm(None, 80, Protocol::Tcp),
            &pm(None, 81, Protocol::Tcp)
        ));
    }
}
