//! Endpoint veth pairs: the per-container hot path, as three executor calls the engine's plan
//! makes one after the other ([`create_pair`], then [`configure_port`] and
//! [`configure_container`] side by side).
//!
//! One RTM_NEWLINK creates the pair with the peer born inside the container namespace under its
//! final name, MAC and MTU (or, for a prepared endpoint, beside the host end under a temporary
//! name), and the host end already enslaved. Then the host end gets its alias and bridge-port
//! flags and comes up over the daemon's socket, while the container end is brought up and gets
//! addresses, `lo` up and default routes over a socket opened inside the container namespace.
//! (The peer cannot be created up: veth refuses to open a device whose peer is not linked yet,
//! ENOTCONN.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{bridge, errno, netns, query, request_error, NetlinkError};
use crate::kernel::{BridgePort, ContainerConfig, PairSpec};

/// The RTM_NEWLINK message creating the pair (pure).
///
/// Host end: name, MTU, master, down (it comes up with its port settings, after IPv6 is off).
/// Peer: name, MAC, MTU, and the target namespace by fd when it has one (else it stays beside the
/// host end).
pub(crate) fn create_message(
    pair: &PairSpec,
    bridge_index: u32,
    netns_fd: Option<RawFd>,
) -> LinkMessage {
    let mut peer = LinkUnspec::new_with_name(pair.peer.as_str())
        .address(pair.peer_mac.0.to_vec())
        .mtu(pair.mtu);
    if let Some(fd) = netns_fd {
        peer = peer.setns_by_fd(fd);
    }
    LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(pair.host.as_str())
        .mtu(pair.mtu)
        .controller(bridge_index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build()
}

/// `addrgenmode none`: no IPv6 link-local address, hence no DAD, router solicitation or MLD
/// traffic. Host ends are bridge ports and need no address; without this every new port's
/// IPv6 chatter is flooded to every other port, which makes attaching cost O(ports). Container
/// ends of IPv4-only networks get it too (IPv6 is disabled there likewise).
pub(crate) fn no_ipv6_link_local() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

/// The message setting a host end's alias and bridge-port flags and bringing it up, addressed by
/// name (pure).
pub(crate) fn host_port_message(port: &BridgePort) -> LinkMessage {
    LinkBridgePort::new(0)
        .name(port.name.as_str())
        .append_extra_attribute(no_ipv6_link_local())
        .up()
        .alias(port.alias.clone())
        .hairpin(port.hairpin)
        .isolated(port.isolated)
        .neigh_suppress(port.neigh_suppress)
        .proxy_arp_wifi(port.proxy_arp_wifi)
        .build()
}

/// Creates the pair (the bridge index looked up unless the plan knows it).
pub(crate) async fn create_pair(h: &Handle, pair: &PairSpec) -> Result<(), NetlinkError> {
    let ns = pair.peer_netns.as_deref().map(netns::open).transpose()?;
    let bridge_index = match pair.bridge_index {
        Some(i) => i,
        None => query::bridge_index(h, pair.bridge.as_str()).await?,
    };
    let msg = create_message(pair, bridge_index, ns.as_ref().map(|f| f.as_raw_fd()));
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| match errno(&e) {
            Some(libc::EXFULL) => NetlinkError::BridgeFull {
                op: "create veth pair",
                object: pair.host.to_string(),
                bridge: pair.bridge.to_string(),
            },
            _ => request_error("create veth pair", pair.host.as_str(), e),
        })
}

/// Applies a port's settings and brings it up, first re-enslaving it if asked.
pub(crate) async fn configure_port(h: &Handle, port: &BridgePort) -> Result<(), NetlinkError> {
    let name = port.name.as_str();
    if let Some(bridge) = &port.enslave {
        let index = query::bridge_index(h, bridge.as_str()).await?;
        let msg = LinkUnspec::new_with_name(name).controller(index).build();
        h.link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| match errno(&e) {
                Some(libc::EXFULL) => NetlinkError::BridgeFull {
                    op: "attach veth to bridge",
                    object: name.to_string(),
                    bridge: bridge.to_string(),
                },
                _ => request_error("attach veth to bridge", name, e),
            })?;
    }
    h.link()
        .set_port(host_port_message(port))
        .execute()
        .await
        .map_err(|e| request_error("configure bridge port", name, e))
}

/// Brings the container end up; IPv4-only networks get no IPv6 link-local (pure).
pub(crate) fn container_up_message(cfg: &ContainerConfig, index: u32) -> LinkMessage {
    let mut b = LinkUnspec::new_with_index(index);
    if !cfg.ipv6_link_local {
        b = b.append_extra_attribute(no_ipv6_link_local());
    }
    b.up().build()
}

/// Inside the container namespace (`h` lives there): link up, addresses, `lo` up, then default
/// routes. `object` names the namespace in errors.
pub(crate) async fn configure_container(
    h: &Handle,
    cfg: &ContainerConfig,
    where_: &str,
) -> Result<(), NetlinkError> {
    let name = cfg.ifname.as_str();
    let object = format!("{name} in {where_}");
    let index = query::link_by_name(h, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| NetlinkError::Request {
            op: "configure container end",
            object: object.clone(),
            msg: "link missing right after creation".into(),
        })?;
    let link_up = async {
        h.link()
            .change(container_up_message(cfg, index))
            .execute()
            .await
            .map_err(|e| request_error("set up", object.clone(), e))
    };
    let lo_up = async {
        h.link()
            .change(LinkUnspec::new_with_name("lo").up().build())
            .execute()
            .await
            .map_err(|e| request_error("set up", format!("lo in {where_}"), e))
    };
    let addrs = futures::future::join_all(
        cfg.addrs
            .iter()
            .map(|a| bridge::add_address(h, index, *a, &object)),
    );
    // Requests on one socket are handled in order: the link is up before routes are added.
    let (a, b, c) = futures::join!(link_up, lo_up, addrs);
    a.and(b)?;
    c.into_iter().collect::<Result<Vec<()>, _>>()?;
    let routes = futures::future::join_all(
        cfg.gateways
            .iter()
            .map(|gw| add_default_route(h, index, *gw, &object)),
    );
    routes.await.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(())
}

/// Adds (or replaces) the default route via `gw` out of link `index`.
async fn add_default_route(
    h: &Handle,
    index: u32,
    gw: IpAddr,
    object: &str,
) -> Result<(), NetlinkError> {
    let msg = match gw {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(index)
            .gateway(gw)
            .build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new()
            .output_interface(index)
            .gateway(gw)
            .build(),
    };
    match h.route().add(msg).replace().execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(request_error(
            "add default route",
            format!("via {gw} on {object}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IfName, MacAddr};
    use rtnetlink::packet_route::link::{
        InfoBridgePort, InfoPortData, LinkAttribute, LinkInfo as NlLinkInfo,
    };

    fn pair(netns: bool) -> PairSpec {
        PairSpec {
            host: IfName::new("snv0123456789ab").unwrap(),
            mtu: 1450,
            bridge: IfName::new("snbr0").unwrap(),
            bridge_index: Some(7),
            peer: IfName::new(if netns { "eth0" } else { "snp0123456789ab" }).unwrap(),
            peer_mac: MacAddr([2, 0x42, 10, 88, 0, 2]),
            peer_netns: netns.then(|| "/run/netns/c".into()),
        }
    }

    fn infos(m: &LinkMessage) -> &[NlLinkInfo] {
        m.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.as_slice()),
                _ => None,
            })
            .expect("link info")
    }

    fn peer_of(m: &LinkMessage) -> &LinkMessage {
        infos(m)
            .iter()
            .find_map(|i| match i {
                NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p),
                _ => None,
            })
            .expect("peer")
    }

    #[test]
    fn create_message_puts_peer_in_namespace_with_final_name() {
        let m = create_message(&pair(true), 7, Some(42));
        assert_eq!(query::name(&m).as_deref(), Some("snv0123456789ab"));
        assert_eq!(query::master(&m), Some(7));
        assert_eq!(query::mtu(&m), Some(1450));
        assert!(
            !query::is_up(&m),
            "host end comes up after addrgenmode is set"
        );
        let peer = peer_of(&m);
        assert_eq!(query::name(peer).as_deref(), Some("eth0"));
        assert_eq!(query::mac(peer), Some(vec![2, 0x42, 10, 88, 0, 2]));
        assert_eq!(query::mtu(peer), Some(1450));
        assert!(
            !query::is_up(peer),
            "veth refuses to open a peer before the pair is linked"
        );
        assert!(peer.attributes.contains(&LinkAttribute::NetNsFd(42)));
    }

    #[test]
    fn prepared_peer_stays_in_the_daemon_namespace() {
        let m = create_message(&pair(false), 9, None);
        assert_eq!(query::master(&m), Some(9));
        let peer = peer_of(&m);
        assert_eq!(query::name(peer).as_deref(), Some("snp0123456789ab"));
        assert_eq!(query::mac(peer), Some(vec![2, 0x42, 10, 88, 0, 2]));
        assert!(!peer
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::NetNsFd(_) | LinkAttribute::NetNsPid(_))));
    }

    #[test]
    fn host_port_message_sets_alias_and_flags() {
        let port = BridgePort {
            name: IfName::new("snv0123456789ab").unwrap(),
            alias: "shimnet:ep=n/c/eth0".into(),
            hairpin: true,
            isolated: true,
            neigh_suppress: true,
            proxy_arp_wifi: false,
            enslave: None,
        };
        let m = host_port_message(&port);
        assert_eq!(m.header.index, 0);
        assert_eq!(query::name(&m).as_deref(), Some("snv0123456789ab"));
        assert_eq!(query::alias(&m).as_deref(), Some("shimnet:ep=n/c/eth0"));
        let data = infos(&m)
            .iter()
            .find_map(|i| match i {
                NlLinkInfo::PortData(InfoPortData::BridgePort(p)) => Some(p),
                _ => None,
            })
            .expect("port data");
        assert!(data.contains(&InfoBridgePort::HairpinMode(true)));
        assert!(data.contains(&InfoBridgePort::Isolated(true)));
        assert!(data.contains(&InfoBridgePort::NeighSupress(true)));
        assert!(query::is_up(&m));
        assert!(m.attributes.contains(&no_ipv6_link_local()));
    }

    #[test]
    fn container_end_has_ipv6_only_on_ipv6_networks() {
        let mut c = ContainerConfig {
            ifname: IfName::new("eth0").unwrap(),
            addrs: vec!["10.88.0.2/24".parse().unwrap()],
            gateways: vec![],
            ipv6_link_local: false,
        };
        let m = container_up_message(&c, 9);
        assert!(query::is_up(&m));
        assert!(m.attributes.contains(&no_ipv6_link_local()));
        c.ipv6_link_local = true;
        assert!(!container_up_message(&c, 9)
            .attributes
            .contains(&no_ipv6_link_local()));
    }
}
