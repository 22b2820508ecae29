//! docker0's conventions, as shimnet reproduces them for Docker's endpoints and the
//! docker0-compatible mode: MACs derived from the IPv4 address, libnetwork's interface prefix (and
//! hence the key of a Docker endpoint), and the iptables chain layout dockerd keeps (handed to the
//! firewall as an admin chain layout).

use runtime_net::firewall::AdminChains;
use runtime_net::{ContainerId, EndpointKey, IfName, MacPrefix, NetworkName};

/// docker's MAC scheme: `02:42` followed by the four bytes of the IPv4 address.
pub const MAC_PREFIX: MacPrefix = MacPrefix([0x02, 0x42]);

/// Interface name prefix libnetwork gives the container end (`DstPrefix`); also the `ifname` of
/// Docker endpoint keys.
pub const DST_PREFIX: &str = "eth";

/// The chain administrators put their rules in, jumped first from `FORWARD`.
pub const DOCKER_USER: &str = "DOCKER-USER";

/// docker's per-container chain (kept empty: shimnet's DNAT lives in its own backend).
pub const DOCKER: &str = "DOCKER";

/// The key of a Docker endpoint.
pub fn endpoint_key(network: &NetworkName, endpoint: &ContainerId) -> EndpointKey {
    EndpointKey {
        network: network.clone(),
        container_id: endpoint.clone(),
        ifname: IfName::new(DST_PREFIX).expect("valid name"),
    }
}

/// dockerd's iptables layout: `DOCKER-USER` (ending in `RETURN`) jumped first from `FORWARD`,
/// so administrators' rules there still filter container traffic, and empty `DOCKER` chains in
/// `filter` and `nat` for tools that expect them.
pub fn chain_layout() -> AdminChains {
    AdminChains {
        first: DOCKER_USER.to_string(),
        ends_in_return: true,
        placeholders: vec![
            ("filter".to_string(), DOCKER.to_string()),
            ("nat".to_string(), DOCKER.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_from_ipv4() {
        assert_eq!(
            MAC_PREFIX.mac("10.230.0.2".parse().unwrap()).to_string(),
            "02:42:0a:e6:00:02"
        );
    }

    #[test]
    fn docker_keys_use_the_dst_prefix() {
        let k = endpoint_key(
            &NetworkName::new("n1").unwrap(),
            &ContainerId::new("e1").unwrap(),
        );
        assert_eq!(k.ifname.as_str(), DST_PREFIX);
    }

    #[test]
    fn the_layout_is_docker_user_first() {
        let l = chain_layout();
        assert_eq!(l.first, "DOCKER-USER");
        assert!(l.placeholders.contains(&("nat".into(), "DOCKER".into())));
    }
}
