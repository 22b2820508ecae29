//! Cluster membership through etcd v3 for shimnet: each node leases its pod subnet from
//! `cluster_cidr` (a compare-and-set on a sticky reservation), publishes what its peers need
//! under a lease kept alive, and watches the prefix; the peer set it derives feeds the peering
//! data plane through [`runtime_net::peering::source::PeerFeed`], like the peer file does.
//!
//! Pure parts, unit-tested without etcd: [`config`] (`[etcd]`), [`keys`] (key layout),
//! [`record`] (values and their validation), [`claim`] (which subnet), [`view`] (records →
//! peer set), [`session`] (lease/watch/backoff state machine). Side effects: [`client`] (the
//! `etcd-client` connection), [`driver`] (start-up and the session loop), [`store`] (what the
//! state dir remembers).
//!
//! An etcd outage never changes the data plane: the source publishes only peer sets built from
//! records it read, so while etcd is unreachable or without quorum every node keeps its last
//! known peers and routes, retries with backoff, and re-establishes its lease and watch (listing
//! again if the history was compacted meanwhile) when etcd is back.

pub mod boot;
pub mod claim;
pub mod client;
pub mod config;
pub mod driver;
pub mod keys;
pub mod record;
pub mod session;
pub mod store;
pub mod view;

pub use boot::{start, StartArgs, StartError, Started};
pub use config::EtcdConfig;
pub use driver::EtcdSource;

/// A per-node seed for backoff jitter (so nodes retrying together spread out).
pub fn session_seed(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
