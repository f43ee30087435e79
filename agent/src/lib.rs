//! sitewatch agent: runs on every on-prem host, takes part in the quorum, and ships the
//! `sitewatch` operator CLI.

pub mod cli;
pub mod demo;
pub mod pki;
pub mod probe;
