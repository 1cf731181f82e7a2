//! Commands beside `serve`: keys, uploads, the demo, and the benchmarks.

pub mod bench;
pub mod demo;
pub mod keys;
pub mod upload;
