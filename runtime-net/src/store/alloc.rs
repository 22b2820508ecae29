//! Allocation inside an open write transaction, shared by endpoints and generic pools: rows of
//! the allocations table are the used set, the cursor table remembers where next-free resumes.

use std::collections::BTreeSet;
use std::net::IpAddr;

use redb::{ReadableTable, Table, WriteTransaction};

use crate::ipam::{check_static, next_free_in, Family, IpamError, Pool};

use super::schema::{alloc_key, alloc_key_ip, pool_bounds, Fail, ALLOCATIONS, CURSORS};

/// The allocation and cursor tables of one write transaction.
pub(crate) struct PoolTables<'t> {
    allocs: Table<'t, &'static [u8], &'static str>,
    cursors: Table<'t, &'static str, u128>,
}

impl<'t> PoolTables<'t> {
    /// Opens both tables in `txn`.
    pub(crate) fn open(txn: &'t WriteTransaction) -> Result<Self, Fail> {
        Ok(PoolTables {
            allocs: txn.open_table(ALLOCATIONS)?,
            cursors: txn.open_table(CURSORS)?,
        })
    }

    /// Takes `requested` (checked with [`check_static`]) or the next free address after the
    /// pool's cursor, recording `owner`. Only dynamic picks move the cursor. The inner `Err` is
    /// the IPAM refusal; nothing is written then.
    pub(crate) fn allocate(
        &mut self,
        pool_key: &str,
        pool: &Pool,
        owner: &str,
        requested: Option<IpAddr>,
    ) -> Result<Result<IpAddr, IpamError>, Fail> {
        let fam = pool.family();
        let ip = match requested {
            Some(ip) => {
                let taken = self
                    .allocs
                    .get(alloc_key(pool_key, fam, ip).as_slice())?
                    .is_some();
                let used: BTreeSet<IpAddr> = taken.then_some(ip).into_iter().collect();
                if let Err(e) = check_static(pool, &used, ip) {
                    return Ok(Err(e));
                }
                ip
            }
            None => {
                let last = self.cursors.get(pool_key)?.map(|g| fam.addr(g.value()));
                let allocs = &self.allocs;
                let found = next_free_in(pool, last, |lo, hi| {
                    let (lo, hi) = (alloc_key(pool_key, fam, lo), alloc_key(pool_key, fam, hi));
                    let rows = allocs.range(lo.as_slice()..=hi.as_slice())?;
                    Ok::<_, Fail>(rows.map(move |row| {
                        let (k, _) = row?;
                        alloc_key_ip(fam, k.value())
                    }))
                })?;
                match found {
                    Ok(ip) => ip,
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        self.allocs
            .insert(alloc_key(pool_key, fam, ip).as_slice(), owner)?;
        if requested.is_none() {
            if let Some(n) = fam.num(ip) {
                self.cursors.insert(pool_key, n)?;
            }
        }
        Ok(Ok(ip))
    }

    /// Frees `ip` in the pool. With `owner`, only a row recorded for that owner is removed.
    /// Returns whether a row was removed.
    pub(crate) fn release(
        &mut self,
        pool_key: &str,
        fam: Family,
        ip: IpAddr,
        owner: Option<&str>,
    ) -> Result<bool, Fail> {
        let key = alloc_key(pool_key, fam, ip);
        if let Some(want) = owner {
            let matches = match self.allocs.get(key.as_slice())? {
                Some(g) => g.value() == want,
                None => false,
            };
            if !matches {
                return Ok(false);
            }
        }
        Ok(self.allocs.remove(key.as_slice())?.is_some())
    }

    /// Removes every row and the cursor of a pool; returns how many rows were removed.
    pub(crate) fn drop_pool(&mut self, pool_key: &str) -> Result<usize, Fail> {
        let (lo, hi) = pool_bounds(pool_key);
        let mut removed = 0usize;
        self.allocs
            .retain_in(lo.as_slice()..=hi.as_slice(), |_, _| {
                removed += 1;
                false
            })?;
        self.cursors.remove(pool_key)?;
        Ok(removed)
    }
}

/// Every allocation of a pool as (address, owner), in address order.
pub(crate) fn pool_rows(
    allocs: &impl ReadableTable<&'static [u8], &'static str>,
    pool_key: &str,
    fam: Family,
) -> Result<Vec<(IpAddr, String)>, Fail> {
    let (lo, hi) = pool_bounds(pool_key);
    let mut out = Vec::new();
    for row in allocs.range(lo.as_slice()..=hi.as_slice())? {
        let (k, v) = row?;
        out.push((alloc_key_ip(fam, k.value())?, v.value().to_string()));
    }
    Ok(out)
}
