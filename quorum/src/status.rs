//! The local status socket: a Unix socket under the runtime directory (mode 0660) that
//! answers one length-prefixed JSON request with one length-prefixed JSON report. It
//! answers from the node's own view, quorum or not.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use sitewatch_proto::observation::Observation;
use sitewatch_proto::state::{ActionResult, Command, DecisionRecord, DrillState};
use sitewatch_proto::verdict::{Assessment, HostEvidence};
use sitewatch_proto::{FencingToken, Verdict};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;
use tokio_serde::formats::SymmetricalJson;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clients::{Limits, serve_bounded};
use crate::config::Role;
use crate::transport::PeerStatus;

/// Bumped when a field changes meaning or disappears; new fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;
const MAX_REQUEST: usize = 64 * 1024;
const MAX_REPORT: usize = 4 * 1024 * 1024;
const MAX_CLIENTS: usize = 16;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "query", rename_all = "kebab-case")]
pub enum Request {
    /// Answered with a [`StatusReport`].
    Status,
    /// Answered with the committed decisions this node holds ([`History`]).
    History,
    /// Maintenance mode on or off, proposed through the quorum; answered with a
    /// [`ControlReply`] once proposed (the caller watches the status for the commit).
    Hold { on: bool, by: String },
    /// Start or end the failover drill, proposed through the quorum; answered with a
    /// [`ControlReply`].
    Drill { on: bool, live: bool, by: String },
}

/// The committed decisions a node keeps, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    pub records: Vec<DecisionRecord>,
}

/// The answer to a request that changes something.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlReply {
    pub accepted: bool,
    pub message: String,
}

/// A change asked for on the socket, for the raft loop to propose.
#[derive(Debug)]
pub struct Control {
    pub command: Command,
    pub reply: oneshot::Sender<ControlReply>,
}

/// What the socket answers from.
#[derive(Clone)]
pub struct Sources {
    pub reports: watch::Receiver<StatusReport>,
    pub history: watch::Receiver<Arc<History>>,
    pub control: mpsc::Sender<Control>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub schema_version: u32,
    pub cluster_id: String,
    pub node: NodeInfo,
    pub raft: RaftInfo,
    pub quorum: QuorumInfo,
    pub site: SiteInfo,
    pub peers: Vec<PeerStatus>,
    /// This agent's latest observation of its own site; none on a witness.
    pub observation: Option<Observation>,
    #[serde(default)]
    pub burst: BurstInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub id: u64,
    pub role: Role,
    pub voter: bool,
    pub version: String,
    pub uptime_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftInfo {
    /// leader, follower, candidate or pre-candidate.
    pub state: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub leader_name: Option<String>,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    /// Leadership changes this node saw since it started.
    #[serde(default)]
    pub leader_changes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuorumInfo {
    /// A leader is known in the current term: the cluster can commit decisions.
    pub quorate: bool,
    pub voters: usize,
    /// Voters this node can reach, itself included.
    pub voters_reachable: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteInfo {
    pub verdict: Verdict,
    pub desired_capacity: u32,
    pub reasons: Vec<String>,
    /// The committed entry behind the verdict in force.
    pub decision: Option<FencingToken>,
    pub hold: bool,
    /// When the decision in force was made (unix ms), and what it replaced.
    #[serde(default)]
    pub decided_at_ms: u64,
    #[serde(default)]
    pub previous_verdict: Verdict,
    #[serde(default)]
    pub previous_capacity: u32,
    /// Each agent's condition behind the decision in force.
    #[serde(default)]
    pub evidence: Vec<HostEvidence>,
    /// The latest committed result of each actuator and notifier.
    #[serde(default)]
    pub actions: BTreeMap<String, ActionResult>,
    #[serde(default)]
    pub spend_level: u8,
    /// Burst instance-hours this calendar month (UTC), from committed decisions.
    #[serde(default)]
    pub instance_hours_this_month: f64,
    /// A failover drill in progress.
    #[serde(default)]
    pub drill: Option<DrillState>,
    /// The decision in force belongs to a dry drill: its actions were dry runs.
    #[serde(default)]
    pub dry_run_decision: bool,
}

/// This node's own judgement right now (every voter judges; the leader proposes), and
/// what it is doing about it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BurstInfo {
    /// What this node would decide now; `None` before its first judgement.
    pub assessment: Option<Assessment>,
    /// Actions this node runs now: target and the decision's (term, index).
    pub running: Vec<(String, FencingToken)>,
    /// Capacity this witness raised on its own while the site was dark, not yet committed.
    pub unilateral_capacity: Option<u32>,
    /// When each member's latest observation arrived here, ms ago.
    pub heard: Vec<Heard>,
    /// Failed actions on this node since it started, per actuator or notifier.
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heard {
    pub name: String,
    pub age_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot reach the daemon at {path}: {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("status socket {path}: {detail}")]
    Protocol { path: PathBuf, detail: String },
}

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(4).max_frame_length(max).new_codec()
}

/// Bind the socket and answer clients until `cancel`.
pub fn serve(
    path: &Path,
    sources: Sources,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A stale socket from a killed daemon would make bind fail; a live one belongs to
    // another daemon, whose socket we must not take.
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another daemon answers on this socket (set `status-socket` to tell them apart)",
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let path = path.to_owned();
    serve_bounded(
        listener,
        Limits { what: "status socket", max_clients: MAX_CLIENTS, deadline: CLIENT_TIMEOUT },
        tracker,
        cancel,
        move |stream| answer(stream, sources.clone()),
        move || {
            let _ = std::fs::remove_file(&path);
        },
    );
    Ok(())
}

async fn answer(stream: UnixStream, sources: Sources) -> Result<(), String> {
    let (read, write) = stream.into_split();
    let mut requests = tokio_serde::SymmetricallyFramed::new(
        tokio_util::codec::FramedRead::new(read, codec(MAX_REQUEST)),
        SymmetricalJson::<Request>::default(),
    );
    let mut replies = tokio_serde::SymmetricallyFramed::new(
        tokio_util::codec::FramedWrite::new(write, codec(MAX_REPORT)),
        SymmetricalJson::<serde_json::Value>::default(),
    );
    while let Some(req) = requests.next().await {
        let reply = match req.map_err(|e| format!("bad request: {e}"))? {
            Request::Status => serde_json::to_value(&*sources.reports.borrow()),
            Request::History => serde_json::to_value(&**sources.history.borrow()),
            Request::Hold { on, by } => {
                let by = operator_name(&by);
                serde_json::to_value(control(&sources, Command::Hold { on, by, at_ms: unix_ms() }).await)
            }
            Request::Drill { on, live, by } => {
                let by = operator_name(&by);
                serde_json::to_value(
                    control(&sources, Command::Drill { on, live, by, at_ms: unix_ms() }).await,
                )
            }
        };
        replies.send(reply.map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The name that goes into the log: printable, at most 64 characters.
fn operator_name(by: &str) -> String {
    by.chars().filter(|c| !c.is_control()).take(64).collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Hand a change to the raft loop and wait for its word on the proposal.
async fn control(sources: &Sources, command: Command) -> ControlReply {
    let stopping = || ControlReply { accepted: false, message: "daemon stopping".into() };
    let (tx, rx) = oneshot::channel();
    match sources.control.send(Control { command, reply: tx }).await {
        Ok(()) => rx.await.unwrap_or_else(|_| stopping()),
        Err(_) => stopping(),
    }
}

/// Send one request to the daemon behind `path` and decode its answer.
pub async fn ask<T: serde::de::DeserializeOwned + Unpin>(
    path: &Path,
    request: Request,
) -> Result<T, StatusError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| StatusError::Connect { path: path.to_owned(), source })?;
    let protocol = |detail: String| StatusError::Protocol { path: path.to_owned(), detail };
    let framed = Framed::new(stream, codec(MAX_REPORT));
    let mut conn = tokio_serde::Framed::new(framed, tokio_serde::formats::Json::<T, Request>::default());
    timeout(CLIENT_TIMEOUT, async {
        conn.send(request).await.map_err(|e| protocol(e.to_string()))?;
        match conn.next().await {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(protocol(format!("unreadable answer: {e}"))),
            None => Err(protocol("closed without an answer".into())),
        }
    })
    .await
    .map_err(|_| protocol("no answer within 5 s".into()))?
}

/// Ask the daemon behind `path` for its status.
pub async fn query(path: &Path) -> Result<StatusReport, StatusError> {
    ask(path, Request::Status).await
}
