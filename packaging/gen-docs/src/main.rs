//! Writes man pages and bash, zsh and fish completions for `sitewatch`, `sitewatch-agent`
//! and `sitewatch-witness` from their clap definitions, for the packages:
//!
//! ```text
//! cargo run -p sitewatch-gen-docs -- OUT_DIR
//! OUT_DIR/PROGRAM/man/*.1                 PROGRAM.1, PROGRAM-SUBCOMMAND.1
//! OUT_DIR/PROGRAM/completions/bash/PROGRAM.bash
//! OUT_DIR/PROGRAM/completions/zsh/_PROGRAM
//! OUT_DIR/PROGRAM/completions/fish/PROGRAM.fish
//! ```
//!
//! One directory per program, so each package's assets name only its own programs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;

fn main() -> Result<()> {
    let out = std::env::args_os().nth(1).map(PathBuf::from).context("usage: sitewatch-gen-docs OUT_DIR")?;
    let commands = [
        sitewatch_agent::cli::Cli::command(),
        sitewatch_agent::args::Args::command(),
        sitewatch_witness::Args::command(),
    ];
    for command in commands {
        let dir = out.join(command.get_name());
        man_pages(command.clone(), &dir.join("man"))?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            completion(command.clone(), shell, &dir.join("completions").join(shell.to_string()))?;
        }
        println!("{}", dir.display());
    }
    Ok(())
}

/// NAME.1, and NAME-SUB.1 for each subcommand (`sitewatch-status.1`, `sitewatch-ca-init.1`).
fn man_pages(command: Command, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    Ok(())
}

fn completion(mut command: Command, shell: Shell, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = command.get_name().to_owned();
    clap_complete::generate_to(shell, &mut command, &name, dir)
        .with_context(|| format!("writing the {shell} completion of {name} to {}", dir.display()))?;
    Ok(())
}
