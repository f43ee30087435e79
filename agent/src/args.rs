//! The `sitewatch-agent` daemon's command line, here rather than in the binary so the
//! packaging's man page and completion generator reads the same definition.

use std::path::PathBuf;

use clap::Parser;

/// The sitewatch agent: senses the site and takes part in the quorum.
#[derive(Parser)]
#[command(name = "sitewatch-agent", version, about)]
pub struct Args {
    /// Configuration file.
    #[arg(long, default_value = "/etc/sitewatch/agent.toml")]
    pub config: PathBuf,
}
