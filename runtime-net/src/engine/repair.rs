//! Targeted repair: one owned object compared with its record and put back when it differs,
//! called by the daemon's repair loop when a kernel notification says the object changed (the
//! reconcile pass is the same over everything). Each function compares first and changes
//! nothing when the object is in place, so the notifications a repair itself causes end in a
//! check that finds nothing (no loop). They only put back what a record asks for; removing what
//! nothing records stays with the full pass (an endpoint being attached is not recorded yet).

use std::collections::HashSet;

use super::network::{bridge_config, network_rules};
use super::{Engine, Result};
use crate::naming::{self, parse_alias, Owner};
use crate::netlink::LinkInfo;
use crate::plan::bridges::endpoint_bridge;
use crate::plan::endpoint::{bridge_port, port_rules};
use crate::types::{ContainerId, EndpointKey, EndpointKind, IfName, NetworkName, NetworkSpec};

/// The endpoint key an owner alias `shimnet:ep=<network>/<container>/<ifname>` names.
fn key_of_alias(alias: &str) -> Option<EndpointKey> {
    let Some(Owner::Endpoint(k)) = parse_alias(alias) else {
        return None;
    };
    parse_key(&k)
}

/// `<network>/<container>/<ifname>` as an endpoint key.
fn parse_key(k: &str) -> Option<EndpointKey> {
    let (network, rest) = k.split_once('/')?;
    let (container, ifname) = rest.rsplit_once('/')?;
    Some(EndpointKey {
        network: NetworkName::new(network).ok()?,
        container_id: ContainerId::new(container).ok()?,
        ifname: IfName::new(ifname).ok()?,
    })
}

impl Engine {
    /// Bridge names of the recorded networks: main bridges and every extension bridge each may
    /// have.
    pub async fn bridge_names(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for n in self.networks().await? {
            for i in 1..=self.bridge_layout(&n).extensions {
                out.insert(naming::extension_bridge_name(&n.name, i).to_string());
            }
            out.insert(n.bridge.to_string());
        }
        Ok(out)
    }

    /// The network whose main bridge (`None`) or extension bridge (`Some(i)`) is `bridge`.
    async fn network_of_bridge(&self, bridge: &str) -> Result<Option<(NetworkSpec, Option<u8>)>> {
        for n in self.networks().await? {
            if n.bridge.as_str() == bridge {
                return Ok(Some((n, None)));
            }
            let layout = self.bridge_layout(&n);
            if let Some(i) = (1..=layout.extensions)
                .find(|&i| naming::extension_bridge_name(&n.name, i).as_str() == bridge)
            {
                return Ok(Some((n, Some(i))));
            }
        }
        Ok(None)
    }

    /// The bridge called `bridge` and its gateway addresses: re-created with its endpoints put
    /// back on it when missing; alias, MTU, addresses and up state restored when they drifted.
    /// An extension bridge is checked with its trunk (rebuilt when it is missing or cut off),
    /// and re-created when missing only while endpoints are recorded on it.
    /// `Ok(true)` when something had to change; `Ok(false)` when in place or not a recorded
    /// network's bridge.
    pub async fn repair_bridge_link(&self, bridge: &str) -> Result<bool> {
        let _r = self.topology.read().await;
        let Some((spec, extension)) = self.network_of_bridge(bridge).await? else {
            return Ok(false);
        };
        let link = self.kernel.links.link(bridge).await?;
        if let Some(i) = extension {
            return self.repair_extension(&spec, i, link.is_some()).await;
        }
        let Some(link) = link else {
            self.restore_network(&spec).await?;
            return Ok(true);
        };
        if link.kind != crate::netlink::LinkKind::Bridge {
            return Ok(false);
        }
        // Compares alias, MTU, up state, addresses and their connected routes, and puts back
        // only what differs.
        let (_, changed) = self
            .kernel
            .links
            .ensure_bridge(&bridge_config(&spec))
            .await?;
        Ok(changed)
    }

    /// Extension `i` of `spec` and its trunk, after a notification about either.
    async fn repair_extension(&self, spec: &NetworkSpec, i: u8, present: bool) -> Result<bool> {
        let n = spec.name.clone();
        let records = self.store(move |s| s.endpoints(Some(&n))).await?;
        let mine: Vec<_> = records
            .into_iter()
            .filter(|r| r.extension == Some(i))
            .collect();
        if !present && mine.is_empty() {
            // An empty extension is made again when an endpoint needs it.
            return Ok(false);
        }
        if !self.main_bridge_present(spec).await? {
            // The main bridge's own repair rebuilds everything.
            return Ok(false);
        }
        let changed = self.ensure_extension(spec, i).await?;
        if !present {
            self.reattach_cut_off(spec, mine).await?;
        }
        Ok(changed || !present)
    }

    /// The endpoint whose host end is `ifname` (found through the owner alias on the link): put
    /// back on its bridge (and up) when it was cut off. A host end that is gone is left to the
    /// full pass.
    ///
    /// The host end is read once up front; only when that reading shows it cut off is it read
    /// again under the endpoint's lock before the repair (an attach may have been finishing).
    /// Called only when the port's notifications did not end with it in place (an attach's do,
    /// see [`crate::repair::links::LinkClassifier::port_in_place`]).
    pub async fn repair_port(&self, ifname: &str) -> Result<bool> {
        let _r = self.topology.read().await;
        let links = &self.kernel.links;
        let Some(first) = links.link(ifname).await? else {
            return Ok(false);
        };
        let Some(key) = first.alias.as_deref().and_then(key_of_alias) else {
            return Ok(false);
        };
        // An attach or detach of this endpoint may be under way: wait for it.
        let lock = self.key_lock(&key);
        let _k = lock.lock().await;
        let k = key.clone();
        let Some(rec) = self.store(move |s| s.endpoint(&k)).await? else {
            return Ok(false);
        };
        if rec.host_ifname.as_str() != ifname {
            return Ok(false);
        }
        let spec = self.network(&key.network).await?;
        let Some(bridge) = links.link(endpoint_bridge(&spec, &rec).as_str()).await? else {
            return Ok(false);
        };
        let in_place = |l: &LinkInfo| l.master == Some(bridge.index) && l.up;
        if in_place(&first) {
            return Ok(false);
        }
        match links.link(ifname).await? {
            Some(now) if !in_place(&now) => {}
            _ => return Ok(false),
        }
        links
            .configure_port(&bridge_port(&spec, &rec, true))
            .await?;
        Ok(true)
    }

    /// The endpoint named by `key` (as in an owner alias) after its host end was deleted: a
    /// managed endpoint whose namespace is still there gets its pair built again, as an attach
    /// retry would (same address, MAC, routes and published ports); `Ok(false)` when it is in
    /// place, detached, prepared (its runtime moves the container end itself) or its namespace
    /// is gone (reclaimed by the full pass).
    pub async fn repair_endpoint(&self, key: &str) -> Result<bool> {
        let _r = self.topology.read().await;
        let Some(key) = parse_key(key) else {
            return Ok(false);
        };
        // A detach in flight deleted the link itself: wait for it, then find no record.
        let lock = self.key_lock(&key);
        let _k = lock.lock().await;
        let k = key.clone();
        let Some(rec) = self.store(move |s| s.endpoint(&k)).await? else {
            return Ok(false);
        };
        if rec.kind != EndpointKind::Managed || !self.kernel.netns.alive(&rec.netns) {
            return Ok(false);
        }
        let spec = self.network(&key.network).await?;
        self.rebuild(&spec, &rec).await
    }

    /// The firewall: its base (tables, chains, the jumps into them and their order), every
    /// recorded network's rules (re-applied when missing or partly deleted) and every endpoint's
    /// published ports. `Ok(true)` when a network's rules or an endpoint's ports were missing or
    /// the base had drifted.
    pub async fn repair_firewall(&self) -> Result<bool> {
        let _r = self.topology.read().await;
        let networks = self.networks().await?;
        let endpoints = self.store(|s| s.endpoints(None)).await?;
        let want: Vec<_> = networks
            .iter()
            .map(|n| network_rules(n, self.bridge_layout(n).extensions))
            .collect();
        let drifted_nets: HashSet<NetworkName> = self
            .fw(move |fw| fw.drifted_networks(&want))
            .await?
            .into_iter()
            .collect();
        let have_ports: HashSet<IfName> =
            self.fw(|fw| fw.owned_ports()).await?.into_iter().collect();
        let drifted = !self.fw(|fw| fw.base_in_place()).await?;
        let mut changed = drifted;
        if drifted {
            self.fw(|fw| fw.ensure_base()).await?;
        }
        for spec in &networks {
            let missing = drifted_nets.contains(&spec.name);
            changed |= missing;
            if missing {
                let rules = network_rules(spec, self.bridge_layout(spec).extensions);
                self.fw(move |fw| fw.apply_network(&rules)).await?;
            }
        }
        for ep in &endpoints {
            if ep.ports.is_empty() || have_ports.contains(&ep.host_ifname) {
                continue;
            }
            let Some(spec) = networks.iter().find(|n| n.name == ep.key.network) else {
                continue;
            };
            // An attach or detach of this endpoint may be under way: wait for it, then act on
            // the record as it is (a detached endpoint's ports must not come back).
            let lock = self.key_lock(&ep.key);
            let _k = lock.lock().await;
            let k = ep.key.clone();
            let Some(now) = self.store(move |s| s.endpoint(&k)).await? else {
                continue;
            };
            if now.ports != ep.ports || now.host_ifname != ep.host_ifname {
                continue;
            }
            let rules = port_rules(spec, &now);
            self.fw(move |fw| fw.add_ports(&rules)).await?;
            changed = true;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keys_from_owner_aliases() {
        let k = key_of_alias("shimnet:ep=n1/c-1.x/eth0").unwrap();
        assert_eq!(k.to_string(), "n1/c-1.x/eth0");
        assert_eq!(
            key_of_alias(&crate::naming::veth_alias(&k)),
            Some(k.clone())
        );
        assert_eq!(key_of_alias("shimnet:net=n1"), None);
        assert_eq!(key_of_alias("shimnet:ep=n1"), None);
        assert_eq!(key_of_alias("other"), None);
    }
}
