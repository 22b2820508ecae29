//! The CNI side of shimnet: what the `shimnet` plugin reads (network configuration, `CNI_ARGS`,
//! `prevResult`) and writes (results in each spec version's shape, error objects), and the
//! translation of a reference `bridge` + `host-local` configuration into REST API requests.
//!
//! Everything here is pure: the plugin binary does the I/O.

pub mod args;
pub mod config;
pub mod error;
pub mod result;
pub mod shape;
pub mod translate;
pub mod version;

#[cfg(test)]
mod golden;

pub use config::NetConf;
pub use error::CniError;
pub use result::{CniResult, Endpoint, NetworkInfo};
pub use translate::{attach_request, network_name, network_target, NetworkTarget};
pub use version::{negotiate, Version, SUPPORTED_VERSIONS};
