//! Netlink executor: bridges, veth pairs, namespaces, addresses and routes through one long-lived
//! rtnetlink handle (plus a short-lived socket inside each container namespace). Implements the
//! engine's [`Links`] and [`Namespaces`] traits.
//!
//! Submodules each own one job: [`query`] reads links/addresses/routes, [`bridge`] creates and
//! repairs bridges, [`veth`] builds endpoints, [`netns`] opens sockets inside container
//! namespaces, [`reaper`] deletes retired links in the background and [`watch`] reports links that
//! disappear. No process is ever executed.

mod bridge;
mod netns;
mod proxy;
pub(crate) mod query;
mod reaper;
pub(crate) use bridge::bridge_mac;
pub use reaper::REAP_GROUP;
mod veth;
pub mod watch;

use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;

use crate::kernel::{
    BridgePort, ContainerConfig, ContainerEnd, InNetns, KFuture, Links, Namespaces, PairSpec,
    ProxyEntry,
};
use crate::nspath::NetnsPathError;
use crate::types::IfName;

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
    /// The bridge has no free port (the kernel's `EXFULL`: it holds [`BRIDGE_MAX_PORTS`]).
    #[error("{op} {object}: bridge {bridge} has no free port (Exchange full, os error 54)")]
    BridgeFull {
        op: &'static str,
        object: String,
        bridge: String,
    },
}

/// The most ports one Linux bridge takes (`BR_MAX_PORTS` 1024, port number 0 unused): one more
/// enslaved link fails with `EXFULL`.
pub const BRIDGE_MAX_PORTS: usize = 1023;

/// Desired bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// Alias, if any.
    pub alias: Option<String>,
    /// Kind.
    pub kind: LinkKind,
    /// Index of its master (bridge), if enslaved.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: Option<u32>,
    /// Device group ([`REAP_GROUP`]: detached, waiting for deletion).
    pub group: u32,
}

/// Long-lived netlink handle in the daemon's namespace.
///
/// Cheap to share (`Send + Sync`); every method may run concurrently with the others.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    reaper: reaper::Reaper,
    /// Indexes of the bridges and trunk ends proxy entries go on.
    proxy_links: std::sync::Arc<proxy::LinkIndexes>,
}

impl Netlink {
    /// Opens a netlink connection in the current namespace (needs a tokio runtime).
    pub async fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| NetlinkError::Request {
            op: "open netlink socket",
            object: "current namespace".into(),
            msg: e.to_string(),
        })?;
        tokio::spawn(conn);
        let reaper = reaper::Reaper::start().map_err(|e| NetlinkError::Request {
            op: "start link reaper",
            object: "current namespace".into(),
            msg: e.to_string(),
        })?;
        Ok(Netlink {
            handle,
            reaper,
            proxy_links: Default::default(),
        })
    }

    /// Names of the links enslaved to bridge `bridge` (empty if the bridge does not exist).
    pub async fn bridge_ports(&self, bridge: &IfName) -> Result<Vec<String>, NetlinkError> {
        let Some(br) = query::link_by_name(&self.handle, bridge.as_str()).await? else {
            return Ok(Vec::new());
        };
        query::dump_links(&self.handle, |l| {
            (query::master(&l) == Some(br.header.index))
                .then(|| query::name(&l))
                .flatten()
        })
        .await
    }
}

impl Links for Netlink {
    fn link<'a>(&'a self, name: &'a str) -> KFuture<'a, Option<LinkInfo>> {
        Box::pin(async move {
            Ok(query::link_by_name(&self.handle, name)
                .await?
                .as_ref()
                .map(query::link_info))
        })
    }

    fn index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        query::index_of(name)
    }

    fn owned_links(&self) -> KFuture<'_, Vec<LinkInfo>> {
        Box::pin(async move {
            query::dump_links(&self.handle, |l| {
                let l = query::link_info(&l);
                let owned = l.group == REAP_GROUP
                    || l.alias
                        .as_deref()
                        .is_some_and(|a| a.starts_with(crate::naming::ALIAS_PREFIX));
                owned.then_some(l)
            })
            .await
        })
    }

    fn host_addresses(&self) -> KFuture<'_, Vec<(String, IpNetwork)>> {
        Box::pin(async move {
            // One dump after the other: a netlink socket serves one dump at a time.
            let addrs = query::all_addresses(&self.handle).await?;
            let names: std::collections::HashMap<u32, String> =
                query::dump_links(&self.handle, |l| {
                    query::name(&l).map(|n| (l.header.index, n))
                })
                .await?
                .into_iter()
                .collect();
            Ok(addrs
                .into_iter()
                .filter_map(|(index, ip, prefix)| {
                    let net = IpNetwork::new(ip, prefix).ok()?;
                    Some((
                        names
                            .get(&index)
                            .cloned()
                            .unwrap_or_else(|| format!("#{index}")),
                        net,
                    ))
                })
                .collect())
        })
    }

    fn ensure_bridge<'a>(&'a self, cfg: &'a BridgeConfig) -> KFuture<'a, (u32, bool)> {
        Box::pin(bridge::ensure(&self.handle, cfg))
    }

    fn create_pair<'a>(&'a self, pair: &'a PairSpec) -> KFuture<'a, ()> {
        Box::pin(veth::create_pair(&self.handle, pair))
    }

    fn configure_port<'a>(&'a self, port: &'a BridgePort) -> KFuture<'a, ()> {
        Box::pin(veth::configure_port(&self.handle, port))
    }

    fn set_proxy_entries<'a>(&'a self, entries: &'a [ProxyEntry]) -> KFuture<'a, ()> {
        Box::pin(proxy::set(&self.handle, &self.proxy_links, entries))
    }

    fn del_proxy_entries<'a>(&'a self, entries: &'a [ProxyEntry]) -> KFuture<'a, ()> {
        Box::pin(proxy::del(&self.handle, &self.proxy_links, entries))
    }

    fn delete_link<'a>(&'a self, name: &'a str) -> KFuture<'a, bool> {
        self.proxy_links.forget_link(name);
        Box::pin(query::delete_by_name(&self.handle, name))
    }

    /// Takes the link down at once — no traffic flows — and deletes it in the background (see
    /// [`reaper`]).
    ///
    /// Runs as a task of its own: a caller that gives up half-way (a client that disconnects, a
    /// timeout) cannot leave the link in the reap group without its deletion queued — the group
    /// is deleted only when something is queued after the link went in.
    fn retire_link<'a>(&'a self, name: &'a str) -> KFuture<'a, bool> {
        let (handle, reaper, name) = (self.handle.clone(), self.reaper.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            let Some(index) = query::index_of(&name)? else {
                return Ok(false);
            };
            let set = handle
                .link()
                .set(reaper::detach_message(index))
                .execute()
                .await;
            match set {
                Ok(()) => {
                    reaper.delete(index);
                    Ok(true)
                }
                Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
                Err(e) => {
                    // The kernel sets the group before the flags: on a later failure the link
                    // may be in the group already, and must not be left there unswept.
                    reaper.sweep();
                    Err(request_error("detach link", name.as_str(), e))
                }
            }
        });
        Box::pin(async move {
            match task.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }

    fn pending_deletions(&self) -> usize {
        self.reaper.pending()
    }
}

/// Entering container namespaces through their files (`/run/netns/x`, `/proc/<pid>/ns/net`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NetnsEntry;

impl Namespaces for NetnsEntry {
    fn check(&self, path: &Path) -> Result<(), NetnsPathError> {
        crate::nspath::check_netns(path)
    }

    fn alive(&self, path: &Path) -> bool {
        crate::nspath::alive(path)
    }

    fn enter<'a>(&'a self, path: &'a Path) -> KFuture<'a, Box<dyn InNetns>> {
        Box::pin(async move {
            let file = netns::open(path)?;
            let handle = netns::connect_in(&file, path).await?;
            Ok(Box::new(InsideNetns {
                handle,
                shown: path.display().to_string(),
            }) as Box<dyn InNetns>)
        })
    }
}

/// A netlink socket inside one container namespace.
struct InsideNetns {
    handle: rtnetlink::Handle,
    shown: String,
}

impl InNetns for InsideNetns {
    fn configure<'a>(&'a self, cfg: &'a ContainerConfig) -> KFuture<'a, ()> {
        Box::pin(veth::configure_container(&self.handle, cfg, &self.shown))
    }

    fn observe<'a>(&'a self, ifname: &'a IfName) -> KFuture<'a, ContainerEnd> {
        Box::pin(async move {
            let h = &self.handle;
            let object = format!("{ifname} in {}", self.shown);
            let Some(link) = query::link_by_name(h, ifname.as_str()).await? else {
                return Ok(ContainerEnd::LinkMissing);
            };
            Ok(ContainerEnd::Present {
                mac: query::mac(&link),
                up: query::is_up(&link),
                addrs: query::addresses(h, link.header.index, &object).await?,
                gateways: query::default_gateways(h, &object).await?,
            })
        })
    }
}

/// Builds a [`NetlinkError::Request`] from an rtnetlink error.
pub(crate) fn request_error(
    op: &'static str,
    object: impl Into<String>,
    err: rtnetlink::Error,
) -> NetlinkError {
    let msg = match &err {
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    };
    NetlinkError::Request {
        op,
        object: object.into(),
        msg,
    }
}

/// The errno of a kernel NACK (positive, e.g. `libc::ENODEV`), if that is what `err` is.
pub(crate) fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Netlink>();
        assert_send_sync::<NetnsEntry>();
    }

    #[test]
    fn errors_name_the_object() {
        let mut m = rtnetlink::packet_core::ErrorMessage::default();
        m.code = std::num::NonZeroI32::new(-libc::ENODEV);
        let e = rtnetlink::Error::NetlinkError(m);
        assert_eq!(errno(&e), Some(libc::ENODEV));
        let text = request_error("delete link", "snv0", e).to_string();
        assert!(text.starts_with("delete link snv0: "), "{text}");
        assert_eq!(errno(&rtnetlink::Error::RequestFailed), None);
    }
}
