//! Time windows' state in the disk backend: one accumulator per key and window, on local disk
//! with a bounded cache of decoded accumulators in front.
//!
//! A window's entry is stored under `key group (2 bytes) ++ window end (8 bytes, ordered) ++
//! encoded key`, with `(fired, accumulator)` as its value. All windows of one end in one key
//! group share a prefix, so firing the windows that end at a time is one prefix scan per key
//! group of the instance, and the windows' ends need no per-key timers: the operator keeps the
//! few distinct ends in memory. A scan of the whole store still yields entries by key group, the
//! order a full snapshot is written in, so checkpoints, increments and restores work as for any
//! other keyed state of the backend ([`RawStore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::ops::Range;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::checkpointing::StateBackendConfig;
use weir_core::{Error, Result};

use super::{DiskSnapshot, RawStore, StoreWrite, decode, encode};
use crate::backend::{StateSnapshot, WindowStore};
use crate::map::StateMap;
use crate::time::Timestamp;
use weir_checkpoint::file::RawState;
use weir_checkpoint::{CheckpointId, decode_raw_chunk};

/// Windows in the heap backend's snapshot format: `(key, (end, fired, accumulator))`.
pub type WindowEntries<K, A> = Vec<(K, (Timestamp, bool, A))>;

/// One key's window, as the operator sees it.
pub struct Slot<A> {
    /// The accumulator.
    pub acc: A,
    /// Whether the window fired already (it is kept for late records within the allowed lateness).
    pub fired: bool,
    dirty: bool,
}

/// The windows of one operator instance on local disk: accumulators by window end and key.
pub struct DiskWindows<K, A> {
    /// Cached slots by window end, then key.
    cache: BTreeMap<Timestamp, StateMap<K, Slot<A>>>,
    /// Slots in the cache.
    cached: usize,
    store: RawStore,
    /// The key groups of the instance: where a window end's entries are looked for.
    key_groups: Range<u32>,
}

/// Bytes of a store key before the encoded record key.
const PREFIX_LEN: usize = 10;

/// The store key prefix of the windows ending at `end` in key group `kg`. The end's sign bit is
/// flipped so that ends sort as bytes as they do as numbers.
fn prefix(kg: u32, end: Timestamp) -> [u8; PREFIX_LEN] {
    let mut out = [0u8; PREFIX_LEN];
    out[..2].copy_from_slice(&(kg as u16).to_be_bytes());
    out[2..].copy_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    out
}

/// The window end a store key names.
fn end_of(key: &[u8]) -> Result<Timestamp> {
    let bytes: [u8; 8] = key.get(2..PREFIX_LEN).and_then(|b| b.try_into().ok()).ok_or_else(|| {
        Error::damaged(
            "the disk state backend's store",
            format!(
                "a window key of {} bytes is too short to name its window (damaged, or written by another kind of \
                 operator under this uid); restore with the program that wrote the snapshot",
                key.len()
            ),
        )
    })?;
    Ok((u64::from_be_bytes(bytes) ^ (1 << 63)) as Timestamp)
}

/// The store key of `key`'s window ending at `end`.
fn window_key<K: Serialize>(kg: u32, end: Timestamp, key: &K) -> Result<Vec<u8>> {
    let encoded = encode(key)?;
    let mut out = Vec::with_capacity(PREFIX_LEN + encoded.len());
    out.extend_from_slice(&prefix(kg, end));
    out.extend_from_slice(&encoded);
    Ok(out)
}

/// The store write of a slot.
fn slot_write<K: Hash + Serialize, A: Serialize>(
    store: &RawStore,
    end: Timestamp,
    key: &K,
    slot: &Slot<A>,
) -> Result<StoreWrite> {
    let kg = store.key_group(key);
    Ok((kg, window_key(kg, end, key)?, Some(encode(&(slot.fired, &slot.acc))?)))
}

impl<K, A> DiskWindows<K, A>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    /// A store for one operator instance that owns `key_groups` (`name` makes its working
    /// directory unique) under the configured directory; removed when dropped.
    pub fn open(config: &StateBackendConfig, name: &str, max_parallelism: u32, key_groups: Range<u32>) -> Result<Self> {
        Ok(DiskWindows {
            cache: BTreeMap::new(),
            cached: 0,
            store: RawStore::open(config, name, max_parallelism)?,
            key_groups,
        })
    }

    /// Loads restored state: raw chunks (in the order they apply) and entries of the heap
    /// backend's format, `(key, (end, fired, accumulator))`. Returns the ends of the windows that
    /// hold state, found with one seek per end and key group.
    pub fn restore(&mut self, raw: &RawState, typed: WindowEntries<K, A>) -> Result<BTreeSet<Timestamp>> {
        self.store.restore(raw)?;
        let mut batch = Vec::with_capacity(typed.len());
        for (k, (end, fired, acc)) in typed {
            batch.push((window_key(self.store.key_group(&k), end, &k)?, Some(encode(&(fired, acc))?)));
        }
        // Not changes since a snapshot: the next snapshot is a full one.
        self.store.restore_entries(batch)?;
        let mut ends = BTreeSet::new();
        for kg in self.key_groups.clone() {
            let group = (kg as u16).to_be_bytes();
            let mut from = prefix(kg, Timestamp::MIN).to_vec();
            while let Some(k) = self.store.next_key(&from)? {
                if k.get(..2) != Some(&group[..]) {
                    break;
                }
                let end = end_of(&k)?;
                ends.insert(end);
                if end == Timestamp::MAX {
                    break;
                }
                from = prefix(kg, end + 1).to_vec();
            }
        }
        Ok(ends)
    }

    /// `key`'s window ending at `end`, read from the store, or made with `create` when it holds
    /// nothing yet; counted as changed.
    #[inline]
    pub fn slot(&mut self, end: Timestamp, key: &K, create: impl FnOnce() -> A) -> Result<&mut Slot<A>> {
        if !self.cache.get(&end).is_some_and(|m| m.contains_key(key)) {
            if self.cached >= self.store.capacity() {
                self.evict()?;
            }
            let slot = match self.store.get(&window_key(self.store.key_group(key), end, key)?)? {
                Some(bytes) => {
                    let (fired, acc): (bool, A) = decode(&bytes)?;
                    Slot { acc, fired, dirty: true }
                }
                None => Slot { acc: create(), fired: false, dirty: true },
            };
            self.cache.entry(end).or_default().insert(key.clone(), slot);
            self.cached += 1;
        }
        let slot = self
            .cache
            .get_mut(&end)
            .and_then(|m| m.get_mut(key))
            .ok_or_else(|| Error::internal("a window slot left the cache as it was loaded"))?;
        slot.dirty = true;
        Ok(slot)
    }

    /// Writes an eighth of the cached slots back (those that changed) and drops them; windows
    /// that end last fire last, so theirs leave first.
    fn evict(&mut self) -> Result<()> {
        let mut n = (self.store.capacity() / 8).max(1);
        let mut batch = Vec::new();
        while n > 0 {
            let Some(mut last) = self.cache.last_entry() else { break };
            let end = *last.key();
            let map = last.get_mut();
            let victims: Vec<K> = map.keys().take(n).cloned().collect();
            for k in victims {
                if let Some(slot) = map.remove(&k) {
                    n -= 1;
                    self.cached -= 1;
                    if slot.dirty {
                        batch.push(slot_write(&self.store, end, &k, &slot)?);
                    }
                }
            }
            if map.is_empty() {
                last.remove();
            }
        }
        self.store.write(batch)
    }

    /// Writes the cached slots of the windows ending at `end` to the store and drops them.
    fn write_back(&mut self, end: Timestamp) -> Result<()> {
        let Some(map) = self.cache.remove(&end) else { return Ok(()) };
        self.cached -= map.len();
        let mut batch = Vec::new();
        for (k, slot) in map.iter().filter(|(_, s)| s.dirty) {
            batch.push(slot_write(&self.store, end, k, slot)?);
        }
        self.store.write(batch)
    }

    /// Calls `f` with every key's window ending at `end` that has not fired yet, key group by key
    /// group; then keeps them all, marked fired (`keep`: within the allowed lateness), or removes
    /// them.
    pub fn fire(&mut self, end: Timestamp, keep: bool, mut f: impl FnMut(&K, &A)) -> Result<()> {
        self.write_back(end)?;
        for kg in self.key_groups.clone() {
            let mut batch = Vec::new();
            self.store.scan_prefix(&prefix(kg, end), |k, v| {
                let (fired, acc): (bool, A) = decode(v)?;
                if !fired {
                    f(&decode(&k[PREFIX_LEN..])?, &acc);
                    if keep {
                        batch.push((kg, k.to_vec(), Some(encode(&(true, &acc))?)));
                    }
                }
                if !keep {
                    batch.push((kg, k.to_vec(), None));
                }
                Ok(())
            })?;
            self.store.write(batch)?;
        }
        Ok(())
    }

    /// Removes every key's window ending at `end`.
    pub fn expire(&mut self, end: Timestamp) -> Result<()> {
        if let Some(map) = self.cache.remove(&end) {
            self.cached -= map.len();
        }
        for kg in self.key_groups.clone() {
            let mut batch = Vec::new();
            self.store.scan_prefix(&prefix(kg, end), |k, _| {
                batch.push((kg, k.to_vec(), None));
                Ok(())
            })?;
            self.store.write(batch)?;
        }
        Ok(())
    }

    /// This instance's snapshot for checkpoint `id` (`completed`: the latest completed
    /// checkpoint), as [`RawStore::snapshot`] makes it; changed cached slots are written first.
    pub fn snapshot(&mut self, id: CheckpointId, completed: CheckpointId) -> Result<DiskSnapshot> {
        let mut batch = Vec::new();
        for (end, map) in &mut self.cache {
            for (k, slot) in map.iter_mut().filter(|(_, s)| s.dirty) {
                slot.dirty = false;
                batch.push(slot_write(&self.store, *end, k, slot)?);
            }
        }
        self.store.write(batch)?;
        self.store.snapshot(id, completed)
    }
}

/// Raw chunks the disk backend wrote for time windows, applied in order, as entries of the heap
/// backend's format `(key, (end, fired, accumulator))`: for a window operator on the heap backend
/// restoring what the disk backend wrote.
pub fn decode_raw<K: DeserializeOwned, A: DeserializeOwned>(raw: &RawState) -> Result<WindowEntries<K, A>> {
    let mut entries: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    raw.for_each(|kg, bytes| {
        for (k, v) in decode_raw_chunk(kg, bytes)? {
            match v {
                Some(v) => entries.insert(k, v),
                None => entries.remove(&k),
            };
        }
        Ok(())
    })?;
    entries
        .into_iter()
        .map(|(k, v)| {
            let (fired, acc): (bool, A) = decode(&v)?;
            Ok((decode(k.get(PREFIX_LEN..).unwrap_or_default())?, (end_of(&k)?, fired, acc)))
        })
        .collect()
}

/// Time windows in the disk backend as a [`WindowStore`]: the accumulators in the store, and the
/// distinct window ends in memory (those that may hold windows not fired yet, and those fired and
/// kept for late records).
pub struct DiskWindowStore<K, A> {
    windows: DiskWindows<K, A>,
    pending: BTreeSet<Timestamp>,
    fired: BTreeSet<Timestamp>,
}

impl<K, A> DiskWindowStore<K, A>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    /// The windows of one operator instance that owns `key_groups`, in a store of its own (`name`
    /// makes its directory unique), holding what was restored: `raw` (a disk snapshot) and
    /// `typed` (the heap backend's entries).
    pub fn open(
        config: &StateBackendConfig,
        name: &str,
        max_parallelism: u32,
        key_groups: Range<u32>,
        raw: &RawState,
        typed: WindowEntries<K, A>,
    ) -> Result<Self> {
        let mut windows = DiskWindows::open(config, name, max_parallelism, key_groups)?;
        // Every restored end may hold windows not fired yet; firing skips those that did.
        let pending = windows.restore(raw, typed)?;
        Ok(DiskWindowStore { windows, pending, fired: BTreeSet::new() })
    }
}

impl<K, A> WindowStore<K, A> for DiskWindowStore<K, A>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    A: Serialize + DeserializeOwned,
{
    #[inline]
    fn add(&mut self, end: Timestamp, key: &K, open: bool, create: impl FnOnce() -> A) -> Result<(&mut A, bool)> {
        let slot = self.windows.slot(end, key, create)?;
        if open && !slot.fired {
            self.pending.insert(end);
            return Ok((&mut slot.acc, false));
        }
        slot.fired = true;
        self.fired.insert(end);
        Ok((&mut slot.acc, true))
    }

    fn advance(&mut self, time: Timestamp, lateness: i64, mut emit: impl FnMut(Timestamp, &K, &A)) -> Result<()> {
        while let Some(&end) = self.pending.first() {
            if end - 1 > time {
                break;
            }
            self.pending.pop_first();
            let keep = (end - 1).saturating_add(lateness) > time;
            self.windows.fire(end, keep, |k, acc| emit(end, k, acc))?;
            if keep {
                self.fired.insert(end);
            }
        }
        while let Some(&end) = self.fired.first() {
            if (end - 1).saturating_add(lateness) > time {
                break;
            }
            self.fired.pop_first();
            self.windows.expire(end)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, id: CheckpointId, completed: CheckpointId, _: u32) -> Result<StateSnapshot> {
        Ok(StateSnapshot::deferred(self.windows.snapshot(id, completed)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path, incremental: bool, cache: usize) -> Result<DiskWindows<u64, u64>> {
        DiskWindows::open(&super::super::test_config(Some(dir), incremental, cache), "windows", 128, 0..128)
    }

    fn chunks(snapshot: DiskSnapshot) -> Result<Vec<(u32, Vec<u8>)>> {
        Ok(snapshot.made()?.0)
    }

    fn raw(chunks: &[(u32, Vec<u8>)]) -> RawState {
        RawState::from(chunks.to_vec())
    }

    /// The model: accumulators and fired flags by (end, key).
    type Model = BTreeMap<(Timestamp, u64), (u64, bool)>;

    fn as_model(entries: Vec<(u64, (Timestamp, bool, u64))>) -> Model {
        entries.into_iter().map(|(k, (end, fired, acc))| ((end, k), (acc, fired))).collect()
    }

    #[test]
    fn windows_fire_keep_expire_and_restore_like_the_model_with_a_small_cache() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        // 8 cached slots for 300 keys in up to 3 windows: most slots come from the store.
        let mut w = open(dir.path(), true, 8)?;
        let mut model = Model::new();
        let mut fired = Vec::new();
        let mut applied = Vec::new();
        let mut x = 7u64;
        for round in 0..6i64 {
            for _ in 0..900 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let (key, end) = (x % 300, (round + (x as i64 >> 20).rem_euclid(3)) * 100);
                let slot = w.slot(end, &key, || 0)?;
                slot.acc += 1;
                let m = model.entry((end, key)).or_insert((0, false));
                m.0 += 1;
                if slot.fired || m.1 {
                    assert_eq!((slot.acc, slot.fired), *m, "a late record finds its fired window");
                }
            }
            // The window ending at round*100 fires and is kept; the one before expires.
            let end = round * 100;
            let mut got = Vec::new();
            w.fire(end, true, |k, acc| got.push((*k, *acc)))?;
            let mut want: Vec<(u64, u64)> =
                model.iter_mut().filter(|((e, _), (_, f))| *e == end && !*f).map(|((_, k), (a, _))| (*k, *a)).collect();
            model.iter_mut().filter(|((e, _), _)| *e == end).for_each(|(_, v)| v.1 = true);
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "window {end} fires every key's unfired accumulator once");
            fired.extend(got);
            w.expire(end - 100)?;
            model.retain(|(e, _), _| *e != end - 100);
            let snapshot = w.snapshot(round as u64 + 1, round as u64)?;
            if matches!(snapshot, DiskSnapshot::Full(_)) {
                // A new chain.
                applied.clear();
            }
            applied.extend(chunks(snapshot)?);
            // The chain's links, applied in order, give the model back, on disk and on the heap.
            let mut back = open(dir.path(), false, 8)?;
            let ends = back.restore(&raw(&applied), Vec::new())?;
            assert_eq!(ends, model.keys().map(|(e, _)| *e).collect::<BTreeSet<_>>());
            let heap = decode_raw::<u64, u64>(&raw(&applied))?;
            assert_eq!(as_model(heap.clone()), model, "after round {round}");
            // And the heap format loads into a new store.
            let mut again = open(dir.path(), false, 4)?;
            assert_eq!(again.restore(&RawState::default(), heap)?, ends);
            assert_eq!(as_model(decode_raw(&raw(&chunks(again.snapshot(1, 0)?)?))?), model);
        }
        assert!(!fired.is_empty());
        Ok(())
    }

    #[test]
    fn a_window_fired_without_lateness_is_gone_and_ends_sort_across_zero() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut w = open(dir.path(), false, 2)?;
        for end in [-5, 0, 7, i64::MIN, i64::MAX] {
            for k in 0..3 {
                w.slot(end, &k, || 10)?.acc += 1;
            }
        }
        let mut back = open(dir.path(), false, 2)?;
        let ends = back.restore(&raw(&chunks(w.snapshot(1, 0)?)?), Vec::new())?;
        assert_eq!(ends.into_iter().collect::<Vec<_>>(), vec![i64::MIN, -5, 0, 7, i64::MAX]);
        let mut got = Vec::new();
        back.fire(-5, false, |k, acc| got.push((*k, *acc)))?;
        got.sort_unstable();
        assert_eq!(got, vec![(0, 11), (1, 11), (2, 11)]);
        // Fired without lateness: gone; a record for it starts a new window.
        assert_eq!(back.slot(-5, &1, || 0)?.acc, 0);
        let mut again = open(dir.path(), false, 2)?;
        let ends = again.restore(&raw(&chunks(back.snapshot(2, 1)?)?), Vec::new())?;
        assert_eq!(ends.into_iter().collect::<Vec<_>>(), vec![i64::MIN, -5, 0, 7, i64::MAX]);
        back.expire(-5)?;
        back.expire(i64::MAX)?;
        let restored = decode_raw::<u64, u64>(&raw(&chunks(back.snapshot(3, 2)?)?))?;
        assert_eq!(restored.len(), 9, "three keys in each of three windows: {restored:?}");
        assert!(restored.iter().all(|(_, (end, fired, acc))| [i64::MIN, 0, 7].contains(end) && !fired && *acc == 11));
        Ok(())
    }
}
