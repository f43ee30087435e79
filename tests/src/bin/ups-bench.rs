//! UPS status change to detection, side by side in one run against the same upsd:
//! - sitewatch: a real `sitewatch-agent` (UPS poll-interval 1 s, observe-interval 1 s,
//!   the defaults), seen in its status socket's observation;
//! - upsc polling: `upsc site@... ups.status` once a second, as a cron-style script does;
//! - upsmon: NUT's own monitor at its defaults (POLLFREQ 5 s), its NOTIFYCMD
//!   timestamping ONBATT / ONLINE.
//!
//! The UPS alternates OB and OL every 7 s (upsmon needs a poll between changes).
//!
//! cargo run --release -p sitewatch-tests --bin ups-bench -- [CHANGES] [DRIVER_POLL_S]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_tests::upsd::{Upsd, UpsdOptions, Upsmon, unavailable};
use sitewatch_tests::{Cluster, wait_for};

const SPACING: Duration = Duration::from_secs(7);

fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Per tool, the wall-clock times at which it first reported each state ("OB"/"OL").
#[derive(Default)]
struct Seen {
    events: Mutex<Vec<(f64, &'static str)>>,
}

impl Seen {
    fn record(&self, state: &'static str) {
        let mut e = self.events.lock().expect("lock");
        if e.last().map(|(_, s)| *s) != Some(state) {
            e.push((now_s(), state));
        }
    }

    /// For each change (time, state), how long until this tool first saw that state.
    fn latencies(&self, changes: &[(f64, &'static str)]) -> Vec<Option<f64>> {
        let events = self.events.lock().expect("lock").clone();
        changes
            .iter()
            .map(|(t, state)| events.iter().find(|(at, s)| at >= t && s == state).map(|(at, _)| at - t))
            .collect()
    }
}

fn state_of(status: &str) -> Option<&'static str> {
    let flags: Vec<&str> = status.split_whitespace().collect();
    if flags.contains(&"OB") {
        Some("OB")
    } else if flags.contains(&"OL") {
        Some("OL")
    } else {
        None
    }
}

/// upsmon's ONBATT / ONLINE notifications as the states they report.
fn upsmon_seen(upsmon: &Upsmon) -> Seen {
    let seen = Seen::default();
    let mut events = seen.events.lock().expect("lock");
    for (t, kind) in upsmon.events() {
        match kind.as_str() {
            "ONBATT" => events.push((t, "OB")),
            "ONLINE" => events.push((t, "OL")),
            _ => {}
        }
    }
    drop(events);
    seen
}

fn summary(name: &str, lat: &[Option<f64>]) {
    let mut got: Vec<f64> = lat.iter().flatten().copied().collect();
    got.sort_by(|a, b| a.total_cmp(b));
    let missed = lat.len() - got.len();
    if got.is_empty() {
        println!("| {name} | 0 | {missed} | - | - | - |");
        return;
    }
    let median = got[got.len() / 2];
    let mean = got.iter().sum::<f64>() / got.len() as f64;
    println!(
        "| {name} | {} | {missed} | {:.0} | {:.0} | {:.0} |",
        got.len(),
        median * 1000.0,
        mean * 1000.0,
        got[got.len() - 1] * 1000.0
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let changes_wanted: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let driver_poll_s: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    if let Some(why) = unavailable(false) {
        eprintln!("ups-bench: {why}");
        std::process::exit(2);
    }
    let upsd = Upsd::launch(&["site"], UpsdOptions { driver_poll_s, ..UpsdOptions::default() });
    let mut cluster = Cluster::new(&[("agent-1", "agent", true)]);
    cluster
        .node("agent-1")
        .append_config(&format!("\n[[ups]]\nname = \"site\"\nserver = \"{}\"\n", upsd.server()));
    cluster.node("agent-1").start();
    // NUT's defaults: POLLFREQ 5 s, POLLFREQALERT 5 s.
    let mut upsmon = Upsmon::start(&upsd, "site", &cluster.dir.path().join("upsmon"), 5, 5);

    let stop = Arc::new(AtomicBool::new(false));
    let agent_seen = Arc::new(Seen::default());
    let upsc_seen = Arc::new(Seen::default());
    let socket_node = &cluster.nodes[0];
    wait_for(Duration::from_secs(20), "the agent's first UPS data", || {
        let s = socket_node.status_raw()?;
        (s["observation"]["power"].as_str()? == "line").then_some(())
    });
    std::thread::scope(|scope| {
        let (stop1, seen1) = (stop.clone(), agent_seen.clone());
        scope.spawn(move || {
            while !stop1.load(Ordering::Relaxed) {
                if let Some(s) = socket_node.status_raw()
                    && let Some(status) = s["observation"]["ups"][0]["state"]["status"]["flags"].as_array()
                {
                    let text: Vec<&str> = status.iter().filter_map(|f| f.as_str()).collect();
                    if let Some(state) = state_of(&text.join(" ")) {
                        seen1.record(state);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let (stop2, seen2, target) = (stop.clone(), upsc_seen.clone(), format!("site@{}", upsd.server()));
        scope.spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if let Ok(out) =
                    Command::new("upsc").args([&target, "ups.status"]).stderr(Stdio::null()).output()
                    && let Some(state) = state_of(&String::from_utf8_lossy(&out.stdout))
                {
                    seen2.record(state);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        // Let upsmon log in and settle before the first change.
        std::thread::sleep(Duration::from_secs(8));
        let mut changes = Vec::new();
        for i in 0..changes_wanted {
            let (status, state) = if i % 2 == 0 { ("OB DISCHRG", "OB") } else { ("OL CHRG", "OL") };
            let t = now_s();
            upsd.write_status("site", status, 90);
            changes.push((t, state));
            std::thread::sleep(SPACING);
        }
        stop.store(true, Ordering::Relaxed);
        upsmon.stop();
        let upsmon_seen = upsmon_seen(&upsmon);
        if upsmon_seen.events.lock().expect("lock").is_empty() {
            eprintln!("upsmon reported nothing; its log ends:\n{}", upsmon.log_tail(15));
        }
        println!(
            "ups-bench: {} changes, dummy-ups pollinterval {driver_poll_s} s, {} s apart\n",
            changes.len(),
            SPACING.as_secs()
        );
        println!("| tool | seen | missed | median (ms) | mean (ms) | max (ms) |");
        println!("|---|---|---|---|---|---|");
        summary("sitewatch agent observation (poll 1 s, observe 1 s)", &agent_seen.latencies(&changes));
        summary("upsc every 1 s", &upsc_seen.latencies(&changes));
        summary("upsmon defaults (POLLFREQ 5 s) NOTIFYCMD", &upsmon_seen.latencies(&changes));
    });
}
