//! The pure parts of the `shimnet` CNI plugin that other crates (the fuzz targets) use: reading
//! and checking the `CNI_*` environment.

#![forbid(unsafe_code)]

pub mod env;
