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

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sitewatch_tests::upsd::{MONITOR_PASSWORD, MONITOR_USER, UPSMON, Upsd, UpsdOptions, run, unavailable};
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

fn start_upsmon(upsd: &Upsd, dir: &std::path::Path) -> Child {
    let log = dir.join("notify.log");
    let script = dir.join("notify.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$(date +%s.%N) $NOTIFYTYPE\" >> {}\n", log.display()))
        .expect("notify script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(&log, "").expect("log");
    run(Command::new("chown").arg("nut:nut").arg(&log));
    let conf = dir.join("upsmon.conf");
    std::fs::write(
        &conf,
        format!(
            "MONITOR site@127.0.0.1:{} 1 {MONITOR_USER} {MONITOR_PASSWORD} secondary\nMINSUPPLIES 0\n\
             SHUTDOWNCMD \"/bin/true\"\nNOTIFYCMD {}\nNOTIFYFLAG ONBATT EXEC\nNOTIFYFLAG ONLINE EXEC\n",
            upsd.port(),
            script.display()
        ),
    )
    .expect("upsmon.conf");
    run(Command::new("chown").arg("root:nut").arg(&conf));
    run(Command::new("chmod").arg("640").arg(&conf));
    run(Command::new("chmod").arg("755").arg(dir));
    let log = std::fs::File::create(dir.join("upsmon.log")).expect("upsmon log");
    Command::new(UPSMON)
        .arg("-D")
        .env("NUT_CONFPATH", dir)
        .env("NUT_STATEPATH", dir)
        .env("NUT_ALTPIDPATH", dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start upsmon")
}

fn upsmon_events(dir: &std::path::Path) -> Seen {
    let seen = Seen::default();
    let text = std::fs::read_to_string(dir.join("notify.log")).unwrap_or_default();
    let mut events = seen.events.lock().expect("lock");
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(t), Some(kind)) = (parts.next(), parts.next()) else { continue };
        let Ok(t) = t.parse::<f64>() else { continue };
        match kind {
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
    let mon_dir = cluster.dir.path().join("upsmon");
    std::fs::create_dir(&mon_dir).expect("upsmon dir");
    let mut upsmon = start_upsmon(&upsd, &mon_dir);

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
        // `upsmon -c stop` stops the instance behind this pid file, parent and child.
        let _ = Command::new(UPSMON)
            .args(["-c", "stop"])
            .env("NUT_CONFPATH", &mon_dir)
            .env("NUT_STATEPATH", &mon_dir)
            .env("NUT_ALTPIDPATH", &mon_dir)
            .stderr(Stdio::null())
            .status();
        let _ = upsmon.kill();
        let _ = upsmon.wait();
        let upsmon_seen = upsmon_events(&mon_dir);
        if upsmon_seen.events.lock().expect("lock").is_empty() {
            let log = std::fs::read_to_string(mon_dir.join("upsmon.log")).unwrap_or_default();
            eprintln!(
                "upsmon reported nothing; its log ends:\n{}",
                log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
            );
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
