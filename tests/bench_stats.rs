//! Unit tests of the benchmark suite's pure statistics (`tests/bench/stats.rs`); the suite
//! itself runs with `cargo bench --bench suite`.

#[allow(dead_code)]
#[path = "bench/stats.rs"]
mod stats;
