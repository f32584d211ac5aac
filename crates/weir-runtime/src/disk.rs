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
//! previous checkpoint did not complete, and after a restore.

pub mod engine;

use std::hash::Hash;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::checkpointing::StateBackendConfig;
use weir_core::{Error, Result};

use crate::checkpoint::{CheckpointId, RawEntry, decode_raw_chunk, raw_chunks};
use crate::operators::StateMap;
use engine::Engine;

/// Links of an incremental chain (a full snapshot and its increments) before a new full snapshot.
pub const MAX_CHAIN: usize = 10;

/// Encoded keyed state, one chunk per key group.
pub type KeyedChunks = Vec<(u32, Vec<u8>)>;

/// A disk-backed instance's snapshot for one checkpoint.
pub enum DiskSnapshot {
    /// The changes since the previous snapshot, and the earlier links they build on.
    Increment(KeyedChunks, Vec<CheckpointId>),
    /// Everything, made when called (from another thread: it reads a consistent view).
    Full(Box<dyn FnOnce() -> Result<KeyedChunks> + Send>),
}

/// Every entry of `view`, encoded one key group at a time as the scan goes.
fn full_snapshot(view: &engine::EngineSnapshot) -> Result<KeyedChunks> {
    let mut chunks = Vec::new();
    let mut group: Option<(u32, Vec<RawEntry>)> = None;
    view.scan(|k, v| {
        let kg = u32::from(u16::from_be_bytes([k[0], k[1]]));
        match &mut group {
            Some((g, entries)) if *g == kg => entries.push((k.to_vec(), Some(v.to_vec()))),
            _ => {
                if let Some((g, entries)) = group.replace((kg, vec![(k.to_vec(), Some(v.to_vec()))])) {
                    chunks.extend(raw_chunks(entries.into_iter().map(|e| (g, e)))?);
                }
            }
        }
        Ok(())
    })?;
    if let Some((g, entries)) = group {
        chunks.extend(raw_chunks(entries.into_iter().map(|e| (g, e)))?);
    }
    Ok(chunks)
}

/// A cached value: whether it changed since it was last written to the store.
struct Cached<V> {
    value: V,
    dirty: bool,
}

/// Keyed values of one operator instance on local disk, with a cache in front.
pub struct DiskKeyed<K, V> {
    cache: StateMap<K, Cached<V>>,
    /// Keys whose changes reached the store (evicted) since the last snapshot: key group, store
    /// key and the value written.
    changed: StateMap<K, (u32, Vec<u8>, Vec<u8>)>,
    engine: Engine,
    capacity: usize,
    max_parallelism: u32,
    incremental: bool,
    /// The links of the latest snapshot's chain, itself last (empty: none taken yet).
    chain: Vec<CheckpointId>,
    /// Bytes of the chain's full snapshot (set by the writer thread that makes it), and of its
    /// increments since.
    base_bytes: Arc<AtomicUsize>,
    increments_bytes: usize,
}

/// The store key of `key`: its key group, big-endian, then its encoding.
fn store_key<K: Hash + Serialize>(key: &K, max_parallelism: u32) -> Result<(u32, Vec<u8>)> {
    let kg = weir_core::keygroup::key_group(key, max_parallelism);
    let encoded = bitcode::serialize(key).map_err(|e| Error::internal(format!("cannot encode a state key: {e}")))?;
    let mut out = Vec::with_capacity(2 + encoded.len());
    out.extend_from_slice(&(kg as u16).to_be_bytes());
    out.extend_from_slice(&encoded);
    Ok((kg, out))
}

fn encode<V: Serialize>(v: &V) -> Result<Vec<u8>> {
    bitcode::serialize(v).map_err(|e| Error::internal(format!("cannot encode a state value: {e}")))
}

fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Result<V> {
    bitcode::deserialize(bytes).map_err(|e| {
        Error::Config(format!(
            "a stored state value cannot be read as {}: {e}; restore with the program that wrote it",
            std::any::type_name::<V>()
        ))
    })
}

impl<K, V> DiskKeyed<K, V>
where
    K: Hash + Eq + Clone + Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// A store for one operator instance (`name` makes its working directory unique) under the
    /// configured directory; removed when dropped.
    pub fn open(config: &StateBackendConfig, name: &str, max_parallelism: u32) -> Result<Self> {
        if max_parallelism > u32::from(u16::MAX) + 1 {
            return Err(Error::Config(format!(
                "the disk state backend supports up to 65536 key groups; pipeline.max-parallelism is {max_parallelism}"
            )));
        }
        let base = config.dir.as_ref().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("weir-state-{}-{name}", uuid::Uuid::new_v4().simple()));
        Ok(DiskKeyed {
            cache: StateMap::default(),
            changed: StateMap::default(),
            engine: Engine::open(&dir)?,
            capacity: config.cache_entries.max(1),
            max_parallelism,
            incremental: config.incremental,
            chain: Vec::new(),
            base_bytes: Arc::new(AtomicUsize::new(0)),
            increments_bytes: 0,
        })
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
        let (_, sk) = store_key(&key, self.max_parallelism)?;
        let r = match self.engine.get(&sk)? {
            Some(bytes) => {
                let mut value: V = decode(&bytes)?;
                let r = f(&mut value, input);
                self.cache.insert(key, Cached { value, dirty: true });
                r
            }
            None => {
                let (value, r) = absent(input);
                self.cache.insert(key, Cached { value, dirty: true });
                r
            }
        };
        if self.cache.len() > self.capacity {
            self.evict()?;
        }
        Ok(r)
    }

    /// Writes an eighth of the cache's entries back (those that changed) and drops them.
    fn evict(&mut self) -> Result<()> {
        let n = (self.capacity / 8).max(1);
        let victims: Vec<K> = self.cache.keys().take(n).cloned().collect();
        let mut batch = Vec::new();
        for k in victims {
            if let Some(c) = self.cache.remove(&k)
                && c.dirty
            {
                let (kg, sk) = store_key(&k, self.max_parallelism)?;
                let v = encode(&c.value)?;
                if self.incremental {
                    self.changed.insert(k, (kg, sk.clone(), v.clone()));
                }
                batch.push((sk, Some(v)));
            }
        }
        self.engine.write(batch)
    }

    /// Writes every changed cached value to the store, and returns those entries.
    fn flush(&mut self) -> Result<Vec<(u32, RawEntry)>> {
        let mut written = Vec::new();
        for (k, c) in self.cache.iter_mut().filter(|(_, c)| c.dirty) {
            c.dirty = false;
            let (kg, sk) = store_key(k, self.max_parallelism)?;
            written.push((kg, (sk, Some(encode(&c.value)?))));
        }
        self.engine.write(written.iter().map(|(_, e)| e.clone()).collect())?;
        Ok(written)
    }

    /// This instance's snapshot for checkpoint `id` (`completed`: the latest completed
    /// checkpoint). Changed cached values are written to the store first. An increment is made
    /// now (it holds only the changes); a full snapshot is a consistent view of the store, scanned
    /// and encoded later (on the checkpoint writer thread) while records go on.
    pub fn snapshot(&mut self, id: CheckpointId, completed: CheckpointId) -> Result<DiskSnapshot> {
        let mut delta = self.flush()?;
        let previous = self.chain.last().copied();
        // A chain whose increments add up to more than its full snapshot restores slower than a new
        // full snapshot would: start over then too.
        let base_bytes = self.base_bytes.load(Ordering::Relaxed);
        let continues = self.incremental
            && previous == Some(completed)
            && self.chain.len() < MAX_CHAIN
            && self.increments_bytes <= base_bytes;
        let changed = std::mem::take(&mut self.changed);
        if continues {
            // The values evicted since the previous snapshot, as they were written (those cached
            // again were flushed above, newer).
            for (k, (kg, sk, v)) in changed {
                if !self.cache.contains_key(&k) {
                    delta.push((kg, (sk, Some(v))));
                }
            }
            delta.sort_unstable_by(|a, b| a.1.0.cmp(&b.1.0));
            let links = self.chain.clone();
            self.chain.push(id);
            let chunks = raw_chunks(delta.into_iter())?;
            self.increments_bytes += chunks.iter().map(|(_, b)| b.len()).sum::<usize>();
            return Ok(DiskSnapshot::Increment(chunks, links));
        }
        self.chain = vec![id];
        self.increments_bytes = 0;
        let view = self.engine.snapshot();
        let base = self.base_bytes.clone();
        Ok(DiskSnapshot::Full(Box::new(move || {
            let chunks = full_snapshot(&view)?;
            base.store(chunks.iter().map(|(_, b)| b.len()).sum(), Ordering::Relaxed);
            Ok(chunks)
        })))
    }

    /// Loads restored state: raw chunks (in the order they apply) and typed chunks of the heap
    /// backend's format (`(K, V)` entries).
    pub fn restore(&mut self, raw: &[(u32, Vec<u8>)], typed: &[(u32, Vec<u8>)]) -> Result<()> {
        for (kg, bytes) in raw {
            self.engine.write(decode_raw_chunk(*kg, bytes)?)?;
        }
        for (k, v) in crate::checkpoint::restore_keyed::<K, V>(typed)? {
            let sk = store_key(&k, self.max_parallelism)?.1;
            self.engine.write(vec![(sk, Some(encode(&v)?))])?;
        }
        Ok(())
    }

    /// Every entry, decoded.
    #[cfg(test)]
    fn entries(&mut self) -> Result<Vec<(K, V)>> {
        self.flush()?;
        let mut out = Vec::new();
        self.engine.scan(|k, v| {
            out.push((decode::<K>(&k[2..])?, decode::<V>(v)?));
            Ok(())
        })?;
        Ok(out)
    }
}

/// Applies raw chunks (in order) to a map of decoded entries: for an operator on the heap backend
/// restoring what the disk backend wrote.
pub fn apply_raw<K, V>(raw: &[(u32, Vec<u8>)], into: &mut StateMap<K, V>) -> Result<()>
where
    K: Hash + Eq + DeserializeOwned,
    V: DeserializeOwned,
{
    for (kg, bytes) in raw {
        for (k, v) in decode_raw_chunk(*kg, bytes)? {
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
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn store(dir: &std::path::Path, incremental: bool, cache: usize) -> Result<DiskKeyed<u64, u64>> {
        let config = StateBackendConfig {
            kind: weir_core::checkpointing::StateBackendKind::Disk,
            incremental,
            dir: Some(dir.display().to_string()),
            cache_entries: cache,
        };
        DiskKeyed::open(&config, "test", 128)
    }

    /// The snapshot for checkpoint `id`, made at once: its chunks and the links it builds on.
    fn snap(s: &mut DiskKeyed<u64, u64>, id: CheckpointId, completed: CheckpointId) -> Result<(KeyedChunks, Vec<u64>)> {
        match s.snapshot(id, completed)? {
            DiskSnapshot::Increment(chunks, links) => Ok((chunks, links)),
            DiskSnapshot::Full(make) => Ok((make()?, Vec::new())),
        }
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
        back.restore(&chunks_in_order, &[])?;
        let entries: BTreeMap<u64, u64> = back.entries()?.into_iter().collect();
        assert_eq!(entries, model);
        let mut heap = StateMap::default();
        apply_raw(&chunks_in_order, &mut heap)?;
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
        apply_raw(&raw, &mut heap)?;
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
        let chunks = std::thread::spawn(make).join().map_err(|_| Error::internal("snapshot thread panicked"))??;
        let mut heap = StateMap::default();
        apply_raw(&chunks, &mut heap)?;
        assert_eq!(heap.into_iter().collect::<BTreeMap<_, _>>(), model);
        Ok(())
    }
}
