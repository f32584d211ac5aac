//! The contract of a state backend's keyed tables: what operators keep their keyed state in,
//! whatever backend holds it.
//!
//! A [`KeyedTable`] is one operator instance's keyed values (an accumulator per key, a key's
//! sessions, a pane per key and window) with timer queues on its keys beside them: the layer
//! Flink's `StateBackend` gives operators through keyed state and the timer service. The heap
//! backend ([`super::heap::HeapTable`]) keeps both in hash maps and ordered maps; the disk backend
//! ([`crate::disk::table::DiskTable`]) keeps them in the instance's store with a bounded cache in
//! front. Operators hold a [`super::table::Table`], the backend chosen by the job's
//! `state.backend.type`, and never ask which one it is. A third backend is a new implementation of
//! this trait and one more arm where [`super::table::Table`] opens tables.
//!
//! Every implementation passes the same conformance suite (`state::table`'s tests): the same
//! operations give the same values and fire the same timers, and a snapshot of either restores
//! into either.

use weir_core::Result;

use crate::disk::{DiskSnapshot, KeyedChunks};
use crate::map::StateMap;
use crate::time::Timestamp;
use weir_checkpoint::CheckpointId;

/// A timer queue of a table, as its operator declares it.
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    /// The queue's name in the disk backend's store (fixed: it is part of the snapshot format).
    pub tag: &'static [u8],
    /// Whether the queue is derived from the values (an index the operator can compute from each
    /// value, rebuilt on restore) rather than kept in snapshots.
    pub derived: bool,
}

/// The shape of a table: how its keys map to key groups, and its timer queues (numbered by their
/// place here).
#[derive(Clone, Copy)]
pub struct TableSpec<K> {
    /// The key group of a table key among a number of key groups: for a table key that is not the
    /// record key itself (a key and a window), the record key's.
    pub group: fn(&K, u32) -> u32,
    /// The timer queues.
    pub queues: &'static [Queue],
}

/// What a backend hands its operator's task for a checkpoint.
pub struct StateSnapshot {
    /// Keyed state by key group, encoded at the barrier in the operator's format: all of it on the
    /// heap backend; on the disk backend, what it keeps in memory (if anything).
    pub keyed: KeyedChunks,
    /// A view of the disk backend's store, read and encoded later on the checkpoint writer thread:
    /// an increment or a full snapshot.
    pub deferred: Option<DiskSnapshot>,
}

impl StateSnapshot {
    /// Keyed chunks, encoded now.
    pub fn keyed(keyed: KeyedChunks) -> Self {
        StateSnapshot { keyed, deferred: None }
    }

    /// A store's snapshot, made later.
    pub fn deferred(deferred: DiskSnapshot) -> Self {
        StateSnapshot { keyed: Vec::new(), deferred: Some(deferred) }
    }
}

/// The heap backend's content at a barrier, for the operator to encode in its snapshot format.
pub struct HeapView<'a, K, V> {
    /// Every key's value.
    pub values: &'a StateMap<K, V>,
    /// Every queue's timers: (time, key), in no particular order.
    pub timers: Vec<Vec<(Timestamp, &'a K)>>,
}

/// What a table starts from on restore.
pub struct Restored<K, V> {
    /// Entries decoded from the heap backend's snapshots (the operator's format).
    pub entries: Vec<(K, V)>,
    /// Timers decoded from them: queue, time, key.
    pub timers: Vec<(usize, Timestamp, K)>,
}

impl<K, V> Default for Restored<K, V> {
    fn default() -> Self {
        Restored { entries: Vec::new(), timers: Vec::new() }
    }
}

/// Where a restored value's derived timers go: `(queue, time)` pairs an operator's index
/// function adds for each value.
pub type Derived = Vec<(usize, Timestamp)>;

/// One operator instance's keyed values, with timer queues on their keys.
///
/// Values handed out as `&mut V` count as changed (the disk backend writes them back).
pub trait KeyedTable<K, V> {
    /// Folds `input` into `key`'s value with `f`, or stores what `absent` makes of it when the key
    /// has none; `f`'s or `absent`'s result. (The hot path of keyed aggregations: the key is moved
    /// in, never cloned when the key is present.)
    fn update<T, R>(
        &mut self,
        key: K,
        input: T,
        f: impl FnOnce(&mut V, T) -> R,
        absent: impl FnOnce(T) -> (V, R),
    ) -> Result<R>;

    /// `key`'s value, made with `absent` when it has none; and whether it was made now.
    fn entry(&mut self, key: &K, absent: impl FnOnce() -> V) -> Result<(&mut V, bool)>;

    /// `key`'s value, made with `absent` when it has none.
    fn value(&mut self, key: &K, absent: impl FnOnce() -> V) -> Result<&mut V> {
        Ok(self.entry(key, absent)?.0)
    }

    /// `key`'s value, if it has one.
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut V>>;

    /// Removes `key`'s value (its timers stay: they fire and find no value).
    fn remove(&mut self, key: &K) -> Result<()>;

    /// Adds a timer at `at` for `key` to queue `queue`; a timer already there is not added twice.
    fn add_timer(&mut self, queue: usize, at: Timestamp, key: &K) -> Result<()>;

    /// The earliest timer of `queue` at or before `until`, removed: its time and key. Timers of
    /// one time come in an order each backend chooses.
    fn pop_timer(&mut self, queue: usize, until: Timestamp) -> Result<Option<(Timestamp, K)>>;

    /// The snapshot for checkpoint `id` (`completed`: the latest completed checkpoint). The heap
    /// backend encodes its content with `encode`, in the operator's format (read back into
    /// [`Restored`]); the disk backend snapshots its store.
    fn snapshot(
        &mut self,
        id: CheckpointId,
        completed: CheckpointId,
        encode: impl FnOnce(HeapView<'_, K, V>) -> Result<KeyedChunks>,
    ) -> Result<StateSnapshot>;

    /// Calls `f` with every key and value, in an order each backend chooses.
    fn for_each(&mut self, f: impl FnMut(&K, &V) -> Result<()>) -> Result<()>;
}

/// One operator instance's time windows (tumbling or sliding): an accumulator per window end and
/// key, with which windows fired already. Ends are few at a time; keys are many.
///
/// Snapshots of the heap backend hold `(key, (end, fired, accumulator))` entries by key group;
/// the disk backend's hold its store. Either restores into either.
pub trait WindowStore<K, A> {
    /// The accumulator of `key` in the window ending at `end`, made with `create` when it has
    /// none. `open` says whether the window's last timestamp is after the watermark. The second
    /// result says whether the window fired already or is complete: the caller fires it (again)
    /// once the record is in, a late firing.
    fn add(&mut self, end: Timestamp, key: &K, open: bool, create: impl FnOnce() -> A) -> Result<(&mut A, bool)>;

    /// Fires, in order of end, every window not fired yet whose last timestamp (`end - 1`) is at
    /// or before `time`: `emit` gets its end, each key and accumulator. A window is kept for late
    /// records while `end - 1 + lateness` is after `time`, and dropped once it is not.
    fn advance(&mut self, time: Timestamp, lateness: i64, emit: impl FnMut(Timestamp, &K, &A)) -> Result<()>;

    /// The snapshot for checkpoint `id` (`completed`: the latest completed checkpoint), with
    /// `max_parallelism` key groups.
    fn snapshot(&mut self, id: CheckpointId, completed: CheckpointId, max_parallelism: u32) -> Result<StateSnapshot>;
}
