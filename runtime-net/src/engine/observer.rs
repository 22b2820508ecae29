//! The engine's one outward hook: an [`Observer`] learns about every network and endpoint change
//! at the point the engine has recorded it, so state kept outside the engine (the name service)
//! follows the records exactly — nothing is announced that is not recorded and built, nothing
//! recorded is missed (a new observer is first told everything the store holds).
//!
//! Order guarantees: `endpoint_up` comes after the endpoint is recorded and its interface built
//! (and before the attach call returns); `endpoint_down` comes before its addresses are released
//! in the store, so an address is never handed to a new endpoint while an observer still maps a
//! name to it. Calls are synchronous and must be quick (no I/O that can block).

use crate::types::{EndpointKey, EndpointRecord, NetworkName, NetworkSpec};

/// Told about recorded changes of networks and endpoints (see the module doc).
pub trait Observer: Send + Sync {
    /// A network exists (created, or already recorded when the observer was installed).
    fn network_up(&self, spec: &NetworkSpec);
    /// A network is gone (after its endpoints went down).
    fn network_down(&self, name: &NetworkName);
    /// An endpoint is attached (or was recorded when the observer was installed).
    fn endpoint_up(&self, spec: &NetworkSpec, rec: &EndpointRecord);
    /// An endpoint is being detached or reclaimed: its addresses are about to be released.
    fn endpoint_down(&self, key: &EndpointKey);
}

/// Several observers, told in the order given.
pub struct Observers(pub Vec<std::sync::Arc<dyn Observer>>);

impl Observer for Observers {
    fn network_up(&self, spec: &NetworkSpec) {
        self.0.iter().for_each(|o| o.network_up(spec));
    }
    fn network_down(&self, name: &NetworkName) {
        self.0.iter().for_each(|o| o.network_down(name));
    }
    fn endpoint_up(&self, spec: &NetworkSpec, rec: &EndpointRecord) {
        self.0.iter().for_each(|o| o.endpoint_up(spec, rec));
    }
    fn endpoint_down(&self, key: &EndpointKey) {
        self.0.iter().for_each(|o| o.endpoint_down(key));
    }
}
