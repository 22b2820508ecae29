//! Pure translations from other tools' configurations to shimnet requests.
//!
//! - [`cni`]: reference CNI `bridge`/`host-local` configurations, CNI results and errors (spec
//!   1.1.0 and older result shapes) for the `shimnet` CNI plugin. Needs no engine.

#![forbid(unsafe_code)]

pub mod cni;
