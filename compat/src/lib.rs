//! Pure translations from other tools' configurations and wire formats to shimnet requests.
//!
//! - [`cni`]: reference CNI `bridge`/`host-local` configurations, CNI results and errors (spec
//!   1.1.0 and older result shapes) for the `shimnet` CNI plugin. Needs no engine.
//! - [`docker`]: libnetwork remote network driver and IPAM calls, Docker network options and
//!   port maps, `daemon.json` for the docker0-compatible mode.

#![forbid(unsafe_code)]

pub mod cni;
#[cfg(feature = "engine")]
pub mod docker;
pub mod net;
