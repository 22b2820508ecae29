//! Netlink executor of peering: finds the underlay interface, creates and repairs the VXLAN,
//! IPIP and TUN devices (marked by alias), reads shimnet's routes and the VXLAN device's
//! neighbour/forwarding entries, and carries out [`Change`]s.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnetwork::Ipv4Network;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkIpIp, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

use super::plan::{Change, Fdb, Neigh, Observed, Route, RTPROT_SHIMNET};
use crate::kernel::Sysctl;
use crate::netlink::query::{self, dump};
use crate::netlink::{errno, request_error, NetlinkError};
use crate::sysctl::ProcSys;

/// The underlay interface: index, MTU and this node's address with the interface's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    /// Interface index.
    pub index: u32,
    /// Interface MTU.
    pub mtu: u32,
    /// `[node] address` with its prefix (the L2 subnet).
    pub net: Ipv4Network,
    /// Bytes of link-layer header in front of the IP header (`None`: not Ethernet).
    pub l2: Option<u8>,
}

/// Finds the interface holding `addr`.
pub async fn underlay(h: &Handle, addr: Ipv4Addr) -> Result<Underlay, NetlinkError> {
    let addrs = query::all_addresses(h).await?;
    let (index, prefix) = addrs
        .iter()
        .find_map(|(i, ip, p)| (*ip == IpAddr::V4(addr)).then_some((*i, *p)))
        .ok_or_else(|| NetlinkError::Request {
            op: "find underlay interface of",
            object: addr.to_string(),
            msg: "no interface holds this address ([node] address)".into(),
        })?;
    let link = link_by_index(h, index).await?;
    let ether = link.as_ref().is_some_and(|l| {
        l.header.link_layer_type == rtnetlink::packet_route::link::LinkLayerType::Ether
    });
    Ok(Underlay {
        index,
        l2: ether.then_some(super::tc_ipip::ETHERNET),
        mtu: link.as_ref().and_then(query::mtu).unwrap_or(1500),
        net: Ipv4Network::new(addr, prefix).map_err(|e| NetlinkError::Request {
            op: "underlay prefix of",
            object: addr.to_string(),
            msg: e.to_string(),
        })?,
    })
}

async fn link_by_index(h: &Handle, index: u32) -> Result<Option<LinkMessage>, NetlinkError> {
    let mut s = h.link().get().match_index(index).execute();
    match s.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(request_error("get link", format!("#{index}"), e)),
    }
}

/// A peering device as it should be.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Device name.
    pub name: String,
    /// Owner alias.
    pub alias: String,
    /// MTU.
    pub mtu: u32,
    /// Address set /32 on the device.
    pub addr: Ipv4Addr,
    /// MAC, where the device has one (VXLAN).
    pub mac: Option<[u8; 6]>,
}

/// How to create a missing device.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// VXLAN with this VNI and UDP port, local address and underlay index; no learning.
    Vxlan {
        /// VNI.
        vni: u32,
        /// UDP port.
        port: u16,
        /// Local underlay address.
        local: Ipv4Addr,
        /// Underlay index.
        dev: u32,
    },
    /// Kernel IPIP with this local address (no remote: the route's next hop is the remote).
    Ipip {
        /// Local underlay address.
        local: Ipv4Addr,
    },
    /// An existing device made by someone else (the TUN of the userspace data plane).
    Existing,
    /// A veth pair without ARP, both ends up and without IPv6 (the route device of IPIP in tc
    /// programs; the other end is `peer`).
    Veth {
        /// Name of the other end.
        peer: &'static str,
    },
}

/// Creates (if missing) and repairs a device: alias, MTU, MAC, up, address. Returns its index
/// and whether anything was repaired. A device of that name without shimnet's alias is refused.
pub async fn ensure_device(
    h: &Handle,
    spec: &DeviceSpec,
    kind: Kind,
) -> Result<(u32, bool), NetlinkError> {
    let mut repaired = false;
    let link = match query::link_by_name(h, &spec.name).await? {
        Some(l) => l,
        None => {
            let msg = match kind {
                Kind::Vxlan {
                    vni,
                    port,
                    local,
                    dev,
                } => LinkVxlan::new(&spec.name, vni)
                    .port(port)
                    .local(local)
                    .dev(dev)
                    .learning(false)
                    // A zero UDP checksum (the inner packet carries its own), so the peers'
                    // programs can decapsulate without verifying one.
                    .udp_csum(false)
                    .mtu(spec.mtu)
                    .alias(spec.alias.clone())
                    .build(),
                Kind::Ipip { local } => LinkIpIp::new(&spec.name)
                    .local(local)
                    .ttl(64)
                    .pmtudisc(true)
                    .mtu(spec.mtu)
                    .alias(spec.alias.clone())
                    .build(),
                Kind::Veth { peer } => LinkVeth::new(&spec.name, peer)
                    .mtu(spec.mtu)
                    .arp(false)
                    .alias(spec.alias.clone())
                    .build(),
                Kind::Existing => {
                    return Err(NetlinkError::Request {
                        op: "configure device",
                        object: spec.name.clone(),
                        msg: "no such device".into(),
                    })
                }
            };
            h.link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| request_error("create device", &spec.name, e))?;
            repaired = true;
            query::link_by_name(h, &spec.name)
                .await?
                .ok_or_else(|| NetlinkError::Request {
                    op: "create device",
                    object: spec.name.clone(),
                    msg: "gone right after creation".into(),
                })?
        }
    };
    let index = link.header.index;
    let alias = query::alias(&link);
    if matches!(kind, Kind::Vxlan { .. }) {
        ipv6_off(&spec.name)?;
    }
    // The kernel ignores IFLA_IFALIAS on creation: a device created just now gets it below.
    if !repaired && !matches!(kind, Kind::Existing) && alias.as_deref() != Some(spec.alias.as_str())
    {
        return Err(NetlinkError::Request {
            op: "adopt device",
            object: spec.name.clone(),
            msg: format!("exists without shimnet's alias {:?}", spec.alias),
        });
    }
    if let Kind::Veth { peer } = kind {
        ipv6_off(&spec.name)?;
        repaired |= other_end_up(h, peer, spec.mtu).await?;
    }
    let mut set = LinkUnspec::new_with_index(index);
    let mut change = false;
    if matches!(kind, Kind::Veth { .. }) && !link.header.flags.contains(LinkFlags::Noarp) {
        set = set.arp(false);
        change = true;
    }
    if alias.as_deref() != Some(spec.alias.as_str()) {
        set = set.alias(spec.alias.clone());
        change = true;
    }
    if query::mtu(&link) != Some(spec.mtu) {
        set = set.mtu(spec.mtu);
        change = true;
    }
    if let Some(mac) = spec.mac {
        if query::mac(&link).as_deref() != Some(&mac[..]) {
            set = set.address(mac.to_vec());
            change = true;
        }
    }
    if !query::is_up(&link) {
        set = set.up();
        change = true;
    }
    if change {
        h.link()
            .set(set.build())
            .execute()
            .await
            .map_err(|e| request_error("repair device", &spec.name, e))?;
        repaired = true;
    }
    let have = query::addresses(h, index, &spec.name).await?;
    if !have.contains(&(IpAddr::V4(spec.addr), 32)) {
        match h
            .address()
            .add(index, IpAddr::V4(spec.addr), 32)
            .execute()
            .await
        {
            Ok(()) => repaired = true,
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(request_error("add address to", &spec.name, e)),
        }
    }
    Ok((index, repaired))
}

/// Turns IPv6 off on the VXLAN device before it comes up, as on bridge ports: it carries only
/// IPv4 between nodes, and a link-local address would only bring duplicate address detection,
/// router solicitations and their notifications (a host without IPv6 has nothing to turn off).
fn ipv6_off(name: &str) -> Result<(), NetlinkError> {
    let sysctl = ProcSys;
    match sysctl.set(&format!("net/ipv6/conf/{name}/disable_ipv6"), "1") {
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound && !sysctl.exists("net/ipv6") => {
            Ok(())
        }
        Err(e) => Err(NetlinkError::Request {
            op: "turn IPv6 off on",
            object: name.to_string(),
            msg: e.to_string(),
        }),
        Ok(()) => Ok(()),
    }
}

/// Brings the other end `name` of a veth pair up with IPv6 off and MTU `mtu`; whether it had
/// to change anything.
async fn other_end_up(h: &Handle, name: &str, mtu: u32) -> Result<bool, NetlinkError> {
    let link = query::link_by_name(h, name)
        .await?
        .ok_or_else(|| NetlinkError::Request {
            op: "find other end of veth pair",
            object: name.to_string(),
            msg: "no such device".into(),
        })?;
    ipv6_off(name)?;
    if query::is_up(&link) && query::mtu(&link) == Some(mtu) {
        return Ok(false);
    }
    h.link()
        .set(
            LinkUnspec::new_with_index(link.header.index)
                .mtu(mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|e| request_error("bring up", name, e))?;
    Ok(true)
}

/// The index of link `name`, if there is one.
pub async fn link_index(h: &Handle, name: &str) -> Result<Option<u32>, NetlinkError> {
    Ok(query::link_by_name(h, name).await?.map(|l| l.header.index))
}

/// Whether a link called `name` exists.
pub async fn link_exists(h: &Handle, name: &str) -> Result<bool, NetlinkError> {
    Ok(link_index(h, name).await?.is_some())
}

/// Deletes device `name` if it carries `alias`; `Ok(true)` if it was deleted.
pub async fn delete_owned(h: &Handle, name: &str, alias: &str) -> Result<bool, NetlinkError> {
    match query::link_by_name(h, name).await? {
        Some(l) if query::alias(&l).as_deref() == Some(alias) => {
            query::delete_by_name(h, name).await
        }
        _ => Ok(false),
    }
}

/// Shimnet's routes (protocol [`RTPROT_SHIMNET`], main table) and the VXLAN device's
/// permanent neighbour and forwarding entries.
pub async fn observe(h: &Handle, vxlan: Option<u32>) -> Result<Observed, NetlinkError> {
    let routes: Vec<RouteMessage> = dump("list routes", "ipv4", || {
        h.route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
    })
    .await?;
    let mut out = Observed {
        routes: routes.iter().filter_map(owned_route).collect(),
        ..Observed::default()
    };
    if let Some(vx) = vxlan {
        let neighs: Vec<NeighbourMessage> = dump("list neighbours", "ipv4", || {
            h.neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute()
        })
        .await?;
        out.neighs = neighs
            .iter()
            .filter(|m| m.header.ifindex == vx && m.header.state == NeighbourState::Permanent)
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                Some(Neigh {
                    ip,
                    mac: lladdr(m)?,
                })
            })
            .collect();
        let fdbs: Vec<NeighbourMessage> = dump("list forwarding entries", "bridge", || {
            h.neighbours()
                .get()
                .set_address_family(AddressFamily::Bridge)
                .execute()
        })
        .await?;
        out.fdbs = fdbs
            .iter()
            .filter(|m| m.header.ifindex == vx)
            .filter_map(|m| {
                // AF_BRIDGE entries carry NDA_DST as raw bytes.
                let dst = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                    }
                    _ => None,
                })?;
                Some(Fdb {
                    mac: lladdr(m)?,
                    dst,
                })
            })
            .collect();
    }
    Ok(out)
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(v) => <[u8; 6]>::try_from(v.as_slice()).ok(),
        _ => None,
    })
}

/// The route `m` describes, if it is one of shimnet's peer routes.
pub(crate) fn owned_route(m: &RouteMessage) -> Option<Route> {
    if m.header.protocol != RouteProtocol::from(RTPROT_SHIMNET)
        || m.header.address_family != AddressFamily::Inet
    {
        return None;
    }
    if !crate::netlink::query::in_main_table(m) {
        return None;
    }
    let dst = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let gateway = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
        _ => None,
    });
    let oif = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })?;
    Some(Route {
        dst: Ipv4Network::new(dst, m.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
    })
}

fn route_msg(r: &Route) -> RouteMessage {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix())
        .output_interface(r.oif)
        .protocol(RouteProtocol::from(RTPROT_SHIMNET));
    if let Some(gw) = r.gateway {
        b = b.gateway(gw);
    }
    if r.onlink {
        b = b.onlink();
    }
    b.build()
}

/// Marks a neighbour/forwarding entry as shimnet's (NDA_PROTOCOL = [`RTPROT_SHIMNET`]).
fn mark(m: &mut NeighbourMessage) {
    m.attributes
        .push(NeighbourAttribute::Protocol(RouteProtocol::from(
            RTPROT_SHIMNET,
        )));
}

fn neigh_msg(index: u32, family: AddressFamily) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m
}

/// Carries out one change; `vxlan` is the VXLAN device index (for neighbour/fdb changes).
pub async fn apply(h: &Handle, change: &Change, vxlan: Option<u32>) -> Result<(), NetlinkError> {
    let vx = || {
        vxlan.ok_or_else(|| NetlinkError::Request {
            op: "vxlan entry",
            object: format!("{change:?}"),
            msg: "no VXLAN device".into(),
        })
    };
    let gone = |e: &rtnetlink::Error| matches!(errno(e), Some(libc::ESRCH | libc::ENOENT));
    match change {
        Change::SetRoute(r) => h
            .route()
            .add(route_msg(r))
            .replace()
            .execute()
            .await
            .map_err(|e| request_error("set route", r.dst.to_string(), e)),
        Change::DelRoute(r) => match h.route().del(route_msg(r)).execute().await {
            Err(e) if !gone(&e) => Err(request_error("delete route", r.dst.to_string(), e)),
            _ => Ok(()),
        },
        Change::SetNeigh(n) => {
            let mut req = h
                .neighbours()
                .add(vx()?, IpAddr::V4(n.ip))
                .link_layer_address(&n.mac)
                .state(NeighbourState::Permanent)
                .replace();
            mark(req.message_mut());
            req.execute()
                .await
                .map_err(|e| request_error("set neighbour", n.ip.to_string(), e))
        }
        Change::DelNeigh(n) => {
            let mut m = neigh_msg(vx()?, AddressFamily::Inet);
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    n.ip,
                )));
            match h.neighbours().del(m).execute().await {
                Err(e) if !gone(&e) => Err(request_error("delete neighbour", n.ip.to_string(), e)),
                _ => Ok(()),
            }
        }
        Change::SetFdb(f) => {
            let req = h
                .neighbours()
                .add_bridge(vx()?, &f.mac)
                .destination(IpAddr::V4(f.dst))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace();
            // VXLAN forwarding entries keep no protocol: the owned device marks them.
            req.execute()
                .await
                .map_err(|e| request_error("set forwarding entry", f.dst.to_string(), e))
        }
        Change::DelFdb(f) => {
            let mut m = neigh_msg(vx()?, AddressFamily::Bridge);
            m.header.flags = NeighbourFlags::Own;
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(f.mac.to_vec()));
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    f.dst,
                )));
            match h.neighbours().del(m).execute().await {
                Err(e) if !gone(&e) => Err(request_error(
                    "delete forwarding entry",
                    f.dst.to_string(),
                    e,
                )),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::route::RouteHeader;

    #[test]
    fn route_messages_round_trip_through_the_owner_filter() {
        let r = Route {
            dst: "10.2.0.0/24".parse().unwrap(),
            gateway: Some("10.2.0.0".parse().unwrap()),
            oif: 7,
            onlink: true,
        };
        let mut m = route_msg(&r);
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        assert_eq!(owned_route(&m), Some(r));
        m.header.protocol = RouteProtocol::Static;
        assert_eq!(
            owned_route(&m),
            None,
            "a route of another protocol is not ours"
        );
    }
}
