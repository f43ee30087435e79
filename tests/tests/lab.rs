//! The fault campaign: each scenario a whole site in a network-namespace lab
//! (`sitewatch_tests::lab`): real agents each reading its own real upsd, a witness, moto's
//! server as the cloud, real TLS over veths and a bridge, faults from the kernel. After
//! every scenario the invariants (`sitewatch_tests::invariants`) are checked on what moto,
//! the hooks' journal and every node's committed history recorded.
//!
//! Policy in the lab: burst-after 4 s, scale-down-after 12 s, host-lost-after 5 s,
//! dark-site-after 10 s. Needs root, iproute2/nftables/iptables, nut-server and moto (CI
//! installs them all and sets SITEWATCH_REQUIRE_*); otherwise each test says SKIPPED.

use std::time::{Duration, Instant};

use serde_json::Value;
use sitewatch_tests::ask_socket;
use sitewatch_tests::lab::{LabSpec, SiteLab};
use sitewatch_tests::netns::Cut;
use sitewatch_tests::wait_for;

/// How long past burst-after a committed burst may take: a UPS read (driver 1 s, agent
/// 0.5 s), an observation (1 s), a commit and the ASG call, with room for a loaded machine.
const DETECTION: Duration = Duration::from_secs(10);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The committed decisions (verdict, capacity) in `member`'s history, oldest first.
fn decisions(lab: &SiteLab, member: &str) -> Vec<(String, u64)> {
    let history = sitewatch_tests::lab::history(&lab.node(member).socket).expect("history");
    history
        .iter()
        .filter_map(|r| {
            let d = &r["command"]["decision"];
            Some((d["verdict"].as_str()?.to_owned(), d["desired_capacity"].as_u64()?))
        })
        .collect()
}

/// The highest desired capacity moto ever held in this scenario.
fn peak(lab: &SiteLab) -> u32 {
    lab.timeline().iter().map(|(_, c)| *c).max().unwrap_or(0)
}

/// Power cut on every agent: exactly one burst decision, the group at the burst size
/// within burst-after plus detection, every action under that decision's token.
fn burst_on_power_cut(lab: &SiteLab, capacity: u32) -> (Duration, Value) {
    lab.all_agents_power(true);
    let cut = Instant::now();
    lab.wait_desired(lab.spec.burst_after + DETECTION, capacity);
    let took = cut.elapsed();
    assert!(
        took >= lab.spec.burst_after.saturating_sub(Duration::from_millis(600)),
        "burst before burst-after: {took:?}"
    );
    let (leader, _) = lab.wait_quorum_leader(secs(15));
    let s = lab.wait_committed(&leader, secs(5), "down", capacity);
    (took, s)
}

/// From `since` (power back, a cut healed, agents back), the group returns to 0, and not
/// before scale-down-after; how long it took.
fn given_back_after_the_grace(lab: &SiteLab, since: Instant) -> Duration {
    lab.wait_desired(lab.spec.scale_down_after + secs(25), 0);
    let took = since.elapsed();
    assert!(took >= lab.spec.scale_down_after, "capacity given back {took:?} after the site came back");
    took
}

#[test]
fn site_wide_power_loss_bursts_once() {
    let Some(lab) = SiteLab::start("power", LabSpec { agents: 3, ..LabSpec::default() }) else { return };
    let (took, s) = burst_on_power_cut(&lab, 3);
    eprintln!("site-wide power loss -> group desired 3 in {took:?}");
    let token = s["site"]["decision"].clone();
    // Hosts crossing burst-after one by one still give one decision: all three counted at once.
    let (leader, _) = lab.wait_leader(secs(5));
    std::thread::sleep(secs(3));
    let bursts: Vec<_> = decisions(&lab, &leader).into_iter().filter(|(_, c)| *c > 0).collect();
    assert_eq!(bursts, [("down".to_owned(), 3)], "one burst decision");
    let done: Vec<_> = lab.actions().into_iter().filter(|a| a.phase == "done" && a.capacity == 3).collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(
        (done[0].term, done[0].index),
        (token["term"].as_u64().unwrap(), token["index"].as_u64().unwrap())
    );
    assert_eq!(lab.desired(), 3);
    lab.assert_invariants();
}

#[test]
fn one_hosts_ups_alone_degrades_without_a_burst() {
    let Some(lab) = SiteLab::start("one-ups", LabSpec { agents: 3, ..LabSpec::default() }) else { return };
    lab.power(&["agent-1"], true);
    let (leader, _) = lab.wait_leader(secs(5));
    // Past burst-after the leader judges agent-1 out of power ...
    wait_for(lab.spec.burst_after + DETECTION, "the leader to judge agent-1 power-failing", || {
        let s = lab.node(&leader).status_raw()?;
        let reasons = s["burst"]["assessment"]["reasons"].as_array()?.clone();
        reasons.iter().any(|r| r == "power-failing:agent-1").then_some(())
    });
    // ... but one host of three is under the down share (0.5): degraded, no burst.
    let s = lab.wait_committed(&leader, secs(5), "degraded", 0);
    assert!(
        s["site"]["reasons"].as_array().expect("reasons").iter().any(|r| r == "ups-on-battery:agent-1"),
        "{}",
        s["site"]
    );
    std::thread::sleep(secs(3));
    lab.power(&["agent-1"], false);
    lab.wait_committed(&leader, DETECTION, "healthy", 0);
    assert_eq!(peak(&lab), 0, "the group never scaled: {:?}", lab.timeline());
    lab.assert_invariants();
}

#[test]
fn a_blip_shorter_than_burst_after_never_bursts() {
    let Some(lab) = SiteLab::start("blip", LabSpec::default()) else { return };
    lab.all_agents_power(true);
    // dummy-ups reads its file once a second: 1.5 s on battery is seen, and is a blip.
    std::thread::sleep(Duration::from_millis(1500));
    lab.all_agents_power(false);
    std::thread::sleep(lab.spec.burst_after + DETECTION);
    let (leader, _) = lab.wait_leader(secs(5));
    lab.wait_committed(&leader, secs(10), "healthy", 0);
    assert_eq!(peak(&lab), 0, "a blip scaled the group: {:?}", lab.timeline());
    assert!(
        decisions(&lab, &leader).iter().all(|(v, c)| *c == 0 && v != "down"),
        "{:?}",
        decisions(&lab, &leader)
    );
    lab.assert_invariants();
}

#[test]
fn a_wan_cut_at_the_bridge_is_decided_by_the_site_and_covered_by_the_witness() {
    let Some(lab) = SiteLab::start("wan", LabSpec::default()) else { return };
    let (leader, term) = lab.wait_leader(secs(5));
    assert!(leader.starts_with("agent-"), "an agent leads: {leader}");
    lab.net.cut_between(&["agent-1", "agent-2"], &["witness", "cloud"]);
    let cut = Instant::now();
    // The site keeps its quorum (2 of 3) and, cut off from the witness and the internet,
    // commits down: users cannot reach it.
    let s = lab.wait_committed(&leader, lab.spec.host_lost_after + DETECTION, "down", 2);
    eprintln!("WAN cut -> site commits down in {:?}: {}", cut.elapsed(), s["site"]["reasons"]);
    assert_eq!(s["raft"]["term"], term, "no election on the site's side");
    // The witness, hearing nothing, scales up alone after dark-site-after.
    lab.wait_desired(lab.spec.dark_site_after + DETECTION, 2);
    let alone: Vec<_> = lab.actions().into_iter().filter(|a| a.unilateral).collect();
    assert!(alone.iter().any(|a| a.node == "witness" && a.capacity == 2), "{alone:?}");
    lab.net.heal_between();
    let healed = Instant::now();
    // Back together: the committed decision and the witness's agree. Recovery starts once
    // the links' windows (15 s of pings here) no longer show the cut's loss; after the
    // grace the capacity is given back, never before.
    lab.wait_committed(&leader, secs(40), "recovering", 2);
    given_back_after_the_grace(&lab, healed);
    lab.assert_invariants();
}

#[test]
fn a_one_sided_cut_keeps_one_leader_and_one_burst() {
    let Some(lab) = SiteLab::start("one-sided", LabSpec::default()) else { return };
    // agent-1 and the witness cannot talk; agent-2 talks to both.
    lab.net.cut_one_sided("agent-1", "witness");
    std::thread::sleep(lab.spec.host_lost_after + secs(2));
    // Whichever agent leads keeps leading; the witness follows it or, cut off from
    // agent-1, names no leader: never another one.
    let (leader, term) = lab.wait_quorum_leader(secs(20));
    let (took, _) = burst_on_power_cut(&lab, 2);
    eprintln!("one-sided cut, leader {leader}: power cut -> desired 2 in {took:?}");
    std::thread::sleep(secs(3));
    assert_eq!(lab.wait_quorum_leader(secs(20)), (leader.clone(), term), "the leader stayed");
    let bursts: Vec<_> = decisions(&lab, &leader).into_iter().filter(|(_, c)| *c > 0).collect();
    assert_eq!(bursts.len(), 1, "one burst decision: {bursts:?}");
    lab.net.heal_one_sided("agent-1");
    lab.assert_invariants();
}

#[test]
fn with_the_witness_down_the_agents_still_decide_and_it_catches_up() {
    let Some(mut lab) = SiteLab::start("witness-down", LabSpec::default()) else { return };
    lab.kill_host("witness");
    let (took, s) = burst_on_power_cut(&lab, 2);
    eprintln!("witness down: power cut -> desired 2 in {took:?}");
    let applied = s["raft"]["applied"].as_u64().expect("applied");
    lab.start_node("witness");
    wait_for(secs(20), "the witness to catch up", || {
        (lab.node("witness").status_raw()?["raft"]["applied"].as_u64()? >= applied).then_some(())
    });
    lab.assert_invariants();
}

#[test]
fn the_leader_killed_between_commit_and_action_gives_one_action_by_the_next() {
    let Some(mut lab) = SiteLab::start("leader-kill", LabSpec::default()) else { return };
    let (leader, _) = lab.wait_leader(secs(5));
    // The leader's hook hangs once started: the decision is committed, its action in flight.
    lab.stall_hook(&leader);
    lab.all_agents_power(true);
    let started = wait_for(lab.spec.burst_after + DETECTION, "the leader's hook to start the burst", || {
        lab.actions().into_iter().find(|a| a.node == leader && a.phase == "start" && a.capacity == 2)
    });
    lab.kill_host(&leader);
    let killed = Instant::now();
    let (next, _) = wait_for(secs(15), "a new leader", || lab.agreed_leader().filter(|(l, _)| *l != leader));
    let done = wait_for(secs(40), "the next leader to run the action", || {
        lab.actions().into_iter().find(|a| a.phase == "done" && a.capacity == 2)
    });
    eprintln!("leader {leader} killed mid-action; {next} acted {:?} later", killed.elapsed());
    assert_eq!(done.node, next);
    assert_eq!(done.key, started.key, "the same idempotency key");
    assert_eq!((done.term, done.index), (started.term, started.index), "the same fencing token");
    std::thread::sleep(secs(3));
    let runs: Vec<_> =
        lab.actions().into_iter().filter(|a| a.phase == "done" && a.key == started.key).collect();
    assert_eq!(runs.len(), 1, "exactly one completed burst action: {runs:?}");
    assert_eq!(lab.desired(), 2);
    lab.assert_invariants();
}

#[test]
fn an_agent_in_a_restart_loop_changes_nothing() {
    let Some(mut lab) = SiteLab::start("restart-loop", LabSpec::default()) else { return };
    let end = Instant::now() + secs(20);
    let mut restarts = 0;
    while Instant::now() < end {
        lab.kill_daemon("agent-2");
        std::thread::sleep(Duration::from_millis(300));
        lab.start_node("agent-2");
        restarts += 1;
        // Up for 1 to 2.5 s: sometimes past its election timeout, mostly not.
        std::thread::sleep(Duration::from_millis(1000 + (restarts % 4) * 500));
    }
    let (leader, _) = lab.wait_leader(secs(20));
    lab.wait_settled(secs(30), "healthy");
    eprintln!("{restarts} restarts of agent-2; leader {leader}");
    assert_eq!(peak(&lab), 0, "{:?}", lab.timeline());
    // Never down: the agent is heard again (and its UPS read again) well within
    // host-lost-after. The pings it missed while down may count as link loss for a while
    // (degraded), and then only for agent-2.
    let history = sitewatch_tests::lab::history(&lab.node(&leader).socket).expect("history");
    for r in &history {
        let d = &r["command"]["decision"];
        if d.is_null() {
            continue;
        }
        assert_eq!(d["desired_capacity"], 0, "{history:#?}");
        let reasons = d["reasons"].as_array().expect("reasons");
        match d["verdict"].as_str() {
            Some("healthy") => {}
            Some("degraded") => {
                assert!(reasons.iter().all(|r| r.as_str().is_some_and(|r| r.contains("agent-2"))), "{d}")
            }
            _ => panic!("only degraded or healthy: {d}"),
        }
    }
    lab.assert_invariants();
}

#[test]
fn five_percent_loss_and_fifty_ms_on_every_link_still_bursts_once() {
    let Some(mut lab) = SiteLab::start("lossy", LabSpec::default()) else { return };
    for host in lab.names() {
        lab.net.delay(&host, 50, 5);
        lab.net.loss(&host, 5);
    }
    std::thread::sleep(secs(5));
    let (took, _) = burst_on_power_cut(&lab, 2);
    eprintln!("5 % loss, 50 +- 5 ms each way: power cut -> desired 2 in {took:?}");
    std::thread::sleep(secs(3));
    let (leader, _) = lab.wait_leader(secs(20));
    let bursts: Vec<_> = decisions(&lab, &leader).into_iter().filter(|(_, c)| *c > 0).collect();
    assert_eq!(bursts.len(), 1, "one burst decision: {bursts:?}");
    lab.assert_invariants();
}

#[test]
fn a_dark_site_gets_only_the_witnesss_scale_up_and_the_quorum_gives_it_back() {
    let Some(mut lab) = SiteLab::start("dark", LabSpec::default()) else { return };
    for agent in lab.agents() {
        lab.kill_host(&agent);
    }
    let dark = Instant::now();
    lab.wait_desired(lab.spec.dark_site_after + lab.spec.host_lost_after + DETECTION, 2);
    let took = dark.elapsed();
    eprintln!("dark site -> the witness scaled to 2 in {took:?}");
    // The witness counts from the last word it had, up to one observation period (1 s)
    // before the kill.
    assert!(took >= lab.spec.dark_site_after - Duration::from_millis(1100), "{took:?}");
    let actions = lab.actions();
    assert!(actions.iter().all(|a| a.unilateral && a.node == "witness"), "{actions:?}");
    // Never down while alone.
    std::thread::sleep(secs(5));
    assert_eq!(lab.desired(), 2);
    // The witness killed -9 and restarted while the site is still dark: it still knows
    // what it did alone (nobody else does), at once, not by doing it again after another
    // dark-site-after of silence.
    let unilateral_runs =
        |lab: &SiteLab| lab.actions().iter().filter(|a| a.unilateral && a.phase == "start").count();
    let runs_before = unilateral_runs(&lab);
    lab.kill_daemon("witness");
    lab.start_node("witness");
    wait_for(lab.spec.dark_site_after / 2, "the restarted witness to show its own scale-up", || {
        let s = lab.node("witness").status_raw()?;
        (s["burst"]["unilateral_capacity"] == 2).then_some(())
    });
    for agent in lab.agents() {
        lab.start_node(&agent);
    }
    let back = Instant::now();
    let (leader, _) = lab.wait_leader(secs(20));
    // The quorum commits what the witness did, then gives it back after the grace.
    wait_for(secs(20), "the witness's scale-up committed", || {
        let h = sitewatch_tests::lab::history(&lab.node(&leader).socket)?;
        h.iter().any(|r| r["command"]["unilateral"]["desired_capacity"] == 2).then_some(())
    });
    assert_eq!(unilateral_runs(&lab), runs_before, "the restarted witness acted alone again");
    given_back_after_the_grace(&lab, back);
    lab.assert_invariants();
}

#[test]
fn recovery_scales_down_only_after_the_grace() {
    let Some(lab) = SiteLab::start("recovery", LabSpec::default()) else { return };
    burst_on_power_cut(&lab, 2);
    std::thread::sleep(Duration::from_millis(1200)); // dummy-ups: writes a second apart
    lab.all_agents_power(false);
    let back = Instant::now();
    let (leader, _) = lab.wait_leader(secs(10));
    lab.wait_committed(&leader, DETECTION, "recovering", 2);
    std::thread::sleep(lab.spec.scale_down_after.saturating_sub(back.elapsed() + secs(2)));
    assert_eq!(lab.desired(), 2, "scaled down inside the grace ({:?} after power back)", back.elapsed());
    let given_back = given_back_after_the_grace(&lab, back);
    eprintln!("power back -> group desired 0 in {given_back:?} (grace {:?})", lab.spec.scale_down_after);
    lab.assert_invariants();
}

#[test]
fn nodes_killed_in_the_middle_of_writes_restart_with_every_committed_decision() {
    let Some(mut lab) = SiteLab::start("crash-write", LabSpec::default()) else { return };
    let names = lab.names();
    let mut kills = 0;
    // Operators toggling maintenance as fast as the quorum commits: every node writes its
    // log and state all the time, and each kill lands in or near a write.
    for round in 0..12 {
        let victim = names[round % names.len()].clone();
        let end = Instant::now() + Duration::from_millis(700 + 97 * round as u64);
        let mut on = round % 2 == 0;
        while Instant::now() < end {
            for n in lab.nodes.iter().filter(|n| n.is_running()) {
                let request = format!(r#"{{"query":"hold","on":{on},"by":"lab-{round}"}}"#);
                let _ = ask_socket(&n.socket, request.as_bytes());
            }
            on = !on;
        }
        lab.kill_daemon(&victim);
        kills += 1;
        std::thread::sleep(Duration::from_millis(200));
        lab.start_node(&victim);
        lab.wait_leader(secs(20));
    }
    lab.wait_caught_up(secs(30));
    let commit = lab.node(&names[0]).status_raw().expect("status")["raft"]["commit"].clone();
    eprintln!("{kills} kills during writes; commit index {commit}");
    for n in &lab.nodes {
        assert!(n.is_running(), "{} runs", n.spec.name);
        assert!(!n.logs().contains("panicked"), "{}:\n{}", n.spec.name, n.logs());
    }
    lab.assert_invariants();
}

#[test]
fn every_cut_of_the_witness_host_leaves_the_site_deciding() {
    let Some(lab) = SiteLab::start("cuts", LabSpec::default()) else { return };
    for how in Cut::ALL {
        lab.net.cut("witness", how);
        std::thread::sleep(secs(2));
        let (leader, _) = wait_for(secs(20), "the agents to agree on a leader", || {
            let l = lab.agreed_leader_of(&["agent-1", "agent-2"])?;
            l.0.starts_with("agent-").then_some(l)
        });
        let s = lab.node(&leader).status_raw().expect("status");
        assert_eq!(s["quorum"]["quorate"], true, "{how:?}: {}", s["quorum"]);
        lab.net.heal("witness", how);
        wait_for(secs(20), "the witness back in the quorum", || {
            let w = lab.node("witness").status_raw()?;
            (w["raft"]["leader_name"] == leader.as_str()).then_some(())
        });
        eprintln!("witness cut by {how:?}: {leader} kept the quorum; witness back");
    }
    assert_eq!(peak(&lab), 0);
    lab.assert_invariants();
}

#[test]
fn a_balanced_topology_decides_a_dark_site_with_a_committed_decision() {
    // One voting agent and two learners on site; the witness and a cloud-side voter off
    // site hold a majority of the voters between them.
    let spec = LabSpec { agents: 3, learners: 2, cloud_voter: true, ..LabSpec::default() };
    let Some(mut lab) = SiteLab::start("balanced", spec) else { return };
    for agent in lab.agents() {
        lab.kill_host(&agent);
    }
    let dark = Instant::now();
    // The off-site voters elect one of themselves (until they notice, they still name
    // the dead agent that led).
    let (leader, _) = wait_for(secs(20), "an off-site leader", || {
        lab.agreed_leader().filter(|(l, _)| !l.starts_with("agent-"))
    });
    lab.wait_committed(&leader, lab.spec.host_lost_after + DETECTION, "down", 3);
    lab.wait_desired(secs(10), 3);
    eprintln!(
        "balanced topology: dark site -> committed down, group at 3 in {:?} (leader {leader})",
        dark.elapsed()
    );
    let actions = lab.actions();
    assert!(actions.iter().all(|a| !a.unilateral), "nothing unilateral with a quorum: {actions:?}");
    lab.assert_invariants();
}
