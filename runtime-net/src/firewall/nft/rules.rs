//! Pure builders of nft command text for table `inet shimnet`.
//!
//! Every string here is assembled from validated, typed values only ([`IfName`],
//! [`NetworkName`], ipnetwork prefixes, addresses, `u16` ports), so nothing from the outside can
//! inject syntax. Each builder returns plain text; [`super::NftBackend`] runs it as one batch.
//!
//! Layout (see `base()`):
//! - `forward` (filter): `oifname vmap @fwd_in`, then `iifname vmap @fwd_out`; the per-network
//!   chains `fwdin/<net>` and `fwdout/<net>` decide.
//! - `postrouting` (srcnat): localhost → bridge masquerade, then `ip saddr vmap @nat4` /
//!   `ip6 saddr vmap @nat6` into `nat4/<net>` / `nat6/<net>`.
//! - `prerouting` (dstnat) and `output` (nat, -100): `fib daddr type local jump ports`; chain
//!   `ports` DNATs through the maps `ports4`, `ports4h`, `ports6`, `ports6h`.
//!
//! Map and set elements carry `comment "<owner>"` (network name or endpoint id).

use std::fmt::Write as _;
use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

use crate::firewall::{NetworkRules, PortRules};
use crate::types::{IfName, NetworkName, PortMapping};

/// The table every shimnet object lives in.
pub const TABLE: &str = "inet shimnet";

/// Sets/maps holding network elements (commented with the network name).
pub const NETWORK_SETS: &[&str] = &["fwd_in", "fwd_out", "nat4", "nat6", "bridges"];
/// Maps holding published-port elements (commented with the endpoint id).
pub const PORT_MAPS: &[&str] = &["ports4", "ports4h", "ports6", "ports6h"];
/// Prefixes of the per-network chains: `<prefix><network>`.
pub const NETWORK_CHAIN_PREFIXES: &[&str] = &["fwdin/", "fwdout/", "nat4/", "nat6/"];

/// Whether the keys of `set` are interface names (rendered quoted).
pub fn set_has_ifname_keys(set: &str) -> bool {
    matches!(set, "fwd_in" | "fwd_out" | "bridges")
}

/// Names of the chains [`base`] creates.
pub fn base_chains() -> Vec<String> {
    let prefix = format!("add chain {TABLE} ");
    base()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Base objects: table, maps, sets, base chains and their (flushed, re-added) rules.
///
/// Idempotent: run any number of times, the result is the same.
pub fn base() -> String {
    let t = TABLE;
    let mut s = String::new();
    let mut l = |line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    l(format!("add table {t}"));
    l(format!("add map {t} fwd_in {{ type ifname : verdict; }}"));
    l(format!("add map {t} fwd_out {{ type ifname : verdict; }}"));
    l(format!(
        "add map {t} nat4 {{ type ipv4_addr : verdict; flags interval; }}"
    ));
    l(format!(
        "add map {t} nat6 {{ type ipv6_addr : verdict; flags interval; }}"
    ));
    l(format!("add set {t} bridges {{ type ifname; }}"));
    l(format!(
        "add map {t} ports4 {{ type inet_proto . inet_service : ipv4_addr . inet_service; }}"
    ));
    l(format!("add map {t} ports4h {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; }}"));
    l(format!(
        "add map {t} ports6 {{ type inet_proto . inet_service : ipv6_addr . inet_service; }}"
    ));
    l(format!("add map {t} ports6h {{ type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }}"));
    l(format!(
        "add chain {t} forward {{ type filter hook forward priority filter; policy accept; }}"
    ));
    l(format!(
        "add chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
    ));
    l(format!(
        "add chain {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
    ));
    l(format!(
        "add chain {t} output {{ type nat hook output priority -100; policy accept; }}"
    ));
    l(format!("add chain {t} ports"));
    for c in ["forward", "postrouting", "prerouting", "output", "ports"] {
        l(format!("flush chain {t} {c}"));
    }
    l(format!("add rule {t} forward oifname vmap @fwd_in"));
    l(format!("add rule {t} forward iifname vmap @fwd_out"));
    l(format!(
        "add rule {t} postrouting ip saddr 127.0.0.0/8 oifname @bridges masquerade"
    ));
    l(format!("add rule {t} postrouting ip saddr vmap @nat4"));
    l(format!("add rule {t} postrouting ip6 saddr vmap @nat6"));
    l(format!(
        "add rule {t} prerouting fib daddr type local jump ports"
    ));
    l(format!(
        "add rule {t} output fib daddr type local jump ports"
    ));
    l(format!("add rule {t} ports meta nfproto ipv4 dnat ip addr . port to ip daddr . meta l4proto . th dport map @ports4h"));
    l(format!("add rule {t} ports meta nfproto ipv4 dnat ip addr . port to meta l4proto . th dport map @ports4"));
    l(format!("add rule {t} ports meta nfproto ipv6 dnat ip6 addr . port to ip6 daddr . meta l4proto . th dport map @ports6h"));
    l(format!("add rule {t} ports meta nfproto ipv6 dnat ip6 addr . port to meta l4proto . th dport map @ports6"));
    s
}

/// `a.b.c.d/len` with host bits cleared.
pub fn net4(n: &Ipv4Network) -> String {
    format!("{}/{}", n.network(), n.prefix())
}

/// `x::/len` with host bits cleared.
pub fn net6(n: &Ipv6Network) -> String {
    format!("{}/{}", n.network(), n.prefix())
}

/// Anonymous set `{ a, b }` of the v4 (or v6) members of `nets`; `None` when there are none.
fn anon_set(nets: &[IpNetwork], v6: bool) -> Option<String> {
    let items: Vec<String> = nets
        .iter()
        .filter_map(|n| match (n, v6) {
            (IpNetwork::V4(n), false) => Some(net4(n)),
            (IpNetwork::V6(n), true) => Some(net6(n)),
            _ => None,
        })
        .collect();
    (!items.is_empty()).then(|| format!("{{ {} }}", items.join(", ")))
}

/// Name of a per-network chain (`prefix` from [`NETWORK_CHAIN_PREFIXES`]).
pub fn chain(prefix: &str, net: &NetworkName) -> String {
    format!("{prefix}{net}")
}

/// Per-network chain names wanted for `r`.
pub fn network_chains(r: &NetworkRules) -> Vec<String> {
    let mut v = vec![
        chain("fwdin/", &r.name),
        chain("fwdout/", &r.name),
        chain("nat4/", &r.name),
    ];
    if r.subnet6.is_some() {
        v.push(chain("nat6/", &r.name));
    }
    v
}

/// Rules of the per-network chains and the map elements that lead to them (the chains are
/// assumed to exist and be empty).
pub fn network_body(r: &NetworkRules) -> String {
    let t = TABLE;
    let n = &r.name;
    let br = &r.bridge;
    let mut s = String::new();
    let mut l = |line: String| {
        s.push_str(&line);
        s.push('\n');
    };
    // Into the bridge.
    let fin = chain("fwdin/", n);
    l(format!(
        "add rule {t} {fin} ct state established,related accept"
    ));
    if !r.internal {
        l(format!("add rule {t} {fin} ct status dnat accept"));
    }
    let icc = if r.icc { "accept" } else { "drop" };
    l(format!("add rule {t} {fin} iifname \"{br}\" {icc}"));
    if !r.internal {
        if let Some(set) = anon_set(&r.allow_from, false) {
            l(format!("add rule {t} {fin} ip saddr {set} accept"));
        }
        if let Some(set) = anon_set(&r.allow_from, true) {
            l(format!("add rule {t} {fin} ip6 saddr {set} accept"));
        }
    }
    l(format!("add rule {t} {fin} drop"));
    // Out of the bridge (to anything but the bridge itself).
    let fout = chain("fwdout/", n);
    let out = if r.internal { "drop" } else { "accept" };
    l(format!("add rule {t} {fout} {out}"));
    // Source NAT.
    for v6 in [false, true] {
        if v6 && r.subnet6.is_none() {
            continue;
        }
        let (c, fam) = if v6 {
            (chain("nat6/", n), "ip6")
        } else {
            (chain("nat4/", n), "ip")
        };
        l(format!(
            "add rule {t} {c} oifname \"{br}\" ct status dnat masquerade"
        ));
        // Never masquerade into a shimnet bridge (own or, with allow_from, another network's).
        l(format!("add rule {t} {c} oifname @bridges return"));
        if r.masquerade && !r.internal {
            if let Some(set) = anon_set(&r.no_masquerade_to, v6) {
                l(format!("add rule {t} {c} {fam} daddr {set} return"));
            }
            l(format!("add rule {t} {c} masquerade"));
        }
    }
    // Elements.
    l(format!(
        "add element {t} fwd_in {{ \"{br}\" comment \"{n}\" : jump {fin} }}"
    ));
    l(format!(
        "add element {t} fwd_out {{ \"{br}\" comment \"{n}\" : jump {fout} }}"
    ));
    l(format!(
        "add element {t} bridges {{ \"{br}\" comment \"{n}\" }}"
    ));
    for x in &r.extensions {
        l(format!(
            "add element {t} bridges {{ \"{x}\" comment \"{n}\" }}"
        ));
    }
    let s4 = net4(&r.subnet4);
    l(format!(
        "add element {t} nat4 {{ {s4} comment \"{n}\" : jump nat4/{n} }}"
    ));
    if let Some(s6) = &r.subnet6 {
        let s6 = net6(s6);
        l(format!(
            "add element {t} nat6 {{ {s6} comment \"{n}\" : jump nat6/{n} }}"
        ));
    }
    s
}

/// One element of a port map: which map, its key, its data (both in nft syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortElem {
    /// Map name (one of [`PORT_MAPS`]).
    pub map: &'static str,
    /// Key, e.g. `tcp . 8080` or `192.0.2.1 . tcp . 8080`.
    pub key: String,
    /// Data, e.g. `10.0.0.2 . 80`.
    pub data: String,
}

/// The map elements of one endpoint's published ports.
///
/// A mapping without host address (or with an unspecified one) goes to `ports4` (and `ports6`
/// when the container has IPv6); a specific host address goes to `ports4h`/`ports6h`. IPv6 host
/// addresses are skipped when the container has no IPv6 address.
pub fn port_elems(r: &PortRules) -> Vec<PortElem> {
    let mut v = Vec::new();
    for m in &r.ports {
        let PortMapping {
            protocol: p,
            host_ip,
            host_port: hp,
            container_port: cp,
        } = *m;
        let d4 = format!("{} . {cp}", r.ip4);
        let d6 = r.ip6.map(|ip| format!("{ip} . {cp}"));
        match host_ip {
            None => {
                v.push(PortElem {
                    map: "ports4",
                    key: format!("{p} . {hp}"),
                    data: d4,
                });
                if let Some(d6) = d6 {
                    v.push(PortElem {
                        map: "ports6",
                        key: format!("{p} . {hp}"),
                        data: d6,
                    });
                }
            }
            Some(IpAddr::V4(h)) if h.is_unspecified() => {
                v.push(PortElem {
                    map: "ports4",
                    key: format!("{p} . {hp}"),
                    data: d4,
                });
            }
            Some(IpAddr::V4(h)) => {
                v.push(PortElem {
                    map: "ports4h",
                    key: format!("{h} . {p} . {hp}"),
                    data: d4,
                });
            }
            Some(IpAddr::V6(h)) => {
                if let Some(d6) = d6 {
                    if h.is_unspecified() {
                        v.push(PortElem {
                            map: "ports6",
                            key: format!("{p} . {hp}"),
                            data: d6,
                        });
                    } else {
                        v.push(PortElem {
                            map: "ports6h",
                            key: format!("{h} . {p} . {hp}"),
                            data: d6,
                        });
                    }
                }
            }
        }
    }
    v
}

/// `add element` commands for the ports of one endpoint, commented with its id.
pub fn add_ports(r: &PortRules) -> String {
    let mut s = String::new();
    for e in port_elems(r) {
        let _ = writeln!(
            s,
            "add element {TABLE} {} {{ {} comment \"{}\" : {} }}",
            e.map, e.key, r.id, e.data
        );
    }
    s
}

/// Removes exactly the elements of `r`, succeeding when some are absent: each element is first
/// added (a no-op when it is there) and then deleted, in one transaction.
pub fn remove_ports(r: &PortRules) -> String {
    let mut s = add_ports(r);
    for e in port_elems(r) {
        let _ = writeln!(s, "delete element {TABLE} {} {{ {} }}", e.map, e.key);
    }
    s
}

/// `delete element` for one element given in nft syntax.
pub fn delete_element(set: &str, key: &str) -> String {
    format!("delete element {TABLE} {set} {{ {key} }}\n")
}

/// `flush chain` + `delete chain`.
pub fn delete_chain(name: &str) -> String {
    format!("flush chain {TABLE} {name}\ndelete chain {TABLE} {name}\n")
}

/// `add chain` + `flush chain` (creates it or empties it).
pub fn reset_chain(name: &str) -> String {
    format!("add chain {TABLE} {name}\nflush chain {TABLE} {name}\n")
}

/// Deletes the whole table, succeeding when it does not exist.
pub fn delete_table() -> String {
    format!("add table {TABLE}\ndelete table {TABLE}\n")
}

/// The owner network of a per-network chain name, if it is one.
pub fn chain_owner(chain: &str) -> Option<NetworkName> {
    NETWORK_CHAIN_PREFIXES
        .iter()
        .find_map(|p| chain.strip_prefix(p))
        .and_then(|n| NetworkName::new(n).ok())
}

/// An element id as an endpoint id, if valid.
pub fn port_owner(comment: &str) -> Option<IfName> {
    IfName::new(comment).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Protocol;

    fn net(icc: bool, internal: bool, v6: bool) -> NetworkRules {
        NetworkRules {
            name: NetworkName::new("n1").unwrap(),
            bridge: IfName::new("br-n1").unwrap(),
            extensions: vec![],
            subnet4: "10.88.0.1/24".parse().unwrap(),
            subnet6: v6.then(|| "fd00:88::1/64".parse().unwrap()),
            masquerade: true,
            icc,
            internal,
            no_masquerade_to: vec!["10.0.0.0/8".parse().unwrap(), "fd01::/16".parse().unwrap()],
            allow_from: vec!["10.99.0.0/16".parse().unwrap()],
        }
    }

    #[test]
    fn base_is_golden() {
        let b = base();
        assert!(b.starts_with("add table inet shimnet\n"));
        assert!(b.contains("add chain inet shimnet forward { type filter hook forward priority filter; policy accept; }\n"));
        assert_eq!(
            base_chains(),
            ["forward", "postrouting", "prerouting", "output", "ports"]
        );
        assert!(
            b.contains("flush chain inet shimnet forward\nflush chain inet shimnet postrouting\n")
        );
        assert!(b.contains("add rule inet shimnet forward oifname vmap @fwd_in\nadd rule inet shimnet forward iifname vmap @fwd_out\n"));
        assert!(b.contains("add rule inet shimnet ports meta nfproto ipv4 dnat ip addr . port to meta l4proto . th dport map @ports4\n"));
        assert_eq!(b.lines().count(), 31);
    }

    #[test]
    fn extension_bridges_are_never_masqueraded_into() {
        let mut r = net(true, false, false);
        r.extensions = vec![
            IfName::new("snx0123456789a1").unwrap(),
            IfName::new("snx0123456789a2").unwrap(),
        ];
        let body = network_body(&r);
        for x in &r.extensions {
            let line = format!("add element inet shimnet bridges {{ \"{x}\" comment \"n1\" }}\n");
            assert!(body.contains(&line), "{body}");
        }
        assert_eq!(
            body.lines().count(),
            network_body(&net(true, false, false)).lines().count() + 2
        );
    }

    #[test]
    fn network_golden_v4_icc() {
        let r = net(true, false, false);
        assert_eq!(network_chains(&r), ["fwdin/n1", "fwdout/n1", "nat4/n1"]);
        assert_eq!(
            network_body(&r),
            "add rule inet shimnet fwdin/n1 ct state established,related accept\n\
             add rule inet shimnet fwdin/n1 ct status dnat accept\n\
             add rule inet shimnet fwdin/n1 iifname \"br-n1\" accept\n\
             add rule inet shimnet fwdin/n1 ip saddr { 10.99.0.0/16 } accept\n\
             add rule inet shimnet fwdin/n1 drop\n\
             add rule inet shimnet fwdout/n1 accept\n\
             add rule inet shimnet nat4/n1 oifname \"br-n1\" ct status dnat masquerade\n\
             add rule inet shimnet nat4/n1 oifname @bridges return\n\
             add rule inet shimnet nat4/n1 ip daddr { 10.0.0.0/8 } return\n\
             add rule inet shimnet nat4/n1 masquerade\n\
             add element inet shimnet fwd_in { \"br-n1\" comment \"n1\" : jump fwdin/n1 }\n\
             add element inet shimnet fwd_out { \"br-n1\" comment \"n1\" : jump fwdout/n1 }\n\
             add element inet shimnet bridges { \"br-n1\" comment \"n1\" }\n\
             add element inet shimnet nat4 { 10.88.0.0/24 comment \"n1\" : jump nat4/n1 }\n"
        );
    }

    #[test]
    fn network_golden_internal_noicc_v6() {
        let r = net(false, true, true);
        assert_eq!(network_chains(&r).len(), 4);
        assert_eq!(
            network_body(&r),
            "add rule inet shimnet fwdin/n1 ct state established,related accept\n\
             add rule inet shimnet fwdin/n1 iifname \"br-n1\" drop\n\
             add rule inet shimnet fwdin/n1 drop\n\
             add rule inet shimnet fwdout/n1 drop\n\
             add rule inet shimnet nat4/n1 oifname \"br-n1\" ct status dnat masquerade\n\
             add rule inet shimnet nat4/n1 oifname @bridges return\n\
             add rule inet shimnet nat6/n1 oifname \"br-n1\" ct status dnat masquerade\n\
             add rule inet shimnet nat6/n1 oifname @bridges return\n\
             add element inet shimnet fwd_in { \"br-n1\" comment \"n1\" : jump fwdin/n1 }\n\
             add element inet shimnet fwd_out { \"br-n1\" comment \"n1\" : jump fwdout/n1 }\n\
             add element inet shimnet bridges { \"br-n1\" comment \"n1\" }\n\
             add element inet shimnet nat4 { 10.88.0.0/24 comment \"n1\" : jump nat4/n1 }\n\
             add element inet shimnet nat6 { fd00:88::/64 comment \"n1\" : jump nat6/n1 }\n"
        );
    }

    #[test]
    fn network_v6_masquerade_uses_v6_exceptions() {
        let b = network_body(&net(true, false, true));
        assert!(b.contains("add rule inet shimnet nat6/n1 ip6 daddr { fd01::/16 } return\n"));
        assert!(b.contains("add rule inet shimnet nat6/n1 masquerade\n"));
    }

    fn ports() -> PortRules {
        PortRules {
            id: IfName::new("snv0123").unwrap(),
            network: NetworkName::new("n1").unwrap(),
            bridge: IfName::new("br-n1").unwrap(),
            subnet4: "10.88.0.0/24".parse().unwrap(),
            ip4: "10.88.0.2".parse().unwrap(),
            ip6: Some("fd00:88::2".parse().unwrap()),
            ports: vec![
                PortMapping {
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                },
                PortMapping {
                    protocol: Protocol::Udp,
                    host_ip: Some("192.0.2.1".parse().unwrap()),
                    host_port: 53,
                    container_port: 5353,
                },
                PortMapping {
                    protocol: Protocol::Sctp,
                    host_ip: Some("2001:db8::1".parse().unwrap()),
                    host_port: 9,
                    container_port: 9,
                },
                PortMapping {
                    protocol: Protocol::Tcp,
                    host_ip: Some("0.0.0.0".parse().unwrap()),
                    host_port: 81,
                    container_port: 81,
                },
            ],
        }
    }

    #[test]
    fn ports_golden() {
        assert_eq!(
            add_ports(&ports()),
            "add element inet shimnet ports4 { tcp . 8080 comment \"snv0123\" : 10.88.0.2 . 80 }\n\
             add element inet shimnet ports6 { tcp . 8080 comment \"snv0123\" : fd00:88::2 . 80 }\n\
             add element inet shimnet ports4h { 192.0.2.1 . udp . 53 comment \"snv0123\" : 10.88.0.2 . 5353 }\n\
             add element inet shimnet ports6h { 2001:db8::1 . sctp . 9 comment \"snv0123\" : fd00:88::2 . 9 }\n\
             add element inet shimnet ports4 { tcp . 81 comment \"snv0123\" : 10.88.0.2 . 81 }\n"
        );
        let rm = remove_ports(&ports());
        assert!(rm.ends_with(
            "delete element inet shimnet ports6h { 2001:db8::1 . sctp . 9 }\n\
             delete element inet shimnet ports4 { tcp . 81 }\n"
        ));
        assert_eq!(rm.lines().count(), 10);
    }

    #[test]
    fn v6_host_ip_skipped_without_container_v6() {
        let mut p = ports();
        p.ip6 = None;
        assert!(port_elems(&p)
            .iter()
            .all(|e| e.map == "ports4" || e.map == "ports4h"));
        assert_eq!(port_elems(&p).len(), 3);
    }

    #[test]
    fn owners() {
        assert_eq!(chain_owner("fwdin/my-net.1").unwrap().as_str(), "my-net.1");
        assert_eq!(chain_owner("nat6/x").unwrap().as_str(), "x");
        assert!(chain_owner("forward").is_none());
        assert!(chain_owner("fwdin/").is_none());
        assert!(port_owner("snv1").is_some());
        assert!(port_owner("bad name").is_none());
        assert_eq!(
            delete_table(),
            "add table inet shimnet\ndelete table inet shimnet\n"
        );
    }
}
