//! Wiring shared by the `shimnetd` and `shimnetctl` binaries: configuration, namespace handles,
//! the ICMP probe used by `shimnetctl check`, and the Docker plugin front door ([`docker`]).

pub mod config;
pub mod docker;
pub mod netns;
pub mod ping;
