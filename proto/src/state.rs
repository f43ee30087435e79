//! The replicated site state: what every node holds after applying the committed log.
//!
//! Only a committed entry changes it, and applying the same entries in the same order
//! gives the same state on every node. A leader acts on it; nobody acts on a proposal.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::spend::SpendLedger;
use crate::verdict::HostEvidence;

/// How many committed decisions a node keeps for `history`; older ones live only in logs.
pub const HISTORY_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    #[default]
    Healthy,
    Degraded,
    Down,
    Recovering,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Healthy => "healthy",
            Verdict::Degraded => "degraded",
            Verdict::Down => "down",
            Verdict::Recovering => "recovering",
        })
    }
}

/// The (term, index) of the log entry that committed a decision. An actuator refuses a
/// token older than the newest it has seen, so a deposed leader cannot act late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct FencingToken {
    pub term: u64,
    pub index: u64,
}

impl FencingToken {
    /// Stable across retries and leaders: the same committed decision always carries the
    /// same key, so a receiver can drop a repeat.
    pub fn idempotency_key(&self, cluster_id: &str) -> String {
        format!("{cluster_id}-{}-{}", self.term, self.index)
    }
}

/// The site verdict and the cloud capacity it calls for, as proposed by a leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    /// Absolute, never a delta: re-applying it is harmless.
    pub desired_capacity: u32,
    /// Machine-readable reasons, e.g. `ups-on-battery:site`.
    pub reasons: Vec<String>,
    /// The proposing leader's wall clock, milliseconds since the UNIX epoch. Shown to
    /// operators and used for the monthly spend; never for ordering (the log index orders).
    pub decided_at_ms: u64,
    /// Each agent's condition when the leader decided.
    #[serde(default)]
    pub evidence: Vec<HostEvidence>,
    /// The spend alert level (0, 50, 80, 100 % of the monthly limit) reached.
    #[serde(default)]
    pub spend_level: u8,
}

/// What one actuator or notifier made of the decision in force; committed so that a new
/// leader does not repeat what is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionResult {
    /// The actuator's or notifier's configured name.
    pub target: String,
    /// The decision acted on.
    pub token: FencingToken,
    pub ok: bool,
    /// What happened, for `status` and `history`; never a secret.
    pub detail: String,
    pub at_ms: u64,
}

/// The payload of a normal raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    Decision(Decision),
    /// Operator maintenance mode: while held, no burst state changes are acted on.
    Hold {
        on: bool,
        by: String,
        at_ms: u64,
    },
    /// An actuator or notifier finished with the decision in force.
    ActionResult(ActionResult),
    /// The monthly failover drill: while on, every agent counts as on battery since the
    /// drill began (a simulated site-wide power cut). Not live: actions taken for the
    /// drill's decisions are dry runs, and ending it puts back what was in force before.
    Drill {
        on: bool,
        live: bool,
        by: String,
        at_ms: u64,
    },
    /// The witness scaled up on its own while the site was dark (it could not commit
    /// then). Proposed once a quorum is back, so the scale-down grace covers it.
    Unilateral {
        desired_capacity: u32,
        by: String,
        at_ms: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

impl Command {
    /// Field names are kept in the encoding: log entries outlive the binary that wrote them.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        Ok(rmp_serde::to_vec_named(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    pub token: FencingToken,
    pub command: Command,
}

/// What applying one committed entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// An empty entry (a new leader's first) or a membership entry: nothing changes.
    Nothing,
    /// A command took effect.
    Command(DecisionRecord),
    /// The entry could not be decoded. Every node sees the same bytes and skips them the
    /// same way, so the state stays identical everywhere.
    Undecodable { token: FencingToken, error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SiteState {
    /// The last applied log position.
    pub applied: FencingToken,
    pub verdict: Verdict,
    pub desired_capacity: u32,
    pub reasons: Vec<String>,
    /// The entry that set the verdict and capacity in force; `None` before the first decision.
    pub decision: Option<FencingToken>,
    /// When the decision in force was made (the proposer's wall clock, ms).
    #[serde(default)]
    pub decided_at_ms: u64,
    /// What the decision in force replaced.
    #[serde(default)]
    pub previous_verdict: Verdict,
    #[serde(default)]
    pub previous_capacity: u32,
    /// The spend alert level (0, 50, 80, 100) the decision in force carried.
    #[serde(default)]
    pub spend_level: u8,
    /// The agents' conditions behind the decision in force.
    #[serde(default)]
    pub evidence: Vec<HostEvidence>,
    pub hold: bool,
    pub history: VecDeque<DecisionRecord>,
    /// The latest result per actuator or notifier name.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionResult>,
    /// Burst instance-time this month, from the committed capacities and their times.
    #[serde(default)]
    pub spend: SpendLedger,
    /// A drill in progress.
    #[serde(default)]
    pub drill: Option<DrillState>,
    /// The decision in force was made for a drill that is not live: act on it as a dry run.
    #[serde(default)]
    pub dry_run_decision: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillState {
    pub live: bool,
    pub by: String,
    /// When the drill began (the proposer's wall clock): the simulated outage's start.
    pub started_at_ms: u64,
    /// What was in force before, put back when a dry drill ends.
    pub before_verdict: Verdict,
    pub before_capacity: u32,
}

impl SiteState {
    /// Apply the committed entry at `token`. `data` empty means a no-op entry.
    pub fn apply(&mut self, token: FencingToken, data: &[u8]) -> Applied {
        debug_assert!(token.index > self.applied.index, "entries apply in order");
        self.applied = token;
        if data.is_empty() {
            return Applied::Nothing;
        }
        let command = match Command::decode(data) {
            Ok(c) => c,
            Err(e) => return Applied::Undecodable { token, error: e.to_string() },
        };
        match &command {
            Command::Decision(d) => {
                self.dry_run_decision = self.drill.as_ref().is_some_and(|drill| !drill.live);
                if !self.dry_run_decision {
                    self.spend.change(d.desired_capacity, d.decided_at_ms);
                }
                self.previous_verdict = self.verdict;
                self.previous_capacity = self.desired_capacity;
                self.verdict = d.verdict;
                self.desired_capacity = d.desired_capacity;
                self.reasons = d.reasons.clone();
                self.decision = Some(token);
                self.decided_at_ms = d.decided_at_ms;
                self.spend_level = d.spend_level;
                self.evidence = d.evidence.clone();
            }
            Command::Hold { on, .. } => self.hold = *on,
            Command::Drill { on: true, live, by, at_ms } => {
                if self.drill.is_none() {
                    self.drill = Some(DrillState {
                        live: *live,
                        by: by.clone(),
                        started_at_ms: *at_ms,
                        before_verdict: self.verdict,
                        before_capacity: self.desired_capacity,
                    });
                }
            }
            Command::Drill { on: false, at_ms, .. } => {
                if let Some(drill) = self.drill.take()
                    && !drill.live
                {
                    // Nothing real moved during a dry drill: put back what was in force, as a
                    // decision of its own (acted on as a dry run too).
                    self.previous_verdict = self.verdict;
                    self.previous_capacity = self.desired_capacity;
                    self.verdict = drill.before_verdict;
                    self.desired_capacity = drill.before_capacity;
                    self.reasons = vec!["drill-ended".into()];
                    self.decision = Some(token);
                    self.decided_at_ms = *at_ms;
                    self.evidence.clear();
                    self.dry_run_decision = true;
                }
            }
            Command::ActionResult(result) => {
                // Only results for the decision in force count; a late one for an older
                // decision is history only.
                if Some(result.token) == self.decision {
                    self.actions.insert(result.target.clone(), result.clone());
                }
                return Applied::Command(DecisionRecord { token, command });
            }
            Command::Unilateral { desired_capacity, at_ms, .. } => {
                // Take in capacity the witness added; never lower what is in force.
                if let Some(drill) = &mut self.drill {
                    // Real capacity went up during a drill: ending it must not put back less.
                    drill.before_capacity = drill.before_capacity.max(*desired_capacity);
                    drill.before_verdict = Verdict::Down;
                }
                if *desired_capacity > self.desired_capacity {
                    self.spend.change(*desired_capacity, *at_ms);
                    self.previous_verdict = self.verdict;
                    self.previous_capacity = self.desired_capacity;
                    self.desired_capacity = *desired_capacity;
                    self.verdict = Verdict::Down;
                    self.reasons = vec!["dark-site-unilateral".into()];
                    self.decision = Some(token);
                    self.decided_at_ms = *at_ms;
                    self.evidence.clear();
                    self.dry_run_decision = false;
                }
            }
        }
        let record = DecisionRecord { token, command };
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(record.clone());
        Applied::Command(record)
    }

    /// Mark a position as applied without a payload (membership entries).
    pub fn skip(&mut self, token: FencingToken) {
        self.applied = token;
    }

    pub fn to_snapshot(&self) -> Result<Vec<u8>, CodecError> {
        Ok(rmp_serde::to_vec_named(self)?)
    }

    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(verdict: Verdict, capacity: u32) -> Vec<u8> {
        Command::Decision(Decision {
            verdict,
            desired_capacity: capacity,
            reasons: vec!["ups-on-battery:site".into()],
            decided_at_ms: 1,
            evidence: vec![],
            spend_level: 0,
        })
        .encode()
        .unwrap()
    }

    fn tok(term: u64, index: u64) -> FencingToken {
        FencingToken { term, index }
    }

    #[test]
    fn a_decision_sets_verdict_capacity_and_its_fencing_token() {
        let mut s = SiteState::default();
        assert_eq!(s.apply(tok(1, 1), &[]), Applied::Nothing);
        let Applied::Command(rec) = s.apply(tok(1, 2), &decision(Verdict::Down, 3)) else {
            panic!("expected a command");
        };
        assert_eq!(rec.token, tok(1, 2));
        assert_eq!((s.verdict, s.desired_capacity), (Verdict::Down, 3));
        assert_eq!(s.decision, Some(tok(1, 2)));
        assert_eq!(s.applied, tok(1, 2));
        assert_eq!(s.history.len(), 1);
    }

    #[test]
    fn hold_toggles_without_touching_the_decision() {
        let mut s = SiteState::default();
        s.apply(tok(1, 1), &decision(Verdict::Down, 2));
        let hold = Command::Hold { on: true, by: "op".into(), at_ms: 5 }.encode().unwrap();
        s.apply(tok(2, 2), &hold);
        assert!(s.hold);
        assert_eq!(s.decision, Some(tok(1, 1)));
        assert_eq!(s.desired_capacity, 2);
    }

    #[test]
    fn a_dry_drill_acts_as_dry_runs_and_puts_back_what_was_in_force() {
        let mut s = SiteState::default();
        let drill = |on| Command::Drill { on, live: false, by: "op".into(), at_ms: 10 }.encode().unwrap();
        s.apply(tok(1, 1), &drill(true));
        assert!(s.drill.is_some());
        s.apply(tok(1, 2), &decision(Verdict::Down, 3));
        assert!(s.dry_run_decision, "decisions during a dry drill are dry runs");
        assert_eq!(s.spend.instance_ms_at(3_600_010), 0, "a dry drill costs nothing");
        s.apply(tok(1, 3), &drill(false));
        assert_eq!((s.verdict, s.desired_capacity, s.decision), (Verdict::Healthy, 0, Some(tok(1, 3))));
        assert!(s.dry_run_decision && s.drill.is_none());
        s.apply(tok(1, 4), &decision(Verdict::Down, 2));
        assert!(!s.dry_run_decision, "after the drill, decisions are real again");
    }

    #[test]
    fn undecodable_entries_are_skipped_identically() {
        let mut a = SiteState::default();
        let mut b = SiteState::default();
        for s in [&mut a, &mut b] {
            assert!(matches!(s.apply(tok(1, 1), b"\xc1junk"), Applied::Undecodable { .. }));
        }
        assert_eq!(a, b);
        assert_eq!(a.applied, tok(1, 1));
        assert!(a.history.is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let mut s = SiteState::default();
        for i in 1..=(HISTORY_LEN as u64 + 10) {
            s.apply(tok(1, i), &decision(Verdict::Healthy, 0));
        }
        assert_eq!(s.history.len(), HISTORY_LEN);
        assert_eq!(s.history.front().unwrap().token.index, 11);
    }

    #[test]
    fn snapshot_roundtrips() {
        let mut s = SiteState::default();
        s.apply(tok(4, 9), &decision(Verdict::Recovering, 1));
        let back = SiteState::from_snapshot(&s.to_snapshot().unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn idempotency_key_is_stable() {
        assert_eq!(tok(3, 41).idempotency_key("home"), "home-3-41");
    }
}
