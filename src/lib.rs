//! Wiring shared by the `shimnetd` and `shimnetctl` binaries: configuration, the name service's
//! hook into the engine ([`dns`]), namespace handles, systemd socket activation and readiness
//! ([`activation`]), the ICMP probe used by `shimnetctl check` and the daemon's thread and heap
//! limits ([`process`]). The front doors themselves live in `shimnet-api`.

pub mod activation;
pub mod config;
pub mod dns;
pub mod docs;
pub mod netns;
pub mod peers_view;
pub mod ping;
pub mod process;
pub mod repair;
pub mod status;
