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

/// The most extension bridges one network can have (one hex digit in their names).
pub const MAX_EXTENSIONS: u8 = 15;

/// `<prefix>` + 10 hex digits of SHA-256 of the network name + the extension's hex digit: 14
/// bytes, within IFNAMSIZ, the same for the network on every start.
fn extension_link_name(prefix: &str, network: &NetworkName, index: u8) -> IfName {
    assert!(index <= MAX_EXTENSIONS, "extension index {index}");
    let digest = Sha256::digest(format!("shimnet-xbr\0{network}").as_bytes());
    let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    IfName::new(&format!("{prefix}{hex}{index:x}")).expect("14-byte name of safe characters")
}

/// Name of extension bridge `index` (1..=[`MAX_EXTENSIONS`]) of a network: `snx…`.
pub fn extension_bridge_name(network: &NetworkName, index: u8) -> IfName {
    assert!(index >= 1, "extension index 0");
    extension_link_name("snx", network, index)
}

/// Names of the veth trunk joining extension `index` to the main bridge: the end on the main
/// bridge (`snt…`) and the end on the extension (`snu…`). Index 0 names the anchor pair
/// ([`anchor_names`]).
pub fn trunk_names(network: &NetworkName, index: u8) -> (IfName, IfName) {
    (
        extension_link_name("snt", network, index),
        extension_link_name("snu", network, index),
    )
}

/// Names of the anchor pair of a network with extensions: trunk index 0, never an extension.
/// Its end on the main bridge (`snt…0`, kept without carrier) carries ARP suppression, which
/// makes the main bridge keep requests it can resolve out of its trunks (see
/// [`crate::plan::proxy`]); its other end (`snu…0`) is on no bridge.
pub fn anchor_names(network: &NetworkName) -> (IfName, IfName) {
    trunk_names(network, 0)
}

/// Owner alias of an extension bridge: `shimnet:xbr=<network>/<index>`.
pub fn extension_alias(network: &NetworkName, index: u8) -> String {
    format!("{ALIAS_PREFIX}xbr={network}/{index}")
}

/// Owner alias of both ends of a trunk: `shimnet:trunk=<network>/<index>`.
pub fn trunk_alias(network: &NetworkName, index: u8) -> String {
    format!("{ALIAS_PREFIX}trunk={network}/{index}")
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
    /// A network's extension bridge (network, index).
    Extension(String, u8),
    /// An end of the trunk joining a network's extension bridge to its main bridge.
    Trunk(String, u8),
}

/// `<network>/<index>` of an extension or trunk alias.
fn net_index(s: &str) -> Option<(String, u8)> {
    let (net, i) = s.rsplit_once('/')?;
    let i: u8 = i.parse().ok()?;
    (1..=MAX_EXTENSIONS)
        .contains(&i)
        .then(|| (net.to_string(), i))
}

/// Parses an alias written by [`bridge_alias`] or [`veth_alias`]; `None` if it is not shimnet's.
pub fn parse_alias(alias: &str) -> Option<Owner> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?;
    if let Some(n) = rest.strip_prefix("net=") {
        return Some(Owner::Bridge(n.to_string()));
    }
    if let Some(x) = rest.strip_prefix("xbr=") {
        return net_index(x).map(|(n, i)| Owner::Extension(n, i));
    }
    if let Some(x) = rest.strip_prefix("trunk=") {
        // Index 0 is the anchor pair.
        let anchor = x.strip_suffix("/0").map(|n| Owner::Trunk(n.to_string(), 0));
        return anchor.or_else(|| net_index(x).map(|(n, i)| Owner::Trunk(n, i)));
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
        let n = &k.network;
        assert_eq!(
            parse_alias(&extension_alias(n, 3)),
            Some(Owner::Extension("net1".into(), 3))
        );
        assert_eq!(
            parse_alias(&trunk_alias(n, 15)),
            Some(Owner::Trunk("net1".into(), 15))
        );
        assert_eq!(parse_alias("shimnet:xbr=net1/0"), None);
        assert_eq!(
            parse_alias(&trunk_alias(n, 0)),
            Some(Owner::Trunk("net1".into(), 0))
        );
        assert_eq!(parse_alias("shimnet:trunk=net1/16"), None);
    }

    #[test]
    fn extension_names_fit_ifnamsiz_and_are_distinct() {
        let a = NetworkName::new("a-network-with-a-rather-long-name").unwrap();
        let b = NetworkName::new("b").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for n in [&a, &b] {
            let (t, u) = anchor_names(n);
            assert!(seen.insert(t.to_string()) && seen.insert(u.to_string()));
            for i in 1..=MAX_EXTENSIONS {
                let x = extension_bridge_name(n, i);
                let (t, u) = trunk_names(n, i);
                for name in [&x, &t, &u] {
                    assert!(name.as_str().len() <= 15, "{name}");
                    assert!(seen.insert(name.to_string()), "{name} twice");
                }
                assert_eq!(x, extension_bridge_name(n, i));
                assert!(x.as_str().starts_with("snx") && t.as_str().starts_with("snt"));
            }
        }
    }
}
