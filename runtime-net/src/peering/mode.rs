//! Pure per-peer choice of data plane, and the MTU each data plane leaves for containers.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::Serialize;

use super::peers::{ModeSetting, Peer, PeeringConfig};

/// The data plane chosen for one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Plane {
    /// Plain route via the peer's underlay address.
    HostGw,
    /// IP-in-IP.
    Ipip,
    /// VXLAN.
    Vxlan,
}

impl Plane {
    /// Bytes of outer headers this plane adds to every packet.
    pub fn overhead(self) -> u32 {
        match self {
            Plane::HostGw => 0,
            Plane::Ipip => 20,
            Plane::Vxlan => 50,
        }
    }

    /// Name as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Plane::HostGw => "host-gw",
            Plane::Ipip => "ipip",
            Plane::Vxlan => "vxlan",
        }
    }
}

fn encap(setting: ModeSetting) -> Plane {
    match setting {
        ModeSetting::Ipip => Plane::Ipip,
        _ => Plane::Vxlan,
    }
}

/// Chooses the plane for `peer`: its own mode, else the configured one; `auto` picks host-gw
/// when the peer's address lies in `underlay` (this node's underlay address with its prefix,
/// i.e. the same L2 subnet), the configured encapsulation otherwise.
pub fn choose(cfg: &PeeringConfig, underlay: Ipv4Network, peer: &Peer) -> Plane {
    choose_for(
        peer.mode.unwrap_or(cfg.mode),
        cfg.auto_encap,
        underlay,
        peer.address,
    )
}

/// [`choose`] from its parts.
pub fn choose_for(
    setting: ModeSetting,
    auto_encap: ModeSetting,
    underlay: Ipv4Network,
    peer: Ipv4Addr,
) -> Plane {
    match setting {
        ModeSetting::HostGw => Plane::HostGw,
        ModeSetting::Ipip => Plane::Ipip,
        ModeSetting::Vxlan => Plane::Vxlan,
        ModeSetting::Auto if underlay.contains(peer) => Plane::HostGw,
        ModeSetting::Auto => encap(auto_encap),
    }
}

/// The container MTU that fits every plane the configuration may use: the default mode (for
/// `auto`, its encapsulation) and every per-peer mode in `peers`.
pub fn container_mtu(cfg: &PeeringConfig, peers: &[Peer], underlay_mtu: u32) -> u32 {
    let worst = |s: ModeSetting| match s {
        ModeSetting::Auto => encap(cfg.auto_encap).overhead(),
        ModeSetting::HostGw => 0,
        ModeSetting::Ipip => Plane::Ipip.overhead(),
        ModeSetting::Vxlan => Plane::Vxlan.overhead(),
    };
    let overhead = peers
        .iter()
        .filter_map(|p| p.mode)
        .map(worst)
        .chain(std::iter::once(worst(cfg.mode)))
        .max()
        .unwrap_or(0);
    underlay_mtu - overhead
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn auto_is_host_gw_inside_the_underlay_subnet_only() {
        let u = net("192.168.1.10/24");
        let inside = "192.168.1.77".parse().unwrap();
        let outside = "192.168.2.77".parse().unwrap();
        let v = ModeSetting::Vxlan;
        assert_eq!(choose_for(ModeSetting::Auto, v, u, inside), Plane::HostGw);
        assert_eq!(choose_for(ModeSetting::Auto, v, u, outside), Plane::Vxlan);
        assert_eq!(
            choose_for(ModeSetting::Auto, ModeSetting::Ipip, u, outside),
            Plane::Ipip
        );
        assert_eq!(choose_for(ModeSetting::Ipip, v, u, inside), Plane::Ipip);
        assert_eq!(
            choose_for(ModeSetting::HostGw, v, u, outside),
            Plane::HostGw
        );
    }

    #[test]
    fn mtu_fits_the_largest_overhead() {
        let mut cfg = crate::peering::tests::peering_cfg(ModeSetting::HostGw);
        assert_eq!(container_mtu(&cfg, &[], 1500), 1500);
        cfg.mode = ModeSetting::Ipip;
        assert_eq!(container_mtu(&cfg, &[], 1500), 1480);
        cfg.mode = ModeSetting::Auto;
        assert_eq!(container_mtu(&cfg, &[], 9000), 8950);
        cfg.mode = ModeSetting::HostGw;
        let p = Peer {
            name: "b".into(),
            address: "192.168.1.2".parse().unwrap(),
            pod_cidr: net("10.2.0.0/24"),
            mode: Some(ModeSetting::Vxlan),
        };
        assert_eq!(container_mtu(&cfg, &[p], 1500), 1450);
    }
}
