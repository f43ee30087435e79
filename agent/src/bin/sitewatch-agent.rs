use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use sitewatch_quorum::config::Role;

/// The sitewatch agent: senses the site and takes part in the quorum.
#[derive(Parser)]
#[command(name = "sitewatch-agent", version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = "/etc/sitewatch/agent.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    sitewatch_quorum::daemon::main_for(Role::Agent, &args.config, Some(sitewatch_agent::probe::start))
}
