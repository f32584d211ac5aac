//! The on-disk keyed state backend (`state.backend.type: disk`): keyed state larger than memory,
//! and incremental checkpoints.
//!
//! Each operator instance keeps its keyed state in an embedded store on local disk (see
//! [`engine`]), with a bounded cache of decoded values in front (`state.backend.disk.cache-entries`).
//! A record's key is looked up in the cache; on a miss its value is read from the store and
//! decoded. When the cache is full, a slice of it is evicted, and the evicted values that changed
//! are written to the store in one batch.
//!
//! Entries are stored under `key group (2 bytes, big-endian) ++ encoded key`, so a scan of the
//! store yields them by key group, the order checkpoints are written in.
//!
//! Checkpoints (see `docs/architecture.md`): a full snapshot writes every entry; an incremental
//! one (`state.backend.incremental: true`) writes only the entries changed since the previous
//! snapshot of this instance, as a link of a chain that starts at a full snapshot. A restore
//! applies the links in order. A chain restarts with a full snapshot when it reaches
//! [`MAX_CHAIN`] links, when its increments add up to more than its full snapshot, when the
//! previous checkpoint did not complete, after a restore, and when more keys changed since the
//! previous snapshot than the set of changed keys may hold ([`CHANGED_PER_CACHED`]).

pub mod engine;
pub mod keyed;
pub mod table;
pub mod timers;
pub mod windows;

pub use keyed::{DiskKeyed, KeyGroupOf, apply_raw};

use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::checkpointing::StateBackendConfig;
use weir_core::{Error, Result};

use crate::map::StateMap;
use engine::Engine;
use weir_checkpoint::file::RawState;
use weir_checkpoint::{CheckpointId, RawEntry, decode_raw_chunk, raw_chunks};
use weir_checkpoint::{ChunkSink, DeferredSnapshot};

/// Links of an incremental chain (a full snapshot and its increments) before a new full snapshot.
pub const MAX_CHAIN: usize = 10;

/// Keys the set of keys changed since the last snapshot may hold, per entry the cache in front may
/// hold (and at least [`MIN_CHANGED_BOUND`]): past it the set is dropped and the next snapshot is a
/// full one, so memory stays bounded when most of a large state changes between two checkpoints
/// (an increment would then be about as large as a full snapshot anyway).
pub const CHANGED_PER_CACHED: usize = 4;

/// The least bound on the set of changed keys, whatever the cache's size.
pub const MIN_CHANGED_BOUND: usize = 1 << 16;

/// Encoded keyed state, one chunk per key group.
pub type KeyedChunks = Vec<(u32, Vec<u8>)>;

/// One write to a [`RawStore`]: key group, store key, and the value (`None`: removed).
pub type StoreWrite = (u32, Vec<u8>, Option<Vec<u8>>);

/// A disk-backed instance's snapshot for one checkpoint, made when called (from another thread:
/// it reads a consistent view of the store taken at the barrier) and handed to the sink a chunk
/// at a time.
pub enum DiskSnapshot {
    /// The changes since the previous snapshot, and the earlier links they build on.
    Increment(DeferredSnapshot, Vec<CheckpointId>),
    /// Everything.
    Full(DeferredSnapshot),
}

impl DiskSnapshot {
    /// Makes the snapshot at once: its chunks, and the links it builds on (none: a full one).
    #[cfg(test)]
    pub(crate) fn made(self) -> Result<(KeyedChunks, Vec<CheckpointId>)> {
        let (make, links) = match self {
            DiskSnapshot::Increment(make, links) => (make, links),
            DiskSnapshot::Full(make) => (make, Vec::new()),
        };
        let mut chunks = Vec::new();
        make(&mut |kg, bytes| {
            chunks.push((kg, bytes));
            Ok(())
        })?;
        Ok((chunks, links))
    }
}

/// Entries of one key group gathered into one chunk of a full snapshot before it goes to the
/// sink: the bound on the memory a full snapshot takes, whatever the state's size (a key group
/// with more becomes several chunks).
const FULL_CHUNK_BYTES: usize = 4 << 20;

/// Gathers entries, in key order, into chunks of one key group and at most about
/// [`FULL_CHUNK_BYTES`] each, handed to a sink as they fill.
struct Chunker<'s, 'a> {
    sink: &'s mut ChunkSink<'a>,
    group: Option<u32>,
    entries: Vec<RawEntry>,
    bytes: usize,
    /// Bytes handed over.
    total: usize,
}

impl<'s, 'a> Chunker<'s, 'a> {
    fn new(sink: &'s mut ChunkSink<'a>) -> Self {
        Chunker { sink, group: None, entries: Vec::new(), bytes: 0, total: 0 }
    }

    fn push(&mut self, kg: u32, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<()> {
        if let Some(g) = self.group
            && (g != kg || self.bytes >= FULL_CHUNK_BYTES)
        {
            self.emit(g)?;
        }
        self.group = Some(kg);
        self.bytes += key.len() + value.as_ref().map_or(0, Vec::len);
        self.entries.push((key, value));
        Ok(())
    }

    fn emit(&mut self, kg: u32) -> Result<()> {
        self.bytes = 0;
        for (g, chunk) in raw_chunks(self.entries.drain(..).map(|e| (kg, e)))? {
            self.total += chunk.len();
            (self.sink)(g, chunk)?;
        }
        Ok(())
    }

    /// Hands over what is left; the bytes handed over in all.
    fn finish(mut self) -> Result<usize> {
        if let Some(g) = self.group {
            self.emit(g)?;
        }
        Ok(self.total)
    }
}

/// Set on the key group of store keys kept aside from a [`DiskKeyed`]'s values (the queues of
/// [`timers::DiskTimerQueue::aside`]); key groups are below it.
pub const ASIDE: u16 = 1 << 15;

/// The key group a store key starts with (with or without [`ASIDE`]).
fn group_of(key: &[u8]) -> u32 {
    u32::from(u16::from_be_bytes([key[0], key[1]]) & !ASIDE)
}

/// Whether a store key is kept aside from the values.
pub fn is_aside(key: &[u8]) -> bool {
    key.first().is_some_and(|b| b & 0x80 != 0)
}

/// Every entry of `view`, in key order, encoded into chunks and handed to `sink` as the scan goes;
/// the bytes handed over.
fn full_snapshot(view: &engine::EngineSnapshot, mut sink: ChunkSink<'_>) -> Result<usize> {
    let mut chunks = Chunker::new(&mut sink);
    view.scan(|k, v| chunks.push(group_of(k), k.to_vec(), Some(v.to_vec())))?;
    chunks.finish()
}

/// The entries of `view` under `keys` (sorted; a key without a value is a removal), encoded into
/// chunks and handed to `sink`; the bytes handed over.
fn increment(view: &engine::EngineSnapshot, keys: Vec<(u32, Vec<u8>)>, mut sink: ChunkSink<'_>) -> Result<usize> {
    let mut chunks = Chunker::new(&mut sink);
    for (kg, k) in keys {
        let v = view.get(&k)?;
        chunks.push(kg, k, v)?;
    }
    chunks.finish()
}

/// The raw side of a disk-backed operator instance: its store, the entries written to it since
/// the last snapshot, and the chain of incremental snapshots. What [`DiskKeyed`] and the keyed
/// states of process functions ([`crate::KeyedStates`]) share; they keep decoded values in
/// a cache in front of it.
pub struct RawStore {
    engine: Engine,
    max_parallelism: u32,
    incremental: bool,
    capacity: usize,
    /// Keys written since the last snapshot (with incremental snapshots only), with their key
    /// group: the increment reads their values (or their absence) from the store's view at the
    /// barrier, so only keys are kept here.
    changed: StateMap<Vec<u8>, u32>,
    /// Whether `changed` outgrew its bound since the last snapshot (and was dropped): the next
    /// snapshot is a full one.
    changed_overflowed: bool,
    /// The links of the latest snapshot's chain, itself last (empty: none taken yet).
    chain: Vec<CheckpointId>,
    /// Bytes of the chain's full snapshot, and of its increments since (set by the writer thread
    /// that makes them).
    base_bytes: Arc<AtomicUsize>,
    increments_bytes: Arc<AtomicUsize>,
}

impl RawStore {
    /// A store for one operator instance (`name` makes its working directory unique) under the
    /// configured directory; removed when dropped.
    pub fn open(config: &StateBackendConfig, name: &str, max_parallelism: u32) -> Result<Self> {
        if max_parallelism > u32::from(ASIDE) {
            return Err(Error::Config(format!(
                "the disk state backend supports up to {ASIDE} key groups (as Flink does); pipeline.max-parallelism \
                 is {max_parallelism}: lower it"
            )));
        }
        let base = config.dir.as_ref().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        sweep_once(&base);
        let dir = base.join(format!("{WORKING_PREFIX}{}-{}-{name}", std::process::id(), uuid::Uuid::new_v4().simple()));
        Ok(RawStore {
            engine: Engine::open(&dir)?,
            max_parallelism,
            incremental: config.incremental,
            capacity: config.cache_entries.max(1),
            changed: StateMap::default(),
            changed_overflowed: false,
            chain: Vec::new(),
            base_bytes: Arc::new(AtomicUsize::new(0)),
            increments_bytes: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Entries the cache in front may hold (`state.backend.disk.cache-entries`).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The key group of `key`.
    pub fn key_group<K: Hash>(&self, key: &K) -> u32 {
        weir_core::keygroup::key_group(key, self.max_parallelism)
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine.get(key)
    }

    /// Stores `batch` (key group, store key, value; `None` removes), at once.
    pub fn write(&mut self, batch: Vec<StoreWrite>) -> Result<()> {
        if self.incremental && !self.changed_overflowed {
            for (kg, k, _) in &batch {
                self.changed.insert(k.clone(), *kg);
            }
            if self.changed.len() > self.changed_bound() {
                self.changed = StateMap::default();
                self.changed_overflowed = true;
            }
        }
        self.engine.write(batch.into_iter().map(|(_, k, v)| (k, v)).collect())
    }

    /// The most keys the set of changed keys holds before it is dropped for a full snapshot.
    fn changed_bound(&self) -> usize {
        self.capacity.saturating_mul(CHANGED_PER_CACHED).max(MIN_CHANGED_BOUND)
    }

    /// The snapshot for checkpoint `id` (`completed`: the latest completed checkpoint) of what is
    /// in the store (the cache in front writes its changed values first): a consistent view of
    /// the store, read and encoded later (on the checkpoint writer thread) while records go on;
    /// all of it for a full snapshot, the keys changed since the previous one for an increment.
    pub fn snapshot(&mut self, id: CheckpointId, completed: CheckpointId) -> Result<DiskSnapshot> {
        let previous = self.chain.last().copied();
        // A chain whose increments add up to more than its full snapshot restores slower than a new
        // full snapshot would: start over then too.
        let base_bytes = self.base_bytes.load(Ordering::Relaxed);
        let continues = self.incremental
            && !std::mem::take(&mut self.changed_overflowed)
            && previous == Some(completed)
            && self.chain.len() < MAX_CHAIN
            && self.increments_bytes.load(Ordering::Relaxed) <= base_bytes;
        let changed = std::mem::take(&mut self.changed);
        let view = self.engine.snapshot();
        if continues {
            let mut keys: Vec<(u32, Vec<u8>)> = changed.into_iter().map(|(k, kg)| (kg, k)).collect();
            keys.sort_unstable_by(|a, b| a.1.cmp(&b.1));
            let links = self.chain.clone();
            self.chain.push(id);
            let sum = self.increments_bytes.clone();
            return Ok(DiskSnapshot::Increment(
                Box::new(move |sink| {
                    sum.fetch_add(increment(&view, keys, sink)?, Ordering::Relaxed);
                    Ok(())
                }),
                links,
            ));
        }
        self.chain = vec![id];
        self.increments_bytes.store(0, Ordering::Relaxed);
        let base = self.base_bytes.clone();
        Ok(DiskSnapshot::Full(Box::new(move |sink| {
            base.store(full_snapshot(&view, sink)?, Ordering::Relaxed);
            Ok(())
        })))
    }

    /// Loads restored raw chunks, in the order they apply.
    pub fn restore(&mut self, raw: &RawState) -> Result<()> {
        raw.for_each(|kg, bytes| self.engine.write(decode_raw_chunk(kg, bytes)?))
    }

    /// Loads restored entries (store key, value; `None` removes); not changes since a snapshot:
    /// the first snapshot after a restore is a full one.
    pub fn restore_entries(&mut self, entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        self.engine.write(entries)
    }

    /// Calls `f` with every entry whose store key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8], f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        self.engine.scan_prefix(prefix, f)
    }

    /// The first store key at or after `from`, if any.
    pub fn next_key(&self, from: &[u8]) -> Result<Option<Vec<u8>>> {
        self.engine.next_key(from)
    }

    /// Calls `f` with every entry kept aside ([`ASIDE`]), in key order.
    pub fn scan_aside(&self, f: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        self.engine.scan_from(&ASIDE.to_be_bytes(), f)
    }
}

/// The disk backend's settings for tests: working files under `dir` (the temporary directory when
/// `None`), full or `incremental` snapshots, a cache of `cache` entries, timers in the store.
#[cfg(test)]
pub(crate) fn test_config(dir: Option<&std::path::Path>, incremental: bool, cache: usize) -> StateBackendConfig {
    StateBackendConfig {
        kind: weir_core::checkpointing::StateBackendKind::Disk,
        incremental,
        dir: dir.map(|d| d.display().to_string()),
        cache_entries: cache,
        timers_on_heap: false,
    }
}

pub(crate) fn encode<V: Serialize>(v: &V) -> Result<Vec<u8>> {
    bitcode::serialize(v).map_err(|e| Error::internal(format!("cannot encode a state value: {e}")))
}

pub(crate) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V> {
    bitcode::deserialize(bytes).map_err(|e| {
        Error::InvalidJob(format!(
            "a stored state value cannot be read as {}: {e}; restore with the program that wrote it",
            std::any::type_name::<V>()
        ))
    })
}

/// The start of a working directory's name; the owning process's id follows.
const WORKING_PREFIX: &str = "weir-state-p";

/// Removes, once per process and directory, the working directories that processes killed before
/// they could remove their own left in `base` (a killed TaskManager's disk-backend state would
/// otherwise fill the disk over restarts).
fn sweep_once(base: &std::path::Path) {
    static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    {
        let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
        if swept.iter().any(|d| d == base) {
            return;
        }
        swept.push(base.to_path_buf());
    }
    sweep_dead(base);
}

/// Removes the working directories in `base` whose process is gone.
fn sweep_dead(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(WORKING_PREFIX).and_then(|r| r.split('-').next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(dir = %e.path().display(), "removing the disk backend's working directory of a process that is gone");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn working_directories_of_dead_processes_are_swept_and_live_ones_kept() {
        let base = tempfile::tempdir().expect("a temporary directory");
        let dead = base.path().join(format!("{WORKING_PREFIX}{}-abc-op", u32::MAX - 1));
        let mine = base.path().join(format!("{WORKING_PREFIX}{}-abc-op", std::process::id()));
        let other = base.path().join("weir-state-unrelated");
        for d in [&dead, &mine, &other] {
            std::fs::create_dir_all(d.join("data")).expect("create");
        }
        sweep_dead(base.path());
        assert!(!dead.exists());
        assert!(mine.exists() && other.exists());
    }
}
