//! Parse, then act: REST bodies and query strings → typed engine requests, each refusal naming
//! the field; engine values → REST replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnetwork::IpNetwork;
use runtime_net::engine::AttachRequest;
use runtime_net::plan::NetworkRequest;
use runtime_net::{
    ContainerId, EndpointKey, EndpointKind, HostName, IfName, MacAddr, NetworkName, NetworkSpec,
    PortMapping, Protocol,
};
use shimnet_compat::docker::conventions::MAC_PREFIX as DOCKER_MAC_PREFIX;

use crate::error::ApiError;
use shimnet_wire::{EndpointAttach, Network, NetworkAttach, NetworkCreate, PortSpec};

/// Parses `value` as `T`, naming `field` on failure.
pub fn field<T: FromStr>(field: &str, value: &str) -> Result<T, ApiError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse::<T>()
        .map_err(|e| ApiError::invalid(field, format!("{value:?}: {e}")))
}

fn opt<T: FromStr>(name: &str, value: &Option<String>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value.as_deref().map(|v| field(name, v)).transpose()
}

fn cidrs(name: &str, values: &[String]) -> Result<Vec<IpNetwork>, ApiError> {
    values.iter().map(|v| field(name, v)).collect()
}

/// Decodes a JSON body as Go's `encoding/json` would (keys in any case, the last duplicate
/// winning: most callers are Go programs), naming the field at fault by its path
/// (`ports[0].host_port`), or `body` when the JSON itself is broken.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    gojson::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.path().is_empty() {
            ApiError::invalid("body", format!("invalid JSON body: {}", e.message()))
        } else {
            ApiError::invalid(e.path(), e.message())
        }
    })
}

/// `NetworkCreate` → `NetworkRequest`.
pub fn network_request(b: &NetworkCreate) -> Result<NetworkRequest, ApiError> {
    let mut r = NetworkRequest::new(
        field::<NetworkName>("name", &b.name)?,
        field("subnet", &b.subnet)?,
    );
    r.gateway = opt("gateway", &b.gateway)?;
    r.range_start = opt("range_start", &b.range_start)?;
    r.range_end = opt("range_end", &b.range_end)?;
    r.bridge = opt::<IfName>("bridge", &b.bridge)?;
    r.subnet6 = opt("subnet6", &b.subnet6)?;
    r.gateway6 = opt("gateway6", &b.gateway6)?;
    r.mtu = b.mtu;
    r.masquerade = b.masquerade;
    r.icc = b.icc;
    r.internal = b.internal;
    r.hairpin = b.hairpin;
    r.no_masquerade_to = cidrs("no_masquerade_to", &b.no_masquerade_to)?;
    r.allow_from = cidrs("allow_from", &b.allow_from)?;
    r.host_binding_ipv4 = opt::<Ipv4Addr>("host_binding_ipv4", &b.host_binding_ipv4)?;
    r.mac_prefix = b.docker_mac.unwrap_or(false).then_some(DOCKER_MAC_PREFIX);
    r.dns = b.dns;
    Ok(r)
}

/// Most names one endpoint may have (its name and aliases).
pub const MAX_NAMES: usize = 64;

/// `name` then `aliases`, validated (the field is named: `name`, `aliases[2]`), duplicates
/// (ignoring case) dropped.
pub fn names(name: Option<&str>, aliases: &[String]) -> Result<Vec<HostName>, ApiError> {
    if aliases.len() >= MAX_NAMES {
        return Err(ApiError::invalid(
            "aliases",
            format!(
                "{} aliases; at most {} names per endpoint",
                aliases.len(),
                MAX_NAMES - 1
            ),
        ));
    }
    let mut out: Vec<HostName> = Vec::with_capacity(aliases.len() + 1);
    let named = name.map(|n| ("name".to_string(), n));
    let aliased = aliases
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("aliases[{i}]"), a.as_str()));
    for (f, v) in named.into_iter().chain(aliased) {
        let h: HostName = field(&f, v)?;
        if !out
            .iter()
            .any(|o| o.as_str().eq_ignore_ascii_case(h.as_str()))
        {
            out.push(h);
        }
    }
    Ok(out)
}

/// A network as the REST API shows it.
pub fn network_reply(s: &NetworkSpec) -> Network {
    let strings = |v: &[IpNetwork]| v.iter().map(ToString::to_string).collect();
    Network {
        name: s.name.to_string(),
        bridge: s.bridge.to_string(),
        subnet: s.subnet.to_string(),
        gateway: s.gateway.to_string(),
        range4: s.range4.map(|(a, b)| (a.to_string(), b.to_string())),
        subnet6: s.subnet6.map(|n| n.to_string()),
        gateway6: s.gateway6.map(|g| g.to_string()),
        mtu: s.mtu,
        masquerade: s.masquerade,
        icc: s.icc,
        internal: s.internal,
        hairpin: s.hairpin,
        no_masquerade_to: strings(&s.no_masquerade_to),
        allow_from: strings(&s.allow_from),
        host_binding_ipv4: s.host_binding_ipv4.map(|a| a.to_string()),
        mac_prefix: s.mac_prefix.to_string(),
        docker_mac: s.mac_prefix == DOCKER_MAC_PREFIX,
    }
}

/// One `PortSpec` → `PortMapping`.
pub fn port(p: &PortSpec) -> Result<PortMapping, ApiError> {
    let protocol = match p.protocol.as_deref().unwrap_or("tcp") {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => {
            return Err(ApiError::invalid(
                "ports.protocol",
                format!("{other:?} is not tcp, udp or sctp"),
            ))
        }
    };
    if p.host_port == 0 {
        return Err(ApiError::invalid("ports.host_port", "must be 1..=65535"));
    }
    if p.container_port == 0 {
        return Err(ApiError::invalid(
            "ports.container_port",
            "must be 1..=65535",
        ));
    }
    Ok(PortMapping {
        protocol,
        host_ip: opt::<IpAddr>("ports.host_ip", &p.host_ip)?,
        host_port: p.host_port,
        container_port: p.container_port,
    })
}

/// `EndpointAttach` for network `network` → `AttachRequest`.
pub fn attach_request(network: NetworkName, b: &EndpointAttach) -> Result<AttachRequest, ApiError> {
    if b.netns.is_empty() || !b.netns.starts_with('/') {
        return Err(ApiError::invalid(
            "netns",
            format!("{:?} is not an absolute path", b.netns),
        ));
    }
    let ports = b.ports.iter().map(port).collect::<Result<Vec<_>, _>>()?;
    Ok(AttachRequest {
        network,
        container_id: field::<ContainerId>("container_id", &b.container_id)?,
        kind: EndpointKind::Managed,
        netns: Some(PathBuf::from(&b.netns)),
        ifname: match &b.ifname {
            Some(i) => field("ifname", i)?,
            None => IfName::new("eth0").expect("valid"),
        },
        ipv4: opt::<Ipv4Addr>("ip", &b.ip)?,
        ipv6: opt::<Ipv6Addr>("ip6", &b.ip6)?,
        mac: opt::<MacAddr>("mac", &b.mac)?,
        ports: ports.into_iter().map(Into::into).collect(),
        names: names(b.name.as_deref(), &b.aliases)?,
    })
}

/// `NetworkAttach` for network `network` → the network to ensure (none: it must exist) and the
/// attach request, both checked before anything changes; fields are named by their path in the
/// body (`ensure.subnet`, `endpoint.ports[0].host_port`).
pub fn network_attach(
    network: NetworkName,
    b: &NetworkAttach,
) -> Result<(Option<NetworkRequest>, AttachRequest), ApiError> {
    let ensure = match &b.ensure {
        Some(n) if n.name != network.as_str() => {
            return Err(ApiError::invalid(
                "ensure.name",
                format!("{:?} differs from the path's {network:?}", n.name),
            ))
        }
        Some(n) => Some(network_request(n).map_err(|e| e.within("ensure"))?),
        None => None,
    };
    let attach = attach_request(network, &b.endpoint).map_err(|e| e.within("endpoint"))?;
    Ok((ensure, attach))
}

/// Endpoint key from path segments and the `ifname` query parameter (default `eth0`).
pub fn endpoint_key(
    network: &str,
    id: &str,
    ifname: Option<&str>,
) -> Result<EndpointKey, ApiError> {
    Ok(EndpointKey {
        network: field("network", network)?,
        container_id: field("container_id", id)?,
        ifname: field("ifname", ifname.unwrap_or("eth0"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_names_the_field_by_its_path() {
        let e = decode::<NetworkCreate>(br#"{"name": 5, "subnet": "10.0.0.0/24"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = decode::<EndpointAttach>(
            br#"{"container_id": "c", "netns": "/x", "ports": [{"host_port": 70000, "container_port": 80}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ports[0].host_port"), "{e:?}");
        let e = decode::<NetworkCreate>(br#"{"name": "a", "subnet": "10.0.0.0/24", "colour": 1}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("colour"));
        let e = decode::<NetworkCreate>(br#"{"name": "a""#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        let e =
            decode::<NetworkCreate>(br#"{"name": "a", "subnet": "10.0.0.0/24"} x"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
    }

    #[test]
    fn network_fields_named() {
        let mut b = NetworkCreate {
            name: "n1".into(),
            subnet: "10.1.0.0/24".into(),
            ..Default::default()
        };
        assert!(network_request(&b).is_ok());
        b.subnet = "10.1.0.0/33".into();
        assert_eq!(
            network_request(&b).unwrap_err().field.as_deref(),
            Some("subnet")
        );
        b.subnet = "10.1.0.0/24".into();
        b.gateway = Some("nope".into());
        assert_eq!(
            network_request(&b).unwrap_err().field.as_deref(),
            Some("gateway")
        );
        b.gateway = None;
        b.bridge = Some("much-too-long-bridge".into());
        assert_eq!(
            network_request(&b).unwrap_err().field.as_deref(),
            Some("bridge")
        );
        b.bridge = None;
        b.name = "bad name".into();
        assert_eq!(
            network_request(&b).unwrap_err().field.as_deref(),
            Some("name")
        );
    }

    #[test]
    fn attach_fields_named() {
        let n = NetworkName::new("n1").unwrap();
        let mut b = EndpointAttach {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ..Default::default()
        };
        let r = attach_request(n.clone(), &b).unwrap();
        assert_eq!(r.ifname.as_str(), "eth0");
        b.netns = "relative".into();
        assert_eq!(
            attach_request(n.clone(), &b).unwrap_err().field.as_deref(),
            Some("netns")
        );
        b.netns = "/x".into();
        b.mac = Some("01:00:00:00:00:01".into());
        assert_eq!(
            attach_request(n.clone(), &b).unwrap_err().field.as_deref(),
            Some("mac")
        );
        b.mac = None;
        b.ports = vec![PortSpec {
            protocol: Some("icmp".into()),
            host_ip: None,
            host_port: 80,
            container_port: 80,
        }];
        assert_eq!(
            attach_request(n.clone(), &b).unwrap_err().field.as_deref(),
            Some("ports.protocol")
        );
        b.ports[0].protocol = None;
        b.ports[0].host_port = 0;
        assert_eq!(
            attach_request(n, &b).unwrap_err().field.as_deref(),
            Some("ports.host_port")
        );
    }

    #[test]
    fn network_attach_checks_both_parts_first() {
        let n = NetworkName::new("n1").unwrap();
        let mut b: NetworkAttach = decode(
            br#"{"ensure": {"name": "n1", "subnet": "10.1.0.0/24"}, "endpoint": {"container_id": "c1", "netns": "/run/netns/x"}}"#,
        )
        .unwrap();
        let (ensure, attach) = network_attach(n.clone(), &b).unwrap();
        assert_eq!(ensure.unwrap().subnet.to_string(), "10.1.0.0/24");
        assert_eq!(
            (attach.network.as_str(), attach.ifname.as_str()),
            ("n1", "eth0")
        );
        let field = |b: &NetworkAttach| network_attach(n.clone(), b).unwrap_err().field;
        b.ensure.as_mut().unwrap().name = "n2".into();
        assert_eq!(field(&b).as_deref(), Some("ensure.name"));
        b.ensure.as_mut().unwrap().name = "n1".into();
        b.ensure.as_mut().unwrap().bridge = Some("much-too-long-bridge".into());
        let e = network_attach(n.clone(), &b).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ensure.bridge"));
        assert!(e.message.starts_with("ensure.bridge: "), "{e:?}");
        b.ensure.as_mut().unwrap().bridge = None;
        b.endpoint.netns = "relative".into();
        assert_eq!(field(&b).as_deref(), Some("endpoint.netns"));
        // Without `ensure` only the endpoint is checked: the network must exist.
        b.ensure = None;
        assert_eq!(field(&b).as_deref(), Some("endpoint.netns"));
        b.endpoint.netns = "/x".into();
        assert!(network_attach(n, &b).unwrap().0.is_none());
        let e = decode::<NetworkAttach>(br#"{"endpoint": {"container_id": "c", "netns": "/x", "ports": [{"host_port": 0.5, "container_port": 1}]}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("endpoint.ports[0].host_port"));
        let e = decode::<NetworkAttach>(br#"{"ensure": {"name": "n1", "subnet": "10.1.0.0/24"}}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("endpoint"));
    }

    #[test]
    fn names_are_checked_and_deduplicated() {
        let n = NetworkName::new("n1").unwrap();
        let mut b = EndpointAttach {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            name: Some("web".into()),
            aliases: vec!["www".into(), "WEB".into(), "api.v1".into()],
            ..Default::default()
        };
        let r = attach_request(n.clone(), &b).unwrap();
        let got: Vec<&str> = r.names.iter().map(|h| h.as_str()).collect();
        assert_eq!(got, ["web", "www", "api.v1"]);
        b.aliases[1] = "bad name".into();
        assert_eq!(
            attach_request(n.clone(), &b).unwrap_err().field.as_deref(),
            Some("aliases[1]")
        );
        b.aliases.clear();
        b.name = Some("-".repeat(64));
        assert_eq!(
            attach_request(n.clone(), &b).unwrap_err().field.as_deref(),
            Some("name")
        );
        b.name = None;
        b.aliases = (0..MAX_NAMES).map(|i| format!("a{i}")).collect();
        assert_eq!(
            attach_request(n, &b).unwrap_err().field.as_deref(),
            Some("aliases")
        );
        let nb = NetworkCreate {
            name: "n".into(),
            subnet: "10.1.0.0/24".into(),
            dns: Some(true),
            ..Default::default()
        };
        assert_eq!(network_request(&nb).unwrap().dns, Some(true));
    }

    #[test]
    fn go_cased_keys_and_missing_values() {
        let b: EndpointAttach = decode(
            br#"{"Container_ID":"c","NetNS":"/x","Ports":[{"Host_Port":80,"CONTAINER_PORT":8080}]}"#,
        )
        .unwrap();
        assert_eq!((b.container_id.as_str(), b.ports[0].host_port), ("c", 80));
        let e = decode::<EndpointAttach>(
            br#"{"container_id":"c","netns":"/x","ports":[{"container_port":8080}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("ports[0].host_port"));
        assert_eq!(e.message, "ports[0].host_port: missing");
    }

    #[test]
    fn unknown_json_field_is_named() {
        let e = decode::<NetworkCreate>(br#"{"name":"a","subnet":"10.0.0.0/24","subnett":1}"#)
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subnett"), "{e:?}");
        let e = decode::<NetworkCreate>(br#"{"name":"a"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("subnet"), "{e:?}");
        let e = decode::<NetworkCreate>(b"not json").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
    }
}
