//! Networks on the engine: create (record, then build; undone when building fails), ensure,
//! apply (idempotent; repairs drift), restore a bridge that vanished, delete.

use std::collections::{BTreeSet, HashMap};

use std::net::IpAddr;

use futures::StreamExt;
use ipnetwork::IpNetwork;

use super::{collect, Engine, EngineError, Result};
use crate::firewall::NetworkRules;
use crate::kernel::{BridgePort, PairSpec};
use crate::naming;
use crate::netlink::BridgeConfig;
use crate::plan::bridges::endpoint_bridge;
use crate::plan::{self, endpoint::bridge_port, proxy, NetworkRequest};
use crate::types::{EndpointRecord, IfName, MacAddr, NetworkName, NetworkSpec};

/// The firewall state of a network whose layout allows `extensions` extension bridges.
pub(super) fn network_rules(spec: &NetworkSpec, extensions: u8) -> NetworkRules {
    NetworkRules {
        name: spec.name.clone(),
        bridge: spec.bridge.clone(),
        extensions: (1..=extensions)
            .map(|i| naming::extension_bridge_name(&spec.name, i))
            .collect(),
        subnet4: spec.subnet,
        subnet6: spec.subnet6,
        masquerade: spec.masquerade,
        icc: spec.icc,
        internal: spec.internal,
        no_masquerade_to: spec.no_masquerade_to.clone(),
        allow_from: spec.allow_from.clone(),
    }
}

pub(super) fn bridge_config(spec: &NetworkSpec) -> BridgeConfig {
    let mut addrs = vec![
        IpNetwork::new(IpAddr::V4(spec.gateway), spec.subnet.prefix())
            .expect("prefix of a valid subnet"),
    ];
    if let (Some(s6), Some(g6)) = (spec.subnet6, spec.gateway6) {
        addrs.push(IpNetwork::new(IpAddr::V6(g6), s6.prefix()).expect("prefix of a valid subnet"));
    }
    BridgeConfig {
        name: spec.bridge.clone(),
        alias: naming::bridge_alias(&spec.name),
        mtu: spec.mtu,
        addrs,
    }
}

/// An extension bridge: no address, the network's MTU, its own owner alias.
pub(super) fn extension_config(spec: &NetworkSpec, index: u8) -> BridgeConfig {
    BridgeConfig {
        name: naming::extension_bridge_name(&spec.name, index),
        alias: naming::extension_alias(&spec.name, index),
        mtu: spec.mtu,
        addrs: Vec::new(),
    }
}

/// Port `name` of trunk `index` (0: the anchor) on `bridge`, every flag off.
fn trunk_port(spec: &NetworkSpec, index: u8, name: &IfName, bridge: &IfName) -> BridgePort {
    BridgePort {
        name: name.clone(),
        alias: naming::trunk_alias(&spec.name, index),
        hairpin: false,
        isolated: false,
        neigh_suppress: false,
        proxy_arp_wifi: false,
        enslave: Some(bridge.clone()),
    }
}

/// A stable, locally administered MAC for a trunk's extension end, from its name.
fn trunk_mac(name: &str) -> MacAddr {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("shimnet-trunk\0{name}").as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    MacAddr(mac)
}

/// The extensions the records put endpoints on.
pub(super) fn extensions_in_use(records: &[EndpointRecord]) -> BTreeSet<u8> {
    records.iter().filter_map(|r| r.extension).collect()
}

impl Engine {
    /// Validates, records and builds a new network.
    pub async fn create_network(&self, req: NetworkRequest) -> Result<NetworkSpec> {
        let spec = plan::build_spec(req)?;
        let _w = self.topology.write().await;
        let existing = self.networks().await?;
        plan::check_clash(&spec, &existing).map_err(|c| EngineError::Conflict(c.to_string()))?;
        plan::check_host_overlap(&spec, &self.kernel.links.host_addresses().await?)
            .map_err(|f| EngineError::Conflict(f.to_string()))?;
        if let Some(link) = self.kernel.links.link(spec.bridge.as_str()).await? {
            if link.alias.as_deref() != Some(naming::bridge_alias(&spec.name).as_str()) {
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
    /// subnet and bridge (used for declared networks and configurations that ensure theirs).
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

    /// Makes the kernel match a recorded network (idempotent; repairs drift): bridge, sysctls
    /// (IPv6 off on the bridge of an IPv4-only network), firewall rules.
    pub(super) async fn apply_network(&self, spec: &NetworkSpec) -> Result<()> {
        self.kernel
            .links
            .ensure_bridge(&bridge_config(spec))
            .await?;
        let sysctl = &self.kernel.sysctl;
        if spec.subnet6.is_none() {
            // The gateway of an IPv4-only network has no IPv6 role; left on, the bridge sends
            // router solicitations (backing off, for ever) and listener reports, flooded to
            // every container and through every trunk.
            sysctl.set(&format!("net/ipv6/conf/{}/disable_ipv6", spec.bridge), "1")?;
        }
        if !spec.internal {
            sysctl.set("net/ipv4/ip_forward", "1")?;
            if spec.subnet6.is_some() {
                sysctl.set("net/ipv6/conf/all/forwarding", "1")?;
            }
        }
        // Lets the host reach published ports through 127.0.0.1 (DNAT to the bridge).
        sysctl.set(
            &format!("net/ipv4/conf/{}/route_localnet", spec.bridge),
            "1",
        )?;
        let rules = network_rules(spec, self.bridge_layout(spec).extensions);
        self.fw(move |fw| fw.apply_network(&rules)).await?;
        Ok(())
    }

    /// Re-applies a network whose bridge vanished, builds the extension bridges its records
    /// use, and puts its endpoints' host ends back on their bridges. The executor of the plans'
    /// `RestoreNetwork` step and of [`Self::repair_bridge`].
    pub(super) async fn restore_network(&self, spec: &NetworkSpec) -> Result<()> {
        tracing::warn!(network = %spec.name, bridge = %spec.bridge, "bridge was deleted behind shimnet's back; re-creating it");
        self.apply_network(spec).await?;
        let n = spec.name.clone();
        let records = self.store(move |s| s.endpoints(Some(&n))).await?;
        for i in extensions_in_use(&records) {
            self.ensure_extension(spec, i).await?;
        }
        self.reattach_cut_off(spec, records).await
    }

    /// Puts the host ends of `records` that are not on their bridge (main or extension) back on
    /// it. One dump says which host ends are there and where (not one request per endpoint).
    pub(super) async fn reattach_cut_off(
        &self,
        spec: &NetworkSpec,
        records: Vec<EndpointRecord>,
    ) -> Result<()> {
        let links = self.kernel.links.owned_links().await?;
        let mut bridges: HashMap<String, Option<u32>> = HashMap::new();
        for b in std::iter::once(spec.bridge.clone()).chain(
            extensions_in_use(&records)
                .into_iter()
                .map(|i| naming::extension_bridge_name(&spec.name, i)),
        ) {
            let index = self.kernel.links.link(b.as_str()).await?.map(|l| l.index);
            bridges.insert(b.to_string(), index);
        }
        let masters: HashMap<String, Option<u32>> =
            links.into_iter().map(|l| (l.name, l.master)).collect();
        let cut_off = records.into_iter().filter(|rec| {
            let want = bridges
                .get(endpoint_bridge(spec, rec).as_str())
                .copied()
                .flatten();
            masters
                .get(rec.host_ifname.as_str())
                .is_some_and(|m| m.is_none() || *m != want)
        });
        // Many ports at once: a thousand one after the other take seconds.
        let errors: Vec<EngineError> = futures::stream::iter(cut_off)
            .map(|rec| async move {
                self.kernel
                    .links
                    .configure_port(&bridge_port(spec, &rec, true))
                    .await
            })
            .buffer_unordered(64)
            .filter_map(|r| async move { r.err().map(EngineError::from) })
            .collect()
            .await;
        collect(errors)
    }

    /// Makes extension bridge `index` of a network and its trunk to the main bridge (which must
    /// exist) match what they should be: bridge (no address, the network's MTU, IPv6 off,
    /// multicast snooping off), the veth trunk with one end on each bridge, both up, the main
    /// end isolated when the network has icc off. Idempotent; `Ok(true)` when something had to
    /// change. The executor of the plans' `EnsureExtension` step and of the extension repairs.
    pub(super) async fn ensure_extension(&self, spec: &NetworkSpec, index: u8) -> Result<bool> {
        let _one = self.extension_lock.lock().await;
        let links = &self.kernel.links;
        let cfg = extension_config(spec, index);
        let ext = cfg.name.clone();
        let (ext_index, mut changed) = links.ensure_bridge(&cfg).await?;
        self.write_sysctl(&format!("net/ipv6/conf/{ext}/disable_ipv6"), "1")?;
        let Some(main) = links.link(spec.bridge.as_str()).await? else {
            return Err(EngineError::Netlink(
                crate::netlink::NetlinkError::Request {
                    op: "join extension bridge",
                    object: ext.to_string(),
                    msg: format!("main bridge {} missing", spec.bridge),
                },
            ));
        };
        let (to_main, to_ext) = naming::trunk_names(&spec.name, index);
        let (m, x) = futures::join!(links.link(to_main.as_str()), links.link(to_ext.as_str()));
        let (m, x) = (m?, x?);
        let alias = naming::trunk_alias(&spec.name, index);
        let settled = |l: &Option<crate::netlink::LinkInfo>, master: u32| {
            l.as_ref().is_some_and(|l| {
                l.master == Some(master) && l.up && l.alias.as_deref() == Some(alias.as_str())
            })
        };
        // The first time this process sees the extension (a restart, an upgrade) its trunk's
        // port flags and the proxy entries are put in place even if the links look settled.
        let first = !self.extensions_of(&spec.name).contains(&index);
        changed |= self.ensure_anchor(spec, main.index, first).await?;
        if settled(&m, main.index) && settled(&x, ext_index) {
            if first {
                self.trunk_ports(spec, index).await?;
            }
            if changed || first {
                self.fill_proxy(spec, index).await?;
            }
            return Ok(changed);
        }
        changed = true;
        if m.is_none() || x.is_none() {
            // Half a trunk cannot be mended: delete what is left and build it anew.
            for (l, name) in [(&m, &to_main), (&x, &to_ext)] {
                if l.is_some() {
                    links.delete_link(name.as_str()).await?;
                }
            }
            self.create_trunk_pair(spec, main.index, &to_main, &to_ext)
                .await?;
        }
        self.trunk_ports(spec, index).await?;
        self.fill_proxy(spec, index).await?;
        tracing::info!(network = %spec.name, bridge = %ext, "extension bridge in place");
        Ok(changed)
    }

    /// Creates a veth pair in this namespace, `on_main` a port of the main bridge, IPv6 off on
    /// both ends (a trunk, or the anchor).
    async fn create_trunk_pair(
        &self,
        spec: &NetworkSpec,
        main_index: u32,
        on_main: &IfName,
        other: &IfName,
    ) -> Result<()> {
        self.kernel
            .links
            .create_pair(&PairSpec {
                host: on_main.clone(),
                mtu: spec.mtu,
                bridge: spec.bridge.clone(),
                bridge_index: Some(main_index),
                peer: other.clone(),
                peer_mac: trunk_mac(other.as_str()),
                peer_netns: None,
            })
            .await?;
        for end in [on_main, other] {
            self.write_sysctl(&format!("net/ipv6/conf/{end}/disable_ipv6"), "1")?;
        }
        Ok(())
    }

    /// Makes the main bridge's anchor port (see [`naming::anchor_names`]) when it is missing or
    /// on no bridge, and sets its flags when it was made or `first`; `Ok(true)` when it had to
    /// be made. Its other end stays down, so the port never forwards.
    async fn ensure_anchor(
        &self,
        spec: &NetworkSpec,
        main_index: u32,
        first: bool,
    ) -> Result<bool> {
        let (anchor, peer) = naming::anchor_names(&spec.name);
        let links = &self.kernel.links;
        let now = links.link(anchor.as_str()).await?;
        let placed = now.as_ref().is_some_and(|l| l.master == Some(main_index));
        if placed && !first {
            return Ok(false);
        }
        if now.is_none() {
            self.create_trunk_pair(spec, main_index, &anchor, &peer)
                .await?;
        }
        let port = trunk_port(spec, 0, &anchor, &spec.bridge);
        links
            .configure_port(&BridgePort {
                neigh_suppress: true,
                ..port
            })
            .await?;
        Ok(!placed)
    }

    /// Enslaves both ends of extension `index`'s trunk and sets their port flags (see
    /// [`crate::plan::proxy`]): proxy ARP on the main end, ARP suppression on the extension's
    /// end; with icc off the main end is isolated like every container port, so no container
    /// reaches another across a trunk while each still reaches the gateway.
    async fn trunk_ports(&self, spec: &NetworkSpec, index: u8) -> Result<()> {
        let (to_main, to_ext) = naming::trunk_names(&spec.name, index);
        let ext = naming::extension_bridge_name(&spec.name, index);
        let links = &self.kernel.links;
        links
            .configure_port(&BridgePort {
                isolated: !spec.icc,
                proxy_arp_wifi: true,
                ..trunk_port(spec, index, &to_main, &spec.bridge)
            })
            .await?;
        links
            .configure_port(&BridgePort {
                neigh_suppress: true,
                ..trunk_port(spec, index, &to_ext, &ext)
            })
            .await?;
        Ok(())
    }

    /// Puts extension `index`'s proxy entries in place (from the records) and counts the
    /// extension as built. The caller holds the extension lock.
    async fn fill_proxy(&self, spec: &NetworkSpec, index: u8) -> Result<()> {
        let name = spec.name.clone();
        let records = self.store(move |s| s.endpoints(Some(&name))).await?;
        let gateway_mac = MacAddr(crate::netlink::bridge_mac(spec.bridge.as_str()));
        let entries = proxy::extension_entries(spec, index, &records, gateway_mac);
        self.kernel.links.set_proxy_entries(&entries).await?;
        self.extensions
            .lock()
            .expect("extensions lock")
            .entry(spec.name.clone())
            .or_default()
            .insert(index);
        tracing::debug!(network = %spec.name, index, entries = entries.len(), "proxy entries in place");
        Ok(())
    }

    /// The extensions of `network` this process has built or checked.
    pub(super) fn extensions_of(&self, network: &NetworkName) -> Vec<u8> {
        self.extensions
            .lock()
            .expect("extensions lock")
            .get(network)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Adds (`add`) or removes the entries that let a network's other bridges answer ARP for
    /// `rec`; nothing for a network without extensions. A failure is logged, not returned: the
    /// endpoint works without them, its address is then resolved by flooding as on one bridge.
    pub(super) async fn proxy_endpoint(&self, spec: &NetworkSpec, rec: &EndpointRecord, add: bool) {
        if rec.extension.is_none() && self.extensions_of(&spec.name).is_empty() {
            return;
        }
        // Under the lock: an extension being built now either lists this endpoint (recorded
        // before) or is listed here (built before).
        let _one = self.extension_lock.lock().await;
        let entries = proxy::endpoint_entries(spec, rec, &self.extensions_of(&spec.name));
        let links = &self.kernel.links;
        let done = if add {
            links.set_proxy_entries(&entries).await
        } else {
            links.del_proxy_entries(&entries).await
        };
        if let Err(e) = done {
            tracing::warn!(endpoint = %rec.key, error = %e, add, "proxy entries");
        }
    }

    /// The executor of `EnsureExtension`: the network restored first when its main bridge is
    /// missing (which builds every extension its records use), else the one extension.
    pub(super) async fn ensure_extension_step(&self, spec: &NetworkSpec, index: u8) -> Result<()> {
        if !self.main_bridge_present(spec).await? {
            return self.restore_network(spec).await;
        }
        self.ensure_extension(spec, index).await.map(drop)
    }

    /// Whether the network's main bridge (the one with the gateway) exists in the kernel.
    pub(super) async fn main_bridge_present(&self, spec: &NetworkSpec) -> Result<bool> {
        Ok(self
            .kernel
            .links
            .link(spec.bridge.as_str())
            .await?
            .is_some())
    }

    /// Re-creates a network's bridge if it is missing (and puts its endpoints back on it);
    /// returns whether it had to. Called when something outside shimnet deletes a bridge.
    pub async fn repair_bridge(&self, name: &NetworkName) -> Result<bool> {
        let _r = self.topology.read().await;
        let spec = self.network(name).await?;
        if self.main_bridge_present(&spec).await? {
            return Ok(false);
        }
        self.restore_network(&spec).await?;
        Ok(true)
    }

    /// Removes a network's kernel objects, continuing past failures.
    pub(super) async fn teardown_network(&self, spec: &NetworkSpec) -> Result<()> {
        let mut errors = Vec::new();
        let name = spec.name.clone();
        if let Err(e) = self.fw(move |fw| fw.remove_network(&name)).await {
            errors.push(e);
        }
        // Trunks and extensions first: every index a network may ever have had (a lowered cap
        // leaves the higher ones behind otherwise); deleting one end of a trunk deletes both.
        for i in 1..=naming::MAX_EXTENSIONS {
            let (to_main, _) = naming::trunk_names(&spec.name, i);
            let ext = naming::extension_bridge_name(&spec.name, i);
            for name in [to_main, ext] {
                if let Err(e) = self.kernel.links.delete_link(name.as_str()).await {
                    errors.push(e.into());
                }
            }
        }
        let (anchor, _) = naming::anchor_names(&spec.name);
        if let Err(e) = self.kernel.links.delete_link(anchor.as_str()).await {
            errors.push(e.into());
        }
        if let Err(e) = self.kernel.links.delete_link(spec.bridge.as_str()).await {
            errors.push(e.into());
        }
        // The proxy entries went with the links.
        self.extensions
            .lock()
            .expect("extensions lock")
            .remove(&spec.name);
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
}
