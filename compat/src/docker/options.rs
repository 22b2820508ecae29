//! Translation of Docker network options and port maps into engine requests (pure).
//!
//! Generic options honoured (under `com.docker.network.generic`): `bridge.name`,
//! `bridge.enable_ip_masquerade`, `bridge.enable_icc`, `bridge.host_binding_ipv4`,
//! `driver.mtu`; top-level `com.docker.network.internal` and `com.docker.network.enable_ipv6`.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::RangeInclusive;

use ipnetwork::{IpNetwork, Ipv4Network};
use runtime_net::plan::ports::PortRequest;
use runtime_net::plan::NetworkRequest;
use runtime_net::{IfName, NetworkName, Protocol};
use serde_json::{Map, Value};

use super::wire::{parse_bool, CreateNetwork, IpamData, PortBinding, WireError};

/// Generic option: bridge device name.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// Generic option: masquerade.
pub const OPT_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// Generic option: inter-container communication.
pub const OPT_ICC: &str = "com.docker.network.bridge.enable_icc";
/// Generic option: default host address of published ports.
pub const OPT_HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
/// Generic option: MTU.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// Top-level option holding the generic options.
pub const OPT_GENERIC: &str = "com.docker.network.generic";
/// Top-level option: `--internal`.
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
/// Top-level option: `--ipv6`.
pub const OPT_IPV6: &str = "com.docker.network.enable_ipv6";

/// Ephemeral host ports docker picks from when a binding names no host port.
pub const EPHEMERAL_PORTS: RangeInclusive<u16> = 49153..=60999;

/// The shimnet network name of a Docker network: its full id (64 hex digits).
pub fn network_name(network_id: &str) -> Result<NetworkName, WireError> {
    NetworkName::new(network_id).map_err(|e| WireError::new("NetworkID", e.to_string()))
}

/// Docker's bridge name for a network without `bridge.name`: `br-` + 12 characters of the id.
pub fn default_bridge(network_id: &str) -> Result<IfName, WireError> {
    let short: String = network_id.chars().take(12).collect();
    IfName::new(&format!("br-{short}")).map_err(|e| WireError::new("NetworkID", e.to_string()))
}

fn generic_str(
    generic: Option<&Map<String, Value>>,
    key: &str,
) -> Result<Option<String>, WireError> {
    match generic.and_then(|g| g.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(WireError::new(
            format!("Options.{OPT_GENERIC}.{key}"),
            "must be a string",
        )),
    }
}

fn generic_bool(
    generic: Option<&Map<String, Value>>,
    key: &str,
) -> Result<Option<bool>, WireError> {
    match generic_str(generic, key)? {
        None => Ok(None),
        Some(s) => parse_bool(&s).map(Some).ok_or_else(|| {
            WireError::new(
                format!("Options.{OPT_GENERIC}.{key}"),
                format!("{s:?} is not a boolean"),
            )
        }),
    }
}

fn top_bool(options: &Map<String, Value>, key: &str) -> Result<bool, WireError> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => parse_bool(s).ok_or_else(|| {
            WireError::new(format!("Options.{key}"), format!("{s:?} is not a boolean"))
        }),
        Some(_) => Err(WireError::new(
            format!("Options.{key}"),
            "must be a boolean",
        )),
    }
}

fn check_aux(d: &IpamData, field: &str) -> Result<(), WireError> {
    for (name, a) in &d.aux {
        if !d.pool.contains(a.ip()) {
            return Err(WireError::new(
                format!("{field}.AuxAddresses.{name}"),
                format!("{} is not inside pool {}", a.ip(), d.pool),
            ));
        }
    }
    if let Some(g) = d.gateway {
        if !d.pool.contains(g.ip()) {
            return Err(WireError::new(
                format!("{field}.Gateway"),
                format!("{} is not inside pool {}", g.ip(), d.pool),
            ));
        }
    }
    Ok(())
}

/// The engine request for `CreateNetwork` (validated by the engine afterwards).
pub fn network_request(c: &CreateNetwork) -> Result<NetworkRequest, WireError> {
    let name = network_name(&c.network_id)?;
    let v4 = match c.ipv4.as_slice() {
        [] => return Err(WireError::new("IPv4Data", "an IPv4 pool is required")),
        [one] => one,
        _ => {
            return Err(WireError::new(
                "IPv4Data",
                "only one IPv4 pool per network is supported",
            ))
        }
    };
    check_aux(v4, "IPv4Data[0]")?;
    let IpNetwork::V4(pool) = v4.pool else {
        return Err(WireError::new("IPv4Data[0].Pool", "must be an IPv4 subnet"));
    };
    let subnet = Ipv4Network::new(pool.network(), pool.prefix())
        .map_err(|e| WireError::new("IPv4Data[0].Pool", e.to_string()))?;
    let mut req = NetworkRequest::new(name, subnet);
    req.mac_prefix = Some(super::conventions::MAC_PREFIX);
    // Sibling containers reach published ports of each other through the host address.
    req.hairpin = Some(true);
    req.gateway = match v4.gateway.map(|g| g.ip()) {
        Some(IpAddr::V4(g)) => Some(g),
        Some(IpAddr::V6(_)) => {
            return Err(WireError::new(
                "IPv4Data[0].Gateway",
                "must be an IPv4 address",
            ))
        }
        None => None,
    };
    let ipv6 = top_bool(&c.options, OPT_IPV6)?;
    match c.ipv6.as_slice() {
        [] if ipv6 => {
            return Err(WireError::new(
                "IPv6Data",
                "an IPv6 pool is required when IPv6 is enabled",
            ))
        }
        [] => {}
        [one] => {
            check_aux(one, "IPv6Data[0]")?;
            let IpNetwork::V6(p6) = one.pool else {
                return Err(WireError::new("IPv6Data[0].Pool", "must be an IPv6 subnet"));
            };
            req.subnet6 = Some(p6);
            req.gateway6 = match one.gateway.map(|g| g.ip()) {
                Some(IpAddr::V6(g)) => Some(g),
                Some(IpAddr::V4(_)) => {
                    return Err(WireError::new(
                        "IPv6Data[0].Gateway",
                        "must be an IPv6 address",
                    ))
                }
                None => None,
            };
        }
        _ => {
            return Err(WireError::new(
                "IPv6Data",
                "only one IPv6 pool per network is supported",
            ))
        }
    }
    req.internal = Some(top_bool(&c.options, OPT_INTERNAL)?);
    let generic = match c.options.get(OPT_GENERIC) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            return Err(WireError::new(
                format!("Options.{OPT_GENERIC}"),
                "must be an object",
            ))
        }
    };
    req.bridge = Some(match generic_str(generic, OPT_BRIDGE_NAME)? {
        Some(b) => IfName::new(&b).map_err(|e| {
            WireError::new(
                format!("Options.{OPT_GENERIC}.{OPT_BRIDGE_NAME}"),
                e.to_string(),
            )
        })?,
        None => default_bridge(&c.network_id)?,
    });
    req.masquerade = generic_bool(generic, OPT_MASQUERADE)?;
    req.icc = generic_bool(generic, OPT_ICC)?;
    req.host_binding_ipv4 = match generic_str(generic, OPT_HOST_BINDING)? {
        None => None,
        Some(s) => {
            let ip: Ipv4Addr = s.parse().map_err(|_| {
                WireError::new(
                    format!("Options.{OPT_GENERIC}.{OPT_HOST_BINDING}"),
                    format!("{s:?} is not an IPv4 address"),
                )
            })?;
            (!ip.is_unspecified()).then_some(ip)
        }
    };
    req.mtu = match generic_str(generic, OPT_MTU)? {
        None => None,
        Some(s) => {
            let m: u32 = s.trim().parse().map_err(|_| {
                WireError::new(
                    format!("Options.{OPT_GENERIC}.{OPT_MTU}"),
                    format!("{s:?} is not a number"),
                )
            })?;
            (m != 0).then_some(m)
        }
    };
    Ok(req)
}

/// Resolves dockerd's bindings into the engine's port requests: numeric protocols,
/// `HostPort..HostPortEnd` ranges (any one of which may be used), port 0 (any ephemeral port).
pub fn port_requests(bindings: &[PortBinding]) -> Result<Vec<PortRequest>, WireError> {
    let mut out = Vec::new();
    for (i, b) in bindings.iter().enumerate() {
        let field = |f: &str| format!("Options.com.docker.network.portmap[{i}].{f}");
        let protocol = match b.proto {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            p => {
                return Err(WireError::new(
                    field("Proto"),
                    format!("{p} is not tcp (6), udp (17) or sctp (132)"),
                ))
            }
        };
        if b.port == 0 {
            return Err(WireError::new(field("Port"), "must not be 0"));
        }
        let host_ports = match (b.host_port, b.host_port_end) {
            (0, _) => EPHEMERAL_PORTS,
            (s, 0) => s..=s,
            (s, e) if e < s => {
                return Err(WireError::new(
                    field("HostPortEnd"),
                    format!("{e} is below HostPort {s}"),
                ))
            }
            (s, e) => s..=e,
        };
        out.push(PortRequest {
            protocol,
            host_ip: b.host_ip,
            host_ports,
            container_port: b.port,
        });
    }
    Ok(out)
}

/// The first subnet of `size` carved from `bases` (in order) that overlaps nothing in `taken`.
pub fn pick_subnet(bases: &[(Ipv4Network, u8)], taken: &[IpNetwork]) -> Option<Ipv4Network> {
    for (base, size) in bases {
        if *size < base.prefix() || *size > 30 {
            continue;
        }
        let count: u64 = 1u64 << (size - base.prefix());
        let step: u64 = 1u64 << (32 - size);
        for i in 0..count {
            let addr = u64::from(u32::from(base.network())) + i * step;
            let Ok(addr) = u32::try_from(addr) else { break };
            let Ok(cand) = Ipv4Network::new(Ipv4Addr::from(addr), *size) else {
                continue;
            };
            let clash = taken.iter().any(|t| match t {
                IpNetwork::V4(t) => t.overlaps(cand),
                IpNetwork::V6(_) => false,
            });
            if !clash {
                return Some(cand);
            }
        }
    }
    None
}

/// Docker's built-in default address pools (`172.17.0.0/16`..`172.31.0.0/16` as /16s,
/// `192.168.0.0/16` as /20s).
pub fn docker_default_pools() -> Vec<(Ipv4Network, u8)> {
    vec![
        ("172.17.0.0/16".parse().expect("valid"), 16),
        ("172.18.0.0/16".parse().expect("valid"), 16),
        ("172.19.0.0/16".parse().expect("valid"), 16),
        ("172.20.0.0/14".parse().expect("valid"), 16),
        ("172.24.0.0/14".parse().expect("valid"), 16),
        ("172.28.0.0/14".parse().expect("valid"), 16),
        ("192.168.0.0/16".parse().expect("valid"), 20),
    ]
}

#[cfg(test)]
mod tests;
