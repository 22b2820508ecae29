//! The narrow traits the engine drives the kernel through, one per facility: links in the
//! daemon's own namespace ([`Links`]), entering container namespaces ([`Namespaces`], then
//! [`InNetns`]) and sysctls ([`Sysctl`]); the firewall has its own ([`crate::firewall::Firewall`]).
//!
//! The real implementations are [`crate::netlink::Netlink`], [`crate::netlink::NetnsEntry`] and
//! [`crate::sysctl::ProcSys`]. `crate::fakes` (tests and the `fakes` feature only, never in a
//! release build) keeps the same state in memory, records what it was asked and fails on demand,
//! so the engine's decisions — attach, detach, rollback, reconcile, repair — run without root.
//! Every value passed in is typed and validated before it gets here.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use ipnetwork::IpNetwork;

use crate::netlink::{BridgeConfig, LinkInfo, NetlinkError};
use crate::nspath::NetnsPathError;
use crate::sysctl::SysctlError;
use crate::types::{IfName, MacAddr};

/// The future every kernel call returns.
pub type KFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, NetlinkError>> + Send + 'a>>;

/// A veth pair to create: host end on a bridge, container end in a namespace or left beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairSpec {
    /// Host end name.
    pub host: IfName,
    /// MTU of both ends.
    pub mtu: u32,
    /// Bridge the host end is enslaved to.
    pub bridge: IfName,
    /// Its index when known at planning time (else looked up).
    pub bridge_index: Option<u32>,
    /// Container end name.
    pub peer: IfName,
    /// Container end MAC.
    pub peer_mac: MacAddr,
    /// Namespace the container end is born in; `None`: the daemon's own (a prepared endpoint).
    pub peer_netns: Option<PathBuf>,
}

/// A bridge port's settings: alias (owner mark), port flags, admin up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePort {
    /// Port (host end) name.
    pub name: IfName,
    /// Owner alias.
    pub alias: String,
    /// Hairpin mode.
    pub hairpin: bool,
    /// Port isolation (icc off).
    pub isolated: bool,
    /// ARP suppression (see [`crate::plan::proxy`]): the bridge answers or keeps local the
    /// requests for addresses it knows, and never floods those into this port; requests that
    /// arrive on this port are not answered by this bridge.
    pub neigh_suppress: bool,
    /// Proxy ARP for the addresses behind this port (a trunk's end on the main bridge): the
    /// bridge answers requests for them, from any port, and after answering does not flood
    /// the request into this port.
    pub proxy_arp_wifi: bool,
    /// Enslave it to this bridge first (a port whose bridge was re-created).
    pub enslave: Option<IfName>,
}

/// An address a bridge knows for ARP (see [`crate::plan::proxy`]): a permanent neighbour entry
/// (`ip`, `mac`) on `bridge` and a static forwarding entry sending `mac` to `port`, the trunk
/// port the address is behind or the endpoint's own port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyEntry {
    /// The bridge device whose neighbour table holds the entry.
    pub bridge: IfName,
    /// The port `mac` is behind.
    pub port: IfName,
    /// Whether `port` is a trunk end (long-lived: its link index is remembered) rather than an
    /// endpoint's own port (looked up each time).
    pub port_is_trunk: bool,
    /// The endpoint's (or gateway's) IPv4 address.
    pub ip: Ipv4Addr,
    /// Its hardware address.
    pub mac: MacAddr,
}

/// The container end's settings inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Interface name.
    pub ifname: IfName,
    /// Addresses with prefix.
    pub addrs: Vec<IpNetwork>,
    /// Default-route gateways.
    pub gateways: Vec<IpAddr>,
    /// Keep the IPv6 link-local address (IPv6 networks); off otherwise.
    pub ipv6_link_local: bool,
}

/// The container end as seen inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerEnd {
    /// The namespace could not be opened or entered.
    NetnsMissing(String),
    /// No link of that name in the namespace.
    LinkMissing,
    /// The link is there.
    Present {
        /// Hardware address.
        mac: Option<Vec<u8>>,
        /// Admin up.
        up: bool,
        /// Addresses with prefix length.
        addrs: Vec<(IpAddr, u8)>,
        /// Default-route gateways (main table).
        gateways: Vec<IpAddr>,
    },
}

/// Links in the daemon's own namespace.
pub trait Links: Send + Sync {
    /// The link called `name`, if any.
    fn link<'a>(&'a self, name: &'a str) -> KFuture<'a, Option<LinkInfo>>;
    /// The index of the link called `name`, if any: a name lookup, cheaper than [`Links::link`]
    /// (no link message is built).
    fn index(&self, name: &str) -> Result<Option<u32>, NetlinkError>;
    /// Links whose alias marks them as shimnet's, and every link in the reap group (only
    /// retired links waiting for deletion are put there, alias or not).
    fn owned_links(&self) -> KFuture<'_, Vec<LinkInfo>>;
    /// Every address in the namespace as (link name, address/prefix).
    fn host_addresses(&self) -> KFuture<'_, Vec<(String, IpNetwork)>>;
    /// Creates or repairs a bridge (alias, MTU, addresses and their connected routes, up);
    /// returns its index and whether anything had to change.
    fn ensure_bridge<'a>(&'a self, cfg: &'a BridgeConfig) -> KFuture<'a, (u32, bool)>;
    /// Creates a veth pair (host end down: it comes up with its port settings).
    fn create_pair<'a>(&'a self, pair: &'a PairSpec) -> KFuture<'a, ()>;
    /// Applies a bridge port's settings and brings it up.
    fn configure_port<'a>(&'a self, port: &'a BridgePort) -> KFuture<'a, ()>;
    /// Deletes a link now; `Ok(false)` if it did not exist.
    fn delete_link<'a>(&'a self, name: &'a str) -> KFuture<'a, bool>;
    /// Takes a link down at once and deletes it in the background; `Ok(false)` if absent.
    fn retire_link<'a>(&'a self, name: &'a str) -> KFuture<'a, bool>;
    /// Background deletions not finished yet.
    fn pending_deletions(&self) -> usize;
    /// Adds (or replaces) proxy entries: each one's neighbour entry, then its forwarding entry.
    fn set_proxy_entries<'a>(&'a self, entries: &'a [ProxyEntry]) -> KFuture<'a, ()>;
    /// Removes proxy entries of an endpoint being detached: the neighbour entries, and the
    /// forwarding entries on trunks (those on its own port go when the port is deleted); parts
    /// already gone (or a bridge or port that is) are fine.
    fn del_proxy_entries<'a>(&'a self, entries: &'a [ProxyEntry]) -> KFuture<'a, ()>;
}

/// Container network namespaces.
pub trait Namespaces: Send + Sync {
    /// Ok if `path` names a network namespace (checked without entering it).
    fn check(&self, path: &Path) -> Result<(), NetnsPathError>;
    /// Whether `path` still is a namespace (a container that is gone leaves none).
    fn alive(&self, path: &Path) -> bool;
    /// Enters the namespace: a handle on the links inside it.
    fn enter<'a>(&'a self, path: &'a Path) -> KFuture<'a, Box<dyn InNetns>>;
}

/// Links inside one container namespace.
pub trait InNetns: Send + Sync {
    /// Brings the container end and `lo` up, adds its addresses, then its default routes.
    fn configure<'a>(&'a self, cfg: &'a ContainerConfig) -> KFuture<'a, ()>;
    /// The container end called `ifname` as it is now.
    fn observe<'a>(&'a self, ifname: &'a IfName) -> KFuture<'a, ContainerEnd>;
}

/// Kernel parameters under `/proc/sys` of the daemon's namespace.
pub trait Sysctl: Send + Sync {
    /// Writes `value` to `key` (slash-separated, e.g. `net/ipv4/ip_forward`) unless it holds it.
    fn set(&self, key: &str, value: &str) -> Result<(), SysctlError>;
    /// Whether `key` (a file or a folder) exists.
    fn exists(&self, key: &str) -> bool;
}

/// The kernel facilities of one engine.
#[derive(Clone)]
pub struct Kernel {
    /// Links in the daemon's namespace.
    pub links: Arc<dyn Links>,
    /// Container namespaces.
    pub netns: Arc<dyn Namespaces>,
    /// sysctls.
    pub sysctl: Arc<dyn Sysctl>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kernel")
    }
}
