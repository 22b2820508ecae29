//! Endpoint veth pairs: the per-container hot path.
//!
//! One RTM_NEWLINK creates the pair with the peer born inside the container namespace under its
//! final name, MAC and MTU, and the host end already enslaved and up. Then, in parallel: the host
//! end gets its alias and bridge-port flags over the daemon's socket, and the container end is
//! brought up and gets addresses, `lo` up and default routes over a socket opened inside the
//! container namespace. (The peer cannot be created up: veth refuses to open a device whose
//! peer is not linked yet, ENOTCONN.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, RawFd};

use ipnetwork::IpNetwork;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use super::{bridge, errno, netns, query, request_error, NetlinkError, VethConfig};

/// The RTM_NEWLINK message creating the pair (pure).
///
/// Host end: name, MTU, master, up. Peer: final name, MAC, MTU, target namespace (by fd).
pub(crate) fn create_message(cfg: &VethConfig, bridge_index: u32, netns_fd: RawFd) -> LinkMessage {
    let peer = LinkUnspec::new_with_name(cfg.container_ifname.as_str())
        .address(cfg.mac.0.to_vec())
        .mtu(cfg.mtu)
        .setns_by_fd(netns_fd)
        .build();
    // Created down: the kernel takes `addrgenmode` only on an existing link, and it must be set
    // before the link comes up (see `host_port_message`).
    LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(cfg.host_ifname.as_str())
        .mtu(cfg.mtu)
        .controller(bridge_index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build()
}

/// `addrgenmode none`: no IPv6 link-local address, hence no DAD, router solicitation or MLD
/// traffic. Host ends are bridge ports and need no address; without this every new port's
/// IPv6 chatter is flooded to every other port, which makes attaching cost O(ports). Container
/// ends of IPv4-only networks get it too (docker disables IPv6 there likewise).
pub(crate) fn no_ipv6_link_local() -> LinkAttribute {
    LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(
        In6AddrGenMode::None,
    )])])
}

/// The message setting the host end's alias and bridge-port flags, addressed by name (pure).
pub(crate) fn host_port_message(cfg: &VethConfig) -> LinkMessage {
    LinkBridgePort::new(0)
        .name(cfg.host_ifname.as_str())
        .append_extra_attribute(no_ipv6_link_local())
        .up()
        .alias(cfg.host_alias.clone())
        .hairpin(cfg.hairpin)
        .isolated(cfg.isolated)
        .build()
}

/// Turns IPv6 off on a bridge port before it comes up (`net/ipv6/conf/<port>/disable_ipv6`).
///
/// Every IPv6-enabled device that comes up adds an `ff00::/8` multicast route to its namespace's
/// local table, and every link up, down or carrier change walks the whole IPv6 FIB
/// (`fib6_ifdown`/`fib6_ifup` over all routes). With IPv6 on the ports, each attach and detach
/// therefore cost more the more ports there were. A bridge port forwards IPv6 frames at L2
/// without an IPv6 stack of its own, as with `addrgenmode none` (kept: it also covers hosts where
/// the sysctl write is refused).
pub(crate) fn port_ipv6_off(port: &str) -> Result<(), NetlinkError> {
    let key = format!("net/ipv6/conf/{port}/disable_ipv6");
    match crate::sysctl::set(&key, "1") {
        Ok(()) => Ok(()),
        // No IPv6 in this kernel (or namespace): nothing to turn off.
        Err(e)
            if e.source.kind() == std::io::ErrorKind::NotFound
                && !std::path::Path::new("/proc/sys/net/ipv6").exists() =>
        {
            Ok(())
        }
        Err(e) => Err(NetlinkError::Request {
            op: "turn IPv6 off on bridge port",
            object: port.to_string(),
            msg: e.to_string(),
        }),
    }
}

/// Creates and configures the endpoint; on failure after creation, removes the host end.
pub(crate) async fn attach(h: &Handle, cfg: &VethConfig) -> Result<(), NetlinkError> {
    let ns = netns::open(&cfg.netns)?;
    let host = cfg.host_ifname.as_str();
    // Enter the namespace on a side thread while the daemon socket removes any stale pair and
    // looks up the bridge.
    let (ns_handle, bridge_index, stale) = futures::join!(
        netns::connect_in(&ns, &cfg.netns),
        query::bridge_index(h, cfg.bridge.as_str()),
        query::delete_by_name(h, host),
    );
    // Results are checked after the join so that every branch has finished.
    let ns_handle = ns_handle?;
    let bridge_index = bridge_index?;
    stale?;

    let msg = create_message(cfg, bridge_index, ns.as_raw_fd());
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| request_error("create veth pair", host, e))?;
    if let Err(e) = port_ipv6_off(host) {
        let _ = query::delete_by_name(h, host).await;
        return Err(e);
    }

    let configured = async {
        let (a, b) = futures::join!(
            async {
                h.link()
                    .set_port(host_port_message(cfg))
                    .execute()
                    .await
                    .map_err(|e| request_error("configure bridge port", host, e))
            },
            configure_container(&ns_handle, cfg),
        );
        a.and(b)
    }
    .await;
    if let Err(e) = configured {
        // Best effort: the error that matters is the first one.
        let _ = query::delete_by_name(h, host).await;
        return Err(e);
    }
    Ok(())
}

/// Inside the container namespace: link up, addresses, `lo` up, default routes.
/// Brings the container end up; IPv4-only networks get no IPv6 link-local (pure).
pub(crate) fn container_up_message(cfg: &VethConfig, index: u32) -> LinkMessage {
    let mut b = LinkUnspec::new_with_index(index);
    if cfg.ipv6.is_none() {
        b = b.append_extra_attribute(no_ipv6_link_local());
    }
    b.up().build()
}

async fn configure_container(h: &Handle, cfg: &VethConfig) -> Result<(), NetlinkError> {
    let name = cfg.container_ifname.as_str();
    let object = format!("{name} in {}", cfg.netns.display());
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
            .map_err(|e| request_error("set up", format!("lo in {}", cfg.netns.display()), e))
    };
    let v4 = bridge::add_address(h, index, IpNetwork::V4(cfg.ipv4), &object);
    let v6 = async {
        match cfg.ipv6 {
            Some(n) => bridge::add_address(h, index, IpNetwork::V6(n), &object).await,
            None => Ok(()),
        }
    };
    // Requests on one socket are handled in order: the link is up before routes are added.
    let (a, b, c, d) = futures::join!(link_up, lo_up, v4, v6);
    a.and(b).and(c).and(d)?;
    let r4 = async {
        match cfg.gateway {
            Some(gw) => add_default_route(h, index, IpAddr::V4(gw), &object).await,
            None => Ok(()),
        }
    };
    let r6 = async {
        match cfg.gateway6 {
            Some(gw) => add_default_route(h, index, IpAddr::V6(gw), &object).await,
            None => Ok(()),
        }
    };
    let (a, b) = futures::join!(r4, r6);
    a.and(b)
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

    fn cfg() -> VethConfig {
        VethConfig {
            bridge: IfName::new("snbr0").unwrap(),
            host_ifname: IfName::new("snv0123456789ab").unwrap(),
            host_alias: "shimnet:ep=n/c/eth0".into(),
            netns: "/run/netns/c".into(),
            container_ifname: IfName::new("eth0").unwrap(),
            mac: MacAddr([2, 0x42, 10, 88, 0, 2]),
            ipv4: "10.88.0.2/24".parse().unwrap(),
            ipv6: None,
            gateway: Some("10.88.0.1".parse().unwrap()),
            gateway6: None,
            mtu: 1450,
            hairpin: true,
            isolated: false,
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

    #[test]
    fn create_message_puts_peer_in_namespace_with_final_name() {
        let m = create_message(&cfg(), 7, 42);
        assert_eq!(query::name(&m).as_deref(), Some("snv0123456789ab"));
        assert_eq!(query::master(&m), Some(7));
        assert_eq!(query::mtu(&m), Some(1450));
        assert!(
            !query::is_up(&m),
            "host end comes up after addrgenmode is set"
        );
        let peer = infos(&m)
            .iter()
            .find_map(|i| match i {
                NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p),
                _ => None,
            })
            .expect("peer");
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
    fn host_port_message_sets_alias_and_flags() {
        let mut c = cfg();
        c.isolated = true;
        let m = host_port_message(&c);
        assert_eq!(m.header.index, 0);
        assert_eq!(query::name(&m).as_deref(), Some("snv0123456789ab"));
        assert_eq!(query::alias(&m).as_deref(), Some("shimnet:ep=n/c/eth0"));
        let port = infos(&m)
            .iter()
            .find_map(|i| match i {
                NlLinkInfo::PortData(InfoPortData::BridgePort(p)) => Some(p),
                _ => None,
            })
            .expect("port data");
        assert!(port.contains(&InfoBridgePort::HairpinMode(true)));
        assert!(port.contains(&InfoBridgePort::Isolated(true)));
        assert!(query::is_up(&m));
        assert!(m.attributes.contains(&no_ipv6_link_local()));
    }

    #[test]
    fn container_end_has_ipv6_only_on_ipv6_networks() {
        let mut c = cfg();
        let m = container_up_message(&c, 9);
        assert!(query::is_up(&m));
        assert!(m.attributes.contains(&no_ipv6_link_local()));
        c.ipv6 = Some("fd00::2/64".parse().unwrap());
        assert!(!container_up_message(&c, 9)
            .attributes
            .contains(&no_ipv6_link_local()));
    }
}
