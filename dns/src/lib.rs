//! shimnet's name service: each network that asks for it (`dns`) gets a DNS server on its
//! gateway address(es), answering the names of the containers attached to it and forwarding
//! everything else to the host's resolvers.
//!
//! - [`name`]: name keys, reverse-lookup names (pure).
//! - [`zone`]: one network's immutable name table (pure).
//! - [`answer`]: the query path — bytes in, reply / forward / drop out (pure; fuzzed).
pub mod answer;
pub mod name;
pub mod zone;
