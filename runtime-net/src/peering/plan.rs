//! Pure peering plan: from the peers (with their chosen planes), this node's devices and what the
//! kernel shows, the routes, VXLAN neighbour and forwarding entries to add, replace or remove.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::mode::Plane;
use super::peers::Peer;

/// Route protocol number (`rtm_protocol`) on every route shimnet installs for a peer, so that
/// drift repair finds exactly its own routes. 201 is unassigned in iproute2's `rt_protos`
/// (`ip route show proto 201`).
pub const RTPROT_SHIMNET: u8 = 201;

/// Indexes of the devices the data planes use; `None` where the device is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Devices {
    /// The underlay interface (holds `[node] address`).
    pub underlay: u32,
    /// The VXLAN device.
    pub vxlan: Option<u32>,
    /// The kernel IPIP device.
    pub ipip: Option<u32>,
    /// The userspace IPIP TUN device (used for IPIP when there is no kernel device).
    pub tun: Option<u32>,
}

/// A peer with the plane chosen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPeer {
    /// The peer.
    pub peer: Peer,
    /// Its plane.
    pub plane: Plane,
}

/// A route to a peer's pod subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination (the peer's pod subnet).
    pub dst: Ipv4Network,
    /// Next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: u32,
    /// Next hop is on the link even though no address says so (tunnels).
    pub onlink: bool,
}

/// A permanent ARP entry on the VXLAN device: a peer's VTEP address → its VXLAN MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    /// The peer's VTEP address.
    pub ip: Ipv4Addr,
    /// The peer's VXLAN device MAC.
    pub mac: [u8; 6],
}

/// A forwarding entry on the VXLAN device: a peer's VXLAN MAC → its underlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    /// The peer's VXLAN device MAC.
    pub mac: [u8; 6],
    /// The peer's underlay address.
    pub dst: Ipv4Addr,
}

/// What the kernel shows (only shimnet's routes, only the VXLAN device's entries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Routes with protocol [`RTPROT_SHIMNET`].
    pub routes: Vec<Route>,
    /// Permanent neighbour entries on the VXLAN device.
    pub neighs: Vec<Neigh>,
    /// Forwarding entries with a destination on the VXLAN device.
    pub fdbs: Vec<Fdb>,
}

/// One change to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Add or replace a route.
    SetRoute(Route),
    /// Delete a route.
    DelRoute(Route),
    /// Add or replace a neighbour entry.
    SetNeigh(Neigh),
    /// Delete a neighbour entry.
    DelNeigh(Neigh),
    /// Add or replace a forwarding entry.
    SetFdb(Fdb),
    /// Delete a forwarding entry.
    DelFdb(Fdb),
}

/// The VTEP address of a node: its pod subnet's network address (set /32 on its VXLAN device).
pub fn vtep_addr(pod_cidr: Ipv4Network) -> Ipv4Addr {
    pod_cidr.network()
}

/// The VXLAN device MAC of the node with underlay address `addr`: locally administered,
/// `02:5e` + the four address bytes, so every node can compute every peer's MAC.
pub fn vxlan_mac(addr: Ipv4Addr) -> [u8; 6] {
    let o = addr.octets();
    [0x02, 0x5e, o[0], o[1], o[2], o[3]]
}

/// Everything the peers need from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Routes by destination.
    pub routes: BTreeMap<Ipv4Network, Route>,
    /// VXLAN neighbour entries.
    pub neighs: Vec<Neigh>,
    /// VXLAN forwarding entries.
    pub fdbs: Vec<Fdb>,
    /// Peers left without a route because their device is absent (peer name, device kind).
    pub missing: Vec<(String, &'static str)>,
}

/// The desired kernel state for `peers` over `dev`.
pub fn desired(peers: &[PlannedPeer], dev: &Devices) -> Desired {
    let mut d = Desired::default();
    for PlannedPeer { peer, plane } in peers {
        let route = match plane {
            Plane::HostGw => Some(Route {
                dst: peer.pod_cidr,
                gateway: Some(peer.address),
                oif: dev.underlay,
                onlink: false,
            }),
            Plane::Ipip => match (dev.ipip, dev.tun) {
                (Some(oif), _) => Some(Route {
                    dst: peer.pod_cidr,
                    gateway: Some(peer.address),
                    oif,
                    onlink: true,
                }),
                (None, Some(oif)) => Some(Route {
                    dst: peer.pod_cidr,
                    gateway: None,
                    oif,
                    onlink: false,
                }),
                (None, None) => {
                    d.missing.push((peer.name.clone(), "ipip"));
                    None
                }
            },
            Plane::Vxlan => match dev.vxlan {
                Some(oif) => {
                    let vtep = vtep_addr(peer.pod_cidr);
                    let mac = vxlan_mac(peer.address);
                    d.neighs.push(Neigh { ip: vtep, mac });
                    d.fdbs.push(Fdb {
                        mac,
                        dst: peer.address,
                    });
                    Some(Route {
                        dst: peer.pod_cidr,
                        gateway: Some(vtep),
                        oif,
                        onlink: true,
                    })
                }
                None => {
                    d.missing.push((peer.name.clone(), "vxlan"));
                    None
                }
            },
        };
        if let Some(r) = route {
            d.routes.insert(r.dst, r);
        }
    }
    d
}

/// The changes that turn `seen` into `want`: missing or altered entries are set, owned entries
/// nobody wants are removed.
pub fn diff(want: &Desired, seen: &Observed) -> Vec<Change> {
    let mut out = Vec::new();
    for r in &seen.routes {
        if !want.routes.contains_key(&r.dst) {
            out.push(Change::DelRoute(*r));
        }
    }
    for r in want.routes.values() {
        let ok = seen
            .routes
            .iter()
            .any(|s| s.dst == r.dst && s.gateway == r.gateway && s.oif == r.oif);
        if !ok {
            out.push(Change::SetRoute(*r));
        }
    }
    for n in &seen.neighs {
        if !want.neighs.contains(n) {
            out.push(Change::DelNeigh(*n));
        }
    }
    for n in &want.neighs {
        if !seen.neighs.contains(n) {
            out.push(Change::SetNeigh(*n));
        }
    }
    for f in &seen.fdbs {
        if !want.fdbs.contains(f) {
            out.push(Change::DelFdb(*f));
        }
    }
    for f in &want.fdbs {
        if !seen.fdbs.contains(f) {
            out.push(Change::SetFdb(*f));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, addr: &str, cidr: &str) -> Peer {
        Peer {
            name: name.into(),
            address: addr.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
            mode: None,
        }
    }

    fn planned() -> Vec<PlannedPeer> {
        vec![
            PlannedPeer {
                peer: peer("b", "192.168.1.11", "10.2.0.0/24"),
                plane: Plane::HostGw,
            },
            PlannedPeer {
                peer: peer("c", "192.168.2.12", "10.3.0.0/24"),
                plane: Plane::Vxlan,
            },
            PlannedPeer {
                peer: peer("d", "192.168.3.13", "10.4.0.0/24"),
                plane: Plane::Ipip,
            },
        ]
    }

    fn devs() -> Devices {
        Devices {
            underlay: 2,
            vxlan: Some(7),
            ipip: None,
            tun: Some(9),
        }
    }

    #[test]
    fn desired_state_per_plane() {
        let d = desired(&planned(), &devs());
        let r = |c: &str| d.routes[&c.parse().unwrap()];
        assert_eq!(
            r("10.2.0.0/24").gateway,
            Some("192.168.1.11".parse().unwrap())
        );
        assert_eq!(r("10.2.0.0/24").oif, 2);
        assert!(!r("10.2.0.0/24").onlink);
        assert_eq!(r("10.3.0.0/24").gateway, Some("10.3.0.0".parse().unwrap()));
        assert!(r("10.3.0.0/24").onlink && r("10.3.0.0/24").oif == 7);
        assert_eq!(r("10.4.0.0/24").gateway, None);
        assert_eq!(r("10.4.0.0/24").oif, 9);
        assert_eq!(
            d.neighs,
            vec![Neigh {
                ip: "10.3.0.0".parse().unwrap(),
                mac: [2, 0x5e, 192, 168, 2, 12]
            }]
        );
        assert_eq!(d.fdbs[0].dst, "192.168.2.12".parse::<Ipv4Addr>().unwrap());
        // A kernel IPIP device wins over the TUN and routes via the peer, onlink.
        let d = desired(
            &planned(),
            &Devices {
                ipip: Some(5),
                ..devs()
            },
        );
        let ip = d.routes[&"10.4.0.0/24".parse().unwrap()];
        assert_eq!((ip.oif, ip.onlink), (5, true));
        assert_eq!(ip.gateway, Some("192.168.3.13".parse().unwrap()));
        let d = desired(&planned(), &Devices::default());
        assert_eq!(d.missing.len(), 2);
    }

    #[test]
    fn diff_repairs_drift_and_removes_unlisted_peers() {
        let want = desired(&planned(), &devs());
        let mut seen = Observed {
            routes: want.routes.values().copied().collect(),
            neighs: want.neighs.clone(),
            fdbs: want.fdbs.clone(),
        };
        assert!(diff(&want, &seen).is_empty());
        // A route deleted by hand comes back; an altered one is replaced.
        let gone = seen.routes.remove(0);
        seen.routes[0].gateway = Some("10.3.0.9".parse().unwrap());
        let c = diff(&want, &seen);
        assert!(c.contains(&Change::SetRoute(gone)), "{c:?}");
        assert!(c.contains(&Change::SetRoute(
            want.routes[&"10.3.0.0/24".parse().unwrap()]
        )));
        assert_eq!(c.len(), 2, "{c:?}");
        // A peer no longer listed: its route, neighbour and fdb entry go.
        let fewer = desired(&planned()[..1], &devs());
        let seen = Observed {
            routes: want.routes.values().copied().collect(),
            neighs: want.neighs.clone(),
            fdbs: want.fdbs.clone(),
        };
        let c = diff(&fewer, &seen);
        assert_eq!(
            c.iter()
                .filter(|c| matches!(c, Change::DelRoute(_)))
                .count(),
            2
        );
        assert!(c.contains(&Change::DelNeigh(want.neighs[0])));
        assert!(c.contains(&Change::DelFdb(want.fdbs[0])));
        assert!(!c.iter().any(|c| matches!(c, Change::SetRoute(_))));
    }
}
