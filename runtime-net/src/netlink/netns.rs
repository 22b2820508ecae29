//! Container network namespaces: opening a namespace file and creating an rtnetlink socket that
//! lives inside it.
//!
//! A netlink socket belongs to the namespace of the thread that created it, for its whole life.
//! So one long-lived std::thread, the only one that ever changes namespace, takes requests in
//! turn: it enters the namespace (`setns(CLONE_NEWNET)`), creates the socket there (registered
//! with the caller's tokio runtime), spawns the connection task on that runtime and goes back to
//! the main thread's namespace. The caller's threads never change namespace. (A thread started per attach
//! cost a thread's creation and first scheduling on every attach.)

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

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

/// One socket to create: in namespace `ns`, registered with runtime `rt`, answered on `tx`.
struct Job {
    ns: File,
    rt: tokio::runtime::Handle,
    tx: tokio::sync::oneshot::Sender<Result<Handle, String>>,
}

/// The namespace thread's queue; empty until first used, and again after the thread ended.
static QUEUE: Mutex<Option<Sender<Job>>> = Mutex::new(None);

/// Starts the namespace thread; it ends when it cannot go back to its own namespace (the next
/// request starts a new one).
fn start() -> std::io::Result<Sender<Job>> {
    let (tx, rx) = channel::<Job>();
    std::thread::Builder::new()
        .name("shimnet-netns".into())
        .spawn(move || {
            // Where to go back to between requests: the main thread's namespace (the daemon's;
            // never a container's, which staying in would keep alive after its container).
            let home =
                File::open("/proc/self/ns/net").or_else(|_| File::open("/proc/thread-self/ns/net"));
            for job in rx {
                let home = match &home {
                    Ok(h) => h,
                    Err(e) => {
                        let _ = job
                            .tx
                            .send(Err(format!("cannot open this thread's namespace: {e}")));
                        continue;
                    }
                };
                let res = setns(&job.ns, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| format!("cannot enter: {e} (not a network namespace?)"))
                    .and_then(|()| {
                        let _guard = job.rt.enter();
                        let (conn, handle, _) = rtnetlink::new_connection()
                            .map_err(|e| format!("cannot open netlink socket inside: {e}"))?;
                        job.rt.spawn(conn);
                        Ok(handle)
                    });
                let back = setns(home, CloneFlags::CLONE_NEWNET);
                // The receiver only disappears if the caller was cancelled; nothing to do then.
                let _ = job.tx.send(res);
                if back.is_err() {
                    return;
                }
            }
        })?;
    Ok(tx)
}

/// Hands `job` to the namespace thread, starting one if there is none (or it ended).
fn submit(mut job: Job) -> Result<(), String> {
    let mut queue = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..2 {
        let tx = match queue.as_ref() {
            Some(tx) => tx.clone(),
            None => {
                let tx = start().map_err(|e| format!("cannot start namespace thread: {e}"))?;
                queue.insert(tx).clone()
            }
        };
        match tx.send(job) {
            Ok(()) => return Ok(()),
            Err(back) => {
                *queue = None;
                job = back.0;
            }
        }
    }
    Err("the namespace thread ended twice in a row".into())
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
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job {
        ns,
        rt: tokio::runtime::Handle::current(),
        tx,
    };
    submit(job).map_err(netns_err)?;
    rx.await
        .map_err(|_| netns_err("namespace thread ended without an answer".into()))?
        .map_err(netns_err)
}
