//! Decode JSON the way Go's `encoding/json` does, for the JSON Go programs send (containerd's
//! go-cni, libcni, dockerd, Podman): Go structs without JSON tags are written with their field
//! names (`HostPort`), and Go reads any casing back.
//!
//! Into a serde-derived struct, an object key sets the field named exactly like it, else the
//! first field equal to it under Go's case folding ([`equal_fold`]); when several keys set one
//! field the last one wins; a `null` leaves a field absent (its `default`, `None`, or a `missing`
//! error if it is required). Unknown keys are ignored, or refused by `deny_unknown_fields`.
//! Map keys (`HashMap`, `serde_json::Map`) are kept exactly as sent, as Go keeps them.
//!
//! Errors name the field by its path in the Rust type's (renamed) field names:
//! `ports[0].host_port: missing`.

#![forbid(unsafe_code)]

mod de;
mod error;
mod fold;
mod node;

pub use de::NodeDeserializer;
pub use error::{DeError, Error, ErrorKind};
pub use fold::{equal_fold, field_for, fold_char};
pub use node::Node;

use serde::de::DeserializeOwned;

/// Decodes `bytes` (one JSON document, nothing after it but whitespace) as Go would.
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let node: Node = serde_json::from_slice(bytes).map_err(Error::syntax)?;
    from_node(&node)
}

/// Decodes an already parsed value. Its objects have lost key order, so among keys that differ
/// only in case the winner is not necessarily the last one sent: decode the bytes with
/// [`from_slice`] where they are at hand.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, Error> {
    from_node(&Node::from(value))
}

/// Decodes a parsed [`Node`].
pub fn from_node<T: DeserializeOwned>(node: &Node) -> Result<T, Error> {
    serde_path_to_error::deserialize(NodeDeserializer(node)).map_err(Error::at)
}

#[cfg(test)]
mod tests;
