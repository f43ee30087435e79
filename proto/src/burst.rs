//! What a node does about the verdict: propose decisions when it leads, start actions
//! for the committed decision in force, and, on the witness, the dark-site fallback.
//!
//! Sans-IO like the rest of this crate: [`Duties::step`] takes the committed state, the
//! evidence and the time and returns [`Effect`]s; the daemon proposes, spawns actuator
//! tasks and reports their results back through [`Duties::finished`]. The rules:
//! - only the leader proposes, and only once it has applied an entry of its own term
//!   (before that it may not know the latest committed decision);
//! - only a committed decision is acted on, carrying its fencing token (term, index) and
//!   the idempotency key derived from it; results are committed too, so a new leader
//!   redoes only what is not done, with the same key;
//! - the witness, cut off from every agent for `dark-site-after` and without a quorum,
//!   may scale up once on its own (tagged unilateral) and never down.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::PolicyConfig;
use crate::state::{ActionResult, Command, Decision, FencingToken, SiteState, Verdict};
use crate::verdict::{Assessment, Evidence, PolicyMemory, assess, spend_limit_binds};

/// A proposal not committed within this is proposed again (a leader change or a lost
/// forward can drop it).
pub const PROPOSE_RETRY: Duration = Duration::from_secs(3);
/// A failed action is tried again after this (the actuator's own retries came first).
pub const ACTION_RETRY: Duration = Duration::from_secs(30);
/// A drill nobody ended (the operator's session dropped) ends on its own after this.
pub const DRILL_LIMIT: Duration = Duration::from_secs(15 * 60);

/// One committed desired state to bring about: the webhook body, the exec hook's stdin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub cluster_id: String,
    /// The (term, index) of the committed decision; for a unilateral action, the last
    /// position the witness had applied.
    pub token: FencingToken,
    pub idempotency_key: String,
    pub verdict: Verdict,
    pub previous_verdict: Verdict,
    /// Absolute, never a delta.
    pub desired_capacity: u32,
    pub previous_capacity: u32,
    pub reasons: Vec<String>,
    pub decided_at_ms: u64,
    /// The spend alert level (0, 50, 80, 100 % of the monthly limit) the decision carries.
    #[serde(default)]
    pub spend_level: u8,
    /// The witness acting alone on a dark site: scale up only.
    pub unilateral: bool,
    /// A decision of a drill that is not live: report what would be done, do nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Propose(Command),
    /// Run `action` on the named actuator or notifier, replacing whatever it runs.
    Start {
        target: String,
        action: Action,
    },
    /// Stop what the named target runs: superseded, or this node no longer leads.
    Cancel {
        target: String,
    },
    /// The witness on a dark site does not scale up alone, and says why: an operator's
    /// hold or the spend limit binds it as it binds the quorum. Once per dark spell.
    Withheld {
        reason: String,
    },
}

/// Who this node is, this step.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub leader: bool,
    /// The raft term this node is in.
    pub term: u64,
    /// Some leader is known (this node or another): proposals can reach it.
    pub leader_known: bool,
    pub witness: bool,
    /// How long since any agent was heard, if this node has heard none for a while (the
    /// witness's dark-site clock); `None` while some agent is heard.
    pub agents_silent_for: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Proposed {
    what: (Verdict, u32, u8),
    at: Duration,
}

/// What the witness raised alone on a dark site, until a quorum commits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unilateral {
    pub capacity: u32,
    /// When it acted, wall clock.
    pub at_ms: u64,
}

/// The per-node memory of duties; starts empty at every process start.
#[derive(Debug, Default)]
pub struct Duties {
    memory: PolicyMemory,
    proposed: Option<Proposed>,
    /// target -> the decision it is acting on, and whether the action is unilateral.
    running: BTreeMap<String, (FencingToken, bool)>,
    /// target -> (decision, when it failed).
    failed: BTreeMap<String, (FencingToken, Duration)>,
    /// target -> the decision it brought about and when, while that result waits to
    /// commit; after PROPOSE_RETRY without it the action runs again (same key).
    done: BTreeMap<String, (FencingToken, Duration)>,
    unilateral: Option<Unilateral>,
    unilateral_proposed_at: Option<Duration>,
    /// The dark-site scale-up was withheld (and said so) in this dark spell.
    withheld: bool,
    drill_end_proposed_at: Option<Duration>,
    last: Option<Assessment>,
}

/// What one step needs besides the evidence.
pub struct Context<'a> {
    pub policy: &'a PolicyConfig,
    pub cluster_id: &'a str,
    pub node: &'a str,
    /// Actuator and notifier names, in config order.
    pub targets: &'a [String],
    pub now: Duration,
    pub now_unix_ms: u64,
}

impl Duties {
    /// The latest assessment, for status.
    pub fn assessment(&self) -> Option<&Assessment> {
        self.last.as_ref()
    }

    /// Targets with an action in flight.
    pub fn running(&self) -> impl Iterator<Item = (&String, &FencingToken)> {
        self.running.iter().map(|(target, (token, _))| (target, token))
    }

    /// What this witness did alone and no quorum has committed yet: the daemon keeps it
    /// across restarts, since nobody else knows it.
    pub fn unilateral(&self) -> Option<Unilateral> {
        self.unilateral
    }

    /// A restarted witness takes back what it did alone before it stopped: it proposes it
    /// once a quorum is back, and does not act alone again meanwhile.
    pub fn restore_unilateral(&mut self, u: Unilateral) {
        self.unilateral = Some(u);
    }

    pub fn step(
        &mut self,
        ctx: &Context<'_>,
        evidence: &Evidence<'_>,
        state: &SiteState,
        me: Standing,
    ) -> Vec<Effect> {
        let a = assess(ctx.policy, evidence, state, self.memory, ctx.now, ctx.now_unix_ms);
        self.memory = a.memory;
        let mut effects = Vec::new();

        // The witness's own scale-up, once the quorum has it, is no longer its alone.
        if let Some(u) = self.unilateral
            && state.desired_capacity >= u.capacity
            && state.decision.is_some_and(|t| t.index > 0)
            && me.leader_known
            && self.unilateral_proposed_at.is_some()
        {
            self.unilateral = None;
            self.unilateral_proposed_at = None;
        }
        if let Some(u) = self.unilateral
            && me.leader_known
            && self.unilateral_proposed_at.is_none_or(|at| ctx.now.saturating_sub(at) >= PROPOSE_RETRY)
        {
            self.unilateral_proposed_at = Some(ctx.now);
            effects.push(Effect::Propose(Command::Unilateral {
                desired_capacity: u.capacity,
                by: ctx.node.to_owned(),
                at_ms: u.at_ms,
            }));
        }

        let caught_up = me.leader && state.applied.term == me.term;
        if caught_up {
            self.end_drill_if_due(ctx, evidence, state, &mut effects);
            self.propose_if_changed(ctx, &a, state, &mut effects);
            self.act_on_decision(ctx, state, &mut effects);
        } else {
            // Not (yet) the leader of this term: whatever runs for a committed decision
            // stops; the leader that owns the term redoes it with the same key.
            // A unilateral action runs on: nobody else can take it over.
            self.running.retain(|target, (_, unilateral)| {
                if !*unilateral {
                    effects.push(Effect::Cancel { target: target.clone() });
                }
                *unilateral
            });
            self.proposed = None;
            // A result not committed by now is redone by whoever leads, with the same key.
            self.done.clear();
            if me.witness && !me.leader {
                self.dark_site(ctx, evidence, state, me, &mut effects);
            }
        }
        self.last = Some(a);
        effects
    }

    /// A drill ends on its own when it overstays DRILL_LIMIT, or at once when the site is
    /// really down: a dry drill must never stand between a real outage and its burst.
    fn end_drill_if_due(
        &mut self,
        ctx: &Context<'_>,
        evidence: &Evidence<'_>,
        state: &SiteState,
        out: &mut Vec<Effect>,
    ) {
        let Some(drill) = &state.drill else {
            self.drill_end_proposed_at = None;
            return;
        };
        if self.drill_end_proposed_at.is_some_and(|at| ctx.now.saturating_sub(at) < PROPOSE_RETRY) {
            return;
        }
        let overdue = ctx.now_unix_ms.saturating_sub(drill.started_at_ms) >= DRILL_LIMIT.as_millis() as u64;
        let without_drill = SiteState { drill: None, ..state.clone() };
        let real = assess(ctx.policy, evidence, &without_drill, self.memory, ctx.now, ctx.now_unix_ms);
        let why = if real.verdict == Verdict::Down {
            "sitewatch: a real outage ended the drill"
        } else if overdue {
            "sitewatch: the drill reached its time limit"
        } else {
            return;
        };
        self.drill_end_proposed_at = Some(ctx.now);
        out.push(Effect::Propose(Command::Drill {
            on: false,
            live: drill.live,
            by: why.to_owned(),
            at_ms: ctx.now_unix_ms,
        }));
    }

    fn propose_if_changed(
        &mut self,
        ctx: &Context<'_>,
        a: &Assessment,
        state: &SiteState,
        out: &mut Vec<Effect>,
    ) {
        let want = (a.verdict, a.desired_capacity, a.spend_level);
        let have = (state.verdict, state.desired_capacity, state.spend_level);
        if want == have {
            self.proposed = None;
            return;
        }
        // Until every agent is heard, only bad news is worth a decision.
        if !a.settled && a.verdict != Verdict::Down {
            return;
        }
        if let Some(p) = &self.proposed
            && p.what == want
            && ctx.now.saturating_sub(p.at) < PROPOSE_RETRY
        {
            return;
        }
        self.proposed = Some(Proposed { what: want, at: ctx.now });
        out.push(Effect::Propose(Command::Decision(Decision {
            verdict: a.verdict,
            desired_capacity: a.desired_capacity,
            reasons: a.reasons.clone(),
            decided_at_ms: ctx.now_unix_ms,
            evidence: a.hosts.clone(),
            spend_level: a.spend_level,
        })));
    }

    fn act_on_decision(&mut self, ctx: &Context<'_>, state: &SiteState, out: &mut Vec<Effect>) {
        let Some(token) = state.decision else { return };
        for target in ctx.targets {
            if state.actions.get(target).is_some_and(|r| r.token == token && r.ok) {
                continue;
            }
            let done_lately = self
                .done
                .get(target)
                .is_some_and(|(t, at)| *t == token && ctx.now.saturating_sub(*at) < PROPOSE_RETRY);
            if self.running.get(target) == Some(&(token, false)) || done_lately {
                continue;
            }
            if let Some((t, at)) = self.failed.get(target)
                && *t == token
                && ctx.now.saturating_sub(*at) < ACTION_RETRY
            {
                continue;
            }
            self.running.insert(target.clone(), (token, false));
            out.push(Effect::Start {
                target: target.clone(),
                action: action_for(ctx.cluster_id, state, token),
            });
        }
    }

    fn dark_site(
        &mut self,
        ctx: &Context<'_>,
        evidence: &Evidence<'_>,
        state: &SiteState,
        me: Standing,
        out: &mut Vec<Effect>,
    ) {
        let Some(silent) = me.agents_silent_for.filter(|_| !me.leader_known) else {
            self.withheld = false;
            return;
        };
        if silent < ctx.policy.dark_site_after || self.unilateral.is_some() {
            return;
        }
        let capacity = ctx.policy.capacity.burst_size(evidence.agents.len() as u32);
        // Scale up only: what the quorum committed, or more, stays.
        if capacity <= state.desired_capacity {
            return;
        }
        // What binds the quorum binds the witness alone: both are in the committed state.
        let withheld = if state.hold {
            Some("burst held by an operator")
        } else if spend_limit_binds(ctx.policy, state, ctx.now_unix_ms) {
            Some("monthly spend limit reached")
        } else {
            None
        };
        if let Some(reason) = withheld {
            if !self.withheld {
                self.withheld = true;
                out.push(Effect::Withheld { reason: reason.to_owned() });
            }
            return;
        }
        self.unilateral = Some(Unilateral { capacity, at_ms: ctx.now_unix_ms });
        // Never a committed entry's token: the index space of a log never reaches u64::MAX,
        // so a receiver never sees two capacities under one token, and a late result of
        // this action can never be taken for a committed decision's.
        let token = FencingToken { term: state.applied.term, index: u64::MAX };
        let action = Action {
            cluster_id: ctx.cluster_id.to_owned(),
            token,
            idempotency_key: format!(
                "{}-unilateral-{}-{}",
                ctx.cluster_id, state.applied.term, state.applied.index
            ),
            verdict: Verdict::Down,
            previous_verdict: state.verdict,
            desired_capacity: capacity,
            previous_capacity: state.desired_capacity,
            reasons: vec![format!("dark-site:{}s", silent.as_secs())],
            decided_at_ms: ctx.now_unix_ms,
            spend_level: state.spend_level,
            unilateral: true,
            dry_run: false,
        };
        for target in ctx.targets {
            self.running.insert(target.clone(), (token, true));
            out.push(Effect::Start { target: target.clone(), action: action.clone() });
        }
    }

    /// An action ended. Returns the result to commit (none for a unilateral action,
    /// which cannot be committed, or when this node no longer leads).
    pub fn finished(
        &mut self,
        target: &str,
        token: FencingToken,
        ok: bool,
        detail: String,
        now: Duration,
        now_unix_ms: u64,
    ) -> Option<Command> {
        let (running, unilateral) = self.running.get(target).copied()?;
        if running != token {
            return None; // superseded meanwhile
        }
        self.running.remove(target);
        if unilateral {
            return None;
        }
        if ok {
            self.failed.remove(target);
            self.done.insert(target.to_owned(), (token, now));
        } else {
            self.failed.insert(target.to_owned(), (token, now));
        }
        Some(Command::ActionResult(ActionResult {
            target: target.to_owned(),
            token,
            ok,
            detail,
            at_ms: now_unix_ms,
        }))
    }
}

/// The action a committed decision calls for.
pub fn action_for(cluster_id: &str, state: &SiteState, token: FencingToken) -> Action {
    Action {
        cluster_id: cluster_id.to_owned(),
        token,
        idempotency_key: token.idempotency_key(cluster_id),
        verdict: state.verdict,
        previous_verdict: state.previous_verdict,
        desired_capacity: state.desired_capacity,
        previous_capacity: state.previous_capacity,
        reasons: state.reasons.clone(),
        decided_at_ms: state.decided_at_ms,
        spend_level: state.spend_level,
        unilateral: false,
        dry_run: state.dry_run_decision,
    }
}
