//! Docker (libnetwork remote driver) endpoints and IPAM pools on the engine.
//!
//! libnetwork moves the container end of a veth into the sandbox itself, so Docker endpoints are
//! *prepared*: CreateEndpoint allocates and records the endpoint and builds the pair in the
//! daemon's namespace (container end under [`naming::peer_temp_name`], MAC and MTU set, host end
//! on the bridge); Join records the sandbox path (for reconciliation) and hands the temporary
//! name to libnetwork; ProgramExternalConnectivity publishes ports; DeleteEndpoint is the
//! ordinary [`Engine::detach`]. Docker's IPAM calls map onto the store's generic pools.

pub mod chains;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use super::{ports_clash, EngineError, Result};
use crate::engine::Engine;
use crate::ipam::Pool;
use crate::naming;
use crate::plan::FieldError;
use crate::store::AllocRequest;
use crate::types::{
    ContainerId, EndpointKey, EndpointRecord, IfName, MacAddr, NetworkName, PortMapping, Protocol,
};

/// Interface name prefix libnetwork gives the container end (`DstPrefix`); also the `ifname` of
/// Docker endpoint keys.
pub const DOCKER_IFNAME: &str = "eth";

/// Namespace recorded for a prepared endpoint until Join names the sandbox.
pub const UNJOINED_NETNS: &str = "/proc/self/ns/net";

/// Serialises port choice so two endpoints cannot pick the same host port at once.
static PORT_CHOICE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// CreateEndpoint, as the engine sees it.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    /// Network.
    pub network: NetworkName,
    /// Docker's endpoint id.
    pub endpoint_id: ContainerId,
    /// Address chosen by Docker's IPAM.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address chosen by Docker's IPAM.
    pub ipv6: Option<Ipv6Addr>,
    /// MAC Docker wants.
    pub mac: Option<MacAddr>,
}

/// A published port whose host port may be any one of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortWish {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address (`None` = all).
    pub host_ip: Option<IpAddr>,
    /// Acceptable host ports; the first free one is taken.
    pub host_ports: RangeInclusive<u16>,
    /// Container port.
    pub container_port: u16,
}

/// The key of a Docker endpoint.
pub fn docker_key(network: &NetworkName, endpoint: &ContainerId) -> EndpointKey {
    EndpointKey {
        network: network.clone(),
        container_id: endpoint.clone(),
        ifname: IfName::new(DOCKER_IFNAME).expect("valid name"),
    }
}

/// Chooses a host port for every wish, avoiding `taken` and each other (pure).
pub fn choose_ports(wishes: &[PortWish], taken: &[PortMapping]) -> Result<Vec<PortMapping>> {
    let mut chosen: Vec<PortMapping> = Vec::new();
    for w in wishes {
        let pick = w.host_ports.clone().find_map(|p| {
            let m = PortMapping {
                protocol: w.protocol,
                host_ip: w.host_ip,
                host_port: p,
                container_port: w.container_port,
            };
            let clash = taken
                .iter()
                .chain(chosen.iter())
                .any(|t| ports_clash(&m, t));
            (!clash).then_some(m)
        });
        match pick {
            Some(m) => chosen.push(m),
            None => {
                return Err(EngineError::Conflict(format!(
                    "ports: no free host port in {}-{}/{} for container port {}",
                    w.host_ports.start(),
                    w.host_ports.end(),
                    w.protocol,
                    w.container_port
                )))
            }
        }
    }
    Ok(chosen)
}

impl Engine {
    /// CreateEndpoint: allocates (Docker's addresses as static requests) and records the
    /// endpoint, then builds the prepared pair. Returns the record and the temporary name of the
    /// container end. Idempotent per endpoint.
    pub async fn prepare_endpoint(&self, req: PrepareRequest) -> Result<(EndpointRecord, IfName)> {
        let _r = self.topology.read().await;
        let key = docker_key(&req.network, &req.endpoint_id);
        let lock = self.key_lock(&key);
        let _k = lock.lock().await;
        let spec = self.network(&req.network).await?;
        let host_ifname = naming::host_veth_name(&key);
        let peer = naming::peer_temp_name(&host_ifname);
        let alloc = AllocRequest {
            key: key.clone(),
            netns: PathBuf::from(UNJOINED_NETNS),
            host_ifname,
            ipv4: req.ipv4,
            ipv6: req.ipv6.filter(|_| spec.subnet6.is_some()),
            mac: req.mac,
            ports: Vec::new(),
            // dockerd resolves its containers' names itself (its embedded DNS).
            names: Vec::new(),
        };
        let (rec, _created) = self.store(move |s| s.allocate_endpoint(&alloc)).await?;
        if req.ipv4.is_some_and(|ip| ip != rec.ipv4.ip()) {
            return Err(EngineError::Conflict(format!(
                "endpoint {key} already exists with address {}",
                rec.ipv4.ip()
            )));
        }
        if !self.nl.link_exists(&spec.bridge).await? {
            tracing::warn!(network = %spec.name, bridge = %spec.bridge, "bridge was deleted behind shimnet's back; re-creating it");
            self.apply_network(&spec).await?;
        }
        let cfg = Self::veth_config(&spec, &rec);
        if let Err(e) = self.nl.prepare_veth(&cfg, &peer).await {
            let k = key.clone();
            let released = self.store(move |s| s.release_endpoint(&k)).await;
            return Err(match released {
                Ok(_) => e.into(),
                Err(s) => EngineError::Many(vec![e.into(), s]),
            });
        }
        tracing::debug!(endpoint = %key, ip = %rec.ipv4, "docker endpoint prepared");
        Ok((rec, peer))
    }

    /// Re-applies a network whose bridge has vanished (dockerd `--bridge=none` deletes any link
    /// called `docker0` when it starts) and puts its endpoints' host ends back on it; a no-op
    /// when the bridge exists. Returns whether it had to repair.
    pub async fn ensure_bridge_present(&self, name: &NetworkName) -> Result<bool> {
        let spec = self.network(name).await?;
        if !self.nl.link_exists(&spec.bridge).await? {
            tracing::warn!(network = %name, bridge = %spec.bridge, "bridge was deleted behind shimnet's back; re-creating it");
            self.apply_network(&spec).await?;
            let n = name.clone();
            for rec in self.store(move |s| s.endpoints(Some(&n))).await? {
                self.nl
                    .reattach_host_end(&Self::veth_config(&spec, &rec))
                    .await?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Join: records the sandbox path; rebuilds the pair if the host end went missing. Returns
    /// the record and the name libnetwork must move into the sandbox.
    pub async fn join_endpoint(
        &self,
        key: &EndpointKey,
        sandbox: &Path,
    ) -> Result<(EndpointRecord, IfName)> {
        let _r = self.topology.read().await;
        let lock = self.key_lock(key);
        let _k = lock.lock().await;
        let spec = self.network(&key.network).await?;
        let mut rec = self.endpoint(key).await?;
        let peer = naming::peer_temp_name(&rec.host_ifname);
        let cfg = Self::veth_config(&spec, &rec);
        if !self.nl.check_prepared(&cfg).await?.is_empty() {
            self.nl.prepare_veth(&cfg, &peer).await?;
        }
        if rec.netns != sandbox {
            rec.netns = sandbox.to_path_buf();
            let r = rec.clone();
            self.store(move |s| s.update_endpoint(&r)).await?;
        }
        Ok((rec, peer))
    }

    /// ProgramExternalConnectivity: publishes `wishes` (replacing what the endpoint published
    /// before), each on the first free host port of its range. Returns the chosen mappings.
    pub async fn publish_ports(
        &self,
        key: &EndpointKey,
        wishes: &[PortWish],
    ) -> Result<Vec<PortMapping>> {
        let _r = self.topology.read().await;
        let lock = self.key_lock(key);
        let _k = lock.lock().await;
        let _p = PORT_CHOICE.lock().await;
        let spec = self.network(&key.network).await?;
        let mut rec = self.endpoint(key).await?;
        if wishes.is_empty() && rec.ports.is_empty() {
            return Ok(Vec::new());
        }
        if !rec.ports.is_empty() {
            let old = Self::port_rules(&spec, &rec);
            self.fw(move |fw| fw.remove_ports(&old)).await?;
        }
        let all = self.store(|s| s.endpoints(None)).await?;
        let taken: Vec<PortMapping> = all
            .iter()
            .filter(|e| &e.key != key)
            .flat_map(|e| e.ports.iter().copied())
            .collect();
        let chosen = match choose_ports(wishes, &taken) {
            Ok(c) => c,
            Err(e) => {
                rec.ports.clear();
                let r = rec.clone();
                self.store(move |s| s.update_endpoint(&r)).await?;
                return Err(e);
            }
        };
        rec.ports = chosen.clone();
        let r = rec.clone();
        self.store(move |s| s.update_endpoint(&r)).await?;
        if let Err(e) = self.install_ports(&spec, &rec).await {
            rec.ports.clear();
            let r = rec.clone();
            let _ = self.store(move |s| s.update_endpoint(&r)).await;
            return Err(e);
        }
        Ok(chosen)
    }

    /// RevokeExternalConnectivity: removes exactly the ports the endpoint published.
    pub async fn unpublish_ports(&self, key: &EndpointKey) -> Result<()> {
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
        let rules = Self::port_rules(&spec, &rec);
        self.fw(move |fw| fw.remove_ports(&rules)).await?;
        rec.ports.clear();
        self.store(move |s| s.update_endpoint(&rec)).await
    }

    /// Docker endpoints whose sandbox path this daemon cannot see (e.g. dockerd runs in another
    /// mount namespace) but that are still in use: the host veth exists and its container end
    /// is not back in the daemon's namespace (libnetwork moves it back on Leave). When the
    /// sandbox dies the kernel deletes the pair, so a live host veth means a live sandbox.
    pub(crate) async fn docker_endpoints_alive(
        &self,
        endpoints: &[EndpointRecord],
    ) -> std::collections::HashSet<EndpointKey> {
        let mut alive = std::collections::HashSet::new();
        for ep in endpoints
            .iter()
            .filter(|e| e.key.ifname.as_str() == DOCKER_IFNAME)
        {
            if super::reconcile::netns_alive(&ep.netns) {
                continue;
            }
            let peer = naming::peer_temp_name(&ep.host_ifname);
            let host = self.nl.link_exists(&ep.host_ifname).await.unwrap_or(false);
            let peer_here = self.nl.link_exists(&peer).await.unwrap_or(true);
            if host && !peer_here {
                alive.insert(ep.key.clone());
            }
        }
        alive
    }

    /// docker0-compatible mode: docker's `DOCKER-USER`/`DOCKER` chains, the jump to
    /// `DOCKER-USER` first in `FORWARD` (IPv4, and IPv6 where ip6tables works). Call after
    /// networks are created: shimnet's own FORWARD jump is inserted at the top too.
    pub async fn ensure_docker_chains(&self) -> Result<()> {
        let r = tokio::task::spawn_blocking(|| {
            chains::ensure(false)?;
            if iptables::new(true).is_ok() {
                // IPv6 is best effort: ip6tables may lack the nat table here.
                if let Err(e) = chains::ensure(true) {
                    tracing::debug!("ip6tables DOCKER-USER: {e}");
                }
            }
            Ok::<(), String>(())
        })
        .await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(EngineError::Firewall(
                crate::firewall::FirewallError::Backend {
                    backend: crate::firewall::BackendKind::Iptables,
                    op: "docker chain layout".into(),
                    msg: e,
                },
            )),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Subnets in use by networks and pools (for choosing a free pool).
    pub async fn taken_subnets(&self) -> Result<Vec<IpNetwork>> {
        self.store(|s| {
            let mut out: Vec<IpNetwork> = Vec::new();
            for n in s.networks()? {
                out.push(IpNetwork::V4(n.subnet));
                out.extend(n.subnet6.map(IpNetwork::V6));
            }
            out.extend(s.pools()?.into_iter().map(|(_, p)| p.subnet));
            Ok(out)
        })
        .await
    }

    /// RequestPool: records `pool` under `id`, refusing one that overlaps another pool.
    pub async fn create_pool(&self, id: &str, pool: Pool) -> Result<()> {
        let _w = self.topology.write().await;
        let pools = self.store(|s| s.pools()).await?;
        if let Some((other, _)) = pools
            .iter()
            .find(|(_, p)| crate::plan::overlaps(p.subnet, pool.subnet))
        {
            return Err(EngineError::Conflict(format!(
                "Pool: {} overlaps pool {other} already in use",
                pool.subnet
            )));
        }
        let id = id.to_string();
        self.store(move |s| s.create_pool(&id, &pool)).await
    }

    /// The pool recorded under `id`.
    pub async fn pool(&self, id: &str) -> Result<Pool> {
        let i = id.to_string();
        self.store(move |s| s.pool(&i))
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "pool",
                name: id.to_string(),
            })
    }

    /// ReleasePool: removes the pool and its allocations (`false` if there was none).
    pub async fn remove_pool(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        Ok(self.store(move |s| s.remove_pool(&id)).await?.is_some())
    }

    /// RequestAddress: `requested` or the next free address of pool `id`.
    pub async fn allocate_pool_address(
        &self,
        id: &str,
        owner: &str,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.store(move |s| s.allocate_address(&id, &owner, requested))
            .await
            .map_err(|e| match e {
                EngineError::Store(crate::store::StoreError::PoolIpam { pool, source }) => {
                    match source {
                        crate::ipam::IpamError::InUse(_) | crate::ipam::IpamError::Exhausted(_) => {
                            EngineError::Conflict(format!("pool {pool}: {source}"))
                        }
                        other => EngineError::Invalid(FieldError::new(
                            "Address",
                            format!("pool {pool}: {other}"),
                        )),
                    }
                }
                EngineError::Store(crate::store::StoreError::NoSuchPool(p)) => {
                    EngineError::NotFound {
                        what: "pool",
                        name: p,
                    }
                }
                other => other,
            })
    }

    /// ReleaseAddress (`false` if it was not allocated or the pool is gone).
    pub async fn release_pool_address(&self, id: &str, ip: IpAddr) -> Result<bool> {
        let id = id.to_string();
        match self.store(move |s| s.release_address(&id, ip)).await {
            Err(EngineError::Store(crate::store::StoreError::NoSuchPool(_))) => Ok(false),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wish(port: RangeInclusive<u16>) -> PortWish {
        PortWish {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_ports: port,
            container_port: 80,
        }
    }

    #[test]
    fn ports_take_the_first_free_one_of_a_range() {
        let taken = vec![PortMapping {
            protocol: Protocol::Tcp,
            host_ip: None,
            host_port: 8000,
            container_port: 1,
        }];
        let got = choose_ports(&[wish(8000..=8002), wish(8000..=8002)], &taken).unwrap();
        assert_eq!(got[0].host_port, 8001);
        assert_eq!(got[1].host_port, 8002);
        let e = choose_ports(&[wish(8000..=8000)], &taken).unwrap_err();
        assert!(e.to_string().contains("no free host port"), "{e}");
    }

    #[test]
    fn docker_keys_use_the_dst_prefix() {
        let k = docker_key(
            &NetworkName::new("n1").unwrap(),
            &ContainerId::new("e1").unwrap(),
        );
        assert_eq!(k.ifname.as_str(), DOCKER_IFNAME);
    }
}
