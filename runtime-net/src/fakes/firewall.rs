//! The fake firewall: network rules and published ports by owner.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::firewall::{BackendKind, Firewall, FirewallError, NetworkRules, PortRules};
use crate::plan::ports::clash;
use crate::types::{IfName, NetworkName, PortMapping};

#[derive(Debug, Default)]
struct FirewallState {
    base: bool,
    networks: BTreeMap<NetworkName, NetworkRules>,
    ports: BTreeMap<IfName, Vec<PortMapping>>,
    journal: Vec<String>,
    fail: Vec<String>,
}

/// The fake firewall: network rules and published ports by owner, with the nftables backend's
/// refusal of a host port already published to another target.
#[derive(Debug, Default)]
pub struct FakeFirewall {
    state: Mutex<FirewallState>,
}

impl FakeFirewall {
    /// An empty firewall.
    pub fn new() -> Arc<Self> {
        Arc::new(FakeFirewall::default())
    }

    fn st(&self) -> std::sync::MutexGuard<'_, FirewallState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next call of `op` fails (`ensure_base`, `apply_network`, `remove_network`,
    /// `add_ports`, `remove_ports`, `purge_ports`).
    pub fn fail(&self, op: &str) {
        self.st().fail.push(op.to_string());
    }

    /// Published ports by owner.
    pub fn ports(&self) -> BTreeMap<IfName, Vec<PortMapping>> {
        self.st().ports.clone()
    }

    /// Networks with rules.
    pub fn networks(&self) -> Vec<NetworkName> {
        self.st().networks.keys().cloned().collect()
    }

    /// Every change asked for so far.
    pub fn journal(&self) -> Vec<String> {
        self.st().journal.clone()
    }

    /// Someone flushes a network's rules from outside.
    pub fn drop_network_behind_back(&self, name: &NetworkName) {
        self.st().networks.remove(name);
    }

    /// Someone deletes the whole table from outside (base, networks and ports).
    pub fn flush_behind_back(&self) {
        let mut st = self.st();
        st.base = false;
        st.networks.clear();
        st.ports.clear();
    }

    /// Someone flushes an owner's ports from outside.
    pub fn drop_ports_behind_back(&self, id: &IfName) {
        self.st().ports.remove(id);
    }

    fn check(&self, st: &mut FirewallState, op: &str) -> Result<(), FirewallError> {
        if let Some(i) = st.fail.iter().position(|f| f == op) {
            st.fail.remove(i);
            return Err(FirewallError::Backend {
                backend: BackendKind::Nftables,
                op: op.to_string(),
                msg: "fails (injected)".into(),
            });
        }
        Ok(())
    }
}

impl Firewall for FakeFirewall {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn ensure_base(&self) -> Result<(), FirewallError> {
        let mut st = self.st();
        self.check(&mut st, "ensure_base")?;
        st.base = true;
        Ok(())
    }

    fn base_in_place(&self) -> Result<bool, FirewallError> {
        Ok(self.st().base)
    }

    fn apply_network(&self, rules: &NetworkRules) -> Result<(), FirewallError> {
        let mut st = self.st();
        self.check(&mut st, "apply_network")?;
        if st.networks.get(&rules.name) != Some(rules) {
            st.journal.push(format!("apply network {}", rules.name));
            st.networks.insert(rules.name.clone(), rules.clone());
        }
        Ok(())
    }

    fn remove_network(&self, name: &NetworkName) -> Result<(), FirewallError> {
        let mut st = self.st();
        self.check(&mut st, "remove_network")?;
        if st.networks.remove(name).is_some() {
            st.journal.push(format!("remove network {name}"));
        }
        Ok(())
    }

    fn owned_networks(&self) -> Result<Vec<NetworkName>, FirewallError> {
        Ok(self.networks())
    }

    fn add_ports(&self, rules: &PortRules) -> Result<(), FirewallError> {
        let mut st = self.st();
        self.check(&mut st, "add_ports")?;
        for m in &rules.ports {
            let taken = st
                .ports
                .iter()
                .filter(|(id, _)| **id != rules.id)
                .any(|(_, ms)| ms.iter().any(|t| clash(m, t)));
            if taken {
                return Err(FirewallError::Backend {
                    backend: BackendKind::Nftables,
                    op: format!("add ports of {}", rules.id),
                    msg: format!("host port {} is published to another target", m.host_port),
                });
            }
        }
        let mine = st.ports.entry(rules.id.clone()).or_default();
        for m in &rules.ports {
            if !mine.contains(m) {
                mine.push(*m);
            }
        }
        st.journal.push(format!("add ports of {}", rules.id));
        Ok(())
    }

    fn remove_ports(&self, rules: &PortRules) -> Result<(), FirewallError> {
        let mut st = self.st();
        self.check(&mut st, "remove_ports")?;
        if let Some(mine) = st.ports.get_mut(&rules.id) {
            mine.retain(|m| !rules.ports.contains(m));
            if mine.is_empty() {
                st.ports.remove(&rules.id);
            }
        }
        st.journal.push(format!("remove ports of {}", rules.id));
        Ok(())
    }

    fn purge_ports(&self, id: &IfName) -> Result<(), FirewallError> {
        let mut st = self.st();
        self.check(&mut st, "purge_ports")?;
        if st.ports.remove(id).is_some() {
            st.journal.push(format!("purge ports of {id}"));
        }
        Ok(())
    }

    fn owned_ports(&self) -> Result<Vec<IfName>, FirewallError> {
        Ok(self.st().ports.keys().cloned().collect())
    }

    fn remove_all(&self) -> Result<(), FirewallError> {
        let mut st = self.st();
        st.networks.clear();
        st.ports.clear();
        st.base = false;
        Ok(())
    }
}
