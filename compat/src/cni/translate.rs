//! Reference `bridge` + `host-local` configuration → REST API requests (`PUT /v1/networks/{name}`
//! and `POST .../endpoints`). Keys shimnet cannot honour are refused here with code 7; keys it
//! accepts without effect are listed in the README ("Use with Podman / CNI").

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use shimnet_wire::{EndpointAttach, NetworkCreate, PortSpec};

use crate::cni::args::CniArgs;
use crate::cni::config::{NetConf, Range};
use crate::cni::error::CniError;
use crate::net::first_host;

/// Bridge name when the configuration names none (as the reference plugin).
pub const DEFAULT_BRIDGE: &str = "cni0";

/// Which daemon network an ADD attaches to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkTarget {
    /// Ensure this network exists (created from the configuration if missing).
    Ensure(Box<NetworkCreate>),
    /// Attach to an existing network of this name (the `network` key).
    Existing(String),
}

/// The daemon network the configuration addresses: `network` if set, else `name`.
pub fn network_name(conf: &NetConf) -> Result<String, CniError> {
    let n = conf.network.as_deref().unwrap_or(&conf.name);
    if n.is_empty() {
        return Err(CniError::config(
            "the configuration has no \"name\"; give the network a name",
        ));
    }
    Ok(n.to_string())
}

/// Refuses reference keys shimnet cannot honour.
fn refuse_unsupported(conf: &NetConf) -> Result<(), CniError> {
    let refuse = |key: &str, why: &str| {
        Err(CniError::config(format!(
            "\"{key}\" is not supported by shimnet: {why}; remove it from the configuration"
        )))
    };
    if conf.vlan.is_some_and(|v| v != 0) {
        return refuse("vlan", "bridge ports are untagged");
    }
    if conf
        .vlan_trunk
        .as_ref()
        .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
    {
        return refuse("vlanTrunk", "bridge ports are untagged");
    }
    if conf.macspoofchk == Some(true) {
        return refuse("macspoofchk", "no MAC spoof filtering is installed");
    }
    if conf.disable_container_interface == Some(true) {
        return refuse(
            "disableContainerInterface",
            "the container interface is always configured",
        );
    }
    if let Some(b) = conf.ip_masq_backend.as_deref() {
        if !matches!(b, "" | "iptables" | "nftables") {
            return refuse("ipMasqBackend", "only iptables or nftables exist");
        }
    }
    Ok(())
}

/// The IPv4 and IPv6 ranges the configuration asks for (`runtimeConfig.ipRanges`, then
/// `ipam.ranges`, then the legacy `ipam.subnet` form).
fn ranges(conf: &NetConf) -> Result<(Option<Range>, Option<Range>), CniError> {
    let ipam = conf.ipam.clone().unwrap_or_default();
    let sets: Vec<Vec<Range>> = if !conf.runtime_config.ip_ranges.is_empty() {
        conf.runtime_config.ip_ranges.clone()
    } else if !ipam.ranges.is_empty() {
        ipam.ranges.clone()
    } else if let Some(subnet) = ipam.subnet.clone() {
        vec![vec![Range {
            subnet,
            range_start: ipam.range_start.clone(),
            range_end: ipam.range_end.clone(),
            gateway: ipam.gateway.clone(),
        }]]
    } else {
        Vec::new()
    };
    let (mut v4, mut v6) = (None, None);
    for set in sets {
        // Go writes an unset `net.IP` field of an untagged struct (go-cni's `IPRanges`) as "",
        // which Go's reference plugins read as unset.
        let set: Vec<Range> = set
            .into_iter()
            .map(|r| Range {
                range_start: r.range_start.filter(|s| !s.is_empty()),
                range_end: r.range_end.filter(|s| !s.is_empty()),
                gateway: r.gateway.filter(|s| !s.is_empty()),
                ..r
            })
            .collect();
        let [range] = <[Range; 1]>::try_from(set).map_err(|set| {
            CniError::config(format!(
                "ipam.ranges: a range set with {} ranges; shimnet networks have one subnet per address family, give one range per set",
                set.len()
            ))
        })?;
        let net: IpNetwork = range
            .subnet
            .parse()
            .map_err(|e| CniError::config(format!("ipam range subnet {:?}: {e}", range.subnet)))?;
        if net.is_ipv6() && (range.range_start.is_some() || range.range_end.is_some()) {
            return Err(CniError::config(format!(
                "ipam range {}: rangeStart/rangeEnd are supported for IPv4 ranges only; remove them from the IPv6 range",
                range.subnet
            )));
        }
        let slot = if net.is_ipv4() { &mut v4 } else { &mut v6 };
        if slot.is_some() {
            return Err(CniError::config(format!(
                "ipam.ranges: two range sets of the same address family ({}); shimnet networks have one subnet per family",
                range.subnet
            )));
        }
        *slot = Some(range);
    }
    Ok((v4, v6))
}

fn gateway_of(range: &Range) -> Result<IpAddr, CniError> {
    let net: IpNetwork = range
        .subnet
        .parse()
        .map_err(|e| CniError::config(format!("ipam subnet {:?}: {e}", range.subnet)))?;
    match &range.gateway {
        Some(g) => g
            .parse()
            .map_err(|e| CniError::config(format!("ipam gateway {g:?}: {e}"))),
        None => first_host(net).ok_or_else(|| {
            CniError::config(format!(
                "ipam subnet {net} has no room for a gateway; use a larger subnet or set \"gateway\""
            ))
        }),
    }
}

/// What an ADD needs from the daemon's network: ensure it from the configuration, or use the
/// existing one named by `network`. `delegated` replaces the ranges with the addresses a
/// delegated IPAM plugin handed out (their subnets become the network's).
pub fn network_target(
    conf: &NetConf,
    delegated: Option<&[(IpNetwork, Option<IpAddr>)]>,
) -> Result<NetworkTarget, CniError> {
    refuse_unsupported(conf)?;
    if let Some(net) = &conf.network {
        let has_ranges = conf
            .ipam
            .as_ref()
            .is_some_and(|i| !i.ranges.is_empty() || i.subnet.is_some() || !i.kind.is_empty());
        if has_ranges {
            return Err(CniError::config(format!(
                "\"network\": {net:?} names an existing shimnet network, which has its own addresses; remove \"ipam\""
            )));
        }
        return Ok(NetworkTarget::Existing(net.clone()));
    }
    let (v4, v6) = match delegated {
        Some(addrs) => {
            let mut v4 = None;
            let mut v6 = None;
            for (a, gw) in addrs {
                let range = Range {
                    subnet: IpNetwork::new(a.network(), a.prefix())
                        .map_err(|e| CniError::config(e.to_string()))?
                        .to_string(),
                    gateway: gw.map(|g| g.to_string()),
                    ..Range::default()
                };
                if a.is_ipv4() {
                    v4.get_or_insert(range);
                } else {
                    v6.get_or_insert(range);
                }
            }
            (v4, v6)
        }
        None => ranges(conf)?,
    };
    let Some(v4) = v4 else {
        return Err(CniError::config(
            "ipam: shimnet networks need an IPv4 subnet; give ipam.ranges (or ipam.subnet) an IPv4 range, or name an existing shimnet network with \"network\"",
        ));
    };
    let gw4 = gateway_of(&v4)?;
    let mut gws = vec![gw4];
    if let Some(r) = &v6 {
        gws.push(gateway_of(r)?);
    }
    for route in conf.ipam.iter().flat_map(|i| &i.routes) {
        let dst: IpNetwork = route
            .dst
            .parse()
            .map_err(|e| CniError::config(format!("ipam.routes dst {:?}: {e}", route.dst)))?;
        if let Some(gw) = &route.gw {
            let gw: IpAddr = gw
                .parse()
                .map_err(|e| CniError::config(format!("ipam.routes gw {gw:?}: {e}")))?;
            if !gws.contains(&gw) {
                return Err(CniError::config(format!(
                    "ipam.routes: route to {dst} via {gw}: shimnet routes all container traffic via the bridge gateway; drop \"gw\" or set it to the gateway"
                )));
            }
        }
    }
    Ok(NetworkTarget::Ensure(Box::new(NetworkCreate {
        name: conf.name.clone(),
        subnet: v4.subnet.clone(),
        gateway: v4.gateway.clone(),
        range_start: v4.range_start.clone(),
        range_end: v4.range_end.clone(),
        bridge: Some(conf.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.into())),
        subnet6: v6.as_ref().map(|r| r.subnet.clone()),
        gateway6: v6.and_then(|r| r.gateway),
        mtu: conf.mtu.filter(|m| *m != 0),
        masquerade: Some(conf.ip_masq.unwrap_or(false)),
        icc: conf.port_isolation.map(|iso| !iso),
        hairpin: Some(conf.hairpin_mode.unwrap_or(false)),
        ..NetworkCreate::default()
    })))
}

/// The address part of `ip` or `ip/len`.
fn bare_ip(s: &str) -> Option<IpAddr> {
    s.split('/').next().and_then(|a| a.trim().parse().ok())
}

/// Identity of the attachment from the environment.
#[derive(Debug, Clone, Copy)]
pub struct AttachEnv<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`.
    pub netns: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
}

/// The attach request for an ADD: static addresses from a delegated IPAM plugin, else
/// `runtimeConfig.ips`, else `args.cni.ips`, else `CNI_ARGS` `IP=`; the MAC likewise; ports from
/// `runtimeConfig.portMappings`.
pub fn attach_request(
    conf: &NetConf,
    env: AttachEnv<'_>,
    cni_args: &CniArgs,
    delegated: &[IpAddr],
) -> Result<EndpointAttach, CniError> {
    let args_cni = conf.args.clone().unwrap_or_default().cni;
    let (ips, from): (Vec<IpAddr>, &str) = if !delegated.is_empty() {
        (delegated.to_vec(), "the IPAM plugin")
    } else {
        let (list, from) = if !conf.runtime_config.ips.is_empty() {
            (&conf.runtime_config.ips, "runtimeConfig.ips")
        } else if !args_cni.ips.is_empty() {
            (&args_cni.ips, "args.cni.ips")
        } else {
            (&cni_args.ips, "CNI_ARGS IP")
        };
        let parsed = list
            .iter()
            .map(|s| {
                bare_ip(s).ok_or_else(|| {
                    let msg = format!("{from}: {s:?} is not an IP address");
                    if from == "CNI_ARGS IP" {
                        CniError::env(msg)
                    } else {
                        CniError::config(msg)
                    }
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        (parsed, from)
    };
    let mut attach = EndpointAttach {
        container_id: env.container_id.to_string(),
        netns: env.netns.to_string(),
        ifname: Some(env.ifname.to_string()),
        ..EndpointAttach::default()
    };
    for ip in ips {
        let slot = match ip {
            IpAddr::V4(_) => &mut attach.ip,
            IpAddr::V6(_) => &mut attach.ip6,
        };
        if slot.as_deref() == Some(ip.to_string().as_str()) {
            // The same address again (Podman repeats a static address on `network reload`).
            continue;
        }
        if slot.is_some() {
            return Err(CniError::config(format!(
                "{from}: more than one address of one family; shimnet gives an interface one IPv4 and one IPv6 address"
            )));
        }
        *slot = Some(ip.to_string());
    }
    attach.mac = conf
        .runtime_config
        .mac
        .clone()
        .or(args_cni.mac)
        .or(cni_args.mac.clone());
    attach.ports = conf
        .runtime_config
        .port_mappings
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() {
                "tcp".to_string()
            } else {
                p.protocol.to_ascii_lowercase()
            };
            PortSpec {
                protocol: Some(proto),
                host_ip: Some(p.host_ip.clone()).filter(|h| !h.is_empty()),
                host_port: p.host_port,
                container_port: p.container_port,
            }
        })
        .collect();
    Ok(attach)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::args;

    fn conf(json: &str) -> NetConf {
        NetConf::parse(json.as_bytes()).unwrap().1
    }

    fn env() -> AttachEnv<'static> {
        AttachEnv {
            container_id: "c1",
            netns: "/run/netns/c1",
            ifname: "eth0",
        }
    }

    #[test]
    fn reference_defaults() {
        let c = conf(r#"{"name":"n","ipam":{"type":"host-local","subnet":"10.5.0.0/24"}}"#);
        let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
            panic!()
        };
        assert_eq!(n.bridge.as_deref(), Some("cni0"));
        assert_eq!(n.masquerade, Some(false), "ipMasq defaults to false");
        assert_eq!(n.hairpin, Some(false));
        assert_eq!(n.gateway, None);
        assert_eq!(n.icc, None);
    }

    #[test]
    fn dual_stack_and_gateway() {
        let c = conf(
            r#"{"name":"n","bridge":"br9","mtu":1400,"ipMasq":true,"portIsolation":true,"ipam":{"ranges":[
                [{"subnet":"10.5.0.0/24","gateway":"10.5.0.254"}],[{"subnet":"fd00:5::/64"}]]}}"#,
        );
        let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
            panic!()
        };
        assert_eq!(n.gateway.as_deref(), Some("10.5.0.254"));
        assert_eq!(n.subnet6.as_deref(), Some("fd00:5::/64"));
        assert_eq!(
            (n.mtu, n.masquerade, n.icc),
            (Some(1400), Some(true), Some(false))
        );
    }

    #[test]
    fn refusals_are_code_7_and_say_what_to_fix() {
        for (json, needle) in [
            (
                r#"{"name":"n","vlan":5,"ipam":{"subnet":"10.5.0.0/24"}}"#,
                "vlan",
            ),
            (
                r#"{"name":"n","macspoofchk":true,"ipam":{"subnet":"10.5.0.0/24"}}"#,
                "macspoofchk",
            ),
            (
                r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.5.0.0/25"},{"subnet":"10.5.0.128/25"}]]}}"#,
                "one range per set",
            ),
            (
                r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.5.0.0/24"}],[{"subnet":"fd00::/64","rangeStart":"fd00::5"}]]}}"#,
                "IPv4 ranges only",
            ),
            (r#"{"name":"n","ipam":{"subnet":"fd00::/64"}}"#, "IPv4"),
            (r#"{"name":"n"}"#, "IPv4"),
            (
                r#"{"name":"n","ipam":{"subnet":"10.5.0.0/24","routes":[{"dst":"10.9.0.0/16","gw":"10.5.0.9"}]}}"#,
                "gateway",
            ),
            (
                r#"{"name":"n","network":"x","ipam":{"subnet":"10.5.0.0/24"}}"#,
                "remove \"ipam\"",
            ),
            (
                r#"{"name":"n","ipam":{"subnet":"10.5.0.0/33"}}"#,
                "10.5.0.0/33",
            ),
        ] {
            let e = network_target(&conf(json), None).unwrap_err();
            assert_eq!(e.code, 7, "{json}");
            assert!(e.msg.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn range_start_and_end_reach_the_daemon() {
        let c = conf(
            r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.5.0.0/24","rangeStart":"10.5.0.100","rangeEnd":"10.5.0.150"}]]}}"#,
        );
        let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
            panic!("expected Ensure");
        };
        assert_eq!(n.range_start.as_deref(), Some("10.5.0.100"));
        assert_eq!(n.range_end.as_deref(), Some("10.5.0.150"));
    }

    #[test]
    fn ip_ranges_capability_replaces_ipam_ranges() {
        let c = conf(
            r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.5.0.0/24"}]]},
                "runtimeConfig":{"ipRanges":[[{"subnet":"10.6.0.0/24","gateway":"10.6.0.9"}]]}}"#,
        );
        let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
            panic!()
        };
        assert_eq!(
            (n.subnet.as_str(), n.gateway.as_deref()),
            ("10.6.0.0/24", Some("10.6.0.9"))
        );
    }

    #[test]
    fn accepted_routes_and_existing_network() {
        let c = conf(
            r#"{"name":"n","ipam":{"subnet":"10.5.0.0/24","routes":[{"dst":"0.0.0.0/0"},{"dst":"10.9.0.0/16","gw":"10.5.0.1"}]}}"#,
        );
        assert!(network_target(&c, None).is_ok());
        let c = conf(r#"{"name":"podman","network":"shimnet0"}"#);
        assert_eq!(
            network_target(&c, None).unwrap(),
            NetworkTarget::Existing("shimnet0".into())
        );
        assert_eq!(network_name(&c).unwrap(), "shimnet0");
    }

    #[test]
    fn delegated_addresses_define_the_subnet() {
        let c = conf(r#"{"name":"n","ipam":{"type":"static"}}"#);
        let d = [(
            "10.7.0.5/24".parse().unwrap(),
            Some("10.7.0.1".parse().unwrap()),
        )];
        let NetworkTarget::Ensure(n) = network_target(&c, Some(&d)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (n.subnet.as_str(), n.gateway.as_deref()),
            ("10.7.0.0/24", Some("10.7.0.1"))
        );
    }

    #[test]
    fn static_ip_precedence() {
        let a = args::parse("IP=10.5.0.7;MAC=02:00:00:00:00:07").unwrap();
        let c = conf(r#"{"name":"n"}"#);
        let r = attach_request(&c, env(), &a, &[]).unwrap();
        assert_eq!(
            (r.ip.as_deref(), r.mac.as_deref()),
            (Some("10.5.0.7"), Some("02:00:00:00:00:07"))
        );
        let c = conf(
            r#"{"name":"n","runtimeConfig":{"ips":["10.5.0.9/24","fd00::9/64"],"mac":"02:00:00:00:00:09"}}"#,
        );
        let r = attach_request(&c, env(), &a, &[]).unwrap();
        assert_eq!(
            (r.ip.as_deref(), r.ip6.as_deref()),
            (Some("10.5.0.9"), Some("fd00::9"))
        );
        assert_eq!(r.mac.as_deref(), Some("02:00:00:00:00:09"));
        let c = conf(r#"{"name":"n","args":{"cni":{"ips":["10.5.0.8"]}}}"#);
        assert_eq!(
            attach_request(&c, env(), &a, &[]).unwrap().ip.as_deref(),
            Some("10.5.0.8")
        );
        let bad = args::parse("IP=nope").unwrap();
        assert_eq!(
            attach_request(&conf(r#"{"name":"n"}"#), env(), &bad, &[])
                .unwrap_err()
                .code,
            4
        );
        let two = conf(r#"{"name":"n","runtimeConfig":{"ips":["10.5.0.9","10.5.0.10"]}}"#);
        assert_eq!(attach_request(&two, env(), &a, &[]).unwrap_err().code, 7);
    }

    #[test]
    fn repeated_identical_addresses_count_once() {
        // `podman network reload` of a container with a static address sends it twice.
        let a = CniArgs::default();
        let c = conf(r#"{"name":"n","runtimeConfig":{"ips":["10.198.0.60","10.198.0.60"]}}"#);
        let r = attach_request(&c, env(), &a, &[]).unwrap();
        assert_eq!((r.ip.as_deref(), r.ip6), (Some("10.198.0.60"), None));
        let c = conf(
            r#"{"name":"n","runtimeConfig":{"ips":["10.198.0.60/24","fd00::60","10.198.0.60","fd00::60/64"]}}"#,
        );
        let r = attach_request(&c, env(), &a, &[]).unwrap();
        assert_eq!(
            (r.ip.as_deref(), r.ip6.as_deref()),
            (Some("10.198.0.60"), Some("fd00::60"))
        );
        let two = conf(r#"{"name":"n","runtimeConfig":{"ips":["10.198.0.60","10.198.0.61"]}}"#);
        let e = attach_request(&two, env(), &a, &[]).unwrap_err();
        assert!(e.msg.contains("more than one address of one family"), "{e}");
    }

    #[test]
    fn empty_range_strings_are_unset() {
        // A Go struct without JSON tags writes every field, unset ones as ""; Go's net.IP reads
        // "" as unset, and so does shimnet.
        let c = conf(
            r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.5.0.0/24"}]]},
                "runtimeConfig":{"ipRanges":[[{"Subnet":"10.6.0.0/24","RangeStart":"","RangeEnd":"","Gateway":""}]]}}"#,
        );
        let NetworkTarget::Ensure(n) = network_target(&c, None).unwrap() else {
            panic!()
        };
        assert_eq!(n.subnet, "10.6.0.0/24");
        assert_eq!((n.gateway, n.range_start, n.range_end), (None, None, None));
    }

    #[test]
    fn port_mappings() {
        let c = conf(
            r#"{"name":"n","runtimeConfig":{"portMappings":[
            {"hostPort":8080,"containerPort":80,"protocol":"TCP"},
            {"hostPort":53,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}]}}"#,
        );
        let r = attach_request(&c, env(), &CniArgs::default(), &[]).unwrap();
        assert_eq!(r.ports[0].protocol.as_deref(), Some("tcp"));
        assert_eq!(r.ports[0].host_ip, None);
        assert_eq!(r.ports[1].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(r.ifname.as_deref(), Some("eth0"));
    }
}
