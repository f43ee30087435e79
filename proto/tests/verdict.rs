//! Table tests of the verdict function (`assess`) and scenario tests of the burst duties
//! (`Duties::step`): one row per situation, observations built tersely.

mod support;

use std::time::Duration;

use sitewatch_proto::burst::{ACTION_RETRY, Context, Duties, Effect, PROPOSE_RETRY, Standing, Unilateral};
use sitewatch_proto::host::GoingDown;
use sitewatch_proto::policy::{CapacityPolicy, PolicyConfig, SpendAction, SpendCap};
use sitewatch_proto::state::{Command, FencingToken};
use sitewatch_proto::verdict::{Assessment, HostCondition, PolicyMemory, assess};
use sitewatch_proto::{SiteState, Verdict};
use support::*;

const NOW: Duration = Duration::from_secs(10_000);

fn judge(policy: &PolicyConfig, site: &Site, committed: &SiteState, memory: PolicyMemory) -> Assessment {
    assess(policy, &site.evidence(), committed, memory, NOW, NOV_23_MS)
}

struct Row {
    what: &'static str,
    site: Site,
    /// The verdict and capacity in force.
    committed: (Verdict, u32),
    verdict: Verdict,
    capacity: u32,
    reasons: &'static [&'static str],
}

fn row(
    what: &'static str,
    agents: impl IntoIterator<Item = AgentSpec>,
    committed: (Verdict, u32),
    (verdict, capacity): (Verdict, u32),
    reasons: &'static [&'static str],
) -> Row {
    Row { what, site: site(agents), committed, verdict, capacity, reasons }
}

fn run_table(policy: &PolicyConfig, rows: Vec<Row>) {
    let mut failures = Vec::new();
    for r in &rows {
        let a = judge(policy, &r.site, &committed(r.committed.0, r.committed.1), PolicyMemory::default());
        let got = (a.verdict, a.desired_capacity, a.reasons.iter().map(String::as_str).collect::<Vec<_>>());
        let want = (r.verdict, r.capacity, r.reasons.to_vec());
        if got != want {
            failures.push(format!("{}:\n    got  {got:?}\n    want {want:?}", r.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

const HEALTHY: (Verdict, u32) = (Verdict::Healthy, 0);

#[test]
fn power_table() {
    // Defaults: burst-after 60 s, min-runtime 180 s, down-share 0.5, capacity 1 per host, min 1, max 4.
    let policy = PolicyConfig::default();
    run_table(
        &policy,
        vec![
            row("all on line", [agent("a"), agent("b")], HEALTHY, HEALTHY, &[]),
            row(
                "one on battery briefly: armed, not counted",
                [agent("a").on_battery_for(10), agent("b")],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["ups-on-battery:a"],
            ),
            row(
                "a blip on every host, one second short of burst-after",
                [agent("a").on_battery_for(59), agent("b").on_battery_for_ms(59_999)],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["ups-on-battery:a", "ups-on-battery:b"],
            ),
            row(
                "every host on battery for burst-after",
                [agent("a").on_battery_for(60), agent("b").on_battery_for(75)],
                HEALTHY,
                (Verdict::Down, 2),
                &["power-failing:a", "power-failing:b"],
            ),
            row(
                "the observation's age counts: 59 s measured, heard 1 s ago",
                [agent("a").on_battery_for(59).heard(1), agent("b").on_battery_for(59).heard(1)],
                HEALTHY,
                (Verdict::Down, 2),
                &["power-failing:a", "power-failing:b"],
            ),
            row(
                "half the hosts out of power is down-share",
                [agent("a").on_battery_for(120), agent("b")],
                HEALTHY,
                (Verdict::Down, 1),
                &["power-failing:a"],
            ),
            row(
                "a third out of power is degraded, not down",
                [agent("a").on_battery_for(120), agent("b"), agent("c")],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["power-failing:a"],
            ),
            row(
                "LB counts at once",
                [
                    agent("a").on_battery_for(2).flags(["LB:rack"]),
                    agent("b").on_battery_for(2).flags(["LB:rack"]),
                ],
                HEALTHY,
                (Verdict::Down, 2),
                &["power-failing:a", "power-failing:b"],
            ),
            row(
                "FSD counts at once",
                [agent("a").on_battery_for(1).flags(["FSD:rack"]), agent("b")],
                HEALTHY,
                (Verdict::Down, 1),
                &["power-failing:a"],
            ),
            row(
                "runtime under min-runtime counts at once",
                [agent("a").on_battery_for(5).runtime(179), agent("b").on_battery_for(5).runtime(179)],
                HEALTHY,
                (Verdict::Down, 2),
                &["power-failing:a", "power-failing:b"],
            ),
            row(
                "runtime at min-runtime waits for burst-after",
                [agent("a").on_battery_for(5).runtime(180), agent("b").on_battery_for(5).runtime(180)],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["ups-on-battery:a", "ups-on-battery:b"],
            ),
            row(
                "power unknown is a reason, not missing",
                [agent("a").power_unknown(), agent("b")],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["power-unknown:a"],
            ),
            row(
                "power unknown for a moment (a UPS driver starting) is no news: the verdict stands",
                [agent("a").power_unknown_for(2), agent("b")],
                HEALTHY,
                HEALTHY,
                &[],
            ),
            row(
                "... whatever the verdict in force",
                [agent("a").power_unknown_for(2), agent("b")],
                (Verdict::Degraded, 0),
                (Verdict::Degraded, 0),
                &[],
            ),
            row(
                "power unknown for host-lost-after is a reason",
                [agent("a").power_unknown_for(30), agent("b")],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["power-unknown:a"],
            ),
        ],
    );
}

#[test]
fn hosts_table() {
    // host-lost-after 30 s.
    let policy = PolicyConfig::default();
    run_table(
        &policy,
        vec![
            row("heard 29 s ago is up", [agent("a").heard(29), agent("b")], HEALTHY, HEALTHY, &[]),
            row(
                "unheard for host-lost-after is lost",
                [agent("a").heard(30), agent("b")],
                HEALTHY,
                (Verdict::Down, 1),
                &["host-lost:a"],
            ),
            row(
                "a lost host's stale battery word is not reported",
                [agent("a").on_battery_for(10).heard(45), agent("b"), agent("c")],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["host-lost:a"],
            ),
            row(
                "the agent stopping is not the host going",
                [agent("a").going_down(GoingDown::AgentStopping), agent("b")],
                HEALTHY,
                HEALTHY,
                &[],
            ),
            row(
                "a scheduled shutdown is missing",
                [
                    agent("a").going_down(GoingDown::ShutdownScheduled {
                        mode: "poweroff".into(),
                        at_unix_ms: None,
                    }),
                    agent("b"),
                ],
                HEALTHY,
                (Verdict::Down, 1),
                &["host-going-down:a"],
            ),
            row(
                "logins refused is missing",
                [agent("a").going_down(GoingDown::LoginsRefused), agent("b"), agent("c")],
                HEALTHY,
                (Verdict::Degraded, 0),
                &["host-going-down:a"],
            ),
            row(
                "every host lost: capacity for each, within max",
                (0..6).map(|i| agent(&format!("h{i}")).heard(300)),
                HEALTHY,
                (Verdict::Down, 4),
                &[
                    "host-lost:h0",
                    "host-lost:h1",
                    "host-lost:h2",
                    "host-lost:h3",
                    "host-lost:h4",
                    "host-lost:h5",
                ],
            ),
        ],
    );
}

#[test]
fn links_table() {
    // degraded-loss 5 %, down-loss 50 %, degraded-rtt 300 ms, min-samples 5.
    let policy = PolicyConfig::default();
    let mut rows = vec![
        row(
            "lossy link to the witness is degraded",
            [agent("a").witness_link(0.1, 20.0), agent("b")],
            HEALTHY,
            (Verdict::Degraded, 0),
            &["link-loss:a->w"],
        ),
        row(
            "slow link to the witness is degraded",
            [agent("a").witness_link(0.0, 400.0), agent("b")],
            HEALTHY,
            (Verdict::Degraded, 0),
            &["link-rtt:a->w"],
        ),
        row(
            "losing only the witness is degraded: the witness may be what is down",
            [agent("a").witness_link(0.6, 20.0), agent("b").witness_link(0.6, 20.0)],
            HEALTHY,
            (Verdict::Degraded, 0),
            &["witness-unreachable:a", "witness-unreachable:b"],
        ),
        row(
            "half the agents cut off from the witness and their own targets is down",
            [agent("a").witness_link(0.6, 20.0).probe("gw", 1.0, 0.0), agent("b")],
            HEALTHY,
            (Verdict::Down, 1),
            &["probe-down:a->gw", "wan-cut:a"],
        ),
        row(
            "the witness lost but the targets answer is degraded",
            [agent("a").witness_link(0.6, 20.0).probe("gw", 0.0, 20.0), agent("b")],
            HEALTHY,
            (Verdict::Degraded, 0),
            &["witness-unreachable:a"],
        ),
        row(
            "a connection silent for host-lost-after counts as lost",
            [agent("a").witness_disconnected_for(30_000).probe("gw", 1.0, 0.0), agent("b")],
            HEALTHY,
            (Verdict::Down, 1),
            &["probe-down:a->gw", "wan-cut:a"],
        ),
        row(
            "a connection silent for less is no news",
            [agent("a").witness_disconnected_for(29_000), agent("b")],
            HEALTHY,
            HEALTHY,
            &[],
        ),
        row(
            "a probe target unreachable is degraded",
            [agent("a").probe("gw", 0.6, 20.0), agent("b")],
            HEALTHY,
            (Verdict::Degraded, 0),
            &["probe-down:a->gw"],
        ),
        row(
            "a lossy probe target is degraded",
            [agent("a").probe("gw", 0.1, 20.0), agent("b")],
            HEALTHY,
            (Verdict::Degraded, 0),
            &["link-loss:a->gw"],
        ),
    ];
    // The witness's end of the link counts too.
    rows.push(Row {
        what: "the witness sees the link down",
        site: site([agent("a").probe("gw", 1.0, 0.0), agent("b")]).witness_sees("a", 0.9),
        committed: HEALTHY,
        verdict: Verdict::Down,
        capacity: 1,
        reasons: &["probe-down:a->gw", "wan-cut:a"],
    });
    // Too few samples is no evidence, however bad.
    let mut few = agent("a");
    few.obs.as_mut().expect("heard").peers[0].link = window(3, 1.0, 900.0);
    rows.push(row("three probes are no evidence", [few, agent("b")], HEALTHY, HEALTHY, &[]));
    run_table(&policy, rows);
}

#[test]
fn capacity_table() {
    let lost = |n: usize| (0..n).map(|i| agent(&format!("h{i}")).heard(60)).collect::<Vec<_>>();
    let with = |capacity: CapacityPolicy| PolicyConfig { capacity, down_share: 0.25, ..Default::default() };
    let counted = CapacityPolicy { per_host: 2, outage_buffer: 1, min: 2, max: 6, fixed: None };
    // One of four hosts lost: 1 * 2 + 1 = 3.
    let one_of_four = || lost(1).into_iter().chain([agent("x"), agent("y"), agent("z")]);
    run_table(
        &with(counted.clone()),
        vec![row("per host plus buffer", one_of_four(), HEALTHY, (Verdict::Down, 3), &["host-lost:h0"])],
    );
    run_table(
        &with(counted.clone()),
        vec![row(
            "never shrink during an outage",
            one_of_four(),
            (Verdict::Down, 5),
            (Verdict::Down, 5),
            &["host-lost:h0"],
        )],
    );
    run_table(
        &with(CapacityPolicy { fixed: Some(3), ..Default::default() }),
        vec![row("a fixed burst", one_of_four(), HEALTHY, (Verdict::Down, 3), &["host-lost:h0"])],
    );
    run_table(
        &with(counted),
        vec![row(
            "clamped to max",
            lost(5),
            HEALTHY,
            (Verdict::Down, 6),
            &["host-lost:h0", "host-lost:h1", "host-lost:h2", "host-lost:h3", "host-lost:h4"],
        )],
    );
}

#[test]
fn unheard_agents_are_unknown_until_the_judge_has_listened_for_host_lost_after() {
    let policy = PolicyConfig::default();
    let early = site([agent("a"), never_heard("b")]).listening_for(29);
    for in_force in [(Verdict::Healthy, 0), (Verdict::Recovering, 2), (Verdict::Degraded, 0)] {
        let a = judge(&policy, &early, &committed(in_force.0, in_force.1), PolicyMemory::default());
        assert!(!a.settled);
        assert_eq!(a.hosts[1].condition, HostCondition::Unknown);
        assert_eq!((a.verdict, a.desired_capacity), in_force, "the committed verdict stands");
        assert!(a.reasons.is_empty(), "{:?}", a.reasons);
    }
    let late = site([agent("a"), never_heard("b")]).listening_for(30);
    let a = judge(&policy, &late, &committed(Verdict::Healthy, 0), PolicyMemory::default());
    assert!(a.settled);
    assert_eq!(a.hosts[1].condition, HostCondition::Lost { unheard_s: None });
    assert_eq!((a.verdict, a.desired_capacity), (Verdict::Down, 1));
    // Bad news from the heard ones is not held back by the unheard.
    let bad = site([agent("a").heard(40), agent("b").heard(40), never_heard("c")]).listening_for(5);
    let a = judge(&policy, &bad, &committed(Verdict::Healthy, 0), PolicyMemory::default());
    assert!(!a.settled);
    assert_eq!((a.verdict, a.desired_capacity), (Verdict::Down, 2));
}

#[test]
fn an_armed_timer_says_when_it_fires() {
    let policy = PolicyConfig::default();
    let s = site([agent("a").on_battery_for(20).heard(2), agent("b").on_battery_for(45)]);
    let a = judge(&policy, &s, &committed(Verdict::Healthy, 0), PolicyMemory::default());
    assert_eq!(
        a.hosts[0].condition,
        HostCondition::OnBattery { for_s: 22, fires_in_s: 38 },
        "the age adds to the time on battery"
    );
    assert_eq!(a.burst_in_s, Some(38), "the site goes down when the last armed host fires");
    let s = site([agent("a").on_battery_for(20), agent("b").on_battery_for(61)]);
    let a = judge(&policy, &s, &committed(Verdict::Healthy, 0), PolicyMemory::default());
    assert_eq!(a.verdict, Verdict::Down);
    assert_eq!(a.burst_in_s, None, "nothing left to arm once down");
}

#[test]
fn scale_down_waits_for_continuous_health_and_any_relapse_restarts_it() {
    let policy = PolicyConfig::default(); // scale-down-after 30 min
    let burst = committed(Verdict::Recovering, 2);
    let healthy = site([agent("a"), agent("b")]);
    let at =
        |t: u64, s: &Site, m: PolicyMemory| assess(&policy, &s.evidence(), &burst, m, secs(t), NOV_23_MS);

    // Until recovery is committed the timer does not run: a judge that missed a committed
    // relapse must not carry an older start into its leadership.
    let still_down = committed(Verdict::Down, 2);
    let a = assess(
        &policy,
        &healthy.evidence(),
        &still_down,
        PolicyMemory { healthy_since: Some(secs(1)) },
        secs(99),
        NOV_23_MS,
    );
    assert_eq!((a.verdict, a.desired_capacity, a.scale_down_in_s), (Verdict::Recovering, 2, Some(1800)));
    assert_eq!(a.memory.healthy_since, Some(secs(99)), "restarted, not carried over");

    let a = at(100, &healthy, PolicyMemory::default());
    assert_eq!((a.verdict, a.desired_capacity, a.scale_down_in_s), (Verdict::Recovering, 2, Some(1800)));
    assert_eq!(a.memory.healthy_since, Some(secs(100)));
    let a = at(1899, &healthy, a.memory);
    assert_eq!((a.verdict, a.desired_capacity, a.scale_down_in_s), (Verdict::Recovering, 2, Some(1)));
    let done = at(1900, &healthy, a.memory);
    assert_eq!((done.verdict, done.desired_capacity), (Verdict::Healthy, 0));

    // A relapse of each kind, one second before the end, restarts the timer.
    let relapses = [
        ("battery blip", site([agent("a").on_battery_for(1), agent("b")])),
        ("host lost", site([agent("a").heard(31), agent("b"), agent("c")])),
        ("lossy link", site([agent("a").witness_link(0.1, 20.0), agent("b")])),
        ("probe down", site([agent("a").probe("gw", 1.0, 0.0), agent("b")])),
        ("host going down", site([agent("a").going_down(GoingDown::LoginsRefused), agent("b"), agent("c")])),
    ];
    for (what, relapse) in &relapses {
        let a = at(1899, relapse, PolicyMemory { healthy_since: Some(secs(100)) });
        assert_eq!(a.memory.healthy_since, None, "{what}");
        assert_eq!(a.desired_capacity, 2, "{what}: capacity stays through a relapse");
        assert_ne!(a.verdict, Verdict::Healthy, "{what}");
        let a = at(1900, &healthy, a.memory);
        assert_eq!((a.verdict, a.desired_capacity), (Verdict::Recovering, 2), "{what}");
        assert_eq!(a.scale_down_in_s, Some(1800), "{what}: the full wait again");
    }

    // An agent silent for less than host-lost-after is no relapse.
    let a =
        at(1900, &site([agent("a").heard(29), agent("b")]), PolicyMemory { healthy_since: Some(secs(100)) });
    assert_eq!((a.verdict, a.desired_capacity), (Verdict::Healthy, 0));

    // Not settled (a fresh leader that has not heard everyone): no progress, no scale-down.
    let unsettled = site([agent("a"), never_heard("b")]).listening_for(10);
    let a = at(5000, &unsettled, PolicyMemory { healthy_since: Some(secs(100)) });
    assert_eq!(a.desired_capacity, 2);
    assert_eq!(a.memory.healthy_since, None);

    // A fresh memory (a new leader) starts the wait over: never shorter.
    let a = at(5000, &healthy, PolicyMemory::default());
    assert_eq!((a.verdict, a.desired_capacity, a.scale_down_in_s), (Verdict::Recovering, 2, Some(1800)));
}

#[test]
fn hold_freezes_capacity_but_not_the_verdict() {
    let policy = PolicyConfig::default();
    let mut log = Log::new();
    log.decide(Verdict::Healthy, 0, NOV_23_MS);
    log.commit(&Command::Hold { on: true, by: "op".into(), at_ms: NOV_23_MS });
    let s = site([agent("a").heard(100), agent("b").heard(100)]);
    let a = judge(&policy, &s, &log.state, PolicyMemory::default());
    assert_eq!((a.verdict, a.desired_capacity), (Verdict::Down, 0));
}

const HOUR_MS: u64 = 3_600_000;

/// A committed state with `capacity` in force since `NOV_23_MS`.
fn spending(capacity: u32) -> SiteState {
    let mut log = Log::new();
    log.decide(Verdict::Down, capacity, NOV_23_MS);
    log.state
}

#[test]
fn spend_levels_and_what_happens_at_the_limit() {
    // One instance-hour costs 1; the month allows 10.
    let cap = |at_limit| SpendCap { price_per_instance_hour: 1.0, monthly_limit: 10.0, at_limit };
    let mut policy = PolicyConfig { spend: Some(cap(SpendAction::Alert)), ..Default::default() };
    let s = site([agent("a").heard(100), agent("b").heard(100), agent("c").heard(100)]);
    let level_after = |policy: &PolicyConfig, hours: f64| {
        let at = NOV_23_MS + (hours * HOUR_MS as f64) as u64;
        assess(policy, &s.evidence(), &spending(1), PolicyMemory::default(), NOW, at)
    };
    let levels: Vec<u8> = [0.0, 4.99, 5.0, 7.99, 8.0, 9.99, 10.0, 100.0]
        .into_iter()
        .map(|h| level_after(&policy, h).spend_level)
        .collect();
    assert_eq!(levels, [0, 0, 50, 50, 80, 80, 100, 100]);
    // Three hosts lost want 3; only 1 runs.
    let a = level_after(&policy, 10.0);
    assert_eq!(a.desired_capacity, 3, "alert only");
    assert!(!a.reasons.iter().any(|r| r == "spend-limit-reached"));
    policy.spend = Some(cap(SpendAction::Hold));
    let a = level_after(&policy, 10.0);
    assert_eq!(a.desired_capacity, 1, "hold keeps what runs, adds nothing");
    assert!(a.reasons.iter().any(|r| r == "spend-limit-reached"));
    assert_eq!(level_after(&policy, 9.0).desired_capacity, 3, "below the limit, hold does nothing");
    policy.spend = Some(cap(SpendAction::ScaleDown));
    let a = level_after(&policy, 10.0);
    assert_eq!((a.verdict, a.desired_capacity), (Verdict::Down, 0), "scale-down gives everything back");
}

// ---- Duties: the leader path ----

const CLUSTER: &str = "home";

fn targets() -> Vec<String> {
    vec!["asg".into(), "ntfy".into()]
}

fn ctx<'a>(policy: &'a PolicyConfig, targets: &'a [String], t: u64) -> Context<'a> {
    Context {
        policy,
        cluster_id: CLUSTER,
        node: "n1",
        targets,
        now: secs(t),
        now_unix_ms: NOV_23_MS + t * 1000,
    }
}

fn leader(log: &Log) -> Standing {
    Standing { leader: true, term: log.term, leader_known: true, witness: false, agents_silent_for: None }
}

/// The witness, not leading, having heard no agent for `silent` seconds.
fn dark_witness(term: u64, silent: u64, leader_known: bool) -> Standing {
    Standing { leader: false, term, leader_known, witness: true, agents_silent_for: Some(secs(silent)) }
}

fn proposals(effects: &[Effect]) -> Vec<&Command> {
    effects.iter().filter_map(|e| if let Effect::Propose(c) = e { Some(c) } else { None }).collect()
}

fn starts(effects: &[Effect]) -> Vec<(&str, &sitewatch_proto::burst::Action)> {
    effects
        .iter()
        .filter_map(|e| {
            if let Effect::Start { target, action } = e { Some((target.as_str(), action)) } else { None }
        })
        .collect()
}

/// Commit every proposal, as a quorum would.
fn commit_all(log: &mut Log, effects: &[Effect]) {
    for c in proposals(effects) {
        log.commit(c);
    }
}

#[test]
fn only_a_leader_caught_up_in_its_own_term_proposes_or_acts() {
    let policy = PolicyConfig::default();
    let targets = targets();
    let down = site([agent("a").heard(60), agent("b").heard(60)]);
    let mut log = Log::new();
    let mut duties = Duties::default();

    // A follower, and a leader whose term has no applied entry yet: nothing.
    let follower = Standing { leader: false, ..leader(&log) };
    assert_eq!(duties.step(&ctx(&policy, &targets, 1), &down.evidence(), &log.state, follower), vec![]);
    let term = log.elect_unapplied();
    let me = Standing { term, ..leader(&log) };
    assert_eq!(duties.step(&ctx(&policy, &targets, 2), &down.evidence(), &log.state, me), vec![]);
    assert_eq!(duties.assessment().map(|a| a.verdict), Some(Verdict::Down), "it still judges");

    // Its empty entry applied: propose the burst.
    let token = log.next_token();
    log.state.apply(token, &[]);
    let effects = duties.step(&ctx(&policy, &targets, 3), &down.evidence(), &log.state, me);
    let [Command::Decision(d)] = proposals(&effects)[..] else {
        panic!("one decision expected: {effects:?}")
    };
    assert_eq!((d.verdict, d.desired_capacity), (Verdict::Down, 2));
    assert_eq!(d.decided_at_ms, NOV_23_MS + 3000);
    assert!(starts(&effects).is_empty(), "nothing is acted on before it is committed");

    // Not committed yet: not proposed again until PROPOSE_RETRY.
    let retry = PROPOSE_RETRY.as_secs();
    let again = |duties: &mut Duties, log: &Log, t: u64| {
        duties.step(&ctx(&policy, &targets, t), &down.evidence(), &log.state, me)
    };
    assert!(proposals(&again(&mut duties, &log, 3 + retry - 1)).is_empty());
    assert_eq!(proposals(&again(&mut duties, &log, 3 + retry)).len(), 1);

    // Committed: every target starts, with the decision's fencing token and key.
    commit_all(&mut log, &effects);
    let decision = log.state.decision.expect("decided");
    let effects = again(&mut duties, &log, 10);
    assert!(proposals(&effects).is_empty());
    let started = starts(&effects);
    assert_eq!(started.iter().map(|(t, _)| *t).collect::<Vec<_>>(), ["asg", "ntfy"]);
    for (_, action) in &started {
        assert_eq!(action.token, decision);
        assert_eq!(action.idempotency_key, decision.idempotency_key(CLUSTER));
        assert_eq!(
            (action.verdict, action.desired_capacity, action.previous_capacity),
            (Verdict::Down, 2, 0)
        );
        assert!(!action.unilateral);
    }
    assert!(starts(&again(&mut duties, &log, 11)).is_empty(), "running: not started twice");

    // Leadership lost: what runs is cancelled, nothing is proposed.
    let effects = duties.step(
        &ctx(&policy, &targets, 12),
        &down.evidence(),
        &log.state,
        Standing { leader: false, ..me },
    );
    assert_eq!(
        effects,
        vec![Effect::Cancel { target: "asg".into() }, Effect::Cancel { target: "ntfy".into() }]
    );
    assert_eq!(duties.running().count(), 0);
    // A result arriving after that is not committed by this node.
    assert_eq!(duties.finished("asg", decision, true, "done".into(), secs(13), NOV_23_MS), None);
}

#[test]
fn committed_results_stop_reruns_failures_retry_and_newer_decisions_supersede() {
    let policy = PolicyConfig::default();
    let targets = targets();
    let down = site([agent("a").heard(60), agent("b").heard(60)]);
    let mut log = Log::new();
    let first = log.decide(Verdict::Down, 2, NOV_23_MS);
    let mut duties = Duties::default();
    let me = leader(&log);
    let step = |duties: &mut Duties, log: &Log, s: &Site, t: u64| {
        duties.step(&ctx(&policy, &targets, t), &s.evidence(), &log.state, me)
    };

    assert_eq!(starts(&step(&mut duties, &log, &down, 1)).len(), 2);
    // asg succeeds, ntfy fails; both results are committed.
    let ok =
        duties.finished("asg", first, true, "set 2".into(), secs(2), NOV_23_MS).expect("a result to commit");
    let failed =
        duties.finished("ntfy", first, false, "503".into(), secs(2), NOV_23_MS).expect("a result to commit");
    log.commit(&ok);
    log.commit(&failed);
    assert!(log.state.actions["asg"].ok && !log.state.actions["ntfy"].ok);

    let retry = ACTION_RETRY.as_secs();
    assert!(
        starts(&step(&mut duties, &log, &down, 2 + retry - 1)).is_empty(),
        "no retry before ACTION_RETRY"
    );
    let effects = step(&mut duties, &log, &down, 2 + retry);
    let started = starts(&effects);
    assert_eq!(started.len(), 1, "{effects:?}");
    assert_eq!((started[0].0, started[0].1.token), ("ntfy", first), "the failed one again, same decision");

    // A newer decision (more hosts missing): both start again under the new token.
    let worse = site([agent("a").heard(60), agent("b").heard(60), agent("c").heard(60)]);
    let effects = step(&mut duties, &log, &worse, 40);
    commit_all(&mut log, &effects);
    let second = log.state.decision.expect("decided");
    assert!(second > first);
    let effects = step(&mut duties, &log, &worse, 41);
    let started = starts(&effects);
    assert_eq!(started.len(), 2, "{effects:?}");
    assert!(
        started.iter().all(|(_, a)| a.token == second && a.previous_capacity == 2 && a.desired_capacity == 3)
    );
    // The superseded run's late result is dropped.
    assert_eq!(duties.finished("ntfy", first, true, "late".into(), secs(42), NOV_23_MS), None);
    // A result for an older decision does not count as done for the newer one.
    log.commit(&Command::ActionResult(sitewatch_proto::state::ActionResult {
        target: "asg".into(),
        token: first,
        ok: true,
        detail: "late".into(),
        at_ms: NOV_23_MS,
    }));
    assert_eq!(log.state.actions["asg"].detail, "set 2", "a result for an older decision is history only");
    let mut fresh = Duties::default();
    let effects = fresh.step(&ctx(&policy, &targets, 43), &worse.evidence(), &log.state, me);
    assert_eq!(starts(&effects).len(), 2, "a new leader redoes what is not done for the decision in force");
    // ...with the same idempotency key the old leader used.
    assert!(starts(&effects).iter().all(|(_, a)| a.idempotency_key == second.idempotency_key(CLUSTER)));
}

#[test]
fn a_fresh_leader_proposes_nothing_but_down_until_it_has_heard_everyone() {
    let policy = PolicyConfig::default();
    let targets = targets();
    let mut log = Log::new();
    log.decide(Verdict::Down, 2, NOV_23_MS);
    let mut duties = Duties::default();
    let me = leader(&log);
    // Everyone it hears is healthy, one agent it has not heard yet.
    for t in 0..30 {
        let s = site([agent("a"), agent("b"), never_heard("c")]).listening_for(t);
        let effects = duties.step(&ctx(&policy, &targets, t), &s.evidence(), &log.state, me);
        assert!(proposals(&effects).is_empty(), "t={t}: {effects:?}");
    }
    let s = site([agent("a"), agent("b"), never_heard("c")]).listening_for(30);
    let effects = duties.step(&ctx(&policy, &targets, 30), &s.evidence(), &log.state, me);
    let [Command::Decision(d)] = proposals(&effects)[..] else { panic!("{effects:?}") };
    assert_eq!((d.verdict, d.desired_capacity), (Verdict::Degraded, 2), "c lost: a relapse, not a recovery");
}

#[test]
fn the_witness_scales_up_once_alone_and_hands_it_to_the_quorum() {
    let policy = PolicyConfig::default(); // dark-site-after 5 min
    let targets = targets();
    let dark = site([agent("a").heard(400), agent("b").heard(400), agent("c").heard(400)]);
    let mut log = Log::new();
    log.decide(Verdict::Down, 1, NOV_23_MS);
    let term = log.term;
    let witness = |silent: u64, leader_known: bool| dark_witness(term, silent, leader_known);
    let mut duties = Duties::default();
    let step = |duties: &mut Duties, state: &SiteState, t: u64, me: Standing| {
        duties.step(&ctx(&policy, &targets, t), &dark.evidence(), state, me)
    };
    assert_eq!(step(&mut duties, &log.state, 1, witness(299, false)), vec![]);
    let effects = step(&mut duties, &log.state, 2, witness(300, false));
    let started = starts(&effects);
    assert_eq!(started.len(), 2, "{effects:?}");
    assert!(proposals(&effects).is_empty());
    for (_, a) in &started {
        assert!(a.unilateral);
        assert_eq!((a.verdict, a.desired_capacity, a.previous_capacity), (Verdict::Down, 3, 1));
        // Outside the committed index space: never a committed decision's token.
        assert_eq!(a.token, FencingToken { term: log.state.applied.term, index: u64::MAX });
    }
    assert_eq!(duties.unilateral().map(|u| u.capacity), Some(3));
    assert_eq!(step(&mut duties, &log.state, 3, witness(301, false)), vec![], "once");
    assert_eq!(
        duties.finished(
            "asg",
            FencingToken { term: log.state.applied.term, index: u64::MAX },
            true,
            "set 3".into(),
            secs(4),
            0
        ),
        None,
        "not committable"
    );

    // The quorum returns: the witness proposes its capacity until committed.
    let effects = step(&mut duties, &log.state, 10, witness(310, true));
    let [Command::Unilateral { desired_capacity: 3, by, .. }] = proposals(&effects)[..] else {
        panic!("{effects:?}")
    };
    assert_eq!(by, "n1");
    assert!(proposals(&step(&mut duties, &log.state, 11, witness(311, true))).is_empty());
    let effects = step(&mut duties, &log.state, 13, witness(313, true));
    assert_eq!(proposals(&effects).len(), 1, "again after PROPOSE_RETRY");
    commit_all(&mut log, &effects);
    assert_eq!((log.state.verdict, log.state.desired_capacity), (Verdict::Down, 3));
    assert_eq!(step(&mut duties, &log.state, 20, witness(320, true)), vec![]);
    assert_eq!(duties.unilateral().map(|u| u.capacity), None);

    // Never down: with as much committed already, the witness does nothing alone.
    let mut duties = Duties::default();
    let mut log = Log::new();
    log.decide(Verdict::Down, 3, NOV_23_MS);
    let me = Standing { term: log.term, ..witness(600, false) };
    assert_eq!(duties.step(&ctx(&policy, &targets, 1), &dark.evidence(), &log.state, me), vec![]);
    // A lower unilateral capacity never lowers the committed one.
    log.commit(&Command::Unilateral { desired_capacity: 1, by: "w".into(), at_ms: NOV_23_MS });
    assert_eq!(log.state.desired_capacity, 3);
}

#[test]
fn a_restarted_witness_hands_over_what_it_did_alone_and_does_not_act_again() {
    let policy = PolicyConfig::default(); // dark-site-after 5 min
    let targets = targets();
    let dark = site([agent("a").heard(400), agent("b").heard(400), agent("c").heard(400)]);
    let mut log = Log::new();
    log.decide(Verdict::Healthy, 0, NOV_23_MS);
    let term = log.term;
    let witness = |silent: u64, leader_known: bool| dark_witness(term, silent, leader_known);
    let before = Unilateral { capacity: 3, at_ms: NOV_23_MS + 1 };
    let mut duties = Duties::default();
    duties.restore_unilateral(before);
    assert_eq!(duties.unilateral(), Some(before));
    // Still dark after the restart: nothing again (it was done, or is in the cloud's hands).
    let effects = duties.step(&ctx(&policy, &targets, 1), &dark.evidence(), &log.state, witness(600, false));
    assert_eq!(effects, vec![]);
    // The quorum is back: the witness proposes what it did, with when it did it.
    let effects = duties.step(&ctx(&policy, &targets, 2), &dark.evidence(), &log.state, witness(0, true));
    assert_eq!(
        proposals(&effects),
        [&Command::Unilateral { desired_capacity: 3, by: "n1".into(), at_ms: before.at_ms }]
    );
    commit_all(&mut log, &effects);
    assert_eq!((log.state.verdict, log.state.desired_capacity), (Verdict::Down, 3));
    let me = Standing { term: log.term, ..witness(0, true) };
    assert_eq!(duties.step(&ctx(&policy, &targets, 3), &dark.evidence(), &log.state, me), vec![]);
    assert_eq!(duties.unilateral(), None, "taken in: nothing left to keep");
}

#[test]
fn a_hold_or_the_spend_limit_binds_the_witness_alone_too() {
    let targets = targets();
    let dark = site([agent("a").heard(400), agent("b").heard(400), agent("c").heard(400)]);
    let witness = dark_witness;
    let withheld = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| if let Effect::Withheld { reason } = e { Some(reason.clone()) } else { None })
            .collect()
    };

    // Held by an operator: no scale-up, and the witness says why once per dark spell.
    let policy = PolicyConfig::default(); // dark-site-after 5 min
    let mut log = Log::new();
    log.decide(Verdict::Down, 1, NOV_23_MS);
    log.commit(&Command::Hold { on: true, by: "op".into(), at_ms: NOV_23_MS });
    let term = log.term;
    let mut duties = Duties::default();
    let step = |duties: &mut Duties, state: &SiteState, t: u64, me: Standing| {
        duties.step(&ctx(&policy, &targets, t), &dark.evidence(), state, me)
    };
    let effects = step(&mut duties, &log.state, 1, witness(term, 300, false));
    assert_eq!(withheld(&effects), ["burst held by an operator"]);
    assert!(starts(&effects).is_empty(), "{effects:?}");
    assert_eq!(step(&mut duties, &log.state, 2, witness(term, 301, false)), vec![], "said once");
    // A quorum back, then gone again: a new dark spell, said again.
    assert_eq!(step(&mut duties, &log.state, 3, witness(term, 302, true)), vec![]);
    let effects = step(&mut duties, &log.state, 4, witness(term, 400, false));
    assert_eq!(withheld(&effects), ["burst held by an operator"]);
    // Released: the witness scales up alone.
    log.commit(&Command::Hold { on: false, by: "op".into(), at_ms: NOV_23_MS });
    let effects = step(&mut duties, &log.state, 5, witness(term, 401, false));
    assert_eq!(starts(&effects).len(), 2, "{effects:?}");
    assert!(withheld(&effects).is_empty());

    // The month's spend at its limit (1 instance for 10 hours at 1 an hour, limit 10): a
    // limit that only alerts lets the witness scale up; hold and scale-down do not.
    for (at_limit, scales_up) in
        [(SpendAction::Alert, true), (SpendAction::Hold, false), (SpendAction::ScaleDown, false)]
    {
        let cap = SpendCap { price_per_instance_hour: 1.0, monthly_limit: 10.0, at_limit };
        let policy = PolicyConfig { spend: Some(cap), ..Default::default() };
        let state = spending(1);
        let me = witness(state.applied.term, 300, false);
        let mut duties = Duties::default();
        let ten_hours = 10 * HOUR_MS / 1000;
        let effects = duties.step(&ctx(&policy, &targets, ten_hours), &dark.evidence(), &state, me);
        if scales_up {
            assert_eq!(starts(&effects).len(), 2, "{at_limit:?}: {effects:?}");
        } else {
            assert!(starts(&effects).is_empty(), "{at_limit:?}: {effects:?}");
            assert_eq!(withheld(&effects), ["monthly spend limit reached"], "{at_limit:?}");
        }
        // An hour short of the limit, every policy lets it scale up.
        let mut duties = Duties::default();
        let effects = duties.step(&ctx(&policy, &targets, ten_hours - 3600), &dark.evidence(), &state, me);
        assert_eq!(starts(&effects).len(), 2, "{at_limit:?} below the limit: {effects:?}");
    }
}

#[test]
fn a_drill_is_judged_as_a_power_cut_and_ends_itself_on_a_real_outage_or_its_time_limit() {
    let policy = PolicyConfig::default(); // burst-after 60 s
    let t = targets();
    let start = |log: &mut Log| {
        log.commit(&Command::Drill { on: true, live: false, by: "op".into(), at_ms: NOV_23_MS });
    };
    // On line everywhere, but the drill says battery since it began: 61 s in, down.
    let mut log = Log::new();
    start(&mut log);
    let fine = site([agent("a"), agent("b")]);
    let mut duties = Duties::default();
    let effects = duties.step(&ctx(&policy, &t, 61), &fine.evidence(), &log.state, leader(&log));
    let decided = proposals(&effects);
    assert!(
        matches!(decided.as_slice(), [Command::Decision(d)] if d.verdict == Verdict::Down && d.reasons.contains(&"drill".to_string())),
        "{effects:?}"
    );
    // Its decisions are dry runs.
    log.decide(Verdict::Down, 2, NOV_23_MS + 61_000);
    let effects = duties.step(&ctx(&policy, &t, 62), &fine.evidence(), &log.state, leader(&log));
    assert!(starts(&effects).iter().all(|(_, a)| a.dry_run), "{effects:?}");

    // A real outage during the drill ends it at once.
    let real = site([agent("a").on_battery_for(70), agent("b").on_battery_for(70)]);
    let effects = duties.step(&ctx(&policy, &t, 63), &real.evidence(), &log.state, leader(&log));
    assert!(
        proposals(&effects)
            .iter()
            .any(|c| matches!(c, Command::Drill { on: false, by, .. } if by.contains("real outage"))),
        "{effects:?}"
    );

    // A drill left running ends after its time limit.
    let mut log = Log::new();
    start(&mut log);
    let mut duties = Duties::default();
    let limit = sitewatch_proto::burst::DRILL_LIMIT.as_secs();
    let effects = duties.step(&ctx(&policy, &t, limit - 1), &fine.evidence(), &log.state, leader(&log));
    assert!(!proposals(&effects).iter().any(|c| matches!(c, Command::Drill { .. })), "{effects:?}");
    let effects = duties.step(&ctx(&policy, &t, limit), &fine.evidence(), &log.state, leader(&log));
    assert!(
        proposals(&effects)
            .iter()
            .any(|c| matches!(c, Command::Drill { on: false, by, .. } if by.contains("time limit"))),
        "{effects:?}"
    );
}
