//! Values under the etcd prefix (anyone with write access to etcd can put them there): each
//! input is split into key/value events and applied to a node's view of the cluster. Whatever
//! becomes a peer keeps the membership source's promises.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use membership_etcd::keys::Keys;
use membership_etcd::record::ClusterRecord;
use membership_etcd::view::{ClusterView, Event, Kv};
use runtime_net::peering::peers::NodeConfig;

fuzz_target!(|data: &[u8]| {
    let cluster = ClusterRecord {
        cluster_cidr: "10.244.0.0/16".parse().expect("cidr"),
        subnet_len: 24,
    };
    let node = NodeConfig {
        name: "node-a".into(),
        address: Ipv4Addr::new(192, 0, 2, 10),
        pod_cidr: "10.244.0.0/24".parse().expect("cidr"),
    };
    let mut view = ClusterView::new(Keys::new("/shimnet"), "node-a", node.pod_cidr, cluster);
    // Records separated by NUL: "key\x01value", a key alone deletes it.
    let events: Vec<Event> = data
        .split(|b| *b == 0)
        .enumerate()
        .map(|(i, rec)| {
            let (key, value) = match rec.iter().position(|b| *b == 1) {
                Some(p) => (&rec[..p], Some(&rec[p + 1..])),
                None => (rec, None),
            };
            let key = [b"/shimnet/".as_slice(), key].concat();
            match value {
                Some(v) => Event::Put(Kv {
                    key,
                    value: v.to_vec(),
                    lease: i as i64,
                    mod_revision: i as i64,
                }),
                None => Event::Delete {
                    key,
                    mod_revision: i as i64,
                },
            }
        })
        .collect();
    view.apply(events);
    let (peers, _skipped) = view.peers(&node);
    for (i, p) in peers.iter().enumerate() {
        assert_ne!(p.name, node.name);
        assert!(cluster.cluster_cidr.contains(p.pod_cidr.network()));
        assert_eq!(p.pod_cidr.prefix(), 24);
        assert!(!p.pod_cidr.overlaps(node.pod_cidr));
        assert!(view.holders().get(&p.pod_cidr) == Some(&p.name), "a peer holds its subnet");
        for q in &peers[i + 1..] {
            assert!(!p.pod_cidr.overlaps(q.pod_cidr));
        }
    }
});
