//! Keyed values of one operator instance in the disk backend's store, with a cache of decoded
//! values in front ([`DiskKeyed`]): what keyed aggregations, count windows, session windows and
//! the panes of custom triggers keep their state in.

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::checkpointing::StateBackendConfig;
use weir_core::{Error, Result};

use super::{ASIDE, DiskSnapshot, RawStore, decode, encode, is_aside};
use crate::map::StateMap;
use weir_checkpoint::file::RawState;
use weir_checkpoint::{CheckpointId, decode_raw_chunk};

/// A cached value: whether it changed since it was last written to the store, and whether the
/// store may hold a version of it (so that removing it must write a tombstone).
struct Cached<V> {
    value: V,
    dirty: bool,
    stored: bool,
}

/// Keyed values of one operator instance on local disk, with a cache in front.
pub struct DiskKeyed<K, V> {
    cache: StateMap<K, Cached<V>>,
    store: RawStore,
    /// The key group of a key (of the record key it holds).
    group: KeyGroupOf<K>,
}

/// The key group of a state key among a number of key groups: for a state key that is not the
/// record key itself (a key and a window, say), the record key's.
pub type KeyGroupOf<K> = fn(&K, u32) -> u32;

/// The store key of `key` in key group `kg`: the key group, big-endian, then its encoding.
fn store_key<K: Serialize>(kg: u32, key: &K) -> Result<(u32, Vec<u8>)> {
    let encoded = bitcode::serialize(key).map_err(|e| Error::internal(format!("cannot encode a state key: {e}")))?;
    let mut out = Vec::with_capacity(2 + encoded.len());
    out.extend_from_slice(&(kg as u16).to_be_bytes());
    out.extend_from_slice(&encoded);
    Ok((kg, out))
}

impl<K, V> DiskKeyed<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A store for one operator instance (`name` makes its working directory unique) under the
    /// configured directory; removed when dropped.
    pub fn open(config: &StateBackendConfig, name: &str, max_parallelism: u32) -> Result<Self> {
        Self::open_grouped(config, name, max_parallelism, weir_core::keygroup::key_group::<K>)
    }

    /// Like [`DiskKeyed::open`], for state keys whose key group `group` tells.
    pub fn open_grouped(
        config: &StateBackendConfig,
        name: &str,
        max_parallelism: u32,
        group: KeyGroupOf<K>,
    ) -> Result<Self> {
        Ok(DiskKeyed { cache: StateMap::default(), store: RawStore::open(config, name, max_parallelism)?, group })
    }

    /// The store key of `key`, and its key group.
    fn key_of(&self, key: &K) -> Result<(u32, Vec<u8>)> {
        store_key((self.group)(key, self.store.max_parallelism), key)
    }

    /// Folds `input` into the value of `key` with `f`, or stores what `absent` makes of it when
    /// the key has no value; `f`'s or `absent`'s result.
    #[inline]
    pub fn update<T, R>(
        &mut self,
        key: K,
        input: T,
        f: impl FnOnce(&mut V, T) -> R,
        absent: impl FnOnce(T) -> (V, R),
    ) -> Result<R> {
        if let Some(c) = self.cache.get_mut(&key) {
            c.dirty = true;
            return Ok(f(&mut c.value, input));
        }
        let (cached, r) = match self.load(&key)? {
            Some(mut cached) => {
                let r = f(&mut cached.value, input);
                (cached, r)
            }
            None => {
                let (value, r) = absent(input);
                (Cached { value, dirty: true, stored: false }, r)
            }
        };
        self.cache.insert(key, cached);
        Ok(r)
    }

    /// The value of `key`, read from the store, or made with `absent` when the key has none;
    /// counted as changed.
    #[inline]
    pub fn value(&mut self, key: &K, absent: impl FnOnce() -> V) -> Result<&mut V> {
        Ok(self.entry(key, absent)?.0)
    }

    /// Like [`DiskKeyed::value`], and whether the value was made now.
    pub fn entry(&mut self, key: &K, absent: impl FnOnce() -> V) -> Result<(&mut V, bool)> {
        let mut made = false;
        if !self.cache.contains_key(key) {
            let loaded = self.load(key)?;
            made = loaded.is_none();
            let cached = loaded.unwrap_or_else(|| Cached { value: absent(), dirty: true, stored: false });
            self.cache.insert(key.clone(), cached);
        }
        let c = self.cache.get_mut(key).ok_or_else(|| Error::internal("a value left the cache as it was loaded"))?;
        c.dirty = true;
        Ok((&mut c.value, made))
    }

    /// The value of `key`, if it has one; counted as changed.
    pub fn get_mut(&mut self, key: &K) -> Result<Option<&mut V>> {
        if !self.cache.contains_key(key) {
            match self.load(key)? {
                Some(cached) => {
                    self.cache.insert(key.clone(), cached);
                }
                None => return Ok(None),
            }
        }
        Ok(self.cache.get_mut(key).map(|c| {
            c.dirty = true;
            &mut c.value
        }))
    }

    /// Reads `key`'s value from the store (not in the cache), making room in the cache first.
    fn load(&mut self, key: &K) -> Result<Option<Cached<V>>> {
        if self.cache.len() >= self.store.capacity() {
            self.evict()?;
        }
        let (_, sk) = self.key_of(key)?;
        match self.store.get(&sk)? {
            Some(bytes) => Ok(Some(Cached { value: decode(&bytes)?, dirty: true, stored: true })),
            None => Ok(None),
        }
    }

    /// Removes the value of `key` (the store is written to only when it may hold one).
    pub fn remove(&mut self, key: &K) -> Result<()> {
        if self.cache.remove(key).is_some_and(|c| !c.stored) {
            return Ok(());
        }
        let (kg, sk) = self.key_of(key)?;
        self.store.write(vec![(kg, sk, None)])
    }

    /// Writes an eighth of the cache's entries back (those that changed) and drops them.
    fn evict(&mut self) -> Result<()> {
        let n = (self.store.capacity() / 8).max(1);
        let victims: Vec<K> = self.cache.keys().take(n).cloned().collect();
        let mut batch = Vec::new();
        for k in victims {
            if let Some(c) = self.cache.remove(&k)
                && c.dirty
            {
                let (kg, sk) = self.key_of(&k)?;
                batch.push((kg, sk, Some(encode(&c.value)?)));
            }
        }
        self.store.write(batch)
    }

    /// Writes every changed cached value to the store.
    fn flush(&mut self) -> Result<()> {
        let mut batch = Vec::new();
        let (group, max_parallelism) = (self.group, self.store.max_parallelism);
        for (k, c) in self.cache.iter_mut().filter(|(_, c)| c.dirty) {
            c.dirty = false;
            c.stored = true;
            let (kg, sk) = store_key(group(k, max_parallelism), k)?;
            batch.push((kg, sk, Some(encode(&c.value)?)));
        }
        self.store.write(batch)
    }

    /// This instance's snapshot for checkpoint `id` (`completed`: the latest completed
    /// checkpoint), as [`RawStore::snapshot`] makes it; changed cached values are written to the
    /// store first.
    pub fn snapshot(&mut self, id: CheckpointId, completed: CheckpointId) -> Result<DiskSnapshot> {
        self.flush()?;
        self.store.snapshot(id, completed)
    }

    /// Loads restored state: raw chunks (in the order they apply) and typed chunks of the heap
    /// backend's format (`(K, V)` entries).
    pub fn restore(&mut self, raw: &RawState, typed: &[(u32, Vec<u8>)]) -> Result<()> {
        self.restore_entries(raw, weir_checkpoint::restore_keyed::<K, V>(typed)?)
    }

    /// Like [`DiskKeyed::restore`], with the heap backend's entries already decoded.
    pub fn restore_entries(&mut self, raw: &RawState, typed: Vec<(K, V)>) -> Result<()> {
        self.store.restore(raw)?;
        let mut batch = Vec::with_capacity(typed.len());
        for (k, v) in typed {
            batch.push((self.key_of(&k)?.1, Some(encode(&v)?)));
        }
        // Not a change since a snapshot: the next snapshot is a full one.
        self.store.engine.write(batch)
    }

    /// Calls `f` with every key and its value, decoded, in store order (the cache's changes
    /// written first).
    pub fn for_each(&mut self, mut f: impl FnMut(K, V) -> Result<()>) -> Result<()> {
        self.flush()?;
        self.store
            .engine
            .scan_to(&ASIDE.to_be_bytes(), |k, v| f(decode::<K>(k.get(2..).unwrap_or_default())?, decode::<V>(v)?))
    }

    /// Like [`DiskKeyed::for_each`], writing to the store the entries kept aside (store key and
    /// value) that `f` gives for each: for a restore, which indexes what it restored (they are not
    /// changes since a snapshot: the first snapshot after a restore is a full one anyway).
    pub fn index_aside(
        &mut self,
        mut f: impl FnMut(K, V, &mut Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()>,
    ) -> Result<()> {
        self.flush()?;
        let engine = &self.store.engine;
        let mut batch = Vec::new();
        engine.scan_to(&ASIDE.to_be_bytes(), |k, v| {
            let given = batch.len();
            f(decode::<K>(k.get(2..).unwrap_or_default())?, decode::<V>(v)?, &mut batch)?;
            if batch[given..].iter().any(|(k, _)| !is_aside(k)) {
                return Err(Error::internal("an index entry is not kept aside"));
            }
            if batch.len() >= 4096 {
                // (The scan reads a view from before these writes, and they sort after it.)
                engine.write(std::mem::take(&mut batch))?;
            }
            Ok(())
        })?;
        engine.write(batch)
    }

    /// Every entry, decoded.
    #[cfg(test)]
    fn entries(&mut self) -> Result<Vec<(K, V)>> {
        let mut out = Vec::new();
        self.for_each(|k, v| {
            out.push((k, v));
            Ok(())
        })?;
        Ok(out)
    }
}

impl<K, V> DiskKeyed<K, V> {
    /// The store under the cache, for looking at what it keeps.
    pub fn store(&self) -> &RawStore {
        &self.store
    }

    /// The store under the cache, for what is kept aside from the values (timers); values must go
    /// through the cache.
    pub fn store_mut(&mut self) -> &mut RawStore {
        &mut self.store
    }
}

/// Applies raw chunks (in order) to a map of decoded entries: for an operator on the heap backend
/// restoring what the disk backend wrote (entries kept aside are not values: skipped).
pub fn apply_raw<K, V>(raw: &RawState, into: &mut StateMap<K, V>) -> Result<()>
where
    K: Hash + Eq + DeserializeOwned,
    V: DeserializeOwned,
{
    raw.for_each(|kg, bytes| {
        for (k, v) in decode_raw_chunk(kg, bytes)? {
            if is_aside(&k) {
                continue;
            }
            let key: K = decode(k.get(2..).unwrap_or_default())?;
            match v {
                Some(v) => {
                    into.insert(key, decode(&v)?);
                }
                None => {
                    into.remove(&key);
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::super::{FULL_CHUNK_BYTES, KeyedChunks, MAX_CHAIN, MIN_CHANGED_BOUND, StoreWrite};
    use super::*;
    use std::collections::BTreeMap;
    use weir_checkpoint::DeferredSnapshot;

    fn store(dir: &std::path::Path, incremental: bool, cache: usize) -> Result<DiskKeyed<u64, u64>> {
        DiskKeyed::open(&super::super::test_config(Some(dir), incremental, cache), "test", 128)
    }

    /// The snapshot for checkpoint `id`, made at once: its chunks and the links it builds on.
    fn snap(s: &mut DiskKeyed<u64, u64>, id: CheckpointId, completed: CheckpointId) -> Result<(KeyedChunks, Vec<u64>)> {
        s.snapshot(id, completed)?.made()
    }

    /// The chunks a deferred full snapshot hands over.
    fn collect(make: DeferredSnapshot) -> Result<KeyedChunks> {
        let mut chunks = Vec::new();
        make(&mut |kg, bytes| {
            chunks.push((kg, bytes));
            Ok(())
        })?;
        Ok(chunks)
    }

    fn add(s: &mut DiskKeyed<u64, u64>, model: &mut BTreeMap<u64, u64>, k: u64, x: u64) -> Result<()> {
        let got = s.update(
            k,
            x,
            |a, x| {
                *a += x;
                *a
            },
            |x| (x, x),
        )?;
        let want = model.entry(k).and_modify(|a| *a += x).or_insert(x);
        assert_eq!(got, *want);
        Ok(())
    }

    #[test]
    fn increments_applied_in_order_give_the_state_back_at_any_cache_size() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        // A cache of 16 entries for 500 keys: most updates read from and write to the store.
        let mut s = store(dir.path(), true, 16)?;
        let mut model = BTreeMap::new();
        let mut chunks_in_order = Vec::new();
        let mut rng = 17u64;
        let mut sizes = Vec::new();
        for id in 1..=6u64 {
            let touched = if id == 1 { 5000 } else { 40 };
            for _ in 0..touched {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                add(&mut s, &mut model, rng % 500, id)?;
            }
            let (raw, links) = snap(&mut s, id, id - 1)?;
            assert_eq!(links, (1..id).collect::<Vec<_>>(), "checkpoint {id} builds on every earlier one");
            sizes.push(raw.iter().map(|(_, b)| b.len()).sum::<usize>());
            chunks_in_order.extend(raw);
        }
        assert!(sizes[5] * 5 < sizes[0], "an increment is much smaller than the full snapshot: {sizes:?}");
        // Restored into a new store, and into the heap backend: the same state.
        let mut back = store(dir.path(), true, 16)?;
        back.restore(&chunks_in_order.clone().into(), &[])?;
        let entries: BTreeMap<u64, u64> = back.entries()?.into_iter().collect();
        assert_eq!(entries, model);
        let mut heap = StateMap::default();
        apply_raw(&chunks_in_order.clone().into(), &mut heap)?;
        assert_eq!(heap.into_iter().collect::<BTreeMap<_, _>>(), model);
        Ok(())
    }

    #[test]
    fn a_chain_restarts_after_a_failed_checkpoint_and_at_its_longest() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut s = store(dir.path(), true, 4)?;
        let mut model = BTreeMap::new();
        for k in 0..20 {
            add(&mut s, &mut model, k, 1)?;
        }
        assert_eq!(snap(&mut s, 1, 0)?.1, Vec::<u64>::new());
        add(&mut s, &mut model, 3, 1)?;
        assert_eq!(snap(&mut s, 2, 1)?.1, vec![1]);
        // Checkpoint 2 did not complete: 3 is full again.
        let (raw, links) = snap(&mut s, 3, 1)?;
        assert!(links.is_empty());
        let mut heap = StateMap::default();
        apply_raw(&raw.clone().into(), &mut heap)?;
        assert_eq!(heap.into_iter().collect::<BTreeMap<_, _>>(), model);
        for id in 4..(3 + MAX_CHAIN as u64) {
            assert_eq!(snap(&mut s, id, id - 1)?.1.len(), (id - 3) as usize);
        }
        let id = 3 + MAX_CHAIN as u64;
        assert!(snap(&mut s, id, id - 1)?.1.is_empty(), "a full snapshot after {MAX_CHAIN} links");
        // Without incremental checkpoints every snapshot is full.
        let mut full = store(dir.path(), false, 4)?;
        add(&mut full, &mut BTreeMap::new(), 1, 1)?;
        assert!(snap(&mut full, 1, 0)?.1.is_empty() && snap(&mut full, 2, 1)?.1.is_empty());
        // The working directories go with their stores.
        drop((s, full));
        assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).unwrap_or(99), 0);
        Ok(())
    }

    #[test]
    fn a_set_of_changed_keys_past_its_bound_is_dropped_for_a_full_snapshot() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut s = store(dir.path(), true, 4)?;
        let mut model = BTreeMap::new();
        add(&mut s, &mut model, 1, 1)?;
        assert!(snap(&mut s, 1, 0)?.1.is_empty());
        let bound = s.store.changed_bound();
        assert_eq!(bound, MIN_CHANGED_BOUND, "a small cache gets the least bound");
        let batch = |from: u64, n: u64| -> Result<Vec<StoreWrite>> {
            (from..from + n)
                .map(|k| {
                    let (kg, sk) = store_key(weir_core::keygroup::key_group(&k, 128), &k)?;
                    Ok((kg, sk, Some(encode(&k)?)))
                })
                .collect()
        };
        // Up to the bound, an increment.
        s.store.write(batch(10, bound as u64)?)?;
        assert_eq!(s.store.changed.len(), bound);
        assert_eq!(snap(&mut s, 2, 1)?.1, vec![1]);
        // Past it, the set is dropped at once and the next snapshot is full, with every entry.
        s.store.write(batch(10, bound as u64 + 1)?)?;
        assert!(s.store.changed.is_empty() && s.store.changed_overflowed);
        s.store.write(batch(0, 3)?)?;
        assert!(s.store.changed.is_empty(), "nothing is gathered until the full snapshot");
        let (chunks, links) = snap(&mut s, 3, 2)?;
        assert!(links.is_empty(), "a full snapshot");
        let mut heap: StateMap<u64, u64> = StateMap::default();
        apply_raw(&chunks.into(), &mut heap)?;
        // Keys 0, 1, 2 and the bound's worth from 10 on.
        assert_eq!(heap.len(), bound + 4);
        // And the chain goes on from it.
        add(&mut s, &mut model, 1, 1)?;
        assert_eq!(snap(&mut s, 4, 3)?.1, vec![3]);
        Ok(())
    }

    #[test]
    fn a_full_snapshot_comes_in_bounded_chunks_even_within_one_key_group() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let config = super::super::test_config(Some(dir.path()), false, 64);
        // One key group: every entry falls in it.
        let mut s: DiskKeyed<u64, Vec<u8>> = DiskKeyed::open(&config, "wide", 1)?;
        let value = |k: u64| (0..1024).map(|i| (i as u64 ^ k) as u8).collect::<Vec<u8>>();
        for k in 0..10_000u64 {
            s.update(k, value(k), |v, x| *v = x, |x| (x, ()))?;
        }
        let DiskSnapshot::Full(make) = s.snapshot(1, 0)? else {
            return Err(Error::internal("expected a full snapshot"));
        };
        let chunks = collect(make)?;
        assert!(chunks.len() >= 2, "about 10 MiB comes in several chunks, not {}", chunks.len());
        assert!(chunks.iter().all(|(kg, c)| *kg == 0 && c.len() < FULL_CHUNK_BYTES + 4096));
        let mut heap: StateMap<u64, Vec<u8>> = StateMap::default();
        apply_raw(&chunks.clone().into(), &mut heap)?;
        assert_eq!(heap.len(), 10_000);
        assert!((0..10_000u64).all(|k| heap.get(&k) == Some(&value(k))));
        Ok(())
    }

    #[test]
    fn a_full_snapshot_made_later_holds_the_state_at_its_barrier() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut s = store(dir.path(), false, 8)?;
        let mut model = BTreeMap::new();
        for k in 0..100 {
            add(&mut s, &mut model, k, 1)?;
        }
        let DiskSnapshot::Full(make) = s.snapshot(1, 0)? else {
            return Err(Error::internal("expected a full snapshot"));
        };
        // Records go on before the writer thread gets to it.
        for k in 0..100 {
            add(&mut s, &mut BTreeMap::new(), k + 1000, 1)?;
            add(&mut s, &mut model.clone(), k, 5)?;
        }
        let chunks = std::thread::spawn(move || collect(make))
            .join()
            .map_err(|_| Error::internal("snapshot thread panicked"))??;
        let mut heap = StateMap::default();
        apply_raw(&chunks.clone().into(), &mut heap)?;
        assert_eq!(heap.into_iter().collect::<BTreeMap<_, _>>(), model);
        Ok(())
    }

    #[test]
    fn an_increment_made_later_holds_the_changes_up_to_its_barrier_with_removals() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut s = store(dir.path(), true, 8)?;
        let mut model = BTreeMap::new();
        for k in 0..100 {
            add(&mut s, &mut model, k, 1)?;
        }
        let (base, _) = snap(&mut s, 1, 0)?;
        for k in 0..10 {
            add(&mut s, &mut model, k, 1)?;
        }
        s.remove(&50)?;
        model.remove(&50);
        let DiskSnapshot::Increment(make, links) = s.snapshot(2, 1)? else {
            return Err(Error::internal("expected an increment"));
        };
        assert_eq!(links, vec![1]);
        // Records go on before the writer thread gets to it: changes, a new key, a removal.
        let mut later = model.clone();
        for k in 0..10 {
            add(&mut s, &mut later, k, 5)?;
        }
        add(&mut s, &mut later, 2000, 1)?;
        s.remove(&60)?;
        let delta = std::thread::spawn(move || collect(make))
            .join()
            .map_err(|_| Error::internal("snapshot thread panicked"))??;
        let entries: usize =
            delta.iter().map(|(kg, b)| decode_raw_chunk(*kg, b).map(|e| e.len())).sum::<Result<_>>()?;
        assert_eq!(entries, 11, "the ten changed keys and the removed one");
        let mut heap = StateMap::default();
        apply_raw(&base.into_iter().chain(delta).collect::<Vec<_>>().into(), &mut heap)?;
        assert_eq!(heap.into_iter().collect::<BTreeMap<_, _>>(), model);
        Ok(())
    }
}
