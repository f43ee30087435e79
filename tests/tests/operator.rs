//! The `sitewatch` CLI against real daemons: status (table and JSON), check's exit codes
//! in healthy, held, down and no-quorum states, history, hold and release; and the
//! Prometheus metrics.

use std::process::Output;
use std::time::Duration;

use sitewatch_tests::{Cluster, free_port, sitewatch, wait_for};

fn run(c: &mut Cluster, node: &str, args: &[&str]) -> Output {
    let socket = c.node(node).socket.to_str().expect("utf-8").to_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--socket", &socket]);
    sitewatch(&all)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// One HTTP GET on loopback: the whole answer for `/`, the body for `/metrics`.
fn scrape(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    if path == "/metrics" {
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
    } else {
        answer
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

#[test]
fn the_cli_reads_checks_holds_and_releases_a_real_cluster() {
    let mut c = Cluster::three();
    for n in ["agent-1", "agent-2", "witness"] {
        c.node(n).append_config("\n[policy]\nhost-lost-after = \"3s\"\n");
    }
    let metrics_port = free_port();
    let config = std::fs::read_to_string(&c.node("agent-1").config).expect("config");
    std::fs::write(
        &c.node("agent-1").config,
        format!("metrics-listen = \"127.0.0.1:{metrics_port}\"\n{config}"),
    )
    .expect("config");
    c.start_all();
    c.wait_leader(Duration::from_secs(15));
    // Every voter has heard both agents: the site is judged healthy.
    wait_for(Duration::from_secs(15), "agent-1 to judge the site healthy and settled", || {
        let s = c.node("agent-1").status()?;
        (s["burst"]["assessment"]["settled"].as_bool()? && s["burst"]["assessment"]["verdict"] == "healthy")
            .then_some(())
    });

    let status = run(&mut c, "agent-1", &["status"]);
    assert_eq!(code(&status), 0, "{}", text(&status));
    let table = text(&status);
    assert!(table.contains("verdict  healthy, desired capacity 0"), "{table}");
    assert!(table.contains("quorum   quorate"), "{table}");
    assert!(!table.contains("WARNINGS"), "nothing to warn about: {table}");
    assert!(table.contains("RTT MED") && table.contains("RTT P95") && table.contains("JITTER"), "{table}");
    let json = run(&mut c, "agent-1", &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["burst"]["heard"].as_array().map(Vec::len), Some(2), "{v}");

    // The witness lists its clients and when each last reported, like corosync-qnetd-tool -l.
    let witness = text(&run(&mut c, "witness", &["status"]));
    assert!(witness.contains("CLIENT"), "{witness}");
    for agent in ["agent-1", "agent-2"] {
        let line =
            witness.lines().find(|l| l.starts_with(agent) && l.contains("s ago") && l.contains("connected"));
        assert!(line.is_some(), "{agent} missing from the witness's clients:\n{witness}");
    }

    let check = run(&mut c, "agent-1", &["check"]);
    assert_eq!(code(&check), 0, "{}", text(&check));
    assert!(text(&check).starts_with("SITEWATCH OK - site healthy, quorate"), "{}", text(&check));
    assert!(text(&check).contains("| desired_capacity=0"), "perfdata: {}", text(&check));

    let metrics = scrape(metrics_port, "/metrics");
    for line in [
        "sitewatch_has_leader 1",
        "sitewatch_verdict{verdict=\"healthy\"} 1",
        "sitewatch_verdict{verdict=\"down\"} 0",
        "sitewatch_burst_desired_capacity 0",
        "sitewatch_peer_connected{peer=\"witness\"} 1",
        "# TYPE sitewatch_leader_changes_total counter",
    ] {
        assert!(metrics.lines().any(|l| l == line || l.starts_with(line)), "missing `{line}` in\n{metrics}");
    }
    assert!(metrics.contains("sitewatch_peer_rtt_seconds{peer=\"agent-2\",quantile=\"0.95\"}"), "{metrics}");
    assert!(scrape(metrics_port, "/").starts_with("HTTP/1.1 404"));

    // Maintenance mode, committed through the quorum: every node sees it.
    let hold = run(&mut c, "agent-2", &["burst", "hold", "--by", "alice"]);
    assert_eq!(code(&hold), 0, "{}", text(&hold));
    assert!(text(&hold).contains("held (committed"), "{}", text(&hold));
    wait_for(Duration::from_secs(5), "the witness to apply the hold", || {
        c.node("witness").status()?["site"]["hold"].as_bool()?.then_some(())
    });
    let check = run(&mut c, "agent-1", &["check"]);
    assert_eq!(code(&check), 1, "held is a warning: {}", text(&check));
    assert!(text(&run(&mut c, "agent-1", &["status"])).contains("HELD (maintenance)"));
    let release = run(&mut c, "witness", &["burst", "release", "--by", "bob"]);
    assert_eq!(code(&release), 0, "{}", text(&release));
    let history = text(&run(&mut c, "agent-1", &["history"]));
    assert!(history.contains("hold (maintenance)") && history.contains("by alice"), "{history}");
    assert!(history.contains("release") && history.contains("by bob"), "{history}");

    // One of two agents lost: with the default down-share of a half, the site is down.
    c.node("agent-2").kill9();
    wait_for(Duration::from_secs(20), "a committed down verdict", || {
        (c.node("agent-1").status()?["site"]["verdict"] == "down").then_some(())
    });
    let check = run(&mut c, "agent-1", &["check"]);
    assert_eq!(code(&check), 2, "{}", text(&check));
    assert!(
        text(&check).starts_with("SITEWATCH CRITICAL - site down (host-lost:agent-2)"),
        "{}",
        text(&check)
    );
    let status = run(&mut c, "agent-1", &["status"]);
    assert_eq!(code(&status), 2, "down: {}", text(&status));
    assert!(text(&status).contains("WARNINGS\n  - voter agent-2 unreachable"), "{}", text(&status));
    let history = text(&run(&mut c, "agent-1", &["history"]));
    assert!(
        history.contains("healthy -> down, capacity 0 -> 1") && history.contains("host-lost:agent-2"),
        "{history}"
    );
    let json = run(&mut c, "agent-1", &["history", "--json"]);
    let h: serde_json::Value = serde_json::from_slice(&json.stdout).expect("history json");
    assert!(h["records"].as_array().is_some_and(|r| r.len() >= 3), "{h}");

    // Alone, agent-1 has no quorum: it still answers, with its own view.
    c.node("witness").kill9();
    wait_for(Duration::from_secs(15), "agent-1 to lose the quorum", || {
        (c.node("agent-1").status()?["quorum"]["quorate"] == false).then_some(())
    });
    let check = run(&mut c, "agent-1", &["check"]);
    assert_eq!(code(&check), 2, "{}", text(&check));
    assert!(text(&check).contains("NOT QUORATE"), "{}", text(&check));
    let status = run(&mut c, "agent-1", &["status"]);
    assert_eq!(code(&status), 2);
    assert!(text(&status).contains("NOT QUORATE"), "{}", text(&status));
    let hold = run(&mut c, "agent-1", &["burst", "hold"]);
    assert_eq!(code(&hold), 2, "no quorum, no hold: {}", text(&hold));

    // No daemon at all.
    c.node("agent-1").kill9();
    let check = run(&mut c, "agent-1", &["check"]);
    assert_eq!(code(&check), 3, "{}", text(&check));
    assert!(text(&check).starts_with("SITEWATCH UNKNOWN"), "{}", text(&check));
    assert_eq!(code(&run(&mut c, "agent-1", &["status"])), 1);
}

#[test]
fn a_dry_run_drill_is_decided_through_the_quorum_and_touches_nothing() {
    let mut c = Cluster::three();
    let touched = c.dir.path().join("real-action-ran");
    let hook = c.dir.path().join("hook.sh");
    std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", touched.display())).expect("hook");
    std::process::Command::new("chmod").arg("755").arg(&hook).status().expect("chmod");
    for n in ["agent-1", "agent-2", "witness"] {
        c.node(n).append_config(&format!(
            "\n[policy]\nburst-after = \"3s\"\n\n[[actuator]]\nkind = \"exec\"\nname = \"script\"\ncommand = [\"{}\"]\n",
            hook.display()
        ));
    }
    c.start_all();
    c.wait_leader(Duration::from_secs(15));
    wait_for(Duration::from_secs(15), "the site judged healthy and settled", || {
        let s = c.node("agent-2").status()?;
        (s["burst"]["assessment"]["settled"].as_bool()? && s["burst"]["assessment"]["verdict"] == "healthy")
            .then_some(())
    });

    let drill = run(&mut c, "agent-2", &["drill", "--timeout", "60s", "--by", "carol"]);
    let out = text(&drill);
    assert_eq!(code(&drill), 0, "{out}");
    for step in [
        "dry run: actions are only reported",
        "drill committed",
        "degraded committed (drill",
        "down committed: desired capacity 2",
        "action script: done: drill, dry run: would set capacity 0 -> 2",
        "drill ended: put back healthy, desired capacity 0",
        "drill PASSED",
    ] {
        assert!(out.contains(step), "missing `{step}` in\n{out}");
    }
    assert!(!touched.exists(), "a dry-run drill ran the real hook");
    let s = c.node("witness").status().expect("status");
    assert_eq!(
        (s["site"]["verdict"].as_str(), s["site"]["desired_capacity"].as_u64()),
        (Some("healthy"), Some(0))
    );
    assert!(s["site"]["drill"].is_null(), "{s}");
    let history = text(&run(&mut c, "agent-1", &["history"]));
    assert!(history.contains("drill started (dry run)") && history.contains("by carol"), "{history}");
    assert!(history.contains("drill ended"), "{history}");
    // Spend only counts what really ran.
    assert_eq!(s["site"]["instance_hours_this_month"].as_f64(), Some(0.0), "{s}");
}
