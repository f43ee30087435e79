//! Property tests of the verdict and the burst duties, driven through time: a random
//! timeline of per-agent conditions (line power, battery, LB, low runtime, silence, a
//! degraded or cut link, a shutdown) is played second by second through the real leader
//! path, `Duties::step`, whose proposals are committed through `SiteState::apply` with
//! increasing fencing tokens, and whose actions finish with random outcomes. An oracle
//! written from the design (not from `assess`) says what the site is each second.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::select;
use sitewatch_proto::burst::{ACTION_RETRY, Context, Duties, Effect, PROPOSE_RETRY, Standing};
use sitewatch_proto::host::GoingDown;
use sitewatch_proto::observation::{BatterySummary, Observation};
use sitewatch_proto::policy::{CapacityPolicy, PolicyConfig, SPEND_LEVELS, SpendAction, SpendCap};
use sitewatch_proto::state::Command;
use sitewatch_proto::ups::Power;
use sitewatch_proto::verdict::{AgentView, Evidence, HostCondition};
use sitewatch_proto::{FencingToken, Verdict};
use support::*;

const CLUSTER: &str = "home";

// ---- the generated world ----

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Good,
    Degraded,
    Cut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Going {
    No,
    AgentStopping,
    Shutdown,
}

/// One agent's condition over a segment of the timeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cond {
    battery: bool,
    /// LB or FSD.
    critical: bool,
    low_runtime: bool,
    silent: bool,
    link: Link,
    going: Going,
}

const FINE: Cond = Cond {
    battery: false,
    critical: false,
    low_runtime: false,
    silent: false,
    link: Link::Good,
    going: Going::No,
};

/// Mostly fine (shrinks towards fine), sometimes anything that goes wrong on a site.
fn cond() -> impl Strategy<Value = Cond> {
    prop_oneof![
        8 => Just(FINE),
        3 => Just(Cond { battery: true, ..FINE }),
        1 => Just(Cond { battery: true, critical: true, ..FINE }),
        1 => Just(Cond { battery: true, low_runtime: true, ..FINE }),
        2 => Just(Cond { silent: true, ..FINE }),
        1 => Just(Cond { link: Link::Degraded, ..FINE }),
        1 => Just(Cond { link: Link::Cut, ..FINE }),
        1 => Just(Cond { going: Going::Shutdown, ..FINE }),
        1 => Just(Cond { going: Going::AgentStopping, ..FINE }),
    ]
}

/// What happens to the judging node's leadership at the start of a segment.
#[derive(Clone, Copy, Debug)]
enum Lead {
    Stay,
    /// The process restarts and is elected again: fresh duties, fresh memory, nothing heard.
    Restart,
    /// Leadership is elsewhere for this many seconds, then back in a new term.
    Away(u64),
    /// A new term whose empty entry is applied only after this many seconds.
    NewTerm(u64),
}

fn lead() -> impl Strategy<Value = Lead> {
    prop_oneof![
        12 => Just(Lead::Stay),
        1 => Just(Lead::Restart),
        1 => (1u64..=5).prop_map(Lead::Away),
        1 => (0u64..=3).prop_map(Lead::NewTerm),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Pending {
    /// Elected again, in a new term, its empty entry applied.
    Elected,
    /// The current term's empty entry is applied.
    Noop,
}

#[derive(Clone, Debug)]
struct Seg {
    len: u64,
    agents: Vec<Cond>,
    lead: Lead,
}

#[derive(Clone, Debug)]
struct Scenario {
    policy: PolicyConfig,
    /// The verdict and capacity committed before the timeline starts.
    start: (Verdict, u32),
    segs: Vec<Seg>,
    /// Actuator outcomes, used in turn.
    outcomes: Vec<bool>,
    /// Sub-second part of when each battery period began (on the agent's clock).
    battery_offset_ms: u64,
}

fn policy() -> impl Strategy<Value = PolicyConfig> {
    (
        3u64..=15,
        2u64..=8,
        10u64..=40,
        select(vec![0.34, 0.5, 0.67, 1.0]),
        (1u32..=2, 0u32..=2, 0u32..=2, 1u32..=5, any::<bool>()),
    )
        .prop_map(|(burst, lost, scale_down, share, (per_host, outage_buffer, min, max, fixed))| {
            PolicyConfig {
                burst_after: secs(burst),
                host_lost_after: secs(lost),
                scale_down_after: secs(scale_down),
                down_share: share,
                capacity: CapacityPolicy {
                    per_host,
                    outage_buffer,
                    min: min.min(max),
                    max,
                    fixed: fixed.then_some(max.min(2)),
                },
                ..Default::default()
            }
        })
}

fn segs(agents: usize, max_len: u64, leads: bool) -> impl Strategy<Value = Vec<Seg>> {
    let lead = if leads { lead().boxed() } else { Just(Lead::Stay).boxed() };
    prop::collection::vec(
        (1..=max_len, prop::collection::vec(cond(), agents), lead).prop_map(|(len, agents, lead)| Seg {
            len,
            agents,
            lead,
        }),
        1..=10,
    )
}

fn scenario(policy: impl Strategy<Value = PolicyConfig>, leads: bool) -> impl Strategy<Value = Scenario> {
    (policy, 1usize..=4, select(vec![(Verdict::Healthy, 0), (Verdict::Down, 1), (Verdict::Down, 3)]))
        .prop_flat_map(move |(policy, agents, start)| {
            let start = (start.0, start.1.min(policy.capacity.max));
            (
                Just(policy),
                Just(start),
                segs(agents, 60, leads),
                prop::collection::vec(prop::bool::weighted(0.7), 1..=8),
                battery_offset(),
            )
        })
        .prop_map(|(policy, start, segs, outcomes, battery_offset_ms)| Scenario {
            policy,
            start,
            segs,
            outcomes,
            battery_offset_ms,
        })
}

/// Often a whole second, so that burst-after is met exactly on an evaluation.
fn battery_offset() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 0u64..1000]
}

// ---- the oracle ----

/// What the judge last heard from one agent.
#[derive(Clone, Debug)]
struct Heard {
    obs: Observation,
    at: u64,
    cond: Cond,
}

#[derive(Debug, Default, Clone, Copy)]
struct Judged {
    settled: bool,
    healthy: bool,
    down: bool,
}

/// The site as the design describes it, from what the judge holds at `t`.
fn oracle(p: &PolicyConfig, store: &[Option<Heard>], t: u64, listening: u64) -> Judged {
    let lost_after = p.host_lost_after.as_secs();
    let (mut out, mut settled, mut healthy) = (0, true, true);
    for h in store {
        let Some(h) = h else {
            if listening >= lost_after {
                out += 1;
            } else {
                settled = false;
            }
            healthy = false;
            continue;
        };
        let age = t - h.at;
        if age >= lost_after {
            out += 1;
            healthy = false;
            continue;
        }
        let c = h.cond;
        let on_battery_ms = h.obs.power_for_ms + age * 1000;
        let out_of_power =
            c.battery && (c.critical || c.low_runtime || on_battery_ms >= p.burst_after.as_millis() as u64);
        let missing = out_of_power || c.going == Going::Shutdown;
        out += usize::from(missing || c.link == Link::Cut);
        healthy &= !missing && !c.battery && c.link == Link::Good;
    }
    let n = store.len();
    let down = n > 0 && out as f64 / n as f64 >= p.down_share - f64::EPSILON;
    Judged { settled, healthy: healthy && settled, down }
}

// ---- the simulation ----

struct Sim {
    p: PolicyConfig,
    names: Vec<String>,
    targets: Vec<String>,
    witness_obs: Observation,
    log: Log,
    duties: Duties,
    /// Bumped at every restart of the judging process.
    generation: u64,
    store: Vec<Option<Heard>>,
    battery_since_ms: Vec<Option<u64>>,
    listen_start: u64,
    /// Leadership is elsewhere.
    away: bool,
    /// A leadership change that completes at a later second.
    pending: Option<(u64, Pending)>,
    battery_offset_ms: u64,
    outcomes: Vec<bool>,
    outcome_i: usize,
    /// target -> (token, started at): what this node runs, from its own effects.
    running: BTreeMap<String, (FencingToken, u64)>,
    /// target -> (token, failed at, generation).
    failed: BTreeMap<String, (FencingToken, u64, u64)>,
    was_caught_up: bool,
    // Oracle bookkeeping.
    ever_down: bool,
    last_unhealthy: u64,
    healthy_run: Option<(u64, u64)>,
    last_level: u8,
    seen: Seen,
}

/// What a run went through, to show the properties were exercised.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    bursts: u32,
    scale_downs: u32,
    relapses_while_recovering: u32,
    armed: u32,
    spend_limit: u32,
}

impl Sim {
    fn new(s: &Scenario) -> Sim {
        let n = s.segs[0].agents.len();
        let names: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
        let mut log = Log::new();
        log.decide(s.start.0, s.start.1, NOV_23_MS);
        let mut witness_obs = agent(WITNESS).obs.expect("heard");
        witness_obs.peers = names.iter().map(|n| peer(n, 0.0)).collect();
        let down = s.start.1 > 0;
        Sim {
            p: s.policy.clone(),
            targets: vec!["asg".into(), "hook".into()],
            witness_obs,
            log,
            duties: Duties::default(),
            generation: 0,
            store: vec![None; n],
            battery_since_ms: vec![None; n],
            listen_start: 0,
            away: false,
            pending: None,
            battery_offset_ms: s.battery_offset_ms,
            outcomes: s.outcomes.clone(),
            outcome_i: 0,
            running: BTreeMap::new(),
            failed: BTreeMap::new(),
            was_caught_up: true,
            ever_down: down,
            last_unhealthy: 0,
            healthy_run: None,
            last_level: 0,
            seen: Seen::default(),
            names,
        }
    }

    fn now_ms(t: u64) -> u64 {
        NOV_23_MS + t * 1000
    }

    fn leadership(&mut self, lead: Lead, t: u64) {
        // Whatever was pending happens first.
        if let Some((_, then)) = self.pending.take() {
            self.settle(then);
        }
        match lead {
            Lead::Stay => {}
            Lead::Restart => {
                self.duties = Duties::default();
                self.generation += 1;
                self.store.iter_mut().for_each(|h| *h = None);
                self.listen_start = t;
                self.log.elect();
            }
            Lead::Away(k) => {
                // Another node's term; this one is elected again (a new term) after k s.
                self.log.elect_unapplied();
                self.away = true;
                self.pending = Some((t + k, Pending::Elected));
            }
            Lead::NewTerm(0) => {
                self.log.elect();
            }
            Lead::NewTerm(k) => {
                self.log.elect_unapplied();
                self.pending = Some((t + k, Pending::Noop));
            }
        }
    }

    fn settle(&mut self, then: Pending) {
        match then {
            Pending::Elected => {
                self.away = false;
                self.log.elect();
            }
            Pending::Noop => {
                let token = self.log.next_token();
                self.log.state.apply(token, &[]);
            }
        }
    }

    fn outcome(&mut self) -> bool {
        let ok = self.outcomes[self.outcome_i % self.outcomes.len()];
        self.outcome_i += 1;
        ok
    }

    /// Play one second.
    fn second(&mut self, t: u64, conds: &[Cond]) -> Result<(), TestCaseError> {
        let p = self.p.clone();
        if let Some((at_, then)) = self.pending
            && at_ <= t
        {
            self.pending = None;
            self.settle(then);
        }
        let is_leader = !self.away;
        let caught_up = is_leader && self.log.state.applied.term == self.log.term;

        // Actions started earlier finish now.
        for (target, (token, started)) in std::mem::take(&mut self.running) {
            if started >= t {
                self.running.insert(target, (token, started));
                continue;
            }
            let ok = self.outcome();
            let result = self.duties.finished(&target, token, ok, String::new(), secs(t), Self::now_ms(t));
            if let Some(result) = result {
                // A result that ends after leadership moved (before this node stepped and
                // learnt it) is still offered; raft drops a follower's proposal.
                if caught_up {
                    self.log.commit(&result);
                }
                if ok {
                    self.failed.remove(&target);
                } else {
                    self.failed.insert(target, (token, t, self.generation));
                }
            }
        }

        // Agents observe and send.
        for (i, c) in conds.iter().enumerate() {
            let since = if c.battery {
                *self.battery_since_ms[i].get_or_insert(t * 1000 - self.battery_offset_ms.min(t * 1000))
            } else {
                self.battery_since_ms[i] = None;
                0
            };
            if c.silent {
                continue;
            }
            // A cut is the site's uplink gone: the witness and the agent's own target both.
            let target_loss = if c.link == Link::Cut { 0.9 } else { 0.0 };
            let mut obs = agent(&self.names[i]).probe("gw", target_loss, 20.0).obs.expect("heard");
            if c.battery {
                obs.power = Power::Battery;
                obs.power_for_ms = t * 1000 - since;
                obs.battery = Some(BatterySummary {
                    critical: if c.critical { vec!["LB:rack".into()] } else { vec![] },
                    runtime_s: Some(if c.low_runtime { 60 } else { 3600 }),
                    charge_pct: None,
                });
            }
            obs.peers[0].link = match c.link {
                Link::Good => window(60, 0.0, 20.0),
                Link::Degraded => window(60, 0.1, 20.0),
                Link::Cut => window(60, 0.9, 20.0),
            };
            obs.host.going_down = match c.going {
                Going::No => None,
                Going::AgentStopping => Some(GoingDown::AgentStopping),
                Going::Shutdown => {
                    Some(GoingDown::ShutdownScheduled { mode: "poweroff".into(), at_unix_ms: None })
                }
            };
            self.store[i] = Some(Heard { obs, at: t, cond: *c });
        }

        let listening = t - self.listen_start;
        let truth = oracle(&p, &self.store, t, listening);
        let before = self.log.state.clone();
        let evidence = Evidence {
            agents: self
                .names
                .iter()
                .zip(&self.store)
                .map(|(name, h)| AgentView { name, latest: h.as_ref().map(|h| (&h.obs, secs(t - h.at))) })
                .collect(),
            witnesses: vec![(WITNESS, Some(&self.witness_obs))],
            listening_for: secs(listening),
        };
        let ctx = Context {
            policy: &p,
            cluster_id: CLUSTER,
            node: "h0",
            targets: &self.targets,
            now: secs(t),
            now_unix_ms: Self::now_ms(t),
        };
        let me = Standing {
            leader: is_leader,
            term: self.log.term,
            leader_known: true,
            witness: false,
            agents_silent_for: None,
        };
        let effects = self.duties.step(&ctx, &evidence, &before, me);
        let a = self.duties.assessment().expect("assessed").clone();
        let at =
            |what: &str| format!("t={t}: {what}\n  truth {truth:?}\n  assessment {a:?}\n  before {before:?}");

        // Losing the lead cancels everything that ran.
        if self.was_caught_up && !caught_up {
            for target in self.running.keys() {
                prop_assert!(
                    effects.contains(&Effect::Cancel { target: target.clone() }),
                    "{}",
                    at(&format!("{target} not cancelled on losing the lead: {effects:?}"))
                );
            }
        }
        self.was_caught_up = caught_up;

        for e in &effects {
            match e {
                Effect::Propose(command) => {
                    prop_assert!(
                        caught_up,
                        "{}",
                        at(&format!("proposed without leading its term: {command:?}"))
                    );
                    if let Command::Decision(d) = command {
                        prop_assert!(d.desired_capacity <= p.capacity.max, "{}", at("above max"));
                        prop_assert!(
                            a.settled || d.verdict == Verdict::Down,
                            "{}",
                            at("unsettled, not down")
                        );
                    }
                    self.log.commit(command);
                }
                Effect::Start { target, action } => {
                    prop_assert!(
                        caught_up && !action.unilateral,
                        "{}",
                        at("started without leading its term")
                    );
                    let decision = before.decision.expect("acting on a decision");
                    prop_assert_eq!(action.token, decision);
                    prop_assert_eq!(&action.idempotency_key, &decision.idempotency_key(CLUSTER));
                    prop_assert_eq!(action.desired_capacity, before.desired_capacity);
                    prop_assert!(
                        !before.actions.get(target).is_some_and(|r| r.ok && r.token == decision),
                        "{}",
                        at(&format!("{target} re-run though done"))
                    );
                    if let Some((token, failed_at, generation)) = self.failed.get(target) {
                        prop_assert!(
                            *token != decision
                                || *generation != self.generation
                                || t - failed_at >= ACTION_RETRY.as_secs(),
                            "{}",
                            at(&format!("{target} retried before ACTION_RETRY"))
                        );
                    }
                    self.running.insert(target.clone(), (action.token, t));
                }
                Effect::Cancel { target } => {
                    prop_assert!(!caught_up, "{}", at("cancelled while leading"));
                    self.running.remove(target);
                }
                Effect::Withheld { reason } => {
                    prop_assert!(
                        false,
                        "{}",
                        at(&format!("an agent withheld a dark-site scale-up: {reason}"))
                    );
                }
            }
        }
        let after = &self.log.state;

        // The verdict follows the evidence.
        prop_assert_eq!(a.settled, truth.settled, "{}", at("settled"));
        if truth.settled {
            prop_assert_eq!(a.verdict == Verdict::Down, truth.down, "{}", at("down"));
            prop_assert_eq!(
                matches!(a.verdict, Verdict::Healthy | Verdict::Recovering),
                truth.healthy,
                "{}",
                at("healthy")
            );
        }
        if a.hosts.iter().any(|h| matches!(h.condition, HostCondition::OnBattery { .. })) {
            self.seen.armed += 1;
        }
        // Never above max.
        prop_assert!(
            a.desired_capacity <= p.capacity.max && after.desired_capacity <= p.capacity.max,
            "{}",
            at("max")
        );
        // A caught-up leader's decision is what it found.
        if caught_up && (a.settled || a.verdict == Verdict::Down) {
            prop_assert_eq!(
                (after.verdict, after.desired_capacity, after.spend_level),
                (a.verdict, a.desired_capacity, a.spend_level),
                "{}",
                at("not committed")
            );
        }

        let spend_at_limit =
            a.spend_level >= 100 && p.spend.as_ref().is_some_and(|s| s.at_limit != SpendAction::Alert);
        self.ever_down |= truth.down;
        // Nothing bursts before something fails for burst-after (or at once for LB and co.).
        if !self.ever_down {
            prop_assert!(
                after.desired_capacity == 0 && after.verdict != Verdict::Down,
                "{}",
                at("burst on a blip")
            );
        }
        // Down is decided at once, and bursts.
        if caught_up && truth.down && !spend_at_limit {
            prop_assert!(after.verdict == Verdict::Down && after.desired_capacity >= 1, "{}", at("no burst"));
        }
        if before.desired_capacity == 0 && after.desired_capacity > 0 {
            self.seen.bursts += 1;
        }
        // Capacity goes back only after scale-down-after of continuous health.
        if before.desired_capacity > 0 && after.desired_capacity == 0 && !spend_at_limit {
            self.seen.scale_downs += 1;
            prop_assert!(
                t - self.last_unhealthy >= p.scale_down_after.as_secs(),
                "{}",
                at(&format!("scaled down {} s after the last relapse", t - self.last_unhealthy))
            );
        }
        if truth.healthy {
            // The timer runs only once recovery is committed: until then every healthy
            // evaluation starts it over (a judge that missed a committed relapse must not
            // carry an older start into its leadership).
            if before.verdict != Verdict::Recovering
                || self.healthy_run.is_none_or(|(_, g)| g != self.generation)
            {
                self.healthy_run = Some((t, self.generation));
            }
        } else {
            if before.verdict == Verdict::Recovering {
                self.seen.relapses_while_recovering += 1;
            }
            self.healthy_run = None;
            self.last_unhealthy = t;
        }
        // ...and then exactly: the judge's timer runs from the first healthy evaluation.
        if let Some((since, _)) = self.healthy_run
            && caught_up
            && before.desired_capacity > 0
            && !before.hold
            && !spend_at_limit
        {
            let healthy_for = t - since;
            prop_assert_eq!(
                after.desired_capacity == 0,
                healthy_for >= p.scale_down_after.as_secs(),
                "{}",
                at(&format!("healthy for {healthy_for} s"))
            );
        }

        // Spend: levels in order; at the limit, hold adds nothing and scale-down gives all back.
        if after.spend_level != self.last_level {
            let next = SPEND_LEVELS.iter().copied().find(|l| *l > self.last_level);
            prop_assert_eq!(Some(after.spend_level), next, "{}", at("spend levels out of order"));
            self.last_level = after.spend_level;
        }
        if a.spend_level >= 100 {
            self.seen.spend_limit += 1;
            match p.spend.as_ref().map(|s| s.at_limit) {
                Some(SpendAction::Hold) => {
                    prop_assert!(
                        a.desired_capacity <= before.desired_capacity,
                        "{}",
                        at("hold added capacity")
                    )
                }
                Some(SpendAction::ScaleDown) => {
                    prop_assert_eq!(a.desired_capacity, 0, "{}", at("scale-down at the limit"));
                    if caught_up {
                        prop_assert_eq!(after.desired_capacity, 0);
                    }
                }
                _ => {}
            }
        }

        // A caught-up leader has every target acting on the decision in force, done, or
        // waiting to retry.
        if caught_up && let Some(decision) = after.decision {
            for target in &self.targets {
                let done = after.actions.get(target).is_some_and(|r| r.ok && r.token == decision);
                let runs = self.running.get(target).is_some_and(|(tok, _)| *tok == decision);
                let waits = self.failed.get(target).is_some_and(|(tok, at_, g)| {
                    *tok == decision && *g == self.generation && t - at_ < ACTION_RETRY.as_secs()
                });
                // A decision committed in this very step is started at the next one.
                let new = before.decision != Some(decision);
                prop_assert!(done || runs || waits || new, "{}", at(&format!("{target} idle")));
            }
        }
        Ok(())
    }
}

fn play(s: &Scenario) -> Result<Seen, TestCaseError> {
    let mut sim = Sim::new(s);
    let mut t = 1;
    for seg in &s.segs {
        sim.leadership(seg.lead, t);
        for _ in 0..seg.len {
            sim.second(t, &seg.agents)?;
            t += 1;
        }
    }
    Ok(sim.seen)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Whole-site power blips, each shorter than burst-after, between stretches of line power.
fn blips() -> impl Strategy<Value = Scenario> {
    (policy(), 1usize..=4, battery_offset())
        .prop_flat_map(|(policy, agents, offset)| {
            let burst = policy.burst_after.as_secs();
            (Just(policy), Just(agents), Just(offset), prop::collection::vec((1u64..=30, 1..=burst), 1..=8))
        })
        .prop_map(|(policy, agents, battery_offset_ms, periods)| {
            let segs = periods
                .into_iter()
                .flat_map(|(line, blip)| {
                    [
                        Seg { len: line, agents: vec![FINE; agents], lead: Lead::Stay },
                        Seg {
                            len: blip,
                            agents: vec![Cond { battery: true, ..FINE }; agents],
                            lead: Lead::Stay,
                        },
                    ]
                })
                .collect();
            Scenario { policy, start: (Verdict::Healthy, 0), segs, outcomes: vec![true], battery_offset_ms }
        })
}

proptest! {
    #![proptest_config(config(96))]

    /// A blip on every agent, shorter than burst-after, never bursts nor calls the site down.
    #[test]
    fn a_power_blip_shorter_than_burst_after_never_bursts(s in blips()) {
        let seen = play(&s)?;
        prop_assert_eq!(seen.bursts, 0);
        prop_assert!(seen.armed > 0, "the blips were seen");
    }

    /// Anything may happen first; then every agent is on battery past burst-after. Down and
    /// a burst come at the first evaluation at which the design says so (checked every
    /// second by the simulation), and do come.
    #[test]
    fn on_battery_for_burst_after_bursts_within_one_evaluation(
        mut s in scenario(policy(), false).prop_map(|mut s| { s.start = (Verdict::Healthy, 0); s }),
        extra in 1u64..=5,
    ) {
        let agents = s.segs[0].agents.len();
        let len = s.policy.burst_after.as_secs() + extra;
        s.segs.push(Seg { len, agents: vec![Cond { battery: true, ..FINE }; agents], lead: Lead::Stay });
        let seen = play(&s)?;
        prop_assert!(seen.bursts >= 1);
    }

    /// After a burst, random relapses (battery, lost or going-down hosts, degraded or cut
    /// links), leader restarts, terms without a caught-up leader and leadership elsewhere:
    /// capacity goes back only after scale-down-after of continuous health from the last
    /// non-healthy evaluation, exactly when the judge's own run of health reaches it; the
    /// duties start, retry, supersede and cancel actions by the rules.
    #[test]
    fn relapses_restart_the_scale_down_timer_and_leader_changes_never_shorten_it(
        s in scenario(policy(), true).prop_map(|mut s| {
            if s.start.1 == 0 {
                s.start = (Verdict::Down, 1);
            }
            s
        }),
    ) {
        play(&s)?;
    }

    /// With a monthly spend cap that the run reaches: capacity within max, levels 50, 80,
    /// 100 in order, hold adds nothing at the limit, scale-down gives everything back.
    #[test]
    fn capacity_stays_within_max_and_the_spend_cap(
        s in (scenario(policy(), false), 4.0f64..=40.0, select(vec![SpendAction::Alert, SpendAction::Hold, SpendAction::ScaleDown]))
            .prop_map(|(mut s, seconds_at_max, at_limit)| {
                // One instance-second costs 1: the limit is reached within tens of seconds at
                // max capacity, and no second adds more than 25 %, so no level can be skipped
                // by evaluating once a second.
                let monthly_limit = seconds_at_max * f64::from(s.policy.capacity.max);
                s.policy.spend = Some(SpendCap { price_per_instance_hour: 3600.0, monthly_limit, at_limit });
                s
            }),
    ) {
        play(&s)?;
    }
}

/// The witness's dark-site fallback, played second by second.
#[derive(Clone, Debug)]
struct Dark {
    policy: PolicyConfig,
    agents: usize,
    committed: u32,
    /// Seconds of agent silence when the timeline starts.
    silent_at_start: u64,
    /// When the quorum is back (a leader known).
    quorum_back: u64,
    /// Whether each proposal of the witness reaches the log.
    commits: Vec<bool>,
    len: u64,
}

fn dark() -> impl Strategy<Value = Dark> {
    (policy(), 1usize..=4, 0u32..=5, 0u64..=400, 1u64..=60, prop::collection::vec(any::<bool>(), 1..=6))
        .prop_map(|(mut policy, agents, committed, silent_at_start, quorum_back, commits)| {
            policy.dark_site_after = secs(300);
            let committed = committed.min(policy.capacity.max);
            Dark { policy, agents, committed, silent_at_start, quorum_back, commits, len: quorum_back + 30 }
        })
}

proptest! {
    #![proptest_config(config(256))]

    /// Alone, the witness scales up once, above the committed capacity only, tagged
    /// unilateral, and proposes nothing; once a leader is known again it proposes its
    /// capacity (every PROPOSE_RETRY) until the committed state holds it.
    #[test]
    fn the_witness_scales_up_once_and_never_down(d in dark()) {
        let p = &d.policy;
        let targets = vec!["asg".to_owned()];
        let names: Vec<String> = (0..d.agents).map(|i| format!("h{i}")).collect();
        let mut log = Log::new();
        log.decide(Verdict::Down, d.committed, NOV_23_MS);
        let mut duties = Duties::default();
        let want = p.capacity.burst_size(d.agents as u32);
        let (mut started, mut proposed_at, mut commit_i): (Vec<u32>, Vec<u64>, usize) = (vec![], vec![], 0);
        let mut settled_at = None;
        for t in 1..=d.len {
            let evidence = Evidence {
                agents: names.iter().map(|name| AgentView { name, latest: None }).collect(),
                witnesses: vec![(WITNESS, None)],
                listening_for: secs(3600),
            };
            let back = t >= d.quorum_back;
            let silent = d.silent_at_start + t;
            let me = Standing {
                leader: false,
                term: log.term,
                leader_known: back,
                witness: true,
                agents_silent_for: Some(secs(silent)),
            };
            let ctx = Context { policy: p, cluster_id: CLUSTER, node: WITNESS, targets: &targets, now: secs(t), now_unix_ms: NOV_23_MS + t * 1000 };
            let before = log.state.clone();
            for e in duties.step(&ctx, &evidence, &before, me) {
                match e {
                    Effect::Start { action, .. } => {
                        prop_assert!(!back && silent >= 300, "t={t}: started with a quorum or too early");
                        prop_assert!(action.unilateral);
                        prop_assert!(action.desired_capacity > before.desired_capacity, "never down");
                        prop_assert_eq!(action.desired_capacity, want);
                        started.push(action.desired_capacity);
                    }
                    Effect::Propose(Command::Unilateral { desired_capacity, by, .. }) => {
                        prop_assert!(back, "proposed without a leader to take it");
                        prop_assert_eq!(desired_capacity, want);
                        prop_assert_eq!(by.as_str(), WITNESS);
                        prop_assert!(before.desired_capacity < want || proposed_at.is_empty(), "t={t}: proposed after it was taken in");
                        if let Some(last) = proposed_at.last() {
                            prop_assert!(t - last >= PROPOSE_RETRY.as_secs());
                        }
                        proposed_at.push(t);
                        if d.commits[commit_i % d.commits.len()] {
                            log.commit(&Command::Unilateral { desired_capacity, by, at_ms: NOV_23_MS });
                        }
                        commit_i += 1;
                    }
                    other => prop_assert!(false, "t={t}: the witness did {other:?}"),
                }
            }
            prop_assert!(log.state.desired_capacity >= before.desired_capacity, "never down");
            if duties.unilateral().map(|u| u.capacity).is_none() && !started.is_empty() && settled_at.is_none() {
                settled_at = Some(t);
            }
        }
        prop_assert!(started.len() <= 1, "once: {started:?}");
        // Some second before the quorum is back with the agents silent for dark-site-after.
        let could = d.quorum_back >= 2 && d.silent_at_start + d.quorum_back > 300 && want > d.committed;
        prop_assert_eq!(started.len() == 1, could, "scaled up alone exactly when it may");
        if could && d.commits.iter().any(|c| *c) {
            prop_assert_eq!(log.state.desired_capacity, want, "the quorum took it in");
            prop_assert_eq!(log.state.verdict, Verdict::Down);
            prop_assert!(settled_at.is_some());
        }
    }

    /// A fresh leader: agents it has never heard are unknown, not lost, until it has
    /// listened for host-lost-after, and until then it proposes nothing but down.
    #[test]
    fn unheard_agents_count_as_lost_only_after_host_lost_after_of_listening(
        p in policy(),
        conds in prop::collection::vec(cond(), 1..=4),
        start in select(vec![(Verdict::Healthy, 0), (Verdict::Down, 2), (Verdict::Recovering, 2), (Verdict::Degraded, 1)]),
    ) {
        let names: Vec<String> = (0..conds.len()).map(|i| format!("h{i}")).collect();
        let targets: Vec<String> = vec![];
        let mut log = Log::new();
        log.decide(start.0, start.1.min(p.capacity.max), NOV_23_MS);
        let mut duties = Duties::default();
        let lost_after = p.host_lost_after.as_secs();
        for t in 0..=lost_after + 2 {
            let heard: Vec<Option<Observation>> = conds
                .iter()
                .zip(&names)
                .map(|(c, name)| {
                    (!c.silent).then(|| {
                        let mut a = agent(name);
                        if c.battery {
                            a = a.on_battery_for(1);
                        }
                        a.obs.expect("heard")
                    })
                })
                .collect();
            let evidence = Evidence {
                agents: names.iter().zip(&heard).map(|(name, o)| AgentView { name, latest: o.as_ref().map(|o| (o, secs(0))) }).collect(),
                witnesses: vec![],
                listening_for: secs(t),
            };
            let me = Standing { leader: true, term: log.term, leader_known: true, witness: false, agents_silent_for: None };
            let ctx = Context { policy: &p, cluster_id: CLUSTER, node: "h0", targets: &targets, now: secs(t), now_unix_ms: NOV_23_MS };
            let state = log.state.clone();
            let effects = duties.step(&ctx, &evidence, &state, me);
            let a = duties.assessment().expect("assessed");
            for (c, h) in conds.iter().zip(&a.hosts) {
                if c.silent {
                    let want = if t < lost_after { HostCondition::Unknown } else { HostCondition::Lost { unheard_s: None } };
                    prop_assert_eq!(&h.condition, &want, "t={}", t);
                }
            }
            let any_silent = conds.iter().any(|c| c.silent);
            prop_assert_eq!(a.settled, !any_silent || t >= lost_after);
            for e in &effects {
                let Effect::Propose(Command::Decision(d)) = e else { continue };
                if t < lost_after && any_silent {
                    prop_assert_eq!(d.verdict, Verdict::Down, "t={}: {:?}", t, d);
                }
                log.commit(&Command::Decision(d.clone()));
            }
        }
    }
}
