//! The values stored under the prefix (JSON) and their validation. A value that does not decode
//! or breaks a rule is refused with the reason; the caller names the key and skips it.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use runtime_net::peering::peers::{is_subnet, ModeSetting};
use runtime_net::peering::plan::vxlan_mac;
use serde::{Deserialize, Serialize};

/// `<prefix>/config`: settings every node of the cluster must share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// All pod subnets.
    pub cluster_cidr: Ipv4Network,
    /// Prefix length of each node's subnet.
    pub subnet_len: u8,
}

/// `<prefix>/subnets/<subnet>`: who holds a subnet. Kept without a lease, so a node gets its
/// subnet back after any absence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Node name.
    pub node: String,
    /// Unix time of the reservation.
    #[serde(default)]
    pub reserved_at: u64,
}

/// `<prefix>/nodes/<name>`: what peers need to reach a node, attached to its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name (equals the key's last part).
    pub name: String,
    /// Underlay address.
    pub address: Ipv4Addr,
    /// Pod subnet.
    pub subnet: Ipv4Network,
    /// MAC of its VXLAN device (`02:5e:` + address bytes).
    pub vtep_mac: String,
    /// Its `[peering] mode` (informational: every node chooses its own data plane per peer).
    pub mode: ModeSetting,
    /// Its VXLAN network identifier.
    pub vxlan_vni: u32,
    /// Its VXLAN UDP port.
    pub vxlan_port: u16,
    /// shimnetd version that wrote the record.
    #[serde(default)]
    pub version: String,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl NodeRecord {
    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Decodes the record stored under `<prefix>/nodes/<key_name>` and checks it against the
    /// cluster: the name matches the key, the subnet is a `/subnet_len` inside `cluster_cidr`,
    /// the address is unicast and outside the subnet, the VTEP MAC is the one its address gives.
    pub fn decode(key_name: &str, bytes: &[u8], cluster: &ClusterRecord) -> Result<Self, String> {
        let r: NodeRecord =
            serde_json::from_slice(bytes).map_err(|e| format!("not a node record: {e}"))?;
        if r.name != key_name {
            return Err(format!("name {:?} differs from its key", r.name));
        }
        if r.subnet.ip() != r.subnet.network() {
            return Err(format!("subnet {}: not a network address", r.subnet));
        }
        if !is_subnet(r.subnet, cluster.cluster_cidr) {
            return Err(format!(
                "subnet {} is outside cluster_cidr {}",
                r.subnet, cluster.cluster_cidr
            ));
        }
        if r.subnet.prefix() != cluster.subnet_len {
            return Err(format!(
                "subnet {} is not a /{} (the cluster's subnet_len)",
                r.subnet, cluster.subnet_len
            ));
        }
        let a = r.address;
        if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
            return Err(format!("address {a}: not a unicast host address"));
        }
        if r.subnet.contains(a) {
            return Err(format!("address {a} lies inside its own subnet"));
        }
        let want = mac_text(vxlan_mac(a));
        if !r.vtep_mac.eq_ignore_ascii_case(&want) {
            return Err(format!(
                "vtep_mac {} is not {want}, the MAC its address gives",
                r.vtep_mac
            ));
        }
        Ok(r)
    }
}

impl Reservation {
    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Decodes a reservation; the node name must be one a node could have.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let r: Reservation =
            serde_json::from_slice(bytes).map_err(|e| format!("not a reservation: {e}"))?;
        if r.node.is_empty() || r.node.len() > 63 || r.node.contains(['/', ' ']) {
            return Err(format!("node {:?}: not a node name", r.node));
        }
        Ok(r)
    }
}

impl ClusterRecord {
    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record always serialises")
    }

    /// Decodes the cluster record.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a cluster record: {e}"))
    }

    /// Why this node's settings differ from the cluster's, naming the keys.
    pub fn mismatch(&self, mine: &ClusterRecord, key: &str) -> Option<String> {
        if self.cluster_cidr != mine.cluster_cidr {
            return Some(format!(
                "peering.cluster_cidr {} differs from the cluster's {} ({key})",
                mine.cluster_cidr, self.cluster_cidr
            ));
        }
        if self.subnet_len != mine.subnet_len {
            return Some(format!(
                "etcd.subnet_len {} differs from the cluster's {} ({key})",
                mine.subnet_len, self.subnet_len
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterRecord {
        ClusterRecord {
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            subnet_len: 24,
        }
    }

    fn rec() -> NodeRecord {
        NodeRecord {
            name: "node-b".into(),
            address: "172.30.0.11".parse().unwrap(),
            subnet: "10.244.7.0/24".parse().unwrap(),
            vtep_mac: "02:5e:ac:1e:00:0b".into(),
            mode: ModeSetting::Auto,
            vxlan_vni: 4242,
            vxlan_port: 4789,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn node_record_round_trips() {
        let r = rec();
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(text.contains("\"subnet\":\"10.244.7.0/24\""), "{text}");
        assert!(text.contains("\"mode\":\"auto\""), "{text}");
        assert_eq!(
            NodeRecord::decode("node-b", text.as_bytes(), &cluster()),
            Ok(r)
        );
    }

    #[test]
    fn bad_node_records_say_why() {
        let c = cluster();
        let check = |f: &dyn Fn(&mut NodeRecord), want: &str| {
            let mut r = rec();
            f(&mut r);
            let e = NodeRecord::decode("node-b", &r.encode(), &c).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        };
        check(&|r| r.name = "node-x".into(), "differs from its key");
        check(
            &|r| r.subnet = "192.168.50.0/24".parse().unwrap(),
            "outside cluster_cidr 10.244.0.0/16",
        );
        check(
            &|r| r.subnet = "10.244.8.0/25".parse().unwrap(),
            "not a /24",
        );
        check(
            &|r| r.subnet = "10.244.8.1/24".parse().unwrap(),
            "not a network address",
        );
        check(
            &|r| {
                r.address = "10.244.7.9".parse().unwrap();
                r.vtep_mac = mac_text(vxlan_mac(r.address));
            },
            "inside its own subnet",
        );
        check(&|r| r.vtep_mac = "02:00:00:00:00:01".into(), "vtep_mac");
        check(
            &|r| r.address = "127.0.0.1".parse().unwrap(),
            "not a unicast",
        );
        let e = NodeRecord::decode("node-b", b"{garbage", &c).unwrap_err();
        assert!(e.starts_with("not a node record"), "{e}");
        let e = NodeRecord::decode("node-b", br#"{"name":"node-b"}"#, &c).unwrap_err();
        assert!(e.contains("missing field"), "{e}");
    }

    #[test]
    fn reservations_and_cluster_records() {
        let r = Reservation {
            node: "node-a".into(),
            reserved_at: 5,
        };
        assert_eq!(Reservation::decode(&r.encode()), Ok(r));
        assert!(Reservation::decode(br#"{"node":"a/b"}"#).is_err());
        assert!(Reservation::decode(b"x").is_err());
        let c = cluster();
        assert_eq!(ClusterRecord::decode(&c.encode()), Ok(c));
        let other = ClusterRecord {
            subnet_len: 25,
            ..c
        };
        let m = c.mismatch(&other, "/shimnet/config").unwrap();
        assert!(
            m.starts_with("etcd.subnet_len 25 differs from the cluster's 24"),
            "{m}"
        );
        assert_eq!(c.mismatch(&c, "k"), None);
    }
}
