//! Netlink executor: bridges, veth pairs, namespaces, addresses and routes through one long-lived
//! rtnetlink handle (plus a short-lived socket inside each container namespace).
//! (Contract stub: the netlink helper replaces bodies; signatures are fixed.)

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::types::{IfName, MacAddr};

/// Netlink failures, each naming the object involved.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A netlink request failed.
    #[error("{op} {object}: {msg}")]
    Request {
        op: &'static str,
        object: String,
        msg: String,
    },
    /// The container namespace could not be opened or entered.
    #[error("network namespace {path}: {msg}")]
    Netns { path: PathBuf, msg: String },
}

/// Desired bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Device name.
    pub name: IfName,
    /// Owner alias (see `naming::bridge_alias`).
    pub alias: String,
    /// MTU.
    pub mtu: u32,
    /// Gateway addresses with prefix, set on the bridge.
    pub addrs: Vec<IpNetwork>,
}

/// Desired veth pair of one endpoint.
#[derive(Debug, Clone)]
pub struct VethConfig {
    /// Bridge the host end is enslaved to.
    pub bridge: IfName,
    /// Host end name.
    pub host_ifname: IfName,
    /// Owner alias of the host end.
    pub host_alias: String,
    /// Container namespace path.
    pub netns: PathBuf,
    /// Container end name inside the namespace.
    pub container_ifname: IfName,
    /// Container end MAC.
    pub mac: MacAddr,
    /// Container IPv4 address/prefix.
    pub ipv4: Ipv4Network,
    /// Container IPv6 address/prefix.
    pub ipv6: Option<Ipv6Network>,
    /// IPv4 default gateway; no default route when `None`.
    pub gateway: Option<Ipv4Addr>,
    /// IPv6 default gateway.
    pub gateway6: Option<Ipv6Addr>,
    /// MTU of both ends.
    pub mtu: u32,
    /// Hairpin mode on the bridge port.
    pub hairpin: bool,
    /// Port isolation on the bridge port (icc=false).
    pub isolated: bool,
}

/// Kind of an owned link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A bridge.
    Bridge,
    /// A veth.
    Veth,
    /// Anything else.
    Other,
}

/// A link as seen in the kernel.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// Alias, if any.
    pub alias: Option<String>,
    /// Kind.
    pub kind: LinkKind,
}

/// Long-lived netlink handle in the daemon's namespace.
pub struct Netlink {}

impl Netlink {
    /// Opens a netlink connection in the current namespace (needs a tokio runtime).
    pub async fn connect() -> Result<Self, NetlinkError> {
        unimplemented!("netlink helper")
    }
    /// Creates or repairs a bridge: alias, MTU, addresses, up. Returns its index.
    pub async fn ensure_bridge(&self, cfg: &BridgeConfig) -> Result<u32, NetlinkError> {
        let _ = cfg;
        unimplemented!("netlink helper")
    }
    /// Deletes a link by name; `Ok(false)` if it did not exist.
    pub async fn delete_link(&self, name: &IfName) -> Result<bool, NetlinkError> {
        let _ = name;
        unimplemented!("netlink helper")
    }
    /// Creates and configures an endpoint's veth pair (idempotent: replaces a stale pair).
    pub async fn attach_veth(&self, cfg: &VethConfig) -> Result<(), NetlinkError> {
        let _ = cfg;
        unimplemented!("netlink helper")
    }
    /// True if a link of that name exists.
    pub async fn link_exists(&self, name: &IfName) -> Result<bool, NetlinkError> {
        let _ = name;
        unimplemented!("netlink helper")
    }
    /// Links whose alias marks them as shimnet's.
    pub async fn owned_links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        unimplemented!("netlink helper")
    }
    /// Differences between the kernel and `cfg` (empty when all is in place).
    pub async fn check_veth(&self, cfg: &VethConfig) -> Result<Vec<String>, NetlinkError> {
        let _ = cfg;
        unimplemented!("netlink helper")
    }
}
