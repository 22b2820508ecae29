//! Root tests of the encapsulation filter ([`crate::firewall::encap`]), once per backend: the
//! "host" namespace is the node (a UDP socket on the VXLAN port and a raw IP-protocol-4 socket
//! stand in for the devices: the filter judges before any socket sees a packet), the "outside"
//! namespace sends from a peer address and from a stranger address.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::topo::{in_ns, Topo};
use super::{idx, skip_unless_root, BackendKind};
use crate::firewall::encap::{self, EncapDrops, EncapRules, VxlanGuard};

const PORT: u16 = 4789;
const VNI: u32 = 4242;
/// Host number of a second address of the node, on its loopback.
const OTHER: u8 = 9;

fn v4(ip: IpAddr) -> Ipv4Addr {
    match ip {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("IPv4 test addresses"),
    }
}

fn rules(local: Ipv4Addr, vxlan: &[Ipv4Addr], ipip: &[Ipv4Addr]) -> EncapRules {
    EncapRules {
        local,
        vxlan: Some(VxlanGuard {
            port: PORT,
            vni: VNI,
            peers: vxlan.iter().copied().collect(),
        }),
        ipip: Some(ipip.iter().copied().collect()),
    }
}

/// Applies `r` in the node namespace.
fn apply(t: &Topo, kind: BackendKind, r: EncapRules) {
    in_ns(&t.host, move || {
        encap::open(kind)
            .and_then(|f| f.apply(&r))
            .unwrap_or_else(|e| panic!("apply {kind:?}: {e}"))
    });
}

fn dropped(t: &Topo, kind: BackendKind) -> EncapDrops {
    in_ns(&t.host, move || {
        encap::open(kind)
            .and_then(|f| f.dropped())
            .expect("dropped")
    })
}

/// A VXLAN header with `vni` and a few bytes of frame.
fn vxlan_payload(vni: u32) -> Vec<u8> {
    let v = vni.to_be_bytes();
    let mut p = vec![0x08, 0, 0, 0, v[1], v[2], v[3], 0];
    p.extend_from_slice(&[0u8; 20]);
    p
}

/// What the node's sockets received from each source.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    udp: Vec<Ipv4Addr>,
    ipip: Vec<Ipv4Addr>,
}

/// From each of `sources` (addresses of the outside namespace): 2 UDP datagrams with the
/// guarded VNI (one to the node's address, one to its [`OTHER`] address: a VXLAN socket listens
/// on every local address), 1 with another VNI, 2 IP-protocol-4 packets; returns what reached
/// the node.
fn exchange(t: &Arc<Topo>, sources: &[Ipv4Addr]) -> Seen {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let node = t.host.clone();
    let local = v4(t.host_out);
    let receiver = std::thread::spawn(move || {
        in_ns(&node, move || {
            let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).expect("bind UDP");
            udp.set_nonblocking(true).unwrap();
            let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(4))).unwrap();
            raw.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            let mut seen = Seen::default();
            let mut buf = [0u8; 2048];
            let mut stop_at = None;
            loop {
                while let Ok((_, from)) = udp.recv_from(&mut buf) {
                    if let SocketAddr::V4(a) = from {
                        seen.udp.push(*a.ip());
                    }
                }
                // The raw socket returns the outer header: the source is at bytes 12..16.
                while let Ok(n) = (&raw).read(&mut buf) {
                    if n >= 20 {
                        seen.ipip
                            .push(Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]));
                    }
                }
                if stop_at.is_none() && done_rx.try_recv().is_ok() {
                    stop_at = Some(std::time::Instant::now() + Duration::from_millis(300));
                }
                if stop_at.is_some_and(|s| std::time::Instant::now() > s) {
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    });
    ready_rx.recv().unwrap();
    let sources = sources.to_vec();
    in_ns(&t.outside, move || {
        for src in sources {
            let u = UdpSocket::bind((src, 0)).expect("bind sender");
            let other = Ipv4Addr::from(u32::from(local) & !0xff | u32::from(OTHER));
            for (vni, to) in [(VNI, local), (VNI, other), (VNI + 1, local)] {
                u.send_to(&vxlan_payload(vni), (to, PORT)).unwrap();
            }
            let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(4))).unwrap();
            raw.bind(&SocketAddr::V4(SocketAddrV4::new(src, 0)).into())
                .unwrap();
            let dst = SocketAddr::V4(SocketAddrV4::new(local, 0)).into();
            // An inner IPv4 header (never decapsulated here).
            let mut inner = vec![0u8; 20];
            inner[0] = 0x45;
            for _ in 0..2 {
                raw.send_to(&inner, &dst).unwrap();
            }
        }
    });
    done_tx.send(()).unwrap();
    let mut s = receiver.join().unwrap();
    s.udp.sort();
    s.ipip.sort();
    s
}

both!(encap_filter);

/// Peers pass, strangers are dropped and counted, a new peer set takes over in one step and the
/// counters survive it, unguarded encapsulations pass, removal leaves nothing.
fn encap_filter(kind: BackendKind) {
    if skip_unless_root() {
        return;
    }
    let b = idx(kind);
    let t = Arc::new(Topo::new(
        "encap",
        &format!("10.209.{}", 100 + b),
        &[],
        None,
    ));
    let (local, peer) = (v4(t.host_out), v4(t.out_ip));
    let stranger = Ipv4Addr::new(10, 209, 100 + b, 3);
    super::topo::sh(&[
        "ip",
        "-n",
        &t.outside,
        "addr",
        "add",
        &format!("{stranger}/24"),
        "dev",
        "eth0",
    ]);
    let both = [peer, stranger];
    let other = Ipv4Addr::from(u32::from(local) & !0xff | u32::from(OTHER));
    t.host_sh(&["ip", "addr", "add", &format!("{other}/32"), "dev", "lo"]);
    super::topo::sh(&[
        "ip",
        "-n",
        &t.outside,
        "route",
        "add",
        &format!("{other}/32"),
        "via",
        &local.to_string(),
    ]);

    // Nothing installed: everything passes.
    let s = exchange(&t, &both);
    assert_eq!(s.udp.len(), 6, "{s:?}");
    assert_eq!(s.ipip.len(), 4, "{s:?}");

    apply(&t, kind, rules(local, &[peer], &[peer]));
    let s = exchange(&t, &both);
    assert_eq!(
        s,
        Seen {
            udp: vec![peer, peer, peer, stranger],
            ipip: vec![peer, peer],
        },
        "the stranger's packets of the guarded VNI and IP protocol 4 are dropped"
    );
    assert_eq!(dropped(&t, kind), EncapDrops { vxlan: 2, ipip: 2 });
    // Applying the same rules again changes nothing (and keeps the counters).
    apply(&t, kind, rules(local, &[peer], &[peer]));
    assert_eq!(dropped(&t, kind), EncapDrops { vxlan: 2, ipip: 2 });

    // The peer set flips: the former peer is dropped, the new one passes, counters continue.
    apply(&t, kind, rules(local, &[stranger], &[stranger]));
    let s = exchange(&t, &both);
    assert_eq!(
        s,
        Seen {
            udp: vec![peer, stranger, stranger, stranger],
            ipip: vec![stranger, stranger],
        }
    );
    assert_eq!(dropped(&t, kind), EncapDrops { vxlan: 4, ipip: 4 });

    // An empty peer set drops every guarded packet; an unguarded encapsulation passes.
    apply(
        &t,
        kind,
        EncapRules {
            local,
            vxlan: Some(VxlanGuard {
                port: PORT,
                vni: VNI,
                peers: BTreeSet::new(),
            }),
            ipip: None,
        },
    );
    let s = exchange(&t, &both);
    assert_eq!(s.udp, vec![peer, stranger]);
    assert_eq!(s.ipip.len(), 4);
    assert_eq!(dropped(&t, kind), EncapDrops { vxlan: 8, ipip: 4 });

    // Altered by hand: the next apply repairs it.
    match kind {
        BackendKind::Nftables => {
            t.host_sh(&["nft", "flush", "chain", "ip", "shimnet-encap", "input"]);
        }
        BackendKind::Iptables => {
            t.host_sh(&["iptables", "-D", "INPUT", "-j", "SHIMNET-ENCAP"]);
            t.host_sh(&["iptables", "-I", "INPUT", "1", "-p", "tcp", "-j", "ACCEPT"]);
        }
    }
    apply(&t, kind, rules(local, &[peer], &[peer]));
    let s = exchange(&t, &both);
    assert_eq!(s.ipip, vec![peer, peer], "repaired");
    if kind == BackendKind::Iptables {
        let first = t.host_sh(&["iptables", "-S", "INPUT"]);
        assert!(
            first.lines().nth(1) == Some("-A INPUT -j SHIMNET-ENCAP"),
            "{first}"
        );
    }

    in_ns(&t.host, move || {
        encap::open(kind).and_then(|f| f.remove()).expect("remove");
        // Twice: nothing left is not an error.
        encap::open(kind).and_then(|f| f.remove()).expect("remove");
    });
    let tables = t.host_sh(&["nft", "list", "tables"]);
    assert!(!tables.contains("shimnet-encap"), "{tables}");
    let save = t.host_sh(&["iptables-save"]);
    assert!(!save.contains("SHIMNET-ENCAP"), "{save}");
    assert_eq!(exchange(&t, &both).ipip.len(), 4);
}
