//! The config fuzz target's checks, run by `cargo test` on every stored input: the crashes
//! kept under fuzz/regressions/config/ (each once a bug, since fixed) and the seeds under
//! fuzz/corpus/config/. The checks are the fuzz crate's own source files.

#[path = "../../fuzz/src/config.rs"]
mod config;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use std::path::Path;

#[test]
fn config_inputs_pass_the_fuzz_checks() {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    assert!(replay::replay(&fuzz_dir, "config", config::check) > 0, "no config seeds");
}

/// The seeds are configs the daemons accept: the packaged examples must stay valid.
#[test]
fn the_config_seeds_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/config") {
        let path = entry.expect("entry").path();
        if let Err(e) = sitewatch_quorum::config::Config::load(&path) {
            panic!("{e}");
        }
    }
}
