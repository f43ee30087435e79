//! Idle footprint as the site grows: clusters of real release processes on loopback with
//! a few voter agents, the rest of the agents observing as raft learners, and a witness.
//! For each shape, once every connection is up and the leader has judged the site: RSS,
//! CPU and bytes per second of the leader, a follower voter agent, the witness and one
//! learner over a sampling window; the whole cluster's CPU; the leader's status report.
//!
//! An agent leads in every shape (a cluster whose witness won the election is started
//! again), so the leader rows compare like with like.
//!
//! cargo run --release -p sitewatch-tests --bin scale-bench -- [SECONDS] [VOTERS+LEARNERS ...]
//! (default: 60 2+1 2+7 2+31 4+29; a witness is always added as a voter)

use std::time::{Duration, Instant};

use serde_json::Value;
use sitewatch_tests::footprint::{
    Sample, connected_peers, cpu_percent, load_average, peer_bytes, peer_bytes_by, sample,
};
use sitewatch_tests::stats::percentile;
use sitewatch_tests::{Cluster, Node, wait_for};

const START_LIMIT: Duration = Duration::from_secs(90);
/// After every connection is up: each peer's ping window (60 pings, one a second) fills
/// in its first minute, and with it each observation's link summaries; measured after.
const SETTLE: Duration = Duration::from_secs(70);

#[derive(Clone, Copy)]
struct Shape {
    voters: usize,
    learners: usize,
}

impl Shape {
    fn agents(&self) -> usize {
        self.voters + self.learners
    }

    fn label(&self) -> String {
        let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        format!(
            "{} ({} + {}) + witness",
            self.agents(),
            plural(self.voters, "voter"),
            plural(self.learners, "learner")
        )
    }
}

/// What one tracked node cost over the window.
struct Cost {
    what: String,
    rss_end_mb: f64,
    rss_growth_mb: f64,
    cpu: f64,
    bytes_s: f64,
    peers: usize,
    per_voter_peer: Option<f64>,
    per_learner_peer: Option<f64>,
}

struct Totals {
    cpu: f64,
    rss_mb: f64,
    status_kb: f64,
    status_ms: f64,
    observation_json_bytes: usize,
}

fn start(shape: Shape) -> (Cluster, String) {
    let width = if shape.agents() >= 10 { 2 } else { 1 };
    let names: Vec<String> = (1..=shape.agents()).map(|i| format!("agent-{i:0width$}")).collect();
    let mut members: Vec<(&str, &'static str, bool)> =
        names.iter().enumerate().map(|(i, n)| (n.as_str(), "agent", i < shape.voters)).collect();
    members.push(("witness", "witness", true));
    for attempt in 1..=5 {
        let mut c = Cluster::new(&members);
        c.start_all();
        let (leader, _) = wait_for(START_LIMIT, "an agreed leader", || c.agreed_leader_raw());
        if leader != "witness" {
            return (c, leader);
        }
        eprintln!("{}: the witness leads (attempt {attempt}); starting again", shape.label());
    }
    panic!("the witness won five elections in a row");
}

fn settle(c: &Cluster, leader: &str) {
    let all = c.nodes.len() - 1;
    wait_for(START_LIMIT, "every node connected to every peer", || {
        c.nodes.iter().all(|n| n.status_raw().is_some_and(|s| connected_peers(&s) == all)).then_some(())
    });
    let leader = c.nodes.iter().find(|n| n.spec.name == leader).expect("leader");
    wait_for(START_LIMIT, "the leader to judge the site healthy", || {
        let s = leader.status_raw()?;
        let a = &s["burst"]["assessment"];
        (a["settled"] == true && a["verdict"] == "healthy").then_some(())
    });
    std::thread::sleep(SETTLE);
}

fn per_peer(before: &Value, after: &Value, voter: bool, elapsed: f64) -> Option<f64> {
    let keep = |p: &Value| p["voter"] == voter;
    let after = peer_bytes_by(after, keep);
    if after.is_empty() {
        return None;
    }
    let before = peer_bytes_by(before, keep);
    let sum: u64 = after
        .iter()
        .map(|(name, b)| b - before.iter().find(|(n, _)| n == name).map_or(0, |(_, b0)| *b0).min(*b))
        .sum();
    Some(sum as f64 / after.len() as f64 / elapsed)
}

fn measure(shape: Shape, seconds: u64) -> (Vec<Cost>, Totals) {
    let (c, leader) = start(shape);
    settle(&c, &leader);
    let node = |name: &str| c.nodes.iter().find(|n| n.spec.name == name).expect("member");
    let follower = c
        .nodes
        .iter()
        .find(|n| n.spec.role == "agent" && n.spec.voter && n.spec.name != leader)
        .expect("a follower voter agent");
    let learner = c.nodes.iter().rev().find(|n| !n.spec.voter).expect("a learner");
    let tracked: Vec<(String, &Node)> = vec![
        ("leader (voter agent)".into(), node(&leader)),
        ("follower (voter agent)".into(), follower),
        ("witness (voter)".into(), node("witness")),
        ("learner agent".into(), learner),
    ];
    let pid = |n: &Node| n.pid().expect("running");
    let all_before: Vec<Sample> = c.nodes.iter().map(|n| sample(pid(n))).collect();
    let before: Vec<(Sample, Value)> =
        tracked.iter().map(|(_, n)| (sample(pid(n)), n.status_raw().expect("status"))).collect();
    let t0 = Instant::now();
    let mut max_rss = vec![0u64; tracked.len()];
    while t0.elapsed() < Duration::from_secs(seconds) {
        for (i, (_, n)) in tracked.iter().enumerate() {
            max_rss[i] = max_rss[i].max(sample(pid(n)).rss_kb);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let all_after: Vec<Sample> = c.nodes.iter().map(|n| sample(pid(n))).collect();
    let costs = tracked
        .iter()
        .zip(&before)
        .map(|((what, n), (s0, st0))| {
            let s1 = sample(pid(n));
            let st1 = n.status_raw().expect("status");
            Cost {
                what: format!("{what}, {}", n.spec.name),
                rss_end_mb: s1.rss_kb as f64 / 1024.0,
                rss_growth_mb: (s1.rss_kb as f64 - s0.rss_kb as f64) / 1024.0,
                cpu: cpu_percent(s0, &s1, elapsed),
                bytes_s: peer_bytes(&st1).saturating_sub(peer_bytes(st0)) as f64 / elapsed,
                peers: connected_peers(&st1),
                per_voter_peer: per_peer(st0, &st1, true, elapsed),
                per_learner_peer: per_peer(st0, &st1, false, elapsed),
            }
        })
        .collect();
    // The status socket as an operator's tooling reads it, timed on the leader.
    let leader_node = node(&leader);
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t = Instant::now();
        let s = leader_node.status_raw().expect("status");
        times.push(t.elapsed().as_secs_f64());
        size = serde_json::to_vec(&s).expect("json").len();
    }
    let observation = learner.status_raw().expect("status")["observation"].clone();
    let totals = Totals {
        cpu: all_before.iter().zip(&all_after).map(|(a, b)| cpu_percent(a, b, elapsed)).sum(),
        rss_mb: all_after.iter().map(|s| s.rss_kb as f64).sum::<f64>() / 1024.0,
        status_kb: size as f64 / 1024.0,
        status_ms: percentile(&times, 50.0).unwrap_or(0.0) * 1000.0,
        observation_json_bytes: serde_json::to_vec(&observation).expect("json").len(),
    };
    (costs, totals)
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.0}"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let mut shapes: Vec<Shape> = args
        .map(|a| {
            let (v, l) = a.split_once('+').expect("VOTERS+LEARNERS");
            Shape { voters: v.parse().expect("voters"), learners: l.parse().expect("learners") }
        })
        .collect();
    if shapes.is_empty() {
        shapes = vec![
            Shape { voters: 2, learners: 1 },
            Shape { voters: 2, learners: 7 },
            Shape { voters: 2, learners: 31 },
            Shape { voters: 4, learners: 29 },
        ];
    }
    let mut results = Vec::new();
    for shape in &shapes {
        let load = load_average();
        let (costs, totals) = measure(*shape, seconds);
        eprintln!("{}: load average before {load}, after {}", shape.label(), load_average());
        results.push((*shape, costs, totals));
    }

    println!("scale-bench: {seconds} s windows, default [timing], no [[probe]], no UPS\n");
    println!(
        "| agents | node | RSS end (MB) | RSS change in window (MB) | CPU (% of a core) | bytes/s, all peers \
         | peers | bytes/s per voter peer | bytes/s per learner peer | leader / 3-agent leader (RSS, CPU, bytes/s) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let base = &results[0].1[0];
    for (shape, costs, _) in &results {
        for (i, c) in costs.iter().enumerate() {
            let ratio = if i == 0 {
                format!(
                    "{:.2}, {:.2}, {:.1}",
                    c.rss_end_mb / base.rss_end_mb,
                    c.cpu / base.cpu,
                    c.bytes_s / base.bytes_s
                )
            } else {
                "-".into()
            };
            println!(
                "| {} | {} | {:.1} | {:+.2} | {:.2} | {:.0} | {} | {} | {} | {ratio} |",
                if i == 0 { shape.label() } else { String::new() },
                c.what,
                c.rss_end_mb,
                c.rss_growth_mb,
                c.cpu,
                c.bytes_s,
                c.peers,
                opt(c.per_voter_peer),
                opt(c.per_learner_peer),
            );
        }
    }
    println!(
        "\n| agents | processes | CPU, all processes (% of a core) | RSS, all processes (MB) \
         | leader's status report (KB JSON) | status query on the leader, median (ms) | one observation (bytes JSON) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (shape, _, t) in &results {
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {} |",
            shape.label(),
            shape.agents() + 1,
            t.cpu,
            t.rss_mb,
            t.status_kb,
            t.status_ms,
            t.observation_json_bytes
        );
    }
}
