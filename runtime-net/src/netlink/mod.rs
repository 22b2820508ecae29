//! Netlink executor: bridges, veth pairs, namespaces, addresses and routes through one long-lived
//! rtnetlink handle (plus a short-lived socket inside each container namespace).
//!
//! Submodules each own one job: [`query`] reads links/addresses/routes, [`bridge`] creates and
//! repairs bridges, [`veth`] builds endpoints, [`check`] compares an endpoint with the kernel and
//! [`netns`] opens sockets inside container namespaces. No process is ever executed.

mod bridge;
mod check;
mod netns;
mod prepare;
pub(crate) mod query;
mod reaper;
pub use reaper::REAP_GROUP;
mod veth;

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
        Ok(Netlink { handle, reaper })
    }
    /// Creates or repairs a bridge: alias, MTU, addresses, up. Returns its index.
    pub async fn ensure_bridge(&self, cfg: &BridgeConfig) -> Result<u32, NetlinkError> {
        bridge::ensure(&self.handle, cfg).await
    }
    /// Deletes a link by name; `Ok(false)` if it did not exist.
    pub async fn delete_link(&self, name: &IfName) -> Result<bool, NetlinkError> {
        query::delete_by_name(&self.handle, name.as_str()).await
    }
    /// Detaches an endpoint's veth at once — down, so no traffic flows — and
    /// deletes it in the background (see [`reaper`]). `Ok(false)` if there was no such link.
    ///
    /// Runs as a task of its own: a caller that gives up half-way (a client that disconnects, a
    /// timeout) cannot leave the link in the reap group without its deletion queued — the group
    /// is deleted only when something is queued after the link went in.
    pub async fn detach_veth(&self, name: &IfName) -> Result<bool, NetlinkError> {
        let (handle, reaper, name) = (self.handle.clone(), self.reaper.clone(), name.clone());
        let task = tokio::spawn(async move {
            let Some(link) = query::link_by_name(&handle, name.as_str()).await? else {
                return Ok(false);
            };
            let index = link.header.index;
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
        match task.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    /// Background deletions not finished yet.
    pub fn pending_deletions(&self) -> usize {
        self.reaper.pending()
    }
    /// Creates and configures an endpoint's veth pair (idempotent: replaces a stale pair).
    pub async fn attach_veth(&self, cfg: &VethConfig) -> Result<(), NetlinkError> {
        veth::attach(&self.handle, cfg).await
    }
    /// Links whose alias marks them as shimnet's, and every link in the reap group (only
    /// detached links waiting for deletion are put there, alias or not).
    pub async fn owned_links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let links = query::dump_links(&self.handle).await?;
        Ok(links
            .iter()
            .map(query::link_info)
            .filter(|l| {
                l.group == REAP_GROUP
                    || l.alias
                        .as_deref()
                        .is_some_and(|a| a.starts_with(crate::naming::ALIAS_PREFIX))
            })
            .collect())
    }
    /// Differences between the kernel and `cfg` (empty when all is in place).
    pub async fn check_veth(&self, cfg: &VethConfig) -> Result<Vec<String>, NetlinkError> {
        check::check(&self.handle, cfg).await
    }
    /// Every address in the daemon's namespace as (link name, address/prefix).
    pub async fn host_addresses(&self) -> Result<Vec<(String, IpNetwork)>, NetlinkError> {
        // One dump after the other: a netlink socket serves one dump at a time.
        let addrs = query::all_addresses(&self.handle).await?;
        let links = query::dump_links(&self.handle).await?;
        let names: std::collections::HashMap<u32, String> = links
            .iter()
            .filter_map(|l| query::name(l).map(|n| (l.header.index, n)))
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
    }
    /// Whether a link of that name exists in the daemon's namespace.
    pub async fn link_exists(&self, name: &IfName) -> Result<bool, NetlinkError> {
        Ok(query::link_by_name(&self.handle, name.as_str())
            .await?
            .is_some())
    }
    /// Names of the links enslaved to bridge `bridge` (empty if the bridge does not exist).
    pub async fn bridge_ports(&self, bridge: &IfName) -> Result<Vec<String>, NetlinkError> {
        let Some(br) = query::link_by_name(&self.handle, bridge.as_str()).await? else {
            return Ok(Vec::new());
        };
        let links = query::dump_links(&self.handle).await?;
        Ok(links
            .iter()
            .filter(|l| query::master(l) == Some(br.header.index))
            .filter_map(query::name)
            .collect())
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
