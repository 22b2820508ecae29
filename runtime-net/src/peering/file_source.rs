//! The static peer file as a membership source (the default): read at start, re-read every
//! `reconcile_interval_secs` (taken when its text changed) and on SIGHUP (taken always). A file
//! that is unreadable or invalid is refused with the entry named, and the running peer set stays.

use std::path::PathBuf;
use std::time::Duration;

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

    /// Re-reads the file every `every` and at once when `reload` fires (forced), until `stop`.
    pub async fn run(
        mut self,
        every: Duration,
        mut reload: tokio::sync::mpsc::Receiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        tokio::pin!(stop);
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = reload.recv() => true,
                () = &mut stop => break,
            };
            if let Err(e) = self.load(force) {
                tracing::error!("peer file refused, keeping the running peer set: {e}");
            }
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
}
