//! Docker (libnetwork remote driver and IPAM) protocol: decoding request bodies into typed calls
//! ([`wire`]), translating network options and port maps into engine requests ([`options`]),
//! reading dockerd's `daemon.json` for the docker0-compatible mode ([`daemon_json`]), and
//! docker0's conventions ([`conventions`]: MAC scheme, interface prefix, chain layout).
//!
//! Everything here is pure: no I/O besides what the caller hands in.

pub mod conventions;
pub mod daemon_json;
pub mod options;
pub mod wire;

pub use wire::{WireError, CONTENT_TYPE};
