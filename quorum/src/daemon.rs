//! The daemon both binaries run: open storage, start the transport and the status
//! socket, then drive the raft node from one task until told to stop.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use raft::StateRole;
use sitewatch_proto::Verdict;
use sitewatch_proto::observation::{Observation, PeerLink};
use sitewatch_proto::state::{Applied, Command};
use sitewatch_proto::ups::Power;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::{Config, Role};
use crate::duty::{self, DutyRunner, Finished};
use crate::node::{Node, NodeSettings, NodeStatus};
use crate::notify::Notifier;
use crate::status::{self, BurstInfo, Heard, NodeInfo, QuorumInfo, RaftInfo, SiteInfo, StatusReport};
use crate::storage::{LogStore, RedbStore};
use crate::tls::TlsIdentity;
use crate::transport::{Inbound, PeerStatus, Transport};
use crate::{logging, metrics, node};

/// How long shutdown waits for tasks to finish before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const INBOUND_QUEUE: usize = 1024;

/// Raft settings for this node from its config.
pub fn node_settings(config: &Config) -> NodeSettings {
    let me = config.me();
    NodeSettings {
        id: me.id,
        voters: config.members.iter().filter(|m| m.voter).map(|m| m.id).collect(),
        learners: config.members.iter().filter(|m| !m.voter).map(|m| m.id).collect(),
        heartbeat_ticks: config.timing.heartbeat_ticks,
        election_ticks: config.timing.election_ticks,
        priority: match me.role {
            Role::Agent => 2,
            Role::Witness => 1,
        },
        snapshot_every: config.timing.snapshot_every,
    }
}

/// Starts what a daemon runs beside its raft node (the agent's sensors) inside the
/// runtime, and hands back its observations; the witness observes nothing.
pub type StartLocal = fn(&Config, CancellationToken) -> anyhow::Result<Option<watch::Receiver<Observation>>>;

/// The whole `main` of `sitewatch-agent` and `sitewatch-witness`.
pub fn main_for(role: Role, config_path: &Path, start_local: StartLocal) -> ExitCode {
    logging::init("info,raft=warn");
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match daemon_runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cancel = CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = cancel.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("stopping on signal");
            signals.cancel();
        });
        let local = start_local(&config, cancel.clone()).context("starting the sensors")?;
        run(config, role, local, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Two workers: the raft loop's fsyncs (see `raft_loop`) run in place on one while the
/// other keeps pings, probes and the status socket moving. A 1 GB homelab box's SD card
/// can take 100 ms to sync; nothing else should wait for it.
pub fn daemon_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Run a member until `cancel`. Fails on anything that makes it unsafe to go on
/// (storage errors above all): systemd restarts it and it recovers from disk.
pub async fn run(
    config: Config,
    role: Role,
    local: Option<watch::Receiver<Observation>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let me = config.me().clone();
    if me.role != role {
        bail!(
            "`{}` is a {} in the member list; this binary runs a {role} (use sitewatch-{})",
            me.name,
            me.role,
            me.role
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let store_path = config.data_dir.join("raft.redb");
    let store = RedbStore::open(&store_path)?;
    let node = Node::open(node_settings(&config), store, rand::random(), &logging::raft_logger())
        .with_context(|| format!("opening raft state in {}", store_path.display()))?;
    let tls = TlsIdentity::load(&config.tls, &me.name)?;
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let (transport, bound) =
        Transport::start(config.clone(), tls, inbound_tx, tracker.clone(), cancel.clone())
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
    let started = Instant::now();
    let (report_tx, report_rx) =
        watch::channel(report(&config, &node, transport.peers(), started, None, None, 0));
    let mut publisher = Publisher {
        reports: report_tx,
        started,
        notifier: Notifier::from_env(),
        local,
        own: None,
        witness_seq: 0,
        last_observed: None,
        leader_changes: 0,
    };
    let (history_tx, history_rx) = watch::channel(Arc::new(history(&node)));
    let (control_tx, control_rx) = mpsc::channel(8);
    let sources = status::Sources { reports: report_rx, history: history_rx, control: control_tx };
    status::serve(&config.status_socket, sources, &tracker, cancel.clone())
        .with_context(|| format!("status socket {}", config.status_socket.display()))?;
    if let Some(addr) = config.metrics_listen {
        metrics::serve(addr, publisher.reports.subscribe(), &tracker, cancel.clone())
            .await
            .with_context(|| format!("metrics on {addr}"))?;
    }
    let st = node.status();
    info!(
        node = %me.name, role = %me.role, listen = %bound, term = st.term, commit = st.commit,
        applied = st.applied, "started"
    );
    // Storage is open and the socket is bound: systemd may now start what depends on us.
    publisher.notifier.ready();
    let (finished_tx, finished_rx) = mpsc::channel(64);
    let duties =
        DutyRunner::new(duty::targets(&config)?, finished_tx, tracker.clone(), started, &config.data_dir);
    let channels =
        Channels { inbound: inbound_rx, finished: finished_rx, control: control_rx, history: history_tx };
    let result = raft_loop(node, &config, transport, channels, duties, &mut publisher, cancel.clone())
        .instrument(info_span!("raft", node = %me.name))
        .await;
    publisher.notifier.stopping();
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
        warn!("some tasks did not stop within the grace period");
    }
    info!("stopped");
    result
}

/// What the raft loop hears besides its clock.
struct Channels {
    inbound: mpsc::Receiver<Inbound>,
    finished: mpsc::Receiver<Finished>,
    /// Changes asked for on the status socket (hold, release).
    control: mpsc::Receiver<status::Control>,
    history: watch::Sender<Arc<status::History>>,
}

async fn raft_loop<S: LogStore>(
    mut node: Node<S>,
    config: &Config,
    transport: Transport,
    mut channels: Channels,
    mut duties: DutyRunner,
    publisher: &mut Publisher,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = interval(config.timing.tick);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = node.status();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            now = tick.tick() => {
                node.tick();
                if let Some(own) = publisher.observe(config, &transport, now) {
                    transport.send_observation(&own);
                    duties.record(own, now);
                }
                duties.step(config, &mut node, now);
                publisher.publish(config, &node, &transport, &duties, now);
            }
            Some(inbound) = channels.inbound.recv() => match inbound {
                Inbound::Raft(m) => {
                    if let Err(e) = node.step(m) {
                        warn!(error = %e, "raft refused a message");
                    }
                }
                Inbound::Observation(o) => duties.record(*o, Instant::now()),
            },
            Some(done) = channels.finished.recv() => duties.finished(&mut node, done, Instant::now()),
            Some(control) = channels.control.recv() => {
                let reply = match node.propose(&control.command) {
                    Ok(()) => status::ControlReply { accepted: true, message: "proposed to the quorum".into() },
                    Err(e) => status::ControlReply { accepted: false, message: format!("not proposed: {e}") },
                };
                info!(command = ?control.command, accepted = reply.accepted, "operator request");
                let _ = control.reply.send(reply);
            }
        }
        while node.has_ready() {
            advance(&mut node, config, &transport, &channels.history, &mut duties, publisher, &mut last)?;
        }
    }
}

/// Persist what raft has ready, send its messages, apply what is committed, and act on it.
fn advance<S: LogStore>(
    node: &mut Node<S>,
    config: &Config,
    transport: &Transport,
    history_tx: &watch::Sender<Arc<status::History>>,
    duties: &mut DutyRunner,
    publisher: &mut Publisher,
    last: &mut NodeStatus,
) -> anyhow::Result<()> {
    let site_before = (node.state().verdict, node.state().desired_capacity);
    // advance() may fsync: tell the runtime, so other tasks move to the other worker.
    let out = tokio::task::block_in_place(|| node.advance()).context("persisting raft state")?;
    for m in &out.messages {
        let delivered = transport.send(m);
        node.report_delivery(m, delivered);
    }
    let mut site = site_before;
    for applied in &out.applied {
        log_applied(applied, &mut site);
    }
    if !out.applied.is_empty() || out.installed_snapshot {
        history_tx.send_replace(Arc::new(history(node)));
        // The status shows a commit before anything acts on it (a reader that sees an
        // action's effect finds its decision there); then the committed decision is acted
        // on at once, not at the next tick.
        publisher.publish(config, node, transport, duties, Instant::now());
        duties.step(config, node, Instant::now());
    }
    if out.installed_snapshot {
        info!(applied = node.status().applied, "installed a snapshot from the leader");
    }
    let now = node.status();
    if now.leader != last.leader {
        publisher.leader_changes += 1;
    }
    log_leadership(config, last, &now);
    *last = now;
    Ok(())
}

fn history<S: LogStore>(node: &Node<S>) -> status::History {
    status::History { records: node.state().history.iter().cloned().collect() }
}

/// `site` is the (verdict, capacity) in force before `applied`; it moves along.
fn log_applied(applied: &Applied, site: &mut (Verdict, u32)) {
    match applied {
        Applied::Nothing => {}
        Applied::Command(rec) => {
            let (term, index) = (rec.token.term, rec.token.index);
            match &rec.command {
                Command::Decision(d) => {
                    info!(
                        term, index, verdict = %d.verdict, desired_capacity = d.desired_capacity,
                        reasons = %d.reasons.join(","), "committed decision applied"
                    );
                    // One greppable line per change that matters to an operator.
                    if d.verdict != site.0 {
                        warn!(term, index, verdict = %d.verdict, previous = %site.0, reasons = %d.reasons.join(","), "verdict changed");
                    }
                    if d.desired_capacity != site.1 {
                        warn!(
                            term,
                            index,
                            desired_capacity = d.desired_capacity,
                            previous = site.1,
                            "burst changed"
                        );
                    }
                    *site = (d.verdict, d.desired_capacity);
                }
                Command::Hold { on, by, .. } => {
                    info!(term, index, hold = on, by = %by, "committed decision applied: operator hold")
                }
                Command::Drill { on, live, by, .. } => {
                    warn!(term, index, drill = on, live, by = %by, "committed decision applied: failover drill")
                }
                Command::Unilateral { desired_capacity, by, .. } => info!(
                    term, index, desired_capacity, by = %by, "committed decision applied: the witness's dark-site scale-up"
                ),
                Command::ActionResult(r) => info!(
                    term, index, target = %r.target, ok = r.ok, acted_on = r.token.index, detail = %r.detail,
                    "action result committed"
                ),
            }
        }
        Applied::Undecodable { token, error } => {
            error!(term = token.term, index = token.index, error = %error, "committed entry cannot be read; skipped on every node");
        }
    }
}

/// One greppable line per leadership change.
fn log_leadership(config: &Config, before: &NodeStatus, now: &NodeStatus) {
    if before.leader == now.leader && before.term == now.term && before.role == now.role {
        return;
    }
    if before.leader == now.leader && now.role != StateRole::Leader && before.role != StateRole::Leader {
        return; // candidate/follower churn inside the same leaderless stretch
    }
    let name = |id: u64| config.member_by_id(id).map_or_else(|| "none".to_string(), |m| m.name.clone());
    if now.leader == raft::INVALID_ID {
        warn!(term = now.term, previous_leader = %name(before.leader), "leadership changed: no leader, not quorate");
    } else {
        info!(term = now.term, leader = %name(now.leader), role = %role_name(now.role), "leadership changed");
    }
}

/// Where the node's state goes out every tick: the status socket's report, and
/// systemd's STATUS= line and watchdog. It also assembles this node's own observation.
struct Publisher {
    reports: watch::Sender<StatusReport>,
    started: Instant,
    notifier: Notifier,
    /// The agent's sensors; `None` on the witness, which observes only its links.
    local: Option<watch::Receiver<Observation>>,
    /// This node's latest observation, with its cluster links filled in.
    own: Option<Observation>,
    witness_seq: u64,
    last_observed: Option<Instant>,
    leader_changes: u64,
}

impl Publisher {
    /// This node's next observation, when one is due: an agent's as its sensors publish
    /// it, a witness's (its links only) every observe interval.
    fn observe(&mut self, config: &Config, transport: &Transport, now: Instant) -> Option<Observation> {
        let mut o = match &mut self.local {
            Some(rx) => {
                if !rx.has_changed().unwrap_or(false) && self.own.is_some() {
                    return None;
                }
                rx.borrow_and_update().clone()
            }
            None => {
                if self
                    .last_observed
                    .is_some_and(|at| now.duration_since(at) < config.timing.observe_interval)
                {
                    return None;
                }
                self.witness_seq += 1;
                Observation {
                    node: config.node.clone(),
                    seq: self.witness_seq,
                    taken_at_unix_ms: duty::unix_ms(),
                    clock_ms: now.duration_since(self.started).as_millis() as u64,
                    host: Default::default(),
                    ups: Vec::new(),
                    power: Power::Unknown,
                    power_for_ms: 0,
                    battery: None,
                    probes: Vec::new(),
                    peers: Vec::new(),
                }
            }
        };
        self.last_observed = Some(now);
        // Only the links the verdict judges: an agent's to each witness, a witness's to each
        // agent. Every member's links to every other would grow each observation with the
        // site, and every voter receives one from each agent each second: traffic with the
        // square of the site (87 KB/s through the witness at 33 agents).
        let me = config.me().role;
        o.peers = transport
            .peers()
            .iter()
            .filter(|p| p.role != me)
            .map(|p| PeerLink {
                name: p.name.clone(),
                connected: p.connected,
                link: p.link.clone(),
                last_contact_ms: p.last_contact_ms,
            })
            .collect();
        self.own = Some(o.clone());
        Some(o)
    }

    fn publish<S: LogStore>(
        &mut self,
        config: &Config,
        node: &Node<S>,
        transport: &Transport,
        duties: &DutyRunner,
        now: Instant,
    ) {
        let observation = self.local.is_some().then(|| self.own.clone()).flatten();
        let report = report(
            config,
            node,
            transport.peers(),
            self.started,
            observation,
            Some(duties),
            self.leader_changes,
        );
        self.notifier.status(&status_line(&report));
        // Petted from the raft loop itself: if this loop wedges, systemd restarts us.
        self.notifier.pet(now);
        self.reports.send_replace(report);
    }
}

/// The one line `systemctl status` shows.
fn status_line(r: &StatusReport) -> String {
    let quorum = match &r.raft.leader_name {
        Some(leader) => format!("leader {leader} (term {})", r.raft.term),
        None => format!("NO LEADER (term {})", r.raft.term),
    };
    format!(
        "{quorum}, voters reachable {}/{}; verdict {}, desired capacity {}",
        r.quorum.voters_reachable, r.quorum.voters, r.site.verdict, r.site.desired_capacity
    )
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre-candidate",
    }
}

fn report<S: LogStore>(
    config: &Config,
    node: &Node<S>,
    peers: Vec<PeerStatus>,
    started: Instant,
    observation: Option<Observation>,
    duties: Option<&DutyRunner>,
    leader_changes: u64,
) -> StatusReport {
    let me = config.me();
    let st: node::NodeStatus = node.status();
    let voters = config.members.iter().filter(|m| m.voter).count();
    let voters_reachable = usize::from(me.voter) + peers.iter().filter(|p| p.voter && p.connected).count();
    let leader = (st.leader != raft::INVALID_ID).then_some(st.leader);
    let state = node.state();
    StatusReport {
        schema_version: status::SCHEMA_VERSION,
        cluster_id: config.cluster_id.clone(),
        node: NodeInfo {
            name: me.name.clone(),
            id: me.id,
            role: me.role,
            voter: me.voter,
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: started.elapsed().as_secs(),
        },
        raft: RaftInfo {
            state: role_name(st.role).to_string(),
            term: st.term,
            leader_id: leader,
            leader_name: leader.and_then(|id| config.member_by_id(id)).map(|m| m.name.clone()),
            commit: st.commit,
            applied: st.applied,
            last_index: st.last_index,
            leader_changes,
        },
        quorum: QuorumInfo { quorate: leader.is_some(), voters, voters_reachable },
        site: SiteInfo {
            verdict: state.verdict,
            desired_capacity: state.desired_capacity,
            reasons: state.reasons.clone(),
            decision: state.decision,
            hold: state.hold,
            decided_at_ms: state.decided_at_ms,
            previous_verdict: state.previous_verdict,
            previous_capacity: state.previous_capacity,
            evidence: state.evidence.clone(),
            actions: state.actions.clone(),
            spend_level: state.spend_level,
            instance_hours_this_month: state.spend.instance_ms_at(duty::unix_ms()) as f64 / 3_600_000.0,
            drill: state.drill.clone(),
            dry_run_decision: state.dry_run_decision,
        },
        peers,
        observation,
        burst: duties.map(|d| burst_info(config, d)).unwrap_or_default(),
    }
}

fn burst_info(config: &Config, d: &DutyRunner) -> BurstInfo {
    let now = Instant::now();
    BurstInfo {
        assessment: d.duties().assessment().cloned(),
        running: d.duties().running().map(|(t, k)| (t.clone(), *k)).collect(),
        unilateral_capacity: d.duties().unilateral().map(|u| u.capacity),
        failures: d.failures().clone(),
        heard: config
            .members
            .iter()
            .filter(|m| m.name != config.node)
            .map(|m| Heard {
                name: m.name.clone(),
                age_ms: d.book().get(&m.name).map(|(_, at)| now.duration_since(*at).as_millis() as u64),
            })
            .collect(),
    }
}
