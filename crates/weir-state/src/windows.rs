//! The heap backend's time windows: a hash map of accumulators per window end, the ends in a
//! short sorted list (there are few at a time: a linear layout with a cached position beats a
//! tree on the per-record path).

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

use serde::Serialize;
use weir_core::Result;

use super::backend::{StateSnapshot, WindowStore};
use crate::map::StateMap;
use crate::time::Timestamp;
use weir_checkpoint::CheckpointId;

/// Time windows on the heap.
pub struct HeapWindows<K, A> {
    /// Windows not fired yet, sorted by end.
    pending: VecDeque<(Timestamp, StateMap<K, A>)>,
    /// Windows fired and kept for late records, by end.
    fired: BTreeMap<Timestamp, StateMap<K, A>>,
    /// No window in `fired` ends after this, except windows complete already. (Only a restore
    /// from subtasks that had different watermarks leaves fired windows after the watermark:
    /// records for them must update them, not open new pending windows.)
    fired_until: Timestamp,
    /// Where in `pending` the last record went: consecutive records usually share a window.
    current: usize,
    /// Keys in the last window that fired: new windows start with room for as many.
    expected_keys: usize,
}

impl<K, A> Default for HeapWindows<K, A> {
    fn default() -> Self {
        HeapWindows {
            pending: VecDeque::new(),
            fired: BTreeMap::new(),
            fired_until: Timestamp::MIN,
            current: usize::MAX,
            expected_keys: 0,
        }
    }
}

impl<K: Hash + Eq, A> HeapWindows<K, A> {
    /// Windows holding restored entries `(key, (end, fired, accumulator))`.
    pub fn restored(entries: Vec<(K, (Timestamp, bool, A))>) -> Self {
        let mut windows = HeapWindows::default();
        for (k, (end, fired, acc)) in entries {
            if fired {
                windows.fired.entry(end).or_default().insert(k, acc);
                windows.fired_until = windows.fired_until.max(end);
            } else {
                let i = windows.pending.partition_point(|(e, _)| *e < end);
                if windows.pending.get(i).is_none_or(|(e, _)| *e != end) {
                    windows.pending.insert(i, (end, StateMap::default()));
                }
                windows.pending[i].1.insert(k, acc);
            }
        }
        windows
    }
}

impl<K: Hash + Eq + Clone + Serialize, A: Serialize> WindowStore<K, A> for HeapWindows<K, A> {
    #[inline]
    fn add(&mut self, end: Timestamp, key: &K, open: bool, create: impl FnOnce() -> A) -> Result<(&mut A, bool)> {
        let fired_already = end <= self.fired_until && self.fired.get(&end).is_some_and(|m| m.contains_key(key));
        if open && !fired_already {
            let pending = &mut self.pending;
            if pending.get(self.current).is_none_or(|(e, _)| *e != end) {
                self.current = pending.partition_point(|(e, _)| *e < end);
                if pending.get(self.current).is_none_or(|(e, _)| *e != end) {
                    let states = StateMap::with_capacity_and_hasher(self.expected_keys, Default::default());
                    pending.insert(self.current, (end, states));
                }
            }
            let acc = pending[self.current].1.entry(key.clone()).or_insert_with(create);
            return Ok((acc, false));
        }
        let acc = self.fired.entry(end).or_default().entry(key.clone()).or_insert_with(create);
        Ok((acc, true))
    }

    fn advance(&mut self, time: Timestamp, lateness: i64, mut emit: impl FnMut(Timestamp, &K, &A)) -> Result<()> {
        while let Some((end, _)) = self.pending.front() {
            let end = *end;
            if end - 1 > time {
                break;
            }
            let Some((_, states)) = self.pending.pop_front() else { break };
            self.current = usize::MAX;
            self.expected_keys = states.len();
            for (k, acc) in &states {
                emit(end, k, acc);
            }
            if (end - 1).saturating_add(lateness) > time {
                match self.fired.entry(end) {
                    // Restored fired windows of this end (from a subtask that was further on).
                    std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().extend(states),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(states);
                    }
                }
                self.fired_until = self.fired_until.max(end);
            }
        }
        while let Some(entry) = self.fired.first_entry() {
            if (entry.key() - 1).saturating_add(lateness) > time {
                break;
            }
            entry.remove();
        }
        Ok(())
    }

    fn snapshot(&mut self, _: CheckpointId, _: CheckpointId, max_parallelism: u32) -> Result<StateSnapshot> {
        let pending = self.pending.iter().flat_map(|(end, m)| m.iter().map(move |(k, acc)| (k, (*end, false, acc))));
        let fired = self.fired.iter().flat_map(|(end, m)| m.iter().map(move |(k, acc)| (k, (*end, true, acc))));
        Ok(StateSnapshot::keyed(weir_checkpoint::snapshot_keyed_entries(pending.chain(fired), max_parallelism)?))
    }
}
