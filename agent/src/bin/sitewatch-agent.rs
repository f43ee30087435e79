use std::process::ExitCode;

use clap::Parser;
use sitewatch_agent::args::Args;
use sitewatch_quorum::config::Role;

fn main() -> ExitCode {
    let args = Args::parse();
    sitewatch_quorum::daemon::main_for(Role::Agent, &args.config, |config, cancel| {
        Ok(Some(sitewatch_agent::observer::start(config, config.timing.observe_interval, cancel)?))
    })
}
