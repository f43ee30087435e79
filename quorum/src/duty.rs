//! The daemon's side of the burst duties: keep the latest observation of every member,
//! step the sans-IO [`Duties`] each tick, and carry out its effects (proposals through
//! the raft node, actions as tasks that a newer decision or a lost leadership cancels).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use sitewatch_proto::burst::{Action, Context, Duties, Effect, Standing, Unilateral};
use sitewatch_proto::observation::Observation;
use sitewatch_proto::state::{Command, FencingToken};
use sitewatch_proto::verdict::{AgentView, Evidence};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::actuator::{Actuator, Outcome};
use crate::config::{Config, Role};
use crate::kept::Kept;
use crate::node::Node;
use crate::notifier::{Event, EventKind, Notifier};
use crate::storage::LogStore;

/// Something that carries out an action: an actuator or a notifier.
pub trait Target: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Bring `action` about, retrying as the kind allows. Dropping the future cancels it.
    /// `Ok` carries a short human detail, `Err` the reason it failed.
    fn run(self: Arc<Self>, action: Action) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;
}

impl Target for Actuator {
    fn name(&self) -> &str {
        Actuator::name(self)
    }

    fn run(self: Arc<Self>, action: Action) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        Box::pin(async move {
            match self.apply(&action).await {
                Ok(
                    Outcome::Applied { detail }
                    | Outcome::AlreadyThere { detail }
                    | Outcome::Skipped { detail },
                ) => Ok(detail),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

impl Target for Notifier {
    fn name(&self) -> &str {
        Notifier::name(self)
    }

    fn run(self: Arc<Self>, action: Action) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> {
        Box::pin(async move {
            let event = event_for(&action);
            match self.notify(&event).await {
                Ok(()) => Ok(format!("sent: {}", event.title())),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// What people hear about a decision: the verdict changed, or else the capacity, or else
/// a spend alert; the witness's own scale-up is its own kind.
fn event_for(a: &Action) -> Event {
    let kind = if a.unilateral {
        EventKind::Unilateral
    } else if a.verdict != a.previous_verdict {
        EventKind::VerdictChanged
    } else if a.desired_capacity != a.previous_capacity {
        EventKind::BurstChanged
    } else {
        EventKind::SpendAlert { percent: u32::from(a.spend_level) }
    };
    Event {
        cluster_id: a.cluster_id.clone(),
        kind,
        verdict: a.verdict,
        previous_verdict: a.previous_verdict,
        desired_capacity: a.desired_capacity,
        previous_capacity: a.previous_capacity,
        reasons: a.reasons.clone(),
        token: (!a.unilateral).then_some(a.token),
        at_ms: a.decided_at_ms,
    }
}

/// Every configured actuator and notifier, secrets loaded; in config order, actuators
/// first (the capacity matters more than the message).
pub fn targets(config: &Config) -> anyhow::Result<Vec<Arc<dyn Target>>> {
    let mut out: Vec<Arc<dyn Target>> = Vec::new();
    for (i, c) in config.actuators.iter().enumerate() {
        let a = Actuator::from_config(c).with_context(|| format!("actuator[{i}] `{}`", c.name()))?;
        out.push(Arc::new(a));
    }
    for (i, c) in config.notifiers.iter().enumerate() {
        let n = Notifier::from_config(c).with_context(|| format!("notify[{i}] `{}`", c.name()))?;
        out.push(Arc::new(n));
    }
    Ok(out)
}

/// The end of one action, back to the raft loop.
#[derive(Debug)]
pub struct Finished {
    pub target: String,
    pub token: FencingToken,
    pub result: Result<String, String>,
    pub took: Duration,
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The wall clock at the monotonic instant `at` (taken earlier in this loop turn). A
/// decision's time must be the instant its judge reasoned about: read later (after an
/// fsync on a loaded host, say), a recovering decision's time came out a few ms late, and
/// the scale-down that followed exactly one grace after the judge's instant looked early.
fn unix_ms_at(at: Instant) -> u64 {
    unix_ms().saturating_sub(Instant::now().saturating_duration_since(at).as_millis() as u64)
}

/// The latest observation from each member and when it arrived.
#[derive(Default)]
pub struct ObservationBook {
    latest: HashMap<String, (Observation, Instant)>,
}

impl ObservationBook {
    /// Keep the latest arrival. A peer's observations come in order over its one TLS
    /// stream; a sequence check would wrongly drop a restarted agent's (its sequence
    /// starts again at 1) until it caught up with its old uptime.
    pub fn record(&mut self, observation: Observation, now: Instant) {
        self.latest.insert(observation.node.clone(), (observation, now));
    }

    pub fn get(&self, node: &str) -> Option<&(Observation, Instant)> {
        self.latest.get(node)
    }

    /// When any agent was last heard.
    fn newest_agent(&self, config: &Config) -> Option<Instant> {
        config
            .members
            .iter()
            .filter(|m| m.role == Role::Agent)
            .filter_map(|m| self.get(&m.name).map(|(_, at)| *at))
            .max()
    }
}

pub struct DutyRunner {
    duties: Duties,
    book: ObservationBook,
    targets: Vec<Arc<dyn Target>>,
    target_names: Vec<String>,
    /// target -> the decision its task acts on, and how to stop it.
    running: HashMap<String, (FencingToken, CancellationToken)>,
    finished_tx: mpsc::Sender<Finished>,
    tracker: TaskTracker,
    started: Instant,
    failures: BTreeMap<String, u64>,
    /// The witness's dark-site scale-up, on disk until a quorum commits it, and what the
    /// file holds now.
    unilateral_file: Kept,
    unilateral_kept: Option<Unilateral>,
}

impl DutyRunner {
    pub fn new(
        targets: Vec<Arc<dyn Target>>,
        finished_tx: mpsc::Sender<Finished>,
        tracker: TaskTracker,
        started: Instant,
        data_dir: &Path,
    ) -> DutyRunner {
        let target_names = targets.iter().map(|t| t.name().to_owned()).collect();
        let unilateral_file = Kept::at(data_dir.join("unilateral.json"));
        let unilateral_kept: Option<Unilateral> = unilateral_file.load();
        let mut duties = Duties::default();
        if let Some(u) = unilateral_kept {
            info!(
                capacity = u.capacity,
                at_ms = u.at_ms,
                "dark site: found this witness's own scale-up, to hand to the quorum"
            );
            duties.restore_unilateral(u);
        }
        DutyRunner {
            duties,
            book: ObservationBook::default(),
            targets,
            target_names,
            running: HashMap::new(),
            finished_tx,
            tracker,
            started,
            failures: BTreeMap::new(),
            unilateral_file,
            unilateral_kept,
        }
    }

    /// Bring the file in line with the duties' unilateral record, before any action for
    /// it starts: a witness killed after scaling up alone must still hand it to the
    /// returning quorum, which otherwise would never give that capacity back.
    fn keep_unilateral(&mut self) {
        let now = self.duties.unilateral();
        if now == self.unilateral_kept {
            return;
        }
        let kept = match now {
            Some(u) => self.unilateral_file.save(&u),
            None => self.unilateral_file.remove(),
        };
        match kept {
            Ok(()) => self.unilateral_kept = now,
            Err(e) => warn!(
                path = %self.unilateral_file.path().display(),
                error = %e,
                "cannot keep the witness's own scale-up across a restart"
            ),
        }
    }

    /// Failed actions since start, per target.
    pub fn failures(&self) -> &BTreeMap<String, u64> {
        &self.failures
    }

    pub fn book(&self) -> &ObservationBook {
        &self.book
    }

    pub fn duties(&self) -> &Duties {
        &self.duties
    }

    pub fn record(&mut self, observation: Observation, now: Instant) {
        self.book.record(observation, now);
    }

    /// Judge, and do what the duties say.
    pub fn step<S: LogStore>(&mut self, config: &Config, node: &mut Node<S>, now: Instant) {
        let status = node.status();
        let agents: Vec<AgentView<'_>> = config
            .members
            .iter()
            .filter(|m| m.role == Role::Agent)
            .map(|m| AgentView {
                name: &m.name,
                latest: self.book.get(&m.name).map(|(o, at)| (o, now.saturating_duration_since(*at))),
            })
            .collect();
        let witnesses = config
            .members
            .iter()
            .filter(|m| m.role == Role::Witness)
            .map(|m| (m.name.as_str(), self.book.get(&m.name).map(|(o, _)| o)))
            .collect();
        let listening_for = now.saturating_duration_since(self.started);
        let evidence = Evidence { agents, witnesses, listening_for };
        let me = config.me();
        let silent_since = self.book.newest_agent(config).unwrap_or(self.started);
        let standing = Standing {
            leader: node.is_leader(),
            term: status.term,
            leader_known: status.leader != raft::INVALID_ID,
            witness: me.role == Role::Witness,
            agents_silent_for: Some(now.saturating_duration_since(silent_since)),
        };
        let ctx = Context {
            policy: &config.policy,
            cluster_id: &config.cluster_id,
            node: &me.name,
            targets: &self.target_names,
            now: listening_for,
            now_unix_ms: unix_ms_at(now),
        };
        let effects = self.duties.step(&ctx, &evidence, node.state(), standing);
        self.keep_unilateral();
        for effect in effects {
            match effect {
                Effect::Propose(command) => propose(node, &command),
                Effect::Start { target, action } => self.start(&target, action),
                Effect::Cancel { target } => {
                    if let Some((_, cancel)) = self.running.remove(&target) {
                        info!(target = %target, "action cancelled: this node no longer leads");
                        cancel.cancel();
                    }
                }
                Effect::Withheld { reason } => {
                    warn!(reason = %reason, "dark site: the witness does not scale up alone");
                }
            }
        }
    }

    fn start(&mut self, name: &str, action: Action) {
        let Some(target) = self.targets.iter().find(|t| t.name() == name).cloned() else { return };
        if let Some((_, old)) = self.running.remove(name) {
            info!(target = %name, "action superseded by a newer decision");
            old.cancel();
        }
        let cancel = CancellationToken::new();
        self.running.insert(name.to_owned(), (action.token, cancel.clone()));
        let tx = self.finished_tx.clone();
        let name = name.to_owned();
        info!(
            target = %name, term = action.token.term, index = action.token.index,
            key = %action.idempotency_key, verdict = %action.verdict,
            desired_capacity = action.desired_capacity, unilateral = action.unilateral, "action started"
        );
        let span = info_span!("action", target = %name, key = %action.idempotency_key);
        let token = action.token;
        self.tracker.spawn(
            async move {
                let begun = Instant::now();
                let result = if action.dry_run {
                    // A drill that is not live: say what would happen, touch nothing.
                    Ok(format!(
                        "drill, dry run: would set capacity {} -> {} (site {})",
                        action.previous_capacity, action.desired_capacity, action.verdict
                    ))
                } else {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = target.run(action) => r,
                    }
                };
                let _ = tx.send(Finished { target: name, token, result, took: begun.elapsed() }).await;
            }
            .instrument(span),
        );
    }

    /// An action ended: log it and commit its result if this node still leads.
    pub fn finished<S: LogStore>(&mut self, node: &mut Node<S>, done: Finished, now: Instant) {
        match &done.result {
            Ok(detail) => info!(
                target = %done.target, term = done.token.term, index = done.token.index,
                took_ms = done.took.as_millis() as u64, detail = %detail, "action done"
            ),
            Err(why) => warn!(
                target = %done.target, term = done.token.term, index = done.token.index,
                took_ms = done.took.as_millis() as u64, error = %why, "action failed"
            ),
        }
        let (ok, detail) = match done.result {
            Ok(d) => (true, d),
            Err(e) => {
                *self.failures.entry(done.target.clone()).or_default() += 1;
                (false, e)
            }
        };
        let at = now.saturating_duration_since(self.started);
        if self.running.get(&done.target).is_some_and(|(token, _)| *token == done.token) {
            self.running.remove(&done.target);
        }
        if let Some(command) = self.duties.finished(&done.target, done.token, ok, detail, at, unix_ms()) {
            propose(node, &command);
        }
    }
}

fn propose<S: LogStore>(node: &mut Node<S>, command: &Command) {
    if let Err(e) = node.propose(command) {
        warn!(error = %e, "proposal not accepted; the duties try again");
    }
}
