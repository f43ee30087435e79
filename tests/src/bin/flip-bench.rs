//! A UPS going on battery, to detection and to the cloud call, side by side in one run:
//! sitewatch's committed verdict and its AWS Auto Scaling SetDesiredCapacity, and NUT's
//! own upsmon (NOTIFYCMD stamping ONBATT), each watching the same upsd.
//!
//! One rig per setting, all running at once: a real upsd with one dummy-ups UPS, two
//! agents reading it, a witness, an aws-asg actuator, and an upsmon on the same UPS. One
//! moto_server holds every rig's group, behind a relay that stamps each request when its
//! last byte arrives. The policy decides on detection, not on a grace: `burst-after =
//! "1ms"` (zero is refused), and `scale-down-after = "1s"` gives the capacity back
//! between flips.
//!
//! Each flip renames an OB .dev file over the OL one, waits for every observer, puts the
//! UPS back on line, waits for the group to return to 0 and for upsmon's ONLINE, then
//! waits a random 0-10 s, so that flips land at any phase of the 1, 2 and 5 s polls.
//! Times are from the rename: upsd answering OB to GET VAR (polled every 10 ms), the
//! first agent's own record of going on battery (its observation's taken_at - power_for),
//! the leader's decision (`decided_at_ms`), its log line for applying the commit, its
//! status socket showing the verdict (polled every 10 ms), the relay's stamps, and
//! upsmon's NOTIFYCMD.
//!
//! cargo run --release -p sitewatch-tests --bin flip-bench -- [FLIPS]

use std::time::Duration;

use serde_json::Value;
use sitewatch_tests::footprint::load_average;
use sitewatch_tests::moto::{self, Moto};
use sitewatch_tests::relay::Relay;
use sitewatch_tests::stats::percentile;
use sitewatch_tests::upsd::{Upsd, UpsdOptions, Upsmon, VarReader, unavailable};
use sitewatch_tests::{Cluster, Node, unix_now, wait_for};

const POLL: Duration = Duration::from_millis(10);
const FLIP_LIMIT: f64 = 30.0;
/// Flips land at a random phase of every poll in the run (lcm of 1, 2 and 5 s).
const JITTER_S: f64 = 10.0;
const SECRET_ENV: &str = "FLIP_AWS_SECRET";

struct Setting {
    name: &'static str,
    driver_poll_s: u64,
    agent_poll: &'static str,
    pollfreq_s: u32,
    pollfreq_alert_s: u32,
}

const SETTINGS: [Setting; 3] = [
    Setting { name: "defaults", driver_poll_s: 2, agent_poll: "1s", pollfreq_s: 5, pollfreq_alert_s: 5 },
    Setting {
        name: "tools tuned",
        driver_poll_s: 2,
        agent_poll: "250ms",
        pollfreq_s: 1,
        pollfreq_alert_s: 1,
    },
    Setting { name: "all tuned", driver_poll_s: 1, agent_poll: "250ms", pollfreq_s: 1, pollfreq_alert_s: 1 },
];

/// One flip: seconds after the .dev file's rename.
#[derive(Default, Clone, Debug)]
struct Flip {
    upsd: Option<f64>,
    agent: Option<f64>,
    decided: Option<f64>,
    applied: Option<f64>,
    committed: Option<f64>,
    describe: Option<f64>,
    set: Option<f64>,
    upsmon: Option<f64>,
    leader: String,
    /// The leader committed a degraded verdict (armed timer) before the down one.
    degraded_first: bool,
}

impl Flip {
    fn complete(&self) -> bool {
        self.upsd.is_some() && self.committed.is_some() && self.set.is_some() && self.upsmon.is_some()
    }
}

struct Rig<'a> {
    setting: &'a Setting,
    group: String,
    relay: &'a Relay,
    upsd: Upsd,
    cluster: Cluster,
    upsmon: Upsmon,
}

impl<'a> Rig<'a> {
    fn launch(setting: &'a Setting, group: String, moto: &Moto, relay: &'a Relay) -> Rig<'a> {
        let upsd = Upsd::launch(
            &["site"],
            UpsdOptions { driver_poll_s: setting.driver_poll_s, ..Default::default() },
        );
        moto.create_group(&group, 0, 4);
        let mut cluster = Cluster::three();
        let common = format!(
            "\n[policy]\nburst-after = \"1ms\"\nscale-down-after = \"1s\"\n\
             \n[[actuator]]\nkind = \"aws-asg\"\nname = \"cloud\"\nregion = \"{region}\"\ngroup = \"{group}\"\n\
             endpoint = \"{endpoint}\"\naccess-key-id = \"{key}\"\nsecret-access-key-env = \"{SECRET_ENV}\"\n",
            region = moto::REGION,
            endpoint = relay.endpoint(),
            key = moto::ANY_KEY_ID,
        );
        let ups = format!(
            "\n[[ups]]\nname = \"site\"\nserver = \"{}\"\npoll-interval = \"{}\"\n",
            upsd.server(),
            setting.agent_poll
        );
        for n in ["agent-1", "agent-2"] {
            cluster.node(n).append_config(&ups);
        }
        for n in ["agent-1", "agent-2", "witness"] {
            cluster.node(n).append_config(&common);
            cluster.node(n).start_with_env(&[(SECRET_ENV, moto::ANY_SECRET)]);
        }
        let upsmon_dir = cluster.dir.path().join("upsmon");
        let upsmon = Upsmon::start(&upsd, "site", &upsmon_dir, setting.pollfreq_s, setting.pollfreq_alert_s);
        cluster.wait_leader(Duration::from_secs(20));
        wait_for(Duration::from_secs(30), "every voter to judge the site healthy", || {
            cluster.nodes.iter().all(|n| healthy(&n.status_raw())).then_some(())
        });
        Rig { setting, group, relay, upsd, cluster, upsmon }
    }

    fn leader(&self) -> &Node {
        let (name, _) =
            wait_for(Duration::from_secs(20), "an agreed leader", || self.cluster.agreed_leader_raw());
        self.cluster.nodes.iter().find(|n| n.spec.name == name).expect("leader node")
    }

    fn run(&self, flips: usize) -> Vec<Flip> {
        let mut reader = VarReader::new(&self.upsd);
        // upsmon logs in and reads its first status within a poll or two.
        std::thread::sleep(Duration::from_secs(u64::from(self.setting.pollfreq_s) * 2 + 1));
        let mut out = Vec::new();
        for _ in 0..flips {
            std::thread::sleep(Duration::from_secs_f64(rand::random_range(0.0..JITTER_S)));
            if !self.new_phase(&mut reader) {
                break;
            }
            std::thread::sleep(Duration::from_secs_f64(rand::random_range(0.0..JITTER_S)));
            let (flip, back) = self.flip(&mut reader);
            out.push(flip);
            if !back {
                break;
            }
        }
        out
    }

    /// Restart the driver, so that its poll timer, which every observer waits on, takes a
    /// new phase against the agents' and upsmon's: with one driver for the whole run, the
    /// wait from the driver's read to each tool's next poll would be one fixed offset,
    /// sampled once. The restart comes at a random time (after a random wait), and the
    /// flip a random time after it. False when the rig did not settle again.
    fn new_phase(&self, reader: &mut VarReader) -> bool {
        self.upsd.restart_driver("site");
        let settled = until(Duration::from_secs(20), || {
            reader.get("site", "ups.status").is_some_and(|s| has_flag(&s, "OL"))
        }) && until(Duration::from_secs(40), || {
            // Every agent reads the UPS again, and the decision in force is healthy and done.
            let on_line = self.cluster.nodes.iter().filter(|n| n.spec.role == "agent").all(|n| {
                n.status_raw().is_some_and(|s| s["observation"]["power"] == "line" && healthy(&Some(s)))
            });
            on_line
                && self.cluster.agreed_leader_raw().is_some_and(|(name, _)| {
                    let leader = self.cluster.nodes.iter().find(|n| n.spec.name == name);
                    leader.and_then(Node::status_raw).is_some_and(|s| given_back(&s))
                })
        });
        if !settled {
            eprintln!("{}: not settled 60 s after a driver restart", self.setting.name);
        }
        settled
    }

    /// One flip and the way back; false when the rig did not come back, and should stop.
    fn flip(&self, reader: &mut VarReader) -> (Flip, bool) {
        let leader = self.leader();
        let before = leader.status_raw().and_then(|s| s["site"]["decision"]["index"].as_u64()).unwrap_or(0);
        let mut f = Flip { leader: leader.spec.name.clone(), ..Default::default() };
        let t0 = unix_now();
        self.upsd.write_status("site", "OB DISCHRG", 90);
        let mut index = None;
        while !f.complete() && unix_now() - t0 < FLIP_LIMIT {
            if f.upsd.is_none() && reader.get("site", "ups.status").is_some_and(|s| has_flag(&s, "OB")) {
                f.upsd = Some(unix_now() - t0);
            }
            if f.committed.is_none()
                && let Some(s) = leader.status_raw()
                && s["site"]["verdict"] == "down"
                && let Some(i) = s["site"]["decision"]["index"].as_u64().filter(|i| *i > before)
            {
                f.committed = Some(unix_now() - t0);
                f.decided = s["site"]["decided_at_ms"].as_u64().map(|ms| ms as f64 / 1000.0 - t0);
                index = Some(i);
            }
            f.upsmon = first_after(&self.upsmon.events(), t0, "ONBATT");
            let requests = self.relay.requests();
            // This rig's requests of one kind since the flip, as seconds after it.
            let mine = |action: &str, key: &str| -> Vec<f64> {
                requests
                    .iter()
                    .filter(|r| r.form("Action") == Some(action) && r.form(key) == Some(self.group.as_str()))
                    .map(|r| secs(r.at) - t0)
                    .filter(|t| *t >= 0.0)
                    .collect()
            };
            if let Some(set) = mine("SetDesiredCapacity", "AutoScalingGroupName").first().copied() {
                f.set = Some(set);
                // The read just before it: a decision that changes nothing (a degraded
                // verdict first) reads the group too, without setting it.
                f.describe = mine("DescribeAutoScalingGroups", "AutoScalingGroupNames.member.1")
                    .into_iter()
                    .rfind(|t| *t <= set);
            }
            std::thread::sleep(POLL);
        }
        f.applied = index.and_then(|i| leader.decision_applied_at(i)).map(|t| t - t0);
        if let Some(down) = index {
            f.degraded_first = leader.logs().lines().any(|l| {
                let i = l.split_once(" index=").and_then(|(_, r)| r.split(' ').next()?.parse::<u64>().ok());
                l.contains("committed decision applied")
                    && l.contains("verdict=degraded")
                    && i.is_some_and(|i| i > before && i < down)
            });
        }
        // Each agent's own record of when it went on battery, on the wall clock.
        f.agent = self
            .cluster
            .nodes
            .iter()
            .filter_map(|n| {
                let o = n.status_raw()?["observation"].clone();
                (o["power"] == "battery").then_some(())?;
                let taken = o["taken_at_unix_ms"].as_u64()? as f64 / 1000.0;
                Some(taken - o["power_for_ms"].as_u64()? as f64 / 1000.0 - t0)
            })
            .min_by(f64::total_cmp);
        if !f.complete() {
            eprintln!(
                "{}: flip incomplete after {FLIP_LIMIT} s: {f:?}; upsmon's log ends:\n{}",
                self.setting.name,
                self.upsmon.log_tail(10)
            );
        }
        // Back on line: at least a second after the last write (dummy-ups misses a rewrite
        // within the second of its last read), then the group back to 0 and upsmon ONLINE.
        std::thread::sleep(Duration::from_secs_f64((t0 + 1.2 - unix_now()).max(0.0)));
        let t1 = unix_now();
        self.upsd.write_status("site", "OL CHRG", 90);
        let back = until(Duration::from_secs(40), || {
            leader.status_raw().is_some_and(|s| given_back(&s))
                && first_after(&self.upsmon.events(), t1, "ONLINE").is_some()
        });
        if !back {
            eprintln!(
                "{}: no way back to healthy with the group at 0 and upsmon ONLINE within 40 s; upsmon's log ends:\n{}",
                self.setting.name,
                self.upsmon.log_tail(10)
            );
        }
        (f, back)
    }
}

/// Poll `f` every 50 ms until it holds or `limit` passes; whether it held. A timeout is a
/// result here, not a panic: the release profile aborts on panic, which would leave every
/// daemon, upsd and upsmon of the run behind.
fn until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn healthy(status: &Option<Value>) -> bool {
    status.as_ref().is_some_and(|s| {
        let a = &s["burst"]["assessment"];
        a["settled"] == true && a["verdict"] == "healthy"
    })
}

/// The site is healthy with the group at 0, and the actuator has done that decision.
fn given_back(s: &Value) -> bool {
    let cloud = &s["site"]["actions"]["cloud"];
    s["site"]["verdict"] == "healthy"
        && s["site"]["desired_capacity"] == 0
        && cloud["ok"] == true
        && cloud["token"]["index"] == s["site"]["decision"]["index"]
}

fn has_flag(status: &str, flag: &str) -> bool {
    status.split_whitespace().any(|f| f == flag)
}

fn secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn first_after(events: &[(f64, String)], t0: f64, kind: &str) -> Option<f64> {
    events.iter().find(|(t, k)| *t >= t0 && k == kind).map(|(t, _)| t - t0)
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.0}", v * 1000.0))
}

fn column(flips: &[Flip], pick: impl Fn(&Flip) -> Option<f64>) -> Vec<f64> {
    flips.iter().filter_map(pick).collect()
}

fn main() {
    let flips: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    if let Some(why) = unavailable(false) {
        eprintln!("flip-bench: {why}");
        std::process::exit(2);
    }
    let moto = Moto::launch().unwrap_or_else(|why| {
        eprintln!("flip-bench: {why}");
        std::process::exit(2);
    });
    let relay = Relay::start(moto.port());
    let load_before = load_average();
    let rigs: Vec<Rig> = SETTINGS
        .iter()
        .enumerate()
        .map(|(i, s)| Rig::launch(s, format!("flip-{}", i + 1), &moto, &relay))
        .collect();
    let results: Vec<Vec<Flip>> = std::thread::scope(|scope| {
        let running: Vec<_> = rigs.iter().map(|rig| scope.spawn(move || rig.run(flips))).collect();
        running.into_iter().map(|h| h.join().expect("rig thread")).collect()
    });
    let load_after = load_average();

    println!(
        "flip-bench: {flips} flips OL -> OB per setting, all settings at once; burst-after 1ms; \
         load average before {load_before}, after {load_after}\n"
    );
    println!(
        "| setting (dummy-ups poll / agent UPS poll / upsmon POLLFREQ) | flips | upsmon ONBATT median (ms) | p95 (ms) \
         | sitewatch committed verdict median (ms) | p95 (ms) | SetDesiredCapacity arrives median (ms) | p95 (ms) \
         | committed / upsmon (median, p95) | SetDesiredCapacity / upsmon (median, p95) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (s, fs) in SETTINGS.iter().zip(&results) {
        let upsmon = column(fs, |f| f.upsmon);
        let committed = column(fs, |f| f.committed);
        let set = column(fs, |f| f.set);
        let (um, u95) = (percentile(&upsmon, 50.0), percentile(&upsmon, 95.0));
        let (cm, c95) = (percentile(&committed, 50.0), percentile(&committed, 95.0));
        let (sm, s95) = (percentile(&set, 50.0), percentile(&set, 95.0));
        let ratio =
            |a: Option<f64>, b: Option<f64>| a.zip(b).map_or("-".into(), |(a, b)| format!("{:.2}", a / b));
        println!(
            "| {} ({} s / {} / {} s, alert {} s) | {} | {} | {} | {} | {} | {} | {} | {}, {} | {}, {} |",
            s.name,
            s.driver_poll_s,
            s.agent_poll,
            s.pollfreq_s,
            s.pollfreq_alert_s,
            fs.iter().filter(|f| f.complete()).count(),
            ms(um),
            ms(u95),
            ms(cm),
            ms(c95),
            ms(sm),
            ms(s95),
            ratio(cm, um),
            ratio(c95, u95),
            ratio(sm, um),
            ratio(s95, u95),
        );
    }

    println!("\nWhere sitewatch's time goes: median (p95) of each step, ms, same run\n");
    println!(
        "| setting | .dev -> upsd answers OB (driver poll) | -> first agent reads OB (agent poll) \
         | -> leader decides (observation out, leader tick) | -> commit applied on the leader | -> status shows it \
         | applied -> DescribeAutoScalingGroups arrives | -> SetDesiredCapacity arrives |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (s, fs) in SETTINGS.iter().zip(&results) {
        let step = |a: fn(&Flip) -> Option<f64>, b: fn(&Flip) -> Option<f64>| {
            let xs = column(fs, |f| Some(b(f)? - a(f)?));
            format!("{} ({})", ms(percentile(&xs, 50.0)), ms(percentile(&xs, 95.0)))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            step(|_| Some(0.0), |f| f.upsd),
            step(|f| f.upsd, |f| f.agent),
            step(|f| f.agent, |f| f.decided),
            step(|f| f.decided, |f| f.applied),
            step(|f| f.applied, |f| f.committed),
            step(|f| f.applied, |f| f.describe),
            step(|f| f.describe, |f| f.set),
        );
    }
    for (s, fs) in SETTINGS.iter().zip(&results) {
        let leaders: std::collections::BTreeMap<&str, usize> =
            fs.iter().fold(Default::default(), |mut m, f| {
                *m.entry(f.leader.as_str()).or_default() += 1;
                m
            });
        eprintln!(
            "{}: leaders {leaders:?}; a degraded verdict committed before the down one in {} of {} flips",
            s.name,
            fs.iter().filter(|f| f.degraded_first).count(),
            fs.len()
        );
        for f in fs {
            eprintln!(
                "  upsd {} agent {} decided {} applied {} status {} describe {} set {} upsmon {} ({}{})",
                ms(f.upsd),
                ms(f.agent),
                ms(f.decided),
                ms(f.applied),
                ms(f.committed),
                ms(f.describe),
                ms(f.set),
                ms(f.upsmon),
                f.leader,
                if f.degraded_first { ", degraded first" } else { "" }
            );
        }
    }
}
