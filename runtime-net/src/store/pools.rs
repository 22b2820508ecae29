//! Generic address pools (for callers that manage pools apart from networks): pools by id,
//! addresses by owner, stored in the same database and allocated by the same code as network
//! endpoints.

use std::net::IpAddr;

use redb::ReadableTable;

use crate::ipam::Pool;

use super::alloc::{pool_rows, PoolTables};
use super::schema::{check_pool_id, from_json, generic_pool, to_json, Fail, ALLOCATIONS, POOLS};
use super::{Store, StoreError};

impl Store {
    /// Records a new pool under `id`; fails with [`StoreError::PoolExists`] if the id is taken.
    pub fn create_pool(&self, id: &str, pool: &Pool) -> Result<(), StoreError> {
        check_pool_id(id)?;
        self.write(|txn| {
            let mut pools = txn.open_table(POOLS)?;
            if pools.get(id)?.is_some() {
                return Err(StoreError::PoolExists(id.to_string()).into());
            }
            pools.insert(id, to_json("pool", pool)?.as_str())?;
            drop(pools);
            // Leftovers of an earlier pool with this id (there should be none) must not leak in.
            PoolTables::open(txn)?.drop_pool(&generic_pool(id))?;
            Ok(())
        })
    }

    /// The pool recorded under `id`.
    pub fn pool(&self, id: &str) -> Result<Option<Pool>, StoreError> {
        self.read(|txn| {
            let pools = txn.open_table(POOLS)?;
            let got = pools.get(id)?;
            got.map(|g| from_json("pool", id, g.value())).transpose()
        })
    }

    /// All pools, by id.
    pub fn pools(&self) -> Result<Vec<(String, Pool)>, StoreError> {
        self.read(|txn| {
            let pools = txn.open_table(POOLS)?;
            let mut out = Vec::new();
            for row in pools.iter()? {
                let (k, v) = row?;
                out.push((
                    k.value().to_string(),
                    from_json("pool", k.value(), v.value())?,
                ));
            }
            Ok(out)
        })
    }

    /// Removes a pool together with all its allocations (pools are released as a whole);
    /// `Ok(None)` if absent.
    pub fn remove_pool(&self, id: &str) -> Result<Option<Pool>, StoreError> {
        self.write(|txn| {
            let mut pools = txn.open_table(POOLS)?;
            let pool: Pool = match pools.remove(id)? {
                Some(g) => from_json("pool", id, g.value())?,
                None => return Ok(None),
            };
            drop(pools);
            PoolTables::open(txn)?.drop_pool(&generic_pool(id))?;
            Ok(Some(pool))
        })
    }

    /// Allocates `requested` (if free, inside the subnet and not reserved) or the next free
    /// address of pool `pool_id`, recording `owner`.
    pub fn allocate_address(
        &self,
        pool_id: &str,
        owner: &str,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        self.write(|txn| {
            let pool = load(txn, pool_id)?;
            PoolTables::open(txn)?
                .allocate(&generic_pool(pool_id), &pool, owner, requested)?
                .map_err(|source| {
                    Fail::Refused(StoreError::PoolIpam {
                        pool: pool_id.to_string(),
                        source,
                    })
                })
        })
    }

    /// Frees `ip` in pool `pool_id`; `false` if it was not allocated.
    pub fn release_address(&self, pool_id: &str, ip: IpAddr) -> Result<bool, StoreError> {
        self.write(|txn| {
            let pool = load(txn, pool_id)?;
            PoolTables::open(txn)?.release(&generic_pool(pool_id), pool.family(), ip, None)
        })
    }

    /// Every allocation of pool `pool_id` as (address, owner), in address order.
    pub fn pool_allocations(&self, pool_id: &str) -> Result<Vec<(IpAddr, String)>, StoreError> {
        self.read(|txn| {
            let pools = txn.open_table(POOLS)?;
            let pool: Pool = match pools.get(pool_id)? {
                Some(g) => from_json("pool", pool_id, g.value())?,
                None => return Err(StoreError::NoSuchPool(pool_id.to_string()).into()),
            };
            let allocs = txn.open_table(ALLOCATIONS)?;
            pool_rows(&allocs, &generic_pool(pool_id), pool.family())
        })
    }
}

/// The pool `id` inside a write transaction, or [`StoreError::NoSuchPool`].
fn load(txn: &redb::WriteTransaction, id: &str) -> Result<Pool, Fail> {
    let pools = txn.open_table(POOLS)?;
    let got = pools.get(id)?;
    match got {
        Some(g) => from_json("pool", id, g.value()),
        None => Err(StoreError::NoSuchPool(id.to_string()).into()),
    }
}
