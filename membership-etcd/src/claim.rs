//! Which subnet a node claims (pure). The claim itself is one compare-and-set transaction (the
//! reservation key must not exist), so two nodes never hold one subnet however many start at
//! once; a node that loses the race asks again with the next attempt number, which spreads the
//! retries over the free subnets instead of piling them onto the lowest one.
//!
//! Preference: the subnet the configuration names (exactly that one, or a refusal naming its
//! holder); else the subnet this node's name already holds; else the one remembered in the
//! state dir if it is still free; else the first free one (first attempt) or a free one picked
//! from the node's name and the attempt number (later attempts).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

/// What to do in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPlan {
    /// The subnet this node ends up with.
    pub subnet: Ipv4Network,
    /// Whether its reservation must be created (compare-and-set on absence).
    pub create: bool,
    /// Other reservations of this node to delete in the same transaction.
    pub release: Vec<Ipv4Network>,
}

/// No subnet can be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// The configured subnet is held by another node.
    #[error("node.pod_cidr {subnet} is held by node {holder:?}; choose another subnet or remove the pod_cidr line to lease one")]
    Taken {
        /// The subnet.
        subnet: Ipv4Network,
        /// Its holder.
        holder: String,
    },
    /// The configured subnet does not fit the cluster.
    #[error("node.pod_cidr {subnet}: {why}")]
    Unfit {
        /// The subnet.
        subnet: Ipv4Network,
        /// Why.
        why: String,
    },
    /// Every subnet is reserved.
    #[error("cluster_cidr {cluster} has no free /{len} left ({reserved} reserved)")]
    Exhausted {
        /// The cluster CIDR.
        cluster: Ipv4Network,
        /// Subnet size.
        len: u8,
        /// Reservations seen.
        reserved: usize,
    },
}

/// The inputs of a claim.
#[derive(Debug, Clone)]
pub struct ClaimInput<'a> {
    /// This node's name.
    pub me: &'a str,
    /// This node's underlay address (never inside its own subnet).
    pub address: Ipv4Addr,
    /// Cluster CIDR.
    pub cluster: Ipv4Network,
    /// Subnet size.
    pub len: u8,
    /// `[node] pod_cidr`, when set.
    pub wanted: Option<Ipv4Network>,
    /// The subnet remembered in the state dir.
    pub remembered: Option<Ipv4Network>,
    /// Every reservation: subnet → holder.
    pub reservations: &'a BTreeMap<Ipv4Network, String>,
    /// 0 for the first try, +1 after each lost compare-and-set.
    pub attempt: u32,
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The `i`th `/len` subnet of `cluster`.
fn nth(cluster: Ipv4Network, len: u8, i: u64) -> Ipv4Network {
    let base = u64::from(u32::from(cluster.network()));
    let ip = Ipv4Addr::from((base + (i << (32 - u32::from(len)))) as u32);
    Ipv4Network::new(ip, len).expect("len <= 32")
}

/// Decides the claim.
pub fn plan(i: &ClaimInput<'_>) -> Result<ClaimPlan, ClaimError> {
    let mine: Vec<Ipv4Network> = i
        .reservations
        .iter()
        .filter(|(_, h)| h.as_str() == i.me)
        .map(|(n, _)| *n)
        .collect();
    let fits = |n: Ipv4Network| {
        n.prefix() == i.len
            && n.ip() == n.network()
            && runtime_net::peering::peers::is_subnet(n, i.cluster)
            && !n.contains(i.address)
    };
    let take = |subnet: Ipv4Network| ClaimPlan {
        subnet,
        create: !mine.contains(&subnet),
        release: mine.iter().copied().filter(|n| *n != subnet).collect(),
    };
    if let Some(w) = i.wanted {
        if !fits(w) {
            let why = if w.prefix() != i.len {
                format!("the cluster leases /{} subnets", i.len)
            } else if w.contains(i.address) {
                format!("contains this node's address {}", i.address)
            } else {
                format!("not a /{} inside cluster_cidr {}", i.len, i.cluster)
            };
            return Err(ClaimError::Unfit { subnet: w, why });
        }
        return match i.reservations.get(&w) {
            Some(h) if h != i.me => Err(ClaimError::Taken {
                subnet: w,
                holder: h.clone(),
            }),
            _ => Ok(take(w)),
        };
    }
    if let Some(keep) = i
        .remembered
        .filter(|r| mine.contains(r))
        .or_else(|| mine.first().copied())
    {
        return Ok(take(keep));
    }
    if let Some(r) = i
        .remembered
        .filter(|r| fits(*r) && !i.reservations.contains_key(r))
    {
        return Ok(take(r));
    }
    let count = 1u64 << (i.len - i.cluster.prefix());
    let start = if i.attempt == 0 {
        0
    } else {
        fnv1a(&[i.me.as_bytes(), &i.attempt.to_be_bytes()]) % count
    };
    // Bounded: at most every reservation plus one subnet holding the node's address is skipped.
    let limit = count.min(i.reservations.len() as u64 + 2);
    for k in 0..limit {
        let n = nth(i.cluster, i.len, (start + k) % count);
        if fits(n) && !i.reservations.contains_key(&n) {
            return Ok(take(n));
        }
    }
    // The window was full of reservations: scan everything (only on a nearly full cluster).
    (0..count)
        .map(|k| nth(i.cluster, i.len, (start + k) % count))
        .find(|n| fits(*n) && !i.reservations.contains_key(n))
        .map(take)
        .ok_or(ClaimError::Exhausted {
            cluster: i.cluster,
            len: i.len,
            reserved: i.reservations.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    fn input<'a>(res: &'a BTreeMap<Ipv4Network, String>) -> ClaimInput<'a> {
        ClaimInput {
            me: "node-a",
            address: "172.30.0.10".parse().unwrap(),
            cluster: net("10.244.0.0/16"),
            len: 24,
            wanted: None,
            remembered: None,
            reservations: res,
            attempt: 0,
        }
    }

    fn held(list: &[(&str, &str)]) -> BTreeMap<Ipv4Network, String> {
        list.iter().map(|(n, h)| (net(n), h.to_string())).collect()
    }

    #[test]
    fn first_free_then_spread_after_a_lost_race() {
        let res = held(&[("10.244.0.0/24", "x"), ("10.244.1.0/24", "y")]);
        let p = plan(&input(&res)).unwrap();
        assert_eq!(
            p,
            ClaimPlan {
                subnet: net("10.244.2.0/24"),
                create: true,
                release: vec![]
            }
        );
        let mut seen = std::collections::BTreeSet::new();
        for attempt in 1..20 {
            let p = plan(&ClaimInput {
                attempt,
                ..input(&res)
            })
            .unwrap();
            assert!(!res.contains_key(&p.subnet));
            seen.insert(p.subnet);
        }
        assert!(seen.len() > 10, "retries spread: {seen:?}");
    }

    #[test]
    fn sticky_by_name_and_by_memory() {
        let res = held(&[("10.244.0.0/24", "x"), ("10.244.9.0/24", "node-a")]);
        let p = plan(&input(&res)).unwrap();
        assert_eq!((p.subnet, p.create), (net("10.244.9.0/24"), false));
        // Reservations wiped (new etcd): the remembered subnet is taken again if free.
        let empty = BTreeMap::new();
        let p = plan(&ClaimInput {
            remembered: Some(net("10.244.9.0/24")),
            ..input(&empty)
        })
        .unwrap();
        assert_eq!((p.subnet, p.create), (net("10.244.9.0/24"), true));
        // ... and not if someone else holds it meanwhile.
        let res = held(&[("10.244.9.0/24", "z")]);
        let p = plan(&ClaimInput {
            remembered: Some(net("10.244.9.0/24")),
            ..input(&res)
        })
        .unwrap();
        assert_eq!(p.subnet, net("10.244.0.0/24"));
        // Two reservations of one name: the remembered one is kept, the other released.
        let res = held(&[("10.244.3.0/24", "node-a"), ("10.244.9.0/24", "node-a")]);
        let p = plan(&ClaimInput {
            remembered: Some(net("10.244.9.0/24")),
            ..input(&res)
        })
        .unwrap();
        assert_eq!(
            p,
            ClaimPlan {
                subnet: net("10.244.9.0/24"),
                create: false,
                release: vec![net("10.244.3.0/24")]
            }
        );
    }

    #[test]
    fn configured_subnet_is_exact_or_refused_naming_the_holder() {
        let res = held(&[("10.244.5.0/24", "node-b"), ("10.244.9.0/24", "node-a")]);
        let e = plan(&ClaimInput {
            wanted: Some(net("10.244.5.0/24")),
            ..input(&res)
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "node.pod_cidr 10.244.5.0/24 is held by node \"node-b\"; choose another subnet or remove the pod_cidr line to lease one"
        );
        // A free configured subnet replaces the node's old reservation in one transaction.
        let p = plan(&ClaimInput {
            wanted: Some(net("10.244.6.0/24")),
            ..input(&res)
        })
        .unwrap();
        assert_eq!(
            p,
            ClaimPlan {
                subnet: net("10.244.6.0/24"),
                create: true,
                release: vec![net("10.244.9.0/24")]
            }
        );
        for bad in ["10.244.6.0/25", "10.245.0.0/24"] {
            let e = plan(&ClaimInput {
                wanted: Some(net(bad)),
                ..input(&res)
            })
            .unwrap_err();
            assert!(matches!(e, ClaimError::Unfit { .. }), "{e}");
        }
    }

    #[test]
    fn never_the_subnet_holding_the_node_address_and_exhaustion_is_named() {
        let empty = BTreeMap::new();
        let i = ClaimInput {
            address: "10.244.0.7".parse().unwrap(),
            ..input(&empty)
        };
        assert_eq!(plan(&i).unwrap().subnet, net("10.244.1.0/24"));
        let small = ClaimInput {
            cluster: net("10.244.0.0/23"),
            ..input(&empty)
        };
        let res = held(&[("10.244.0.0/24", "x"), ("10.244.1.0/24", "y")]);
        let e = plan(&ClaimInput {
            reservations: &res,
            attempt: 3,
            ..small
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cluster_cidr 10.244.0.0/23 has no free /24 left (2 reserved)"
        );
    }

    #[test]
    fn a_nearly_full_cluster_still_finds_the_last_free_subnet() {
        let mut res: BTreeMap<Ipv4Network, String> = (0..256u32)
            .map(|k| (nth(net("10.244.0.0/16"), 24, u64::from(k)), format!("n{k}")))
            .collect();
        res.remove(&net("10.244.200.0/24"));
        for attempt in 0..5 {
            let p = plan(&ClaimInput {
                attempt,
                ..input(&res)
            })
            .unwrap();
            assert_eq!(p.subnet, net("10.244.200.0/24"));
        }
    }
}
