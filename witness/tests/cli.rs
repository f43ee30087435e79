//! The `sitewatch-witness` binary as an operator runs it.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn version_help_and_a_clear_error_for_a_missing_config() {
    let bin = env!("CARGO_BIN_EXE_sitewatch-witness");
    let v = Command::new(bin).arg("--version").output().unwrap();
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    let h = Command::new(bin).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&h.stdout).contains("--config"));
    let o = Command::new(bin).args(["--config", "/nonexistent/witness.toml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/witness.toml: cannot read"));
}
