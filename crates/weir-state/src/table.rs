//! The keyed table an operator holds: the job's state backend chosen once, when the operator opens,
//! and the only place that names the backends ([`Table::open`], [`Windows::open`]).
//!
//! Dispatch is an enum rather than a trait object: the calls on the per-record path stay static
//! and inlinable (a predictable branch instead of an indirect call), which the window and keyed
//! anchors measure.

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::Result;
use weir_core::checkpointing::StateBackendKind;

use super::backend::{Derived, HeapView, KeyedTable, Restored, StateSnapshot, TableSpec, WindowStore};
use super::heap::HeapTable;
use super::windows::HeapWindows;
use crate::disk::KeyedChunks;
use crate::disk::table::DiskTable;
use crate::disk::windows::{DiskWindowStore, WindowEntries};
use crate::env::StateEnv;
use crate::time::Timestamp;
use weir_checkpoint::CheckpointId;

/// A keyed table in the backend the job configured.
pub enum Table<K, V> {
    /// `state.backend.type: hashmap`.
    Heap(HeapTable<K, V>),
    /// `state.backend.type: disk`.
    Disk(Box<DiskTable<K, V>>),
}

impl<K, V> Table<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The table of the operator instance `env` describes, in its job's backend, holding what it
    /// restored: `restored` (decoded from the heap backend's snapshots in the operator's format)
    /// and the disk backend's raw state in `env`; `derive` gives each value's timers in the
    /// derived queues of `spec`.
    pub fn open(
        env: &StateEnv<'_>,
        spec: TableSpec<K>,
        restored: Restored<K, V>,
        derive: impl FnMut(&K, &V, &mut Derived),
    ) -> Result<Self> {
        let raw = env.restored_raw;
        Ok(match env.backend.kind {
            StateBackendKind::HashMap => Table::Heap(HeapTable::open(spec, restored, raw, derive)?),
            StateBackendKind::Disk => {
                let max_parallelism = env.max_parallelism.max(1);
                let table = DiskTable::open(env.backend, &env.instance, max_parallelism, spec, restored, raw, derive)?;
                Table::Disk(Box::new(table))
            }
        })
    }
}

/// For looking at what a backend keeps (tests, diagnostics): operators never branch on these.
impl<K, V> Table<K, V> {
    /// The heap backend's table, if it holds this one.
    pub fn heap(&self) -> Option<&HeapTable<K, V>> {
        match self {
            Table::Heap(t) => Some(t),
            Table::Disk(_) => None,
        }
    }

    /// The disk backend's table, if it holds this one.
    pub fn disk(&self) -> Option<&DiskTable<K, V>> {
        match self {
            Table::Heap(_) => None,
            Table::Disk(t) => Some(t),
        }
    }
}

/// Work on a keyed table, whichever backend holds it: [`Table::with`] calls it with the backend's
/// own table type, so the per-record calls inside are static and inline (no dispatch per record).
/// For an operator's per-batch loop.
pub trait TableFn<K, V> {
    /// What it gives.
    type Out;
    /// Does the work on `table`.
    fn call<T: KeyedTable<K, V>>(self, table: &mut T) -> Self::Out;
}

/// Work on time windows, whichever backend holds them (see [`TableFn`]).
pub trait WindowsFn<K, A> {
    /// What it gives.
    type Out;
    /// Does the work on `windows`.
    fn call<W: WindowStore<K, A>>(self, windows: &mut W) -> Self::Out;
}

impl<K, V> Table<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// Does `work` with the backend's own table.
    #[inline]
    pub fn with<F: TableFn<K, V>>(&mut self, work: F) -> F::Out {
        match self {
            Table::Heap(t) => work.call(t),
            Table::Disk(t) => work.call(&mut **t),
        }
    }
}

/// Calls the same method on whichever backend holds the table.
macro_rules! each {
    ($self:expr, $t:ident => $call:expr) => {
        match $self {
            Table::Heap($t) => $call,
            Table::Disk($t) => $call,
        }
    };
}

impl<K, V> KeyedTable<K, V> for Table<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    #[inline]
    fn update<T, R>(
        &mut self,
        key: K,
        input: T,
        f: impl FnOnce(&mut V, T) -> R,
        absent: impl FnOnce(T) -> (V, R),
    ) -> Result<R> {
        each!(self, t => t.update(key, input, f, absent))
    }

    #[inline]
    fn entry(&mut self, key: &K, absent: impl FnOnce() -> V) -> Result<(&mut V, bool)> {
        each!(self, t => t.entry(key, absent))
    }

    #[inline]
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut V>> {
        each!(self, t => t.get_mut(key))
    }

    #[inline]
    fn remove(&mut self, key: &K) -> Result<()> {
        each!(self, t => t.remove(key))
    }

    fn add_timer(&mut self, queue: usize, at: Timestamp, key: &K) -> Result<()> {
        each!(self, t => t.add_timer(queue, at, key))
    }

    fn pop_timer(&mut self, queue: usize, until: Timestamp) -> Result<Option<(Timestamp, K)>> {
        each!(self, t => t.pop_timer(queue, until))
    }

    fn snapshot(
        &mut self,
        id: CheckpointId,
        completed: CheckpointId,
        encode: impl FnOnce(HeapView<'_, K, V>) -> Result<KeyedChunks>,
    ) -> Result<StateSnapshot> {
        each!(self, t => t.snapshot(id, completed, encode))
    }

    fn for_each(&mut self, f: impl FnMut(&K, &V) -> Result<()>) -> Result<()> {
        each!(self, t => t.for_each(f))
    }
}

/// Time windows in the backend the job configured.
pub enum Windows<K, A> {
    /// `state.backend.type: hashmap`.
    Heap(HeapWindows<K, A>),
    /// `state.backend.type: disk`.
    Disk(Box<DiskWindowStore<K, A>>),
}

impl<K, A> Windows<K, A>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    /// The windows of the operator instance `env` describes, in its job's backend, holding what it
    /// restored: `typed` (the heap backend's entries) and the disk backend's raw state in `env`.
    pub fn open(env: &StateEnv<'_>, mut typed: WindowEntries<K, A>) -> Result<Self> {
        let max_parallelism = env.max_parallelism.max(1);
        Ok(match env.backend.kind {
            StateBackendKind::HashMap => {
                typed.extend(crate::disk::windows::decode_raw::<K, A>(env.restored_raw)?);
                Windows::Heap(HeapWindows::restored(typed))
            }
            StateBackendKind::Disk => {
                let key_groups = weir_core::keygroup::key_group_range(max_parallelism, env.parallelism, env.subtask);
                let (config, raw) = (env.backend, env.restored_raw);
                let store = DiskWindowStore::open(config, &env.instance, max_parallelism, key_groups, raw, typed)?;
                Windows::Disk(Box::new(store))
            }
        })
    }
}

impl<K, A> Windows<K, A>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    /// Does `work` with the backend's own windows.
    #[inline]
    pub fn with<F: WindowsFn<K, A>>(&mut self, work: F) -> F::Out {
        match self {
            Windows::Heap(w) => work.call(w),
            Windows::Disk(w) => work.call(&mut **w),
        }
    }
}

impl<K, A> WindowStore<K, A> for Windows<K, A>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    #[inline]
    fn add(&mut self, end: Timestamp, key: &K, open: bool, create: impl FnOnce() -> A) -> Result<(&mut A, bool)> {
        match self {
            Windows::Heap(w) => w.add(end, key, open, create),
            Windows::Disk(w) => w.add(end, key, open, create),
        }
    }

    fn advance(&mut self, time: Timestamp, lateness: i64, emit: impl FnMut(Timestamp, &K, &A)) -> Result<()> {
        match self {
            Windows::Heap(w) => w.advance(time, lateness, emit),
            Windows::Disk(w) => w.advance(time, lateness, emit),
        }
    }

    fn snapshot(&mut self, id: CheckpointId, completed: CheckpointId, max_parallelism: u32) -> Result<StateSnapshot> {
        match self {
            Windows::Heap(w) => w.snapshot(id, completed, max_parallelism),
            Windows::Disk(w) => w.snapshot(id, completed, max_parallelism),
        }
    }
}
