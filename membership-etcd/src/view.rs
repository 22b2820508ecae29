//! This node's picture of the cluster (pure): node records and reservations, rebuilt from a
//! listing and kept current by watch events, and the peer set derived from it.
//!
//! A node record becomes a peer only if it decodes, fits the cluster, holds the reservation of
//! its subnet and passes the same checks as a peer-file entry; anything else is skipped and
//! named (`/shimnet/nodes/x: subnet 192.168.50.0/24 is outside cluster_cidr 10.244.0.0/16`).

use std::collections::BTreeMap;

use ipnetwork::Ipv4Network;
use runtime_net::peering::peers::{check_peer, NodeConfig, Peer};
use runtime_net::peering::source;

use crate::keys::{Key, Keys};
use crate::record::{ClusterRecord, NodeRecord, Reservation};

/// One key-value pair as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
    /// Lease the key is attached to (0: none).
    pub lease: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
}

/// One watch event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Created or changed.
    Put(Kv),
    /// Deleted (or its lease expired).
    Delete {
        /// Key.
        key: Vec<u8>,
        /// Revision of the deletion.
        mod_revision: i64,
    },
}

/// A node record that decoded, with its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveNode {
    /// The record.
    pub record: NodeRecord,
    /// Its lease.
    pub lease: i64,
}

/// What changed for this node itself in a batch of events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnChanges {
    /// This node's own record was deleted (lease expired or removed by hand).
    pub record_gone: bool,
    /// This node's own reservation was deleted or taken over.
    pub reservation_lost: bool,
}

/// The cluster as seen from one node.
#[derive(Debug, Clone)]
pub struct ClusterView {
    keys: Keys,
    me: String,
    my_subnet: Ipv4Network,
    cluster: ClusterRecord,
    nodes: BTreeMap<String, LiveNode>,
    reservations: BTreeMap<Ipv4Network, String>,
    /// Keys whose value was refused, with the reason.
    invalid: BTreeMap<String, String>,
    /// Last revision applied.
    pub revision: i64,
}

impl ClusterView {
    /// An empty view for node `me` holding `my_subnet` in `cluster`.
    pub fn new(keys: Keys, me: &str, my_subnet: Ipv4Network, cluster: ClusterRecord) -> Self {
        ClusterView {
            keys,
            me: me.to_string(),
            my_subnet,
            cluster,
            nodes: BTreeMap::new(),
            reservations: BTreeMap::new(),
            invalid: BTreeMap::new(),
            revision: 0,
        }
    }

    /// Replaces everything with a listing taken at `revision`.
    pub fn reset(&mut self, kvs: impl IntoIterator<Item = Kv>, revision: i64) {
        self.nodes.clear();
        self.reservations.clear();
        self.invalid.clear();
        for kv in kvs {
            self.put(kv);
        }
        self.revision = revision;
    }

    /// Applies watch events (in order); returns what changed for this node itself.
    pub fn apply(&mut self, events: impl IntoIterator<Item = Event>) -> OwnChanges {
        let mut own = OwnChanges::default();
        let my_key = self.keys.subnet(self.my_subnet);
        for ev in events {
            match ev {
                Event::Put(kv) => {
                    self.revision = self.revision.max(kv.mod_revision);
                    if kv.key == my_key.as_bytes()
                        && Reservation::decode(&kv.value).map(|r| r.node) != Ok(self.me.clone())
                    {
                        own.reservation_lost = true;
                    }
                    self.put(kv);
                }
                Event::Delete { key, mod_revision } => {
                    self.revision = self.revision.max(mod_revision);
                    let text = String::from_utf8_lossy(&key).into_owned();
                    self.invalid.remove(&text);
                    match self.keys.parse(&key) {
                        Key::Node(n) => {
                            own.record_gone |= n == self.me;
                            self.nodes.remove(&n);
                        }
                        Key::Subnet(Ok(net)) => {
                            own.reservation_lost |= net == self.my_subnet;
                            self.reservations.remove(&net);
                        }
                        _ => {}
                    }
                }
            }
        }
        own
    }

    fn put(&mut self, kv: Kv) {
        let text = String::from_utf8_lossy(&kv.key).into_owned();
        self.invalid.remove(&text);
        match self.keys.parse(&kv.key) {
            Key::Node(name) => match NodeRecord::decode(&name, &kv.value, &self.cluster) {
                Ok(record) => {
                    self.nodes.insert(
                        name,
                        LiveNode {
                            record,
                            lease: kv.lease,
                        },
                    );
                }
                Err(why) => {
                    self.nodes.remove(&name);
                    self.invalid.insert(text, why);
                }
            },
            Key::Subnet(Ok(net)) => {
                let fits = net.prefix() == self.cluster.subnet_len
                    && runtime_net::peering::peers::is_subnet(net, self.cluster.cluster_cidr);
                match Reservation::decode(&kv.value) {
                    Ok(r) if fits => {
                        self.reservations.insert(net, r.node);
                    }
                    Ok(_) => {
                        self.reservations.remove(&net);
                        self.invalid.insert(
                            text,
                            format!(
                                "subnet {net} is not a /{} inside cluster_cidr {}",
                                self.cluster.subnet_len, self.cluster.cluster_cidr
                            ),
                        );
                    }
                    Err(why) => {
                        self.reservations.remove(&net);
                        self.invalid.insert(text, why);
                    }
                }
            }
            Key::Subnet(Err(s)) => {
                self.invalid
                    .insert(text, format!("{s:?} does not name a subnet"));
            }
            Key::Config => {
                if let Some(why) = ClusterRecord::decode(&kv.value)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.mismatch(&self.cluster, &text).map_or(Ok(()), Err))
                    .err()
                {
                    self.invalid.insert(text, why);
                }
            }
            Key::Other => {}
        }
    }

    /// The peer set for `node` and the entries skipped, each named by its key.
    pub fn peers(&self, node: &NodeConfig) -> (Vec<Peer>, Vec<String>) {
        let mut skipped: Vec<String> = self
            .invalid
            .iter()
            .map(|(k, why)| format!("{k}: {why}"))
            .collect();
        let mut out: Vec<Peer> = Vec::new();
        for (name, n) in &self.nodes {
            if *name == self.me {
                continue;
            }
            let key = self.keys.node(name);
            let r = &n.record;
            match self.reservations.get(&r.subnet) {
                Some(h) if h == name => {}
                Some(h) => {
                    skipped.push(format!(
                        "{key}: subnet {} is reserved by node {h:?}",
                        r.subnet
                    ));
                    continue;
                }
                None => {
                    skipped.push(format!("{key}: subnet {} has no reservation", r.subnet));
                    continue;
                }
            }
            let peer = Peer {
                name: name.clone(),
                address: r.address,
                pod_cidr: r.subnet,
                mode: None,
            };
            let label = |j: usize| format!("node {:?}", out[j].name);
            match check_peer(&peer, node, self.cluster.cluster_cidr, &out, label) {
                Ok(()) => out.push(peer),
                Err(why) => skipped.push(format!("{key}: {why}")),
            }
        }
        (out, skipped)
    }

    /// Lease of every live node other than this one, by name.
    pub fn leases(&self) -> BTreeMap<String, i64> {
        self.nodes
            .iter()
            .filter(|(n, _)| **n != self.me)
            .map(|(n, l)| (n.clone(), l.lease))
            .collect()
    }

    /// Every reservation, with whether its node is live.
    pub fn reservations(&self) -> Vec<source::Reservation> {
        self.reservations
            .iter()
            .map(|(subnet, node)| {
                let live = self.nodes.get(node).filter(|n| n.record.subnet == *subnet);
                source::Reservation {
                    subnet: *subnet,
                    node: node.clone(),
                    live: live.is_some(),
                    address: live.map(|n| n.record.address),
                    lease_expires: None,
                }
            })
            .collect()
    }

    /// Reservations as subnet → holder (for a claim).
    pub fn holders(&self) -> &BTreeMap<Ipv4Network, String> {
        &self.reservations
    }

    /// This node's own record as last seen.
    pub fn own_record(&self) -> Option<&LiveNode> {
        self.nodes.get(&self.me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::mac_text;
    use runtime_net::peering::peers::ModeSetting;
    use runtime_net::peering::plan::vxlan_mac;

    fn cluster() -> ClusterRecord {
        ClusterRecord {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            subnet_len: 24,
        }
    }

    fn node() -> NodeConfig {
        NodeConfig {
            name: "node-a".into(),
            address: "172.30.0.10".parse().unwrap(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
        }
    }

    fn view() -> ClusterView {
        ClusterView::new(
            Keys::new("/shimnet"),
            "node-a",
            "10.244.1.0/24".parse().unwrap(),
            cluster(),
        )
    }

    fn rec(name: &str, addr: &str, subnet: &str) -> NodeRecord {
        let address = addr.parse().unwrap();
        NodeRecord {
            name: name.into(),
            address,
            subnet: subnet.parse().unwrap(),
            vtep_mac: mac_text(vxlan_mac(address)),
            mode: ModeSetting::Auto,
            vxlan_vni: 4242,
            vxlan_port: 4789,
            version: String::new(),
        }
    }

    fn node_kv(r: &NodeRecord, rev: i64) -> Kv {
        Kv {
            key: format!("/shimnet/nodes/{}", r.name).into_bytes(),
            value: r.encode(),
            lease: 100 + rev,
            mod_revision: rev,
        }
    }

    fn res_kv(subnet: &str, holder: &str, rev: i64) -> Kv {
        let net: Ipv4Network = subnet.parse().unwrap();
        Kv {
            key: Keys::new("/shimnet").subnet(net).into_bytes(),
            value: Reservation {
                node: holder.into(),
                reserved_at: 0,
            }
            .encode(),
            lease: 0,
            mod_revision: rev,
        }
    }

    fn base() -> Vec<Kv> {
        vec![
            res_kv("10.244.1.0/24", "node-a", 1),
            res_kv("10.244.2.0/24", "node-b", 2),
            res_kv("10.244.3.0/24", "node-c", 3),
            node_kv(&rec("node-a", "172.30.0.10", "10.244.1.0/24"), 4),
            node_kv(&rec("node-b", "172.30.0.11", "10.244.2.0/24"), 5),
            node_kv(&rec("node-c", "172.30.1.10", "10.244.3.0/24"), 6),
        ]
    }

    #[test]
    fn listing_gives_every_other_live_node() {
        let mut v = view();
        v.reset(base(), 6);
        let (peers, skipped) = v.peers(&node());
        let names: Vec<_> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["node-b", "node-c"]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            peers[1].pod_cidr,
            "10.244.3.0/24".parse::<Ipv4Network>().unwrap()
        );
        assert_eq!(v.leases()["node-b"], 105);
        let r = v.reservations();
        assert_eq!(r.len(), 3);
        assert!(r.iter().all(|r| r.live));
    }

    #[test]
    fn expiry_removes_the_peer_and_keeps_the_reservation() {
        let mut v = view();
        v.reset(base(), 6);
        let own = v.apply([Event::Delete {
            key: b"/shimnet/nodes/node-b".to_vec(),
            mod_revision: 7,
        }]);
        assert_eq!(own, OwnChanges::default());
        assert_eq!(v.revision, 7);
        let (peers, _) = v.peers(&node());
        assert_eq!(peers.len(), 1);
        let r = v.reservations();
        let b = r.iter().find(|r| r.node == "node-b").unwrap();
        assert!(!b.live && b.address.is_none());
        // It comes back with the same subnet.
        v.apply([Event::Put(node_kv(
            &rec("node-b", "172.30.0.11", "10.244.2.0/24"),
            8,
        ))]);
        assert_eq!(v.peers(&node()).0.len(), 2);
    }

    #[test]
    fn corrupt_and_foreign_values_are_skipped_and_named() {
        let mut v = view();
        v.reset(base(), 6);
        v.apply([
            Event::Put(Kv {
                key: b"/shimnet/nodes/node-x".to_vec(),
                value: b"{not json".to_vec(),
                lease: 1,
                mod_revision: 7,
            }),
            Event::Put(node_kv(&rec("node-f", "172.30.0.50", "192.168.50.0/24"), 8)),
            Event::Put(node_kv(&rec("node-s", "172.30.0.51", "10.244.2.0/24"), 9)),
            Event::Put(node_kv(&rec("node-n", "172.30.0.52", "10.244.9.0/24"), 10)),
            Event::Put(Kv {
                key: b"/shimnet/subnets/garbage".to_vec(),
                value: b"{}".to_vec(),
                lease: 0,
                mod_revision: 11,
            }),
        ]);
        let (peers, skipped) = v.peers(&node());
        assert_eq!(peers.len(), 2, "{peers:?}");
        let all = skipped.join("\n");
        for want in [
            "/shimnet/nodes/node-x: not a node record",
            "/shimnet/nodes/node-f: subnet 192.168.50.0/24 is outside cluster_cidr 10.244.0.0/16",
            "/shimnet/nodes/node-s: subnet 10.244.2.0/24 is reserved by node \"node-b\"",
            "/shimnet/nodes/node-n: subnet 10.244.9.0/24 has no reservation",
            "/shimnet/subnets/garbage: \"garbage\" does not name a subnet",
        ] {
            assert!(all.contains(want), "{want}\n{all}");
        }
        // A corrupt value replacing a good record removes the peer; fixing it brings it back.
        v.apply([Event::Put(Kv {
            key: b"/shimnet/nodes/node-b".to_vec(),
            value: b"\x00".to_vec(),
            lease: 1,
            mod_revision: 12,
        })]);
        assert_eq!(v.peers(&node()).0.len(), 1);
        v.apply([Event::Put(node_kv(
            &rec("node-b", "172.30.0.11", "10.244.2.0/24"),
            13,
        ))]);
        assert_eq!(v.peers(&node()).0.len(), 2);
        // Deleting a corrupt key clears its complaint.
        v.apply([Event::Delete {
            key: b"/shimnet/nodes/node-x".to_vec(),
            mod_revision: 14,
        }]);
        assert!(!v.peers(&node()).1.join("\n").contains("node-x"));
    }

    #[test]
    fn own_losses_are_reported() {
        let mut v = view();
        v.reset(base(), 6);
        let own = v.apply([Event::Delete {
            key: b"/shimnet/nodes/node-a".to_vec(),
            mod_revision: 7,
        }]);
        assert!(own.record_gone && !own.reservation_lost);
        let own = v.apply([Event::Put(res_kv("10.244.1.0/24", "intruder", 8))]);
        assert!(own.reservation_lost);
        let own = v.apply([Event::Delete {
            key: b"/shimnet/subnets/10.244.1.0-24".to_vec(),
            mod_revision: 9,
        }]);
        assert!(own.reservation_lost);
        let own = v.apply([Event::Put(res_kv("10.244.1.0/24", "node-a", 10))]);
        assert_eq!(own, OwnChanges::default());
    }

    #[test]
    fn a_changed_cluster_record_is_named() {
        let mut v = view();
        v.reset(base(), 6);
        v.apply([Event::Put(Kv {
            key: b"/shimnet/config".to_vec(),
            value: ClusterRecord {
                subnet_len: 25,
                ..cluster()
            }
            .encode(),
            lease: 0,
            mod_revision: 7,
        })]);
        let s = v.peers(&node()).1.join("\n");
        assert!(
            s.contains("/shimnet/config: etcd.subnet_len 24 differs"),
            "{s}"
        );
    }
}
