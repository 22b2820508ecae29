//! Translations from other runtimes' configurations and wire formats into shimnet's engine
//! requests: [`docker`] (libnetwork remote driver and IPAM, `daemon.json`).

pub mod docker;
