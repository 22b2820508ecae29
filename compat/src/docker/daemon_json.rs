//! dockerd's `/etc/docker/daemon.json`, read for the docker0-compatible mode (pure: the caller
//! reads the file).
//!
//! Keys used: `bip`, `fixed-cidr`, `mtu`, `icc`, `ip-masq`, `iptables`, `default-address-pools`.
//! Every other key is dockerd's business and is ignored.

use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};
use runtime_net::plan::NetworkRequest;
use runtime_net::{IfName, NetworkName};
use serde_json::Value;

use super::options::docker_default_pools;
use super::wire::{Obj, WireError};

/// Name of the network the docker0-compatible mode creates.
pub const DOCKER0_NETWORK: &str = "docker0";
/// docker0's default gateway/prefix.
pub const DEFAULT_BIP: &str = "172.17.0.1/16";

/// What the docker0-compatible mode takes from `daemon.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Docker0Settings {
    /// The `docker0` network request.
    pub network: NetworkRequest,
    /// `fixed-cidr`: the part of the subnet containers get addresses from (also set as the
    /// network's allocation range).
    pub fixed_cidr: Option<Ipv4Network>,
    /// `iptables`: when false dockerd installs no rules, and neither does the docker-style chain
    /// layout.
    pub iptables: bool,
    /// `default-address-pools` (or docker's defaults) as (base, size).
    pub default_pools: Vec<(Ipv4Network, u8)>,
}

/// Parses `daemon.json` text (`None` = file absent: all defaults).
pub fn docker0_settings(text: Option<&str>) -> Result<Docker0Settings, WireError> {
    let value: Value = match text {
        Some(t) if !t.trim().is_empty() => serde_json::from_str(t)
            .map_err(|e| WireError::new("daemon.json", format!("is not valid JSON: {e}")))?,
        _ => Value::Object(Default::default()),
    };
    let o =
        Obj::root(&value).map_err(|_| WireError::new("daemon.json", "must be a JSON object"))?;
    let bip: IpNetwork = o
        .parsed_opt("bip", "CIDR address")?
        .unwrap_or_else(|| DEFAULT_BIP.parse().expect("valid default"));
    let IpNetwork::V4(bip) = bip else {
        return Err(WireError::new("bip", "must be an IPv4 address with prefix"));
    };
    let subnet = Ipv4Network::new(bip.network(), bip.prefix())
        .map_err(|e| WireError::new("bip", e.to_string()))?;
    let fixed_cidr: Option<Ipv4Network> = o.parsed_opt("fixed-cidr", "IPv4 CIDR")?;
    if let Some(f) = fixed_cidr {
        if !subnet.contains(f.network()) || f.prefix() < subnet.prefix() {
            return Err(WireError::new(
                "fixed-cidr",
                format!("{f} is not inside the bridge subnet {subnet}"),
            ));
        }
    }
    let mut req = NetworkRequest::new(
        NetworkName::new(DOCKER0_NETWORK).expect("valid name"),
        subnet,
    );
    req.gateway = Some(bip.ip());
    if let Some(f) = fixed_cidr {
        // Host addresses of the fixed CIDR that are also host addresses of the subnet.
        let first = u32::from(f.network()).max(u32::from(subnet.network()).saturating_add(1));
        let last = u32::from(f.broadcast()).min(u32::from(subnet.broadcast()).saturating_sub(1));
        if first > last {
            return Err(WireError::new(
                "fixed-cidr",
                format!("{f} has no host addresses"),
            ));
        }
        req.range_start = Some(Ipv4Addr::from(first));
        req.range_end = Some(Ipv4Addr::from(last));
    }
    req.bridge = Some(IfName::new("docker0").expect("valid name"));
    req.mac_prefix = Some(super::conventions::MAC_PREFIX);
    req.hairpin = Some(true);
    if let Some(m) = o.u64_opt("mtu")? {
        let m = u32::try_from(m).map_err(|_| WireError::new("mtu", format!("{m} is too large")))?;
        req.mtu = (m != 0).then_some(m);
    }
    req.icc = o.bool_opt("icc")?;
    req.masquerade = o.bool_opt("ip-masq")?;
    let iptables = o.bool_opt("iptables")?.unwrap_or(true);
    let mut default_pools = Vec::new();
    for (i, p) in o.arr("default-address-pools")?.iter().enumerate() {
        let field = format!("default-address-pools[{i}]");
        let Value::Object(m) = p else {
            return Err(WireError::new(field, "must be an object"));
        };
        let base = m
            .get("base")
            .and_then(Value::as_str)
            .ok_or_else(|| WireError::new(format!("{field}.base"), "is required"))?;
        let base: Ipv4Network = base.parse().map_err(|e| {
            WireError::new(
                format!("{field}.base"),
                format!("{base:?} is not an IPv4 CIDR: {e}"),
            )
        })?;
        let size = m
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| WireError::new(format!("{field}.size"), "is required"))?;
        if size < u64::from(base.prefix()) || size > 30 {
            return Err(WireError::new(
                format!("{field}.size"),
                format!(
                    "{size} must be between the base prefix /{} and 30",
                    base.prefix()
                ),
            ));
        }
        default_pools.push((base, size as u8));
    }
    if default_pools.is_empty() {
        default_pools = docker_default_pools();
    }
    Ok(Docker0Settings {
        network: req,
        fixed_cidr,
        iptables,
        default_pools,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_reproduce_docker0() {
        let s = docker0_settings(None).unwrap();
        assert_eq!(s.network.subnet.to_string(), "172.17.0.0/16");
        assert_eq!(s.network.gateway, Some("172.17.0.1".parse().unwrap()));
        assert_eq!(s.network.bridge.as_ref().unwrap().as_str(), "docker0");
        assert_eq!(
            s.network.mac_prefix,
            Some(super::super::conventions::MAC_PREFIX)
        );
        assert!(s.iptables);
        assert_eq!(s.default_pools, docker_default_pools());
    }

    #[test]
    fn daemon_json_keys_are_read() {
        let s = docker0_settings(Some(
            r#"{"bip": "10.50.0.1/24", "fixed-cidr": "10.50.0.128/25", "mtu": 1400,
                "icc": false, "ip-masq": false, "iptables": false, "log-level": "debug",
                "default-address-pools": [{"base": "10.60.0.0/16", "size": 24}]}"#,
        ))
        .unwrap();
        assert_eq!(s.network.subnet.to_string(), "10.50.0.0/24");
        assert_eq!(s.network.gateway, Some("10.50.0.1".parse().unwrap()));
        assert_eq!(s.fixed_cidr, Some("10.50.0.128/25".parse().unwrap()));
        assert_eq!(s.network.range_start, Some("10.50.0.128".parse().unwrap()));
        assert_eq!(s.network.range_end, Some("10.50.0.254".parse().unwrap()));
        assert_eq!(s.network.mtu, Some(1400));
        assert_eq!(s.network.icc, Some(false));
        assert_eq!(s.network.masquerade, Some(false));
        assert!(!s.iptables);
        assert_eq!(s.default_pools, vec![("10.60.0.0/16".parse().unwrap(), 24)]);
    }

    #[test]
    fn bad_keys_are_named() {
        let e = docker0_settings(Some(r#"{"bip": "nope"}"#)).unwrap_err();
        assert_eq!(e.field, "bip");
        let e = docker0_settings(Some(r#"{"fixed-cidr": "10.0.0.0/24"}"#)).unwrap_err();
        assert_eq!(e.field, "fixed-cidr");
        let e = docker0_settings(Some(r#"{"icc": "maybe"}"#)).unwrap_err();
        assert_eq!(e.field, "icc");
        let e = docker0_settings(Some(
            r#"{"default-address-pools": [{"base": "10.0.0.0/16", "size": 8}]}"#,
        ))
        .unwrap_err();
        assert_eq!(e.field, "default-address-pools[0].size");
        assert!(docker0_settings(Some("[")).is_err());
    }
}
