//! Docker (libnetwork remote driver and IPAM) protocol: decoding request bodies into typed calls
//! ([`wire`]), translating network options and port maps into engine requests ([`options`]),
//! and reading dockerd's `daemon.json` for the docker0-compatible mode ([`daemon_json`]).
//!
//! Everything here is pure: no I/O besides what the caller hands in.

pub mod daemon_json;
pub mod options;
pub mod wire;

pub use wire::{WireError, CONTENT_TYPE};
