//! Deterministic names and owner marks for the kernel objects shimnet creates.
//!
//! Host-side veth names are derived from the endpoint key so that they can be found again after
//! a restart without any lookup table; link aliases mark every link as shimnet's own.

use sha2::{Digest, Sha256};

use crate::types::{EndpointKey, IfName, NetworkName};

/// Prefix of every host-side veth shimnet creates.
pub const VETH_PREFIX: &str = "snv";
/// Prefix of the alias (IFLA_IFALIAS) set on every link shimnet owns.
pub const ALIAS_PREFIX: &str = "shimnet:";
/// Namespace recorded for a prepared endpoint until it is joined: the daemon's own, where its
/// container end waits.
pub const UNJOINED_NETNS: &str = "/proc/self/ns/net";

/// The host-side veth name of an endpoint: `snv` + 12 hex digits of SHA-256 of the key.
pub fn host_veth_name(key: &EndpointKey) -> IfName {
    let mut h = Sha256::new();
    h.update(key.network.as_str().as_bytes());
    h.update([0]);
    h.update(key.container_id.as_str().as_bytes());
    h.update([0]);
    h.update(key.ifname.as_str().as_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    IfName::new(&format!("{VETH_PREFIX}{hex}")).expect("15-byte name of safe characters")
}

/// Temporary name of the container end while it is created in the host namespace.
pub fn peer_temp_name(host: &IfName) -> IfName {
    // snvXXXXXXXXXXXX -> snpXXXXXXXXXXXX: same length, distinct prefix.
    let s = host.as_str();
    IfName::new(&format!("snp{}", &s[VETH_PREFIX.len()..])).expect("same length as host name")
}

/// Owner alias of a bridge: `shimnet:net=<network>`.
pub fn bridge_alias(network: &NetworkName) -> String {
    format!("{ALIAS_PREFIX}net={network}")
}

/// Owner alias of a host veth: `shimnet:ep=<network>/<container>/<ifname>`.
pub fn veth_alias(key: &EndpointKey) -> String {
    format!("{ALIAS_PREFIX}ep={key}")
}

/// What an owner alias says about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A network's bridge.
    Bridge(String),
    /// An endpoint's host veth (`network/container/ifname`).
    Endpoint(String),
}

/// Parses an alias written by [`bridge_alias`] or [`veth_alias`]; `None` if it is not shimnet's.
pub fn parse_alias(alias: &str) -> Option<Owner> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?;
    if let Some(n) = rest.strip_prefix("net=") {
        return Some(Owner::Bridge(n.to_string()));
    }
    rest.strip_prefix("ep=")
        .map(|e| Owner::Endpoint(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ContainerId;

    fn key(c: &str) -> EndpointKey {
        EndpointKey {
            network: NetworkName::new("net1").unwrap(),
            container_id: ContainerId::new(c).unwrap(),
            ifname: IfName::new("eth0").unwrap(),
        }
    }

    #[test]
    fn veth_names_are_stable_and_distinct() {
        let a = host_veth_name(&key("abc"));
        assert_eq!(a, host_veth_name(&key("abc")));
        assert_ne!(a, host_veth_name(&key("abd")));
        assert_eq!(a.as_str().len(), 15);
        assert!(a.as_str().starts_with(VETH_PREFIX));
        let p = peer_temp_name(&a);
        assert_eq!(p.as_str().len(), 15);
        assert_ne!(p, a);
    }

    #[test]
    fn aliases_round_trip() {
        let k = key("c1");
        assert_eq!(
            parse_alias(&veth_alias(&k)),
            Some(Owner::Endpoint("net1/c1/eth0".into()))
        );
        assert_eq!(
            parse_alias(&bridge_alias(&k.network)),
            Some(Owner::Bridge("net1".into()))
        );
        assert_eq!(parse_alias("br0"), None);
    }
}
