//! Links that disappear: a subscription to the kernel's link notifications (rtnetlink group
//! `RTNLGRP_LINK`) in the daemon's namespace, reporting the name of every link deleted. It lets
//! the daemon put back a bridge it owns the moment something outside deletes it, instead of
//! polling for it; nothing runs while nothing is deleted.

use futures::StreamExt;
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::MulticastGroup;
use tokio::sync::mpsc;

use super::{query, NetlinkError};

/// The name a deletion notification carries, if it is one (pure).
pub fn deleted_name(payload: &NetlinkPayload<RouteNetlinkMessage>) -> Option<String> {
    match payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => query::name(m),
        _ => None,
    }
}

/// Starts watching the current namespace (needs a tokio runtime); the receiver gets the name of
/// every link deleted from then on. Dropping it ends the watch.
pub fn deleted_links() -> Result<mpsc::UnboundedReceiver<String>, NetlinkError> {
    let (conn, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link]).map_err(|e| {
            NetlinkError::Request {
                op: "subscribe to link notifications",
                object: "current namespace".into(),
                msg: e.to_string(),
            }
        })?;
    let conn = tokio::spawn(conn);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((msg, _)) = messages.next().await {
            if let Some(name) = deleted_name(&msg.payload) {
                if tx.send(name).is_err() {
                    break;
                }
            }
        }
        conn.abort();
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtnetlink::LinkUnspec;

    #[test]
    fn only_deletions_are_reported() {
        let m = LinkUnspec::new_with_name("br0x").build();
        let del = NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m.clone()));
        assert_eq!(deleted_name(&del).as_deref(), Some("br0x"));
        let new = NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m));
        assert_eq!(deleted_name(&new), None);
    }
}
