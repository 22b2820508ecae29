//! Root tests: each builds its own namespaces and checks real traffic, once per backend.

mod topo;

use std::net::IpAddr;
use std::sync::Arc;

use self::topo::{in_ns, probe, sa, BridgeSpec, Topo};
use super::{detect, BackendKind, Firewall, NetworkRules, PortRules};
use crate::types::{IfName, NetworkName, PortMapping, Protocol};

fn skip_unless_root() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: firewall kernel test needs root");
        return true;
    }
    false
}

fn idx(kind: BackendKind) -> u8 {
    match kind {
        BackendKind::Nftables => 0,
        BackendKind::Iptables => 1,
    }
}

fn br(name: &'static str, prefix: String, containers: usize) -> BridgeSpec {
    BridgeSpec {
        bridge: name,
        prefix,
        containers,
        v6: None,
    }
}

fn net(name: &str, bridge: &str, prefix: &str) -> NetworkRules {
    NetworkRules {
        name: NetworkName::new(name).unwrap(),
        bridge: IfName::new(bridge).unwrap(),
        extensions: vec![],
        subnet4: format!("{prefix}.0/24").parse().unwrap(),
        subnet6: None,
        masquerade: true,
        icc: true,
        internal: false,
        no_masquerade_to: vec![],
        allow_from: vec![],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `f` with a backend of `kind` created in (and called from) the host namespace.
fn with_fw<T: Send + 'static>(
    t: &Arc<Topo>,
    kind: BackendKind,
    f: impl FnOnce(&dyn Firewall, &Topo) -> T + Send + 'static,
) -> T {
    let t2 = t.clone();
    in_ns(&t.host, move || {
        let fw = detect(Some(kind), None).unwrap_or_else(|e| panic!("detect {kind:?}: {e}"));
        assert_eq!(fw.kind(), kind);
        fw.ensure_base().expect("ensure_base");
        f(&*fw, &t2)
    })
}

/// Asserts that nothing of network/port rules is left in the host namespace.
fn assert_no_leftovers(t: &Topo, kind: BackendKind) {
    let saves = t.host_sh(&["sh", "-c", "iptables-save; ip6tables-save"]);
    assert!(
        !saves.contains("shimnet:") && !saves.contains("shimnet-port:"),
        "{saves}"
    );
    if kind == BackendKind::Nftables {
        let l = t.host_sh(&["nft", "list", "table", "inet", "shimnet"]);
        assert!(
            !l.contains("fwdin/") && !l.contains("nat4/") && !l.contains("comment"),
            "{l}"
        );
    }
}

fn assert_removed_all(t: &Topo) {
    let tables = t.host_sh(&["nft", "list", "tables"]);
    assert!(!tables.contains("shimnet"), "{tables}");
    let saves = t.host_sh(&["sh", "-c", "iptables-save; ip6tables-save"]);
    assert!(!saves.contains("SHIMNET"), "{saves}");
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn nftables() {
                super::$name(super::BackendKind::Nftables)
            }
            #[test]
            fn iptables() {
                super::$name(super::BackendKind::Iptables)
            }
        }
    };
}

both!(masquerade);
both!(icc);
both!(internal);
both!(isolation);
both!(ports);
both!(forward_policy_drop);
both!(admin_chain_stays_first);
both!(drift_inside_is_found_and_put_back);

/// Masquerade (v4 and v6), no_masquerade_to, replace, owned_networks, removal.
fn masquerade(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p = format!("10.201.{}", b * 10);
    let p6 = format!("fd00:201:{}", b * 10);
    let out = format!("10.201.{}", 100 + b);
    let out6 = format!("fd01:201:{b}");
    let spec = BridgeSpec {
        bridge: "br0",
        prefix: p.clone(),
        containers: 1,
        v6: Some(p6.clone()),
    };
    let t = Arc::new(Topo::new("masq", &out, &[spec], Some(&out6)));
    with_fw(&t, kind, move |fw, t| {
        let c = &t.containers[0];
        let mut n = net("n1", "br0", &p);
        n.subnet6 = Some(format!("{p6}::/64").parse().unwrap());
        fw.apply_network(&n).expect("apply");
        fw.apply_network(&n).expect("apply twice");
        assert_eq!(fw.owned_networks().unwrap(), [n.name.clone()]);
        let seen = probe(&t.outside, sa(t.out_ip, 7000), c, sa(t.out_ip, 7000));
        assert_eq!(seen, Some(t.host_out), "v4 masquerade");
        let (o6, h6) = (t.out_ip6.unwrap(), t.host_out6.unwrap());
        let seen = probe(&t.outside, sa(o6, 7001), c, sa(o6, 7001));
        assert_eq!(seen, Some(h6), "v6 masquerade");
        // Exception: the outside subnet is not masqueraded.
        n.no_masquerade_to = vec![
            format!("{out}.0/24").parse().unwrap(),
            format!("{out6}::/64").parse().unwrap(),
        ];
        fw.apply_network(&n).expect("apply with exception");
        let seen = probe(&t.outside, sa(t.out_ip, 7002), c, sa(t.out_ip, 7002));
        assert_eq!(seen, Some(ip(&format!("{p}.2"))), "no_masquerade_to v4");
        let seen = probe(&t.outside, sa(o6, 7003), c, sa(o6, 7003));
        assert_eq!(seen, Some(ip(&format!("{p6}::2"))), "no_masquerade_to v6");
        // IPv6 published port.
        let pr = PortRules {
            id: IfName::new("snvv6").unwrap(),
            network: n.name.clone(),
            bridge: n.bridge.clone(),
            subnet4: n.subnet4,
            ip4: format!("{p}.2").parse().unwrap(),
            ip6: Some(format!("{p6}::2").parse().unwrap()),
            ports: vec![PortMapping {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                container_port: 80,
            }],
        };
        fw.add_ports(&pr).expect("add v6 ports");
        let any6 = ip("::");
        let seen = probe(c, sa(any6, 80), &t.outside, sa(h6, 8080));
        assert_eq!(seen, Some(o6), "v6 published port");
        fw.remove_ports(&pr).expect("remove v6 ports");
        assert_eq!(
            probe(c, sa(any6, 80), &t.outside, sa(h6, 8080)),
            None,
            "v6 port removed"
        );
        fw.remove_network(&n.name).expect("remove");
        fw.remove_network(&n.name).expect("remove twice");
        assert!(fw.owned_networks().unwrap().is_empty());
        assert_no_leftovers(t, kind);
        fw.remove_all().expect("remove_all");
        assert_removed_all(t);
    });
}

/// icc=true lets containers talk; icc=false drops it (needs br_netfilter).
fn icc(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p = format!("10.202.{}", b * 10);
    let t = Arc::new(Topo::new(
        "icc",
        &format!("10.202.{}", 100 + b),
        &[br("br0", p.clone(), 2)],
        None,
    ));
    if !t.br_netfilter() {
        eprintln!(
            "SKIPPED: icc test needs br_netfilter (/proc/sys/net/bridge absent in the namespace)"
        );
        return;
    }
    with_fw(&t, kind, move |fw, t| {
        let (a, bb) = (&t.containers[0], &t.containers[1]);
        let a_ip = ip(&format!("{p}.2"));
        let mut n = net("n1", "br0", &p);
        fw.apply_network(&n).unwrap();
        assert_eq!(
            probe(a, sa(a_ip, 80), bb, sa(a_ip, 80)),
            Some(ip(&format!("{p}.3"))),
            "icc on"
        );
        n.icc = false;
        fw.apply_network(&n).unwrap();
        assert_eq!(
            probe(a, sa(a_ip, 81), bb, sa(a_ip, 81)),
            None,
            "icc off must drop"
        );
        // Outside access still works.
        assert_eq!(
            probe(&t.outside, sa(t.out_ip, 82), a, sa(t.out_ip, 82)),
            Some(t.host_out)
        );
        fw.remove_network(&n.name).unwrap();
        assert_no_leftovers(t, kind);
        fw.remove_all().unwrap();
    });
}

/// internal: no outside access either way; on-bridge traffic and the host still work.
fn internal(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p = format!("10.203.{}", b * 10);
    let t = Arc::new(Topo::new(
        "int",
        &format!("10.203.{}", 100 + b),
        &[br("br0", p.clone(), 2)],
        None,
    ));
    let bnf = t.br_netfilter();
    with_fw(&t, kind, move |fw, t| {
        let (a, bb) = (&t.containers[0], &t.containers[1]);
        let a_ip = ip(&format!("{p}.2"));
        let mut n = net("n1", "br0", &p);
        n.internal = true;
        fw.apply_network(&n).unwrap();
        assert_eq!(
            probe(&t.outside, sa(t.out_ip, 90), a, sa(t.out_ip, 90)),
            None,
            "internal → outside"
        );
        assert_eq!(
            probe(a, sa(a_ip, 91), &t.outside, sa(a_ip, 91)),
            None,
            "outside → internal"
        );
        if bnf {
            assert!(
                probe(a, sa(a_ip, 92), bb, sa(a_ip, 92)).is_some(),
                "icc inside internal"
            );
        }
        let gw = ip(&format!("{p}.1"));
        assert_eq!(
            probe(&t.host, sa(gw, 93), a, sa(gw, 93)),
            Some(a_ip),
            "container → host"
        );
        fw.remove_network(&n.name).unwrap();
        assert_no_leftovers(t, kind);
        fw.remove_all().unwrap();
    });
}

/// Two networks are isolated from each other; allow_from opens one direction.
fn isolation(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p1 = format!("10.204.{}", b * 10);
    let p2 = format!("10.204.{}", b * 10 + 1);
    let bridges = [br("br0", p1.clone(), 1), br("br1", p2.clone(), 1)];
    let t = Arc::new(Topo::new(
        "iso",
        &format!("10.204.{}", 100 + b),
        &bridges,
        None,
    ));
    with_fw(&t, kind, move |fw, t| {
        let (a, bb) = (&t.containers[0], &t.containers[1]);
        let (a_ip, b_ip) = (ip(&format!("{p1}.2")), ip(&format!("{p2}.2")));
        let mut n1 = net("n1", "br0", &p1);
        let n2 = net("n2", "br1", &p2);
        fw.apply_network(&n1).unwrap();
        fw.apply_network(&n2).unwrap();
        assert_eq!(probe(a, sa(a_ip, 100), bb, sa(a_ip, 100)), None, "n2 → n1");
        assert_eq!(probe(bb, sa(b_ip, 101), a, sa(b_ip, 101)), None, "n1 → n2");
        assert_eq!(
            probe(&t.outside, sa(t.out_ip, 102), a, sa(t.out_ip, 102)),
            Some(t.host_out)
        );
        assert_eq!(
            probe(&t.outside, sa(t.out_ip, 103), bb, sa(t.out_ip, 103)),
            Some(t.host_out)
        );
        n1.allow_from = vec![n2.subnet4.into()];
        fw.apply_network(&n1).unwrap();
        assert_eq!(
            probe(a, sa(a_ip, 104), bb, sa(a_ip, 104)),
            Some(b_ip),
            "allow_from n2"
        );
        assert_eq!(
            probe(bb, sa(b_ip, 105), a, sa(b_ip, 105)),
            None,
            "still n1 → n2 closed"
        );
        let mut owned = fw.owned_networks().unwrap();
        owned.sort();
        assert_eq!(owned, [n1.name.clone(), n2.name.clone()]);
        fw.remove_network(&n1.name).unwrap();
        assert_eq!(fw.owned_networks().unwrap(), std::slice::from_ref(&n2.name));
        fw.remove_network(&n2.name).unwrap();
        assert_no_leftovers(t, kind);
        fw.remove_all().unwrap();
        assert_removed_all(t);
    });
}

/// Published ports from outside, from the host (its address and 127.0.0.1), hairpin; removal.
fn ports(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p = format!("10.205.{}", b * 10);
    let t = Arc::new(Topo::new(
        "ports",
        &format!("10.205.{}", 100 + b),
        &[br("br0", p.clone(), 2)],
        None,
    ));
    t.host_sh(&["sysctl", "-qw", "net.ipv4.conf.br0.route_localnet=1"]);
    let bnf = t.br_netfilter();
    with_fw(&t, kind, move |fw, t| {
        let (a, bb) = (&t.containers[0], &t.containers[1]);
        let any = ip("0.0.0.0");
        let n = net("n1", "br0", &p);
        fw.apply_network(&n).unwrap();
        let pr = PortRules {
            id: IfName::new("snvtest0").unwrap(),
            network: n.name.clone(),
            bridge: n.bridge.clone(),
            subnet4: n.subnet4,
            ip4: format!("{p}.2").parse().unwrap(),
            ip6: None,
            ports: vec![
                PortMapping {
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 8080,
                    container_port: 80,
                },
                PortMapping {
                    protocol: Protocol::Tcp,
                    host_ip: Some(t.host_out),
                    host_port: 8081,
                    container_port: 81,
                },
            ],
        };
        fw.add_ports(&pr).expect("add_ports");
        fw.add_ports(&pr).expect("add_ports twice");
        assert_eq!(fw.owned_ports().unwrap(), std::slice::from_ref(&pr.id));
        let h = t.host_out;
        assert_eq!(
            probe(a, sa(any, 80), &t.outside, sa(h, 8080)),
            Some(t.out_ip),
            "outside → published"
        );
        assert_eq!(
            probe(a, sa(any, 81), &t.outside, sa(h, 8081)),
            Some(t.out_ip),
            "outside → host-ip port"
        );
        assert!(
            probe(a, sa(any, 80), &t.host, sa(h, 8080)).is_some(),
            "host → published"
        );
        assert!(
            probe(a, sa(any, 80), &t.host, sa(ip("127.0.0.1"), 8080)).is_some(),
            "localhost → published"
        );
        let gw = ip(&format!("{p}.1"));
        if bnf {
            // Hairpin: masqueraded so the reply comes back through the host.
            assert_eq!(probe(a, sa(any, 80), bb, sa(h, 8080)), Some(gw), "hairpin");
        }
        // A non-published port is not forwarded.
        assert_eq!(probe(a, sa(any, 82), &t.outside, sa(h, 8082)), None);
        fw.remove_ports(&pr).expect("remove_ports");
        fw.remove_ports(&pr).expect("remove_ports twice");
        assert!(fw.owned_ports().unwrap().is_empty());
        assert_eq!(
            probe(a, sa(any, 80), &t.outside, sa(h, 8080)),
            None,
            "removed"
        );
        fw.add_ports(&pr).unwrap();
        fw.purge_ports(&pr.id).expect("purge");
        assert!(fw.owned_ports().unwrap().is_empty());
        assert_eq!(
            probe(a, sa(any, 80), &t.outside, sa(h, 8080)),
            None,
            "purged"
        );
        fw.remove_network(&n.name).unwrap();
        assert_no_leftovers(t, kind);
        fw.remove_all().unwrap();
        assert_removed_all(t);
    });
}

/// Another manager set iptables' FORWARD policy to DROP: our rules still forward.
fn forward_policy_drop(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p = format!("10.206.{}", b * 10);
    let t = Arc::new(Topo::new(
        "drop",
        &format!("10.206.{}", 100 + b),
        &[br("br0", p.clone(), 2)],
        None,
    ));
    let bnf = t.br_netfilter();
    t.host_sh(&["iptables", "-P", "FORWARD", "DROP"]);
    let c = &t.containers[0];
    assert_eq!(
        probe(&t.outside, sa(t.out_ip, 110), c, sa(t.out_ip, 110)),
        None,
        "control: DROP policy blocks"
    );
    with_fw(&t, kind, move |fw, t| {
        let (a, bb) = (&t.containers[0], &t.containers[1]);
        let a_ip = ip(&format!("{p}.2"));
        let n = net("n1", "br0", &p);
        fw.apply_network(&n).unwrap();
        assert_eq!(
            probe(&t.outside, sa(t.out_ip, 111), a, sa(t.out_ip, 111)),
            Some(t.host_out)
        );
        if bnf {
            assert!(
                probe(a, sa(a_ip, 112), bb, sa(a_ip, 112)).is_some(),
                "icc under DROP"
            );
        }
        let fwd = t.host_sh(&["iptables", "-S", "FORWARD"]);
        assert!(fwd.contains("-P FORWARD DROP"), "{fwd}");
        // Plain iptables mode: the admin chain SHIMNET-USER first, then shimnet's jump.
        let top: &[&str] = match kind {
            BackendKind::Iptables => &[
                "-A FORWARD -j SHIMNET-USER",
                "-A FORWARD -j SHIMNET-FORWARD",
            ],
            BackendKind::Nftables => &["-A FORWARD -j SHIMNET-FORWARD"],
        };
        assert!(
            fwd.lines().skip(1).take(top.len()).eq(top.iter().copied()),
            "{fwd}"
        );
        fw.remove_network(&n.name).unwrap();
        assert_no_leftovers(t, kind);
        assert_eq!(
            probe(&t.outside, sa(t.out_ip, 113), a, sa(t.out_ip, 113)),
            None
        );
        fw.remove_all().unwrap();
        assert_removed_all(t);
    });
}

/// An admin chain layout: its jump is the first rule of FORWARD and shimnet's comes right after,
/// whoever inserted at the top in between and whatever is re-applied; its RETURN is kept and an
/// administrator's DROP there is final.
fn admin_chain_stays_first(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p = format!("10.209.{}", b * 10);
    let t = Arc::new(Topo::new(
        "admin",
        &format!("10.209.{}", 100 + b),
        &[br("br0", p.clone(), 1)],
        None,
    ));
    t.host_sh(&["iptables", "-P", "FORWARD", "DROP"]);
    let t2 = t.clone();
    in_ns(&t.host, move || {
        let t = &t2;
        let admin = super::AdminChains {
            first: "ADMIN-FIRST".into(),
            ends_in_return: true,
            placeholders: vec![("nat".into(), "ADMIN-NAT".into())],
        };
        let fw = detect(Some(kind), Some(admin)).unwrap();
        fw.ensure_base().unwrap();
        let n = net("n1", "br0", &p);
        fw.apply_network(&n).unwrap();
        let top = |t: &Topo| -> Vec<String> {
            t.host_sh(&["iptables", "-S", "FORWARD"])
                .lines()
                .filter(|l| l.starts_with("-A FORWARD"))
                .take(2)
                .map(String::from)
                .collect()
        };
        let want = vec![
            "-A FORWARD -j ADMIN-FIRST".to_string(),
            "-A FORWARD -j SHIMNET-FORWARD".to_string(),
        ];
        assert_eq!(top(t), want);
        assert!(t
            .host_sh(&["iptables", "-S", "ADMIN-FIRST"])
            .contains("-A ADMIN-FIRST -j RETURN"));
        t.host_sh(&["iptables", "-t", "nat", "-S", "ADMIN-NAT"]);
        // Someone else inserts at the top; the next pass puts the layout back.
        t.host_sh(&["iptables", "-I", "FORWARD", "1", "-j", "ACCEPT"]);
        fw.apply_network(&n).unwrap();
        fw.ensure_base().unwrap();
        assert_eq!(top(t), want);
        let c = &t.containers[0];
        assert!(probe(&t.outside, sa(t.out_ip, 120), c, sa(t.out_ip, 120)).is_some());
        let c_ip = format!("{p}.2");
        t.host_sh(&[
            "iptables",
            "-I",
            "ADMIN-FIRST",
            "1",
            "-s",
            &c_ip,
            "-j",
            "DROP",
        ]);
        assert_eq!(
            probe(&t.outside, sa(t.out_ip, 121), c, sa(t.out_ip, 121)),
            None,
            "an admin DROP is final"
        );
        fw.remove_network(&n.name).unwrap();
        fw.remove_all().unwrap();
    });
}

/// Drift the event-driven repair must see, found by the read-only checks and undone by
/// `ensure_base` / `apply_network`: a rule inserted ahead of shimnet's jumps in `FORWARD`, a rule
/// deleted from `SHIMNET-FORWARD` or from a network's chain (iptables backend), a deleted
/// FORWARD accept rule or jump (nftables backend's coexistence chain). An administrator's rule in
/// `SHIMNET-USER` is not drift and is honoured.
fn drift_inside_is_found_and_put_back(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let p = format!("10.211.{}", b * 10);
    let t = Arc::new(Topo::new(
        "drift",
        &format!("10.211.{}", 100 + b),
        &[br("br0", p.clone(), 1)],
        None,
    ));
    // Another manager's FORWARD policy: without shimnet's accepts nothing is forwarded.
    t.host_sh(&["iptables", "-P", "FORWARD", "DROP"]);
    with_fw(&t, kind, move |fw, t| {
        let n = net("n1", "br0", &p);
        fw.apply_network(&n).unwrap();
        let c = &t.containers[0];
        let reach = |port: u16| probe(&t.outside, sa(t.out_ip, port), c, sa(t.out_ip, port));
        let clean = |fw: &dyn Firewall| {
            fw.base_in_place().unwrap()
                && fw
                    .drifted_networks(std::slice::from_ref(&n))
                    .unwrap()
                    .is_empty()
        };
        assert!(clean(fw));
        assert!(reach(130).is_some());
        let sh = |args: &[&str]| {
            let mut v = vec!["iptables"];
            v.extend_from_slice(args);
            t.host_sh(&v);
        };
        if kind == BackendKind::Iptables {
            sh(&["-I", "FORWARD", "1", "-j", "DROP"]);
            assert!(!fw.base_in_place().unwrap(), "a rule ahead of the jumps");
            assert_eq!(reach(131), None);
            fw.ensure_base().unwrap();
            assert!(clean(fw));
            let fwd = t.host_sh(&["iptables", "-S", "FORWARD"]);
            let rules: Vec<&str> = fwd.lines().filter(|l| l.starts_with("-A")).collect();
            assert_eq!(
                rules,
                [
                    "-A FORWARD -j SHIMNET-USER",
                    "-A FORWARD -j SHIMNET-FORWARD",
                    "-A FORWARD -j DROP"
                ]
            );
            assert!(reach(132).is_some());

            let c_ip = format!("{p}.2");
            sh(&["-A", "SHIMNET-USER", "-s", &c_ip, "-j", "DROP"]);
            assert!(clean(fw), "an admin rule is not drift");
            assert_eq!(reach(133), None, "the admin rule is honoured");
            sh(&["-D", "SHIMNET-USER", "-s", &c_ip, "-j", "DROP"]);
            assert!(reach(134).is_some());

            sh(&["-D", "SHIMNET-FORWARD", "1"]);
            assert!(
                !fw.base_in_place().unwrap(),
                "a rule deleted from SHIMNET-FORWARD"
            );
            fw.ensure_base().unwrap();
            assert!(clean(fw));
            assert_eq!(
                t.host_sh(&["iptables", "-S", "SHIMNET-FORWARD"])
                    .lines()
                    .filter(|l| l.starts_with("-A"))
                    .collect::<Vec<_>>(),
                [
                    "-A SHIMNET-FORWARD -j SHIMNET-FWD-IN",
                    "-A SHIMNET-FORWARD -j SHIMNET-FWD-OUT"
                ]
            );

            sh(&["-D", "SHIMNET-FWD-OUT", "1"]);
            assert!(fw.base_in_place().unwrap());
            assert_eq!(
                fw.drifted_networks(std::slice::from_ref(&n)).unwrap(),
                std::slice::from_ref(&n.name)
            );
            assert_eq!(reach(135), None);
            fw.apply_network(&n).unwrap();
            assert!(clean(fw));
            assert!(reach(136).is_some());
        } else {
            sh(&["-D", "SHIMNET-FORWARD", "1"]);
            assert_eq!(
                fw.drifted_networks(std::slice::from_ref(&n)).unwrap(),
                std::slice::from_ref(&n.name)
            );
            assert_eq!(reach(131), None, "the accept rule out of br0 is gone");
            fw.apply_network(&n).unwrap();
            assert!(clean(fw));
            assert!(reach(132).is_some());

            sh(&["-D", "FORWARD", "-j", "SHIMNET-FORWARD"]);
            assert_eq!(
                fw.drifted_networks(std::slice::from_ref(&n)).unwrap(),
                std::slice::from_ref(&n.name)
            );
            fw.apply_network(&n).unwrap();
            assert!(clean(fw));
            assert!(reach(133).is_some());
        }
        fw.remove_network(&n.name).unwrap();
        fw.remove_all().unwrap();
        assert_removed_all(t);
    });
}

/// Auto-detection picks nftables where libnftables works.
#[test]
fn detect_prefers_nftables() {
    if skip_unless_root() {
        return;
    }
    let t = Arc::new(Topo::new("detect", "10.208.0", &[], None));
    let kind = in_ns(&t.host, || detect(None, None).map(|fw| fw.kind()));
    assert_eq!(kind.expect("detect"), BackendKind::Nftables);
    // Nothing is created by detection alone.
    let tables = t.host_sh(&["nft", "list", "tables"]);
    assert!(!tables.contains("shimnet"), "{tables}");
}

/// Timing figures (run with `--ignored --nocapture`).
#[test]
#[ignore = "benchmark"]
fn bench_timings() {
    if skip_unless_root() {
        return;
    }
    for kind in [BackendKind::Nftables, BackendKind::Iptables] {
        let b = idx(kind);
        let p = format!("10.207.{}", b * 10);
        let t = Arc::new(Topo::new(
            "bench",
            &format!("10.207.{}", 100 + b),
            &[br("br0", p.clone(), 0)],
            None,
        ));
        with_fw(&t, kind, move |fw, _| {
            let median = |mut v: Vec<std::time::Duration>| {
                v.sort();
                v[v.len() / 2]
            };
            let n = net("n1", "br0", &p);
            let mut apply = Vec::new();
            for _ in 0..100 {
                let s = std::time::Instant::now();
                fw.apply_network(&n).unwrap();
                apply.push(s.elapsed());
            }
            // Many endpoints present, to show the cost does not depend on them.
            let rules = |i: u16| PortRules {
                id: IfName::new(&format!("snvb{i}")).unwrap(),
                network: n.name.clone(),
                bridge: n.bridge.clone(),
                subnet4: n.subnet4,
                ip4: format!("{p}.{}", 2 + i % 200).parse().unwrap(),
                ip6: None,
                ports: vec![PortMapping {
                    protocol: Protocol::Tcp,
                    host_ip: None,
                    host_port: 10000 + i,
                    container_port: 80,
                }],
            };
            let (mut add, mut rm) = (Vec::new(), Vec::new());
            for i in 0..100 {
                let r = rules(i);
                let s = std::time::Instant::now();
                fw.add_ports(&r).unwrap();
                add.push(s.elapsed());
            }
            for i in 0..100 {
                let r = rules(i);
                let s = std::time::Instant::now();
                fw.remove_ports(&r).unwrap();
                rm.push(s.elapsed());
            }
            eprintln!(
                "TIMING {kind:?}: apply_network median {:?}, add_ports median {:?}, remove_ports median {:?} (100 each)",
                median(apply),
                median(add),
                median(rm)
            );
            fw.remove_all().unwrap();
        });
    }
}

mod encap;
