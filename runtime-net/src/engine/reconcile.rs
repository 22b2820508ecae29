//! Reconciliation: bringing the kernel in line with the records at start, on SIGHUP and
//! periodically (re-apply networks, reclaim endpoints whose namespace is gone, remove owned
//! objects nothing records, re-install published ports missing from the firewall).

use std::collections::HashMap;
use std::path::Path;

use super::{blocking, Engine, Result};
use crate::plan::{self, ReconcilePlan};
use crate::types::{IfName, NetworkSpec};

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
    /// Errors met on the way (reconciliation keeps going).
    pub errors: Vec<String>,
}

impl Engine {
    /// Brings the kernel in line with the records: re-applies every network, reclaims endpoints
    /// whose namespace is gone, removes owned objects nothing records. Keeps going past errors.
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
        let links = self.nl.owned_links().await?;
        let fw_nets = self.fw(|fw| fw.owned_networks()).await?;
        let fw_ports = self.fw(|fw| fw.owned_ports()).await?;
        let docker_alive = self.docker_endpoints_alive(&endpoints).await;
        let plan: ReconcilePlan =
            plan::plan_reconcile(&networks, &endpoints, &links, &fw_nets, &fw_ports, |ep| {
                netns_alive(&ep.netns) || docker_alive.contains(&ep.key)
            });
        for key in &plan.reclaim {
            match self.detach_locked(key).await {
                Ok(_) => report.reclaimed += 1,
                Err(e) => report.errors.push(format!("reclaim {key}: {e}")),
            }
        }
        for name in &plan.delete_links {
            match IfName::new(name) {
                Ok(n) => match self.nl.delete_link(&n).await {
                    Ok(_) => report.links_removed += 1,
                    Err(e) => report.errors.push(e.to_string()),
                },
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
        for key in &plan.reinstall_ports {
            let ep = endpoints.iter().find(|e| &e.key == key);
            if let Some((ep, spec)) =
                ep.and_then(|e| Some((e, by_name.get(e.key.network.as_str())?)))
            {
                if let Err(e) = self.install_ports(spec, ep).await {
                    report.errors.push(format!("ports of {}: {e}", ep.key));
                }
            }
        }
        Ok(report)
    }
}

/// True if a namespace path still exists and is a namespace (not a stale empty file).
pub(super) fn netns_alive(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_netns_is_not_alive() {
        assert!(!netns_alive(Path::new("/nonexistent/netns")));
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(!netns_alive(f.path()), "a plain file is not a namespace");
        assert!(netns_alive(Path::new("/proc/self/ns/net")));
    }
}
