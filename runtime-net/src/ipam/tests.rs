//! Unit tests of the pure IPAM logic.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::types::{IfName, MacPrefix, NetworkName};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(subnet: &str) -> Pool {
    Pool::new(subnet.parse().unwrap())
}

fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
    ips.iter().map(|s| ip(s)).collect()
}

/// Allocates `n` addresses in a row, feeding each result back as `last` and into `used`.
fn take(pool: &Pool, used: &mut BTreeSet<IpAddr>, last: &mut Option<IpAddr>, n: usize) {
    for _ in 0..n {
        let a = next_free(pool, used, *last).unwrap();
        assert!(used.insert(a), "{a} handed out twice");
        *last = Some(a);
    }
}

#[test]
fn first_address_skips_network_and_reserved_gateway() {
    let p = pool("10.1.0.0/24").with_reserved(ip("10.1.0.1"));
    assert_eq!(next_free(&p, &set(&[]), None).unwrap(), ip("10.1.0.2"));
}

#[test]
fn starts_after_last_and_skips_used() {
    let p = pool("10.1.0.0/24");
    let used = set(&["10.1.0.6", "10.1.0.7"]);
    assert_eq!(
        next_free(&p, &used, Some(ip("10.1.0.5"))).unwrap(),
        ip("10.1.0.8")
    );
}

#[test]
fn released_address_is_not_handed_straight_back() {
    let p = pool("10.1.0.0/24").with_reserved(ip("10.1.0.1"));
    let mut used = BTreeSet::new();
    let mut last = None;
    take(&p, &mut used, &mut last, 3); // .2 .3 .4
    used.remove(&ip("10.1.0.4"));
    assert_eq!(next_free(&p, &used, last).unwrap(), ip("10.1.0.5"));
    used.remove(&ip("10.1.0.2"));
    assert_eq!(next_free(&p, &used, last).unwrap(), ip("10.1.0.5"));
}

#[test]
fn wraps_around_to_the_start() {
    let p = pool("10.1.0.0/24").with_reserved(ip("10.1.0.1"));
    let used = set(&["10.1.0.3", "10.1.0.254"]);
    // After .253 only .254 is left above, and it is used: wrap to .2.
    assert_eq!(
        next_free(&p, &used, Some(ip("10.1.0.253"))).unwrap(),
        ip("10.1.0.2")
    );
    // Last at the very top wraps too.
    assert_eq!(
        next_free(&p, &set(&[]), Some(ip("10.1.0.254"))).unwrap(),
        ip("10.1.0.2")
    );
}

#[test]
fn broadcast_is_never_handed_out() {
    let p = pool("10.1.0.0/24");
    assert_eq!(
        next_free(&p, &set(&[]), Some(ip("10.1.0.253"))).unwrap(),
        ip("10.1.0.254")
    );
    assert_eq!(
        next_free(&p, &set(&[]), Some(ip("10.1.0.254"))).unwrap(),
        ip("10.1.0.1")
    );
}

#[test]
fn exhaustion_of_small_pools() {
    // /30: .1 and .2 usable; gateway .1 reserved leaves one.
    let p = pool("192.168.5.0/30").with_reserved(ip("192.168.5.1"));
    let mut used = BTreeSet::new();
    let mut last = None;
    take(&p, &mut used, &mut last, 1);
    assert_eq!(used, set(&["192.168.5.2"]));
    for l in [None, last, Some(ip("192.168.5.1")), Some(ip("192.168.5.3"))] {
        assert_eq!(next_free(&p, &used, l), Err(IpamError::Exhausted(p.subnet)));
    }
    // /29 restricted to .4-.6 with .5 reserved: exactly two addresses.
    let p = pool("192.168.6.0/29")
        .with_range(ip("192.168.6.4"), ip("192.168.6.6"))
        .with_reserved(ip("192.168.6.5"));
    let mut used = BTreeSet::new();
    let mut last = None;
    take(&p, &mut used, &mut last, 2);
    assert_eq!(used, set(&["192.168.6.4", "192.168.6.6"]));
    assert!(matches!(
        next_free(&p, &used, last),
        Err(IpamError::Exhausted(_))
    ));
    // Freeing one makes it available again, from any starting point.
    used.remove(&ip("192.168.6.4"));
    assert_eq!(next_free(&p, &used, last).unwrap(), ip("192.168.6.4"));
    assert_eq!(next_free(&p, &used, None).unwrap(), ip("192.168.6.4"));
}

#[test]
fn fills_a_whole_pool_exactly_once() {
    let p = pool("172.20.0.0/26").with_reserved(ip("172.20.0.1"));
    let mut used = BTreeSet::new();
    let mut last = None;
    take(&p, &mut used, &mut last, 61); // 64 - network - broadcast - gateway
    assert!(next_free(&p, &used, last).is_err());
    assert!(!used.contains(&ip("172.20.0.0")));
    assert!(!used.contains(&ip("172.20.0.63")));
    assert!(!used.contains(&ip("172.20.0.1")));
}

#[test]
fn degenerate_prefixes() {
    // /31: the network address is reserved, the other one is usable (no broadcast).
    let p = pool("10.9.9.0/31");
    assert_eq!(next_free(&p, &set(&[]), None).unwrap(), ip("10.9.9.1"));
    assert!(next_free(&p, &set(&["10.9.9.1"]), None).is_err());
    // /32: nothing.
    assert!(next_free(&pool("10.9.9.9/32"), &set(&[]), None).is_err());
    assert!(next_free(&pool("fd00::1/128"), &set(&[]), None).is_err());
    // /127: second address usable.
    assert_eq!(
        next_free(&pool("fd00::/127"), &set(&[]), None).unwrap(),
        ip("fd00::1")
    );
}

#[test]
fn subnet_given_with_host_bits() {
    let p = pool("10.3.0.77/24");
    assert_eq!(next_free(&p, &set(&[]), None).unwrap(), ip("10.3.0.1"));
    assert_eq!(
        check_static(&p, &set(&[]), ip("10.3.0.0")),
        Err(IpamError::Reserved(ip("10.3.0.0")))
    );
}

#[test]
fn range_restricts_dynamic_allocation() {
    let p = pool("10.2.0.0/16")
        .with_reserved(ip("10.2.0.1"))
        .with_range(ip("10.2.5.10"), ip("10.2.5.12"));
    let mut used = BTreeSet::new();
    let mut last = None;
    take(&p, &mut used, &mut last, 3);
    assert_eq!(used, set(&["10.2.5.10", "10.2.5.11", "10.2.5.12"]));
    assert!(next_free(&p, &used, last).is_err());
    // A last address outside the range starts from the range's beginning.
    used.clear();
    assert_eq!(
        next_free(&p, &used, Some(ip("10.2.9.9"))).unwrap(),
        ip("10.2.5.10")
    );
    // A range wider than the subnet is clipped to it.
    let p = pool("10.4.0.0/30").with_range(ip("10.3.0.0"), ip("10.5.0.0"));
    let mut used = BTreeSet::new();
    let mut last = None;
    take(&p, &mut used, &mut last, 2);
    assert_eq!(used, set(&["10.4.0.1", "10.4.0.2"]));
    // A range of the other family hands out nothing.
    let p = pool("10.4.0.0/24").with_range(ip("fd00::1"), ip("fd00::9"));
    assert!(next_free(&p, &set(&[]), None).is_err());
}

#[test]
fn static_requests() {
    let p = pool("10.1.0.0/24")
        .with_reserved(ip("10.1.0.1"))
        .with_reserved(ip("10.1.0.200"))
        .with_range(ip("10.1.0.100"), ip("10.1.0.150"));
    let used = set(&["10.1.0.5"]);
    assert_eq!(check_static(&p, &used, ip("10.1.0.6")), Ok(()));
    // Inside the subnet but outside the range: allowed (the range only limits dynamic picks).
    assert_eq!(check_static(&p, &used, ip("10.1.0.160")), Ok(()));
    assert_eq!(
        check_static(&p, &used, ip("10.1.0.5")),
        Err(IpamError::InUse(ip("10.1.0.5")))
    );
    for r in ["10.1.0.0", "10.1.0.255", "10.1.0.1", "10.1.0.200"] {
        assert_eq!(
            check_static(&p, &used, ip(r)),
            Err(IpamError::Reserved(ip(r))),
            "{r}"
        );
    }
    for o in ["10.1.1.5", "fd00::5"] {
        assert_eq!(
            check_static(&p, &used, ip(o)),
            Err(IpamError::OutOfPool {
                ip: ip(o),
                pool: p.subnet
            }),
            "{o}"
        );
    }
    // /31 and IPv6: the last address is not a broadcast.
    assert_eq!(
        check_static(&pool("10.0.0.0/31"), &used, ip("10.0.0.1")),
        Ok(())
    );
    assert_eq!(
        check_static(&pool("fd00::/64"), &used, ip("fd00::ffff:ffff:ffff:ffff")),
        Ok(())
    );
    assert_eq!(
        check_static(&pool("fd00::/64"), &used, ip("fd00::")),
        Err(IpamError::Reserved(ip("fd00::")))
    );
}

#[test]
fn ipv6_allocation_wraps_and_skips() {
    let p = pool("fd00:1::/120").with_reserved(ip("fd00:1::1"));
    let used = set(&["fd00:1::2", "fd00:1::3"]);
    assert_eq!(next_free(&p, &used, None).unwrap(), ip("fd00:1::4"));
    // The last address of an IPv6 subnet is usable, then it wraps.
    assert_eq!(
        next_free(&p, &used, Some(ip("fd00:1::fe"))).unwrap(),
        ip("fd00:1::ff")
    );
    assert_eq!(
        next_free(&p, &used, Some(ip("fd00:1::ff"))).unwrap(),
        ip("fd00:1::4")
    );
    // A last address of the other family is ignored.
    assert_eq!(
        next_free(&p, &used, Some(ip("10.0.0.1"))).unwrap(),
        ip("fd00:1::4")
    );
}

#[test]
fn huge_ipv6_pools_are_cheap() {
    // /0 and /64: arithmetic near u128::MAX must not overflow.
    let p = pool("::/0");
    assert_eq!(
        next_free(&p, &set(&[]), Some(IpAddr::V6(Ipv6Addr::from(u128::MAX)))).unwrap(),
        ip("::1")
    );
    assert_eq!(
        next_free(
            &p,
            &set(&[]),
            Some(IpAddr::V6(Ipv6Addr::from(u128::MAX - 1)))
        )
        .unwrap(),
        IpAddr::V6(Ipv6Addr::from(u128::MAX))
    );
    let p = pool("fd00:2::/64");
    let base = u128::from("fd00:2::".parse::<Ipv6Addr>().unwrap());
    let used: BTreeSet<IpAddr> = (1..=5000u128)
        .map(|i| IpAddr::V6(Ipv6Addr::from(base + i)))
        .collect();
    let t = std::time::Instant::now();
    assert_eq!(
        next_free(&p, &used, None).unwrap(),
        IpAddr::V6(Ipv6Addr::from(base + 5001))
    );
    assert!(t.elapsed().as_millis() < 500, "{:?}", t.elapsed());
}

/// Counts how many used addresses the scan looks at: bounded by the used set, not the subnet.
#[test]
fn work_is_bounded_by_used_and_reserved() {
    // A /16 with every address used but one just before `last`: the wrap finds it.
    let p = pool("10.50.0.0/16").with_reserved(ip("10.50.0.1"));
    let free = ip("10.50.100.99");
    let last = ip("10.50.100.100");
    let used: BTreeSet<IpAddr> = (2u32..65535)
        .map(|i| IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 50, 0, 0)) + i)))
        .filter(|a| *a != free)
        .collect();
    let pulled = Cell::new(0usize);
    let mut calls = 0usize;
    let got = next_free_in(&p, Some(last), |lo, hi| {
        calls += 1;
        Ok::<_, Infallible>(used.range(lo..=hi).map(|a| {
            pulled.set(pulled.get() + 1);
            Ok(*a)
        }))
    })
    .unwrap()
    .unwrap();
    assert_eq!(got, free);
    assert_eq!(calls, 2);
    assert!(pulled.get() <= used.len() + 2, "{}", pulled.get());

    // Fully used: exhaustion is detected after looking at each used address once.
    let mut full = used.clone();
    full.insert(free);
    let pulled = Cell::new(0usize);
    let got = next_free_in(&p, Some(last), |lo, hi| {
        Ok::<_, Infallible>(full.range(lo..=hi).map(|a| {
            pulled.set(pulled.get() + 1);
            Ok(*a)
        }))
    })
    .unwrap();
    assert_eq!(got, Err(IpamError::Exhausted(p.subnet)));
    assert!(pulled.get() <= full.len() + 2, "{}", pulled.get());
}

#[test]
fn scan_errors_are_passed_through() {
    let p = pool("10.1.0.0/24");
    let r = next_free_in(&p, None, |_, _| {
        Ok::<_, &str>(std::iter::once(Err::<IpAddr, _>("disk on fire")))
    });
    assert_eq!(r, Err("disk on fire"));
    let r = next_free_in(&p, None, |_, _| {
        Err::<std::iter::Empty<Result<IpAddr, &str>>, _>("no table")
    });
    assert_eq!(r, Err("no table"));
}

fn spec(prefix: MacPrefix) -> NetworkSpec {
    NetworkSpec {
        name: NetworkName::new("n1").unwrap(),
        bridge: IfName::new("br-n1").unwrap(),
        subnet: "10.88.0.0/16".parse().unwrap(),
        gateway: "10.88.0.1".parse().unwrap(),
        range4: None,
        subnet6: None,
        gateway6: None,
        mtu: 1500,
        masquerade: true,
        icc: true,
        internal: false,
        hairpin: false,
        no_masquerade_to: vec![],
        allow_from: vec![],
        host_binding_ipv4: None,
        mac_prefix: prefix,
    }
}

#[test]
fn default_macs() {
    let a = Ipv4Addr::new(10, 88, 1, 2);
    assert_eq!(
        default_mac(&spec(MacPrefix([2, 0x42])), a).to_string(),
        "02:42:0a:58:01:02"
    );
    let m = default_mac(&spec(MacPrefix::default()), a);
    assert_eq!(m.to_string(), "0a:58:0a:58:01:02");
    assert!(m.is_valid_unicast());
    assert_eq!(m.0[0] & 0x02, 0x02, "locally administered");
}
