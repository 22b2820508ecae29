//! Firewall: one trait, two backends (nftables, iptables), auto-detection.
//!
//! - [`nft`]: table `inet shimnet` through libnftables, in process (preferred).
//! - [`iptables`]: chains `SHIMNET-*` through the `iptables` binary (fallback).
//! - [`compat`]: iptables `FORWARD` coexistence (another manager's policy DROP) for the nftables
//!   backend.
//! - [`forward`]: the one owner of iptables' `FORWARD` order (an admin chain jumped first,
//!   [`AdminChains`]: `SHIMNET-USER` in plain iptables mode, then shimnet's jump); [`ipt`] is the
//!   only module that runs iptables.
//! - [`detect()`]: picks one.
//! - [`encap`]: peering's filter of encapsulated packets (VXLAN, IPIP) from non-peers, for
//!   either backend.
//!
//! Both backends act on the network namespace of the thread that creates them (nftables) or
//! calls them (iptables).

pub mod compat;
mod detect;
pub mod encap;
pub mod forward;
mod ipt;
pub mod iptables;
pub mod nft;
#[cfg(test)]
mod tests;

pub use detect::detect;
pub use forward::AdminChains;

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::types::{IfName, NetworkName, PortMapping};

/// Which backend is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// nftables (table `inet shimnet`).
    Nftables,
    /// iptables (chains `SHIMNET-*`).
    Iptables,
}

/// Firewall failures.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The backend refused a change.
    #[error("{backend:?}: {op}: {msg}")]
    Backend {
        backend: BackendKind,
        op: String,
        msg: String,
    },
    /// No usable backend on this host.
    #[error("no usable firewall backend: {0}")]
    Unavailable(String),
}

/// Firewall state of one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// Network name (owner mark).
    pub name: NetworkName,
    /// Bridge device.
    pub bridge: IfName,
    /// The network's extension bridges (see `plan::bridges`): with `br_netfilter`, traffic
    /// bridged across them passes the IP hooks with them as devices, and must be treated as
    /// inside the network (never masqueraded, accepted).
    pub extensions: Vec<IfName>,
    /// IPv4 subnet.
    pub subnet4: Ipv4Network,
    /// IPv6 subnet.
    pub subnet6: Option<Ipv6Network>,
    /// Masquerade traffic leaving through other interfaces.
    pub masquerade: bool,
    /// Allow container-to-container traffic on the bridge.
    pub icc: bool,
    /// No traffic to or from outside the bridge (except the host itself).
    pub internal: bool,
    /// Destinations never masqueraded.
    pub no_masquerade_to: Vec<IpNetwork>,
    /// Sources allowed to open connections into the network.
    pub allow_from: Vec<IpNetwork>,
}

/// Published ports of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRules {
    /// Stable owner id of the endpoint (its host veth name).
    pub id: IfName,
    /// Network.
    pub network: NetworkName,
    /// Bridge of the network.
    pub bridge: IfName,
    /// Subnet of the network (for hairpin masquerade).
    pub subnet4: Ipv4Network,
    /// Container IPv4 address.
    pub ip4: Ipv4Addr,
    /// Container IPv6 address.
    pub ip6: Option<Ipv6Addr>,
    /// Mappings.
    pub ports: Vec<PortMapping>,
}

/// A firewall backend.
pub trait Firewall: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Creates the base tables/chains (idempotent), the admin chain layout when one is configured
    /// ([`AdminChains`]) and the coexistence rules for iptables' FORWARD chain when another
    /// manager set its policy to DROP.
    fn ensure_base(&self) -> Result<(), FirewallError>;
    /// Whether the base (tables, chains, the jumps into them and `FORWARD`'s layout) is in place,
    /// i.e. [`Firewall::ensure_base`] would change nothing. Reads only.
    fn base_in_place(&self) -> Result<bool, FirewallError>;
    /// Installs or replaces the rules of one network (idempotent, atomic per call).
    fn apply_network(&self, rules: &NetworkRules) -> Result<(), FirewallError>;
    /// Removes the rules of one network; succeeds if there are none.
    fn remove_network(&self, name: &NetworkName) -> Result<(), FirewallError>;
    /// Networks that have rules installed.
    fn owned_networks(&self) -> Result<Vec<NetworkName>, FirewallError>;
    /// The networks of `want` whose rules are not all in place (missing, or some deleted from
    /// outside): those [`Firewall::apply_network`] would change. Reads only. By default, the
    /// networks without any rules.
    fn drifted_networks(&self, want: &[NetworkRules]) -> Result<Vec<NetworkName>, FirewallError> {
        let have: std::collections::HashSet<NetworkName> =
            self.owned_networks()?.into_iter().collect();
        Ok(want
            .iter()
            .filter(|r| !have.contains(&r.name))
            .map(|r| r.name.clone())
            .collect())
    }
    /// Installs the published ports of one endpoint (idempotent: re-adding the same ports is a
    /// no-op). A host port already published to another target is refused by the nftables
    /// backend; to change an endpoint's ports, `remove_ports` the old record first.
    fn add_ports(&self, rules: &PortRules) -> Result<(), FirewallError>;
    /// Removes exactly the published ports in `rules` (the engine's record); succeeds for those
    /// that are absent.
    fn remove_ports(&self, rules: &PortRules) -> Result<(), FirewallError>;
    /// Removes every published port owned by endpoint `id`, whatever it maps (for orphans with no
    /// record left).
    fn purge_ports(&self, id: &IfName) -> Result<(), FirewallError>;
    /// Endpoint ids that have port rules installed.
    fn owned_ports(&self) -> Result<Vec<IfName>, FirewallError>;
    /// Removes everything the backend ever installed.
    fn remove_all(&self) -> Result<(), FirewallError>;
}

/// Teardown keeps going and reports every failure: `Ok` when `errors` is empty, else all of them
/// joined.
pub(crate) fn joined(errors: Vec<String>) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Whether nftables works here (for the feature report).
pub fn probe_nftables() -> Result<String, String> {
    nft::NftBackend::new()
        .map(|_| "libnftables lists tables".to_string())
        .map_err(|e| e.to_string())
}

/// Whether iptables works here (for the feature report).
pub fn probe_iptables() -> Result<String, String> {
    iptables::IptablesBackend::new()
        .map(|_| "iptables lists filter FORWARD".to_string())
        .map_err(|e| e.to_string())
}
