//! Typed values shared by every part of the engine: names, addresses, network and endpoint specs.
//!
//! Strings from the outside are parsed into these types at the edges; past that point the engine
//! only handles validated values.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value from the outside was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidValue {
    /// The kind of value (e.g. "interface name").
    pub what: &'static str,
    /// The offending input.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn invalid(what: &'static str, value: &str, reason: &'static str) -> InvalidValue {
    InvalidValue {
        what,
        value: value.to_string(),
        reason,
    }
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident, $what:literal, $check:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: &str) -> Result<Self, InvalidValue> {
                let check: fn(&str) -> Result<(), &'static str> = $check;
                check(s).map_err(|r| invalid($what, s, r))?;
                Ok(Self(s.to_string()))
            }
            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn check_ifname(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 15 {
        return Err("must be at most 15 bytes");
    }
    if s == "." || s == ".." {
        return Err("must not be . or ..");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may only contain ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

fn check_network_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 64 {
        return Err("must be 1 to 64 characters");
    }
    let first = s.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err("must start with a letter or digit");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may only contain ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

fn check_host_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1 to 253 characters");
    }
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each dot-separated label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err("may only contain ASCII letters, digits, '-', '_' and dots between labels");
        }
    }
    Ok(())
}

fn check_container_id(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 255 {
        return Err("must be 1 to 255 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may only contain ASCII letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

string_newtype!(
    /// A Linux interface name: 1–15 bytes of `[A-Za-z0-9_.-]`.
    IfName,
    "interface name",
    check_ifname
);
string_newtype!(
    /// A shimnet network name: 1–64 characters of `[A-Za-z0-9_.-]`, starting alphanumeric.
    NetworkName,
    "network name",
    check_network_name
);
string_newtype!(
    /// A container (or endpoint) id: 1–255 characters of `[A-Za-z0-9_.-]`.
    ContainerId,
    "container id",
    check_container_id
);
string_newtype!(
    /// A name a container answers to on a network with name resolution (DNS): dot-separated
    /// labels of 1–63 ASCII letters, digits, '-' or '_', at most 253 characters in all.
    HostName,
    "host name",
    check_host_name
);

impl ContainerId {
    /// The short form of the id (its first 12 characters), the name container runtimes give a
    /// container besides its own; `None` when that is not a valid [`HostName`].
    pub fn short_name(&self) -> Option<HostName> {
        let short: String = self.0.chars().take(12).collect();
        HostName::new(&short).ok()
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// True for a unicast address (multicast bit clear) that is not all zeros.
    pub fn is_valid_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(invalid(
                "MAC address",
                s,
                "must be six hex bytes like 02:42:0a:00:00:02",
            ));
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(invalid(
                    "MAC address",
                    s,
                    "each byte must be two hex digits",
                ));
            }
            *o = u8::from_str_radix(p, 16)
                .map_err(|_| invalid("MAC address", s, "each byte must be two hex digits"))?;
        }
        let mac = MacAddr(out);
        if !mac.is_valid_unicast() {
            return Err(invalid(
                "MAC address",
                s,
                "must be a non-zero unicast address",
            ));
        }
        Ok(mac)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The first two bytes of the MACs a network gives endpoints that ask for none; the other four
/// are the endpoint's IPv4 address. The default, `0a:58`, is locally administered and unicast
/// (the form Kubernetes network plugins use); front doors with conventions of their own pass theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacPrefix(pub [u8; 2]);

impl MacPrefix {
    /// `0a:58`.
    pub const LOCAL: MacPrefix = MacPrefix([0x0a, 0x58]);

    /// The MAC of an endpoint with this IPv4 address.
    pub fn mac(self, ipv4: Ipv4Addr) -> MacAddr {
        let o = ipv4.octets();
        MacAddr([self.0[0], self.0[1], o[0], o[1], o[2], o[3]])
    }
}

impl Default for MacPrefix {
    fn default() -> Self {
        MacPrefix::LOCAL
    }
}

impl fmt::Display for MacPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}", self.0[0], self.0[1])
    }
}

impl FromStr for MacPrefix {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || invalid("MAC prefix", s, "must be two hex bytes like 0a:58");
        let (a, b) = s.split_once([':', '-']).ok_or_else(bad)?;
        if a.len() != 2 || b.len() != 2 {
            return Err(bad());
        }
        let a = u8::from_str_radix(a, 16).map_err(|_| bad())?;
        let b = u8::from_str_radix(b, 16).map_err(|_| bad())?;
        if a & 1 != 0 {
            return Err(invalid(
                "MAC prefix",
                s,
                "must be unicast (first byte even)",
            ));
        }
        Ok(MacPrefix([a, b]))
    }
}

impl Serialize for MacPrefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for MacPrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// One published port: host `host_ip:host_port` → container `container_port`, same protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address to bind; `None` means every address of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    /// Port on the host.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
}

/// Desired state of one bridge network.
///
/// Records written by earlier versions are read through [`crate::store::legacy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "crate::store::legacy::StoredNetwork")]
pub struct NetworkSpec {
    /// Network name (unique on the host).
    pub name: NetworkName,
    /// Bridge device name.
    pub bridge: IfName,
    /// IPv4 subnet.
    pub subnet: Ipv4Network,
    /// IPv4 gateway address, set on the bridge.
    pub gateway: Ipv4Addr,
    /// First and last IPv4 address handed out dynamically (inclusive); the whole subnet when
    /// `None`. Static requests may use any address of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range4: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Optional IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<Ipv6Network>,
    /// IPv6 gateway (required when `subnet6` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// MTU of the bridge and of every veth on it.
    pub mtu: u32,
    /// Masquerade traffic that leaves the host through another interface.
    pub masquerade: bool,
    /// Inter-container communication on the bridge.
    pub icc: bool,
    /// No access to or from the outside at all.
    pub internal: bool,
    /// Hairpin mode on the bridge ports.
    pub hairpin: bool,
    /// Destinations that are never masqueraded (e.g. a cluster CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_masquerade_to: Vec<ipnetwork::IpNetwork>,
    /// Other subnets allowed to open connections into this network (isolation exceptions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_from: Vec<ipnetwork::IpNetwork>,
    /// Host address published ports bind to when a mapping names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// First two bytes of the MAC of endpoints that ask for none (the rest is their IPv4 address).
    pub mac_prefix: MacPrefix,
    /// Serve its containers' names on the gateway (DNS). Absent in records written before the
    /// option existed: off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dns: bool,
}

/// Identifies one attachment: a container's interface on a network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EndpointKey {
    /// Network.
    pub network: NetworkName,
    /// Container (or endpoint) id.
    pub container_id: ContainerId,
    /// Interface name inside the container.
    pub ifname: IfName,
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// Who puts the container end of an endpoint in place: the one thing that differs between the
/// ways an endpoint is attached, recorded with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointKind {
    /// The engine creates the container end inside the endpoint's namespace and gives it its
    /// addresses and default routes.
    #[default]
    Managed,
    /// The engine builds the pair in its own namespace and leaves the container end there under a
    /// temporary name ([`crate::naming::peer_temp_name`]) with its MAC and MTU; the caller moves it
    /// into the namespace, names and configures it, and then tells the engine which namespace it
    /// is ([`crate::engine::Engine::join`]).
    Prepared,
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndpointKind::Managed => "managed",
            EndpointKind::Prepared => "prepared",
        })
    }
}

/// Everything recorded about one attachment.
///
/// Records written by earlier versions are read through [`crate::store::legacy`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "crate::store::legacy::StoredEndpoint")]
pub struct EndpointRecord {
    /// Identity.
    pub key: EndpointKey,
    /// Who puts the container end in place.
    pub kind: EndpointKind,
    /// Network namespace path the interface lives in.
    pub netns: PathBuf,
    /// Host-side veth name.
    pub host_ifname: IfName,
    /// IPv4 address with the subnet's prefix length.
    pub ipv4: Ipv4Network,
    /// IPv6 address with prefix, when the network has IPv6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Network>,
    /// MAC of the container interface.
    pub mac: MacAddr,
    /// IPv4 gateway.
    pub gateway: Ipv4Addr,
    /// IPv6 gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<Ipv6Addr>,
    /// MTU applied to both veth ends.
    pub mtu: u32,
    /// Published ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Names the container answers to on the network (its name, then its aliases).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<HostName>,
    /// The extension bridge (1-based, see [`crate::plan::bridges`]) its host end is a port of;
    /// `None`: the network's main bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_limits() {
        assert!(IfName::new("eth0").is_ok());
        assert!(IfName::new("a23456789012345").is_ok());
        assert!(IfName::new("a234567890123456").is_err());
        assert!(IfName::new("").is_err());
        assert!(IfName::new("..").is_err());
        assert!(IfName::new("eth0/1").is_err());
        assert!(IfName::new("eth 0").is_err());
        let e = IfName::new("bad name").unwrap_err();
        assert!(e.to_string().contains("interface name"), "{e}");
    }

    #[test]
    fn network_name_rules() {
        assert!(NetworkName::new("shimnet0").is_ok());
        assert!(NetworkName::new("-x").is_err());
        assert!(NetworkName::new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn mac_parse_and_prefix_scheme() {
        let m: MacAddr = "02:42:0a:e6:00:02".parse().unwrap();
        let p: MacPrefix = "02:42".parse().unwrap();
        assert_eq!(m, p.mac("10.230.0.2".parse().unwrap()));
        assert_eq!(m.to_string(), "02:42:0a:e6:00:02");
        assert_eq!(
            MacPrefix::default()
                .mac("10.1.2.3".parse().unwrap())
                .to_string(),
            "0a:58:0a:01:02:03"
        );
        assert_eq!(p.to_string(), "02:42");
        assert!("03:00".parse::<MacPrefix>().is_err(), "multicast");
        assert!("0a".parse::<MacPrefix>().is_err());
        assert!("0a:5".parse::<MacPrefix>().is_err());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().is_err());
        assert!("00:00:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("zz:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("02:42:0a".parse::<MacAddr>().is_err());
    }

    #[test]
    fn host_names_and_short_ids() {
        assert!(HostName::new("web").is_ok());
        assert!(HostName::new("my.app_1-x").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a b", "wéb", &"a".repeat(64)] {
            assert!(HostName::new(bad).is_err(), "{bad:?}");
        }
        let id = ContainerId::new("0123456789abcdef0123").unwrap();
        assert_eq!(id.short_name().unwrap().as_str(), "0123456789ab");
        assert_eq!(
            ContainerId::new("c1")
                .unwrap()
                .short_name()
                .unwrap()
                .as_str(),
            "c1"
        );
        assert!(ContainerId::new("a.b..c").unwrap().short_name().is_none());
    }

    #[test]
    fn records_without_the_new_fields_still_decode() {
        let spec: NetworkSpec = serde_json::from_str(
            r#"{"name":"n","bridge":"n","subnet":"10.0.0.0/24","gateway":"10.0.0.1","mtu":1500,
                "masquerade":true,"icc":true,"internal":false,"hairpin":false}"#,
        )
        .unwrap();
        assert!(!spec.dns);
        let text = serde_json::to_string(&spec).unwrap();
        assert!(!text.contains("dns"), "off is not written: {text}");
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<IfName>("\"eth0\"").is_ok());
        assert!(serde_json::from_str::<IfName>("\"this-name-is-too-long\"").is_err());
    }
}
