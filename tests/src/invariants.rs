//! What must hold after any scenario, whatever the faults, read from what the outside
//! world and the nodes recorded: the exec hooks' journal of every action run, moto's
//! state, every node's committed history now, and every committed record a sampler saw
//! along the way.
//!
//! - never two different desired capacities under one fencing token;
//! - every action preceded by a committed decision for its token and capacity (the
//!   witness's dark-site fallback excepted: tagged unilateral, scale-up only);
//! - no scale-down before the grace: a lower capacity is committed only after a
//!   recovering verdict stood for scale-down-after;
//! - no committed decision lost or changed: every node holds every record ever seen
//!   committed at its index, identical.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// One line of the exec hooks' journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRecord {
    /// `start` before the action, `done` after it.
    pub phase: String,
    pub node: String,
    pub key: String,
    pub term: u64,
    pub index: u64,
    pub capacity: u32,
    pub verdict: String,
    pub unilateral: bool,
    /// Wall clock, ms since the epoch.
    pub at_ms: u64,
}

impl ActionRecord {
    pub fn parse(line: &str) -> Result<ActionRecord, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [phase, node, key, term, index, capacity, verdict, unilateral, at_ms] = f[..] else {
            return Err(format!("{} fields, not 9", f.len()));
        };
        let num = |v: &str, what: &str| v.parse::<u64>().map_err(|e| format!("{what} {v:?}: {e}"));
        Ok(ActionRecord {
            phase: phase.to_owned(),
            node: node.to_owned(),
            key: key.to_owned(),
            term: num(term, "term")?,
            index: num(index, "index")?,
            capacity: num(capacity, "capacity")? as u32,
            verdict: verdict.to_owned(),
            unilateral: unilateral == "1",
            at_ms: num(at_ms, "time")?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Evidence {
    /// Each running node's committed records now, oldest first.
    pub histories: Vec<(String, Vec<Value>)>,
    /// Every committed record any node reported along the way, by index.
    pub seen: BTreeMap<u64, Value>,
    /// Indexes two reports disagreed on, as they were seen.
    pub seen_conflicts: Vec<String>,
    pub actions: Vec<ActionRecord>,
    /// Each member's role (`agent` or `witness`).
    pub roles: BTreeMap<String, String>,
    pub scale_down_after: Duration,
}

/// The capacity a committed record sets, if it sets one.
fn committed_capacity(record: &Value) -> Option<u32> {
    let c = &record["command"];
    let capacity =
        c["decision"]["desired_capacity"].as_u64().or(c["unilateral"]["desired_capacity"].as_u64())?;
    Some(capacity as u32)
}

fn index_of(record: &Value) -> u64 {
    record["token"]["index"].as_u64().unwrap_or(u64::MAX)
}

impl Evidence {
    /// Every committed record known, by index: the sampler's and the final histories'.
    fn committed(&self) -> BTreeMap<u64, Value> {
        let mut all = self.seen.clone();
        for (_, records) in &self.histories {
            for r in records {
                all.entry(index_of(r)).or_insert_with(|| r.clone());
            }
        }
        all
    }

    /// Every broken invariant, said plainly; empty when all hold.
    pub fn violations(&self) -> Vec<String> {
        let mut v = self.seen_conflicts.clone();
        let committed = self.committed();
        self.no_decision_lost(&committed, &mut v);
        self.one_capacity_per_token(&committed, &mut v);
        self.actions_follow_decisions(&committed, &mut v);
        self.no_scale_down_inside_the_grace(&committed, &mut v);
        v
    }

    fn no_decision_lost(&self, committed: &BTreeMap<u64, Value>, v: &mut Vec<String>) {
        for (node, records) in &self.histories {
            let mine: BTreeMap<u64, &Value> = records.iter().map(|r| (index_of(r), r)).collect();
            // A node keeps the last HISTORY_LEN records: check from its oldest on.
            let Some(&oldest) = mine.keys().next() else {
                if !committed.is_empty() {
                    v.push(format!("{node} holds no committed record, {} were committed", committed.len()));
                }
                continue;
            };
            for (index, record) in committed.range(oldest..) {
                match mine.get(index) {
                    None => v.push(format!("{node} lost the record at index {index}: {record}")),
                    Some(r) if *r != record => {
                        v.push(format!("{node} holds {r} at index {index}, not {record}"))
                    }
                    Some(_) => {}
                }
            }
        }
    }

    fn one_capacity_per_token(&self, committed: &BTreeMap<u64, Value>, v: &mut Vec<String>) {
        let mut by_token: BTreeMap<(u64, u64), (u32, String)> = BTreeMap::new();
        let mut note = |token: (u64, u64), capacity: u32, source: String, v: &mut Vec<String>| match by_token
            .get(&token)
        {
            Some((c, first)) if *c != capacity => {
                v.push(format!("token {token:?} carries capacity {c} ({first}) and {capacity} ({source})"))
            }
            Some(_) => {}
            None => {
                by_token.insert(token, (capacity, source));
            }
        };
        for r in committed.values() {
            if let Some(c) = committed_capacity(r) {
                let token = (r["token"]["term"].as_u64().unwrap_or(0), index_of(r));
                note(token, c, "committed".into(), v);
            }
        }
        for a in self.actions.iter().filter(|a| !a.unilateral) {
            note((a.term, a.index), a.capacity, format!("{} ran {}", a.node, a.key), v);
        }
    }

    fn actions_follow_decisions(&self, committed: &BTreeMap<u64, Value>, v: &mut Vec<String>) {
        let mut unilateral_high = 0;
        for a in &self.actions {
            if a.unilateral {
                let role = self.roles.get(&a.node).map(String::as_str);
                if role != Some("witness") {
                    v.push(format!("{} ({role:?}) acted alone: {a:?}", a.node));
                }
                if a.capacity < unilateral_high || a.capacity == 0 {
                    v.push(format!("a unilateral action scaled down: {a:?}"));
                }
                unilateral_high = unilateral_high.max(a.capacity);
                continue;
            }
            let Some(r) = committed.get(&a.index) else {
                v.push(format!(
                    "{} acted on {} with no committed record at index {}",
                    a.node, a.key, a.index
                ));
                continue;
            };
            let term = r["token"]["term"].as_u64();
            if term != Some(a.term) || committed_capacity(r) != Some(a.capacity) {
                v.push(format!("{} acted on {a:?}, but index {} committed {r}", a.node, a.index));
            }
            let decided = r["command"]["decision"]["decided_at_ms"].as_u64().unwrap_or(0);
            if a.at_ms < decided {
                v.push(format!(
                    "{} acted on {} at {} ms, before it was decided at {decided} ms",
                    a.node, a.key, a.at_ms
                ));
            }
        }
    }

    fn no_scale_down_inside_the_grace(&self, committed: &BTreeMap<u64, Value>, v: &mut Vec<String>) {
        let grace = self.scale_down_after.as_millis() as u64;
        let mut in_force = 0u32;
        let mut recovering_since: Option<u64> = None;
        for r in committed.values() {
            let c = &r["command"];
            if let Some(capacity) = c["unilateral"]["desired_capacity"].as_u64() {
                in_force = in_force.max(capacity as u32);
                continue;
            }
            let d = &c["decision"];
            let (Some(capacity), Some(verdict), Some(at)) =
                (d["desired_capacity"].as_u64(), d["verdict"].as_str(), d["decided_at_ms"].as_u64())
            else {
                continue;
            };
            let capacity = capacity as u32;
            match verdict {
                "recovering" => {
                    recovering_since.get_or_insert(at);
                }
                "healthy" => {}
                _ => recovering_since = None,
            }
            if capacity < in_force {
                match recovering_since {
                    // Decision times are whole milliseconds, each rounded down: one ms of slack.
                    Some(since) if at.saturating_sub(since) + 1 >= grace => {}
                    Some(since) => v.push(format!(
                        "scaled {in_force} -> {capacity} at index {} only {} ms into recovery (grace {grace} ms)",
                        index_of(r),
                        at.saturating_sub(since)
                    )),
                    None => v.push(format!("scaled {in_force} -> {capacity} at index {} without a recovery", index_of(r))),
                }
            }
            if verdict == "healthy" {
                recovering_since = None;
            }
            in_force = capacity;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decision(term: u64, index: u64, verdict: &str, capacity: u32, at_ms: u64) -> Value {
        json!({"token": {"term": term, "index": index},
               "command": {"decision": {"verdict": verdict, "desired_capacity": capacity, "decided_at_ms": at_ms}}})
    }

    fn action(node: &str, term: u64, index: u64, capacity: u32, at_ms: u64) -> ActionRecord {
        ActionRecord::parse(&format!(
            "done {node} lab-{term}-{index} {term} {index} {capacity} down 0 {at_ms}"
        ))
        .expect("parse")
    }

    fn evidence(records: Vec<Value>, actions: Vec<ActionRecord>) -> Evidence {
        Evidence {
            histories: vec![("agent-1".into(), records.clone()), ("witness".into(), records)],
            seen: BTreeMap::new(),
            seen_conflicts: Vec::new(),
            actions,
            roles: [("agent-1".into(), "agent".into()), ("witness".into(), "witness".into())].into(),
            scale_down_after: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_clean_burst_and_recovery_holds() {
        let records = vec![
            decision(2, 5, "down", 2, 1_000),
            decision(2, 7, "recovering", 2, 5_000),
            decision(2, 9, "healthy", 0, 15_500),
        ];
        let actions = vec![action("agent-1", 2, 5, 2, 1_010), action("agent-1", 2, 9, 0, 15_600)];
        assert_eq!(evidence(records, actions).violations(), Vec::<String>::new());
    }

    #[test]
    fn each_broken_invariant_is_reported() {
        // Scale-down 4 s into recovery, an action with another capacity under a committed
        // token, an action with no committed record, and one acting before the decision.
        let records = vec![
            decision(2, 5, "down", 2, 1_000),
            decision(2, 7, "recovering", 2, 5_000),
            decision(2, 9, "healthy", 0, 9_000),
        ];
        let actions = vec![
            action("agent-1", 2, 5, 3, 1_010),
            action("agent-1", 3, 11, 1, 20_000),
            action("agent-1", 2, 7, 2, 4_000),
        ];
        let v = evidence(records.clone(), actions).violations();
        assert!(v.iter().any(|m| m.contains("only 4000 ms into recovery")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("carries capacity 2") && m.contains("and 3")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("no committed record at index 11")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("before it was decided")), "{v:?}");

        // A node that lost a record the sampler saw committed.
        let mut e = evidence(records.clone(), vec![]);
        e.seen = records.iter().map(|r| (index_of(r), r.clone())).collect();
        e.histories[1].1.remove(1);
        let v = e.violations();
        assert!(v.iter().any(|m| m.contains("witness lost the record at index 7")), "{v:?}");

        // An agent acting alone, and a unilateral scale-down.
        let mut alone = action("agent-1", 3, u64::MAX, 2, 1);
        alone.unilateral = true;
        let mut down = action("witness", 3, u64::MAX, 0, 2);
        down.unilateral = true;
        let v = evidence(vec![], vec![alone, down]).violations();
        assert!(v.iter().any(|m| m.contains("agent-1") && m.contains("acted alone")), "{v:?}");
        assert!(v.iter().any(|m| m.contains("unilateral action scaled down")), "{v:?}");
    }
}
