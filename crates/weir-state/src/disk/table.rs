//! The disk backend's keyed table: values in the instance's store behind a cache
//! ([`DiskKeyed`]), and timer queues kept aside in the same store ([`DiskTimerQueue::aside`]), so
//! that neither is bounded by memory.

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::checkpointing::StateBackendConfig;
use weir_core::{Error, Result};

use super::timers::DiskTimerQueue;
use super::{DiskKeyed, KeyedChunks, decode, encode};
use crate::backend::{Derived, HeapView, KeyedTable, Restored, StateSnapshot, TableSpec};
use crate::time::Timestamp;
use weir_checkpoint::CheckpointId;
use weir_checkpoint::file::RawState;

/// Keyed values and their timer queues in the disk backend.
pub struct DiskTable<K, V> {
    values: DiskKeyed<K, V>,
    queues: Vec<DiskTimerQueue>,
    group: fn(&K, u32) -> u32,
    max_parallelism: u32,
}

impl<K, V> DiskTable<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A table of `spec`'s shape in a store of its own (`name` makes its directory unique) holding
    /// what was restored: `raw` (a disk snapshot: values and queues) and `restored` (the heap
    /// backend's entries and timers); `derive` gives each value's timers in derived queues, written
    /// in one pass over the restored values.
    pub fn open(
        config: &StateBackendConfig,
        name: &str,
        max_parallelism: u32,
        spec: TableSpec<K>,
        restored: Restored<K, V>,
        raw: &RawState,
        mut derive: impl FnMut(&K, &V, &mut Derived),
    ) -> Result<Self> {
        let mut values = DiskKeyed::open_grouped(config, name, max_parallelism, spec.group)?;
        let any = !raw.is_empty() || !restored.entries.is_empty();
        values.restore_entries(raw, restored.entries)?;
        let mut queues: Vec<DiskTimerQueue> =
            spec.queues.iter().map(|q| DiskTimerQueue::aside(q.tag.to_vec())).collect();
        if any {
            // Derived queues are written from the store's values, whatever wrote them (a disk
            // snapshot holds them too; writing them again changes nothing). Then every queue finds
            // its key groups' first entries.
            let mut derived = Vec::new();
            values.index_aside(|k, v, out| {
                derived.clear();
                derive(&k, &v, &mut derived);
                let kg = (spec.group)(&k, max_parallelism);
                let payload = encode(&k)?;
                for &(q, at) in &derived {
                    let queue = queues.get(q).ok_or_else(|| no_queue(q))?;
                    out.push((queue.key(kg, at, &payload), Some(Vec::new())));
                }
                Ok(())
            })?;
            for q in &mut queues {
                q.rebuild(values.store_mut())?;
            }
        }
        let mut table = DiskTable { values, queues, group: spec.group, max_parallelism };
        for (q, at, k) in restored.timers {
            table.add_timer(q, at, &k)?;
        }
        Ok(table)
    }
}

fn no_queue(q: usize) -> Error {
    Error::internal(format!("a keyed table has no timer queue {q}"))
}

impl<K, V> KeyedTable<K, V> for DiskTable<K, V>
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
        self.values.update(key, input, f, absent)
    }

    #[inline]
    fn entry(&mut self, key: &K, absent: impl FnOnce() -> V) -> Result<(&mut V, bool)> {
        self.values.entry(key, absent)
    }

    #[inline]
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut V>> {
        self.values.get_mut(key)
    }

    #[inline]
    fn remove(&mut self, key: &K) -> Result<()> {
        self.values.remove(key)
    }

    fn add_timer(&mut self, queue: usize, at: Timestamp, key: &K) -> Result<()> {
        let kg = (self.group)(key, self.max_parallelism);
        let q = self.queues.get_mut(queue).ok_or_else(|| no_queue(queue))?;
        let sk = q.key(kg, at, &encode(key)?);
        self.values.store_mut().write(vec![(kg, sk.clone(), Some(Vec::new()))])?;
        q.noted(kg, &sk)
    }

    fn pop_timer(&mut self, queue: usize, until: Timestamp) -> Result<Option<(Timestamp, K)>> {
        let q = self.queues.get_mut(queue).ok_or_else(|| no_queue(queue))?;
        match q.pop_due(self.values.store_mut(), until)? {
            Some((at, payload)) => Ok(Some((at, decode(&payload)?))),
            None => Ok(None),
        }
    }

    fn snapshot(
        &mut self,
        id: CheckpointId,
        completed: CheckpointId,
        _encode: impl FnOnce(HeapView<'_, K, V>) -> Result<KeyedChunks>,
    ) -> Result<StateSnapshot> {
        Ok(StateSnapshot::deferred(self.values.snapshot(id, completed)?))
    }

    fn for_each(&mut self, mut f: impl FnMut(&K, &V) -> Result<()>) -> Result<()> {
        self.values.for_each(|k, v| f(&k, &v))
    }
}

impl<K, V> DiskTable<K, V> {
    /// The store under the table, for looking at what it keeps (tests, diagnostics).
    pub fn store(&self) -> &super::RawStore {
        self.values.store()
    }

    /// Key groups that may hold timers of `queue`: what memory holds of the queue.
    pub fn queue_key_groups(&self, queue: usize) -> usize {
        self.queues.get(queue).map_or(0, DiskTimerQueue::key_groups)
    }
}
