//! IPAM pure logic: address pools, next-free allocation, static requests, MAC choice.
//!
//! Nothing here touches storage: the store feeds the used addresses in, either as a set
//! ([`next_free`]) or as an ordered scan of its allocation table ([`next_free_in`]). Work per call
//! is bounded by the number of used and reserved addresses met, never by the size of the subnet,
//! so huge IPv6 pools cost the same as small IPv4 ones.

#[cfg(test)]
mod proptests;
mod span;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;

use crate::types::{MacAddr, NetworkSpec};
pub(crate) use span::Family;
use span::{is_structural, Span};

/// An address pool: a subnet with optional allocation range and reserved addresses.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    /// Subnet addresses are taken from.
    pub subnet: IpNetwork,
    /// First and last address that may be handed out (inclusive); whole subnet when `None`.
    pub range: Option<(IpAddr, IpAddr)>,
    /// Addresses never handed out by next-free (gateway, auxiliary addresses).
    pub reserved: BTreeSet<IpAddr>,
}

impl Pool {
    /// A pool covering the whole of `subnet`, nothing reserved beyond network/broadcast.
    pub fn new(subnet: IpNetwork) -> Self {
        Pool {
            subnet,
            range: None,
            reserved: BTreeSet::new(),
        }
    }

    /// Adds `ip` to the reserved addresses.
    pub fn with_reserved(mut self, ip: IpAddr) -> Self {
        self.reserved.insert(ip);
        self
    }

    /// Restricts dynamic allocation to `first..=last`.
    pub fn with_range(mut self, first: IpAddr, last: IpAddr) -> Self {
        self.range = Some((first, last));
        self
    }

    /// The IPv4 pool of a network: its subnet with the gateway reserved.
    pub fn ipv4_of(spec: &NetworkSpec) -> Self {
        let pool = Pool::new(IpNetwork::V4(spec.subnet)).with_reserved(IpAddr::V4(spec.gateway));
        match spec.range4 {
            Some((first, last)) => pool.with_range(IpAddr::V4(first), IpAddr::V4(last)),
            None => pool,
        }
    }

    /// The IPv6 pool of a network, if it has IPv6: its subnet with the gateway reserved.
    pub fn ipv6_of(spec: &NetworkSpec) -> Option<Self> {
        let pool = Pool::new(IpNetwork::V6(spec.subnet6?));
        Some(match spec.gateway6 {
            Some(gw) => pool.with_reserved(IpAddr::V6(gw)),
            None => pool,
        })
    }

    /// Address family of the subnet.
    pub(crate) fn family(&self) -> Family {
        Family::of_net(&self.subnet)
    }
}

/// Why an allocation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// Every address of the pool is taken.
    #[error("address pool {0} is exhausted")]
    Exhausted(IpNetwork),
    /// The requested address is outside the pool.
    #[error("address {ip} is outside pool {pool}")]
    OutOfPool { ip: IpAddr, pool: IpNetwork },
    /// The requested address is reserved (network, broadcast, gateway...).
    #[error("address {0} is reserved")]
    Reserved(IpAddr),
    /// The requested address is already allocated.
    #[error("address {0} is already in use")]
    InUse(IpAddr),
}

/// Next free address after `last` (wrapping), never network/broadcast/reserved/used.
///
/// Starting after the last address handed out (as the reference host-local IPAM does) means a just-released
/// address is not handed straight back. Only addresses inside `pool.range` are handed out.
pub fn next_free(
    pool: &Pool,
    used: &BTreeSet<IpAddr>,
    last: Option<IpAddr>,
) -> Result<IpAddr, IpamError> {
    let scan = next_free_in(pool, last, |lo, hi| {
        Ok::<_, Infallible>(used.range(lo..=hi).map(|ip| Ok(*ip)))
    });
    match scan {
        Ok(res) => res,
        Err(never) => match never {},
    }
}

/// [`next_free`] over a used set the caller scans itself (e.g. a database range scan).
///
/// `used_between(lo, hi)` must yield, in ascending order, the used addresses between `lo` and
/// `hi` inclusive (both of the pool's family); it is called at most twice and iterated only as
/// far as needed. The outer `Result` carries the scan's own errors.
pub fn next_free_in<E, I, F>(
    pool: &Pool,
    last: Option<IpAddr>,
    mut used_between: F,
) -> Result<Result<IpAddr, IpamError>, E>
where
    F: FnMut(IpAddr, IpAddr) -> Result<I, E>,
    I: Iterator<Item = Result<IpAddr, E>>,
{
    let exhausted = Ok(Err(IpamError::Exhausted(pool.subnet)));
    let Some(span) = Span::of(pool) else {
        return exhausted;
    };
    let start = match last.and_then(|ip| span.family.num(ip)) {
        Some(l) if l >= span.lo && l < span.hi => l + 1,
        _ => span.lo,
    };
    if let Some(n) = first_free(pool, span.family, start, span.hi, &mut used_between)? {
        return Ok(Ok(span.family.addr(n)));
    }
    if start > span.lo {
        if let Some(n) = first_free(pool, span.family, span.lo, start - 1, &mut used_between)? {
            return Ok(Ok(span.family.addr(n)));
        }
    }
    exhausted
}

/// Lowest number in `lo..=hi` that is neither used nor reserved. Walks the two ordered lists
/// side by side, so each step past a taken number consumes one entry of a list.
fn first_free<E, I, F>(
    pool: &Pool,
    fam: Family,
    lo: u128,
    hi: u128,
    used_between: &mut F,
) -> Result<Option<u128>, E>
where
    F: FnMut(IpAddr, IpAddr) -> Result<I, E>,
    I: Iterator<Item = Result<IpAddr, E>>,
{
    let (lo_ip, hi_ip) = (fam.addr(lo), fam.addr(hi));
    let mut used = Ascending::new(used_between(lo_ip, hi_ip)?);
    let mut reserved = Ascending::new(pool.reserved.range(lo_ip..=hi_ip).map(|ip| Ok(*ip)));
    let mut c = lo;
    loop {
        let taken_used = used.seek(fam, c)? == Some(c);
        let taken_reserved = reserved.seek(fam, c)? == Some(c);
        if !taken_used && !taken_reserved {
            return Ok(Some(c));
        }
        if c >= hi {
            return Ok(None);
        }
        c += 1;
    }
}

/// An ascending stream of addresses, looked at through its first number >= some bound.
struct Ascending<I> {
    it: I,
    head: Option<u128>,
    done: bool,
}

impl<E, I: Iterator<Item = Result<IpAddr, E>>> Ascending<I> {
    fn new(it: I) -> Self {
        Ascending {
            it,
            head: None,
            done: false,
        }
    }

    /// Advances to the first number >= `c` (addresses of the other family are skipped).
    fn seek(&mut self, fam: Family, c: u128) -> Result<Option<u128>, E> {
        while !self.done && self.head.is_none_or(|h| h < c) {
            match self.it.next().transpose()? {
                Some(ip) => self.head = fam.num(ip),
                None => {
                    self.done = true;
                    self.head = None;
                }
            }
        }
        Ok(self.head)
    }
}

/// Checks that a static request for `ip` can be granted.
///
/// The address must lie in the subnet (not necessarily in `pool.range`: the range only
/// limits what is handed out dynamically), must not be the network address, the
/// IPv4 broadcast or a reserved address, and must not be in `used`.
pub fn check_static(pool: &Pool, used: &BTreeSet<IpAddr>, ip: IpAddr) -> Result<(), IpamError> {
    let fam = Family::of_net(&pool.subnet);
    let n = match fam.num(ip) {
        Some(n) if pool.subnet.contains(ip) => n,
        _ => {
            return Err(IpamError::OutOfPool {
                ip,
                pool: pool.subnet,
            })
        }
    };
    if is_structural(&pool.subnet, n) || pool.reserved.contains(&ip) {
        return Err(IpamError::Reserved(ip));
    }
    if used.contains(&ip) {
        return Err(IpamError::InUse(ip));
    }
    Ok(())
}

/// The MAC an endpoint gets when none was requested: the network's MAC prefix followed by the
/// four bytes of the IPv4 address (see [`crate::types::MacPrefix`]).
pub fn default_mac(spec: &NetworkSpec, ipv4: Ipv4Addr) -> MacAddr {
    spec.mac_prefix.mac(ipv4)
}
