//! Prepared endpoints for libnetwork's remote driver protocol: the veth pair is built entirely in
//! the daemon's namespace — host end enslaved and up, container end left beside it under a
//! temporary name with its MAC and MTU — and libnetwork itself later moves the container end
//! into the sandbox, renames it and sets its addresses and routes.

use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth};

use super::veth::host_port_message;
use super::{query, request_error, Netlink, NetlinkError, VethConfig};
use crate::types::IfName;

/// The RTM_NEWLINK message creating a prepared pair (pure).
///
/// Host end: name, MTU, master, down (brought up with its port flags once IPv6 is off). Peer:
/// `peer` name, MAC, MTU, same namespace, down.
pub(crate) fn prepare_message(cfg: &VethConfig, bridge_index: u32, peer: &IfName) -> LinkMessage {
    let peer = LinkUnspec::new_with_name(peer.as_str())
        .address(cfg.mac.0.to_vec())
        .mtu(cfg.mtu)
        .build();
    LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(cfg.host_ifname.as_str())
        .mtu(cfg.mtu)
        .controller(bridge_index)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build()
}

impl Netlink {
    /// Builds a prepared pair for `cfg` (its `netns`, addresses and gateways are not used; the
    /// container end is called `peer`). Idempotent: a stale pair of either name is replaced.
    pub async fn prepare_veth(&self, cfg: &VethConfig, peer: &IfName) -> Result<(), NetlinkError> {
        let h = &self.handle;
        let host = cfg.host_ifname.as_str();
        let (a, b, bridge) = futures::join!(
            query::delete_by_name(h, host),
            query::delete_by_name(h, peer.as_str()),
            query::bridge_index(h, cfg.bridge.as_str()),
        );
        a?;
        b?;
        let bridge_index = bridge?;
        h.link()
            .add(prepare_message(cfg, bridge_index, peer))
            .execute()
            .await
            .map_err(|e| request_error("create veth pair", host, e))?;
        if let Err(e) = super::veth::port_ipv6_off(host) {
            let _ = query::delete_by_name(h, host).await;
            return Err(e);
        }
        if let Err(e) = h.link().set_port(host_port_message(cfg)).execute().await {
            let _ = query::delete_by_name(h, host).await;
            return Err(request_error("configure bridge port", host, e));
        }
        Ok(())
    }

    /// Puts an existing host end back on its bridge (after the bridge was deleted and
    /// re-created) with its port flags; `Ok(false)` if the host end does not exist.
    pub async fn reattach_host_end(&self, cfg: &VethConfig) -> Result<bool, NetlinkError> {
        let h = &self.handle;
        let host = cfg.host_ifname.as_str();
        let Some(link) = query::link_by_name(h, host).await? else {
            return Ok(false);
        };
        let bridge = query::bridge_index(h, cfg.bridge.as_str()).await?;
        if query::master(&link) != Some(bridge) {
            let msg = LinkUnspec::new_with_index(link.header.index)
                .controller(bridge)
                .up()
                .build();
            h.link()
                .set(msg)
                .execute()
                .await
                .map_err(|e| request_error("attach veth to bridge", host, e))?;
            h.link()
                .set_port(host_port_message(cfg))
                .execute()
                .await
                .map_err(|e| request_error("configure bridge port", host, e))?;
        }
        Ok(true)
    }

    /// Problems of a prepared pair: host end missing, not on `cfg.bridge`, wrong MTU (empty when
    /// intact). The container end is not checked: libnetwork owns it after Join.
    pub async fn check_prepared(&self, cfg: &VethConfig) -> Result<Vec<String>, NetlinkError> {
        let h = &self.handle;
        let Some(link) = query::link_by_name(h, cfg.host_ifname.as_str()).await? else {
            return Ok(vec![format!("host veth {} is missing", cfg.host_ifname)]);
        };
        let mut problems = Vec::new();
        let bridge = query::link_by_name(h, cfg.bridge.as_str()).await?;
        if bridge.map(|b| b.header.index) != query::master(&link) {
            problems.push(format!(
                "host veth {} is not on bridge {}",
                cfg.host_ifname, cfg.bridge
            ));
        }
        if query::mtu(&link) != Some(cfg.mtu) {
            problems.push(format!(
                "host veth {} MTU is not {}",
                cfg.host_ifname, cfg.mtu
            ));
        }
        Ok(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::MacAddr;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo as NlLinkInfo};

    #[test]
    fn prepared_peer_stays_in_the_daemon_namespace() {
        let cfg = VethConfig {
            bridge: IfName::new("br-0123").unwrap(),
            host_ifname: IfName::new("snv0123456789ab").unwrap(),
            host_alias: "shimnet:ep=n/e/eth".into(),
            netns: "/proc/self/ns/net".into(),
            container_ifname: IfName::new("eth").unwrap(),
            mac: MacAddr([2, 0x42, 10, 1, 0, 2]),
            ipv4: "10.1.0.2/24".parse().unwrap(),
            ipv6: None,
            gateway: None,
            gateway6: None,
            mtu: 1400,
            hairpin: true,
            isolated: false,
        };
        let peer = IfName::new("snp0123456789ab").unwrap();
        let m = prepare_message(&cfg, 9, &peer);
        assert_eq!(query::name(&m).as_deref(), Some("snv0123456789ab"));
        assert_eq!(query::master(&m), Some(9));
        assert_eq!(query::mtu(&m), Some(1400));
        assert!(
            !query::is_up(&m),
            "created down: IPv6 is turned off before the port comes up"
        );
        let peer_msg = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => i.iter().find_map(|i| match i {
                    NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) => Some(p.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .expect("peer");
        assert_eq!(query::name(&peer_msg).as_deref(), Some("snp0123456789ab"));
        assert_eq!(query::mac(&peer_msg), Some(vec![2, 0x42, 10, 1, 0, 2]));
        assert_eq!(query::mtu(&peer_msg), Some(1400));
        assert!(!peer_msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::NetNsFd(_) | LinkAttribute::NetNsPid(_))));
    }
}
