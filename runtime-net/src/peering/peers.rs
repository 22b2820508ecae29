//! The `[node]` and `[peering]` configuration and the peer file: pure parsing and validation.
//! Every error names the entry at fault (`peer[2] "node-c": ...`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

/// A mode as written in the configuration or the peer file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeSetting {
    /// Plain routes via the peer's underlay address (peers on one L2 segment).
    HostGw,
    /// IP-in-IP (IP protocol 4), kernel device or userspace data plane.
    Ipip,
    /// VXLAN (UDP 4789 by default).
    Vxlan,
    /// host-gw for a peer in this node's L2 subnet, encapsulation otherwise.
    Auto,
}

/// Which IPIP data plane to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpipChoice {
    /// The kernel device where the kernel has IPIP, else `bpf` (and the userspace data plane
    /// alone where the programs cannot be loaded).
    #[default]
    Auto,
    /// The kernel's IPIP device only.
    Kernel,
    /// The userspace data plane (TUN + raw IP-protocol-4 socket) only.
    Userspace,
    /// The userspace data plane with the encapsulation done in the kernel by tc programs
    /// (eBPF, tcx): packets between peers never leave the kernel.
    Bpf,
}

/// How packets between this node's pods and host-gw and VXLAN peers' pods are forwarded
/// (`[peering] forwarding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardingChoice {
    /// Tc programs where they load, else the kernel's forwarding path.
    #[default]
    Auto,
    /// Tc programs (eBPF, tcx) on the pods' veths, the underlay and the VXLAN device: one
    /// routing step, no netfilter hooks (see `tc_ipip::forwarding`); a pass error where they
    /// cannot be attached.
    Tc,
    /// The kernel's forwarding path only (rules an administrator adds to the forward hook see
    /// these packets).
    Kernel,
}

/// Where the peer set comes from (`[peering] source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The static peer file (`peers_file`), re-read when it changes and on SIGHUP.
    #[default]
    File,
    /// etcd (`[etcd]`): leased pod subnets, published node records, a watched prefix.
    Etcd,
}

impl SourceKind {
    /// Name as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Etcd => "etcd",
        }
    }
}

/// `[node]`: this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Node name (must not appear in the peer file).
    pub name: String,
    /// Underlay address of this node; the interface holding it is the underlay interface.
    pub address: Ipv4Addr,
    /// This node's container subnet (the subnet of the default network `shimnet0`).
    pub pod_cidr: Ipv4Network,
}

/// `[node]` as written in the configuration: with the etcd membership source `pod_cidr` may be
/// left out (a subnet is then leased from `cluster_cidr`); [`NodeSettings::resolve`] gives the
/// [`NodeConfig`] the data plane runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Underlay address of this node.
    pub address: Ipv4Addr,
    /// This node's container subnet, when fixed by the configuration.
    #[serde(default)]
    pub pod_cidr: Option<Ipv4Network>,
}

impl NodeSettings {
    /// The node with its pod subnet.
    pub fn resolve(&self, pod_cidr: Ipv4Network) -> NodeConfig {
        NodeConfig {
            name: self.name.clone(),
            address: self.address,
            pod_cidr,
        }
    }
}

/// `[peering]`: how this node reaches its peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeeringConfig {
    /// Default mode for every peer.
    pub mode: ModeSetting,
    /// Union of all pod subnets: never masqueraded, allowed in.
    pub cluster_cidr: Ipv4Network,
    /// Where the peer set comes from: the peer file (default) or etcd (`[etcd]`).
    #[serde(default)]
    pub source: SourceKind,
    /// The peer file (TOML, `[[peer]]` entries), read when `source` is `file`.
    #[serde(default = "default_peers_file")]
    pub peers_file: PathBuf,
    /// Encapsulation `auto` uses for a peer outside this node's L2 subnet (`vxlan` or `ipip`).
    #[serde(default = "default_auto_encap")]
    pub auto_encap: ModeSetting,
    /// IPIP data plane.
    #[serde(default)]
    pub ipip: IpipChoice,
    /// Forwarding between this node's pods and host-gw and VXLAN peers' pods.
    #[serde(default)]
    pub forwarding: ForwardingChoice,
    /// VXLAN network identifier.
    #[serde(default = "default_vni")]
    pub vxlan_vni: u32,
    /// VXLAN UDP port.
    #[serde(default = "default_port")]
    pub vxlan_port: u16,
    /// Seconds between peering passes, used only when event-driven repair is off
    /// (`repair_on_events = false`; the peer file is then also re-read on this timer). With it on,
    /// passes follow events and the repair loop's safety pass; the key is still accepted.
    #[serde(default = "default_interval")]
    pub reconcile_interval_secs: u64,
}

fn default_peers_file() -> PathBuf {
    PathBuf::from("/etc/shimnet/peers.toml")
}
fn default_auto_encap() -> ModeSetting {
    ModeSetting::Vxlan
}
fn default_vni() -> u32 {
    4242
}
fn default_port() -> u16 {
    4789
}
fn default_interval() -> u64 {
    3
}

/// One validated peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Peer node name.
    pub name: String,
    /// Underlay address.
    pub address: Ipv4Addr,
    /// Container subnet.
    pub pod_cidr: Ipv4Network,
    /// Per-peer mode; the `[peering]` mode when absent.
    pub mode: Option<ModeSetting>,
}

/// A peer file or configuration refused; the message names the entry and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// Not TOML of the expected shape.
    #[error("peer file: {0}")]
    Syntax(String),
    /// An entry is invalid.
    #[error("{entry}: {message}")]
    Entry {
        /// `peer[i] "name"`.
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// The `[node]`/`[peering]` sections contradict each other.
    #[error("{field}: {message}")]
    Config {
        /// The key at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    peer: Vec<RawPeer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: String,
    address: String,
    pod_cidr: String,
    #[serde(default)]
    mode: Option<String>,
}

/// Checks `[node]` as written against `[peering]` (`None`: no peering): `pod_cidr` is required
/// unless the etcd source leases one; a node name used in etcd keys has no `/`.
pub fn validate_settings(node: &NodeSettings, p: Option<&PeeringConfig>) -> Result<(), PeerError> {
    let etcd = p.is_some_and(|p| p.source == SourceKind::Etcd);
    if etcd && (node.name.contains('/') || node.name.chars().any(char::is_whitespace)) {
        return Err(PeerError::Config {
            field: "node.name",
            message: format!("{:?}: no '/' or spaces (it names etcd keys)", node.name),
        });
    }
    if node.name.len() > 63 {
        return Err(PeerError::Config {
            field: "node.name",
            message: "longer than 63 characters".into(),
        });
    }
    match (node.pod_cidr, p) {
        (Some(c), Some(p)) => validate_config(&node.resolve(c), p),
        (Some(_), None) => Ok(()),
        (None, Some(p)) if etcd => validate_peering(&node.name, p),
        (None, _) => Err(PeerError::Config {
            field: "node.pod_cidr",
            message: "required unless [peering] source = \"etcd\" leases one".into(),
        }),
    }
}

/// Checks `[node]` against `[peering]`.
pub fn validate_config(node: &NodeConfig, p: &PeeringConfig) -> Result<(), PeerError> {
    validate_peering(&node.name, p)?;
    if node.pod_cidr.ip() != node.pod_cidr.network() || node.pod_cidr.prefix() > 30 {
        return Err(PeerError::Config {
            field: "node.pod_cidr",
            message: format!(
                "{} is not a network address with a prefix of at most /30",
                node.pod_cidr
            ),
        });
    }
    if !is_subnet(node.pod_cidr, p.cluster_cidr) {
        return Err(PeerError::Config {
            field: "node.pod_cidr",
            message: format!(
                "{} is not inside peering.cluster_cidr {}",
                node.pod_cidr, p.cluster_cidr
            ),
        });
    }
    if node.pod_cidr.contains(node.address) {
        return Err(PeerError::Config {
            field: "node.address",
            message: format!("{} lies inside node.pod_cidr", node.address),
        });
    }
    Ok(())
}

/// The checks of `[node]`/`[peering]` that do not involve the pod subnet.
fn validate_peering(name: &str, p: &PeeringConfig) -> Result<(), PeerError> {
    if name.is_empty() {
        return Err(PeerError::Config {
            field: "node.name",
            message: "must not be empty".into(),
        });
    }
    if !matches!(p.auto_encap, ModeSetting::Vxlan | ModeSetting::Ipip) {
        return Err(PeerError::Config {
            field: "peering.auto_encap",
            message: "must be \"vxlan\" or \"ipip\"".into(),
        });
    }
    if p.vxlan_vni == 0 || p.vxlan_vni >= 1 << 24 {
        return Err(PeerError::Config {
            field: "peering.vxlan_vni",
            message: format!("{} is outside 1..16777215", p.vxlan_vni),
        });
    }
    Ok(())
}

/// Whether `inner` lies entirely inside `outer`.
pub fn is_subnet(inner: Ipv4Network, outer: Ipv4Network) -> bool {
    outer.prefix() <= inner.prefix() && outer.contains(inner.network())
}

/// Parses and validates a peer file's text against this node and the cluster CIDR. The first
/// invalid entry refuses the whole file.
pub fn parse_peers(
    text: &str,
    node: &NodeConfig,
    cluster: Ipv4Network,
) -> Result<Vec<Peer>, PeerError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| PeerError::Syntax(e.to_string()))?;
    let mut out: Vec<Peer> = Vec::with_capacity(raw.peer.len());
    for (i, r) in raw.peer.into_iter().enumerate() {
        let entry = format!("peer[{i}] {:?}", r.name);
        let bad = |message: String| PeerError::Entry {
            entry: entry.clone(),
            message,
        };
        let address: Ipv4Addr = r
            .address
            .parse()
            .map_err(|_| bad(format!("address {:?}: not an IPv4 address", r.address)))?;
        let pod_cidr: Ipv4Network = r
            .pod_cidr
            .parse()
            .map_err(|_| bad(format!("pod_cidr {:?}: not an IPv4 CIDR", r.pod_cidr)))?;
        let mode = match r.mode.as_deref() {
            None => None,
            Some(m) => Some(parse_mode(m).ok_or_else(|| {
                bad(format!("mode {m:?}: expected host-gw, ipip, vxlan or auto"))
            })?),
        };
        let peer = Peer {
            name: r.name,
            address,
            pod_cidr,
            mode,
        };
        check_peer(&peer, node, cluster, &out, |j| {
            format!("peer[{j}] {:?}", out[j].name)
        })
        .map_err(bad)?;
        out.push(peer);
    }
    Ok(out)
}

/// Checks one peer, whatever its source, against this node, the cluster CIDR and the peers
/// already accepted (`accepted[j]` is named by `label(j)` in messages). The message names the
/// field at fault (`pod_cidr 10.2.1.0/24 overlaps peer[0] "node-b"`).
pub fn check_peer(
    peer: &Peer,
    node: &NodeConfig,
    cluster: Ipv4Network,
    accepted: &[Peer],
    label: impl Fn(usize) -> String,
) -> Result<(), String> {
    let (name, address, pod_cidr) = (&peer.name, peer.address, peer.pod_cidr);
    if name.is_empty() || name.len() > 63 || name.chars().any(char::is_whitespace) {
        return Err("name: must be 1 to 63 characters without spaces".into());
    }
    if let Some(j) = accepted.iter().position(|o| &o.name == name) {
        return Err(format!("name: already used by {}", label(j)));
    }
    if *name == node.name {
        return Err(format!(
            "name: {name:?} is this node ([node] name); a node is not its own peer"
        ));
    }
    if address.is_unspecified()
        || address.is_multicast()
        || address.is_broadcast()
        || address.is_loopback()
    {
        return Err(format!("address {address}: not a unicast host address"));
    }
    if address == node.address {
        return Err(format!(
            "address {address}: is this node's address ([node] address); a node is not its own peer"
        ));
    }
    if pod_cidr.ip() != pod_cidr.network() || pod_cidr.prefix() > 30 {
        return Err(format!(
            "pod_cidr {pod_cidr}: not a network address with a prefix of at most /30"
        ));
    }
    if !is_subnet(pod_cidr, cluster) {
        return Err(format!(
            "pod_cidr {pod_cidr}: not inside cluster_cidr {cluster}"
        ));
    }
    if pod_cidr.overlaps(node.pod_cidr) {
        return Err(format!(
            "pod_cidr {pod_cidr} overlaps this node's pod_cidr {}",
            node.pod_cidr
        ));
    }
    if pod_cidr.contains(address) {
        return Err(format!("address {address} lies inside its own pod_cidr"));
    }
    for (j, o) in accepted.iter().enumerate() {
        if o.pod_cidr.overlaps(pod_cidr) {
            return Err(format!("pod_cidr {pod_cidr} overlaps {}", label(j)));
        }
        if o.address == address {
            return Err(format!("address {address}: already used by {}", label(j)));
        }
    }
    Ok(())
}

fn parse_mode(s: &str) -> Option<ModeSetting> {
    Some(match s {
        "host-gw" => ModeSetting::HostGw,
        "ipip" => ModeSetting::Ipip,
        "vxlan" => ModeSetting::Vxlan,
        "auto" => ModeSetting::Auto,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeConfig {
        NodeConfig {
            name: "node-a".into(),
            address: "192.168.1.10".parse().unwrap(),
            pod_cidr: "10.1.0.0/24".parse().unwrap(),
        }
    }

    fn cluster() -> Ipv4Network {
        "10.0.0.0/8".parse().unwrap()
    }

    fn err(text: &str) -> String {
        parse_peers(text, &node(), cluster())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn valid_file_parses_with_optional_mode() {
        let p = parse_peers(
            r#"
[[peer]]
name = "node-b"
address = "192.168.1.11"
pod_cidr = "10.2.0.0/24"

[[peer]]
name = "node-c"
address = "192.168.2.12"
pod_cidr = "10.3.0.0/24"
mode = "ipip"
"#,
            &node(),
            cluster(),
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].mode, None);
        assert_eq!(p[1].mode, Some(ModeSetting::Ipip));
        assert_eq!(p[1].pod_cidr, "10.3.0.0/24".parse::<Ipv4Network>().unwrap());
        assert!(parse_peers("", &node(), cluster()).unwrap().is_empty());
    }

    #[test]
    fn overlapping_pod_subnets_name_both_entries() {
        let e = err(r#"
[[peer]]
name = "node-b"
address = "192.168.1.11"
pod_cidr = "10.2.0.0/16"
[[peer]]
name = "node-x"
address = "192.168.1.13"
pod_cidr = "10.4.0.0/24"
[[peer]]
name = "node-c"
address = "192.168.1.12"
pod_cidr = "10.2.1.0/24"
"#);
        assert_eq!(
            e,
            "peer[2] \"node-c\": pod_cidr 10.2.1.0/24 overlaps peer[0] \"node-b\""
        );
        let e =
            err("[[peer]]\nname = \"b\"\naddress = \"192.168.1.11\"\npod_cidr = \"10.1.0.0/25\"\n");
        assert!(
            e.starts_with("peer[0] \"b\": pod_cidr 10.1.0.0/25 overlaps this node"),
            "{e}"
        );
    }

    #[test]
    fn own_node_is_refused_by_name_and_by_address() {
        let e = err(
            "[[peer]]\nname = \"node-a\"\naddress = \"192.168.1.20\"\npod_cidr = \"10.9.0.0/24\"\n",
        );
        assert!(e.starts_with("peer[0] \"node-a\": name"), "{e}");
        let e =
            err("[[peer]]\nname = \"x\"\naddress = \"192.168.1.10\"\npod_cidr = \"10.9.0.0/24\"\n");
        assert!(e.contains("this node's address"), "{e}");
    }

    #[test]
    fn bad_values_name_entry_and_field() {
        let e = err(
            "[[peer]]\nname = \"b\"\naddress = \"192.168.1.300\"\npod_cidr = \"10.9.0.0/24\"\n",
        );
        assert!(
            e.starts_with("peer[0] \"b\": address \"192.168.1.300\""),
            "{e}"
        );
        let e =
            err("[[peer]]\nname = \"b\"\naddress = \"192.168.1.3\"\npod_cidr = \"10.9.0.1/24\"\n");
        assert!(e.starts_with("peer[0] \"b\": pod_cidr 10.9.0.1/24"), "{e}");
        let e = err(
            "[[peer]]\nname = \"b\"\naddress = \"192.168.1.3\"\npod_cidr = \"172.16.0.0/24\"\n",
        );
        assert!(e.contains("not inside cluster_cidr"), "{e}");
        let e = err("[[peer]]\nname = \"b\"\naddress = \"192.168.1.3\"\npod_cidr = \"10.9.0.0/24\"\nmode = \"gre\"\n");
        assert!(e.starts_with("peer[0] \"b\": mode \"gre\""), "{e}");
        let e = err("[[peer]]\nname = \"b\"\naddress = \"192.168.1.3\"\npod_cidr = \"10.9.0.0/24\"\n[[peer]]\nname = \"b\"\naddress = \"192.168.1.4\"\npod_cidr = \"10.8.0.0/24\"\n");
        assert!(
            e.starts_with("peer[1] \"b\": name: already used by peer[0]"),
            "{e}"
        );
        let e = err("[[peer]]\nname = \"b\"\nadress = \"192.168.1.3\"\n");
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn config_checks_name_the_key() {
        let p = PeeringConfig {
            mode: ModeSetting::Auto,
            cluster_cidr: "10.0.0.0/8".parse().unwrap(),
            source: SourceKind::File,
            peers_file: "/x".into(),
            auto_encap: ModeSetting::HostGw,
            ipip: IpipChoice::Auto,
            forwarding: ForwardingChoice::Auto,
            vxlan_vni: 1,
            vxlan_port: 4789,
            reconcile_interval_secs: 3,
        };
        let e = validate_config(&node(), &p).unwrap_err();
        assert!(e.to_string().starts_with("peering.auto_encap"), "{e}");
        let mut n = node();
        n.pod_cidr = "172.16.0.0/24".parse().unwrap();
        let p = PeeringConfig {
            auto_encap: ModeSetting::Vxlan,
            ..p
        };
        assert!(validate_config(&n, &p)
            .unwrap_err()
            .to_string()
            .starts_with("node.pod_cidr"));
        assert!(validate_config(&node(), &p).is_ok());
    }
}
