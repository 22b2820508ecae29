//! Address pools by id (for callers that manage subnets and addresses apart from networks): kept
//! in the same store and allocated by the same code as network endpoints.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Engine, EngineError, Result};
use crate::ipam::{IpamError, Pool};
use crate::plan::FieldError;
use crate::store::StoreError;

impl Engine {
    /// Subnets in use by networks and pools (for choosing a free pool).
    pub async fn taken_subnets(&self) -> Result<Vec<IpNetwork>> {
        self.store(|s| {
            let mut out: Vec<IpNetwork> = Vec::new();
            for n in s.networks()? {
                out.push(IpNetwork::V4(n.subnet));
                out.extend(n.subnet6.map(IpNetwork::V6));
            }
            out.extend(s.pools()?.into_iter().map(|(_, p)| p.subnet));
            Ok(out)
        })
        .await
    }

    /// Records `pool` under `id`, refusing one that overlaps another pool.
    pub async fn create_pool(&self, id: &str, pool: Pool) -> Result<()> {
        let _w = self.topology.write().await;
        let pools = self.store(|s| s.pools()).await?;
        if let Some((other, _)) = pools
            .iter()
            .find(|(_, p)| crate::plan::overlaps(p.subnet, pool.subnet))
        {
            return Err(EngineError::Conflict(format!(
                "Pool: {} overlaps pool {other} already in use",
                pool.subnet
            )));
        }
        let id = id.to_string();
        self.store(move |s| s.create_pool(&id, &pool)).await
    }

    /// The pool recorded under `id`.
    pub async fn pool(&self, id: &str) -> Result<Pool> {
        let i = id.to_string();
        self.store(move |s| s.pool(&i))
            .await?
            .ok_or_else(|| EngineError::NotFound {
                what: "pool",
                name: id.to_string(),
            })
    }

    /// Removes the pool and its allocations (`false` if there was none).
    pub async fn remove_pool(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        Ok(self.store(move |s| s.remove_pool(&id)).await?.is_some())
    }

    /// `requested` or the next free address of pool `id`, recorded for `owner`. A refused
    /// address names the field `address`.
    pub async fn allocate_pool_address(
        &self,
        id: &str,
        owner: &str,
        requested: Option<IpAddr>,
    ) -> Result<IpAddr> {
        let (id, owner) = (id.to_string(), owner.to_string());
        self.store(move |s| s.allocate_address(&id, &owner, requested))
            .await
            .map_err(|e| match e {
                EngineError::Store(StoreError::PoolIpam { pool, source }) => match source {
                    IpamError::InUse(_) | IpamError::Exhausted(_) => {
                        EngineError::Conflict(format!("pool {pool}: {source}"))
                    }
                    other => EngineError::Invalid(FieldError::new(
                        "address",
                        format!("pool {pool}: {other}"),
                    )),
                },
                EngineError::Store(StoreError::NoSuchPool(p)) => EngineError::NotFound {
                    what: "pool",
                    name: p,
                },
                other => other,
            })
    }

    /// Releases an address (`false` if it was not allocated or the pool is gone).
    pub async fn release_pool_address(&self, id: &str, ip: IpAddr) -> Result<bool> {
        let id = id.to_string();
        match self.store(move |s| s.release_address(&id, ip)).await {
            Err(EngineError::Store(StoreError::NoSuchPool(_))) => Ok(false),
            other => other,
        }
    }
}
