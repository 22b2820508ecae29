//! nftables executor of the encapsulation filter: table `ip shimnet-encap`.
//!
//! ```text
//! table ip shimnet-encap {
//!     counter vxlan_dropped / ipip_dropped
//!     set vxlan_peers / ipip_peers { type ipv4_addr; }
//!     chain input { type filter hook input priority -10; policy accept;
//!         udp dport <port> @th,96,24 <vni> ip saddr != @vxlan_peers counter name vxlan_dropped drop
//!         ip daddr <local> ip protocol 4 ip saddr != @ipip_peers counter name ipip_dropped drop
//!     }
//! }
//! ```
//!
//! `@th,96,24` is the VNI (bytes 4..7 of the VXLAN header after the 8-byte UDP header). Every
//! [`EncapFilter::apply`] is one transaction that re-declares the objects (a no-op for those
//! that exist: the named counters keep their values), replaces the chain's rules and replaces
//! the sets' elements; it repairs whatever was altered by hand on the way. A drop in this chain
//! is final whatever other chains accept.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::{EncapDrops, EncapFilter, EncapRules};
use crate::firewall::nft::ffi::NftContext;
use crate::firewall::{BackendKind, FirewallError};

/// The table of the filter.
pub const TABLE: &str = "ip shimnet-encap";

fn fail(op: &str, msg: impl Into<String>) -> FirewallError {
    FirewallError::Backend {
        backend: BackendKind::Nftables,
        op: op.to_string(),
        msg: msg.into(),
    }
}

fn elements(peers: &BTreeSet<Ipv4Addr>) -> String {
    peers
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The transaction that makes the table hold exactly `r`.
pub fn apply_cmds(r: &EncapRules) -> String {
    let t = TABLE;
    let mut s = String::new();
    let mut l = |line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    l(format!("add table {t}"));
    for mode in ["vxlan", "ipip"] {
        l(format!("add counter {t} {mode}_dropped"));
        l(format!("add set {t} {mode}_peers {{ type ipv4_addr; }}"));
    }
    l(format!(
        "add chain {t} input {{ type filter hook input priority -10; policy accept; }}"
    ));
    l(format!("flush chain {t} input"));
    let local = r.local;
    if let Some(v) = &r.vxlan {
        l(format!(
            "add rule {t} input udp dport {} @th,96,24 {} ip saddr != @vxlan_peers counter name vxlan_dropped drop",
            v.port, v.vni
        ));
    }
    if r.ipip.is_some() {
        l(format!(
            "add rule {t} input ip daddr {local} ip protocol 4 ip saddr != @ipip_peers counter name ipip_dropped drop"
        ));
    }
    let empty = BTreeSet::new();
    let sets = [
        ("vxlan", r.vxlan.as_ref().map_or(&empty, |v| &v.peers)),
        ("ipip", r.ipip.as_ref().unwrap_or(&empty)),
    ];
    for (mode, peers) in sets {
        l(format!("flush set {t} {mode}_peers"));
        if !peers.is_empty() {
            l(format!(
                "add element {t} {mode}_peers {{ {} }}",
                elements(peers)
            ));
        }
    }
    s
}

/// Deletes the table, succeeding when it does not exist.
pub fn remove_cmds() -> String {
    format!("add table {TABLE}\ndelete table {TABLE}\n")
}

/// The drop counters in a JSON listing of the table (`list table ip shimnet-encap`).
pub fn parse_drops(json: &str) -> Result<EncapDrops, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| format!("bad nft JSON: {e}"))?;
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or("nft JSON without an \"nftables\" array")?;
    let mut d = EncapDrops::default();
    for c in items.iter().filter_map(|i| i.get("counter")) {
        let packets = c.get("packets").and_then(Value::as_u64).unwrap_or(0);
        match c.get("name").and_then(Value::as_str) {
            Some("vxlan_dropped") => d.vxlan = packets,
            Some("ipip_dropped") => d.ipip = packets,
            _ => {}
        }
    }
    Ok(d)
}

/// The nftables executor.
pub struct NftEncap {
    ctx: NftContext,
}

impl NftEncap {
    /// Opens a libnftables context in the calling thread's network namespace.
    pub fn new() -> Result<Self, FirewallError> {
        let ctx = NftContext::new().map_err(|e| fail("open", e))?;
        ctx.run("list tables", false)
            .map_err(|e| fail("probe", e))?;
        Ok(NftEncap { ctx })
    }
}

impl EncapFilter for NftEncap {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn apply(&self, rules: &EncapRules) -> Result<(), FirewallError> {
        self.ctx
            .run(&apply_cmds(rules), false)
            .map(drop)
            .map_err(|e| fail("apply encapsulation filter", e))
    }

    fn dropped(&self) -> Result<EncapDrops, FirewallError> {
        let op = "read encapsulation drop counters";
        let tables = self
            .ctx
            .run("list tables", false)
            .map_err(|e| fail(op, e))?;
        let want = format!("table {TABLE}");
        if !tables.lines().any(|l| l.trim() == want) {
            return Ok(EncapDrops::default());
        }
        let json = self
            .ctx
            .run(&format!("list table {TABLE}"), true)
            .map_err(|e| fail(op, e))?;
        parse_drops(&json).map_err(|e| fail(op, e))
    }

    fn remove(&self) -> Result<(), FirewallError> {
        self.ctx
            .run(&remove_cmds(), false)
            .map(drop)
            .map_err(|e| fail("remove encapsulation filter", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::encap::VxlanGuard;

    fn rules() -> EncapRules {
        EncapRules {
            local: "192.168.1.10".parse().unwrap(),
            vxlan: Some(VxlanGuard {
                port: 4789,
                vni: 4242,
                peers: [
                    "192.168.1.12".parse().unwrap(),
                    "192.168.1.11".parse().unwrap(),
                ]
                .into(),
            }),
            ipip: Some(BTreeSet::new()),
        }
    }

    #[test]
    fn golden_transaction() {
        assert_eq!(
            apply_cmds(&rules()),
            "add table ip shimnet-encap\n\
             add counter ip shimnet-encap vxlan_dropped\n\
             add set ip shimnet-encap vxlan_peers { type ipv4_addr; }\n\
             add counter ip shimnet-encap ipip_dropped\n\
             add set ip shimnet-encap ipip_peers { type ipv4_addr; }\n\
             add chain ip shimnet-encap input { type filter hook input priority -10; policy accept; }\n\
             flush chain ip shimnet-encap input\n\
             add rule ip shimnet-encap input udp dport 4789 @th,96,24 4242 ip saddr != @vxlan_peers counter name vxlan_dropped drop\n\
             add rule ip shimnet-encap input ip daddr 192.168.1.10 ip protocol 4 ip saddr != @ipip_peers counter name ipip_dropped drop\n\
             flush set ip shimnet-encap vxlan_peers\n\
             add element ip shimnet-encap vxlan_peers { 192.168.1.11, 192.168.1.12 }\n\
             flush set ip shimnet-encap ipip_peers\n"
        );
    }

    #[test]
    fn unguarded_modes_have_no_rule_and_an_empty_set() {
        let mut r = rules();
        r.ipip = None;
        r.vxlan = None;
        let t = apply_cmds(&r);
        assert!(!t.contains("add rule"), "{t}");
        assert!(!t.contains("add element"), "{t}");
        assert!(t.contains("flush set ip shimnet-encap vxlan_peers\n"));
        assert_eq!(
            remove_cmds(),
            "add table ip shimnet-encap\ndelete table ip shimnet-encap\n"
        );
    }

    #[test]
    fn counters_from_a_listing() {
        // Captured from `nft -j list table ip shimnet-encap` (nftables 1.0.6), trimmed.
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "shimnet-encap", "handle": 1}}, {"counter": {"family": "ip", "name": "vxlan_dropped", "table": "shimnet-encap", "handle": 2, "packets": 200, "bytes": 23600}}, {"counter": {"family": "ip", "name": "ipip_dropped", "table": "shimnet-encap", "handle": 4, "packets": 3, "bytes": 150}}, {"set": {"family": "ip", "name": "vxlan_peers", "table": "shimnet-encap", "type": "ipv4_addr", "handle": 3, "elem": ["172.30.0.11"]}}]}"#;
        assert_eq!(
            parse_drops(json).unwrap(),
            EncapDrops {
                vxlan: 200,
                ipip: 3
            }
        );
        assert!(parse_drops("{}").is_err());
    }
}
