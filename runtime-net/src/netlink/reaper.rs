//! Background deletion of detached veths.
//!
//! Deleting a net device costs the caller ~15–20 ms on this kind of kernel (RCU barrier in
//! `netdev_run_todo`), no matter how it is asked for. Detaching therefore first cuts the host end
//! off the bridge and takes it down (sub-millisecond: no traffic can flow any more), then hands
//! its *index* — never its name, which a new endpoint may reuse — to this reaper, which deletes it
//! on its own thread and netlink socket so no API call waits for the kernel's cleanup.
//! Anything the reaper could not finish (daemon killed) is found by reconciliation: the link still
//! carries shimnet's alias but has no record.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rtnetlink::LinkUnspec;
use tokio::sync::mpsc;

use super::errno;

/// Handle to the reaper thread.
#[derive(Debug, Clone)]
pub(crate) struct Reaper {
    tx: mpsc::UnboundedSender<u32>,
    pending: Arc<AtomicUsize>,
}

impl Reaper {
    /// Starts the reaper thread with its own netlink socket in the caller's namespace.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let pending = Arc::new(AtomicUsize::new(0));
        let count = pending.clone();
        let (conn, handle, _) = rtnetlink::new_connection()?;
        std::thread::Builder::new()
            .name("shimnet-reaper".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("reaper runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    tokio::spawn(conn);
                    while let Some(index) = rx.recv().await {
                        let msg = LinkUnspec::new_with_index(index).build();
                        match handle.link().del_with_message(msg).execute().await {
                            Ok(()) => {}
                            Err(e) if errno(&e) == Some(libc::ENODEV) => {}
                            Err(e) => tracing::warn!(index, "deleting detached link: {e}"),
                        }
                        count.fetch_sub(1, Ordering::AcqRel);
                    }
                });
            })?;
        Ok(Reaper { tx, pending })
    }

    /// Queues the link with `index` for deletion.
    pub(crate) fn delete(&self, index: u32) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(index).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(index, "reaper is gone; reconciliation will remove the link");
        }
    }

    /// Deletions queued but not yet done.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}
