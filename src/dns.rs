//! The name service wired to the engine: [`DnsHook`] is the engine's [`Observer`] and keeps
//! [`shimnet_dns::Dns`] in line with the records — a network with `dns` is served on its
//! gateway(s) while it exists, and each endpoint's names (its name, its aliases, the short form
//! of its container id) are registered while it is attached. This file is the only place where
//! engine types meet the name service.

use std::net::IpAddr;
use std::sync::Arc;

use ipnetwork::IpNetwork;
use runtime_net::engine::Observer;
use runtime_net::{EndpointKey, EndpointRecord, NetworkName, NetworkSpec};
use shimnet_dns::{Dns, Entry, NetworkDns};

/// The engine's observer feeding the name service.
pub struct DnsHook {
    dns: Arc<Dns>,
}

impl DnsHook {
    /// A hook feeding `dns`.
    pub fn new(dns: Arc<Dns>) -> Self {
        DnsHook { dns }
    }
}

/// What the name service needs of a network: its subnets, its gateways (where it listens) and
/// whether it is internal.
pub fn network_dns(spec: &NetworkSpec) -> NetworkDns {
    let mut subnets = vec![IpNetwork::V4(spec.subnet)];
    let mut listen = vec![IpAddr::V4(spec.gateway)];
    if let Some(s6) = spec.subnet6 {
        subnets.push(IpNetwork::V6(s6));
    }
    if let Some(g6) = spec.gateway6 {
        listen.push(IpAddr::V6(g6));
    }
    NetworkDns {
        name: spec.name.to_string(),
        subnets,
        listen,
        internal: spec.internal,
    }
}

/// The id an endpoint's names are registered under.
pub fn entry_id(key: &EndpointKey) -> String {
    key.to_string()
}

/// An endpoint's names and addresses: its recorded names (name, then aliases), then the short
/// form of its container id.
pub fn entry(rec: &EndpointRecord) -> Entry {
    let mut names: Vec<String> = rec.names.iter().map(|n| n.to_string()).collect();
    if let Some(short) = rec.key.container_id.short_name() {
        names.push(short.to_string());
    }
    Entry {
        id: entry_id(&rec.key),
        container: rec.key.container_id.to_string(),
        names,
        ipv4: Some(rec.ipv4.ip()),
        ipv6: rec.ipv6.map(|n| n.ip()),
    }
}

impl Observer for DnsHook {
    fn network_up(&self, spec: &NetworkSpec) {
        if spec.dns {
            self.dns.set_network(network_dns(spec));
        } else {
            self.dns.remove_network(spec.name.as_str());
        }
    }

    fn network_down(&self, name: &NetworkName) {
        self.dns.remove_network(name.as_str());
    }

    fn endpoint_up(&self, spec: &NetworkSpec, rec: &EndpointRecord) {
        if spec.dns {
            self.dns.set_entry(spec.name.as_str(), entry(rec));
        }
    }

    fn endpoint_down(&self, key: &EndpointKey) {
        self.dns.remove_entry(key.network.as_str(), &entry_id(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_entries_and_networks() {
        let rec: EndpointRecord = serde_json::from_value(serde_json::json!({
            "key": {"network": "web", "container_id": "0123456789abcdef", "ifname": "eth0"},
            "netns": "/run/netns/x", "host_ifname": "snv1", "ipv4": "10.89.0.2/24",
            "ipv6": "fd00::2/64", "mac": "02:00:00:00:00:01", "gateway": "10.89.0.1",
            "mtu": 1500, "names": ["web1", "www"]
        }))
        .unwrap();
        let e = entry(&rec);
        assert_eq!(e.id, "web/0123456789abcdef/eth0");
        assert_eq!(e.names, ["web1", "www", "0123456789ab"]);
        assert_eq!(e.ipv4, Some("10.89.0.2".parse().unwrap()));
        assert_eq!(e.ipv6, Some("fd00::2".parse().unwrap()));
        let spec: NetworkSpec = serde_json::from_value(serde_json::json!({
            "name": "web", "bridge": "web", "subnet": "10.89.0.0/24", "gateway": "10.89.0.1",
            "subnet6": "fd00::/64", "gateway6": "fd00::1", "mtu": 1500, "masquerade": true,
            "icc": true, "internal": true, "hairpin": false, "dns": true
        }))
        .unwrap();
        let n = network_dns(&spec);
        assert_eq!(n.listen.len(), 2);
        assert_eq!(n.subnets.len(), 2);
        assert!(n.internal);
    }
}
