//! Wiring shared by the `shimnetd` and `shimnetctl` binaries: configuration, namespace handles
//! and the ICMP probe used by `shimnetctl check`.

pub mod config;
pub mod netns;
pub mod ping;
