use std::process::ExitCode;

use clap::Parser;
use sitewatch_quorum::config::Role;
use sitewatch_witness::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    // The witness observes nothing of the site; its own links count as evidence.
    sitewatch_quorum::daemon::main_for(Role::Witness, &args.config, |config, _| {
        if !config.probes.is_empty() || !config.ups.is_empty() {
            tracing::warn!(
                probes = config.probes.len(),
                ups = config.ups.len(),
                "[[probe]] and [[ups]] entries are ignored: only sitewatch-agent senses the site"
            );
        }
        Ok(None)
    })
}
