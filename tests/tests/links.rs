//! The agent's real probe code across real links between network namespaces: loss injected
//! with nft, delay with the project's nfq-delay, a cut at the bridge, and ICMP with and
//! without `net.ipv4.ping_group_range`.
//!
//! Each test builds its own lab (`sitewatch_tests::netns`): a bridge namespace and two
//! hosts, `a` (10.77.0.1, runs the probes) and `w` (10.77.0.2, the target). Nothing is
//! created in the root namespace and no packet leaves those namespaces. Needs root and
//! iproute2, nftables, iptables (CI installs them); otherwise each test prints
//! `SKIPPED: <reason>` to stderr and passes.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sitewatch_tests::netns::{Cut, Netns};

const A: &str = "10.77.0.1";
const W: &str = "10.77.0.2";
const LISTEN_PORT: u16 = 7000;

/// The two hosts of one test and the probes run in them; everything is removed on drop.
struct Lab {
    net: Netns,
}

impl Lab {
    /// The lab, or `None` (having said why) where this machine cannot build one.
    fn new(test: &str) -> Option<Lab> {
        let mut net = Netns::new(test, &["a", "w"])?;
        assert_eq!((net.addr("a"), net.addr("w")), (A, W));
        // Wait for the link: a TCP probe from a to w's listener must work before tests
        // start measuring. (DAD does not apply to IPv4; the bridge forwards at once.)
        net.spawn_ready("w", "tcp-listen", &[&format!("{W}:{LISTEN_PORT}"), "120"], "listening on");
        Some(Lab { net })
    }

    /// Start probe-once in `a`; its status lines arrive as JSON with their read time.
    fn probe(&mut self, args: &[&str]) -> mpsc::Receiver<(Instant, Value)> {
        let lines = self.net.spawn_lines("a", "probe-once", args);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for (at, line) in lines {
                let v: Value =
                    serde_json::from_str(&line).unwrap_or_else(|e| panic!("probe-once said {line:?}: {e}"));
                if tx.send((at, v)).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// Run probe-once in `a` to its end and return the final status of its probe.
    fn probe_to_end(&mut self, args: &[&str], limit: Duration) -> Value {
        let lines = self.probe(args);
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((_, v)) if v["final"] == true => return v["probe"].clone(),
                Ok(_) => {}
                Err(_) => panic!("probe-once gave no final line within {limit:?}"),
            }
        }
    }
}

fn f(v: &Value, key: &str) -> f64 {
    v["summary"][key].as_f64().unwrap_or_else(|| panic!("no summary.{key} in {v}"))
}

#[test]
fn loss_injected_by_nft_is_measured_within_the_binomial_spread() {
    let Some(mut lab) = Lab::new("loss") else { return };
    lab.net.allow_ping_sockets("a");
    // 5 % of the IPv4 packets entering w are dropped: echo requests and SYNs.
    lab.net.nft(
        "w",
        r#"table netdev lab {
  chain ingress {
    type filter hook ingress device "eth0" priority 0; policy accept;
    meta protocol ip numgen random mod 100 < 5 counter drop
  }
}
"#,
    );
    let started = Instant::now();
    // 600 echoes 10 ms apart. Each is lost with p = 0.05, so the measured ratio has a
    // standard deviation of sqrt(0.05 * 0.95 / 600) = 0.89 points: +-3 points is 3.4
    // sigma (a false failure about once in 1500 runs).
    let p = lab.probe_to_end(
        &[
            "--kind",
            "icmp",
            "--target",
            W,
            "--interval-ms",
            "10",
            "--timeout-ms",
            "200",
            "--window",
            "600",
            "--run-ms",
            "6100",
        ],
        Duration::from_secs(20),
    );
    let loss = f(&p, "loss");
    println!(
        "injected 5.0 % loss, measured {:.1} % over {} probes in {:?}",
        loss * 100.0,
        p["summary"]["sent"],
        started.elapsed()
    );
    assert_eq!(p["method"], "icmp", "{p}");
    assert!(f(&p, "sent") >= 590.0, "a full window: {p}");
    assert!((loss - 0.05).abs() <= 0.03, "measured {:.3}, injected 0.05: {p}", loss);
    assert_eq!(f(&p, "late"), 0.0, "a dropped echo never comes back late: {p}");
}

#[test]
fn delay_added_by_nfq_delay_is_measured_within_ten_percent() {
    let Some(mut lab) = Lab::new("delay") else { return };
    lab.net.allow_ping_sockets("a");
    // Everything w sends to a waits 50 ms +- 5 ms: echo replies and SYN-ACKs alike.
    lab.net.exec(
        "w",
        &["iptables", "-A", "OUTPUT", "-d", A, "-j", "NFQUEUE", "--queue-num", "5", "--queue-bypass"],
    );
    let args = ["--queue", "5", "--delay-ms", "50", "--jitter-ms", "5", "--exit-after-s", "40"];
    lab.net.spawn_ready("w", "nfq-delay", &args, "nfq-delay: queue 5");
    let started = Instant::now();
    // ICMP and TCP at once, 150 probes each; and an ICMP probe whose 30 ms timeout the
    // delay always exceeds, so that every answer comes late.
    let probe = |kind: &str, timeout_ms: &str| {
        let target = if kind == "icmp" { W.to_string() } else { format!("{W}:{LISTEN_PORT}") };
        [
            "--kind",
            kind,
            "--target",
            &target,
            "--interval-ms",
            "20",
            "--timeout-ms",
            timeout_ms,
            "--window",
            "150",
            "--run-ms",
            "3000",
        ]
        .map(str::to_string)
    };
    let final_of = |lines: mpsc::Receiver<(Instant, Value)>| {
        lines
            .iter()
            .map(|(_, v)| v)
            .find(|v| v["final"] == true)
            .map(|v| v["probe"].clone())
            .expect("a final line")
    };
    let (icmp_args, late_args, tcp_args) = (probe("icmp", "500"), probe("icmp", "30"), probe("tcp", "500"));
    let icmp_lines = lab.probe(&icmp_args.each_ref().map(String::as_str));
    let late_lines = lab.probe(&late_args.each_ref().map(String::as_str));
    let tcp = lab.probe_to_end(&tcp_args.each_ref().map(String::as_str), Duration::from_secs(20));
    let (icmp, late) = (final_of(icmp_lines), final_of(late_lines));
    println!("run time {:?}", started.elapsed());
    for (p, method) in [(&icmp, "icmp"), (&tcp, "tcp")] {
        let (median, p95, jitter) = (f(p, "rtt_median_ms"), f(p, "rtt_p95_ms"), f(p, "jitter_ms"));
        println!(
            "{method}: injected 50 +- 5 ms, median {median:.2} ms, p95 {p95:.2} ms, jitter {jitter:.2} ms"
        );
        assert_eq!(p["method"], method, "{p}");
        assert!(f(p, "replies") >= 140.0, "{p}");
        assert!((median - 50.0).abs() <= 5.0, "{method}: median {median} ms is not within 10 % of 50 ms");
        // Uniform +-5 ms: p95 near 54.5, never past 55 plus scheduling slack.
        assert!((50.0..=60.0).contains(&p95), "{method}: p95 {p95}");
        // Consecutive RTTs differ by 3.3 ms on average (|U - U'| for U uniform on +-5).
        assert!((1.0..=6.0).contains(&jitter), "{method}: jitter {jitter}");
        assert_eq!(f(p, "lost"), 0.0, "{p}");
    }
    // Late answers are neither losses nor RTT samples. The last probes may still count as
    // lost when the final line is taken (their answers due after it), hence "almost all".
    println!("30 ms timeout: {}", late["summary"]);
    assert!(f(&late, "late") >= f(&late, "sent") - 3.0 && f(&late, "late") >= 140.0, "{late}");
    assert_eq!(f(&late, "replies"), 0.0, "{late}");
    assert!(late["summary"]["rtt_median_ms"].is_null(), "{late}");
    assert!(f(&late, "loss") <= 0.02, "{late}");
}

#[test]
fn a_link_cut_at_the_bridge_is_seen_unreachable_within_the_probe_timeout() {
    let Some(mut lab) = Lab::new("cut") else { return };
    let (interval_ms, timeout_ms) = (50u64, 200u64);
    let target = format!("{W}:{LISTEN_PORT}");
    let lines = lab.probe(&[
        "--kind",
        "tcp",
        "--target",
        &target,
        "--interval-ms",
        "50",
        "--timeout-ms",
        "200",
        "--window",
        "60",
        "--run-ms",
        "5000",
        "--report-ms",
        "5",
    ]);
    let reach = |v: &Value| v["probe"]["summary"]["reach"].as_u64().expect("reach");
    let next = |what: &str, pred: &dyn Fn(&Value) -> bool| -> (Instant, Value) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok((at, v)) if pred(&v) => return (at, v),
                Ok(_) => {}
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    };
    next("eight answered probes", &|v| reach(v) == 0xff);
    lab.net.cut("w", Cut::SwitchPort);
    let cut = Instant::now();
    let (first_loss, v) = next("the first loss after the cut", &|v| reach(v) & 1 == 0);
    let first_loss = first_loss.duration_since(cut);
    let (drained, _) = next("the reach register to drain", &|v| reach(v) == 0);
    let drained = drained.duration_since(cut);
    println!("cut: first loss after {first_loss:?}, reach 0 after {drained:?}");
    // The first probe after the cut leaves within an interval and is lost one timeout
    // later; 150 ms of slack for scheduling and the report period.
    let slack = Duration::from_millis(150);
    assert!(first_loss <= Duration::from_millis(interval_ms + timeout_ms) + slack, "{first_loss:?}: {v}");
    // Eight lost probes in a row: one timeout plus eight intervals.
    assert!(drained <= Duration::from_millis(timeout_ms + 8 * interval_ms) + slack, "{drained:?}");
    // And back: the link comes up, the probe answers again.
    lab.net.heal("w", Cut::SwitchPort);
    let restored = Instant::now();
    let (back, v) = next("an answer after the link is restored", &|v| reach(v) & 1 == 1);
    // And steady again (eight answers in a row) before the next fault: a probe sent while
    // the port was coming back may still time out, and must not pass for a refusal.
    next("eight answered probes after the restore", &|v| reach(v) == 0xff);
    let back = back.duration_since(restored);
    println!("restored: answered after {back:?}; loss {}", v["probe"]["summary"]["loss"]);
    assert!(v["probe"]["summary"]["lost"].as_u64() >= Some(8), "{v}");

    // Another way to cut: w rejects the port with a TCP reset. A refusal is lost at once,
    // without waiting for the timeout, and the status says it was refused.
    lab.net.nft(
        "w",
        &format!(
            r#"table inet lab {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp dport {LISTEN_PORT} reject with tcp reset
  }}
}}
"#
        ),
    );
    let rejecting = Instant::now();
    let (refused, v) = next("a refused probe", &|v| reach(v) & 1 == 0);
    let refused = refused.duration_since(rejecting);
    println!("reject: first loss after {refused:?}: {}", v["probe"]["last_error"]);
    assert!(v["probe"]["last_error"].as_str().is_some_and(|e| e.contains("refused")), "{v}");
    // Well before the first probe after the rule could have timed out.
    assert!(refused < Duration::from_millis(timeout_ms), "{refused:?}: {v}");
}

#[test]
fn icmp_works_when_ping_group_range_allows_it_and_falls_back_to_tcp_when_not() {
    let Some(mut lab) = Lab::new("icmp") else { return };
    let quick = |port: Option<&str>| {
        let mut args = vec![
            "--kind",
            "icmp",
            "--target",
            W,
            "--interval-ms",
            "20",
            "--timeout-ms",
            "200",
            "--run-ms",
            "600",
        ];
        if let Some(port) = port {
            args.extend(["--port", port]);
        }
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let port = LISTEN_PORT.to_string();
    let run_probe = |lab: &mut Lab, args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.probe_to_end(&args, Duration::from_secs(10))
    };
    // A new namespace says `1 0`: nobody may open a ping socket, root included.
    let fallback = run_probe(&mut lab, quick(Some(&port)));
    assert_eq!(fallback["method"], "tcp-fallback", "{fallback}");
    assert!(f(&fallback, "replies") >= 20.0 && f(&fallback, "loss") == 0.0, "{fallback}");

    let unavailable = run_probe(&mut lab, quick(None));
    assert_eq!(unavailable["method"], "unavailable", "{unavailable}");
    let why = unavailable["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("ping_group_range") && why.contains("port"), "{unavailable}");
    assert_eq!(f(&unavailable, "sent"), 0.0, "no probe, no made-up figures");

    lab.net.allow_ping_sockets("a");
    let icmp = run_probe(&mut lab, quick(Some(&port)));
    assert_eq!(icmp["method"], "icmp", "{icmp}");
    assert!(f(&icmp, "replies") >= 20.0 && f(&icmp, "loss") == 0.0, "{icmp}");
    println!("fallback: {fallback}\nicmp: {icmp}");
}
