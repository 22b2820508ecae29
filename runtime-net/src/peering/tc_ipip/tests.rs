//! The programs run by the kernel on crafted packets (`BPF_PROG_TEST_RUN`, root), and the pure
//! parts checked without it.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::progs::{self, DecapSpec, Deliver, EncapSpec, TCX_NEXT, TC_ACT_REDIRECT, TC_ACT_SHOT};
use super::{fwd, sys};
use crate::peering::probe::checksum;

const LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const OTHER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, flags_frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&(20 + payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&flags_frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

fn eth(ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

fn inner() -> Vec<u8> {
    let udp = [
        0x30, 0x39, 0x00, 0x35, 0x00, 0x0c, 0, 0, b'p', b'i', b'n', b'g',
    ];
    ipv4(
        Ipv4Addr::new(10, 244, 1, 5),
        Ipv4Addr::new(10, 244, 2, 9),
        17,
        0x4000,
        &udp,
    )
}

fn root() -> bool {
    let ok = nix::unistd::geteuid().is_root();
    if !ok {
        eprintln!("SKIPPED: running eBPF programs needs root (BPF_PROG_TEST_RUN)");
    }
    ok
}

#[test]
fn the_header_sum_gives_a_valid_checksum_for_any_length() {
    for len in [40u32, 1500, 65535] {
        let mut s = progs::header_sum(LOCAL, PEER) + len;
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let csum = !(s as u16);
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, 4]);
        h.extend_from_slice(&csum.to_be_bytes());
        h.extend_from_slice(&LOCAL.octets());
        h.extend_from_slice(&PEER.octets());
        assert_eq!(checksum(&h), 0, "length {len}");
    }
}

#[test]
fn programs_grow_by_a_few_instructions_per_peer() {
    let table: Vec<(Ipv4Network, Ipv4Addr)> = (0..100u8)
        .map(|i| {
            (
                Ipv4Network::new(Ipv4Addr::new(10, 244, i, 0), 24).unwrap(),
                Ipv4Addr::new(198, 51, 100, i),
            )
        })
        .collect();
    let e = |n: usize| {
        progs::encap(&EncapSpec {
            l3: 0,
            local: LOCAL,
            underlay: 2,
            peers: &table[..n],
            miss: TCX_NEXT,
            counters: None,
        })
        .unwrap()
        .len()
    };
    assert_eq!(e(100) - e(0), 100 * 6);
    let addrs: Vec<Ipv4Addr> = table.iter().map(|t| t.1).collect();
    let d = |n: usize| {
        progs::decap(&DecapSpec {
            l3: 14,
            local: LOCAL,
            deliver: Deliver::Ingress(3),
            counters: None,
            peers: &addrs[..n],
        })
        .unwrap()
        .len()
    };
    assert_eq!(d(100) - d(0), 100);
}

fn decap_prog() -> std::os::fd::OwnedFd {
    let insns = progs::decap(&DecapSpec {
        l3: 14,
        local: LOCAL,
        deliver: Deliver::Ingress(1),
        counters: None,
        peers: &[Ipv4Addr::new(203, 0, 113, 1), PEER],
    })
    .unwrap();
    sys::prog_load("test_decap", &insns).unwrap()
}

#[test]
fn decap_strips_the_outer_header_of_a_peers_packet_and_hands_it_on() {
    if !root() {
        return;
    }
    let p = decap_prog();
    let frame = eth(0x0800, &ipv4(PEER, LOCAL, 4, 0x4000, &inner()));
    let (verdict, out) = sys::test_run(&p, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, eth(0x0800, &inner()));
}

#[test]
fn decap_leaves_everything_else_as_it_is() {
    if !root() {
        return;
    }
    let p = decap_prog();
    let mut bad_sum = ipv4(PEER, LOCAL, 4, 0x4000, &inner());
    bad_sum[11] ^= 1;
    let mut not_ipv4_inside = ipv4(PEER, LOCAL, 4, 0x4000, &inner());
    not_ipv4_inside[20] = 0x60;
    let cases = [
        (
            "a non-peer's packet",
            eth(0x0800, &ipv4(OTHER, LOCAL, 4, 0x4000, &inner())),
        ),
        ("a bad outer checksum", eth(0x0800, &bad_sum)),
        (
            "a fragment (more fragments)",
            eth(0x0800, &ipv4(PEER, LOCAL, 4, 0x2000, &inner())),
        ),
        (
            "a fragment (offset)",
            eth(0x0800, &ipv4(PEER, LOCAL, 4, 0x0010, &inner())),
        ),
        (
            "another destination",
            eth(0x0800, &ipv4(PEER, OTHER, 4, 0x4000, &inner())),
        ),
        (
            "not IPIP",
            eth(0x0800, &ipv4(PEER, LOCAL, 17, 0x4000, &inner())),
        ),
        ("not IPv4 inside", eth(0x0800, &not_ipv4_inside)),
        ("too short", eth(0x0800, &ipv4(PEER, LOCAL, 4, 0x4000, &[]))),
        (
            "not IPv4 outside",
            eth(0x86dd, &ipv4(PEER, LOCAL, 4, 0x4000, &inner())),
        ),
    ];
    for (what, frame) in cases {
        let (verdict, out) = sys::test_run(&p, &frame).unwrap();
        assert_eq!(verdict, TCX_NEXT, "{what}");
        assert_eq!(out, frame, "{what}: changed");
    }
}

fn encap_prog_missing(miss: i32) -> std::os::fd::OwnedFd {
    let table = [
        (
            Ipv4Network::new(Ipv4Addr::new(10, 244, 3, 0), 24).unwrap(),
            OTHER,
        ),
        (
            Ipv4Network::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
            PEER,
        ),
    ];
    let insns = progs::encap(&EncapSpec {
        l3: 14,
        local: LOCAL,
        underlay: 1,
        peers: &table,
        miss,
        counters: None,
    })
    .unwrap();
    sys::prog_load("test_encap", &insns).unwrap()
}

fn encap_prog() -> std::os::fd::OwnedFd {
    encap_prog_missing(TCX_NEXT)
}

#[test]
fn encap_puts_the_outer_header_of_kernel_ipip_in_front() {
    if !root() {
        return;
    }
    let p = encap_prog();
    let frame = eth(0x0800, &inner());
    let (verdict, out) = sys::test_run(&p, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let outer = &out[14..34];
    assert_eq!(checksum(outer), 0, "outer checksum: {outer:02x?}");
    let mut want = ipv4(LOCAL, PEER, 4, 0x4000, &inner());
    want[4..6].copy_from_slice(&[0, 0]); // identification 0, as kernel IPIP with DF
    want[10..12].copy_from_slice(&outer[10..12]);
    assert_eq!(out, eth(0x0800, &want));
}

#[test]
fn encap_leaves_other_destinations_and_protocols_to_the_userspace_plane() {
    if !root() {
        return;
    }
    let p = encap_prog();
    let elsewhere = ipv4(
        Ipv4Addr::new(10, 244, 1, 5),
        Ipv4Addr::new(10, 245, 2, 9),
        17,
        0,
        &[1, 2, 3, 4],
    );
    let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
    v6.resize(48, 0);
    for (what, frame) in [
        ("no peer's subnet", eth(0x0800, &elsewhere)),
        ("IPv6", eth(0x86dd, &v6)),
    ] {
        let (verdict, out) = sys::test_run(&p, &frame).unwrap();
        assert_eq!(verdict, TCX_NEXT, "{what}");
        assert_eq!(out, frame, "{what}: changed");
    }
}

#[test]
fn encap_for_a_veth_drops_what_it_cannot_encapsulate() {
    if !root() {
        return;
    }
    let p = encap_prog_missing(TC_ACT_SHOT);
    let elsewhere = ipv4(
        Ipv4Addr::new(10, 244, 1, 5),
        Ipv4Addr::new(10, 245, 2, 9),
        17,
        0,
        &[1, 2, 3, 4],
    );
    let (verdict, _) = sys::test_run(&p, &eth(0x0800, &elsewhere)).unwrap();
    assert_eq!(verdict, TC_ACT_SHOT);
    let (verdict, _) = sys::test_run(&p, &eth(0x0800, &inner())).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT, "a peer's packet still goes");
}

#[test]
fn decap_into_a_veth_addresses_the_other_end() {
    if !root() {
        return;
    }
    let mac = [0x02, 0x5e, 0xb0, 0x01, 0x02, 0x03];
    let insns = progs::decap(&DecapSpec {
        l3: 14,
        local: LOCAL,
        deliver: Deliver::Veth { ifindex: 1, mac },
        counters: None,
        peers: &[PEER],
    })
    .unwrap();
    let p = sys::prog_load("test_decap_veth", &insns).unwrap();
    let frame = eth(0x0800, &ipv4(PEER, LOCAL, 4, 0x4000, &inner()));
    let (verdict, out) = sys::test_run(&p, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let mut want = eth(0x0800, &inner());
    want[..6].copy_from_slice(&mac);
    assert_eq!(out, want);
    let stranger = eth(0x0800, &ipv4(OTHER, LOCAL, 4, 0x4000, &inner()));
    let (verdict, out) = sys::test_run(&p, &stranger).unwrap();
    assert_eq!((verdict, out), (TCX_NEXT, stranger));
}

#[test]
fn both_programs_count_what_they_carry_and_nothing_else() {
    if !root() {
        return;
    }
    let map = sys::counter_map(2).unwrap();
    let fd = Some(std::os::fd::AsRawFd::as_raw_fd(&map));
    let table = [(
        Ipv4Network::new(Ipv4Addr::new(10, 244, 2, 0), 24).unwrap(),
        PEER,
    )];
    let encap = progs::encap(&EncapSpec {
        l3: 14,
        local: LOCAL,
        underlay: 1,
        peers: &table,
        miss: TCX_NEXT,
        counters: fd,
    })
    .unwrap();
    let decap = progs::decap(&DecapSpec {
        l3: 14,
        local: LOCAL,
        deliver: Deliver::Ingress(1),
        peers: &[PEER],
        counters: fd,
    })
    .unwrap();
    let (encap, decap) = (
        sys::prog_load("test_encap_count", &encap).unwrap(),
        sys::prog_load("test_decap_count", &decap).unwrap(),
    );
    let elsewhere = ipv4(LOCAL, Ipv4Addr::new(10, 245, 2, 9), 17, 0, &[1, 2, 3, 4]);
    for _ in 0..3 {
        sys::test_run(&encap, &eth(0x0800, &inner())).unwrap();
        sys::test_run(&encap, &eth(0x0800, &elsewhere)).unwrap();
    }
    for _ in 0..2 {
        sys::test_run(
            &decap,
            &eth(0x0800, &ipv4(PEER, LOCAL, 4, 0x4000, &inner())),
        )
        .unwrap();
        sys::test_run(
            &decap,
            &eth(0x0800, &ipv4(OTHER, LOCAL, 4, 0x4000, &inner())),
        )
        .unwrap();
    }
    let cpus = sys::possible_cpus();
    let sum = |key| sys::counter_sum(&map, key, cpus).unwrap();
    assert_eq!(sum(progs::COUNT_ENCAPSULATED), 3);
    assert_eq!(sum(progs::COUNT_DECAPSULATED), 2);
}

// Host-gw forwarding (`fwd`).

const GATEWAY: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

fn pod(net: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, net, host)
}

fn subnet(net: u8) -> Ipv4Network {
    Ipv4Network::new(pod(net, 0), 24).unwrap()
}

/// An Ethernet frame to `dst_mac` with a UDP packet `src` → `dst` and TTL `ttl` (checksum
/// valid).
fn pod_frame(dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let mut l3 = ipv4(src, dst, 17, 0x4000, &[0x30, 0x39, 0, 0x35, 0, 8, 0, 0]);
    l3[8] = ttl;
    l3[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&l3[..20]);
    l3[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(0x0800, &l3);
    f[..6].copy_from_slice(&dst_mac);
    f
}

/// An ICMP message of `kind` from `src` to `dst`, as it reaches the underlay (TTL 64).
fn icmp_frame(src: Ipv4Addr, dst: Ipv4Addr, kind: u8) -> Vec<u8> {
    let mut f = eth(0x0800, &ipv4(src, dst, 1, 0, &[kind, 0, 0, 0, 0, 0, 0, 0]));
    f[..6].copy_from_slice(&[0; 6]);
    f
}

fn fwd_prog(gateway: Option<[u8; 6]>, counter: Option<(i32, u32)>) -> std::os::fd::OwnedFd {
    let (from, to) = match gateway {
        // A pod port: this node's pods to two peers.
        Some(_) => (vec![subnet(1)], vec![subnet(3), subnet(2)]),
        // The underlay: two peers to this node's pods.
        None => (vec![subnet(3), subnet(2)], vec![subnet(1)]),
    };
    let to = [fwd::Route { nets: &to, out: 1 }];
    let insns = fwd::forward(&fwd::ForwardSpec {
        from: &from,
        to: &to,
        except: &[pod(1, 1), pod(1, 255)],
        icmp_errors_from: &[PEER],
        pods: None,
        gateway,
        counter,
        decap: None,
        encap: None,
    })
    .unwrap();
    sys::prog_load("test_fwd", &insns).unwrap()
}

#[test]
fn forwarding_grows_by_three_instructions_per_subnet() {
    let nets: Vec<Ipv4Network> = (0..100u8).map(subnet).collect();
    let n = |k: usize| {
        fwd::forward(&fwd::ForwardSpec {
            from: &nets[..1],
            to: &[fwd::Route {
                nets: &nets[..k],
                out: 2,
            }],
            except: &[],
            icmp_errors_from: &[],
            pods: None,
            gateway: Some(GATEWAY),
            counter: None,
            decap: None,
            encap: None,
        })
        .unwrap()
        .len()
    };
    assert_eq!(n(100) - n(1), 99 * 3);
}

#[test]
fn forwarding_sends_a_pods_packet_on_with_one_hop_less() {
    if !root() {
        return;
    }
    // From a pod port (to the gateway's MAC) and from the underlay (to this host: the test run's
    // device, loopback, has the all-zero MAC).
    for (gateway, frame) in [
        (Some(GATEWAY), pod_frame(GATEWAY, pod(1, 5), pod(2, 9), 64)),
        (None, pod_frame([0; 6], pod(2, 9), pod(1, 5), 2)),
        // ICMP errors from peer nodes answering this node's pods.
        (None, icmp_frame(PEER, pod(1, 5), 3)),
        (None, icmp_frame(PEER, pod(1, 5), 11)),
    ] {
        let p = fwd_prog(gateway, None);
        let (verdict, out) = sys::test_run(&p, &frame).unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT, "{gateway:?}");
        let mut want = frame.clone();
        want[14 + 8] -= 1;
        assert_eq!(checksum(&out[14..34]), 0, "checksum after the TTL change");
        want[14 + 10..14 + 12].copy_from_slice(&out[14 + 10..14 + 12]);
        assert_eq!(out, want, "only TTL and checksum change");
    }
}

#[test]
fn forwarding_leaves_everything_else_to_the_stack() {
    if !root() {
        return;
    }
    let ok = || pod_frame(GATEWAY, pod(1, 5), pod(2, 9), 64);
    let mut bad_sum = ok();
    bad_sum[14 + 11] ^= 1;
    let mut options = ok();
    options[14] = 0x46;
    let mut long = ok();
    long[14 + 2..14 + 4].copy_from_slice(&200u16.to_be_bytes());
    let mut arp = ok();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    let cases = [
        (
            "another MAC",
            pod_frame([2, 0, 0, 0, 0, 9], pod(1, 5), pod(2, 9), 64),
        ),
        (
            "a source outside",
            pod_frame(GATEWAY, pod(4, 5), pod(2, 9), 64),
        ),
        (
            "a destination outside",
            pod_frame(GATEWAY, pod(1, 5), pod(4, 9), 64),
        ),
        ("TTL 1", pod_frame(GATEWAY, pod(1, 5), pod(2, 9), 1)),
        ("TTL 0", pod_frame(GATEWAY, pod(1, 5), pod(2, 9), 0)),
        ("a bad header checksum", bad_sum),
        ("IP options", options),
        ("a total length beyond the frame", long),
        ("not IPv4", arp),
    ];
    let p = fwd_prog(Some(GATEWAY), None);
    for (what, frame) in cases {
        let (verdict, out) = sys::test_run(&p, &frame).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(verdict, TCX_NEXT, "{what}");
        assert_eq!(out, frame, "{what}: changed");
    }
    // On the underlay: a frame for another host, and one from outside the peers.
    let p = fwd_prog(None, None);
    for (what, frame) in [
        (
            "another host's frame",
            pod_frame([2, 0, 0, 0, 0, 9], pod(2, 9), pod(1, 5), 64),
        ),
        ("not a peer", pod_frame([0; 6], pod(4, 9), pod(1, 5), 64)),
        (
            "to the gateway",
            pod_frame([0; 6], pod(2, 9), pod(1, 1), 64),
        ),
        (
            "to the broadcast address",
            pod_frame([0; 6], pod(2, 9), pod(1, 255), 64),
        ),
        ("an echo from a peer node", icmp_frame(PEER, pod(1, 5), 8)),
        (
            "an ICMP error from a stranger",
            icmp_frame(OTHER, pod(1, 5), 11),
        ),
    ] {
        let (verdict, out) = sys::test_run(&p, &frame).unwrap();
        assert_eq!(verdict, TCX_NEXT, "{what}");
        assert_eq!(out, frame, "{what}: changed");
    }
}

#[test]
fn forwarding_counts_what_it_forwards() {
    if !root() {
        return;
    }
    use std::os::fd::AsRawFd;
    let map = sys::counter_map(2).unwrap();
    let p = fwd_prog(Some(GATEWAY), Some((map.as_raw_fd(), 1)));
    for (frame, forwarded) in [
        (pod_frame(GATEWAY, pod(1, 5), pod(2, 9), 64), true),
        (pod_frame(GATEWAY, pod(1, 5), pod(3, 9), 64), true),
        (pod_frame(GATEWAY, pod(1, 5), pod(4, 9), 64), false),
        (pod_frame(GATEWAY, pod(1, 5), pod(2, 9), 1), false),
    ] {
        let (verdict, _) = sys::test_run(&p, &frame).unwrap();
        assert_eq!(verdict == TC_ACT_REDIRECT, forwarded);
    }
    let cpus = sys::possible_cpus();
    assert_eq!(sys::counter_sum(&map, 1, cpus).unwrap(), 2);
    assert_eq!(sys::counter_sum(&map, 0, cpus).unwrap(), 0);
}

#[test]
fn forwarding_addresses_a_listed_pod_from_the_gateway() {
    if !root() {
        return;
    }
    use std::os::fd::AsRawFd;
    let pods = sys::hash_map::<4, 12>(16).unwrap();
    let mac = [0x0a, 0x58, 10, 244, 1, 5];
    let (k, v) = fwd::pod_entry(pod(1, 5), 1, mac);
    sys::map_set(&pods, &k, &v).unwrap();
    let (from, local) = ([subnet(2)], [subnet(1)]);
    let to = [fwd::Route {
        nets: &local,
        out: 1,
    }];
    let insns = fwd::forward(&fwd::ForwardSpec {
        from: &from,
        to: &to,
        except: &[],
        icmp_errors_from: &[],
        pods: Some(fwd::Pods {
            map: pods.as_raw_fd(),
            gateway: GATEWAY,
        }),
        gateway: None,
        counter: None,
        decap: None,
        encap: None,
    })
    .unwrap();
    let p = sys::prog_load("test_fwd_pods", &insns).unwrap();
    // Listed: the pod's MAC from the gateway's, one hop less.
    let frame = pod_frame([0; 6], pod(2, 9), pod(1, 5), 64);
    let (verdict, out) = sys::test_run(&p, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out[..6], mac);
    assert_eq!(out[6..12], GATEWAY);
    assert_eq!(out[14 + 8], 63);
    assert_eq!(checksum(&out[14..34]), 0);
    assert_eq!(out[14 + 12..], frame[14 + 12..]);
    // Not listed (any more): out of the bridge, link-layer header left to the neighbour code.
    sys::map_remove(&pods, &k).unwrap();
    sys::map_remove(&pods, &k).unwrap();
    let (verdict, out) = sys::test_run(&p, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out[..12], frame[..12]);
    assert_eq!(out[14 + 8], 63);
}

#[test]
fn forwarding_refuses_more_routes_than_it_has_labels_for() {
    let nets = [subnet(2)];
    let routes: Vec<fwd::Route<'_>> = (0..=fwd::MAX_ROUTES as u32)
        .map(|out| fwd::Route { nets: &nets, out })
        .collect();
    let spec = |n: usize| fwd::ForwardSpec {
        from: &nets,
        to: &routes[..n],
        except: &[],
        icmp_errors_from: &[],
        pods: None,
        gateway: None,
        counter: None,
        decap: None,
        encap: None,
    };
    assert!(fwd::forward(&spec(fwd::MAX_ROUTES)).is_ok());
    assert_eq!(
        fwd::forward(&spec(fwd::MAX_ROUTES + 1)).unwrap_err(),
        fwd::FwdError::Routes(fwd::TooManyRoutes(fwd::MAX_ROUTES + 1))
    );
}

// VXLAN decapsulation on the underlay (`fwd::VxlanDecap`).

const VXLAN_MAC: [u8; 6] = [0x02, 0x5e, 192, 0, 2, 1];
const VNI: u32 = 4242;

/// `inner` (an Ethernet frame) in VXLAN from `src` to this node as a peer's VXLAN device sends
/// it: UDP to 4789 with a zero checksum, the VNI flag and [`VNI`].
fn vxlan_frame(src: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let mut udp = vec![0xc3, 0x50, 0x12, 0xb5];
    udp.extend_from_slice(&(16 + inner.len() as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0, 0x08, 0, 0, 0]);
    udp.extend_from_slice(&(VNI << 8).to_be_bytes());
    udp.extend_from_slice(inner);
    let mut f = eth(0x0800, &ipv4(src, LOCAL, 17, 0, &udp));
    f[..6].copy_from_slice(&[0; 6]);
    f
}

fn vxlan_prog() -> std::os::fd::OwnedFd {
    let (from, local) = ([subnet(2)], [subnet(1)]);
    let to = [fwd::Route {
        nets: &local,
        out: 1,
    }];
    let insns = fwd::forward(&fwd::ForwardSpec {
        from: &from,
        to: &to,
        except: &[pod(1, 1), pod(1, 255)],
        icmp_errors_from: &[],
        pods: None,
        gateway: None,
        counter: None,
        decap: Some(fwd::Vxlan {
            dev: 1,
            underlay: 1,
            local: LOCAL,
            peers: &[(subnet(3), OTHER), (subnet(2), PEER)],
            port: 4789,
            vni: VNI,
            mac: VXLAN_MAC,
        }),
        encap: None,
    })
    .unwrap();
    sys::prog_load("test_fwd_vxlan", &insns).unwrap()
}

#[test]
fn vxlan_from_a_peer_is_decapsulated_and_forwarded() {
    if !root() {
        return;
    }
    let p = vxlan_prog();
    let inner = pod_frame(VXLAN_MAC, pod(2, 9), pod(1, 5), 64);
    let frame = vxlan_frame(PEER, &inner);
    let (verdict, out) = sys::test_run(&p, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // The outer Ethernet header (the neighbour code rewrites it) before the inner packet, one
    // hop less.
    assert_eq!(out[..14], frame[..14]);
    let mut want = inner[14..].to_vec();
    want[8] -= 1;
    assert_eq!(checksum(&out[14..34]), 0, "checksum after the TTL change");
    want[10..12].copy_from_slice(&out[24..26]);
    assert_eq!(out[14..], want[..]);
    // Decapsulated but not forwarded (to the gateway, TTL 1): the inner frame exactly, handed
    // to the VXLAN device's ingress.
    for inner in [
        pod_frame(VXLAN_MAC, pod(2, 9), pod(1, 1), 64),
        pod_frame(VXLAN_MAC, pod(2, 9), pod(1, 5), 1),
    ] {
        let (verdict, out) = sys::test_run(&p, &vxlan_frame(PEER, &inner)).unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out, inner);
    }
}

#[test]
fn vxlan_decapsulation_leaves_anything_else_to_the_stack() {
    if !root() {
        return;
    }
    let p = vxlan_prog();
    let ok = || vxlan_frame(PEER, &pod_frame(VXLAN_MAC, pod(2, 9), pod(1, 5), 64));
    let with = |at: usize, bytes: &[u8]| {
        let mut f = ok();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    };
    // Outer header offsets; the header checksum is made valid again where a field changes.
    let fix = |mut f: Vec<u8>| {
        f[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    let mut padded = ok();
    padded.push(0);
    let cases = [
        ("a UDP checksum", with(40, &[0x12, 0x34])),
        ("another VNI", with(46, &[0, 0x10, 0x93])),
        ("another port", with(36, &[0x12, 0xb6])),
        ("other VXLAN flags", with(42, &[0x0c])),
        (
            "a stranger",
            vxlan_frame(Ipv4Addr::new(203, 0, 113, 9), &ok()[50..]),
        ),
        ("a fragment", fix(with(20, &[0x20, 0]))),
        ("a bad outer checksum", with(25, &[0xff])),
        ("another outer destination", fix(with(30, &[192, 0, 2, 2]))),
        (
            "another inner destination MAC",
            with(50, &[2, 0, 0, 0, 0, 9]),
        ),
        ("not IPv4 inside", with(62, &[0x08, 0x06])),
        ("bytes beyond the outer total length", padded),
        ("another host's frame", with(0, &[2, 0, 0, 0, 0, 9])),
    ];
    for (what, frame) in cases {
        let (verdict, out) = sys::test_run(&p, &frame).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(verdict, TCX_NEXT, "{what}");
        assert_eq!(out, frame, "{what}: changed");
    }
}

#[test]
fn vxlan_encapsulation_writes_what_the_peers_device_and_programs_take() {
    if !root() {
        return;
    }
    // The sending program of node PEER (pods in subnet 2) for node LOCAL (pods in subnet 1).
    let (from, to_nets) = ([subnet(2)], [subnet(1)]);
    let peer_mac = crate::peering::plan::vxlan_mac(PEER);
    let peers = [(subnet(1), LOCAL)];
    let insns = fwd::forward(&fwd::ForwardSpec {
        from: &from,
        to: &[fwd::Route {
            nets: &to_nets,
            out: 1,
        }],
        except: &[],
        icmp_errors_from: &[],
        pods: None,
        gateway: Some(GATEWAY),
        counter: None,
        decap: None,
        encap: Some(fwd::Vxlan {
            dev: 1,
            underlay: 1,
            local: PEER,
            peers: &peers,
            port: 4789,
            vni: VNI,
            mac: peer_mac,
        }),
    })
    .unwrap();
    let send = sys::prog_load("test_fwd_vxlan_out", &insns).unwrap();
    let frame = pod_frame(GATEWAY, pod(2, 9), pod(1, 5), 64);
    let (verdict, out) = sys::test_run(&send, &frame).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out.len(), frame.len() + 50);
    assert_eq!(
        out[..14],
        frame[..14],
        "the neighbour code writes the outer MACs"
    );
    let ip = &out[14..34];
    assert_eq!(checksum(ip), 0, "outer header checksum");
    assert_eq!(ip[0], 0x45);
    assert_eq!(
        u16::from_be_bytes([ip[2], ip[3]]) as usize,
        out.len() - 14,
        "total length"
    );
    assert_eq!(ip[6] & 0x40, 0, "DF clear, as the VXLAN device sends");
    assert_eq!((ip[8], ip[9]), (64, 17));
    assert_eq!(ip[12..16], PEER.octets());
    assert_eq!(ip[16..20], LOCAL.octets());
    let udp = &out[34..42];
    assert!(u16::from_be_bytes([udp[0], udp[1]]) >= 49152, "source port");
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), 4789);
    assert_eq!(
        u16::from_be_bytes([udp[4], udp[5]]) as usize,
        out.len() - 34
    );
    assert_eq!(udp[6..8], [0, 0], "no UDP checksum");
    assert_eq!(
        out[42..50],
        [0x08, 0, 0, 0, 0, 0x10, 0x92, 0],
        "VXLAN header"
    );
    assert_eq!(
        out[50..56],
        VXLAN_MAC,
        "inner destination: the peer's VXLAN MAC"
    );
    assert_eq!(out[56..62], peer_mac);
    assert_eq!(out[62..64], [0x08, 0x00]);
    let mut inner = frame[14..].to_vec();
    inner[8] -= 1;
    inner[10..12].copy_from_slice(&out[64 + 10..64 + 12]);
    assert_eq!(out[64..], inner[..], "the inner packet, one hop less");
    assert_eq!(checksum(&out[64..84]), 0);
    // Received by node LOCAL's underlay program: decapsulated and forwarded, one more hop less.
    let mut wire = out.clone();
    wire[..6].copy_from_slice(&[0; 6]);
    let (verdict, back) = sys::test_run(&vxlan_prog(), &wire).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(back[14 + 8], 62);
    assert_eq!(checksum(&back[14..34]), 0);
    assert_eq!(back[14 + 12..], frame[14 + 12..]);
    // Not a VXLAN peer's subnet: no tunnel.
    let other = pod_frame(GATEWAY, pod(2, 9), pod(4, 5), 64);
    let (verdict, out) = sys::test_run(&send, &other).unwrap();
    assert_eq!((verdict, out), (TCX_NEXT, other));
}
