//! sitewatch witness: an off-site raft voter and tie-breaker. The daemon is `main.rs`;
//! its command line lives here so the packaging's man page and completion generator reads
//! the same definition.

use std::path::PathBuf;

use clap::Parser;

/// The sitewatch witness: an off-site raft voter and tie-breaker.
#[derive(Parser)]
#[command(name = "sitewatch-witness", version, about)]
pub struct Args {
    /// Configuration file.
    #[arg(long, default_value = "/etc/sitewatch/witness.toml")]
    pub config: PathBuf,
}
