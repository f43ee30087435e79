//! Durable raft state: log entries, hard state, the latest site-state snapshot and the
//! applied index, in one crash-safe file.
//!
//! The node writes a [`WriteBatch`] to the [`LogStore`] and only then updates its
//! in-memory [`LogCache`] (which raft-rs reads through the `Storage` trait) and sends
//! the messages that depend on it. A batch is one transaction: after kill -9 either all
//! of it is there or none of it is.
//!
//! redb is the file store: a pure-Rust embedded B-tree with ACID transactions and
//! fsync'd commits, one file, no background threads. raft-engine was the other
//! candidate; it is built for TiKV's multi-raft scale (many groups, gigabytes of log),
//! brings its own thread pool, and would double the witness's memory for a log of a few
//! hundred small entries.

use std::path::Path;
use std::sync::{Arc, Mutex};

use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HARD_STATE: &str = "hard-state";
const CONF_STATE: &str = "conf-state";
const SNAPSHOT: &str = "snapshot";
const APPLIED: &str = "applied";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage file {path}: {source}")]
    Open { path: String, source: Box<redb::DatabaseError> },
    #[error("storage: {0}")]
    Db(String),
    #[error("storage holds a corrupt {what}: {source}")]
    Corrupt { what: &'static str, source: protobuf::ProtobufError },
    #[error("storage holds a gap: entry {found} follows {expected_after}")]
    Gap { expected_after: u64, found: u64 },
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.to_string()) }
        }
    )*};
}
db_err!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// Everything a node finds again after a restart.
#[derive(Debug, Clone, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// The latest snapshot (index 0 when there is none).
    pub snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The highest index the site state had applied.
    pub applied: u64,
}

impl Persisted {
    pub fn is_empty(&self) -> bool {
        self.hard_state == HardState::default()
            && self.entries.is_empty()
            && self.snapshot.get_metadata().index == 0
    }
}

/// One atomic change. Applied in field order: snapshot, entries, hard state, applied.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub snapshot: Option<SnapshotWrite>,
    /// Appended; an entry at an index already held replaces it and everything after.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
    pub applied: Option<u64>,
}

#[derive(Debug, Clone)]
pub enum SnapshotWrite {
    /// A snapshot received from the leader replaces the whole log.
    Install(Snapshot),
    /// A snapshot of our own applied state: entries up to its index go, later ones stay.
    Compact(Snapshot),
}

impl SnapshotWrite {
    fn snapshot(&self) -> &Snapshot {
        match self {
            SnapshotWrite::Install(s) | SnapshotWrite::Compact(s) => s,
        }
    }
}

/// Where a node's raft state survives it.
pub trait LogStore: Send + 'static {
    fn load(&mut self) -> Result<Persisted, StoreError>;
    fn write(&mut self, batch: &WriteBatch) -> Result<(), StoreError>;
}

/// The production store: one redb file under the data directory.
pub struct RedbStore {
    db: redb::Database,
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = redb::Database::builder()
            // The working set is a few hundred small entries; a small cache keeps the
            // witness inside a 10 MB footprint.
            .set_cache_size(1 << 20)
            .create(path)
            .map_err(|e| StoreError::Open { path: path.display().to_string(), source: Box::new(e) })?;
        let tx = db.begin_write()?;
        tx.open_table(ENTRIES)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(RedbStore { db })
    }
}

fn decode<M: protobuf::Message>(what: &'static str, bytes: &[u8]) -> Result<M, StoreError> {
    M::parse_from_bytes(bytes).map_err(|source| StoreError::Corrupt { what, source })
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    // Writing a well-formed message into a Vec cannot fail.
    m.write_to_bytes().expect("protobuf encoding into memory")
}

impl LogStore for RedbStore {
    fn load(&mut self) -> Result<Persisted, StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        let mut p = Persisted::default();
        if let Some(v) = meta.get(HARD_STATE)? {
            p.hard_state = decode("hard state", v.value())?;
        }
        if let Some(v) = meta.get(CONF_STATE)? {
            p.conf_state = decode("conf state", v.value())?;
        }
        if let Some(v) = meta.get(SNAPSHOT)? {
            p.snapshot = decode("snapshot", v.value())?;
        }
        if let Some(v) = meta.get(APPLIED)? {
            let mut raw = [0u8; 8];
            if v.value().len() == 8 {
                raw.copy_from_slice(v.value());
            }
            p.applied = u64::from_be_bytes(raw);
        }
        let entries = tx.open_table(ENTRIES)?;
        let mut expected = p.snapshot.get_metadata().index;
        for row in entries.iter()? {
            let (index, bytes) = row?;
            let entry: Entry = decode("log entry", bytes.value())?;
            if index.value() != expected + 1 || entry.index != index.value() {
                return Err(StoreError::Gap { expected_after: expected, found: index.value() });
            }
            expected = index.value();
            p.entries.push(entry);
        }
        Ok(p)
    }

    fn write(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut entries = tx.open_table(ENTRIES)?;
            let mut meta = tx.open_table(META)?;
            if let Some(snap) = &batch.snapshot {
                let index = snap.snapshot().get_metadata().index;
                match snap {
                    SnapshotWrite::Install(_) => entries.retain(|_, _| false)?,
                    SnapshotWrite::Compact(_) => entries.retain_in(..=index, |_, _| false)?,
                }
                meta.insert(SNAPSHOT, encode(snap.snapshot()).as_slice())?;
                meta.insert(CONF_STATE, encode(snap.snapshot().get_metadata().get_conf_state()).as_slice())?;
            }
            if let Some(first) = batch.entries.first() {
                entries.retain_in(first.index.., |_, _| false)?;
                for e in &batch.entries {
                    entries.insert(e.index, encode(e).as_slice())?;
                }
            }
            if let Some(hs) = &batch.hard_state {
                meta.insert(HARD_STATE, encode(hs).as_slice())?;
            }
            if let Some(cs) = &batch.conf_state {
                meta.insert(CONF_STATE, encode(cs).as_slice())?;
            }
            if let Some(applied) = batch.applied {
                meta.insert(APPLIED, applied.to_be_bytes().as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// An in-memory store whose contents outlive the node that wrote them: the simulation
/// "crashes" a node by dropping it and restarts it on a clone of the same store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Persisted>>,
    /// Writes left before one fails (and writes nothing): a crash in the middle of a
    /// node's sequence of writes, for the simulation.
    fail_in: Arc<Mutex<Option<u32>>>,
}

impl MemoryStore {
    /// Make the `n`th write from now fail, as if the process died during it.
    pub fn fail_after(&self, n: u32) {
        if let Ok(mut f) = self.fail_in.lock() {
            *f = Some(n.max(1));
        }
    }

    /// Take back a pending `fail_after`.
    pub fn clear_failure(&self) {
        if let Ok(mut f) = self.fail_in.lock() {
            *f = None;
        }
    }
}

impl LogStore for MemoryStore {
    fn load(&mut self) -> Result<Persisted, StoreError> {
        Ok(self.inner.lock().map_err(|_| StoreError::Db("poisoned".into()))?.clone())
    }

    fn write(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        {
            let mut fail = self.fail_in.lock().map_err(|_| StoreError::Db("poisoned".into()))?;
            if let Some(n) = fail.as_mut() {
                *n -= 1;
                if *n == 0 {
                    *fail = None;
                    return Err(StoreError::Db("injected failure".into()));
                }
            }
        }
        let mut p = self.inner.lock().map_err(|_| StoreError::Db("poisoned".into()))?;
        let mut cache = LogCache::from_persisted(std::mem::take(&mut *p));
        cache.apply(batch);
        *p = cache.into_persisted();
        Ok(())
    }
}

/// The node's in-memory copy of its durable state, read by raft-rs.
#[derive(Debug, Clone, Default)]
pub struct LogCache {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
    applied: u64,
}

impl LogCache {
    pub fn from_persisted(p: Persisted) -> LogCache {
        LogCache {
            hard_state: p.hard_state,
            conf_state: p.conf_state,
            snapshot: p.snapshot,
            entries: p.entries,
            applied: p.applied,
        }
    }

    fn into_persisted(self) -> Persisted {
        Persisted {
            hard_state: self.hard_state,
            conf_state: self.conf_state,
            snapshot: self.snapshot,
            entries: self.entries,
            applied: self.applied,
        }
    }

    /// Mirror a batch that the durable store has taken.
    pub fn apply(&mut self, batch: &WriteBatch) {
        if let Some(snap) = &batch.snapshot {
            let s = snap.snapshot();
            let index = s.get_metadata().index;
            match snap {
                SnapshotWrite::Install(_) => self.entries.clear(),
                SnapshotWrite::Compact(_) => self.entries.retain(|e| e.index > index),
            }
            self.conf_state = s.get_metadata().get_conf_state().clone();
            self.snapshot = s.clone();
        }
        if let Some(first) = batch.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(batch.entries.iter().cloned());
        }
        if let Some(hs) = &batch.hard_state {
            self.hard_state = hs.clone();
        }
        if let Some(cs) = &batch.conf_state {
            self.conf_state = cs.clone();
        }
        if let Some(applied) = batch.applied {
            self.applied = applied;
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        self.snapshot.get_metadata()
    }

    /// Entries in `(after, upto]` that are still held.
    pub fn entries_between(&self, after: u64, upto: u64) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.index > after && e.index <= upto)
    }

    fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.get_metadata().index, |e| e.index)
    }
}

impl raft::Storage for LogCache {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = self.first();
        let mut out = self.entries[(low - offset) as usize..(high - offset) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.first()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), ..Default::default() }
    }

    fn snapshot(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let mut s = Snapshot { data: data.to_vec().into(), ..Default::default() };
        s.mut_metadata().index = index;
        s.mut_metadata().term = term;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s
    }

    fn exercise(store: &mut dyn LogStore) -> Persisted {
        let hs = HardState { term: 2, vote: 1, commit: 3, ..Default::default() };
        store
            .write(&WriteBatch {
                entries: (1..=5).map(|i| entry(i, 1 + i / 3, b"x")).collect(),
                hard_state: Some(hs),
                applied: Some(3),
                ..Default::default()
            })
            .unwrap();
        // A new leader overwrote the tail from index 4.
        store.write(&WriteBatch { entries: vec![entry(4, 3, b"y")], ..Default::default() }).unwrap();
        store
            .write(&WriteBatch {
                snapshot: Some(SnapshotWrite::Compact(snapshot(2, 1, b"state@2"))),
                ..Default::default()
            })
            .unwrap();
        store.load().unwrap()
    }

    fn check(p: &Persisted) {
        assert_eq!(p.entries.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(3, 2), (4, 3)]);
        assert_eq!(p.hard_state.commit, 3);
        assert_eq!(p.applied, 3);
        assert_eq!(p.snapshot.get_metadata().index, 2);
        assert_eq!(p.snapshot.get_data(), b"state@2");
        assert_eq!(p.conf_state.voters, vec![1, 2, 3]);
    }

    #[test]
    fn memory_store_truncates_and_compacts() {
        check(&exercise(&mut MemoryStore::default()));
    }

    #[test]
    fn redb_store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        check(&exercise(&mut RedbStore::open(&path).unwrap()));
        let mut again = RedbStore::open(&path).unwrap();
        check(&again.load().unwrap());
        // Installing a leader's snapshot drops the whole log.
        again
            .write(&WriteBatch {
                snapshot: Some(SnapshotWrite::Install(snapshot(10, 4, b"state@10"))),
                ..Default::default()
            })
            .unwrap();
        drop(again);
        let p = RedbStore::open(&path).unwrap().load().unwrap();
        assert!(p.entries.is_empty());
        assert_eq!(p.snapshot.get_metadata().index, 10);
    }

    #[test]
    fn cache_answers_raft_like_memstorage() {
        let mut c = LogCache::default();
        c.apply(&WriteBatch {
            snapshot: Some(SnapshotWrite::Install(snapshot(3, 2, b""))),
            ..Default::default()
        });
        c.apply(&WriteBatch { entries: (4..=6).map(|i| entry(i, 2, b"")).collect(), ..Default::default() });
        assert_eq!(c.first_index().unwrap(), 4);
        assert_eq!(c.last_index().unwrap(), 6);
        assert_eq!(c.term(3).unwrap(), 2);
        assert!(matches!(c.term(2), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(matches!(c.term(7), Err(raft::Error::Store(StorageError::Unavailable))));
        let got = c.entries(4, 7, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(got.len(), 3);
        assert!(c.entries(3, 5, None, GetEntriesContext::empty(false)).is_err());
    }
}
