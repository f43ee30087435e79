//! The site verdict and the cloud capacity it calls for: a pure function of the policy,
//! the latest evidence, the committed state and the time.
//!
//! Every voter runs it on the observations it receives; only the leader proposes what it
//! finds, and only a committed decision is acted on. The one piece of memory it needs
//! (how long the site has been healthy since a burst) goes in and comes out as a value,
//! so the function stays replayable and a leader change can only restart that timer.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::GoingDown;
use crate::observation::{Observation, PeerLink};
use crate::policy::{PolicyConfig, SPEND_LEVELS, SpendAction};
use crate::state::{SiteState, Verdict};
use crate::ups::Power;

/// One agent as the judging node knows it.
#[derive(Debug, Clone, Copy)]
pub struct AgentView<'a> {
    pub name: &'a str,
    /// The latest observation and how long ago (on the judge's clock) it arrived.
    pub latest: Option<(&'a Observation, Duration)>,
}

/// Everything the verdict is judged on.
#[derive(Debug, Clone)]
pub struct Evidence<'a> {
    /// Every configured agent, voter or not.
    pub agents: Vec<AgentView<'a>>,
    /// The witnesses' names, and the latest observation of each that sent one: its own
    /// links to the agents count as evidence of the site's uplink.
    pub witnesses: Vec<(&'a str, Option<&'a Observation>)>,
    /// How long the judge has been listening. An agent never heard is lost only once the
    /// judge has listened for `host-lost-after`: a fresh leader must not call the site down
    /// just because it has not heard everyone yet.
    pub listening_for: Duration,
}

/// What the judge remembers between evaluations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyMemory {
    /// When (judge's clock) the evidence last turned healthy while burst capacity was in
    /// force. Restarts on every relapse; a new leader starts without it.
    pub healthy_since: Option<Duration>,
}

/// How one agent's host stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "condition")]
pub enum HostCondition {
    Up,
    /// Not heard yet, and the judge has not listened long enough to call it lost.
    Unknown,
    /// On battery for less than burst-after: armed, not yet counted.
    OnBattery {
        for_s: u64,
        fires_in_s: u64,
    },
    /// On battery past burst-after, or LB / FSD / runtime under min-runtime.
    PowerFailing {
        why: String,
    },
    /// Unheard for host-lost-after.
    Lost {
        unheard_s: Option<u64>,
    },
    /// Shutting down on purpose (its last word said so).
    GoingDown {
        why: String,
    },
}

impl HostCondition {
    /// Missing hosts are the ones the cloud stands in for.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            HostCondition::PowerFailing { .. } | HostCondition::Lost { .. } | HostCondition::GoingDown { .. }
        )
    }
}

/// The evidence behind a verdict, per agent; committed with the decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEvidence {
    pub name: String,
    #[serde(flatten)]
    pub condition: HostCondition,
    /// The agent's link to the witness is down (by either end's pings).
    #[serde(default)]
    pub cut_off: bool,
}

/// The judge's finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub verdict: Verdict,
    pub desired_capacity: u32,
    /// Machine-readable, stable, sorted: `ups-on-battery:host-a`, `host-lost:host-b`.
    pub reasons: Vec<String>,
    pub hosts: Vec<HostEvidence>,
    /// False while some agent has not been heard yet: the leader proposes nothing but a
    /// down verdict until it has heard everyone (or given up on them).
    pub settled: bool,
    /// Seconds until an armed power timer makes the site down, if one is armed site-wide.
    pub burst_in_s: Option<u64>,
    /// Seconds of health still needed before capacity goes back, while recovering.
    pub scale_down_in_s: Option<u64>,
    /// The highest spend alert level reached this month (0, 50, 80, 100).
    pub spend_level: u8,
    pub memory: PolicyMemory,
}

/// Judge the site. `now` is the judge's monotonic clock, `now_unix_ms` its wall clock
/// (used only for the monthly spend).
pub fn assess(
    policy: &PolicyConfig,
    evidence: &Evidence<'_>,
    committed: &SiteState,
    memory: PolicyMemory,
    now: Duration,
    now_unix_ms: u64,
) -> Assessment {
    let mut reasons = Vec::new();
    let mut hosts = Vec::with_capacity(evidence.agents.len());
    let mut settled = true;
    let mut armed: Vec<u64> = Vec::new();
    // A drill is a simulated site-wide power cut, from the committed start of the drill.
    let drill =
        committed.drill.as_ref().map(|d| Duration::from_millis(now_unix_ms.saturating_sub(d.started_at_ms)));
    if drill.is_some() {
        reasons.push("drill".to_string());
    }
    for agent in &evidence.agents {
        let condition = host_condition(policy, agent, evidence.listening_for, drill);
        match &condition {
            HostCondition::Up => {}
            HostCondition::Unknown => settled = false,
            HostCondition::OnBattery { fires_in_s, .. } => {
                armed.push(*fires_in_s);
                reasons.push(format!("ups-on-battery:{}", agent.name));
            }
            HostCondition::PowerFailing { .. } => reasons.push(format!("power-failing:{}", agent.name)),
            HostCondition::Lost { .. } => reasons.push(format!("host-lost:{}", agent.name)),
            HostCondition::GoingDown { .. } => reasons.push(format!("host-going-down:{}", agent.name)),
        }
        let heard = agent.latest.filter(|_| !matches!(condition, HostCondition::Lost { .. }));
        let cut_off = heard.is_some_and(|(obs, _)| {
            let links = judge_links(policy, obs, &evidence.witnesses);
            reasons.extend(links.reasons);
            links.cut_off
        });
        if cut_off {
            reasons.push(format!("wan-cut:{}", agent.name));
        }
        if let Some((obs, age)) = heard
            && !obs.ups.is_empty()
            && obs.power == Power::Unknown
        {
            // A UPS not read yet (its driver or upsd starting, as at every boot) is no
            // news for a moment, like an agent not heard yet; unknown for host-lost-after
            // is a site nobody can vouch for.
            if Duration::from_millis(obs.power_for_ms) + age >= policy.host_lost_after {
                reasons.push(format!("power-unknown:{}", agent.name));
            } else {
                settled = false;
            }
        }
        hosts.push(HostEvidence { name: agent.name.to_owned(), condition, cut_off });
    }
    reasons.sort();
    reasons.dedup();

    let total = hosts.len() as f64;
    let out_of_reach = hosts.iter().filter(|h| h.condition.is_missing() || h.cut_off).count();
    let share_down = total > 0.0 && out_of_reach as f64 / total >= policy.down_share - f64::EPSILON;
    let evidence_verdict = if share_down {
        Verdict::Down
    } else if !settled {
        // Agents not heard yet: no news is not good news, and not bad news either. The
        // committed verdict stands until everyone is heard or given up on.
        committed.verdict
    } else if reasons.is_empty() {
        Verdict::Healthy
    } else {
        Verdict::Degraded
    };
    // A burst stands in for the agents that are missing or cut off, and for those still
    // on battery: in a site-wide outage they go dark next, and counting them now gives
    // one decision instead of one per host as each crosses burst-after.
    let on_battery = hosts.iter().filter(|h| matches!(h.condition, HostCondition::OnBattery { .. })).count();
    let burst_size = policy.capacity.burst_size((out_of_reach + on_battery) as u32);
    let in_force = committed.desired_capacity;

    let mut memory = memory;
    let (mut verdict, mut capacity, mut scale_down_in_s) = (evidence_verdict, 0, None);
    match evidence_verdict {
        Verdict::Down => {
            memory.healthy_since = None;
            // Never shrink during an outage: hosts coming back one by one is not health.
            capacity = burst_size.max(in_force);
        }
        Verdict::Healthy if in_force > 0 && settled => {
            // The timer runs only once recovery is committed: a judge that missed a relapse
            // the quorum committed (a follower cut off for a while) restarts when it applies
            // it, so a new leader's memory is never older than the committed record.
            if committed.verdict != Verdict::Recovering {
                memory.healthy_since = None;
            }
            let since = *memory.healthy_since.get_or_insert(now);
            let healthy_for = now.saturating_sub(since);
            if healthy_for >= policy.scale_down_after {
                capacity = 0;
            } else {
                verdict = Verdict::Recovering;
                capacity = in_force;
                scale_down_in_s = Some(policy.scale_down_after.saturating_sub(healthy_for).as_secs());
            }
        }
        Verdict::Healthy if in_force == 0 => memory.healthy_since = None,
        _ => {
            // Degraded, or not everyone heard yet: any relapse restarts the scale-down
            // timer, and capacity stays.
            memory.healthy_since = None;
            capacity = in_force;
        }
    }
    capacity = capacity.min(policy.capacity.max);

    // Maintenance hold: the verdict is still judged and committed, capacity is frozen.
    if committed.hold {
        capacity = in_force;
        // Health with capacity kept is recovery, not health: saying healthy would restart
        // the timer and flap the verdict every scale-down-after.
        if verdict == Verdict::Healthy && capacity > 0 {
            verdict = Verdict::Recovering;
        }
    }

    let spend_level = spend_level(policy, committed, now_unix_ms);
    if spend_level >= 100
        && let Some(cap) = &policy.spend
    {
        match cap.at_limit {
            SpendAction::Alert => {}
            SpendAction::Hold => capacity = capacity.min(in_force),
            SpendAction::ScaleDown => capacity = 0,
        }
        if cap.at_limit != SpendAction::Alert {
            reasons.push("spend-limit-reached".into());
        }
    }

    // An armed timer only matters when those hosts would make the site down.
    let burst_in_s = if verdict == Verdict::Down { None } else { armed.iter().max().copied() };
    Assessment {
        verdict,
        desired_capacity: capacity,
        reasons,
        hosts,
        settled,
        burst_in_s,
        scale_down_in_s,
        spend_level,
        memory,
    }
}

fn host_condition(
    policy: &PolicyConfig,
    agent: &AgentView<'_>,
    listening_for: Duration,
    drill: Option<Duration>,
) -> HostCondition {
    let Some((obs, age)) = agent.latest else {
        return if listening_for >= policy.host_lost_after {
            HostCondition::Lost { unheard_s: None }
        } else {
            HostCondition::Unknown
        };
    };
    if age >= policy.host_lost_after {
        return HostCondition::Lost { unheard_s: Some(age.as_secs()) };
    }
    match &obs.host.going_down {
        Some(GoingDown::ShutdownScheduled { mode, .. }) => {
            return HostCondition::GoingDown { why: format!("shutdown-scheduled-{mode}") };
        }
        Some(GoingDown::LoginsRefused) => return HostCondition::GoingDown { why: "logins-refused".into() },
        // The agent stopping is not the host going: an upgrade restarts the agent in
        // seconds. If it stays away, host-lost-after says so.
        Some(GoingDown::AgentStopping) | None => {}
    }
    if let Some(on_battery) = drill
        && obs.power != Power::Battery
    {
        return on_battery_for(policy, on_battery);
    }
    if obs.power != Power::Battery {
        return HostCondition::Up;
    }
    if let Some(battery) = &obs.battery {
        if let Some(flag) = battery.critical.first() {
            return HostCondition::PowerFailing { why: flag.clone() };
        }
        if let Some(runtime) = battery.runtime_s
            && Duration::from_secs(runtime) < policy.min_runtime
        {
            return HostCondition::PowerFailing { why: format!("runtime-{runtime}s") };
        }
    }
    // The agent measured how long it has been on battery; the observation's travel
    // time adds to it.
    on_battery_for(policy, Duration::from_millis(obs.power_for_ms) + age)
}

fn on_battery_for(policy: &PolicyConfig, on_battery: Duration) -> HostCondition {
    if on_battery >= policy.burst_after {
        HostCondition::PowerFailing { why: format!("on-battery-{}s", on_battery.as_secs()) }
    } else {
        HostCondition::OnBattery {
            for_s: on_battery.as_secs(),
            fires_in_s: policy.burst_after.saturating_sub(on_battery).as_secs().max(1),
        }
    }
}

struct LinkFinding {
    cut_off: bool,
    reasons: Vec<String>,
}

/// Judge one agent's links: to each witness (seen from both ends) and to its probe
/// targets. Cut off means every witness link is down by the evidence; a link with too
/// few samples is no evidence.
fn judge_links(
    policy: &PolicyConfig,
    obs: &Observation,
    witnesses: &[(&str, Option<&Observation>)],
) -> LinkFinding {
    let t = &policy.link;
    let mut reasons = Vec::new();
    let mut witness_links = 0;
    let mut witness_down = 0;
    for (witness, witness_obs) in witnesses {
        let ours = obs.peers.iter().find(|p| p.name == *witness);
        let theirs = witness_obs.and_then(|w| w.peers.iter().find(|p| p.name == obs.node));
        let mut down = false;
        let mut any = false;
        for link in [ours, theirs].into_iter().flatten() {
            match link_state(policy, link) {
                LinkState::NoEvidence => {}
                LinkState::Good => any = true,
                LinkState::Degraded(why) => {
                    any = true;
                    reasons.push(format!("link-{why}:{}->{witness}", obs.node));
                }
                LinkState::Down => {
                    any = true;
                    down = true;
                }
            }
        }
        if any {
            witness_links += 1;
            witness_down += usize::from(down);
        }
    }
    let (mut probes_judged, mut probes_down) = (0, 0);
    for probe in &obs.probes {
        let s = &probe.summary;
        if s.sent < t.min_samples {
            continue;
        }
        probes_judged += 1;
        let loss = s.loss.unwrap_or(0.0);
        if loss >= t.down_loss {
            probes_down += 1;
            reasons.push(format!("probe-down:{}->{}", obs.node, probe.name));
        } else if loss >= t.degraded_loss {
            reasons.push(format!("link-loss:{}->{}", obs.node, probe.name));
        } else if s.rtt_p95_ms.is_some_and(|p95| p95 >= t.degraded_rtt.as_secs_f64() * 1000.0) {
            reasons.push(format!("link-rtt:{}->{}", obs.node, probe.name));
        }
    }
    let witness_lost = witness_links > 0 && witness_down == witness_links;
    // Losing the witness alone is no proof the site is cut off: the witness's VPS may be
    // the one that is down. Cut off takes the agent's own targets failing too; without
    // that, it is a degraded link.
    let cut_off = witness_lost && probes_judged > 0 && probes_down == probes_judged;
    if witness_lost && !cut_off {
        reasons.push(format!("witness-unreachable:{}", obs.node));
    }
    LinkFinding { cut_off, reasons }
}

enum LinkState {
    NoEvidence,
    Good,
    Degraded(&'static str),
    Down,
}

fn link_state(policy: &PolicyConfig, link: &PeerLink) -> LinkState {
    let t = &policy.link;
    // A connection that was up and has been silent for host-lost-after is down, whatever
    // its last window said; one never made is no evidence (the peer may still be starting).
    if !link.connected
        && link.last_contact_ms.is_some_and(|ms| ms >= policy.host_lost_after.as_millis() as u64)
    {
        return LinkState::Down;
    }
    let s = &link.link;
    if s.sent < t.min_samples {
        return LinkState::NoEvidence;
    }
    let loss = s.loss.unwrap_or(0.0);
    if loss >= t.down_loss {
        LinkState::Down
    } else if loss >= t.degraded_loss {
        LinkState::Degraded("loss")
    } else if s.rtt_p95_ms.is_some_and(|p95| p95 >= t.degraded_rtt.as_secs_f64() * 1000.0) {
        LinkState::Degraded("rtt")
    } else {
        LinkState::Good
    }
}

/// The month's spend has reached its limit and the policy says add nothing past it.
pub fn spend_limit_binds(policy: &PolicyConfig, committed: &SiteState, now_unix_ms: u64) -> bool {
    policy.spend.as_ref().is_some_and(|cap| cap.at_limit != SpendAction::Alert)
        && spend_level(policy, committed, now_unix_ms) >= 100
}

/// The highest alert level the month's spend (committed ledger plus what runs now) reached.
fn spend_level(policy: &PolicyConfig, committed: &SiteState, now_unix_ms: u64) -> u8 {
    let Some(cap) = &policy.spend else { return 0 };
    let instance_hours = committed.spend.instance_ms_at(now_unix_ms) as f64 / 3_600_000.0;
    let percent = instance_hours * cap.price_per_instance_hour / cap.monthly_limit * 100.0;
    SPEND_LEVELS.iter().rev().copied().find(|level| percent >= f64::from(*level)).unwrap_or(0)
}
