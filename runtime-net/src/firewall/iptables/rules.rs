//! Pure builders of iptables rule specs for the iptables backend.
//!
//! Chains (all ours, created on demand):
//! - filter `SHIMNET-USER` (the administrator's, jumped first from `FORWARD`, created empty),
//!   then `SHIMNET-FORWARD` (jumped second) → `SHIMNET-FWD-IN` (rules for
//!   traffic into a bridge, all networks first) then `SHIMNET-FWD-OUT` (traffic out of a bridge),
//!   so one network's "out" accept can never pre-empt another network's isolation drop.
//! - nat `SHIMNET-POSTROUTING` (from `POSTROUTING`, position 1): masquerade, hairpin, localhost.
//! - nat `SHIMNET-DNAT` (from `PREROUTING` and `OUTPUT` with `-m addrtype --dst-type LOCAL`):
//!   published ports.
//!
//! Network rules carry `-m comment --comment shimnet:<net>`, port rules
//! `shimnet-port:<id>`. Specs are built from validated typed values only.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::firewall::{NetworkRules, PortRules};
use crate::types::{NetworkName, PortMapping};

/// Filter entry chain.
pub const FORWARD: &str = "SHIMNET-FORWARD";
/// Into-bridge rules.
pub const FWD_IN: &str = "SHIMNET-FWD-IN";
/// Out-of-bridge rules.
pub const FWD_OUT: &str = "SHIMNET-FWD-OUT";
/// Source NAT.
pub const POSTROUTING: &str = "SHIMNET-POSTROUTING";
/// Published ports.
pub const DNAT: &str = "SHIMNET-DNAT";

/// One chain we own: table, name, and the jumps into it `(builtin chain, rule)`.
pub struct OwnChain {
    /// Table.
    pub table: &'static str,
    /// Chain name.
    pub name: &'static str,
    /// Jumps from other chains, inserted at position 1.
    pub jumps: &'static [(&'static str, &'static str)],
}

/// Our chains, in creation order (a chain before the chains that jump to it is not needed by
/// iptables, but sub-chains come first so removal order is the reverse).
pub const CHAINS: &[OwnChain] = &[
    OwnChain {
        table: "filter",
        name: FWD_IN,
        jumps: &[],
    },
    OwnChain {
        table: "filter",
        name: FWD_OUT,
        jumps: &[],
    },
    OwnChain {
        table: "filter",
        name: FORWARD,
        jumps: &[("FORWARD", "-j SHIMNET-FORWARD")],
    },
    OwnChain {
        table: "nat",
        name: POSTROUTING,
        jumps: &[("POSTROUTING", "-j SHIMNET-POSTROUTING")],
    },
    OwnChain {
        table: "nat",
        name: DNAT,
        jumps: &[
            ("PREROUTING", "-m addrtype --dst-type LOCAL -j SHIMNET-DNAT"),
            ("OUTPUT", "-m addrtype --dst-type LOCAL -j SHIMNET-DNAT"),
        ],
    },
];

/// Fixed rules of `SHIMNET-FORWARD` (in order).
pub const FORWARD_RULES: &[&str] = &["-j SHIMNET-FWD-IN", "-j SHIMNET-FWD-OUT"];

/// Given the rules of `SHIMNET-FORWARD` (`iptables -S` specs), the `iptables-restore --noflush`
/// input that rewrites it to exactly [`FORWARD_RULES`] in one transaction; `None` when it holds
/// exactly those, in order (a missing, extra or reordered rule is drift: `SHIMNET-FWD-OUT` ahead
/// of `SHIMNET-FWD-IN` would let one network's accept pre-empt another's isolation drop).
pub fn forward_chain_fix(have: &[String]) -> Option<String> {
    if have
        .iter()
        .map(|r| r.trim())
        .eq(FORWARD_RULES.iter().copied())
    {
        return None;
    }
    let mut s = format!("*filter\n-F {FORWARD}\n");
    for r in FORWARD_RULES {
        s.push_str(&format!("-A {FORWARD} {r}\n"));
    }
    s.push_str("COMMIT\n");
    Some(s)
}

/// Where a rule lives: (ip6tables, table, chain).
pub type Place = (bool, &'static str, &'static str);

/// Whether the rules found (count per place, for one owner comment) are as many, in the same
/// chains, as the rules wanted: a rule deleted from (or added to) a network's chains from
/// outside makes the network drifted. Counts, not spec text, so `iptables -S`'s rewriting of a
/// spec cannot make an installed rule look missing.
pub fn same_counts(
    want: impl IntoIterator<Item = Rule>,
    have: impl IntoIterator<Item = (Place, usize)>,
) -> bool {
    let mut w: std::collections::BTreeMap<Place, usize> = Default::default();
    for r in want {
        *w.entry((r.v6, r.table, r.chain)).or_insert(0) += 1;
    }
    let h: std::collections::BTreeMap<Place, usize> =
        have.into_iter().filter(|(_, n)| *n > 0).collect();
    w == h
}

/// One rule: family, table, chain, spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// ip6tables when true.
    pub v6: bool,
    /// Table.
    pub table: &'static str,
    /// Chain.
    pub chain: &'static str,
    /// Spec as passed to `-A`.
    pub spec: String,
    /// Insert at position 1 instead of appending.
    pub first: bool,
}

/// Comment of a network's rules.
pub fn net_tag(n: &NetworkName) -> String {
    format!("shimnet:{n}")
}

/// Comment of an endpoint's port rules.
pub fn port_tag(id: &str) -> String {
    format!("shimnet-port:{id}")
}

fn prefix(n: &IpNetwork) -> String {
    format!("{}/{}", n.network(), n.prefix())
}

/// Every rule of one network, both families (v6 only when `subnet6` is set).
pub fn network_rules(r: &NetworkRules) -> Vec<Rule> {
    let mut out = Vec::new();
    let br = &r.bridge;
    let c = format!("-m comment --comment {}", net_tag(&r.name));
    let mut front = Vec::new();
    let mut fams = vec![(false, IpNetwork::V4(r.subnet4))];
    if let Some(s6) = r.subnet6 {
        fams.push((true, IpNetwork::V6(s6)));
    }
    for (v6, sub) in fams {
        let mut add = |table, chain, spec: String| {
            out.push(Rule {
                v6,
                table,
                chain,
                spec,
                first: false,
            })
        };
        add(
            "filter",
            FWD_IN,
            format!("-o {br} -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT"),
        );
        if !r.internal {
            add(
                "filter",
                FWD_IN,
                format!("-o {br} -m conntrack --ctstate DNAT {c} -j ACCEPT"),
            );
        }
        let icc = if r.icc { "ACCEPT" } else { "DROP" };
        add("filter", FWD_IN, format!("-i {br} -o {br} {c} -j {icc}"));
        // Bridged across an extension (seen here with br_netfilter): container ports there are
        // isolated when icc is off, so what passes is the way to the trunk.
        for x in &r.extensions {
            add("filter", FWD_IN, format!("-i {x} -o {x} {c} -j ACCEPT"));
        }
        if !r.internal {
            for a in r.allow_from.iter().filter(|a| a.is_ipv6() == v6) {
                add(
                    "filter",
                    FWD_IN,
                    format!("-s {} -o {br} {c} -j ACCEPT", prefix(a)),
                );
            }
        }
        add("filter", FWD_IN, format!("-o {br} {c} -j DROP"));
        let out_verdict = if r.internal { "DROP" } else { "ACCEPT" };
        add("filter", FWD_OUT, format!("-i {br} {c} -j {out_verdict}"));

        // Traffic into a shimnet bridge is never masqueraded except hairpin/localhost; these
        // rules must precede every network's masquerade (allow_from traffic between networks
        // keeps its source), so they are inserted at position 1 (see the end of this function).
        let s = prefix(&sub);
        let mut to_bridge = vec![format!(
            "-s {s} -o {br} -m conntrack --ctstate DNAT {c} -j MASQUERADE"
        )];
        if !v6 {
            to_bridge.push(format!("-s 127.0.0.0/8 -o {br} {c} -j MASQUERADE"));
        }
        to_bridge.push(format!("-o {br} {c} -j RETURN"));
        to_bridge.extend(r.extensions.iter().map(|x| format!("-o {x} {c} -j RETURN")));
        front.extend(to_bridge.into_iter().map(|spec| Rule {
            v6,
            table: "nat",
            chain: POSTROUTING,
            spec,
            first: true,
        }));
        if r.masquerade && !r.internal {
            for d in r.no_masquerade_to.iter().filter(|d| d.is_ipv6() == v6) {
                add(
                    "nat",
                    POSTROUTING,
                    format!("-s {s} -d {} {c} -j RETURN", prefix(d)),
                );
            }
            add("nat", POSTROUTING, format!("-s {s} {c} -j MASQUERADE"));
        }
    }
    // Each insert at position 1 goes before the previous one: insert in reverse.
    out.extend(front.into_iter().rev());
    out
}

/// DNAT rules of one endpoint. Specific host addresses are inserted first, wildcards appended.
pub fn port_rules(r: &PortRules) -> Vec<Rule> {
    let c = format!("-m comment --comment {}", port_tag(r.id.as_str()));
    let mut out = Vec::new();
    for m in &r.ports {
        let PortMapping {
            protocol: p,
            host_ip,
            host_port: hp,
            container_port: cp,
        } = *m;
        let to4 = format!("{}:{cp}", r.ip4);
        let to6 = r.ip6.map(|ip| format!("[{ip}]:{cp}"));
        let mut push = |v6: bool, dst: Option<IpAddr>, to: &str| {
            let d = dst
                .map(|d| format!("-d {d}/{} ", if v6 { 128 } else { 32 }))
                .unwrap_or_default();
            out.push(Rule {
                v6,
                table: "nat",
                chain: DNAT,
                spec: format!("{d}-p {p} -m {p} --dport {hp} {c} -j DNAT --to-destination {to}"),
                first: dst.is_some(),
            });
        };
        match host_ip {
            None => {
                push(false, None, &to4);
                if let Some(to6) = &to6 {
                    push(true, None, to6);
                }
            }
            Some(h @ IpAddr::V4(v4)) => push(false, (!v4.is_unspecified()).then_some(h), &to4),
            Some(h @ IpAddr::V6(v6)) => {
                if let Some(to6) = &to6 {
                    push(true, (!v6.is_unspecified()).then_some(h), to6);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IfName, Protocol};

    fn net() -> NetworkRules {
        NetworkRules {
            name: NetworkName::new("n1").unwrap(),
            bridge: IfName::new("br-n1").unwrap(),
            extensions: vec![],
            subnet4: "10.88.0.1/24".parse().unwrap(),
            subnet6: None,
            masquerade: true,
            icc: false,
            internal: false,
            no_masquerade_to: vec!["10.0.0.0/8".parse().unwrap()],
            allow_from: vec!["10.99.0.0/16".parse().unwrap()],
        }
    }

    #[test]
    fn network_golden() {
        let specs: Vec<String> = network_rules(&net())
            .iter()
            .map(|r| format!("{} {} {}", r.table, r.chain, r.spec))
            .collect();
        let c = "-m comment --comment shimnet:n1";
        assert_eq!(
            specs,
            [
                format!("filter SHIMNET-FWD-IN -o br-n1 -m conntrack --ctstate RELATED,ESTABLISHED {c} -j ACCEPT"),
                format!("filter SHIMNET-FWD-IN -o br-n1 -m conntrack --ctstate DNAT {c} -j ACCEPT"),
                format!("filter SHIMNET-FWD-IN -i br-n1 -o br-n1 {c} -j DROP"),
                format!("filter SHIMNET-FWD-IN -s 10.99.0.0/16 -o br-n1 {c} -j ACCEPT"),
                format!("filter SHIMNET-FWD-IN -o br-n1 {c} -j DROP"),
                format!("filter SHIMNET-FWD-OUT -i br-n1 {c} -j ACCEPT"),
                format!("nat SHIMNET-POSTROUTING -s 10.88.0.0/24 -d 10.0.0.0/8 {c} -j RETURN"),
                format!("nat SHIMNET-POSTROUTING -s 10.88.0.0/24 {c} -j MASQUERADE"),
                format!("nat SHIMNET-POSTROUTING -o br-n1 {c} -j RETURN"),
                format!("nat SHIMNET-POSTROUTING -s 127.0.0.0/8 -o br-n1 {c} -j MASQUERADE"),
                format!("nat SHIMNET-POSTROUTING -s 10.88.0.0/24 -o br-n1 -m conntrack --ctstate DNAT {c} -j MASQUERADE"),
            ]
        );
        assert!(network_rules(&net()).iter().all(|r| !r.v6));
    }

    #[test]
    fn extension_bridges_are_accepted_and_never_masqueraded_into() {
        let mut r = net();
        r.extensions = vec![IfName::new("snx0123456789a1").unwrap()];
        let rules = network_rules(&r);
        let has = |table: &str, chain: &str, spec: &str, first: bool| {
            rules.iter().any(|x| {
                x.table == table && x.chain == chain && x.spec.starts_with(spec) && x.first == first
            })
        };
        assert!(has(
            "filter",
            FWD_IN,
            "-i snx0123456789a1 -o snx0123456789a1 ",
            false
        ));
        assert!(has("nat", POSTROUTING, "-o snx0123456789a1 ", true));
        assert_eq!(rules.len(), network_rules(&net()).len() + 2);
    }

    #[test]
    fn forward_chain_is_exactly_its_two_jumps_in_order() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(forward_chain_fix(&l(FORWARD_RULES)), None);
        let fix = "*filter\n-F SHIMNET-FORWARD\n-A SHIMNET-FORWARD -j SHIMNET-FWD-IN\n\
                   -A SHIMNET-FORWARD -j SHIMNET-FWD-OUT\nCOMMIT\n";
        for drifted in [
            l(&[]),
            l(&["-j SHIMNET-FWD-OUT"]),
            l(&["-j SHIMNET-FWD-OUT", "-j SHIMNET-FWD-IN"]),
            l(&["-j SHIMNET-FWD-IN", "-j SHIMNET-FWD-OUT", "-j ACCEPT"]),
        ] {
            assert_eq!(
                forward_chain_fix(&drifted).as_deref(),
                Some(fix),
                "{drifted:?}"
            );
        }
    }

    #[test]
    fn a_network_with_a_rule_missing_is_drifted() {
        let want = network_rules(&net());
        let count = |rules: &[Rule]| {
            let mut m = std::collections::BTreeMap::<Place, usize>::new();
            for r in rules {
                *m.entry((r.v6, r.table, r.chain)).or_insert(0) += 1;
            }
            m
        };
        let all = count(&want);
        assert!(same_counts(want.clone(), all.clone()));
        // One rule of SHIMNET-FWD-IN deleted from outside.
        let mut fewer = all.clone();
        *fewer.get_mut(&(false, "filter", FWD_IN)).unwrap() -= 1;
        assert!(!same_counts(want.clone(), fewer));
        // Every filter rule gone, nat rules left: drifted too.
        let nat_only: Vec<_> = all
            .clone()
            .into_iter()
            .filter(|(p, _)| p.1 == "nat")
            .collect();
        assert!(!same_counts(want.clone(), nat_only));
        // A rule of this network in a chain where none belongs.
        let mut extra = all;
        extra.insert((false, "nat", DNAT), 1);
        assert!(!same_counts(want, extra));
        assert!(same_counts(Vec::new(), Vec::new()));
    }

    #[test]
    fn internal_v6_network() {
        let mut n = net();
        n.internal = true;
        n.subnet6 = Some("fd00:88::/64".parse().unwrap());
        let rules = network_rules(&n);
        assert!(rules.iter().any(|r| r.v6
            && r.spec
                .starts_with("-i br-n1 -m comment --comment shimnet:n1 -j DROP")));
        assert!(rules.iter().all(|r| !r.spec.ends_with("-j MASQUERADE")
            || r.spec.contains("DNAT")
            || r.spec.contains("127.0.0.0/8")));
        assert!(!rules.iter().any(|r| r.spec.contains("10.99.0.0")));
    }

    #[test]
    fn ports_golden() {
        let p = PortRules {
            id: IfName::new("snv1").unwrap(),
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
                    container_port: 53,
                },
            ],
        };
        let r = port_rules(&p);
        let c = "-m comment --comment shimnet-port:snv1";
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0].spec,
            format!("-p tcp -m tcp --dport 8080 {c} -j DNAT --to-destination 10.88.0.2:80")
        );
        assert_eq!(
            r[1].spec,
            format!("-p tcp -m tcp --dport 8080 {c} -j DNAT --to-destination [fd00:88::2]:80")
        );
        assert!(r[1].v6 && !r[0].first);
        assert_eq!(r[2].spec, format!("-d 192.0.2.1/32 -p udp -m udp --dport 53 {c} -j DNAT --to-destination 10.88.0.2:53"));
        assert!(r[2].first);
    }
}
