//! What the etcd source keeps in the state dir (`<state_dir>/membership/`), so a node restarted
//! while etcd is unreachable still comes up with its subnet and its last known peers:
//!
//! - `subnet.json`: this node's name and leased subnet, written after every claim;
//! - `peers.json`: the last peer set published, written on every change.
//!
//! Each file is replaced atomically (write, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;
use runtime_net::peering::peers::Peer;
use serde::{Deserialize, Serialize};

/// The membership folder of a state dir.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Remembered {
    node: String,
    subnet: Ipv4Network,
}

impl Store {
    /// `<state_dir>/membership`.
    pub fn new(state_dir: &Path) -> Self {
        Store {
            dir: state_dir.join("membership"),
        }
    }

    fn write(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(name))
    }

    /// The subnet remembered for `node` (another name's subnet is not this node's).
    pub fn subnet(&self, node: &str) -> Option<Ipv4Network> {
        let text = std::fs::read(self.dir.join("subnet.json")).ok()?;
        let r: Remembered = serde_json::from_slice(&text).ok()?;
        (r.node == node).then_some(r.subnet)
    }

    /// Remembers `subnet` for `node`.
    pub fn set_subnet(&self, node: &str, subnet: Ipv4Network) -> std::io::Result<()> {
        let r = Remembered {
            node: node.into(),
            subnet,
        };
        self.write("subnet.json", &serde_json::to_vec(&r).expect("serialises"))
    }

    /// The last peer set saved.
    pub fn peers(&self) -> Option<Vec<Peer>> {
        let text = std::fs::read(self.dir.join("peers.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Saves the peer set.
    pub fn set_peers(&self, peers: &[Peer]) -> std::io::Result<()> {
        self.write(
            "peers.json",
            &serde_json::to_vec(peers).expect("serialises"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_subnet_per_name_and_peers() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        assert_eq!(s.subnet("a"), None);
        assert_eq!(s.peers(), None);
        let net: Ipv4Network = "10.244.3.0/24".parse().unwrap();
        s.set_subnet("a", net).unwrap();
        assert_eq!(s.subnet("a"), Some(net));
        assert_eq!(s.subnet("b"), None, "renamed node: not its subnet");
        let p = vec![Peer {
            name: "b".into(),
            address: "172.30.0.11".parse().unwrap(),
            pod_cidr: "10.244.4.0/24".parse().unwrap(),
            mode: None,
        }];
        s.set_peers(&p).unwrap();
        assert_eq!(s.peers(), Some(p));
        std::fs::write(d.path().join("membership/peers.json"), "garbage").unwrap();
        assert_eq!(s.peers(), None);
    }
}
