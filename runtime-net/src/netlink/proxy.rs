//! Proxy entries on a network's bridges (see [`ProxyEntry`] and [`crate::plan::proxy`]): a
//! permanent neighbour entry on the bridge device and a static forwarding entry on the port the
//! address is behind.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};

use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::Handle;

use super::{errno, query, request_error, NetlinkError};
use crate::kernel::ProxyEntry;
use crate::types::IfName;

/// Indexes of the bridges and trunk ends proxy entries go on, remembered between calls (an
/// endpoint's own port is looked up each time: remembering every endpoint that ever was would
/// grow without end). A link re-created since (a repaired trunk) has a new index; a call that
/// fails forgets the indexes it used and is tried once more with fresh ones.
#[derive(Debug, Default)]
pub(crate) struct LinkIndexes(Mutex<HashMap<IfName, u32>>);

impl LinkIndexes {
    /// Indexes of the bridges and ports `entries` name (an endpoint's own port only with
    /// `own_ports`); a missing link is left out.
    fn of(
        &self,
        entries: &[ProxyEntry],
        own_ports: bool,
    ) -> Result<HashMap<IfName, u32>, NetlinkError> {
        let mut out = HashMap::new();
        for e in entries {
            for (name, keep) in [(&e.bridge, true), (&e.port, e.port_is_trunk)] {
                if out.contains_key(name) || (!keep && !own_ports) {
                    continue;
                }
                let known = self.0.lock().expect("index cache").get(name).copied();
                let index = match known {
                    Some(i) => Some(i),
                    None => query::index_of(name.as_str())?,
                };
                if let Some(i) = index {
                    if keep {
                        self.0.lock().expect("index cache").insert(name.clone(), i);
                    }
                    out.insert(name.clone(), i);
                }
            }
        }
        Ok(out)
    }

    /// Forgets the index of a link about to be deleted (so the cache holds only links that
    /// exist, however many networks come and go).
    pub(crate) fn forget_link(&self, name: &str) {
        if let Ok(name) = IfName::new(name) {
            self.0.lock().expect("index cache").remove(&name);
        }
    }

    /// How many indexes are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().expect("index cache").len()
    }

    fn forget(&self, entries: &[ProxyEntry]) {
        let mut m = self.0.lock().expect("index cache");
        for e in entries {
            m.remove(&e.bridge);
            m.remove(&e.port);
        }
    }
}

/// Adds or replaces both parts of every entry (neighbour first), several requests in flight.
pub(crate) async fn set(
    h: &Handle,
    links: &LinkIndexes,
    entries: &[ProxyEntry],
) -> Result<(), NetlinkError> {
    with_fresh_retry(links, entries, |_| set_all(h, links, entries)).await
}

/// Runs `run(false)` with the remembered indexes; when it fails, forgets them and runs
/// `run(true)` once with indexes looked up anew (a link re-created since has a new index).
async fn with_fresh_retry<F, Fut>(
    links: &LinkIndexes,
    entries: &[ProxyEntry],
    run: F,
) -> Result<(), NetlinkError>
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = Result<(), NetlinkError>>,
{
    match run(false).await {
        Err(_) => {
            links.forget(entries);
            run(true).await
        }
        ok => ok,
    }
}

async fn set_all(
    h: &Handle,
    links: &LinkIndexes,
    entries: &[ProxyEntry],
) -> Result<(), NetlinkError> {
    let idx = links.of(entries, true)?;
    let pending: Vec<_> = entries.iter().map(|e| set_one(h, &idx, e)).collect();
    futures::stream::iter(pending)
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

async fn set_one(
    h: &Handle,
    idx: &HashMap<IfName, u32>,
    e: &ProxyEntry,
) -> Result<(), NetlinkError> {
    let object = || format!("{} on {}", e.ip, e.bridge);
    let find = |name: &IfName| {
        idx.get(name).copied().ok_or_else(|| NetlinkError::Request {
            op: "set proxy entry",
            object: object(),
            msg: format!("{name} missing"),
        })
    };
    if !e.port_is_trunk && !idx.contains_key(&e.port) {
        // An endpoint still being built (its extension is filled first): its own attach
        // sets the entry once its port exists.
        return Ok(());
    }
    let (bridge, port) = (find(&e.bridge)?, find(&e.port)?);
    h.neighbours()
        .add(bridge, IpAddr::V4(e.ip))
        .link_layer_address(&e.mac.0)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
        .map_err(|err| request_error("set proxy neighbour", object(), err))?;
    // An endpoint's own entry is sticky: a proxy answer that comes back in through the trunk
    // (the main bridge answering a request it got from this bridge) carries the endpoint's MAC
    // as its source, and learning must not move the MAC to the trunk (frames to the endpoint
    // would then go to the main bridge and be dropped there).
    let flags = if e.port_is_trunk {
        NeighbourFlags::Controller
    } else {
        NeighbourFlags::Controller | NeighbourFlags::Sticky
    };
    h.neighbours()
        .add_bridge(port, &e.mac.0)
        .flags(flags)
        .state(NeighbourState::Noarp)
        .replace()
        .execute()
        .await
        .map_err(|err| request_error("set proxy forwarding entry", object(), err))
}

/// Removes every entry's neighbour entry, and its forwarding entry where the port is a trunk; an
/// endpoint's own port is being deleted (removal is asked only when it is detached) and takes its
/// forwarding entries with it. What is already gone (entry, bridge or port) is fine.
/// A remembered index the kernel no longer knows (the link was re-created under the same
/// name, with its own entries) is not "gone": the removal is tried once more with fresh ones.
pub(crate) async fn del(
    h: &Handle,
    links: &LinkIndexes,
    entries: &[ProxyEntry],
) -> Result<(), NetlinkError> {
    with_fresh_retry(links, entries, |fresh| del_all(h, links, entries, fresh)).await
}

async fn del_all(
    h: &Handle,
    links: &LinkIndexes,
    entries: &[ProxyEntry],
    fresh: bool,
) -> Result<(), NetlinkError> {
    let idx = links.of(entries, false)?;
    let pending: Vec<_> = entries.iter().map(|e| del_one(h, &idx, e, fresh)).collect();
    futures::stream::iter(pending)
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

/// Whether a removal failed only because there was nothing to remove: the entry is missing,
/// or (with indexes just looked up, `fresh`) its link went away meanwhile.
fn gone(err: &rtnetlink::Error, fresh: bool) -> bool {
    match errno(err) {
        Some(libc::ENOENT) | Some(libc::ESRCH) => true,
        Some(libc::ENODEV) => fresh,
        _ => false,
    }
}

async fn del_one(
    h: &Handle,
    idx: &HashMap<IfName, u32>,
    e: &ProxyEntry,
    fresh: bool,
) -> Result<(), NetlinkError> {
    let object = || format!("{} on {}", e.ip, e.bridge);
    if let Some(&bridge) = idx.get(&e.bridge) {
        let mut m = msg(bridge, AddressFamily::Inet);
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                e.ip,
            )));
        match h.neighbours().del(m).execute().await {
            Err(err) if !gone(&err, fresh) => {
                return Err(request_error("delete proxy neighbour", object(), err))
            }
            _ => {}
        }
    }
    if let Some(&port) = idx.get(&e.port) {
        let mut m = msg(port, AddressFamily::Bridge);
        m.header.flags = NeighbourFlags::Controller;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(e.mac.0.to_vec()));
        match h.neighbours().del(m).execute().await {
            Err(err) if !gone(&err, fresh) => {
                return Err(request_error(
                    "delete proxy forwarding entry",
                    object(),
                    err,
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Requests in flight at once.
const IN_FLIGHT: usize = 32;

fn msg(index: u32, family: AddressFamily) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family;
    m.header.ifindex = index;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_link_is_forgotten_and_only_it() {
        let cache = LinkIndexes::default();
        for (name, index) in [("snbr0", 7), ("snt0", 8)] {
            cache
                .0
                .lock()
                .unwrap()
                .insert(IfName::new(name).unwrap(), index);
        }
        cache.forget_link("snbr0");
        cache.forget_link("nothing");
        assert_eq!(cache.len(), 1);
        assert_eq!(
            cache.0.lock().unwrap().get(&IfName::new("snt0").unwrap()),
            Some(&8)
        );
    }
}
