//! Quorum benchmark on loopback with real release binaries and the default timing:
//! cold-start election, leader loss to new leader (kill -9), and the idle footprint
//! (RSS, CPU, bytes per second per peer) of an agent and of the witness.
//!
//! cargo run --release -p sitewatch-tests --bin quorum-bench -- [RUNS] [IDLE_SECONDS]

use std::time::{Duration, Instant};

use serde_json::Value;
use sitewatch_tests::footprint::{Sample, connected_peers, cpu_percent, peer_bytes, sample};
use sitewatch_tests::{Cluster, Node, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(5);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, mut samples: Vec<f64>, target: Option<f64>) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let median = percentile(&samples, 50.0);
    let p95 = percentile(&samples, 95.0);
    let ratio = target.map_or("-".to_string(), |t| format!("{:.2}", p95 / t));
    println!(
        "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {ratio} |",
        samples.len(),
        samples[0] * 1000.0,
        median * 1000.0,
        p95 * 1000.0,
        samples[samples.len() - 1] * 1000.0
    );
}

/// Poll the sockets until every running node names the same leader (not `not`).
fn time_to_leader(c: &Cluster, not: Option<&str>, since: Instant) -> (String, f64) {
    let start = Instant::now();
    loop {
        if let Some((leader, _)) = c.agreed_leader_raw()
            && Some(leader.as_str()) != not
        {
            return (leader, since.elapsed().as_secs_f64());
        }
        assert!(start.elapsed() < LIMIT, "no leader within {LIMIT:?}");
        std::thread::sleep(POLL);
    }
}

fn cold_starts(runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let mut c = Cluster::three();
            let t0 = Instant::now();
            c.start_all();
            time_to_leader(&c, None, t0).1
        })
        .collect()
}

fn failovers(runs: usize) -> Vec<f64> {
    let mut c = Cluster::three();
    c.start_all();
    let mut out = Vec::new();
    for _ in 0..runs {
        let (leader, _) = time_to_leader(&c, None, Instant::now());
        // Let the cluster settle into steady heartbeats before pulling the plug.
        std::thread::sleep(Duration::from_millis(1500));
        c.node(&leader).kill9();
        let t0 = Instant::now();
        let (next, secs) = time_to_leader(&c, Some(&leader), t0);
        out.push(secs);
        c.node(&leader).start();
        wait_for(LIMIT, "the killed node to rejoin", || {
            let s = c.node(&leader).status_raw()?;
            (s["raft"]["leader_name"].as_str()? == next).then_some(())
        });
    }
    out
}

fn idle(seconds: u64) {
    let mut c = Cluster::three();
    c.start_all();
    let (leader, _) = time_to_leader(&c, None, Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let roles: Vec<(String, &Node)> = c
        .nodes
        .iter()
        .map(|n| {
            let what = if n.spec.name == leader {
                format!("{} (agent, leader)", n.spec.name)
            } else {
                format!("{} ({}, follower)", n.spec.name, n.spec.role)
            };
            (what, n)
        })
        .collect();
    let before: Vec<(Sample, Value)> = roles
        .iter()
        .map(|(_, n)| (sample(n.pid().expect("running")), n.status_raw().expect("status")))
        .collect();
    let t0 = Instant::now();
    let mut max_rss = vec![0u64; roles.len()];
    while t0.elapsed() < Duration::from_secs(seconds) {
        for (i, (_, n)) in roles.iter().enumerate() {
            max_rss[i] = max_rss[i].max(sample(n.pid().expect("running")).rss_kb);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    println!(
        "\n| node | RSS at end (MB) | max RSS (MB) | CPU (% of a core) | bytes/s per peer (both ways) |"
    );
    println!("|---|---|---|---|---|");
    for (i, (what, n)) in roles.iter().enumerate() {
        let after = sample(n.pid().expect("running"));
        let status = n.status_raw().expect("status");
        let cpu = cpu_percent(&before[i].0, &after, elapsed);
        let bytes = (peer_bytes(&status) - peer_bytes(&before[i].1)) as f64 / elapsed;
        let per_peer = bytes / connected_peers(&status).max(1) as f64;
        println!(
            "| {what} | {:.1} | {:.1} | {cpu:.2} | {per_peer:.0} |",
            after.rss_kb as f64 / 1024.0,
            max_rss[i] as f64 / 1024.0
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let idle_s: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    println!("quorum-bench: 2 agents + 1 witness on loopback, default timing, {runs} runs\n");
    println!("| measure | runs | min (ms) | median (ms) | p95 (ms) | max (ms) | p95 / 3 s target |");
    println!("|---|---|---|---|---|---|---|");
    summary("cold start to agreed leader", cold_starts(runs), Some(3.0));
    summary("leader kill -9 to agreed new leader", failovers(runs), Some(3.0));
    idle(idle_s);
}
