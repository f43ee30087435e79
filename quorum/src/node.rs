//! One raft member: raft-rs's RawNode, its durable store and the replicated site state,
//! driven by whoever owns it (the tokio runtime in production, the simulation in tests).
//!
//! Nothing here does IO beyond the [`LogStore`] writes: the caller delivers messages,
//! calls [`Node::tick`] on its clock, and after every input calls [`Node::advance`],
//! which persists what raft needs persisted and only then hands back the messages to
//! send and the entries newly applied to the site state.

use raft::prelude::{ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sitewatch_proto::state::Applied;
use sitewatch_proto::{Command, FencingToken, SiteState};

use crate::storage::{LogCache, LogStore, Persisted, SnapshotWrite, StoreError, WriteBatch};

/// What a node needs to know about itself and the cluster.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub id: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub heartbeat_ticks: usize,
    pub election_ticks: usize,
    /// Higher wins a tie: with equal logs, a voter refuses a candidate of lower
    /// priority. Agents get a higher one than the witness, so the witness leads only
    /// when no agent can.
    pub priority: i64,
    pub snapshot_every: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error(
        "the stored membership {stored:?} differs from the configured one {configured:?}; membership changes are not supported: restore the old member list or start from an empty data directory"
    )]
    MembershipChanged { stored: Vec<u64>, configured: Vec<u64> },
    #[error("site-state snapshot at index {index} cannot be read: {error}")]
    Snapshot { index: u64, error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("no leader is known: the proposal would be dropped")]
    NoLeader,
    #[error("cannot encode the command: {0}")]
    Encode(String),
    #[error("raft refused the proposal: {0}")]
    Raft(#[from] raft::Error),
}

/// A node's view of itself, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: u64,
    pub role: StateRole,
    pub term: u64,
    /// 0 when no leader is known.
    pub leader: u64,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
}

/// What one [`Node::advance`] produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send; storage they depend on is already durable.
    pub messages: Vec<Message>,
    /// Committed entries applied to the site state, in log order.
    pub applied: Vec<Applied>,
    /// The site state was replaced by a snapshot from the leader.
    pub installed_snapshot: bool,
}

pub struct Node<S: LogStore> {
    raw: RawNode<LogCache>,
    store: S,
    state: SiteState,
    settings: NodeSettings,
    /// raft-rs draws election timeouts from the thread RNG; we overwrite each draw with
    /// one from this seeded RNG, so a simulation seed replays exactly.
    rng: ChaCha8Rng,
}

impl<S: LogStore> Node<S> {
    /// Open a node on `store`, restoring everything it had persisted. An empty store is
    /// bootstrapped with the configured membership.
    pub fn open(
        settings: NodeSettings,
        mut store: S,
        seed: u64,
        logger: &slog::Logger,
    ) -> Result<Self, NodeError> {
        let mut persisted = store.load()?;
        let configured = ConfState {
            voters: sorted(&settings.voters),
            learners: sorted(&settings.learners),
            ..Default::default()
        };
        if persisted.is_empty() && persisted.conf_state == ConfState::default() {
            // Term 1, not 0: raft-rs 0.7 panics when a node at term 0 rejects a pre-vote
            // (it does when a lower-priority witness campaigns first).
            let hard_state = HardState { term: 1, ..Default::default() };
            let batch = WriteBatch {
                conf_state: Some(configured.clone()),
                hard_state: Some(hard_state.clone()),
                ..Default::default()
            };
            store.write(&batch)?;
            persisted.conf_state = configured.clone();
            persisted.hard_state = hard_state;
        }
        let stored = ConfState {
            voters: sorted(&persisted.conf_state.voters),
            learners: sorted(&persisted.conf_state.learners),
            ..Default::default()
        };
        if stored.voters != configured.voters || stored.learners != configured.learners {
            return Err(NodeError::MembershipChanged {
                stored: [stored.voters, stored.learners].concat(),
                configured: [configured.voters, configured.learners].concat(),
            });
        }
        let (state, applied) = restore_state(&persisted)?;
        let config = raft::Config {
            id: settings.id,
            election_tick: settings.election_ticks,
            heartbeat_tick: settings.heartbeat_ticks,
            // One tick above election_tick: a follower stops honouring the old leader's
            // lease after election_tick ticks, so by the time the first candidate asks,
            // every other follower has stopped ignoring votes, whatever their tick phase.
            // Without this, a first campaign often fails and failover costs another
            // full timeout.
            min_election_tick: settings.election_ticks + 1,
            max_election_tick: 2 * settings.election_ticks + 1,
            applied,
            check_quorum: true,
            pre_vote: true,
            priority: settings.priority,
            max_size_per_msg: 256 * 1024,
            max_inflight_msgs: 64,
            ..Default::default()
        };
        let raw = RawNode::new(&config, LogCache::from_persisted(persisted), logger)?;
        let mut node = Node { raw, store, state, settings, rng: ChaCha8Rng::seed_from_u64(seed) };
        node.draw_election_timeout();
        Ok(node)
    }

    pub fn id(&self) -> u64 {
        self.settings.id
    }

    pub fn state(&self) -> &SiteState {
        &self.state
    }

    pub fn status(&self) -> NodeStatus {
        let r = &self.raw.raft;
        NodeStatus {
            id: r.id,
            role: r.state,
            term: r.term,
            leader: r.leader_id,
            commit: r.raft_log.committed,
            applied: self.state.applied.index,
            last_index: r.raft_log.last_index(),
        }
    }

    /// Whether `advance` has anything to do (it may then write to storage).
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// The commit index of the stored hard state: what a crash right now keeps.
    pub fn durable_commit(&self) -> u64 {
        self.raw.store().hard_state().commit
    }

    /// The committed entries this node still holds (those after its latest snapshot).
    pub fn committed_log(&self) -> impl Iterator<Item = &Entry> {
        let store = self.raw.store();
        store.entries_between(store.snapshot_metadata().index, self.raw.raft.raft_log.committed)
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// One clock tick (the configured tick period has passed).
    pub fn tick(&mut self) {
        self.raw.tick();
        self.draw_election_timeout();
    }

    /// Deliver a message from a peer. Messages from unknown nodes or stale terms are
    /// dropped by raft-rs; an error here means the message was malformed for raft.
    pub fn step(&mut self, m: Message) -> Result<(), raft::Error> {
        let r = self.raw.step(m);
        self.draw_election_timeout();
        match r {
            // A stranger's message, or a forwarded proposal that found no leader: both
            // are dropped, as raft-rs intends.
            Err(raft::Error::StepPeerNotFound | raft::Error::ProposalDropped) => Ok(()),
            other => other,
        }
    }

    /// Propose a command. Followers forward it to the leader; a committed proposal shows
    /// up in a later [`Output::applied`] on every node.
    pub fn propose(&mut self, command: &Command) -> Result<(), ProposeError> {
        if self.raw.raft.leader_id == raft::INVALID_ID {
            return Err(ProposeError::NoLeader);
        }
        let data = command.encode().map_err(|e| ProposeError::Encode(e.to_string()))?;
        self.raw.propose(vec![], data)?;
        Ok(())
    }

    /// Tell raft what became of a message it asked us to send: a failed send marks the
    /// peer unreachable (raft stops pipelining to it), and a snapshot's fate must be
    /// reported or the leader would wait for it forever.
    pub fn report_delivery(&mut self, m: &Message, delivered: bool) {
        if !delivered {
            self.raw.report_unreachable(m.to);
        }
        if m.get_msg_type() == MessageType::MsgSnapshot {
            let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
            self.raw.report_snapshot(m.to, status);
        }
    }

    /// Handle raft's Ready in the order raft-rs requires: install a snapshot, apply
    /// what is committed, store new entries and the hard state durably, and only then
    /// release the messages. Call after every tick, step or propose.
    pub fn advance(&mut self) -> Result<Output, NodeError> {
        let mut out = Output::default();
        if !self.raw.has_ready() {
            return Ok(out);
        }
        let mut rd = self.raw.ready();
        // A leader's messages could go before its own write; holding every message until
        // the one write below is simpler and costs one fsync of latency.
        out.messages.extend(rd.take_messages());

        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            self.install_snapshot(snap)?;
            out.installed_snapshot = true;
        }
        let committed = rd.take_committed_entries();
        self.apply_entries(&committed, &mut out);
        // raft-rs reads new entries back from storage (to replicate them) as soon as we
        // advance, so the cache takes them now; the durable write follows before any
        // message leaves this function.
        let entries = rd.take_entries();
        self.raw.mut_store().apply(&WriteBatch { entries: entries.clone(), ..Default::default() });
        out.messages.extend(rd.take_persisted_messages());

        let mut light = self.raw.advance(rd);
        out.messages.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(&committed, &mut out);
        self.raw.advance_apply();

        let hard_state = self.durable_hard_state();
        let applied = self.state.applied.index;
        let cache = self.raw.store();
        if !entries.is_empty() || *cache.hard_state() != hard_state || cache.applied() != applied {
            self.persist(WriteBatch {
                entries,
                hard_state: Some(hard_state),
                applied: Some(applied),
                ..Default::default()
            })?;
        }
        self.maybe_compact()?;
        self.draw_election_timeout();
        Ok(out)
    }

    fn persist(&mut self, batch: WriteBatch) -> Result<(), NodeError> {
        self.store.write(&batch)?;
        self.raw.mut_store().apply(&batch);
        Ok(())
    }

    /// raft's current hard state, with the commit index bounded by what this node has
    /// durably stored (raft-rs refuses to restart on a commit beyond its last index).
    fn durable_hard_state(&self) -> HardState {
        let mut hs = self.raw.raft.hard_state();
        let last = raft::Storage::last_index(self.raw.store()).unwrap_or(0);
        hs.commit = hs.commit.min(last);
        hs
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), NodeError> {
        let index = snap.get_metadata().index;
        let state = SiteState::from_snapshot(snap.get_data())
            .map_err(|e| NodeError::Snapshot { index, error: e.to_string() })?;
        // The hard state (raft has moved its commit to the snapshot index) goes in the
        // same batch: stored apart, a crash between the two writes would leave a commit
        // below the snapshot, which raft-rs refuses to restart from.
        self.persist(WriteBatch {
            snapshot: Some(SnapshotWrite::Install(snap)),
            hard_state: Some(self.raw.raft.hard_state()),
            applied: Some(index),
            ..Default::default()
        })?;
        self.state = state;
        Ok(())
    }

    fn apply_entries(&mut self, entries: &[Entry], out: &mut Output) {
        for e in entries {
            if e.index <= self.state.applied.index {
                continue;
            }
            out.applied.push(apply_entry(&mut self.state, e));
        }
    }

    /// Snapshot the applied state and drop the log before it, every `snapshot_every`.
    fn maybe_compact(&mut self) -> Result<(), NodeError> {
        let applied = self.state.applied;
        let snap_index = self.raw.store().snapshot_metadata().index;
        if applied.index < snap_index + self.settings.snapshot_every {
            return Ok(());
        }
        let data = self
            .state
            .to_snapshot()
            .map_err(|e| NodeError::Snapshot { index: applied.index, error: e.to_string() })?;
        let mut snap = Snapshot { data: data.into(), ..Default::default() };
        let meta = snap.mut_metadata();
        meta.index = applied.index;
        meta.term = applied.term;
        meta.set_conf_state(self.raw.raft.prs().conf().to_conf_state());
        self.persist(WriteBatch { snapshot: Some(SnapshotWrite::Compact(snap)), ..Default::default() })
    }

    /// Whenever a follower's election timer is at zero (raft-rs just reset it, drawing
    /// from the thread RNG, or a leader's message restarted it), draw its timeout from
    /// our own RNG, in the range raft-rs was given (see `open`). Deciding on
    /// `election_elapsed == 0` alone, never on the value raft drew, keeps replays exact;
    /// the draw happens before any further tick, so raft's own value is never used.
    fn draw_election_timeout(&mut self) {
        if self.raw.raft.election_elapsed == 0 && !self.is_leader() {
            let e = self.settings.election_ticks;
            let t = self.rng.random_range(e + 1..2 * e + 1);
            self.raw.raft.set_randomized_election_timeout(t);
        }
    }
}

fn apply_entry(state: &mut SiteState, e: &Entry) -> Applied {
    let token = FencingToken { term: e.term, index: e.index };
    match e.get_entry_type() {
        EntryType::EntryNormal => state.apply(token, e.get_data()),
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
            state.skip(token);
            Applied::Nothing
        }
    }
}

/// The site state as it was at the last applied index: the snapshot, then the log
/// entries up to `applied` (clamped to the durable commit index).
fn restore_state(p: &Persisted) -> Result<(SiteState, u64), NodeError> {
    let snap = p.snapshot.get_metadata();
    let mut state = if snap.index == 0 {
        SiteState::default()
    } else {
        SiteState::from_snapshot(p.snapshot.get_data())
            .map_err(|e| NodeError::Snapshot { index: snap.index, error: e.to_string() })?
    };
    let upto = p.applied.min(p.hard_state.commit).max(snap.index);
    for e in p.entries.iter().filter(|e| e.index > snap.index && e.index <= upto) {
        apply_entry(&mut state, e);
    }
    Ok((state, upto))
}

fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;
    use sitewatch_proto::{Decision, Verdict};

    fn settings(id: u64) -> NodeSettings {
        NodeSettings {
            id,
            voters: vec![1],
            learners: vec![],
            heartbeat_ticks: 2,
            election_ticks: 10,
            priority: 1,
            snapshot_every: 5,
        }
    }

    fn logger() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    fn decision(capacity: u32) -> Command {
        Command::Decision(Decision {
            verdict: Verdict::Down,
            desired_capacity: capacity,
            reasons: vec![],
            decided_at_ms: 0,
            evidence: vec![],
            spend_level: 0,
        })
    }

    fn run_until_leader(node: &mut Node<MemoryStore>) {
        for _ in 0..100 {
            node.tick();
            node.advance().unwrap();
            if node.is_leader() {
                return;
            }
        }
        panic!("a single voter must elect itself");
    }

    #[test]
    fn a_single_voter_commits_snapshots_and_restarts_with_its_state() {
        let store = MemoryStore::default();
        let mut node = Node::open(settings(1), store.clone(), 1, &logger()).unwrap();
        run_until_leader(&mut node);
        for c in 1..=12 {
            node.propose(&decision(c)).unwrap();
            node.advance().unwrap();
        }
        assert_eq!(node.state().desired_capacity, 12);
        let before = node.state().clone();
        assert!(node.raw.store().snapshot_metadata().index >= 5, "compaction ran");
        drop(node);

        let node = Node::open(settings(1), store, 2, &logger()).unwrap();
        assert_eq!(node.state(), &before);
        assert_eq!(node.status().applied, before.applied.index);
    }

    #[test]
    fn a_changed_member_list_is_refused() {
        let store = MemoryStore::default();
        drop(Node::open(settings(1), store.clone(), 1, &logger()).unwrap());
        let mut other = settings(1);
        other.voters = vec![1, 2, 3];
        assert!(matches!(Node::open(other, store, 1, &logger()), Err(NodeError::MembershipChanged { .. })));
    }

    #[test]
    fn proposing_without_a_leader_says_so() {
        let mut node = Node::open(settings(1), MemoryStore::default(), 1, &logger()).unwrap();
        assert!(matches!(node.propose(&decision(1)), Err(ProposeError::NoLeader)));
    }
}
