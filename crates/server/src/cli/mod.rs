//! Commands beside `serve`: keys, the demo, and the benchmarks.

pub mod bench;
pub mod demo;
pub mod keys;
