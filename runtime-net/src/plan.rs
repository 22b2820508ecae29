//! Pure planning: turning a network request into a validated [`NetworkSpec`], checking it
//! against the networks that exist, and deciding what reconciliation must change; endpoint
//! changes as values ([`endpoint`]), the host-port decision ([`ports`]) and the drift check
//! ([`check`]). Nothing here touches the kernel or the store.

pub mod bridges;
pub mod check;
pub mod endpoint;
pub mod ports;
pub mod proxy;
#[cfg(test)]
pub(crate) mod tests_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::naming::{self, Owner};
use crate::netlink::{LinkInfo, LinkKind};
use crate::types::{
    EndpointKey, EndpointKind, EndpointRecord, IfName, MacPrefix, NetworkName, NetworkSpec,
};

/// Default MTU of a new network.
pub const DEFAULT_MTU: u32 = 1500;

/// A request field that was refused, named as the caller spelled it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Field name in the request (e.g. `subnet`).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// What a caller asks for when creating a network; unset fields take the usual bridge defaults
/// (first host as gateway, MTU 1500, masquerade and inter-container traffic on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    /// Name.
    pub name: NetworkName,
    /// IPv4 subnet.
    pub subnet: Ipv4Network,
    /// Gateway; first host address of the subnet by default.
    pub gateway: Option<Ipv4Addr>,
    /// First address handed out dynamically (default: first host).
    pub range_start: Option<Ipv4Addr>,
    /// Last address handed out dynamically (default: last host).
    pub range_end: Option<Ipv4Addr>,
    /// Bridge name; derived from the name by default.
    pub bridge: Option<IfName>,
    /// IPv6 subnet.
    pub subnet6: Option<Ipv6Network>,
    /// IPv6 gateway; first address after the network address by default.
    pub gateway6: Option<Ipv6Addr>,
    /// MTU; 1500 by default.
    pub mtu: Option<u32>,
    /// Masquerade (default on).
    pub masquerade: Option<bool>,
    /// Inter-container communication (default on).
    pub icc: Option<bool>,
    /// Internal network (default off).
    pub internal: Option<bool>,
    /// Hairpin mode (default off).
    pub hairpin: Option<bool>,
    /// Destinations never masqueraded.
    pub no_masquerade_to: Vec<IpNetwork>,
    /// Sources allowed in.
    pub allow_from: Vec<IpNetwork>,
    /// Default host address for published ports.
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// MAC prefix of endpoints that ask for no MAC (default `0a:58`).
    pub mac_prefix: Option<MacPrefix>,
    /// Serve container names on the gateway (default off).
    pub dns: Option<bool>,
}

impl NetworkRequest {
    /// A request with only the required fields set.
    pub fn new(name: NetworkName, subnet: Ipv4Network) -> Self {
        NetworkRequest {
            name,
            subnet,
            gateway: None,
            range_start: None,
            range_end: None,
            bridge: None,
            subnet6: None,
            gateway6: None,
            mtu: None,
            masquerade: None,
            icc: None,
            internal: None,
            hairpin: None,
            no_masquerade_to: Vec::new(),
            allow_from: Vec::new(),
            host_binding_ipv4: None,
            mac_prefix: None,
            dns: None,
        }
    }
}

/// Bridge name used when the request names none: the network name if it is a valid interface
/// name, else `snb` + a hash of the name.
pub fn default_bridge_name(name: &NetworkName) -> IfName {
    if let Ok(n) = IfName::new(name.as_str()) {
        return n;
    }
    let key = EndpointKey {
        network: name.clone(),
        container_id: crate::types::ContainerId::new("bridge").expect("valid id"),
        ifname: IfName::new("br").expect("valid name"),
    };
    let v = naming::host_veth_name(&key);
    IfName::new(&format!("snb{}", &v.as_str()[3..])).expect("same length")
}

fn first_host_v4(net: Ipv4Network) -> Option<Ipv4Addr> {
    if net.prefix() >= 31 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(net.network()) + 1))
}

/// The dynamic allocation range: both ends inside the subnet's host addresses, start <= end.
fn build_range4(
    subnet: Ipv4Network,
    start: Option<Ipv4Addr>,
    end: Option<Ipv4Addr>,
) -> Result<Option<(Ipv4Addr, Ipv4Addr)>, FieldError> {
    if start.is_none() && end.is_none() {
        return Ok(None);
    }
    let first = first_host_v4(subnet).expect("prefix checked by the caller");
    let last = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
    let check = |field: &'static str, ip: Ipv4Addr| {
        if ip < first || ip > last {
            Err(FieldError::new(
                field,
                format!("{ip} is not a host address of subnet {subnet}"),
            ))
        } else {
            Ok(ip)
        }
    };
    let s = start
        .map(|ip| check("range_start", ip))
        .transpose()?
        .unwrap_or(first);
    let e = end
        .map(|ip| check("range_end", ip))
        .transpose()?
        .unwrap_or(last);
    if s > e {
        return Err(FieldError::new(
            "range_end",
            format!("{e} comes before range_start {s}"),
        ));
    }
    Ok(Some((s, e)))
}

/// Validates a request and fills in defaults.
pub fn build_spec(req: NetworkRequest) -> Result<NetworkSpec, FieldError> {
    let subnet = Ipv4Network::new(req.subnet.network(), req.subnet.prefix())
        .map_err(|e| FieldError::new("subnet", e.to_string()))?;
    if subnet.prefix() > 30 {
        return Err(FieldError::new(
            "subnet",
            format!("{subnet} is too small: need /30 or larger"),
        ));
    }
    let gateway = match req.gateway {
        Some(g) => {
            if !subnet.contains(g) {
                return Err(FieldError::new(
                    "gateway",
                    format!("{g} is not inside subnet {subnet}"),
                ));
            }
            if g == subnet.network() || g == subnet.broadcast() {
                return Err(FieldError::new(
                    "gateway",
                    format!("{g} is the network or broadcast address of {subnet}"),
                ));
            }
            g
        }
        None => first_host_v4(subnet).expect("prefix checked above"),
    };
    let range4 = build_range4(subnet, req.range_start, req.range_end)?;
    let (subnet6, gateway6) = match req.subnet6 {
        Some(s6) => {
            let s6 = Ipv6Network::new(s6.network(), s6.prefix())
                .map_err(|e| FieldError::new("subnet6", e.to_string()))?;
            if s6.prefix() > 126 {
                return Err(FieldError::new(
                    "subnet6",
                    format!("{s6} is too small: need /126 or larger"),
                ));
            }
            let g6 = match req.gateway6 {
                Some(g) if !s6.contains(g) => {
                    return Err(FieldError::new(
                        "gateway6",
                        format!("{g} is not inside subnet6 {s6}"),
                    ))
                }
                Some(g) if g == s6.network() => {
                    return Err(FieldError::new(
                        "gateway6",
                        format!("{g} is the subnet-router address of {s6}"),
                    ))
                }
                Some(g) => g,
                None => Ipv6Addr::from(u128::from(s6.network()) + 1),
            };
            (Some(s6), Some(g6))
        }
        None => {
            if req.gateway6.is_some() {
                return Err(FieldError::new("gateway6", "set without subnet6"));
            }
            (None, None)
        }
    };
    let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
    if !(576..=65535).contains(&mtu) {
        return Err(FieldError::new(
            "mtu",
            format!("{mtu} is out of range 576..=65535"),
        ));
    }
    let bridge = req.bridge.unwrap_or_else(|| default_bridge_name(&req.name));
    Ok(NetworkSpec {
        name: req.name,
        bridge,
        subnet,
        gateway,
        range4,
        subnet6,
        gateway6,
        mtu,
        masquerade: req.masquerade.unwrap_or(true),
        icc: req.icc.unwrap_or(true),
        internal: req.internal.unwrap_or(false),
        hairpin: req.hairpin.unwrap_or(false),
        no_masquerade_to: req.no_masquerade_to,
        allow_from: req.allow_from,
        host_binding_ipv4: req.host_binding_ipv4,
        mac_prefix: req.mac_prefix.unwrap_or_default(),
        dns: req.dns.unwrap_or(false),
    })
}

/// Why a valid spec cannot be created next to the existing networks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Clash {
    /// Same name.
    #[error("network {0} already exists")]
    Name(NetworkName),
    /// Same bridge device.
    #[error("bridge {bridge} is already used by network {network}")]
    Bridge {
        bridge: IfName,
        network: NetworkName,
    },
    /// Overlapping subnets.
    #[error("subnet {subnet} overlaps {other} of network {network}")]
    Subnet {
        subnet: IpNetwork,
        other: IpNetwork,
        network: NetworkName,
    },
}

/// True when two networks share any address (networks of different families never do).
pub fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// Checks a new spec against existing ones: unique name, bridge and non-overlapping subnets.
pub fn check_clash(spec: &NetworkSpec, existing: &[NetworkSpec]) -> Result<(), Clash> {
    for other in existing {
        if other.name == spec.name {
            return Err(Clash::Name(spec.name.clone()));
        }
        if other.bridge == spec.bridge {
            return Err(Clash::Bridge {
                bridge: spec.bridge.clone(),
                network: other.name.clone(),
            });
        }
        let mine: Vec<IpNetwork> = std::iter::once(IpNetwork::V4(spec.subnet))
            .chain(spec.subnet6.map(IpNetwork::V6))
            .collect();
        let theirs: Vec<IpNetwork> = std::iter::once(IpNetwork::V4(other.subnet))
            .chain(other.subnet6.map(IpNetwork::V6))
            .collect();
        for &m in &mine {
            for &t in &theirs {
                if overlaps(m, t) {
                    return Err(Clash::Subnet {
                        subnet: m,
                        other: t,
                        network: other.name.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Checks a new spec against the addresses already on the host (other than on its own bridge):
/// a subnet that overlaps another interface's network (another manager's bridge, the uplink...)
/// would break routing for one of them.
pub fn check_host_overlap(
    spec: &NetworkSpec,
    host: &[(String, IpNetwork)],
) -> Result<(), FieldError> {
    let mine: Vec<(&'static str, IpNetwork)> =
        std::iter::once(("subnet", IpNetwork::V4(spec.subnet)))
            .chain(spec.subnet6.map(|s| ("subnet6", IpNetwork::V6(s))))
            .collect();
    for (link, addr) in host.iter().filter(|(l, _)| l != spec.bridge.as_str()) {
        let Ok(theirs) = IpNetwork::new(addr.network(), addr.prefix()) else {
            continue;
        };
        if theirs.prefix() == 0 || addr.ip().is_loopback() || is_link_local(addr.ip()) {
            continue;
        }
        for (field, m) in &mine {
            if overlaps(*m, theirs) {
                return Err(FieldError::new(
                    field,
                    format!("{m} overlaps {addr} on host interface {link}"),
                ));
            }
        }
    }
    Ok(())
}

fn is_link_local(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// True when two specs describe the same kernel state (used to decide whether a declared
/// network must be rebuilt).
pub fn same_network(a: &NetworkSpec, b: &NetworkSpec) -> bool {
    a == b
}

/// What start-up reconciliation must do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Endpoint records whose namespace is gone: tear down and release.
    pub reclaim: Vec<EndpointKey>,
    /// Owned links with no record, and every link in the reap group: delete.
    pub delete_links: Vec<String>,
    /// Networks whose firewall rules exist without a record: remove.
    pub delete_fw_networks: Vec<NetworkName>,
    /// Published-port owners in the firewall with no endpoint: purge.
    pub purge_ports: Vec<IfName>,
    /// Live endpoints that publish ports but have none in the firewall listing: re-install.
    /// Endpoints whose rules are in place are left alone, so an idle pass with nothing
    /// drifted makes no firewall change.
    pub reinstall_ports: Vec<EndpointKey>,
    /// Live endpoints whose host end is not on its bridge (main or extension) (the bridge was re-created,
    /// or the port cut off from outside): put back on it.
    pub reattach_ports: Vec<EndpointKey>,
}

/// Whether an endpoint is still in use (pure). A managed endpoint lives as long as its namespace.
/// A prepared one's namespace may be invisible to the daemon (the caller runs in another mount
/// namespace); it then counts as alive while its host end exists and its container end is not
/// back beside it — when the namespace dies the kernel deletes the pair, and a caller that is done
/// with it moves the container end back first.
pub fn endpoint_alive(
    rec: &EndpointRecord,
    netns_alive: bool,
    host_present: bool,
    container_end_here: bool,
) -> bool {
    netns_alive || (rec.kind == EndpointKind::Prepared && host_present && !container_end_here)
}

/// Whether an owned link is still wanted (pure): a bridge of a recorded network under its
/// recorded name, an extension bridge or trunk end of a recorded network under its name, or the
/// host end of a live endpoint. Links in the reap group are retired —
/// a daemon killed before deleting them, or a detach that never finished — and go whatever
/// their alias or record says. Other links without an owner alias are not shimnet's and are
/// always kept.
pub fn keep_link(
    link: &LinkInfo,
    networks: &BTreeMap<&str, &NetworkSpec>,
    live_veths: &BTreeSet<&str>,
) -> bool {
    if link.group == crate::netlink::REAP_GROUP {
        return false;
    }
    let Some(owner) = link.alias.as_deref().and_then(naming::parse_alias) else {
        return true;
    };
    match (owner, link.kind) {
        (Owner::Bridge(net), LinkKind::Bridge) => networks
            .get(net.as_str())
            .is_some_and(|n| n.bridge.as_str() == link.name),
        (Owner::Endpoint(_), LinkKind::Veth) => live_veths.contains(link.name.as_str()),
        // Extension bridges and trunks of a recorded network stay (an empty extension is kept
        // until the network is deleted); under another name they are not its own.
        (Owner::Extension(net, i), LinkKind::Bridge) => networks
            .get(net.as_str())
            .is_some_and(|n| naming::extension_bridge_name(&n.name, i).as_str() == link.name),
        (Owner::Trunk(net, i), LinkKind::Veth) => networks.get(net.as_str()).is_some_and(|n| {
            let (a, b) = naming::trunk_names(&n.name, i);
            a.as_str() == link.name || b.as_str() == link.name
        }),
        _ => false,
    }
}

/// Plans reconciliation from the records and what the kernel shows. `alive` tells whether an
/// endpoint is still in use (see [`endpoint_alive`]).
pub fn plan_reconcile(
    networks: &[NetworkSpec],
    endpoints: &[EndpointRecord],
    links: &[LinkInfo],
    fw_networks: &[NetworkName],
    fw_ports: &[IfName],
    alive: impl Fn(&EndpointRecord) -> bool,
) -> ReconcilePlan {
    let mut plan = ReconcilePlan::default();
    let known_nets: BTreeMap<&str, &NetworkSpec> =
        networks.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut live_veths: BTreeSet<&str> = BTreeSet::new();
    for ep in endpoints {
        if alive(ep) && known_nets.contains_key(ep.key.network.as_str()) {
            live_veths.insert(ep.host_ifname.as_str());
        } else {
            plan.reclaim.push(ep.key.clone());
        }
    }
    for link in links {
        if !keep_link(link, &known_nets, &live_veths) {
            plan.delete_links.push(link.name.clone());
        }
    }
    plan.delete_fw_networks = fw_networks
        .iter()
        .filter(|n| !known_nets.contains_key(n.as_str()))
        .cloned()
        .collect();
    plan.purge_ports = fw_ports
        .iter()
        .filter(|p| !live_veths.contains(p.as_str()))
        .cloned()
        .collect();
    let installed: BTreeSet<&str> = fw_ports.iter().map(IfName::as_str).collect();
    plan.reinstall_ports = endpoints
        .iter()
        .filter(|ep| {
            !ep.ports.is_empty()
                && live_veths.contains(ep.host_ifname.as_str())
                && !installed.contains(ep.host_ifname.as_str())
        })
        .map(|ep| ep.key.clone())
        .collect();
    let by_name: BTreeMap<&str, &LinkInfo> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    plan.reattach_ports = endpoints
        .iter()
        .filter(|ep| live_veths.contains(ep.host_ifname.as_str()))
        .filter(|ep| {
            let bridge = known_nets
                .get(ep.key.network.as_str())
                .map(|n| bridges::endpoint_bridge(n, ep))
                .and_then(|b| by_name.get(b.as_str()))
                .filter(|b| b.kind == LinkKind::Bridge);
            match (bridge, by_name.get(ep.host_ifname.as_str())) {
                (Some(b), Some(host)) => host.master != Some(b.index),
                _ => false,
            }
        })
        .map(|ep| ep.key.clone())
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ContainerId, PortMapping};

    fn name(s: &str) -> NetworkName {
        NetworkName::new(s).unwrap()
    }

    fn req(n: &str, subnet: &str) -> NetworkRequest {
        NetworkRequest::new(name(n), subnet.parse().unwrap())
    }

    #[test]
    fn defaults_are_the_usual_bridge_ones() {
        let s = build_spec(req("net1", "10.1.0.0/24")).unwrap();
        assert_eq!(s.gateway, "10.1.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(s.bridge.as_str(), "net1");
        assert_eq!(s.mtu, 1500);
        assert!(s.masquerade && s.icc && !s.internal && !s.hairpin);
    }

    #[test]
    fn host_bits_in_subnet_are_cleared() {
        let s = build_spec(req("n", "10.1.0.77/24")).unwrap();
        assert_eq!(s.subnet.to_string(), "10.1.0.0/24");
    }

    #[test]
    fn bad_fields_are_named() {
        let mut r = req("n", "10.1.0.0/24");
        r.gateway = Some("10.2.0.1".parse().unwrap());
        assert_eq!(build_spec(r).unwrap_err().field, "gateway");
        let mut r = req("n", "10.1.0.0/24");
        r.gateway = Some("10.1.0.255".parse().unwrap());
        assert_eq!(build_spec(r).unwrap_err().field, "gateway");
        assert_eq!(
            build_spec(req("n", "10.1.0.0/31")).unwrap_err().field,
            "subnet"
        );
        let mut r = req("n", "10.1.0.0/24");
        r.mtu = Some(100);
        assert_eq!(build_spec(r).unwrap_err().field, "mtu");
        let mut r = req("n", "10.1.0.0/24");
        r.gateway6 = Some("fd00::1".parse().unwrap());
        assert_eq!(build_spec(r).unwrap_err().field, "gateway6");
        let mut r = req("n", "10.1.0.0/24");
        r.subnet6 = Some("fd00:1::/64".parse().unwrap());
        r.gateway6 = Some("fd00:2::1".parse().unwrap());
        assert_eq!(build_spec(r).unwrap_err().field, "gateway6");
    }

    #[test]
    fn allocation_range() {
        let mut r = req("n", "10.1.0.0/24");
        r.range_start = Some("10.1.0.100".parse().unwrap());
        let s = build_spec(r.clone()).unwrap();
        assert_eq!(
            s.range4,
            Some(("10.1.0.100".parse().unwrap(), "10.1.0.254".parse().unwrap()))
        );
        r.range_end = Some("10.1.0.50".parse().unwrap());
        assert_eq!(build_spec(r.clone()).unwrap_err().field, "range_end");
        r.range_end = Some("10.1.1.5".parse().unwrap());
        assert_eq!(build_spec(r.clone()).unwrap_err().field, "range_end");
        r.range_end = None;
        r.range_start = Some("10.1.0.0".parse().unwrap());
        assert_eq!(build_spec(r).unwrap_err().field, "range_start");
        assert_eq!(build_spec(req("n", "10.1.0.0/24")).unwrap().range4, None);
    }

    #[test]
    fn ipv6_gateway_default() {
        let mut r = req("n", "10.1.0.0/24");
        r.subnet6 = Some("fd00:1::/64".parse().unwrap());
        let s = build_spec(r).unwrap();
        assert_eq!(s.gateway6, Some("fd00:1::1".parse().unwrap()));
    }

    #[test]
    fn long_names_get_hashed_bridge() {
        let b = default_bridge_name(&name("a-very-long-network-name"));
        assert!(b.as_str().starts_with("snb"));
        assert_eq!(b, default_bridge_name(&name("a-very-long-network-name")));
    }

    #[test]
    fn host_overlap_detected_except_own_bridge_and_link_local() {
        let s = build_spec(req("a", "10.88.0.0/24")).unwrap();
        let host = |l: &str, a: &str| vec![(l.to_string(), a.parse::<IpNetwork>().unwrap())];
        let e = check_host_overlap(&s, &host("podman0", "10.88.0.1/16")).unwrap_err();
        assert_eq!(e.field, "subnet");
        assert!(e.message.contains("podman0"), "{}", e.message);
        assert!(
            check_host_overlap(&s, &host("a", "10.88.0.1/24")).is_ok(),
            "own bridge"
        );
        assert!(check_host_overlap(&s, &host("lo", "127.0.0.1/8")).is_ok());
        assert!(check_host_overlap(&s, &host("eth0", "fe80::1/64")).is_ok());
        assert!(check_host_overlap(&s, &host("eth0", "192.168.1.5/24")).is_ok());
    }

    #[test]
    fn clashes_detected() {
        let a = build_spec(req("a", "10.1.0.0/16")).unwrap();
        let b = build_spec(req("b", "10.1.5.0/24")).unwrap();
        assert!(matches!(
            check_clash(&b, std::slice::from_ref(&a)),
            Err(Clash::Subnet { .. })
        ));
        let c = build_spec(req("a", "10.9.0.0/24")).unwrap();
        assert!(matches!(
            check_clash(&c, std::slice::from_ref(&a)),
            Err(Clash::Name(_))
        ));
        let mut d = req("d", "10.9.0.0/24");
        d.bridge = Some(IfName::new("a").unwrap());
        let d = build_spec(d).unwrap();
        assert!(matches!(
            check_clash(&d, std::slice::from_ref(&a)),
            Err(Clash::Bridge { .. })
        ));
        let e = build_spec(req("e", "10.2.0.0/24")).unwrap();
        assert!(check_clash(&e, &[a]).is_ok());
    }

    use super::tests_support::{link, record};

    #[test]
    fn prepared_endpoints_live_while_their_pair_does() {
        let net = build_spec(req("a", "10.1.0.0/24")).unwrap();
        let mut r = record(&net, "c");
        assert!(endpoint_alive(&r, true, false, false));
        assert!(
            !endpoint_alive(&r, false, true, false),
            "managed: namespace only"
        );
        r.kind = EndpointKind::Prepared;
        assert!(endpoint_alive(&r, false, true, false), "handed over");
        assert!(
            !endpoint_alive(&r, false, true, true),
            "container end is back"
        );
        assert!(!endpoint_alive(&r, false, false, false), "pair gone");
    }

    #[test]
    fn reconcile_deletes_every_link_in_the_reap_group() {
        let net = build_spec(req("a", "10.1.0.0/24")).unwrap();
        let live = record(&net, "live");
        let reaping = |mut l: LinkInfo| {
            l.group = crate::netlink::REAP_GROUP;
            l
        };
        let links = vec![
            // A live endpoint's veth whose detach was cut short: the record is still there.
            reaping(link(
                live.host_ifname.as_str(),
                Some(naming::veth_alias(&live.key)),
                LinkKind::Veth,
            )),
            // A veth rolled back before it got shimnet's alias.
            reaping(link("snv0123456789ab", None, LinkKind::Veth)),
            // Not in the group, not shimnet's: left alone.
            link("eth9", None, LinkKind::Veth),
        ];
        let plan = plan_reconcile(
            std::slice::from_ref(&net),
            std::slice::from_ref(&live),
            &links,
            &[name("a")],
            &[],
            |_| true,
        );
        assert_eq!(
            plan.delete_links,
            vec![live.host_ifname.to_string(), "snv0123456789ab".to_string()]
        );
        assert!(
            plan.reclaim.is_empty(),
            "the record is the DEL's to release"
        );
    }

    #[test]
    fn reconcile_reclaims_dead_and_removes_orphans() {
        let net = build_spec(req("a", "10.1.0.0/24")).unwrap();
        let live = record(&net, "live");
        let dead = record(&net, "dead");
        let orphan_key = EndpointKey {
            container_id: ContainerId::new("orphan").unwrap(),
            ..live.key.clone()
        };
        let links = vec![
            link("a", Some(naming::bridge_alias(&net.name)), LinkKind::Bridge),
            link(
                "old",
                Some(naming::bridge_alias(&name("gone"))),
                LinkKind::Bridge,
            ),
            link(
                live.host_ifname.as_str(),
                Some(naming::veth_alias(&live.key)),
                LinkKind::Veth,
            ),
            link(
                naming::host_veth_name(&orphan_key).as_str(),
                Some(naming::veth_alias(&orphan_key)),
                LinkKind::Veth,
            ),
            link("foreign0", None, LinkKind::Bridge),
        ];
        let plan = plan_reconcile(
            std::slice::from_ref(&net),
            &[live.clone(), dead.clone()],
            &links,
            &[name("a"), name("gone")],
            &[live.host_ifname.clone(), dead.host_ifname.clone()],
            |ep| ep.key.container_id.as_str() == "live",
        );
        assert_eq!(plan.reclaim, vec![dead.key.clone()]);
        assert_eq!(
            plan.delete_links,
            vec![
                "old".to_string(),
                naming::host_veth_name(&orphan_key).to_string()
            ]
        );
        assert_eq!(plan.delete_fw_networks, vec![name("gone")]);
        assert_eq!(plan.purge_ports, vec![dead.host_ifname]);
        assert!(
            plan.reinstall_ports.is_empty(),
            "no endpoint publishes ports"
        );
    }

    #[test]
    fn reconcile_puts_ports_cut_off_their_bridge_back() {
        let net = build_spec(req("a", "10.1.0.0/24")).unwrap();
        let on = record(&net, "on");
        let off = record(&net, "off");
        let gone = record(&net, "gone");
        let mut bridge = link("a", Some(naming::bridge_alias(&net.name)), LinkKind::Bridge);
        bridge.index = 7;
        let port = |r: &EndpointRecord, master| LinkInfo {
            master,
            ..link(
                r.host_ifname.as_str(),
                Some(naming::veth_alias(&r.key)),
                LinkKind::Veth,
            )
        };
        // `off` still names the bridge the kernel deleted (index 3); `gone` has no host end.
        let links = vec![bridge.clone(), port(&on, Some(7)), port(&off, Some(3))];
        let eps = [on, off.clone(), gone];
        let plan = plan_reconcile(std::slice::from_ref(&net), &eps, &links, &[], &[], |_| true);
        assert_eq!(plan.reattach_ports, vec![off.key.clone()]);
        // No bridge (yet): nothing to put the ports on.
        let plan = plan_reconcile(
            std::slice::from_ref(&net),
            &eps,
            &links[1..],
            &[],
            &[],
            |_| true,
        );
        assert!(plan.reattach_ports.is_empty());
    }

    #[test]
    fn reconcile_keeps_extensions_of_recorded_networks_and_their_ports() {
        let net = build_spec(req("a", "10.1.0.0/16")).unwrap();
        let ext = naming::extension_bridge_name(&net.name, 1);
        let (t1, t2) = naming::trunk_names(&net.name, 1);
        let gone = name("gone");
        let mut on_ext = record(&net, "x");
        on_ext.extension = Some(1);
        let mut xb = link(
            ext.as_str(),
            Some(naming::extension_alias(&net.name, 1)),
            LinkKind::Bridge,
        );
        xb.index = 11;
        let trunk = |n: &IfName| {
            link(
                n.as_str(),
                Some(naming::trunk_alias(&net.name, 1)),
                LinkKind::Veth,
            )
        };
        let port = LinkInfo {
            master: Some(3),
            ..link(
                on_ext.host_ifname.as_str(),
                Some(naming::veth_alias(&on_ext.key)),
                LinkKind::Veth,
            )
        };
        let links = vec![
            link("a", Some(naming::bridge_alias(&net.name)), LinkKind::Bridge),
            xb.clone(),
            trunk(&t1),
            trunk(&t2),
            // Another network's extension that nothing records any more.
            link(
                naming::extension_bridge_name(&gone, 2).as_str(),
                Some(naming::extension_alias(&gone, 2)),
                LinkKind::Bridge,
            ),
            // shimnet's alias on a link of the wrong name: not ours to keep.
            link(
                "impostor",
                Some(naming::extension_alias(&net.name, 1)),
                LinkKind::Bridge,
            ),
            port.clone(),
        ];
        let plan = plan_reconcile(
            std::slice::from_ref(&net),
            std::slice::from_ref(&on_ext),
            &links,
            &[],
            &[],
            |_| true,
        );
        assert_eq!(
            plan.delete_links,
            vec![
                naming::extension_bridge_name(&gone, 2).to_string(),
                "impostor".to_string()
            ]
        );
        // Its port is on bridge #3, not on its extension (#11): put back.
        assert_eq!(plan.reattach_ports, vec![on_ext.key.clone()]);
        let mut links = links;
        links[6].master = Some(11);
        let plan = plan_reconcile(
            std::slice::from_ref(&net),
            std::slice::from_ref(&on_ext),
            &links,
            &[],
            &[],
            |_| true,
        );
        assert!(plan.reattach_ports.is_empty());
    }

    #[test]
    fn reconcile_reinstalls_only_missing_ports() {
        let net = build_spec(req("a", "10.1.0.0/24")).unwrap();
        let port = PortMapping {
            protocol: crate::types::Protocol::Tcp,
            host_ip: None,
            host_port: 8080,
            container_port: 80,
        };
        let mut intact = record(&net, "intact");
        intact.ports = vec![port];
        let mut drifted = record(&net, "drifted");
        drifted.ports = vec![PortMapping {
            host_port: 8081,
            ..port
        }];
        let mut dead = record(&net, "dead");
        dead.ports = vec![PortMapping {
            host_port: 8082,
            ..port
        }];
        let bare = record(&net, "bare");
        let eps = [intact.clone(), drifted.clone(), dead, bare];
        let plan = plan_reconcile(
            std::slice::from_ref(&net),
            &eps,
            &[],
            &[name("a")],
            &[intact.host_ifname.clone()],
            |ep| ep.key.container_id.as_str() != "dead",
        );
        assert_eq!(plan.reinstall_ports, vec![drifted.key]);
        let all_in_place = plan_reconcile(
            std::slice::from_ref(&net),
            &eps[..1],
            &[],
            &[name("a")],
            &[intact.host_ifname.clone()],
            |_| true,
        );
        assert!(all_in_place.reinstall_ports.is_empty());
    }
}
