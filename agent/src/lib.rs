//! sitewatch agent: runs on every on-prem host, takes part in the quorum, and ships the
//! `sitewatch` operator CLI.

pub mod args;
pub mod cli;
pub mod clock;
pub mod demo;
pub mod drill;
pub mod host;
pub mod observer;
pub mod pki;
pub mod power_memory;
pub mod probe;
pub mod simulated_ups;
pub mod ups;
