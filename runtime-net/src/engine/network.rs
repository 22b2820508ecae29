//! Networks on the engine: create (record, then build; undone when building fails), ensure,
//! apply (idempotent; repairs drift), restore a bridge that vanished, delete.

use std::collections::HashMap;

use std::net::IpAddr;

use futures::StreamExt;
use ipnetwork::IpNetwork;

use super::{collect, Engine, EngineError, Result};
use crate::firewall::NetworkRules;
use crate::naming;
use crate::netlink::BridgeConfig;
use crate::plan::{self, endpoint::bridge_port, NetworkRequest};
use crate::types::{NetworkName, NetworkSpec};

pub(super) fn network_rules(spec: &NetworkSpec) -> NetworkRules {
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

    /// Makes the kernel match a recorded network (idempotent; repairs drift): bridge, sysctls,
    /// firewall rules.
    pub(super) async fn apply_network(&self, spec: &NetworkSpec) -> Result<()> {
        self.kernel
            .links
            .ensure_bridge(&bridge_config(spec))
            .await?;
        let sysctl = &self.kernel.sysctl;
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
        let rules = network_rules(spec);
        self.fw(move |fw| fw.apply_network(&rules)).await?;
        Ok(())
    }

    /// Re-applies a network whose bridge vanished and puts its endpoints' host ends back on the
    /// new bridge. The executor of the plans' `RestoreNetwork` step and of [`Self::repair_bridge`].
    pub(super) async fn restore_network(&self, spec: &NetworkSpec) -> Result<()> {
        tracing::warn!(network = %spec.name, bridge = %spec.bridge, "bridge was deleted behind shimnet's back; re-creating it");
        self.apply_network(spec).await?;
        let bridge = self.kernel.links.link(spec.bridge.as_str()).await?;
        let n = spec.name.clone();
        let bridge_index = bridge.as_ref().map(|b| b.index);
        let records = self.store(move |s| s.endpoints(Some(&n))).await?;
        // One dump says which host ends are there and where (not one request per endpoint).
        let masters: HashMap<String, Option<u32>> = self
            .kernel
            .links
            .owned_links()
            .await?
            .into_iter()
            .map(|l| (l.name, l.master))
            .collect();
        let cut_off = records.into_iter().filter(|rec| {
            masters
                .get(rec.host_ifname.as_str())
                .is_some_and(|m| m.is_none() || *m != bridge_index)
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

    /// Re-creates a network's bridge if it is missing (and puts its endpoints back on it);
    /// returns whether it had to. Called when something outside shimnet deletes a bridge.
    pub async fn repair_bridge(&self, name: &NetworkName) -> Result<bool> {
        let _r = self.topology.read().await;
        let spec = self.network(name).await?;
        if self
            .kernel
            .links
            .link(spec.bridge.as_str())
            .await?
            .is_some()
        {
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
        if let Err(e) = self.kernel.links.delete_link(spec.bridge.as_str()).await {
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
}
