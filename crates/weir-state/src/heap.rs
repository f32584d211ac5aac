//! The heap backend's keyed table: values in a hash map, timers in ordered maps, all in memory;
//! snapshots encoded at the barrier in the operator's format.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

use serde::de::DeserializeOwned;
use weir_core::{Error, Result};

use super::backend::{Derived, HeapView, KeyedTable, Restored, StateSnapshot, TableSpec};
use crate::disk::KeyedChunks;
use crate::map::{StateHasher, StateMap};
use crate::time::Timestamp;
use weir_checkpoint::CheckpointId;
use weir_checkpoint::file::RawState;

/// One timer queue on the heap: keys by time, and the set of those queued (so a timer is queued
/// once).
struct HeapQueue<K> {
    by_time: BTreeMap<Timestamp, Vec<K>>,
    live: HashSet<(Timestamp, K), StateHasher>,
}

impl<K> Default for HeapQueue<K> {
    fn default() -> Self {
        HeapQueue { by_time: BTreeMap::new(), live: HashSet::default() }
    }
}

/// Keyed values and their timer queues in memory.
pub struct HeapTable<K, V> {
    values: StateMap<K, V>,
    queues: Vec<HeapQueue<K>>,
}

impl<K, V> Default for HeapTable<K, V> {
    /// An empty table without timer queues.
    fn default() -> Self {
        HeapTable { values: StateMap::default(), queues: Vec::new() }
    }
}

impl<K, V> HeapTable<K, V> {
    /// An empty table with `queues` timer queues (before the operator opens and restores).
    pub fn with_queues(queues: usize) -> Self {
        let mut table = HeapTable::default();
        table.queues.resize_with(queues, HeapQueue::default);
        table
    }
}

impl<K: Hash + Eq + Clone + DeserializeOwned, V: DeserializeOwned> HeapTable<K, V> {
    /// A table of `spec`'s shape holding what was restored: `restored` (the heap backend's
    /// entries and timers) and `raw` (what the disk backend wrote: values, and the timers of
    /// queues kept in snapshots); `derive` gives each value's timers in derived queues.
    pub fn open(
        spec: TableSpec<K>,
        restored: Restored<K, V>,
        raw: &RawState,
        mut derive: impl FnMut(&K, &V, &mut Derived),
    ) -> Result<Self> {
        let mut table = HeapTable::with_queues(spec.queues.len());
        table.values.extend(restored.entries);
        crate::disk::apply_raw(raw, &mut table.values)?;
        for (q, queue) in spec.queues.iter().enumerate() {
            if queue.derived {
                continue;
            }
            for (at, payload) in crate::disk::timers::read_raw(raw, queue.tag)? {
                let key: K = crate::disk::decode(&payload)?;
                table.add_timer(q, at, &key)?;
            }
        }
        let mut derived = Vec::new();
        let mut found = Vec::new();
        for (k, v) in &table.values {
            derived.clear();
            derive(k, v, &mut derived);
            found.extend(derived.iter().map(|&(q, at)| (q, at, k.clone())));
        }
        for (q, at, k) in found.into_iter().chain(restored.timers) {
            table.add_timer(q, at, &k)?;
        }
        Ok(table)
    }
}

impl<K: Hash + Eq + Clone, V> HeapTable<K, V> {
    /// Keys with a value.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Entries in `queue`'s memory (live timers, and those left behind by removals).
    pub fn queued(&self, queue: usize) -> usize {
        self.queues.get(queue).map_or(0, |q| q.by_time.values().map(Vec::len).sum::<usize>().max(q.live.len()))
    }

    fn queue(&mut self, queue: usize) -> Result<&mut HeapQueue<K>> {
        self.queues.get_mut(queue).ok_or_else(|| Error::internal(format!("a keyed table has no timer queue {queue}")))
    }
}

impl<K: Hash + Eq + Clone, V> KeyedTable<K, V> for HeapTable<K, V> {
    #[inline]
    fn update<T, R>(
        &mut self,
        key: K,
        input: T,
        f: impl FnOnce(&mut V, T) -> R,
        absent: impl FnOnce(T) -> (V, R),
    ) -> Result<R> {
        Ok(match self.values.entry(key) {
            Entry::Occupied(e) => f(e.into_mut(), input),
            Entry::Vacant(e) => {
                let (value, r) = absent(input);
                e.insert(value);
                r
            }
        })
    }

    #[inline]
    fn entry(&mut self, key: &K, absent: impl FnOnce() -> V) -> Result<(&mut V, bool)> {
        // A lookup first: the key is cloned only when it is new.
        if self.values.contains_key(key) {
            let v = self.values.get_mut(key).ok_or_else(|| Error::internal("a heap value went away"))?;
            return Ok((v, false));
        }
        Ok((self.values.entry(key.clone()).or_insert_with(absent), true))
    }

    #[inline]
    fn get_mut(&mut self, key: &K) -> Result<Option<&mut V>> {
        Ok(self.values.get_mut(key))
    }

    #[inline]
    fn remove(&mut self, key: &K) -> Result<()> {
        self.values.remove(key);
        Ok(())
    }

    fn add_timer(&mut self, queue: usize, at: Timestamp, key: &K) -> Result<()> {
        let q = self.queue(queue)?;
        if q.live.insert((at, key.clone())) {
            q.by_time.entry(at).or_default().push(key.clone());
        }
        Ok(())
    }

    fn pop_timer(&mut self, queue: usize, until: Timestamp) -> Result<Option<(Timestamp, K)>> {
        let q = self.queue(queue)?;
        while let Some(mut entry) = q.by_time.first_entry() {
            let at = *entry.key();
            if at > until {
                break;
            }
            let Some(k) = entry.get_mut().pop() else {
                entry.remove();
                continue;
            };
            // (Ownership of the key moves out of the set entry only once found.)
            if let Some((_, k)) = q.live.take(&(at, k)) {
                return Ok(Some((at, k)));
            }
        }
        Ok(None)
    }

    fn snapshot(
        &mut self,
        _id: CheckpointId,
        _completed: CheckpointId,
        encode: impl FnOnce(HeapView<'_, K, V>) -> Result<KeyedChunks>,
    ) -> Result<StateSnapshot> {
        let timers = self.queues.iter().map(|q| q.live.iter().map(|(at, k)| (*at, k)).collect()).collect();
        Ok(StateSnapshot::keyed(encode(HeapView { values: &self.values, timers })?))
    }

    fn for_each(&mut self, mut f: impl FnMut(&K, &V) -> Result<()>) -> Result<()> {
        self.values.iter().try_for_each(|(k, v)| f(k, v))
    }
}
