//! Reconciliation: bringing the kernel in line with the records at start, on SIGHUP and
//! periodically (re-apply networks, reclaim endpoints that are gone, remove owned objects nothing
//! records, re-install published ports missing from the firewall). The decisions are the pure
//! functions of [`crate::plan`] ([`plan::endpoint_alive`], [`plan::keep_link`],
//! [`plan::plan_reconcile`]); this pass gathers what they need and carries out the result.

use std::collections::{HashMap, HashSet};

use super::{blocking, Engine, Result};
use crate::plan::{self, endpoint::container_end_name, ReconcilePlan};
use crate::types::{EndpointKey, EndpointKind, EndpointRecord, NetworkSpec};

/// What a reconciliation pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Networks re-applied.
    pub networks: usize,
    /// Endpoints reclaimed because their namespace is gone.
    pub reclaimed: usize,
    /// Owned links removed because nothing records them.
    pub links_removed: usize,
    /// Firewall networks removed.
    pub firewall_removed: usize,
    /// Endpoints' host ends put back on their bridge (a bridge re-created by this pass, or a
    /// port cut off from outside).
    pub ports_reattached: usize,
    /// Errors met on the way (reconciliation keeps going).
    pub errors: Vec<String>,
}

impl Engine {
    /// Brings the kernel in line with the records: re-applies every network, reclaims endpoints
    /// that are gone, removes owned objects nothing records. Keeps going past errors.
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let _w = self.topology.write().await;
        let mut report = ReconcileReport::default();
        let fw = self.fw.clone();
        if let Err(e) = blocking(move || fw.ensure_base()).await {
            report.errors.push(e.to_string());
        }
        let networks = self.store(|s| s.networks()).await?;
        for spec in &networks {
            match self.apply_network(spec).await {
                Ok(()) => report.networks += 1,
                Err(e) => report.errors.push(format!("network {}: {e}", spec.name)),
            }
        }
        let endpoints = self.store(|s| s.endpoints(None)).await?;
        // Extension bridges (and their trunks) the records put endpoints on.
        let mut in_use: HashMap<&str, std::collections::BTreeSet<u8>> = HashMap::new();
        for e in &endpoints {
            if let Some(i) = e.extension {
                in_use.entry(e.key.network.as_str()).or_default().insert(i);
            }
        }
        for spec in &networks {
            for &i in in_use.get(spec.name.as_str()).into_iter().flatten() {
                if let Err(e) = self.ensure_extension(spec, i).await {
                    report
                        .errors
                        .push(format!("network {} extension {i}: {e}", spec.name));
                }
            }
        }
        let links = self.kernel.links.owned_links().await?;
        let fw_nets = self.fw(|fw| fw.owned_networks()).await?;
        let fw_ports = self.fw(|fw| fw.owned_ports()).await?;
        let alive = self.alive_endpoints(&endpoints).await;
        let plan: ReconcilePlan =
            plan::plan_reconcile(&networks, &endpoints, &links, &fw_nets, &fw_ports, |ep| {
                alive.contains(&ep.key)
            });
        for key in &plan.reclaim {
            match self.detach_locked(key).await {
                Ok(_) => report.reclaimed += 1,
                Err(e) => report.errors.push(format!("reclaim {key}: {e}")),
            }
        }
        for name in &plan.delete_links {
            match self.kernel.links.delete_link(name).await {
                Ok(_) => report.links_removed += 1,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for n in plan.delete_fw_networks {
            match self.fw(move |fw| fw.remove_network(&n)).await {
                Ok(()) => report.firewall_removed += 1,
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for id in plan.purge_ports {
            if let Err(e) = self.fw(move |fw| fw.purge_ports(&id)).await {
                report.errors.push(e.to_string());
            }
        }
        let by_name: HashMap<&str, &NetworkSpec> =
            networks.iter().map(|n| (n.name.as_str(), n)).collect();
        let by_key: HashMap<&EndpointKey, &EndpointRecord> =
            endpoints.iter().map(|e| (&e.key, e)).collect();
        // A planned endpoint with its network's spec.
        let with_spec = |key: &EndpointKey| {
            let ep = *by_key.get(key)?;
            Some((ep, *by_name.get(ep.key.network.as_str())?))
        };
        for (ep, spec) in plan.reattach_ports.iter().filter_map(with_spec) {
            let port = plan::endpoint::bridge_port(spec, ep, true);
            match self.kernel.links.configure_port(&port).await {
                Ok(()) => report.ports_reattached += 1,
                Err(e) => report.errors.push(format!("port of {}: {e}", ep.key)),
            }
        }
        for (ep, spec) in plan.reinstall_ports.iter().filter_map(with_spec) {
            let rules = plan::endpoint::port_rules(spec, ep);
            if let Err(e) = self.fw(move |fw| fw.add_ports(&rules)).await {
                report.errors.push(format!("ports of {}: {e}", ep.key));
            }
        }
        Ok(report)
    }

    /// The endpoints still in use ([`plan::endpoint_alive`] over what the kernel shows). A
    /// prepared endpoint whose namespace the daemon cannot see is looked at through its links.
    async fn alive_endpoints(&self, endpoints: &[EndpointRecord]) -> HashSet<EndpointKey> {
        let mut alive = HashSet::new();
        for ep in endpoints {
            let netns_alive = self.kernel.netns.alive(&ep.netns);
            let (host, here) = if netns_alive || ep.kind != EndpointKind::Prepared {
                (false, false)
            } else {
                let links = &self.kernel.links;
                let peer = container_end_name(ep);
                let (host, peer) = futures::join!(
                    links.link(ep.host_ifname.as_str()),
                    links.link(peer.as_str())
                );
                (
                    host.map(|l| l.is_some()).unwrap_or(false),
                    peer.map(|l| l.is_some()).unwrap_or(true),
                )
            };
            if plan::endpoint_alive(ep, netns_alive, host, here) {
                alive.insert(ep.key.clone());
            }
        }
        alive
    }
}
