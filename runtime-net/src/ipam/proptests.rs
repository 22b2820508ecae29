//! Property tests of the IPAM logic against a brute-force model over small subnets: next-free
//! never hands out a taken, structural (network, IPv4 broadcast), reserved or out-of-range
//! address, walks round-robin after the last one handed out, reports exhaustion exactly when
//! nothing is left, and a release followed by an allocation round-trips.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use proptest::prelude::*;

use super::*;

/// Every address of a (small) subnet, ascending.
fn all(net: &IpNetwork) -> Vec<IpAddr> {
    net.iter().collect()
}

/// The model: may `ip` be handed out dynamically?
fn eligible(pool: &Pool, used: &BTreeSet<IpAddr>, ip: IpAddr) -> bool {
    let addrs = all(&pool.subnet);
    let structural = ip == addrs[0]
        || (pool.subnet.is_ipv4() && pool.subnet.prefix() < 31 && ip == *addrs.last().unwrap());
    let in_range = pool.range.is_none_or(|(a, b)| a <= ip && ip <= b);
    pool.subnet.contains(ip)
        && !structural
        && in_range
        && !pool.reserved.contains(&ip)
        && !used.contains(&ip)
}

/// A pool over `net` with picks (indexes into the subnet) for reserved and used addresses and
/// an optional range.
fn pool_strategy(v6: bool) -> impl Strategy<Value = (Pool, BTreeSet<IpAddr>, Option<IpAddr>)> {
    let net = if v6 {
        (120u8..=127, any::<u16>())
            .prop_map(|(p, x)| {
                IpNetwork::V6(
                    Ipv6Network::new(Ipv6Addr::new(0xfd00, x, 0, 0, 0, 0, 0, 0), p).unwrap(),
                )
            })
            .boxed()
    } else {
        (22u8..=32, any::<u8>())
            .prop_map(|(p, x)| {
                let n = Ipv4Network::new(Ipv4Addr::new(10, x, 0, 0), p).unwrap();
                IpNetwork::V4(Ipv4Network::new(n.network(), p).unwrap())
            })
            .boxed()
    };
    net.prop_flat_map(|net| {
        let size = all(&net).len();
        (
            Just(net),
            proptest::collection::vec(0..size, 0..4),
            proptest::collection::vec(0..size, 0..size.min(300)),
            proptest::option::of((0..size, 0..size)),
            proptest::option::of(0..size),
        )
    })
    .prop_map(|(net, reserved, used, range, last)| {
        let a = all(&net);
        let mut pool = Pool::new(net);
        for i in reserved {
            pool = pool.with_reserved(a[i]);
        }
        if let Some((x, y)) = range {
            pool = pool.with_range(a[x.min(y)], a[x.max(y)]);
        }
        let used = used.into_iter().map(|i| a[i]).collect();
        (pool, used, last.map(|i| a[i]))
    })
}

fn check_next_free(pool: &Pool, used: &BTreeSet<IpAddr>, last: Option<IpAddr>) {
    let candidates: Vec<IpAddr> = all(&pool.subnet)
        .into_iter()
        .filter(|ip| eligible(pool, used, *ip))
        .collect();
    let got = next_free(pool, used, last);
    match candidates.first() {
        None => assert_eq!(got, Err(IpamError::Exhausted(pool.subnet))),
        Some(&lowest) => {
            let ip = got.expect("a free address exists");
            assert!(eligible(pool, used, ip), "{ip} is not eligible in {pool:?}");
            // Round-robin: the first eligible address after `last`, wrapping to the lowest.
            let want = last
                .and_then(|l| candidates.iter().copied().find(|c| *c > l))
                .unwrap_or(lowest);
            assert_eq!(ip, want, "after {last:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn next_free_v4_matches_the_model((pool, used, last) in pool_strategy(false)) {
        check_next_free(&pool, &used, last);
    }

    #[test]
    fn next_free_v6_matches_the_model((pool, used, last) in pool_strategy(true)) {
        check_next_free(&pool, &used, last);
    }

    /// Allocating until exhaustion hands out every eligible address exactly once; releasing one
    /// and allocating again gives that one back.
    #[test]
    fn fill_release_allocate_round_trips((pool, used, _) in pool_strategy(false), pick in any::<usize>()) {
        let mut taken = used.clone();
        let mut last = None;
        let mut handed = Vec::new();
        while let Ok(ip) = next_free(&pool, &taken, last) {
            prop_assert!(taken.insert(ip), "{} handed out twice", ip);
            handed.push(ip);
            last = Some(ip);
        }
        let expected = all(&pool.subnet).into_iter().filter(|ip| eligible(&pool, &used, *ip)).count();
        prop_assert_eq!(handed.len(), expected);
        if !handed.is_empty() {
            let back = handed[pick % handed.len()];
            taken.remove(&back);
            prop_assert_eq!(next_free(&pool, &taken, last), Ok(back));
        }
    }

    /// A static request is granted exactly for subnet addresses that are neither structural,
    /// reserved nor used (the range does not limit static requests).
    #[test]
    fn check_static_matches_the_model((pool, used, _) in pool_strategy(false), n in any::<u32>()) {
        let ip = IpAddr::V4(Ipv4Addr::from(n % 8 + u32::from(match pool.subnet.network() { IpAddr::V4(a) => a, _ => unreachable!() }).wrapping_sub(2)));
        let unranged = Pool { range: None, ..pool.clone() };
        prop_assert_eq!(check_static(&pool, &used, ip).is_ok(), eligible(&unranged, &used, ip));
    }
}
