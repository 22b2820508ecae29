//! Container network namespaces: opening a namespace file and creating an rtnetlink socket that
//! lives inside it.
//!
//! A netlink socket belongs to the namespace of the thread that created it, for its whole life.
//! So a short-lived std::thread enters the namespace (`setns(CLONE_NEWNET)`), creates the socket
//! there (registered with the caller's tokio runtime), spawns the connection task on that
//! runtime and exits. The caller's threads never change namespace.

use std::fs::File;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use rtnetlink::Handle;

use super::NetlinkError;

/// Opens a namespace file (e.g. `/run/netns/x` or `/proc/<pid>/ns/net`).
pub(crate) fn open(path: &Path) -> Result<File, NetlinkError> {
    File::open(path).map_err(|e| NetlinkError::Netns {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// An rtnetlink handle whose socket is bound to the namespace `ns` (opened from `path`).
///
/// Fails with [`NetlinkError::Netns`] if `ns` is not a network namespace. Needs a tokio runtime.
pub(crate) async fn connect_in(ns: &File, path: &Path) -> Result<Handle, NetlinkError> {
    let netns_err = |msg: String| NetlinkError::Netns {
        path: path.to_path_buf(),
        msg,
    };
    let ns = ns.try_clone().map_err(|e| netns_err(e.to_string()))?;
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shimnet-netns".into())
        .spawn(move || {
            let res = (|| {
                setns(&ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot enter: {e} (not a network namespace?)"))?;
                let _guard = rt.enter();
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| format!("cannot open netlink socket inside: {e}"))?;
                rt.spawn(conn);
                Ok(handle)
            })();
            // The receiver only disappears if the caller was cancelled; nothing to do then.
            let _ = tx.send(res);
        })
        .map_err(|e| netns_err(format!("cannot start namespace thread: {e}")))?;
    rx.await
        .map_err(|_| netns_err("namespace thread ended without an answer".into()))?
        .map_err(netns_err)
}
