//! The engine: bridge networks and endpoints, decided by [`crate::plan`], carried out through the
//! kernel traits ([`crate::kernel`]) and the firewall, and recorded in the [`Store`] in
//! crash-safe order (allocate and persist first, then build; tear down first, then release).
//!
//! - `network`: create, ensure, apply, restore and delete networks.
//! - `endpoint`: the one endpoint pipeline every front door uses — reserve, plan, apply, record,
//!   roll back in reverse — split at [`Engine::join`] for prepared endpoints.
//! - `apply`: carrying out an endpoint plan step by step, and undoing it.
//! - `pools`: address pools by id, on the same store and allocator as networks.
//! - `observer`: the one outward hook, told each recorded change of a network or endpoint.
//! - `reconcile`: bringing the kernel back in line with the records.

mod apply;
mod endpoint;
mod error;
mod network;
mod observer;
mod pools;
mod reconcile;
mod repair;
#[cfg(test)]
mod tests;

pub use endpoint::{AttachRequest, Attachment};
use error::collect;
pub use error::{EngineError, Result};
pub use observer::{Observer, Observers};
pub use reconcile::ReconcileReport;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::Instant;

use tokio::sync::{Mutex, RwLock};

use crate::firewall::{self, AdminChains, BackendKind, Firewall, FirewallError};
use crate::kernel::Kernel;
use crate::netlink::{Netlink, NetnsEntry};
use crate::plan::bridges::BridgeLayout;
use crate::store::{Store, StoreError, StoreHealth};
use crate::sysctl::ProcSys;
use crate::types::{EndpointKey, EndpointRecord, NetworkName, NetworkSpec};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory of the state store.
    pub state_dir: PathBuf,
    /// Firewall backend; auto-detected when `None`.
    pub firewall: Option<BackendKind>,
    /// An admin chain jumped first from iptables' `FORWARD`; `None`: the backend's default
    /// (`SHIMNET-USER` with iptables, none with nftables).
    pub admin_chains: Option<AdminChains>,
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
    /// Per network, in name order: endpoints against the bridge ports it can take (over its main
    /// and every extension bridge it may have).
    pub capacity: Vec<NetworkCapacity>,
}

/// How full one network is: each endpoint takes one port of one of the network's bridges.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NetworkCapacity {
    /// Network.
    pub network: NetworkName,
    /// Endpoints recorded on it.
    pub endpoints: usize,
    /// Bridge ports its endpoints take.
    pub ports_used: usize,
    /// Bridge ports it can take: endpoints beyond this are refused as `network_full`.
    pub ports_capacity: usize,
    /// Extension bridges it may have (see [`crate::plan::bridges`]).
    pub extensions: u8,
}

/// The engine. Cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<Store>,
    kernel: Kernel,
    fw: Arc<dyn Firewall>,
    /// Network create/delete take it for writing, endpoint operations for reading.
    topology: RwLock<()>,
    /// Serialises operations on one endpoint key.
    key_locks: StdMutex<HashMap<EndpointKey, Arc<Mutex<()>>>>,
    started: Instant,
    /// Told about every recorded change (set once, see [`Engine::set_observer`]).
    observer: OnceLock<Arc<dyn Observer>>,
    /// Ports one bridge takes.
    port_capacity: usize,
    /// Extension bridges one network may have at most.
    max_extensions: u8,
    /// Serialises building extension bridges and their trunks, and their proxy entries.
    extension_lock: Mutex<()>,
    /// The extension bridges of each network this process has built or checked (and given
    /// their proxy entries), kept until the network goes.
    extensions: StdMutex<HashMap<NetworkName, std::collections::BTreeSet<u8>>>,
}

impl Engine {
    /// Opens the store, connects netlink, picks the firewall backend and installs its base.
    pub async fn new(cfg: &EngineConfig) -> Result<Self> {
        let dir = cfg.state_dir.clone();
        let store = blocking(move || Store::open(&dir)).await?;
        let nl = Netlink::connect().await?;
        let (pref, admin) = (cfg.firewall, cfg.admin_chains.clone());
        let fw: Arc<dyn Firewall> =
            Arc::from(blocking(move || firewall::detect(pref, admin)).await?);
        let f = fw.clone();
        blocking(move || f.ensure_base()).await?;
        let kernel = Kernel {
            links: Arc::new(nl),
            netns: Arc::new(NetnsEntry),
            sysctl: Arc::new(ProcSys),
        };
        Ok(Self::from_parts(store, kernel, fw))
    }

    /// An engine over the given store, kernel facilities and firewall (whose base is installed
    /// already).
    pub fn from_parts(store: Store, kernel: Kernel, fw: Arc<dyn Firewall>) -> Self {
        Engine {
            store: Arc::new(store),
            kernel,
            fw,
            topology: RwLock::new(()),
            key_locks: StdMutex::new(HashMap::new()),
            started: Instant::now(),
            observer: OnceLock::new(),
            port_capacity: crate::netlink::BRIDGE_MAX_PORTS,
            max_extensions: crate::naming::MAX_EXTENSIONS,
            extension_lock: Mutex::new(()),
            extensions: StdMutex::new(HashMap::new()),
        }
    }

    /// Ports one bridge takes ([`crate::netlink::BRIDGE_MAX_PORTS`]).
    pub fn port_capacity(&self) -> usize {
        self.port_capacity
    }

    /// How a network's endpoints are spread over its bridges; its `total()` is the most
    /// endpoints it takes.
    pub fn bridge_layout(&self, spec: &NetworkSpec) -> BridgeLayout {
        BridgeLayout::of(spec, self.port_capacity, self.max_extensions)
    }

    /// A network has at most `n` extension bridges (0: one bridge per network; at most
    /// [`crate::naming::MAX_EXTENSIONS`]).
    pub fn with_max_extensions(mut self, n: u8) -> Self {
        self.max_extensions = n.min(crate::naming::MAX_EXTENSIONS);
        self
    }

    /// Bridges take at most `ports` ports (clamped to 2..=[`crate::netlink::BRIDGE_MAX_PORTS`]):
    /// room left for links of an admin's own, small bridges in tests.
    pub fn with_port_capacity(mut self, ports: usize) -> Self {
        self.port_capacity = ports.clamp(2, crate::netlink::BRIDGE_MAX_PORTS);
        self
    }

    /// Installs the observer (once; a second call is refused with `false`) and tells it about
    /// every recorded network and endpoint. Changes made meanwhile wait for the replay, so none
    /// is missed or told twice out of order.
    pub async fn set_observer(&self, observer: Arc<dyn Observer>) -> Result<bool> {
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

    /// The observer, once installed.
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
        let (nets, eps) = self
            .store(|s| Ok((s.networks()?, s.endpoints(None)?)))
            .await?;
        let mut per: std::collections::BTreeMap<&NetworkName, usize> =
            nets.iter().map(|n| (&n.name, 0)).collect();
        for e in &eps {
            if let Some(c) = per.get_mut(&e.key.network) {
                *c += 1;
            }
        }
        let capacity = nets
            .iter()
            .map(|spec| {
                let c = per.get(&spec.name).copied().unwrap_or(0);
                let layout = self.bridge_layout(spec);
                NetworkCapacity {
                    network: spec.name.clone(),
                    endpoints: c,
                    ports_used: c,
                    ports_capacity: layout.total(),
                    extensions: layout.extensions,
                }
            })
            .collect();
        Ok(Status {
            firewall: self.fw.kind(),
            networks: nets.len(),
            endpoints: eps.len(),
            uptime_seconds: self.started.elapsed().as_secs(),
            store: self.store.health(),
            capacity,
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

    fn key_lock(&self, key: &EndpointKey) -> Arc<Mutex<()>> {
        let mut map = self.key_locks.lock().expect("key lock map poisoned");
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(key.clone()).or_default().clone()
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
