use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sitewatch_quorum::config::Role;

/// The sitewatch witness: an off-site raft voter and tie-breaker.
#[derive(Parser)]
#[command(name = "sitewatch-witness", version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = "/etc/sitewatch/witness.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    sitewatch_quorum::daemon::main_for(Role::Witness, &args.config, None)
}
