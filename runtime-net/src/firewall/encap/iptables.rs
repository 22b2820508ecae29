//! iptables executor of the encapsulation filter, table `filter`:
//!
//! ```text
//! -A INPUT -j SHIMNET-ENCAP                                   (position 1)
//! -A SHIMNET-ENCAP -m comment --comment "shimnet-encap:<digest of the rules below>"
//! -A SHIMNET-ENCAP -s <peer>/32 -p udp -m udp --dport <port> -j RETURN
//! -A SHIMNET-ENCAP -p udp -m udp --dport <port> -m u32 --u32 "<VNI>" -j SHIMNET-ENCAP-VXLAN-DROP
//! -A SHIMNET-ENCAP -s <peer>/32 -d <local>/32 -p 4 -j RETURN
//! -A SHIMNET-ENCAP -d <local>/32 -p 4 -j SHIMNET-ENCAP-IPIP-DROP
//! -A SHIMNET-ENCAP-VXLAN-DROP -m comment --comment "shimnet-encap-drop:vxlan" -j DROP
//! -A SHIMNET-ENCAP-IPIP-DROP -m comment --comment "shimnet-encap-drop:ipip" -j DROP
//! ```
//!
//! A change is one `iptables-restore --noflush` (one commit of table `filter`): `SHIMNET-ENCAP`
//! is declared, hence emptied, and refilled in the same commit. The two drop chains are declared
//! only when missing or altered, so their rule counters — the drop counters — survive every
//! change of the peer set. [`EncapFilter::apply`] first reads `iptables-save -c -t filter` and
//! writes nothing when the marker, the rule count, the drop chains and the jump are as wanted.
//! The u32 match reads the VNI: `0>>22&0x3C` is the IPv4 header length, `@12` moves past it to
//! byte 12 of the UDP datagram (8 bytes of UDP header + 4 of VXLAN flags), `>>8` drops the
//! reserved byte after the 24-bit VNI.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{EncapDrops, EncapFilter, EncapRules};
use crate::firewall::{ipt, BackendKind, FirewallError};

/// The chain that judges encapsulated packets.
pub const CHAIN: &str = "SHIMNET-ENCAP";
/// Drop chains: (encapsulation, chain, comment of its one rule).
pub const DROP_CHAINS: [(&str, &str, &str); 2] = [
    (
        "vxlan",
        "SHIMNET-ENCAP-VXLAN-DROP",
        "shimnet-encap-drop:vxlan",
    ),
    ("ipip", "SHIMNET-ENCAP-IPIP-DROP", "shimnet-encap-drop:ipip"),
];
/// The jump from `INPUT`.
pub const JUMP: &str = "-j SHIMNET-ENCAP";

fn fail(op: &str, msg: impl Into<String>) -> FirewallError {
    FirewallError::Backend {
        backend: BackendKind::Iptables,
        op: op.to_string(),
        msg: msg.into(),
    }
}

/// The rules of [`CHAIN`] after its marker, as `-A` specs.
pub fn chain_rules(r: &EncapRules) -> Vec<String> {
    let d = format!("-d {}/32", r.local);
    let mut v = Vec::new();
    if let Some(x) = &r.vxlan {
        let udp = format!("-p udp -m udp --dport {}", x.port);
        for p in &x.peers {
            v.push(format!("-s {p}/32 {udp} -j RETURN"));
        }
        v.push(format!(
            "{udp} -m u32 --u32 \"0>>22&0x3C@12>>8={}\" -j {}",
            x.vni, DROP_CHAINS[0].1
        ));
    }
    if let Some(peers) = &r.ipip {
        for p in peers {
            v.push(format!("-s {p}/32 {d} -p 4 -j RETURN"));
        }
        v.push(format!("{d} -p 4 -j {}", DROP_CHAINS[1].1));
    }
    v
}

/// The marker comment naming `rules` (first 16 hex digits of their SHA-256).
pub fn marker(rules: &[String]) -> String {
    let mut h = Sha256::new();
    for r in rules {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    let hex: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("shimnet-encap:{hex}")
}

/// One rule as `iptables-save -c` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRule {
    /// Packet counter.
    pub packets: u64,
    /// The spec after `-A <chain> `.
    pub spec: String,
}

/// What `iptables-save -c -t filter` shows of `INPUT` and the filter's chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Saved {
    /// Rules by chain; a chain that exists has an entry, possibly empty.
    pub chains: BTreeMap<String, Vec<SavedRule>>,
}

fn ours(chain: &str) -> bool {
    chain == "INPUT" || chain == CHAIN || DROP_CHAINS.iter().any(|(_, c, _)| *c == chain)
}

/// Parses `iptables-save -c -t filter` (legacy or nf_tables variant).
pub fn parse_save(text: &str) -> Saved {
    let mut s = Saved::default();
    for line in text.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if ours(name) {
                s.chains.entry(name.to_string()).or_default();
            }
            continue;
        }
        let (packets, rest) = match line.strip_prefix('[') {
            Some(r) => match r.split_once(']') {
                Some((c, rest)) => (
                    c.split(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    rest.trim_start(),
                ),
                None => continue,
            },
            None => (0, line),
        };
        let Some(rest) = rest.strip_prefix("-A ") else {
            continue;
        };
        let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
        if ours(chain) {
            s.chains
                .entry(chain.to_string())
                .or_default()
                .push(SavedRule {
                    packets,
                    spec: spec.to_string(),
                });
        }
    }
    s
}

/// The `--comment` value of a saved spec.
fn comment(spec: &str) -> Option<&str> {
    crate::firewall::ipt::comment_of(spec)
}

fn drop_chain_ok(s: &Saved, chain: &str, note: &str) -> bool {
    matches!(s.chains.get(chain).map(Vec::as_slice),
        Some([r]) if comment(&r.spec) == Some(note) && r.spec.ends_with("-j DROP"))
}

fn jumps(s: &Saved) -> usize {
    s.chains
        .get("INPUT")
        .map_or(0, |r| r.iter().filter(|r| r.spec == JUMP).count())
}

/// The `iptables-restore --noflush` input that makes the filter exactly `r`, or `None` when
/// `saved` shows it already.
pub fn restore_input(r: &EncapRules, saved: &Saved) -> Option<String> {
    let rules = chain_rules(r);
    let mark = marker(&rules);
    let chain_ok = saved.chains.get(CHAIN).is_some_and(|have| {
        have.len() == rules.len() + 1 && comment(&have[0].spec) == Some(mark.as_str())
    });
    let drops_ok = DROP_CHAINS
        .iter()
        .all(|(_, c, note)| drop_chain_ok(saved, c, note));
    let first = saved
        .chains
        .get("INPUT")
        .and_then(|r| r.first())
        .is_some_and(|r| r.spec == JUMP);
    let jump_ok = first && jumps(saved) == 1;
    if chain_ok && drops_ok && jump_ok {
        return None;
    }
    let mut t = String::from("*filter\n");
    t.push_str(&format!(":{CHAIN} - [0:0]\n"));
    for (_, c, note) in DROP_CHAINS {
        if !drop_chain_ok(saved, c, note) {
            t.push_str(&format!(":{c} - [0:0]\n"));
            t.push_str(&format!("-A {c} -m comment --comment \"{note}\" -j DROP\n"));
        }
    }
    t.push_str(&format!("-A {CHAIN} -m comment --comment \"{mark}\"\n"));
    for spec in &rules {
        t.push_str(&format!("-A {CHAIN} {spec}\n"));
    }
    if !jump_ok {
        for _ in 0..jumps(saved) {
            t.push_str(&format!("-D INPUT {JUMP}\n"));
        }
        t.push_str(&format!("-I INPUT 1 {JUMP}\n"));
    }
    t.push_str("COMMIT\n");
    Some(t)
}

/// The `iptables-restore --noflush` input that removes the filter, or `None` when nothing of it
/// is there.
pub fn remove_input(saved: &Saved) -> Option<String> {
    let mut t = String::from("*filter\n");
    for _ in 0..jumps(saved) {
        t.push_str(&format!("-D INPUT {JUMP}\n"));
    }
    for c in std::iter::once(CHAIN).chain(DROP_CHAINS.iter().map(|(_, c, _)| *c)) {
        if saved.chains.contains_key(c) {
            t.push_str(&format!("-F {c}\n-X {c}\n"));
        }
    }
    (t.len() > "*filter\n".len()).then(|| t + "COMMIT\n")
}

/// The drop counters in `saved`.
pub fn drops(saved: &Saved) -> EncapDrops {
    let count = |chain: &str| {
        saved
            .chains
            .get(chain)
            .map_or(0, |r| r.iter().map(|r| r.packets).sum())
    };
    EncapDrops {
        vxlan: count(DROP_CHAINS[0].1),
        ipip: count(DROP_CHAINS[1].1),
    }
}

/// The iptables executor: `iptables-save` / `iptables-restore` of the same variant as
/// `iptables`, run in the calling thread's network namespace.
pub struct IptEncap {
    _priv: (),
}

impl IptEncap {
    /// Checks that `iptables-save` runs here.
    pub fn new() -> Result<Self, FirewallError> {
        let me = IptEncap { _priv: () };
        me.save("probe")?;
        Ok(me)
    }

    fn save(&self, op: &str) -> Result<Saved, FirewallError> {
        let text = ipt::save_with_counters("filter").map_err(|e| fail(op, e))?;
        Ok(parse_save(&text))
    }

    fn restore(&self, op: &str, input: &str) -> Result<(), FirewallError> {
        ipt::restore_noflush(input).map_err(|e| fail(op, e))
    }
}

impl EncapFilter for IptEncap {
    fn kind(&self) -> BackendKind {
        BackendKind::Iptables
    }

    fn apply(&self, rules: &EncapRules) -> Result<(), FirewallError> {
        let op = "apply encapsulation filter";
        let saved = self.save(op)?;
        match restore_input(rules, &saved) {
            Some(input) => self.restore(op, &input),
            None => Ok(()),
        }
    }

    fn dropped(&self) -> Result<EncapDrops, FirewallError> {
        Ok(drops(&self.save("read encapsulation drop counters")?))
    }

    fn remove(&self) -> Result<(), FirewallError> {
        let op = "remove encapsulation filter";
        match remove_input(&self.save(op)?) {
            Some(input) => self.restore(op, &input),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::firewall::encap::VxlanGuard;

    fn rules() -> EncapRules {
        EncapRules {
            local: "192.168.1.10".parse().unwrap(),
            vxlan: Some(VxlanGuard {
                port: 4789,
                vni: 4242,
                peers: ["192.168.1.11".parse().unwrap()].into(),
            }),
            ipip: Some(["192.168.7.12".parse().unwrap()].into()),
        }
    }

    #[test]
    fn golden_chain() {
        assert_eq!(
            chain_rules(&rules()),
            [
                "-s 192.168.1.11/32 -p udp -m udp --dport 4789 -j RETURN",
                "-p udp -m udp --dport 4789 -m u32 --u32 \"0>>22&0x3C@12>>8=4242\" -j SHIMNET-ENCAP-VXLAN-DROP",
                "-s 192.168.7.12/32 -d 192.168.1.10/32 -p 4 -j RETURN",
                "-d 192.168.1.10/32 -p 4 -j SHIMNET-ENCAP-IPIP-DROP",
            ]
        );
        let mut r = rules();
        r.vxlan = None;
        r.ipip = Some(BTreeSet::new());
        assert_eq!(
            chain_rules(&r),
            ["-d 192.168.1.10/32 -p 4 -j SHIMNET-ENCAP-IPIP-DROP"],
            "an empty peer set drops every packet of the encapsulation"
        );
        assert_ne!(marker(&chain_rules(&r)), marker(&chain_rules(&rules())));
    }

    #[test]
    fn first_install_creates_everything_in_one_commit() {
        let saved = parse_save(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n[3:180] -A INPUT -i lo -j ACCEPT\nCOMMIT\n",
        );
        let t = restore_input(&rules(), &saved).unwrap();
        let m = marker(&chain_rules(&rules()));
        assert_eq!(
            t,
            format!(
                "*filter\n\
                 :SHIMNET-ENCAP - [0:0]\n\
                 :SHIMNET-ENCAP-VXLAN-DROP - [0:0]\n\
                 -A SHIMNET-ENCAP-VXLAN-DROP -m comment --comment \"shimnet-encap-drop:vxlan\" -j DROP\n\
                 :SHIMNET-ENCAP-IPIP-DROP - [0:0]\n\
                 -A SHIMNET-ENCAP-IPIP-DROP -m comment --comment \"shimnet-encap-drop:ipip\" -j DROP\n\
                 -A SHIMNET-ENCAP -m comment --comment \"{m}\"\n\
                 -A SHIMNET-ENCAP -s 192.168.1.11/32 -p udp -m udp --dport 4789 -j RETURN\n\
                 -A SHIMNET-ENCAP -p udp -m udp --dport 4789 -m u32 --u32 \"0>>22&0x3C@12>>8=4242\" -j SHIMNET-ENCAP-VXLAN-DROP\n\
                 -A SHIMNET-ENCAP -s 192.168.7.12/32 -d 192.168.1.10/32 -p 4 -j RETURN\n\
                 -A SHIMNET-ENCAP -d 192.168.1.10/32 -p 4 -j SHIMNET-ENCAP-IPIP-DROP\n\
                 -I INPUT 1 -j SHIMNET-ENCAP\n\
                 COMMIT\n"
            )
        );
    }

    /// `iptables-save -c -t filter` with the filter of [`rules`] installed, as the nf_tables
    /// variant prints it (protocol names, u32 in hex), with `first` the first INPUT rule.
    fn installed(first: &str) -> String {
        let m = marker(&chain_rules(&rules()));
        format!(
            "# Generated by iptables-save v1.8.9 (nf_tables)\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
             :SHIMNET-ENCAP - [0:0]\n:SHIMNET-ENCAP-IPIP-DROP - [0:0]\n:SHIMNET-ENCAP-VXLAN-DROP - [0:0]\n\
             [9:900] -A INPUT {first}\n[4:280] -A INPUT -j SHIMNET-ENCAP\n\
             [4:280] -A SHIMNET-ENCAP -m comment --comment \"{m}\"\n\
             [0:0] -A SHIMNET-ENCAP -s 192.168.1.11/32 -p udp -m udp --dport 4789 -j RETURN\n\
             [3:168] -A SHIMNET-ENCAP -p udp -m udp --dport 4789 -m u32 --u32 \"0x0>>0x16&0x3c@0xc>>0x8=0x1092\" -j SHIMNET-ENCAP-VXLAN-DROP\n\
             [0:0] -A SHIMNET-ENCAP -s 192.168.7.12/32 -d 192.168.1.10/32 -p ipencap -j RETURN\n\
             [1:40] -A SHIMNET-ENCAP -d 192.168.1.10/32 -p ipencap -j SHIMNET-ENCAP-IPIP-DROP\n\
             [1:40] -A SHIMNET-ENCAP-IPIP-DROP -m comment --comment \"shimnet-encap-drop:ipip\" -j DROP\n\
             [3:168] -A SHIMNET-ENCAP-VXLAN-DROP -m comment --comment \"shimnet-encap-drop:vxlan\" -j DROP\n\
             COMMIT\n"
        )
    }

    #[test]
    fn up_to_date_filter_is_left_alone_and_counted() {
        // The jump first: nothing to do.
        let text =
            installed("-j SHIMNET-ENCAP").replacen("[4:280] -A INPUT -j SHIMNET-ENCAP\n", "", 1);
        let saved = parse_save(&text);
        assert_eq!(restore_input(&rules(), &saved), None);
        assert_eq!(drops(&saved), EncapDrops { vxlan: 3, ipip: 1 });
    }

    #[test]
    fn a_new_peer_set_rebuilds_the_chain_but_keeps_the_drop_chains() {
        let saved = parse_save(&installed("-j SHIMNET-ENCAP").replacen(
            "[4:280] -A INPUT -j SHIMNET-ENCAP\n",
            "",
            1,
        ));
        let mut r = rules();
        r.vxlan.as_mut().unwrap().peers = ["192.168.1.13".parse().unwrap()].into();
        let t = restore_input(&r, &saved).unwrap();
        assert!(
            t.starts_with("*filter\n:SHIMNET-ENCAP - [0:0]\n-A SHIMNET-ENCAP -m comment"),
            "{t}"
        );
        assert!(
            !t.contains("DROP - [0:0]"),
            "drop chains (and counters) kept: {t}"
        );
        assert!(t.contains("-s 192.168.1.13/32"));
        assert!(!t.contains("192.168.1.11"), "the removed peer is gone: {t}");
        assert!(!t.contains("INPUT"), "{t}");
    }

    #[test]
    fn a_jump_pushed_down_is_moved_back_first() {
        let saved = parse_save(&installed("-p tcp -j ACCEPT"));
        let t = restore_input(&rules(), &saved).unwrap();
        assert!(
            t.ends_with("-D INPUT -j SHIMNET-ENCAP\n-I INPUT 1 -j SHIMNET-ENCAP\nCOMMIT\n"),
            "{t}"
        );
        let rm = remove_input(&saved).unwrap();
        assert_eq!(
            rm,
            "*filter\n-D INPUT -j SHIMNET-ENCAP\n-F SHIMNET-ENCAP\n-X SHIMNET-ENCAP\n\
             -F SHIMNET-ENCAP-VXLAN-DROP\n-X SHIMNET-ENCAP-VXLAN-DROP\n\
             -F SHIMNET-ENCAP-IPIP-DROP\n-X SHIMNET-ENCAP-IPIP-DROP\nCOMMIT\n"
        );
        assert_eq!(
            remove_input(&parse_save("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")),
            None
        );
    }

    #[test]
    fn an_altered_drop_chain_is_recreated() {
        let text = installed("-j SHIMNET-ENCAP")
            .replacen("[4:280] -A INPUT -j SHIMNET-ENCAP\n", "", 1)
            .replace(
                "\"shimnet-encap-drop:ipip\" -j DROP",
                "\"shimnet-encap-drop:ipip\" -j ACCEPT",
            );
        let t = restore_input(&rules(), &parse_save(&text)).unwrap();
        assert!(t.contains(":SHIMNET-ENCAP-IPIP-DROP - [0:0]\n"), "{t}");
        assert!(!t.contains(":SHIMNET-ENCAP-VXLAN-DROP"), "{t}");
    }
}
