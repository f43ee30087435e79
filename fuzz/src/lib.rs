//! The fuzz targets' properties, one module per parser. The targets in fuzz_targets/ only
//! hand their input to these; the regression tests (proto/tests/fuzz_regressions.rs,
//! quorum/tests/fuzz_regressions.rs) include the same files, so a crash found once is
//! re-checked by `cargo test` with the very same checks.

#![forbid(unsafe_code)]

pub mod config;
pub mod frame;
pub mod nut;
pub mod replay;
