//! Wiring shared by the `shimnetd` and `shimnetctl` binaries: configuration, the name service's
//! hook into the engine ([`dns`]), namespace handles, systemd socket activation and readiness
//! ([`activation`]) and the ICMP probe used by `shimnetctl check`. The front doors themselves
//! live in `shimnet-api`.

pub mod activation;
pub mod config;
pub mod dns;
pub mod docs;
pub mod netns;
pub mod peers_view;
pub mod ping;
pub mod repair;
pub mod status;
