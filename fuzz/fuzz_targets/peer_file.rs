//! The multi-host peer file: parsing and validation against this node and the cluster CIDR.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use runtime_net::peering::peers::{parse_peers, NodeConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let node = NodeConfig {
        name: "node-a".into(),
        address: Ipv4Addr::new(192, 0, 2, 10),
        pod_cidr: "10.244.0.0/24".parse().expect("cidr"),
    };
    let cluster = "10.244.0.0/16".parse().expect("cidr");
    let Ok(peers) = parse_peers(text, &node, cluster) else {
        return;
    };
    // Whatever is accepted keeps the file's promises: no own node, no overlap, inside the cluster.
    for (i, p) in peers.iter().enumerate() {
        assert_ne!(p.name, node.name);
        assert_ne!(p.address, node.address);
        assert!(cluster.contains(p.pod_cidr.network()));
        assert!(!p.pod_cidr.contains(node.pod_cidr.network()));
        assert!(!node.pod_cidr.contains(p.pod_cidr.network()));
        for q in &peers[i + 1..] {
            assert_ne!(p.name, q.name);
            assert!(!p.pod_cidr.contains(q.pod_cidr.network()));
            assert!(!q.pod_cidr.contains(p.pod_cidr.network()));
        }
    }
});
