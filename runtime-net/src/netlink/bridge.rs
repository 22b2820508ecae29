//! Bridges: create if missing, otherwise repair alias, MTU, addresses and admin state.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use sha2::{Digest, Sha256};

use super::{errno, query, request_error, BridgeConfig, LinkKind, NetlinkError};

/// What must change on an existing bridge to match its config.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BridgeRepair {
    /// New alias, if the current one differs.
    pub alias: Option<String>,
    /// New MTU, if the current one differs.
    pub mtu: Option<u32>,
    /// Bring the link up.
    pub up: bool,
    /// Addresses to add.
    pub add_addrs: Vec<IpNetwork>,
    /// Addresses present whose connected route is gone: removed and added again, which makes
    /// the kernel put the route back.
    pub readd_addrs: Vec<IpNetwork>,
}

impl BridgeRepair {
    fn link_change_needed(&self) -> bool {
        self.alias.is_some() || self.mtu.is_some() || self.up
    }

    fn anything(&self) -> bool {
        self.link_change_needed() || !self.add_addrs.is_empty() || !self.readd_addrs.is_empty()
    }
}

/// Compares a bridge as seen in the kernel (link, addresses, routes out of it) with its config
/// (pure). Connected routes are only looked for on a bridge that is up: taking a link down
/// removes them, and bringing it up makes the kernel add them again.
pub(crate) fn plan_repair(
    link: &LinkMessage,
    addrs: &[(IpAddr, u8)],
    routes: &[(IpAddr, u8)],
    cfg: &BridgeConfig,
) -> BridgeRepair {
    let up = query::is_up(link);
    BridgeRepair {
        readd_addrs: cfg
            .addrs
            .iter()
            .filter(|n| up && addrs.contains(&(n.ip(), n.prefix())))
            .filter(|n| !routes.contains(&(n.network(), n.prefix())))
            .copied()
            .collect(),
        alias: (query::alias(link).as_deref() != Some(cfg.alias.as_str()))
            .then(|| cfg.alias.clone()),
        mtu: (query::mtu(link) != Some(cfg.mtu)).then_some(cfg.mtu),
        up: !up,
        add_addrs: cfg
            .addrs
            .iter()
            .filter(|n| !addrs.contains(&(n.ip(), n.prefix())))
            .copied()
            .collect(),
    }
}

/// A stable, locally administered unicast MAC for a bridge, derived from its name.
///
/// Set at creation so that the gateway's MAC does not follow the lowest port MAC (which would
/// change as containers come and go and leave stale ARP entries behind).
pub(crate) fn bridge_mac(name: &str) -> [u8; 6] {
    let digest = Sha256::digest(format!("shimnet-bridge\0{name}").as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// The RTM_NEWLINK message creating the bridge (pure): MTU, a fixed MAC (see [`bridge_mac`]) and
/// multicast snooping off.
///
/// Snooping off: whenever a port comes up or goes down, the kernel re-selects every port's state
/// and, with snooping on, re-arms two multicast query timers on *every* port
/// (`br_port_state_selection` → `br_multicast_enable_port`), which then all fire — work per attach
/// and detach that grows with the number of ports. A shimnet bridge has no multicast querier, and
/// without one the bridge floods multicast to every port with snooping on or off, so forwarding
/// does not change.
pub(crate) fn create_message(cfg: &BridgeConfig) -> LinkMessage {
    let name = cfg.name.as_str();
    LinkBridge::new(name)
        .mtu(cfg.mtu)
        .address(bridge_mac(name).to_vec())
        .mcast_snooping(false)
        .build()
}

/// Creates or repairs the bridge; returns its index and whether anything had to change.
pub(crate) async fn ensure(h: &Handle, cfg: &BridgeConfig) -> Result<(u32, bool), NetlinkError> {
    let name = cfg.name.as_str();
    let link = match query::link_by_name(h, name).await? {
        Some(l) => l,
        None => {
            match h.link().add(create_message(cfg)).execute().await {
                Ok(()) => {}
                // Created concurrently by someone else: repair that one.
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(request_error("create bridge", name, e)),
            }
            query::link_by_name(h, name)
                .await?
                .ok_or_else(|| NetlinkError::Request {
                    op: "create bridge",
                    object: name.to_string(),
                    msg: "bridge vanished right after creation".into(),
                })?
        }
    };
    if query::kind(&link) != LinkKind::Bridge {
        return Err(NetlinkError::Request {
            op: "ensure bridge",
            object: name.to_string(),
            msg: "a link of that name exists and is not a bridge".into(),
        });
    }
    let index = link.header.index;
    let addrs = query::addresses(h, index, name).await?;
    let routes = query::link_routes(h, index, name).await?;
    let repair = plan_repair(&link, &addrs, &routes, cfg);
    if repair.link_change_needed() {
        let mut b = LinkUnspec::new_with_index(index);
        if let Some(a) = &repair.alias {
            b = b.alias(a.clone());
        }
        if let Some(m) = repair.mtu {
            b = b.mtu(m);
        }
        if repair.up {
            b = b.up();
        }
        h.link()
            .change(b.build())
            .execute()
            .await
            .map_err(|e| request_error("configure bridge", name, e))?;
    }
    for net in &repair.add_addrs {
        add_address(h, index, *net, name).await?;
    }
    for net in &repair.readd_addrs {
        match h
            .address()
            .del(address_message(index, *net))
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => {
                return Err(request_error(
                    "remove address",
                    format!("{net} on {name}"),
                    e,
                ))
            }
        }
        add_address(h, index, *net, name).await?;
    }
    Ok((index, repair.anything()))
}

/// The message naming address `net` on link `index` (for its removal).
fn address_message(index: u32, net: IpNetwork) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = match net {
        IpNetwork::V4(_) => AddressFamily::Inet,
        IpNetwork::V6(_) => AddressFamily::Inet6,
    };
    m.header.prefix_len = net.prefix();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(net.ip()));
    m.attributes.push(AddressAttribute::Address(net.ip()));
    m
}

/// Adds `net` to link `index` (IPv6 without duplicate address detection); an address that is
/// already there is fine.
pub(crate) async fn add_address(
    h: &Handle,
    index: u32,
    net: IpNetwork,
    object: &str,
) -> Result<(), NetlinkError> {
    let mut req = h.address().add(index, net.ip(), net.prefix());
    if net.is_ipv6() {
        let m = req.message_mut();
        m.header.flags |= AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    match req.execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(request_error(
            "add address",
            format!("{net} on {object}"),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::IfName;

    fn cfg() -> BridgeConfig {
        BridgeConfig {
            name: IfName::new("snbr0").unwrap(),
            alias: "shimnet:net=a".into(),
            mtu: 1500,
            addrs: vec![
                "10.88.0.1/24".parse().unwrap(),
                "fd00::1/64".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn repair_nothing_when_in_place() {
        let link = LinkBridge::new("snbr0")
            .alias("shimnet:net=a")
            .mtu(1500)
            .build();
        let addrs = [
            ("10.88.0.1".parse().unwrap(), 24),
            ("fd00::1".parse().unwrap(), 64),
            ("fe80::1".parse().unwrap(), 64),
        ];
        let routes = [
            ("10.88.0.0".parse().unwrap(), 24),
            ("fd00::".parse().unwrap(), 64),
            ("fe80::".parse().unwrap(), 64),
        ];
        assert_eq!(
            plan_repair(&link, &addrs, &routes, &cfg()),
            BridgeRepair::default()
        );
    }

    #[test]
    fn a_lost_connected_route_means_its_address_again() {
        let up = LinkBridge::new("snbr0")
            .alias("shimnet:net=a")
            .mtu(1500)
            .build();
        let addrs = [
            ("10.88.0.1".parse().unwrap(), 24),
            ("fd00::1".parse().unwrap(), 64),
        ];
        let routes = [("fd00::".parse().unwrap(), 64)];
        let r = plan_repair(&up, &addrs, &routes, &cfg());
        assert_eq!(r.readd_addrs, vec!["10.88.0.1/24".parse().unwrap()]);
        assert!(r.anything() && !r.link_change_needed());
        // Down: the kernel removed the routes itself and adds them back when it comes up.
        let down = LinkUnspec::new_with_name("snbr0")
            .alias("shimnet:net=a")
            .mtu(1500)
            .build();
        let r = plan_repair(&down, &addrs, &[], &cfg());
        assert!(r.up && r.readd_addrs.is_empty());
    }

    #[test]
    fn repair_everything_that_drifted() {
        let link = LinkUnspec::new_with_name("snbr0").mtu(9000).build();
        let addrs = [("10.88.0.1".parse().unwrap(), 16)];
        let r = plan_repair(&link, &addrs, &[], &cfg());
        assert_eq!(r.alias.as_deref(), Some("shimnet:net=a"));
        assert_eq!(r.mtu, Some(1500));
        assert!(r.up);
        assert_eq!(r.add_addrs, cfg().addrs);
    }

    #[test]
    fn created_with_fixed_mac_and_snooping_off() {
        use rtnetlink::packet_route::link::{InfoBridge, InfoData, LinkAttribute, LinkInfo};
        let m = create_message(&cfg());
        assert_eq!(query::mac(&m), Some(bridge_mac("snbr0").to_vec()));
        assert_eq!(query::mtu(&m), Some(1500));
        let snooping = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Data(InfoData::Bridge(opts)) => opts.iter().find_map(|o| match o {
                    InfoBridge::MulticastSnooping(v) => Some(*v),
                    _ => None,
                }),
                _ => None,
            }),
            _ => None,
        });
        assert_eq!(snooping, Some(false));
    }

    #[test]
    fn bridge_mac_is_stable_local_unicast() {
        let a = bridge_mac("snbr0");
        assert_eq!(a, bridge_mac("snbr0"));
        assert_ne!(a, bridge_mac("snbr1"));
        assert_eq!(a[0] & 0x03, 0x02);
    }
}
