//! Address arithmetic for IPAM: addresses as 128-bit integers and the span a pool hands out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::Pool;

/// Address family of a pool; every number below is interpreted in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    /// Family of a subnet.
    pub(crate) fn of_net(net: &IpNetwork) -> Self {
        match net {
            IpNetwork::V4(_) => Family::V4,
            IpNetwork::V6(_) => Family::V6,
        }
    }

    /// The address as a number if it belongs to this family.
    pub(crate) fn num(self, ip: IpAddr) -> Option<u128> {
        match (self, ip) {
            (Family::V4, IpAddr::V4(a)) => Some(u128::from(u32::from(a))),
            (Family::V6, IpAddr::V6(a)) => Some(u128::from(a)),
            _ => None,
        }
    }

    /// The address with number `n` (truncated to 32 bits for IPv4; callers stay in range).
    pub(crate) fn addr(self, n: u128) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }

    fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// First (network) and last number of a subnet.
pub(crate) fn subnet_ends(net: &IpNetwork) -> (u128, u128) {
    let fam = Family::of_net(net);
    let width = fam.bits();
    let host_bits = width - u32::from(net.prefix()).min(width);
    let full: u128 = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host_mask: u128 = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    // `ip()` may carry host bits (e.g. 10.0.0.7/24); mask them off.
    let ip = fam.num(net.ip()).unwrap_or(0);
    let first = ip & !host_mask & full;
    (first, first | host_mask)
}

/// Inclusive span of numbers `next_free` may hand out, after removing the network address, the
/// IPv4 broadcast (prefixes shorter than /31) and anything outside `pool.range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) family: Family,
    pub(crate) lo: u128,
    pub(crate) hi: u128,
}

impl Span {
    /// The span of `pool`, or `None` when it is empty.
    pub(crate) fn of(pool: &Pool) -> Option<Span> {
        let family = Family::of_net(&pool.subnet);
        let (net, last) = subnet_ends(&pool.subnet);
        let mut lo = net.checked_add(1)?;
        let mut hi = if family == Family::V4 && pool.subnet.prefix() < 31 {
            last.checked_sub(1)?
        } else {
            last
        };
        if let Some((start, end)) = pool.range {
            // A range of the other family hands out nothing.
            lo = lo.max(family.num(start)?);
            hi = hi.min(family.num(end)?);
        }
        (lo <= hi).then_some(Span { family, lo, hi })
    }
}

/// True if `n` is an address of the subnet that is never handed out regardless of `reserved`:
/// the network address and, for IPv4 prefixes shorter than /31, the broadcast.
pub(crate) fn is_structural(net: &IpNetwork, n: u128) -> bool {
    let (first, last) = subnet_ends(net);
    n == first || (Family::of_net(net) == Family::V4 && net.prefix() < 31 && n == last)
}
