//! The static peer file as a membership source (the default): read at start, re-read when its
//! directory reports a finished write or a file moved in (inotify; taken when its text changed),
//! and on SIGHUP (taken always). The directory is watched, not the file, so that editors'
//! rename-replace, an atomic `mv` and a Kubernetes ConfigMap's symlink swap are all seen; a burst
//! of events costs one read. Where inotify is unavailable, or when asked to, the file is also
//! re-read on a timer. A file that is unreadable or invalid is refused with the entry named, and
//! the running peer set stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use inotify::{Inotify, WatchMask};

use ipnetwork::Ipv4Network;

use super::peers::{self, NodeConfig, Peer, SourceKind};
use super::source::{PeerFeed, PeerSubscription};
use super::PeeringError;

/// The peer file source.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    node: NodeConfig,
    cluster: Ipv4Network,
    text: Option<String>,
    feed: PeerFeed,
}

impl FileSource {
    /// A source reading `path` for `node` (peers must lie inside `cluster`), and the subscription
    /// the peering loop reads.
    pub fn new(path: PathBuf, node: NodeConfig, cluster: Ipv4Network) -> (Self, PeerSubscription) {
        let (feed, sub) = PeerFeed::new(SourceKind::File, path.display().to_string());
        (
            FileSource {
                path,
                node,
                cluster,
                text: None,
                feed,
            },
            sub,
        )
    }

    /// The feed (its status is served by the API).
    pub fn feed(&self) -> &PeerFeed {
        &self.feed
    }

    /// Reads the file and, if it is valid and (unless `force`) changed, publishes it. `Ok(Some)`
    /// holds the set taken; on error nothing is published and the running set stays.
    pub fn load(&mut self, force: bool) -> Result<Option<Vec<Peer>>, PeeringError> {
        let r = self.read(force);
        match &r {
            Ok(_) => self.feed.set_reachable(true, None),
            Err(e) => self.feed.set_reachable(false, Some(e.to_string())),
        }
        if let Ok(Some(p)) = &r {
            self.feed.publish(p.clone());
        }
        r
    }

    fn read(&mut self, force: bool) -> Result<Option<Vec<Peer>>, PeeringError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| PeeringError::File {
            path: self.path.display().to_string(),
            msg: e.to_string(),
        })?;
        if !force && self.text.as_deref() == Some(text.as_str()) {
            return Ok(None);
        }
        self.text = Some(text.clone());
        let peers = peers::parse_peers(&text, &self.node, self.cluster)?;
        tracing::info!(file = %self.path.display(), peers = peers.len(), "peer file loaded");
        Ok(Some(peers))
    }

    /// Re-reads the file when its directory reports a change (see the module), every `poll`
    /// if given (and every [`FALLBACK_POLL`] when the directory cannot be watched), and at once
    /// when `reload` fires (forced), until `stop`.
    pub async fn run(
        mut self,
        poll: Option<Duration>,
        mut reload: tokio::sync::mpsc::Receiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut events = match watch_dir(&self.path) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    file = %self.path.display(),
                    "cannot watch the peer file's directory ({e}); re-reading it every {} s",
                    poll.unwrap_or(FALLBACK_POLL).as_secs()
                );
                None
            }
        };
        let poll = if events.is_some() {
            poll
        } else {
            Some(poll.unwrap_or(FALLBACK_POLL))
        };
        let mut tick = poll.map(poll_timer);
        tokio::pin!(stop);
        loop {
            let force = tokio::select! {
                _ = async { tick.as_mut().expect("guarded").tick().await }, if tick.is_some() => false,
                Some(()) = reload.recv() => true,
                ev = async { events.as_mut().expect("guarded").next().await }, if events.is_some() => {
                    match ev {
                        Some(Ok(_)) => {
                            settle(events.as_mut().expect("watched"), SETTLE, SETTLE_MAX).await;
                            false
                        }
                        broken => {
                            let why = match broken {
                                Some(Err(e)) => e.to_string(),
                                _ => "the watch ended".into(),
                            };
                            tracing::warn!(
                                file = %self.path.display(),
                                "peer file watch failed ({why}); re-reading it every {} s",
                                FALLBACK_POLL.as_secs()
                            );
                            events = None;
                            tick = tick.or_else(|| Some(poll_timer(FALLBACK_POLL)));
                            false
                        }
                    }
                }
                () = &mut stop => break,
            };
            if let Err(e) = self.load(force) {
                tracing::error!("peer file refused, keeping the running peer set: {e}");
            }
        }
    }
}

/// The re-read interval when the directory cannot be watched.
pub const FALLBACK_POLL: Duration = Duration::from_secs(3);
/// A burst of events ends after this long without one…
const SETTLE: Duration = Duration::from_millis(50);
/// …or after this long in all.
const SETTLE_MAX: Duration = Duration::from_millis(500);

/// The events of a directory that may mean a new peer file: a write finished, or a file moved
/// in (rename-replace, `mv`, a ConfigMap's `..data` swap). Deletions are not: the running set
/// stays, as for an unreadable file.
pub fn watch_mask() -> WatchMask {
    WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO
}

type Events = inotify::EventStream<[u8; 4096]>;

fn watch_dir(file: &Path) -> std::io::Result<Events> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let inotify = Inotify::init()?;
    inotify.watches().add(dir, watch_mask())?;
    inotify.into_event_stream([0u8; 4096])
}

fn poll_timer(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Waits until `events` has been quiet for `quiet` (at most `max` in all), taking the burst.
async fn settle<S: futures::Stream + Unpin>(events: &mut S, quiet: Duration, max: Duration) {
    let end = tokio::time::Instant::now() + max;
    loop {
        let wait = quiet.min(end.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, events.next()).await {
            Ok(Some(_)) if tokio::time::Instant::now() < end => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeConfig {
        NodeConfig {
            name: "a".into(),
            address: "192.168.1.10".parse().unwrap(),
            pod_cidr: "10.1.0.0/24".parse().unwrap(),
        }
    }

    const B: &str =
        "[[peer]]\nname = \"b\"\naddress = \"192.168.1.11\"\npod_cidr = \"10.2.0.0/24\"\n";

    #[tokio::test]
    async fn takes_changed_files_and_keeps_the_set_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.toml");
        std::fs::write(&path, B).unwrap();
        let (mut src, mut sub) =
            FileSource::new(path.clone(), node(), "10.0.0.0/8".parse().unwrap());
        assert_eq!(src.load(false).unwrap().unwrap().len(), 1);
        assert_eq!(sub.changed().await.len(), 1);
        assert!(src.load(false).unwrap().is_none(), "unchanged text");
        assert!(src.load(true).unwrap().is_some(), "forced");
        std::fs::write(&path, format!("{B}[[peer]]\nname = \"b\"\n")).unwrap();
        let e = src.load(false).unwrap_err().to_string();
        assert!(e.contains("peer file"), "{e}");
        let st = src.feed().status().read().unwrap().clone();
        assert!(!st.reachable && st.error.is_some());
        assert_eq!(sub.current().unwrap().len(), 1, "running set kept");
        std::fs::remove_file(&path).unwrap();
        assert!(src.load(true).is_err());
    }

    async fn wait_set(sub: &mut PeerSubscription, want: usize) -> Duration {
        let t0 = std::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(2), sub.changed())
            .await
            .expect("a new set within 2 s, without SIGHUP or poll");
        assert_eq!(got.len(), want);
        t0.elapsed()
    }

    #[tokio::test]
    async fn edits_are_taken_from_the_watch_without_polling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.toml");
        std::fs::write(&path, "").unwrap();
        let (mut src, mut sub) =
            FileSource::new(path.clone(), node(), "10.0.0.0/8".parse().unwrap());
        src.load(true).unwrap();
        assert!(sub.changed().await.is_empty());
        let (_reload_tx, reload) = tokio::sync::mpsc::channel(1);
        let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(src.run(None, reload, async {
            let _ = stop.await;
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // In place.
        std::fs::write(&path, B).unwrap();
        wait_set(&mut sub, 1).await;
        // Rename-replace (editors, `mv`).
        let tmp = dir.path().join(".peers.toml.tmp");
        std::fs::write(&tmp, format!("{B}\n[[peer]]\nname = \"c\"\naddress = \"192.168.1.12\"\npod_cidr = \"10.3.0.0/24\"\n")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        wait_set(&mut sub, 2).await;
        // After a burst of writes, the last text is the set (the burst is coalesced: see
        // `a_burst_settles_once`).
        for i in 0..20 {
            std::fs::write(&path, if i % 2 == 0 { "" } else { B }).unwrap();
        }
        while sub.current().unwrap().len() != 1 {
            tokio::time::timeout(Duration::from_secs(2), sub.changed())
                .await
                .expect("the burst's last text taken");
        }
        let quiet = tokio::time::timeout(Duration::from_millis(700), sub.changed()).await;
        assert!(quiet.is_err(), "nothing after the burst's last text");
        // An invalid file keeps the running set.
        std::fs::write(&path, "[[peer]]\nname = 1\n").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(700), sub.changed()).await;
        assert!(quiet.is_err(), "refused");
        assert_eq!(sub.current().unwrap().len(), 1);
        // Removing the peer is taken too.
        std::fs::write(&path, "").unwrap();
        wait_set(&mut sub, 0).await;
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_burst_settles_once() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut s = tokio_stream_of(rx);
        for i in 0..5 {
            tx.send(i).unwrap();
        }
        let t0 = tokio::time::Instant::now();
        settle(&mut s, Duration::from_millis(30), Duration::from_secs(1)).await;
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert!(rx_is_drained(&mut s).await, "the burst was taken");
        // An endless stream is cut at the cap.
        let t0 = tokio::time::Instant::now();
        let endless = futures::stream::repeat(()).then(|()| async {
            tokio::time::sleep(Duration::from_millis(5)).await;
        });
        let mut endless = std::pin::pin!(endless);
        settle(
            &mut endless,
            Duration::from_millis(30),
            Duration::from_millis(200),
        )
        .await;
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(5),
            "{took:?}"
        );
        drop(tx);
    }

    fn tokio_stream_of(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<u32>,
    ) -> std::pin::Pin<Box<dyn futures::Stream<Item = u32> + Send>> {
        Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    async fn rx_is_drained(
        s: &mut std::pin::Pin<Box<dyn futures::Stream<Item = u32> + Send>>,
    ) -> bool {
        tokio::time::timeout(Duration::from_millis(20), s.next())
            .await
            .is_err()
    }
}
