//! Pure: what the encapsulation filter ([`crate::firewall::encap`]) holds for a peer set, and the
//! order in which one pass applies a peer set.
//!
//! Kernel VXLAN and IPIP devices decapsulate packets from any underlay host, so each
//! encapsulation that has (or is about to have) a kernel device is *guarded*: the firewall
//! accepts it from the underlay addresses of the peers planned on it and drops the rest. The
//! userspace IPIP data plane judges its own packets (it drops outer sources that are not in its
//! peer table) and needs no firewall guard.
//!
//! Order of a pass ([`PASS`]): the new filter goes in first, so a removed peer is refused from
//! the moment its peer set is applied and a new peer is accepted before any route points at it;
//! a guard is lifted only at the end, once the device it protects is gone. Every step that
//! changes what is accepted happens in one transaction (the filter) or one table swap (the
//! userspace peer table).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::mode::Plane;
use super::plan::PlannedPeer;
use super::IpipPath;
use crate::firewall::encap::{EncapRules, VxlanGuard};

/// Encapsulations guarded by the firewall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Guarded {
    /// VXLAN.
    pub vxlan: bool,
    /// IPIP (kernel device).
    pub ipip: bool,
}

impl Guarded {
    /// The encapsulations `planned` needs a kernel device for: VXLAN when a peer uses it, IPIP
    /// when a peer uses it and the node uses the kernel device.
    pub fn wanted(planned: &[PlannedPeer], ipip: IpipPath) -> Self {
        let uses = |p: Plane| planned.iter().any(|x| x.plane == p);
        Guarded {
            vxlan: uses(Plane::Vxlan),
            ipip: uses(Plane::Ipip) && ipip == IpipPath::Kernel,
        }
    }

    /// Both sets of guards.
    pub fn or(self, other: Guarded) -> Guarded {
        Guarded {
            vxlan: self.vxlan || other.vxlan,
            ipip: self.ipip || other.ipip,
        }
    }
}

/// Underlay addresses of the peers planned on `plane`.
pub fn addresses(planned: &[PlannedPeer], plane: Plane) -> BTreeSet<Ipv4Addr> {
    planned
        .iter()
        .filter(|p| p.plane == plane)
        .map(|p| p.peer.address)
        .collect()
}

/// VXLAN parameters of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vxlan {
    /// UDP port.
    pub port: u16,
    /// VNI.
    pub vni: u32,
}

/// The filter for `planned` on the node with underlay address `local`: every encapsulation in
/// `guard` accepts exactly the peers planned on it (none: everything of it is dropped).
pub fn rules(local: Ipv4Addr, vxlan: Vxlan, planned: &[PlannedPeer], guard: Guarded) -> EncapRules {
    EncapRules {
        local,
        vxlan: guard.vxlan.then(|| VxlanGuard {
            port: vxlan.port,
            vni: vxlan.vni,
            peers: addresses(planned, Plane::Vxlan),
        }),
        ipip: guard.ipip.then(|| addresses(planned, Plane::Ipip)),
    }
}

/// One step of a peering pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Plan the peer set [`super::Peering::take`] made the running one (from the peer file or
    /// etcd: the pass does not care).
    Take,
    /// Install the filter for the new peer set, keeping the guard of every encapsulation whose
    /// device exists now. If this fails, no kernel VXLAN/IPIP device is kept (fail closed).
    Guard,
    /// Hand the userspace IPIP data plane its new peer table.
    UserspacePeers,
    /// Create, repair or remove the devices.
    Devices,
    /// Set and remove routes, neighbour and forwarding entries.
    Routes,
    /// Lift the guard of encapsulations whose device is gone.
    Release,
    /// Probe the peers, read the drop counters, publish the status.
    Report,
}

/// The steps of every pass, in order.
pub const PASS: [Step; 7] = [
    Step::Take,
    Step::Guard,
    Step::UserspacePeers,
    Step::Devices,
    Step::Routes,
    Step::Release,
    Step::Report,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peering::peers::Peer;

    fn p(name: &str, addr: &str, pod: u8, plane: Plane) -> PlannedPeer {
        PlannedPeer {
            peer: Peer {
                name: name.into(),
                address: addr.parse().unwrap(),
                pod_cidr: format!("10.244.{pod}.0/24").parse().unwrap(),
                mode: None,
            },
            plane,
        }
    }

    const VX: Vxlan = Vxlan {
        port: 4789,
        vni: 4242,
    };

    fn local() -> Ipv4Addr {
        "172.30.0.10".parse().unwrap()
    }

    fn set(a: &[&str]) -> BTreeSet<Ipv4Addr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn each_encapsulation_accepts_exactly_its_peers() {
        let planned = [
            p("b", "172.30.0.11", 2, Plane::HostGw),
            p("c", "172.30.1.12", 3, Plane::Vxlan),
            p("d", "172.30.2.13", 4, Plane::Ipip),
            p("e", "172.30.2.14", 5, Plane::Vxlan),
        ];
        let g = Guarded::wanted(&planned, IpipPath::Kernel);
        assert_eq!(
            g,
            Guarded {
                vxlan: true,
                ipip: true
            }
        );
        let r = rules(local(), VX, &planned, g);
        assert_eq!(r.local, local());
        let vx = r.vxlan.unwrap();
        assert_eq!((vx.port, vx.vni), (4789, 4242));
        assert_eq!(
            vx.peers,
            set(&["172.30.1.12", "172.30.2.14"]),
            "host-gw and IPIP peers are no VXLAN peers"
        );
        assert_eq!(r.ipip.unwrap(), set(&["172.30.2.13"]));
        // The userspace data plane judges its own IPIP packets: no firewall guard.
        let g = Guarded::wanted(&planned, IpipPath::Userspace);
        assert!(g.vxlan && !g.ipip);
        assert_eq!(rules(local(), VX, &planned, g).ipip, None);
        // Only host-gw peers: nothing to guard.
        let g = Guarded::wanted(&planned[..1], IpipPath::Kernel);
        assert_eq!(g, Guarded::default());
        let r = rules(local(), VX, &planned[..1], g);
        assert_eq!((r.vxlan, r.ipip), (None, None));
    }

    #[test]
    fn a_device_still_present_stays_guarded_with_no_peers() {
        // The last VXLAN peer leaves while the VXLAN device still exists: the guard stays and
        // accepts nobody until the device is gone.
        let planned = [p("b", "172.30.0.11", 2, Plane::HostGw)];
        let present = Guarded {
            vxlan: true,
            ipip: false,
        };
        let g = Guarded::wanted(&planned, IpipPath::Kernel).or(present);
        let r = rules(local(), VX, &planned, g);
        assert_eq!(r.vxlan.unwrap().peers, BTreeSet::new());
        assert_eq!(r.ipip, None);
    }

    #[test]
    fn removed_peers_are_refused_and_new_ones_accepted_in_the_same_step() {
        let old = [
            p("b", "172.30.1.11", 2, Plane::Vxlan),
            p("c", "172.30.1.12", 3, Plane::Vxlan),
        ];
        let new = [
            p("b", "172.30.1.11", 2, Plane::Vxlan),
            p("d", "172.30.1.13", 4, Plane::Vxlan),
        ];
        let g = Guarded::wanted(&new, IpipPath::Kernel).or(Guarded::wanted(&old, IpipPath::Kernel));
        let before = rules(local(), VX, &old, g).vxlan.unwrap().peers;
        let after = rules(local(), VX, &new, g).vxlan.unwrap().peers;
        assert!(before.contains(&"172.30.1.12".parse().unwrap()));
        assert_eq!(after, set(&["172.30.1.11", "172.30.1.13"]));
        // A peer that changes plane moves from one set to the other.
        let moved = [p("b", "172.30.1.11", 2, Plane::Ipip)];
        let g = Guarded::wanted(&moved, IpipPath::Kernel).or(g);
        let r = rules(local(), VX, &moved, g);
        assert_eq!(r.vxlan.unwrap().peers, BTreeSet::new());
        assert_eq!(r.ipip.unwrap(), set(&["172.30.1.11"]));
    }

    #[test]
    fn the_filter_changes_before_anything_points_at_a_peer_and_is_lifted_last() {
        let at = |s: Step| PASS.iter().position(|x| *x == s).unwrap();
        assert_eq!(at(Step::Take), 0);
        assert!(
            at(Step::Guard) < at(Step::Devices),
            "guard before a device can exist"
        );
        assert!(
            at(Step::Guard) < at(Step::Routes),
            "new peers accepted before routes"
        );
        assert!(at(Step::UserspacePeers) < at(Step::Routes));
        assert!(
            at(Step::Release) > at(Step::Devices),
            "guard lifted after the device is gone"
        );
        assert!(at(Step::Release) > at(Step::Routes));
        assert_eq!(at(Step::Report), PASS.len() - 1);
        let mut seen = PASS.to_vec();
        seen.dedup();
        assert_eq!(seen.len(), PASS.len(), "each step once");
    }
}
