//! Hostile hosts on the underlay against the peering data plane. Three nodes peered over VXLAN
//! or IPIP share one underlay segment with an attacker namespace that is no peer. The attacker
//! forges encapsulated packets exactly as a peer would send them (the node's VXLAN port and VNI,
//! the node's VXLAN MAC as inner destination; or IP protocol 4), with a pod address of another
//! node as inner source and a container of the target node as inner destination, while that
//! other node's container sends real traffic to the same listener. The listener counts both:
//! forged delivered must be 0, legitimate delivered must be all that was sent, and the target's
//! drop counter (`/v1/peers`, `/metrics`, `shimnetctl peers`) must count every forged packet.
//! Then a peer is removed from the peer file and sends encapsulated packets from its own
//! address: dropped and counted the same way. Run as root.

mod common;
mod peering_support;

use std::net::Ipv4Addr;
use std::time::Duration;

use peering_support::forge::{self, Counter, Counts};
use peering_support::*;
use shimnet::netns::NamedNetns;

/// VNI and UDP port of the VXLAN nodes (the defaults).
const VNI: u32 = 4242;
const VXLAN_PORT: u16 = 4789;
/// Forged and legitimate datagrams per phase.
const N: usize = 200;
/// Pause between two datagrams of one sender.
const GAP: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encap {
    Vxlan,
    Ipip,
}

impl Encap {
    fn mode(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan",
            Encap::Ipip => "ipip",
        }
    }
}

/// The pod gateway address of node `n` (first address of its pod subnet).
fn gateway(n: &Node) -> Ipv4Addr {
    let net: Ipv4Addr = n.pod_cidr.split('/').next().unwrap().parse().unwrap();
    Ipv4Addr::from(u32::from(net) + 1)
}

struct Cluster {
    encap: Encap,
    a: Node,
    b: Node,
    c: Node,
    attacker: UnderlayHost,
    ca: NamedNetns,
    ipa: Ipv4Addr,
    cb: NamedNetns,
    ipb: Ipv4Addr,
    cc: NamedNetns,
    ipc: Ipv4Addr,
    // Last: the router goes after every namespace plugged into it.
    _f: Fabric,
}

/// Three nodes in a full mesh over `encap` (`peering`: the rest of `[peering]`), `firewall` as
/// their backend, one container each, and an attacker on the same segment.
fn cluster(encap: Encap, peering: &str, firewall: &str) -> Cluster {
    let mut f = Fabric::new(1);
    let body = format!("mode = \"{}\"\n{peering}", encap.mode());
    let mut a = f.node("node-a", 0, 10, 1, &body);
    let mut b = f.node("node-b", 0, 11, 2, &body);
    let mut c = f.node("node-c", 0, 12, 3, &body);
    let attacker = f.host(0, 66);
    for n in [&a, &b, &c] {
        let others: Vec<(&Node, Option<&str>)> = [&a, &b, &c]
            .into_iter()
            .filter(|o| o.name != n.name)
            .map(|o| (o, None))
            .collect();
        n.set_peers(&others);
        n.use_firewall(firewall);
    }
    for n in [&mut a, &mut b, &mut c] {
        n.start();
    }
    let (ca, ipa) = a.container("a");
    let (cb, ipb) = b.container("b");
    let (cc, ipc) = c.container("c");
    wait_for(30, "containers reach each other across the nodes", || {
        ping_from(&cb, ipa, &[]) && ping_from(&cc, ipa, &[]) && ping_from(&ca, ipb, &[])
    });
    Cluster {
        encap,
        a,
        b,
        c,
        attacker,
        ca,
        ipa,
        cb,
        ipb,
        cc,
        ipc,
        _f: f,
    }
}

impl Cluster {
    /// `N` forged packets as `from_node` (underlay address) would send them to node a: inner
    /// source a pod address of `pod_src`, inner destination a's container, UDP to `port`.
    fn forged(&self, from_node: Ipv4Addr, pod_src: &[Ipv4Addr], port: u16) -> Vec<Vec<u8>> {
        (0..N)
            .map(|i| {
                let src = pod_src[i % pod_src.len()];
                let payload = format!("{} {i}", forge::FORGED);
                let inner = forge::ipv4_udp(src, self.ipa, 40000, port, payload.as_bytes());
                match self.encap {
                    Encap::Vxlan => forge::vxlan(
                        VNI,
                        forge::vxlan_mac(self.a.addr),
                        forge::vxlan_mac(from_node),
                        &inner,
                    ),
                    Encap::Ipip => inner,
                }
            })
            .collect()
    }

    /// Sends `frames` from namespace `ns` (underlay address `from`) to node a's underlay
    /// address. For VXLAN, as many again to another of a's addresses (its pod gateway, routed
    /// via a by the sender): the kernel's VXLAN socket takes VXLAN on any local address.
    /// Returns how many packets were sent.
    fn send_forged(&self, ns: &NamedNetns, from: Ipv4Addr, frames: &[Vec<u8>]) -> usize {
        match self.encap {
            Encap::Vxlan => {
                let route = self.a.pod_cidr.clone();
                let a = self.a.addr.to_string();
                let ip = |verb: &str| {
                    common::sh(&["ip", "-n", ns.name(), "route", verb, &route, "via", &a]);
                };
                forge::send_udp(ns.path(), from, self.a.addr, VXLAN_PORT, frames, GAP);
                ip("replace");
                forge::send_udp(ns.path(), from, gateway(&self.a), VXLAN_PORT, frames, GAP);
                ip("del");
                2 * frames.len()
            }
            Encap::Ipip => {
                forge::send_ipip(ns.path(), from, self.a.addr, frames, GAP);
                frames.len()
            }
        }
    }

    /// Counts at a's container while b's container sends `N` real datagrams and `ns`/`from`
    /// sends `forged`; returns what arrived and how many forged packets were sent.
    fn attack(
        &self,
        port: u16,
        ns: &NamedNetns,
        from: Ipv4Addr,
        forged: &[Vec<u8>],
    ) -> (Counts, usize) {
        let counter = Counter::start(self.ca.path(), self.ipa, port);
        let legit: Vec<Vec<u8>> = (0..N)
            .map(|i| format!("{} {i}", forge::LEGIT).into_bytes())
            .collect();
        let sent = std::thread::scope(|s| {
            s.spawn(|| forge::send_udp(self.cb.path(), self.ipb, self.ipa, port, &legit, GAP));
            s.spawn(|| self.send_forged(ns, from, forged))
                .join()
                .unwrap()
        });
        // Let the last datagrams cross the userspace data planes.
        std::thread::sleep(Duration::from_secs(1));
        (counter.finish(), sent)
    }

    /// a's drop counter for this encapsulation in `/v1/peers`.
    fn dropped(&self) -> Option<u64> {
        self.a.peers()["encap_dropped"][self.encap.mode()].as_u64()
    }

    /// a's drop counter for this encapsulation in `/metrics`.
    fn dropped_metric(&self) -> Option<u64> {
        self.a
            .metric(&format!(
                "shimnet_peering_encap_dropped_total{{mode=\"{}\"}}",
                self.encap.mode()
            ))
            .map(|v| v as u64)
    }

    /// Waits until a's drop counter (REST and metric) is `want`.
    fn wait_dropped(&self, want: u64) {
        wait_for(20, &format!("a counts {want} dropped packets"), || {
            self.dropped() == Some(want) && self.dropped_metric() == Some(want)
        });
    }
}

fn run(encap: Encap, peering: &str, firewall: &str, what: &str) {
    let k = cluster(encap, peering, firewall);
    if peering.contains("bpf") {
        let log = k.a.log();
        assert!(log.contains("in-kernel IPIP programs attached"), "{log}");
    }
    let start = k.dropped();

    // 1. The attacker (no peer) forges packets from pods of b and c while b's container sends
    //    real traffic to the same listener.
    let forged = k.forged(k.attacker.addr, &[k.ipb, k.ipc], 7301);
    let (got, sent) = k.attack(7301, &k.attacker.ns, k.attacker.addr, &forged);
    eprintln!(
        "{what}: attacker (not a peer): forged sent {sent}, delivered {}; legitimate sent {N}, delivered {}",
        got.forged, got.legit
    );
    assert_eq!(
        got.forged, 0,
        "{what}: forged packets reached the container"
    );
    assert_eq!(got.legit, N, "{what}: legitimate packets lost");
    let start = start.expect("encap_dropped in /v1/peers");
    let dropped = start + sent as u64;
    k.wait_dropped(dropped);
    let judge = match (
        encap,
        peering.contains("userspace") || peering.contains("bpf"),
    ) {
        (Encap::Ipip, true) => "userspace",
        _ => firewall,
    };
    assert_eq!(
        k.a.peers()["encap_filter"][encap.mode()].as_str(),
        Some(judge),
        "{}",
        k.a.peers()
    );
    let (ok, out) = k.a.ctl(&["peers"]);
    assert!(ok, "{out}");
    eprintln!("shimnetctl peers on node-a:\n{out}");
    let line = format!("{} {dropped} ({judge})", encap.mode());
    assert!(
        out.lines().any(
            |l| l.starts_with("encapsulated packets from non-peers dropped:") && l.contains(&line)
        ),
        "{out}"
    );

    // 2. c leaves: removed from a's peer file (and a from c's). From then on, packets from c's
    //    address are dropped like the attacker's; b's traffic keeps flowing.
    //    The daemons watch their peer files: no SIGHUP.
    k.a.set_peers(&[(&k.b, None)]);
    k.c.set_peers(&[(&k.b, None)]);
    wait_for(20, "a and c apply the peer sets without each other", || {
        k.a.peer("node-c").is_null() && k.c.peer("node-a").is_null()
    });
    let dropped = k.dropped().unwrap();
    let forged = k.forged(k.c.addr, &[k.ipc], 7302);
    let (got, sent) = k.attack(7302, &k.c.ns, k.c.addr, &forged);
    eprintln!(
        "{what}: removed peer node-c: forged sent {sent}, delivered {}; legitimate sent {N}, delivered {}",
        got.forged, got.legit
    );
    assert_eq!(
        got.forged, 0,
        "{what}: a removed peer's packets reached the container"
    );
    assert_eq!(got.legit, N, "{what}: legitimate packets lost");
    k.wait_dropped(dropped + sent as u64);
    eprintln!(
        "{what}: node-a's shimnet_peering_encap_dropped_total{{mode=\"{}\"}} went from {start} to {}",
        encap.mode(),
        dropped + sent as u64
    );
    // c's own container still reaches b, a's reaches b: only the removed pair is cut.
    assert!(ping_from(&k.cc, k.ipb, &[]));
    assert!(ping_from(&k.ca, k.ipb, &[]));
    assert!(!ping_from(&k.cc, k.ipa, &[]));
}

#[test]
fn vxlan_attacker_nftables() {
    run(Encap::Vxlan, "", "nftables", "VXLAN (nftables)");
}

#[test]
fn vxlan_attacker_iptables() {
    run(Encap::Vxlan, "", "iptables", "VXLAN (iptables)");
}

#[test]
fn userspace_ipip_attacker() {
    run(
        Encap::Ipip,
        "ipip = \"userspace\"",
        "nftables",
        "IPIP (userspace)",
    );
}

/// IPIP with the tc programs: packets of the attacker and of a removed peer are left alone by
/// the decapsulation program and dropped (and counted) by the userspace data plane under it.
#[test]
fn bpf_ipip_attacker() {
    run(Encap::Ipip, "ipip = \"bpf\"", "nftables", "IPIP (bpf)");
}

/// Kernel IPIP on every node, filter of backend `firewall`; only where the kernel has IPIP.
fn kernel_ipip(firewall: &str) {
    if !kernel_has_ipip() {
        eprintln!(
            "SKIPPED: kernel has no IPIP (CONFIG_NET_IPIP unset): the kernel IPIP attacker test \
             ({firewall} filter) cannot run here"
        );
        return;
    }
    run(
        Encap::Ipip,
        "ipip = \"kernel\"",
        firewall,
        &format!("IPIP (kernel, {firewall})"),
    );
}

#[test]
fn kernel_ipip_attacker_nftables() {
    kernel_ipip("nftables");
}

#[test]
fn kernel_ipip_attacker_iptables() {
    kernel_ipip("iptables");
}

/// The filter cannot be installed (a foreign object of the same name is in the way): the node
/// removes its VXLAN device rather than accept from anyone, says why, and recovers by itself
/// once the filter can go in again.
#[test]
fn vxlan_fails_closed_without_its_filter() {
    let k = cluster(Encap::Vxlan, "", "nftables");
    let ns = k.a.ns.name().to_string();
    let nft = |args: &str| {
        common::sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sh",
            "-c",
            &format!("nft {args}"),
        ]);
    };
    // One transaction, so no pass of a's shimnetd runs in between.
    nft("'delete table ip shimnet-encap; add table ip shimnet-encap; add set ip shimnet-encap vxlan_peers { type inet_service; }'");
    wait_for(
        20,
        "a reports the filter failure and removes its VXLAN device",
        || {
            let errors = k.a.peers()["errors"].to_string();
            errors.contains("encapsulation filter")
                && !k.a.ip(&["link", "show"]).contains("shimnet-vxlan")
        },
    );
    let forged = k.forged(k.attacker.addr, &[k.ipb], 7303);
    let counter = Counter::start(k.ca.path(), k.ipa, 7303);
    k.send_forged(&k.attacker.ns, k.attacker.addr, &forged);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        counter.finish().forged,
        0,
        "no device, nothing decapsulated"
    );
    nft("delete table ip shimnet-encap");
    wait_for(30, "filter, device and traffic back", || {
        k.a.peers()["errors"].as_array().is_some_and(Vec::is_empty) && ping_from(&k.cb, k.ipa, &[])
    });
    let rules = common::sh(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "nft",
        "list",
        "table",
        "ip",
        "shimnet-encap",
    ]);
    assert!(rules.contains("@vxlan_peers"), "{rules}");
}
