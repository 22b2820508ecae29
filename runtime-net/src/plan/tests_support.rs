//! Networks and records for the planning tests.

use crate::netlink::{LinkInfo, LinkKind};
use crate::plan::{build_spec, NetworkRequest};
use crate::types::{
    ContainerId, EndpointKey, EndpointKind, EndpointRecord, IfName, NetworkName, NetworkSpec,
};
use crate::{ipam, naming};

/// A network with defaults.
pub(crate) fn network(name: &str, subnet: &str) -> NetworkSpec {
    build_spec(NetworkRequest::new(
        NetworkName::new(name).unwrap(),
        subnet.parse().unwrap(),
    ))
    .unwrap()
}

/// A managed endpoint `cid`/eth0 on `net` with the network's second address.
pub(crate) fn record(net: &NetworkSpec, cid: &str) -> EndpointRecord {
    let key = EndpointKey {
        network: net.name.clone(),
        container_id: ContainerId::new(cid).unwrap(),
        ifname: IfName::new("eth0").unwrap(),
    };
    let ip = std::net::Ipv4Addr::from(u32::from(net.subnet.network()) + 2);
    EndpointRecord {
        host_ifname: naming::host_veth_name(&key),
        key,
        kind: EndpointKind::Managed,
        netns: format!("/run/netns/{cid}").into(),
        ipv4: ipnetwork::Ipv4Network::new(ip, net.subnet.prefix()).unwrap(),
        ipv6: None,
        mac: ipam::default_mac(net, ip),
        gateway: net.gateway,
        gateway6: None,
        mtu: net.mtu,
        ports: vec![],
        names: vec![],
        extension: None,
    }
}

/// A link as a dump shows it.
pub(crate) fn link(name: &str, alias: Option<String>, kind: LinkKind) -> LinkInfo {
    LinkInfo {
        name: name.into(),
        index: 1,
        alias,
        kind,
        master: None,
        up: true,
        mtu: Some(1500),
        group: 0,
    }
}
