//! Leader loss to a new agreed leader over slow links, in the network-namespace lab: two
//! agents and a witness, every host's outgoing packets held by nfq-delay (so a round trip
//! crosses two delays), the leader's daemon killed with SIGKILL, the time until every
//! surviving member names the same new leader. Prints a markdown table.
//!
//!   cargo run --release -p sitewatch-tests --bin lab-bench -- [RUNS]      (as root)

use std::time::{Duration, Instant};

use sitewatch_tests::lab::{LabSpec, SiteLab};
use sitewatch_tests::wait_for;

/// One-way delay per host (ms) and jitter: round trips of 0, 50 and 100 ms.
const SETTINGS: [(u32, u32); 3] = [(0, 0), (25, 3), (50, 5)];

fn main() {
    let runs: usize = std::env::args().nth(1).map(|a| a.parse().expect("RUNS is a number")).unwrap_or(10);
    println!(
        "| one-way delay per host | round trip | measured RTT (ms) | runs | median (ms) | p95 (ms) | max (ms) | p95 / 3 s target | median / no delay |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut baseline = None;
    for (delay, jitter) in SETTINGS {
        let Some(mut lab) = SiteLab::start(&format!("bench{delay}"), LabSpec::default()) else {
            std::process::exit(1);
        };
        if delay > 0 {
            for host in lab.names() {
                lab.net.delay(&host, delay, jitter);
            }
        }
        // Let the ping windows (15 s in the lab) fill with the delayed round trips, and
        // read what the leader measures: the delay is there, not assumed.
        std::thread::sleep(Duration::from_secs(16));
        let (leader, _) = lab.wait_leader(Duration::from_secs(30));
        let status = lab.node(&leader).status_raw().expect("the leader answers");
        let mut rtts: Vec<f64> = status["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .filter_map(|p| p["link"]["rtt_median_ms"].as_f64())
            .collect();
        rtts.sort_by(f64::total_cmp);
        let measured_rtt = rtts.get(rtts.len() / 2).copied().unwrap_or(f64::NAN);
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let (leader, _) = lab.wait_leader(Duration::from_secs(30));
            lab.kill_daemon(&leader);
            let killed = Instant::now();
            wait_for(Duration::from_secs(30), "a new agreed leader", || {
                lab.agreed_leader().filter(|(l, _)| *l != leader)
            });
            samples.push(killed.elapsed());
            lab.start_node(&leader);
            // Back in the quorum and caught up before the next kill.
            lab.wait_caught_up(Duration::from_secs(30));
            wait_for(Duration::from_secs(30), "the restarted node to follow", || {
                let s = lab.node(&leader).status_raw()?;
                s["raft"]["leader_name"].as_str().is_some_and(|l| l != leader).then_some(())
            });
            std::thread::sleep(Duration::from_secs(1));
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let median = ms(samples[samples.len() / 2]);
        let p95 = ms(samples[((samples.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)]);
        let base = *baseline.get_or_insert(median);
        println!(
            "| {delay} ± {jitter} ms | {} ms | {measured_rtt:.1} | {runs} | {median:.0} | {p95:.0} | {:.0} | {:.2} | {:.2} |",
            delay * 2,
            ms(*samples.last().expect("runs > 0")),
            p95 / 3000.0,
            median / base,
        );
    }
}
