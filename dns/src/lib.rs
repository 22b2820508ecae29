//! shimnet's name service: each network that asks for it (`dns`) gets a DNS server on its
//! gateway address(es), answering the names of the containers attached to it and forwarding
//! everything else to the host's resolvers. No extra process: it runs inside shimnetd, on
//! threads of its own (one per UDP socket, one runtime thread for TCP and forwarding).
//!
//! The crate knows nothing of the engine: the daemon tells it which networks to serve
//! ([`Dns::set_network`], [`NetworkDns`]) and which names exist ([`Dns::set_entry`], [`Entry`]).
//!
//! - [`name`]: name keys, reverse-lookup names (pure).
//! - [`zone`]: one network's immutable name table (pure).
//! - [`answer`]: the query path — bytes in, reply / forward / drop out (pure; fuzzed).
//! - [`upstream`]: the upstream list from resolv.conf, re-read on change, failover state.
//! - [`forward`]: forwarding with timeouts and failover.
//! - [`access`]: who may ask (the network's subnets and the host).
//! - [`limit`]: the per-source query budget that keeps one flooding container from starving the
//!   others.
//! - [`listen`]: the sockets of a network and their limits; TCP served on the runtime.
//! - [`udp`]: a UDP socket served by a thread of its own.
//! - [`metrics`]: Prometheus families.
//! - `service`: [`Dns`], which ties them together.

#![forbid(unsafe_code)]

pub mod access;
pub mod answer;
pub mod forward;
pub mod limit;
pub mod listen;
pub mod metrics;
pub mod name;
mod service;
pub mod udp;
pub mod upstream;
pub mod zone;

pub use answer::{QueryResult, Transport};
pub use metrics::DnsMetrics;
pub use service::{Announce, Dns, DnsConfig, DnsError, ListenerView, NameView, NetworkView};
pub use zone::{Entry, NetworkDns};
