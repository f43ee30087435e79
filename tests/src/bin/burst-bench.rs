//! UPS status change to committed verdict, and committed verdict to actuator call, with
//! real processes: one upsd (dummy-ups), two agents reading it, a witness, and a webhook
//! actuator pointing at a local receiver that checks signatures and stamps arrivals.
//!
//! Each UPS change (OB, then OL, alternating) makes a committed decision (degraded while
//! the on-battery timer is armed, healthy again on line) and a webhook call. Times:
//! - change -> committed: from the .dev file write until the leader's status socket shows
//!   the new decision (polled every 10 ms);
//! - commit -> call: from the leader's "committed decision applied" log line to the
//!   receiver reading the request (both wall clock, same machine, microseconds).
//!
//! cargo run --release -p sitewatch-tests --bin burst-bench -- [CHANGES] [DRIVER_POLL_S]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_tests::receiver::Receiver;
use sitewatch_tests::upsd::{Upsd, UpsdOptions, unavailable};
use sitewatch_tests::{Cluster, wait_for};

const SPACING: Duration = Duration::from_secs(5);
const SECRET: &[u8] = b"bench-signing-key";

fn secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn summary(name: &str, mut xs: Vec<f64>) {
    xs.sort_by(|a, b| a.total_cmp(b));
    if xs.is_empty() {
        println!("| {name} | 0 | - | - | - |");
        return;
    }
    let pct = |p: usize| xs[((xs.len() * p).div_ceil(100)).saturating_sub(1).min(xs.len() - 1)];
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        xs.len(),
        pct(50) * 1000.0,
        pct(95) * 1000.0,
        xs[xs.len() - 1] * 1000.0
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let changes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let driver_poll_s: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    if let Some(why) = unavailable(false) {
        eprintln!("burst-bench: {why}");
        std::process::exit(2);
    }
    let upsd = Upsd::launch(&["site"], UpsdOptions { driver_poll_s, ..UpsdOptions::default() });
    let receiver = Receiver::start(SECRET);
    let mut c = Cluster::three();
    let secret = c.dir.path().join("hook.secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let actuator = format!(
        "\n[[actuator]]\nkind = \"webhook\"\nname = \"hook\"\nurl = \"{}\"\nsecret-file = \"{}\"\n",
        receiver.url(),
        secret.display()
    );
    for n in ["agent-1", "agent-2"] {
        c.node(n).append_config(&format!("\n[[ups]]\nname = \"site\"\nserver = \"{}\"\n", upsd.server()));
    }
    for n in ["agent-1", "agent-2", "witness"] {
        c.node(n).append_config(&actuator);
        c.node(n).start();
    }
    let (leader, _) = c.wait_leader(Duration::from_secs(20));
    let leader = c.nodes.iter().find(|n| n.spec.name == leader).expect("leader node");
    wait_for(Duration::from_secs(30), "the leader to judge the site healthy", || {
        let s = leader.status_raw()?;
        (s["burst"]["assessment"]["settled"].as_bool()? && s["site"]["verdict"] == "healthy").then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));

    let mut to_commit = Vec::new();
    let mut decisions = Vec::new();
    for i in 0..changes {
        let (status, verdict) = if i % 2 == 0 { ("OB DISCHRG", "degraded") } else { ("OL CHRG", "healthy") };
        let before = leader.status_raw().and_then(|s| s["site"]["decision"]["index"].as_u64()).unwrap_or(0);
        let t = secs(SystemTime::now());
        upsd.write_status("site", status, 90);
        let seen = wait_for(Duration::from_secs(15), "a committed decision", || {
            let s = leader.status_raw()?;
            let index = s["site"]["decision"]["index"].as_u64()?;
            (index > before && s["site"]["verdict"] == verdict).then_some((secs(SystemTime::now()), index))
        });
        to_commit.push(seen.0 - t);
        decisions.push(seen.1);
        std::thread::sleep(SPACING);
    }
    let deliveries = receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.signature_ok), "every delivery signed");
    let mut to_call = Vec::new();
    for index in &decisions {
        let Some(applied) = leader.decision_applied_at(*index) else { continue };
        if let Some(d) = deliveries.iter().find(|d| d.body["token"]["index"] == *index) {
            to_call.push(secs(d.at) - applied);
        }
    }
    println!(
        "burst-bench: {changes} UPS changes {} s apart, dummy-ups pollinterval {driver_poll_s} s, agent UPS poll 1 s (default)\n",
        SPACING.as_secs()
    );
    println!("| step | n | median (ms) | p95 (ms) | max (ms) |");
    println!("|---|---|---|---|---|");
    summary("UPS change -> committed verdict (leader's socket)", to_commit);
    summary("commit applied on the leader -> webhook received", to_call);
}
