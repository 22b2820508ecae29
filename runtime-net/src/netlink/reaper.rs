//! Background deletion of detached veths.
//!
//! Deleting a net device costs the caller ~15–20 ms on this kind of kernel (RCU barrier in
//! `netdev_run_todo`), no matter how it is asked for. Detaching therefore first takes the host end
//! down (sub-millisecond: no traffic can flow any more), then hands
//! its *index* — never its name, which a new endpoint may reuse — to this reaper, which deletes it
//! on its own thread and netlink socket so no API call waits for the kernel's cleanup.
//!
//! Deletions are batched: detaching also moves the link into device group [`REAP_GROUP`], and the
//! reaper deletes the whole group with one RTM_DELLINK (`ip link delete group N`), which the
//! kernel unregisters in one `unregister_netdevice_many` — one round of RCU barriers for the whole
//! batch instead of one per link. Should the group delete fail, the batch is deleted one index at
//! a time, and the group is swept again a second later.
//!
//! The group in the kernel, not the queue, is what is pending: a queued index only says "sweep
//! the group now". A link gets into the group only on the way to a sweep that follows it — the
//! detach that moves it there queues its index even if its caller gives up half-way (see
//! `Netlink::detach_veth`) — and whatever a killed daemon left there is swept when the next
//! reaper starts and by reconciliation (`plan::plan_reconcile` deletes every link in the group).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};
use tokio::sync::mpsc;

use super::errno;

/// Device group of detached links waiting for deletion ("SNRP"); nothing else should use it in
/// the daemon's namespace.
pub const REAP_GROUP: u32 = 0x534e_5250;

/// Detaches link `index`: down (a port that is down forwards nothing) and into [`REAP_GROUP`]
/// (pure). It stays enslaved: leaving the bridge (`br_del_if`: fdb walk, MTU, features and
/// port-count passes over every port) is left to the background deletion, off the API path.
pub(crate) fn detach_message(index: u32) -> LinkMessage {
    LinkUnspec::new_with_index(index)
        .down()
        .append_extra_attribute(LinkAttribute::Group(REAP_GROUP))
        .build()
}

/// Deletes every link in [`REAP_GROUP`] (pure).
pub(crate) fn group_delete_message() -> LinkMessage {
    let mut m = LinkUnspec::new_with_index(0).build();
    m.attributes.push(LinkAttribute::Group(REAP_GROUP));
    m
}

/// Deletes every link in [`REAP_GROUP`]; `Ok(false)` if the group was empty.
async fn sweep(handle: &Handle) -> Result<bool, rtnetlink::Error> {
    match handle
        .link()
        .del_with_message(group_delete_message())
        .execute()
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the links in `batch`: the whole group at once, else one by one. Returns the indices
/// that could not be deleted (to try again later).
async fn reap(handle: &Handle, batch: &[u32]) -> Vec<u32> {
    match sweep(handle).await {
        Ok(_) => return Vec::new(),
        Err(e) => tracing::warn!("deleting detached links by group: {e}; deleting one by one"),
    }
    let mut failed = Vec::new();
    for &index in batch {
        let msg = LinkUnspec::new_with_index(index).build();
        match handle.link().del_with_message(msg).execute().await {
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::ENODEV) => {}
            Err(e) => {
                tracing::warn!(index, "deleting detached link: {e}");
                failed.push(index);
            }
        }
    }
    failed
}

/// How long the reaper waits before trying failed deletions again, and how often it tries.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
const RETRIES: u32 = 5;

/// What woke the reaper.
enum Wake {
    /// A detached link's index, or `None`: only sweep the group.
    Queued(Option<u32>),
    /// Time to try failed deletions again.
    Retry,
    /// Every sender is gone.
    Closed,
}

/// The reaper's loop: sweep what an earlier run left, then delete what is queued, in batches;
/// deletions that fail are tried again a few times, a second apart.
async fn run(handle: &Handle, mut rx: mpsc::UnboundedReceiver<Option<u32>>, pending: &AtomicUsize) {
    match sweep(handle).await {
        Ok(true) => tracing::info!("deleted detached links left by an earlier run"),
        Ok(false) => {}
        Err(e) => tracing::warn!("sweeping detached links left by an earlier run: {e}"),
    }
    let (mut failed, mut tries) = (Vec::new(), 0);
    loop {
        let wake = if failed.is_empty() {
            rx.recv().await.map_or(Wake::Closed, Wake::Queued)
        } else {
            match tokio::time::timeout(RETRY_AFTER, rx.recv()).await {
                Ok(next) => next.map_or(Wake::Closed, Wake::Queued),
                Err(_) => Wake::Retry,
            }
        };
        let mut batch: Vec<u32> = std::mem::take(&mut failed);
        let mut queued = Vec::new();
        match wake {
            Wake::Closed => break,
            Wake::Queued(i) => queued.push(i),
            Wake::Retry => tries += 1,
        }
        while let Ok(i) = rx.try_recv() {
            queued.push(i);
        }
        let taken = queued.iter().flatten().count();
        batch.extend(queued.into_iter().flatten());
        failed = reap(handle, &batch).await;
        if failed.is_empty() {
            tries = 0;
        } else if tries >= RETRIES {
            tracing::warn!(
                ?failed,
                "giving up deleting detached links; reconciliation removes them"
            );
            failed.clear();
            tries = 0;
        }
        pending.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// Handle to the reaper thread.
#[derive(Debug, Clone)]
pub(crate) struct Reaper {
    tx: mpsc::UnboundedSender<Option<u32>>,
    pending: Arc<AtomicUsize>,
}

impl Reaper {
    /// Starts the reaper thread with its own netlink socket in the caller's namespace.
    pub(crate) fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel::<Option<u32>>();
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
                    run(&handle, rx, &count).await;
                });
            })?;
        Ok(Reaper { tx, pending })
    }

    /// Queues the link with `index` (in the reap group) for deletion.
    pub(crate) fn delete(&self, index: u32) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Some(index)).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(index, "reaper is gone; reconciliation will remove the link");
        }
    }

    /// Asks for the reap group to be swept, for links that may have got into it without their
    /// index being known to be there (a detach that failed half-way).
    pub(crate) fn sweep(&self) {
        if self.tx.send(None).is_err() {
            tracing::warn!("reaper is gone; reconciliation will remove detached links");
        }
    }

    /// Deletions queued but not yet done.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_moves_link_down_into_reap_group() {
        let m = detach_message(42);
        assert_eq!(m.header.index, 42);
        assert!(!super::super::query::is_up(&m));
        assert!(!m
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(_))));
        assert!(m.attributes.contains(&LinkAttribute::Group(REAP_GROUP)));
    }

    #[test]
    fn group_delete_names_no_single_link() {
        let m = group_delete_message();
        assert_eq!(m.header.index, 0);
        assert_eq!(m.attributes, vec![LinkAttribute::Group(REAP_GROUP)]);
    }
}
