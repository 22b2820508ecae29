//! Wiring shared by the `shimnetd` and `shimnetctl` binaries: configuration, the name service's
//! hook into the engine ([`dns`]), namespace handles,
//! systemd socket activation and readiness ([`activation`]), the ICMP probe used by `shimnetctl check`, and the Docker plugin front door ([`docker`]).

pub mod activation;
pub mod config;
pub mod dns;
pub mod docker;
pub mod docs;
pub mod netns;
pub mod peers_view;
pub mod ping;
pub mod status;
