//! shimnet's HTTP front doors on unix sockets.
//!
//! - [`client`]: a small blocking HTTP/1.1 client over a unix socket (CLI, CNI plugin).
//! - `rest` (feature `server`): the REST API handler, mapping requests to engine calls.
//! - `metrics` (feature `server`): the Prometheus registry served as `/metrics`.
//! - `server` (feature `server`): the unix-socket listener around any handler.

pub mod client;

#[cfg(feature = "server")]
pub mod docker;
#[cfg(feature = "server")]
pub mod error;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod repair_metrics;
#[cfg(feature = "server")]
pub mod rest;
#[cfg(feature = "server")]
pub mod server;
