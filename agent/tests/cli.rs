//! The `sitewatch` and `sitewatch-agent` binaries as an operator runs them.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn run(bin: &str, args: &[&str]) -> Output {
    let path = match bin {
        "sitewatch" => env!("CARGO_BIN_EXE_sitewatch"),
        _ => env!("CARGO_BIN_EXE_sitewatch-agent"),
    };
    Command::new(path).args(args).output().expect("run binary")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn bootstrap(dir: &Path) -> std::path::PathBuf {
    let ca = dir.join("ca");
    let d = dir.to_str().unwrap();
    assert!(run("sitewatch", &["ca", "init", "--dir", ca.to_str().unwrap()]).status.success());
    let o = run("sitewatch", &["cert", "issue", "agent-1", "--ca", ca.to_str().unwrap(), "--out", d]);
    assert!(o.status.success(), "{}", text(&o));
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"cluster-id = "home"
node = "agent-1"
listen = "127.0.0.1:7420"
data-dir = "{d}/data"

[tls]
ca = "{d}/ca/ca.pem"
cert = "{d}/agent-1.pem"
key = "{d}/agent-1.key"

[[member]]
name = "agent-1"
id = 1
address = "127.0.0.1:7420"
role = "agent"

[[member]]
name = "witness"
id = 2
address = "127.0.0.1:7421"
role = "witness"
"#
        ),
    )
    .unwrap();
    config
}

#[test]
fn version_and_help_everywhere() {
    for bin in ["sitewatch", "sitewatch-agent"] {
        let v = run(bin, &["--version"]);
        assert!(v.status.success());
        assert!(text(&v).contains(env!("CARGO_PKG_VERSION")), "{}", text(&v));
        let h = run(bin, &["--help"]);
        assert!(h.status.success());
        assert!(text(&h).contains("Usage"));
    }
}

#[test]
fn check_config_accepts_a_good_config_and_names_the_line_of_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = bootstrap(dir.path());
    let ok = run("sitewatch", &["check-config", config.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("node `agent-1` (agent), 2 members"), "{}", text(&ok));

    let broken = std::fs::read_to_string(&config).unwrap().replace("id = 2", "id = 2\nvote = true");
    std::fs::write(&config, broken).unwrap();
    let bad = run("sitewatch", &["check-config", config.to_str().unwrap()]);
    assert!(!bad.status.success());
    let msg = text(&bad);
    assert!(msg.contains(&format!("{}:20: key `vote`", config.display())), "{msg}");
}

#[test]
fn check_config_refuses_a_certificate_for_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = bootstrap(dir.path());
    let swapped =
        std::fs::read_to_string(&config).unwrap().replace("node = \"agent-1\"", "node = \"witness\"");
    std::fs::write(&config, swapped).unwrap();
    let o = run("sitewatch", &["check-config", config.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("does not name this node `witness`"), "{}", text(&o));
}

#[test]
fn the_agent_refuses_a_witness_config_and_a_missing_file_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let config = bootstrap(dir.path());
    let as_witness =
        std::fs::read_to_string(&config).unwrap().replace("node = \"agent-1\"", "node = \"witness\"");
    std::fs::write(&config, as_witness).unwrap();
    let o = run("sitewatch-agent", &["--config", config.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("`witness` is a witness"), "{}", text(&o));

    let o = run("sitewatch-agent", &["--config", "/nonexistent/agent.toml"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/agent.toml: cannot read"), "{}", text(&o));
}

#[test]
fn status_without_a_daemon_exits_1() {
    let o = run("sitewatch", &["status", "--socket", "/nonexistent/sitewatch.sock"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot reach the daemon"), "{}", text(&o));
}

#[test]
fn the_demo_runs_to_the_end_and_shows_the_burst_and_the_scale_down() {
    let started = tokio::time::Instant::now();
    let o = run("sitewatch", &["demo"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for step in [
        "elected leader",
        "leads in term",
        "committed: degraded, desired capacity 0 (ups-on-battery:",
        "committed: down, desired capacity 2",
        "the leader acted on the committed decision: dry run: would set capacity 0 -> 2",
        "committed: recovering, desired capacity 2",
        "committed: healthy, desired capacity 0",
        "action   cloud: done for term",
        "Done:",
    ] {
        assert!(out.contains(step), "missing `{step}` in\n{out}");
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(120), "the demo took {:?}", started.elapsed());
    // It cleaned up its temporary directory.
    let dir = out.lines().find_map(|l| l.trim().strip_prefix("CA, certificates and configs in ")).unwrap();
    assert!(!Path::new(dir.trim()).exists(), "{dir} left behind");
}
