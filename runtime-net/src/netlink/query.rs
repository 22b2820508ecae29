//! Reading links, addresses and routes over an rtnetlink handle, plus pure accessors that pull
//! the fields shimnet cares about out of kernel messages.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoKind, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec};

use super::{errno, request_error, LinkInfo, LinkKind, NetlinkError};

/// The link called `name`, or `None` if there is none.
pub(crate) async fn link_by_name(
    h: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, NetlinkError> {
    let mut s = h.link().get().match_name(name).execute();
    match s.try_next().await {
        Ok(m) => Ok(m),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(request_error("get link", name, e)),
    }
}

/// The index of link `name` in this namespace, `None` if there is none. By name through the
/// kernel's name hash (`SIOCGIFINDEX`), not an `RTM_GETLINK`: the kernel builds a whole link
/// message for that, and for a veth whose peer is in another namespace it looks up the peer
/// namespace's id by walking every namespace id it has assigned, a cost that grows with the
/// number of containers.
pub(crate) fn index_of(name: &str) -> Result<Option<u32>, NetlinkError> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) => Ok(Some(i)),
        Err(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(NetlinkError::Request {
            op: "look up link index",
            object: name.to_string(),
            msg: e.to_string(),
        }),
    }
}

/// Index of the bridge called `name`; an error naming it if there is none.
pub(crate) async fn bridge_index(h: &Handle, name: &str) -> Result<u32, NetlinkError> {
    link_by_name(h, name)
        .await?
        .map(|l| l.header.index)
        .ok_or_else(|| NetlinkError::Request {
            op: "attach veth to bridge",
            object: name.to_string(),
            msg: "no such bridge".into(),
        })
}

/// What `keep` makes of each link in the handle's namespace, for the links it keeps. Each message
/// is dropped as soon as `keep` has seen it, so a dump of thousands of links never holds them all.
pub(crate) async fn dump_links<U>(
    h: &Handle,
    keep: impl FnMut(LinkMessage) -> Option<U>,
) -> Result<Vec<U>, NetlinkError> {
    dump_filter_map("dump links", "all", || h.link().get().execute(), keep).await
}

/// Runs a netlink dump to the end (see [`dump_filter_map`]).
pub(crate) async fn dump<T, S>(
    op: &'static str,
    object: &str,
    start: impl FnMut() -> S,
) -> Result<Vec<T>, NetlinkError>
where
    S: futures::Stream<Item = Result<T, rtnetlink::Error>>,
{
    dump_filter_map(op, object, start, Some).await
}

/// Runs a netlink dump to the end, keeping what `keep` makes of each message. A socket serves
/// one dump at a time and the daemon's socket is shared by concurrent tasks, so a dump refused
/// with EBUSY is retried (with a short backoff, for about a second) instead of failing the
/// caller.
pub(crate) async fn dump_filter_map<T, U, S>(
    op: &'static str,
    object: &str,
    mut start: impl FnMut() -> S,
    mut keep: impl FnMut(T) -> Option<U>,
) -> Result<Vec<U>, NetlinkError>
where
    S: futures::Stream<Item = Result<T, rtnetlink::Error>>,
{
    let mut delay = std::time::Duration::from_micros(200);
    let mut attempts = 0;
    loop {
        let mut out = Vec::new();
        let mut stream = std::pin::pin!(start());
        let end = loop {
            match stream.try_next().await {
                Ok(Some(m)) => out.extend(keep(m)),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        match end {
            Ok(()) => return Ok(out),
            Err(e) if errno(&e) == Some(libc::EBUSY) && attempts < 60 => {
                attempts += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(request_error(op, object, e)),
        }
    }
}

/// Deletes the link called `name`; `Ok(false)` if it did not exist.
pub(crate) async fn delete_by_name(h: &Handle, name: &str) -> Result<bool, NetlinkError> {
    let msg = LinkUnspec::new_with_name(name).build();
    match h.link().del_with_message(msg).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(request_error("delete link", name, e)),
    }
}

/// Addresses (with prefix length) on link `index`.
/// Every address in the handle's namespace with the index of its link.
pub(crate) async fn all_addresses(h: &Handle) -> Result<Vec<(u32, IpAddr, u8)>, NetlinkError> {
    let msgs: Vec<AddressMessage> = dump("list addresses", "all links", || {
        h.address().get().execute()
    })
    .await?;
    Ok(msgs
        .iter()
        .filter_map(|m| address_of(m).map(|(ip, p)| (m.header.index, ip, p)))
        .collect())
}

/// Addresses of one link.
pub(crate) async fn addresses(
    h: &Handle,
    index: u32,
    object: &str,
) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
    let msgs: Vec<AddressMessage> = dump("list addresses of", object, || {
        h.address().get().set_link_index_filter(index).execute()
    })
    .await?;
    Ok(msgs.iter().filter_map(address_of).collect())
}

/// Every route of the handle's namespace, IPv4 then IPv6 (`object` names it in errors).
async fn all_routes(h: &Handle, object: &str) -> Result<Vec<RouteMessage>, NetlinkError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        out.extend(
            dump("list routes of", object, || {
                let mut req = RouteMessage::default();
                req.header.address_family = family;
                h.route().get(req).execute()
            })
            .await?,
        );
    }
    Ok(out)
}

/// Destinations of the main table's routes out of link `index` (IPv4 and IPv6).
pub(crate) async fn link_routes(
    h: &Handle,
    index: u32,
    object: &str,
) -> Result<Vec<(IpAddr, u8)>, NetlinkError> {
    let routes = all_routes(h, object).await?;
    Ok(routes
        .iter()
        .filter_map(|m| route_out_of(m, index))
        .collect())
}

/// The destination of `m` when it is a main-table route out of link `index`.
pub(crate) fn route_out_of(m: &RouteMessage, index: u32) -> Option<(IpAddr, u8)> {
    let oif = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })?;
    if oif != index || !in_main_table(m) {
        return None;
    }
    let dst = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })?;
    Some((dst, m.header.destination_prefix_length))
}

/// Default-route gateways in the main table of the handle's namespace (IPv4 and IPv6).
pub(crate) async fn default_gateways(
    h: &Handle,
    object: &str,
) -> Result<Vec<IpAddr>, NetlinkError> {
    let routes = all_routes(h, object).await?;
    Ok(routes.iter().filter_map(default_gateway).collect())
}

/// The address an address message carries (local address for IPv4, address for IPv6).
pub(crate) fn address_of(m: &AddressMessage) -> Option<(IpAddr, u8)> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(addr).map(|ip| (ip, m.header.prefix_len))
}

/// Whether `m` is a route of the main table (the 32-bit table attribute wins over the header's).
pub(crate) fn in_main_table(m: &RouteMessage) -> bool {
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    table == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// The gateway of a default route in the main table, if `m` is one.
pub(crate) fn default_gateway(m: &RouteMessage) -> Option<IpAddr> {
    if m.header.destination_prefix_length != 0 {
        return None;
    }
    if !in_main_table(m) {
        return None;
    }
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

/// Name of a link.
pub(crate) fn name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Alias (IFLA_IFALIAS) of a link.
pub(crate) fn alias(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(n) => Some(n.clone()),
        _ => None,
    })
}

/// Index of the link's master (bridge), if enslaved.
pub(crate) fn master(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) if *i != 0 => Some(*i),
        _ => None,
    })
}

/// MTU of a link.
pub(crate) fn mtu(m: &LinkMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(v) => Some(*v),
        _ => None,
    })
}

/// Hardware address of a link.
pub(crate) fn mac(m: &LinkMessage) -> Option<Vec<u8>> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(v) => Some(v.clone()),
        _ => None,
    })
}

/// Whether the link is administratively up.
pub(crate) fn is_up(m: &LinkMessage) -> bool {
    m.header.flags.contains(LinkFlags::Up)
}

/// Link kind from IFLA_LINKINFO.
pub(crate) fn kind(m: &LinkMessage) -> LinkKind {
    let k = m.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            NlLinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    });
    match k {
        Some(InfoKind::Bridge) => LinkKind::Bridge,
        Some(InfoKind::Veth) => LinkKind::Veth,
        _ => LinkKind::Other,
    }
}

/// Device group of a link (0, the default group, when not reported).
pub(crate) fn group(m: &LinkMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Group(g) => Some(*g),
            _ => None,
        })
        .unwrap_or(0)
}

/// The public summary of a link message.
pub(crate) fn link_info(m: &LinkMessage) -> LinkInfo {
    LinkInfo {
        name: name(m).unwrap_or_default(),
        index: m.header.index,
        alias: alias(m),
        kind: kind(m),
        master: master(m),
        up: is_up(m),
        mtu: mtu(m),
        group: group(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::packet_route::route::RouteProtocol;
    use rtnetlink::{LinkBridge, RouteMessageBuilder};
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn link_accessors() {
        let m = LinkBridge::new("br0")
            .alias("shimnet:net=a")
            .mtu(1400)
            .controller(7)
            .build();
        assert_eq!(name(&m).as_deref(), Some("br0"));
        assert_eq!(alias(&m).as_deref(), Some("shimnet:net=a"));
        assert_eq!(mtu(&m), Some(1400));
        assert_eq!(master(&m), Some(7));
        assert!(is_up(&m));
        let info = link_info(&m);
        assert_eq!(info.kind, LinkKind::Bridge);
        let plain = LinkUnspec::new_with_name("x").build();
        assert_eq!(kind(&plain), LinkKind::Other);
        assert_eq!(master(&plain), None);
        assert!(!is_up(&plain));
    }

    #[test]
    fn default_gateway_only_for_default_main_routes() {
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let r = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build();
        assert_eq!(default_gateway(&r), Some(IpAddr::V4(gw)));
        let r = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, 1, 0, 0), 16)
            .gateway(gw)
            .build();
        assert_eq!(default_gateway(&r), None);
        let r = RouteMessageBuilder::<Ipv4Addr>::new()
            .table_id(100)
            .gateway(gw)
            .protocol(RouteProtocol::Static)
            .build();
        assert_eq!(default_gateway(&r), None);
        let gw6: Ipv6Addr = "fd00::1".parse().unwrap();
        let r = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw6).build();
        assert_eq!(default_gateway(&r), Some(IpAddr::V6(gw6)));
    }

    #[test]
    fn address_prefers_local() {
        let mut m = AddressMessage::default();
        m.header.prefix_len = 24;
        m.attributes = vec![
            AddressAttribute::Address("10.0.0.9".parse().unwrap()),
            AddressAttribute::Local("10.0.0.2".parse().unwrap()),
        ];
        assert_eq!(address_of(&m), Some(("10.0.0.2".parse().unwrap(), 24)));
    }
}
