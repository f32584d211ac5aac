//! Keyed state: per-key values that operators keep between records, scoped by the current key,
//! with optional time-to-live; and the timer service of keyed process functions.
//!
//! State is declared with a descriptor (a name and a type). The first use of a name fixes its kind
//! and type; using the same name as another kind or type is an error that names both.
//!
//! Operator list state (per operator instance, redistributed on a restore at another
//! parallelism) is in [`operator`], re-exported here.

pub mod backend;
#[cfg(test)]
mod conformance;
pub mod disk;
pub mod env;
pub mod heap;
pub mod map;
pub mod operator;
pub mod table;
pub mod time;
pub mod timers;
pub mod windows;

pub use backend::{KeyedTable, StateSnapshot, WindowStore};
pub use env::StateEnv;
pub use operator::{OperatorListState, OperatorStateStore, Redistribution, redistribute};
pub use table::{Table, Windows};
pub use time::Timestamp;
pub use timers::Timers;

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use weir_core::checkpointing::StateBackendKind;
use weir_core::{Error, Result};

use crate::disk::{DiskSnapshot, RawStore, StoreWrite};
use map::StateMap;
use weir_checkpoint::CheckpointId;

/// Time-to-live of a state entry, in processing time (Flink's `StateTtlConfig`): an entry not
/// written (or, with `update_on_read`, not read or written) for `ttl_ms` is expired, is never
/// returned again, and is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTtl {
    /// Lifetime in ms.
    pub ttl_ms: i64,
    /// Whether reads also refresh the entry (`OnReadAndWrite`) or only writes (`OnCreateAndWrite`).
    pub update_on_read: bool,
}

/// The kinds of keyed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    /// One value.
    Value,
    /// A list of values.
    List,
    /// A map.
    Map,
    /// A value folded with a reduce function.
    Reducing,
    /// An accumulator of an aggregate function.
    Aggregating,
}

struct Declared {
    name: String,
    kind: StateKind,
    type_id: TypeId,
    type_name: &'static str,
    ttl: Option<StateTtl>,
    encode: fn(&(dyn Any + Send)) -> Result<Vec<u8>>,
    decode: DecodeValue,
}

/// Decodes a stored value of a declared state (named for messages).
type DecodeValue = fn(&str, &[u8]) -> Result<Box<dyn Any + Send>>;

fn encode_value<S: serde::Serialize + 'static>(v: &(dyn Any + Send)) -> Result<Vec<u8>> {
    let v = v.downcast_ref::<S>().ok_or_else(|| Error::internal("state slot holds another type"))?;
    bitcode::serialize(v).map_err(|e| Error::internal(format!("cannot encode keyed state: {e}")))
}

fn decode_value<S: serde::de::DeserializeOwned + Send + 'static>(
    name: &str,
    bytes: &[u8],
) -> Result<Box<dyn Any + Send>> {
    let value: S = bitcode::deserialize(bytes).map_err(|e| {
        Error::InvalidJob(format!(
            "the restored state '{name}' cannot be read as {}: {e}; restore with the program that wrote it, or give \
             the state a new name",
            std::any::type_name::<S>()
        ))
    })?;
    Ok(Box::new(value))
}

struct Slot {
    value: Box<dyn Any + Send>,
    touched: Timestamp,
}

/// One state of one key. On the heap every cell is loaded; on disk the cells are a cache in front
/// of the store: a cell is read from the store when first used, and written back (when it
/// changed) once its key is evicted or a snapshot is taken.
#[derive(Default)]
struct Cell {
    slot: Option<Slot>,
    loaded: bool,
    dirty: bool,
}

/// All keyed state of one operator instance: on the heap, or in the disk backend
/// ([`KeyedStates::on_disk`]).
pub struct KeyedStates<K> {
    declared: Vec<Declared>,
    per_key: StateMap<K, Vec<Cell>>,
    /// Restored entries of states not declared yet, by state name: key, encoded value, last write
    /// (on the heap only: the disk backend keeps them in its store).
    restored: HashMap<String, Vec<(K, Vec<u8>, Timestamp)>>,
    disk: Option<RawStore>,
    /// The timers of the operator instance (in `disk` with the disk backend).
    timers: Timers<K>,
}

impl<K: Hash + Eq + Clone> Default for KeyedStates<K> {
    fn default() -> Self {
        KeyedStates {
            declared: Vec::new(),
            per_key: StateMap::default(),
            restored: HashMap::new(),
            disk: None,
            timers: Timers::default(),
        }
    }
}

/// One key group's keyed state and timers, as a snapshot holds them.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyedChunk<K, N> {
    /// (key, state name, encoded value, last write).
    states: Vec<(K, N, Vec<u8>, Timestamp)>,
    /// (key, event time?, timestamp).
    timers: Vec<(K, bool, Timestamp)>,
}

/// The disk backend's store key of state `name` of `key` in key group `kg`: the key group (2 bytes,
/// big-endian, so that a scan goes by key group), the name's length (2 bytes) and the name, then
/// the key encoded.
fn state_key<K: serde::Serialize>(kg: u32, name: &str, key: &K) -> Result<Vec<u8>> {
    let encoded = bitcode::serialize(key).map_err(|e| Error::internal(format!("cannot encode a state key: {e}")))?;
    let len = u16::try_from(name.len())
        .map_err(|_| Error::invalid_job(format!("the state name '{name}' is too long (at most 65535 bytes)")))?;
    let mut out = Vec::with_capacity(4 + name.len() + encoded.len());
    out.extend_from_slice(&(kg as u16).to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&encoded);
    Ok(out)
}

/// The state name and the key of a [`state_key`].
fn parse_state_key<K: serde::de::DeserializeOwned>(sk: &[u8]) -> Result<(String, K)> {
    let bad = || Error::damaged("the disk state backend's store", "a keyed state entry's key cannot be read");
    let len = usize::from(u16::from_be_bytes([*sk.get(2).ok_or_else(bad)?, *sk.get(3).ok_or_else(bad)?]));
    let name = sk.get(4..4 + len).ok_or_else(bad)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
    let key = bitcode::deserialize(&sk[4 + len..]).map_err(|e| {
        Error::InvalidJob(format!(
            "the keyed state '{name}' cannot be read with keys of type {}: {e}; restore with the program that wrote \
             it, or give the changed operator a new uid",
            std::any::type_name::<K>()
        ))
    })?;
    Ok((name, key))
}

/// The disk backend's stored value: the last write (8 bytes, big-endian), then the value encoded.
fn stored_value(touched: Timestamp, encoded: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + encoded.len());
    out.extend_from_slice(&touched.to_be_bytes());
    out.extend_from_slice(encoded);
    out
}

/// The last write and the encoded value of a [`stored_value`].
fn parse_stored_value(bytes: &[u8]) -> Result<(Timestamp, &[u8])> {
    let (t, v) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| Error::damaged("the disk state backend's store", "a keyed state value is too short"))?;
    Ok((Timestamp::from_be_bytes(*t), v))
}

/// Encodes a keyed operator's state and timers by key group, for a checkpoint. With the disk
/// backend, only states restored from the heap backend's chunks and not declared yet: the rest is
/// in its store, and [`KeyedStates::snapshot_disk`] snapshots it.
pub fn snapshot_keyed_state<K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned>(
    states: &KeyedStates<K>,
    max_parallelism: u32,
) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut groups: BTreeMap<u32, KeyedChunk<&K, &str>> = BTreeMap::new();
    let group = |k: &K| weir_core::keygroup::key_group(k, max_parallelism);
    if states.disk.is_none() {
        for (k, cells) in states.per_key.iter() {
            let kg = group(k);
            for (d, cell) in states.declared.iter().zip(cells) {
                if let Some(slot) = &cell.slot {
                    let chunk = groups.entry(kg).or_insert_with(|| KeyedChunk { states: vec![], timers: vec![] });
                    chunk.states.push((k, &d.name, (d.encode)(slot.value.as_ref())?, slot.touched));
                }
            }
        }
    }
    for (name, entries) in &states.restored {
        for (k, bytes, touched) in entries {
            let chunk = groups.entry(group(k)).or_insert_with(|| KeyedChunk { states: vec![], timers: vec![] });
            chunk.states.push((k, name, bytes.clone(), *touched));
        }
    }
    for (event, at, k) in states.timers.on_heap() {
        let chunk = groups.entry(group(k)).or_insert_with(|| KeyedChunk { states: vec![], timers: vec![] });
        chunk.timers.push((k, event, at));
    }
    groups
        .into_iter()
        .map(|(kg, chunk)| {
            bitcode::serialize(&chunk)
                .map(|b| (kg, b))
                .map_err(|e| Error::internal(format!("cannot encode keyed state: {e}")))
        })
        .collect()
}

/// Restores what [`snapshot_keyed_state`] wrote (`chunks`) and what the disk backend wrote
/// (`raw`, in the order it applies) into empty `states` (with their timers), whichever backend
/// wrote them and whichever `states` uses. On the heap, values are decoded when the operator declares
/// their state; on disk, when a key's state is first read.
pub fn restore_keyed_state<K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned>(
    chunks: &[(u32, Vec<u8>)],
    raw: &weir_checkpoint::file::RawState,
    states: &mut KeyedStates<K>,
) -> Result<()> {
    let mut to_store = Vec::new();
    for (kg, bytes) in chunks {
        let chunk: KeyedChunk<K, String> = bitcode::deserialize(bytes).map_err(|e| {
            Error::InvalidJob(format!(
                "the keyed state of key group {kg} cannot be read with keys of type {}: {e}; restore with the \
                 program that wrote it, or give the changed operator a new uid",
                std::any::type_name::<K>()
            ))
        })?;
        for (k, name, value, touched) in chunk.states {
            if states.disk.is_some() {
                to_store.push((state_key(*kg, &name, &k)?, Some(stored_value(touched, &value))));
            } else {
                states.restored.entry(name).or_default().push((k, value, touched));
            }
        }
        for (k, event, at) in chunk.timers {
            if event { states.timers.register_event(&k, at) } else { states.timers.register_processing(&k, at) }
        }
    }
    match &mut states.disk {
        Some(store) => {
            store.restore(raw)?;
            store.restore_entries(to_store)?;
            states.timers.restored(store)?;
        }
        None => {
            // Written by the disk backend: applied in order, a later value or removal winning.
            let mut latest: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
            raw.for_each(|kg, bytes| {
                for (sk, v) in weir_checkpoint::decode_raw_chunk(kg, bytes)? {
                    latest.insert(sk, v);
                }
                Ok(())
            })?;
            for (sk, v) in latest {
                // A removal (of a state, or of a timer that fired or was deleted) restores nothing.
                let Some(v) = v else { continue };
                if let Some((event, at, key)) = Timers::<K>::parse_stored(&sk) {
                    states.timers.register_stored(event, at, key)?;
                } else {
                    let (name, k) = parse_state_key::<K>(&sk)?;
                    let (touched, value) = parse_stored_value(&v)?;
                    states.restored.entry(name).or_default().push((k, value.to_vec(), touched));
                }
            }
        }
    }
    Ok(())
}

impl<K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned> KeyedStates<K> {
    /// The keyed states and timers of the operator instance `env` describes, in its job's state
    /// backend, holding what it restored (whichever backend wrote it).
    pub fn open(env: &StateEnv<'_>) -> Result<Self> {
        let mut states = match env.backend.kind {
            StateBackendKind::Disk => {
                let store = RawStore::open(env.backend, &env.instance, env.max_parallelism)?;
                if env.backend.timers_on_heap { Self::on_disk_with_heap_timers(store) } else { Self::on_disk(store) }
            }
            StateBackendKind::HashMap => KeyedStates::default(),
        };
        restore_keyed_state(env.restored_keyed, env.restored_raw, &mut states)?;
        Ok(states)
    }

    /// The snapshot of the states and timers for checkpoint `id` (`completed`: the latest completed
    /// checkpoint), with `max_parallelism` key groups: on the heap, all of it encoded now; on disk,
    /// the store's snapshot, and what memory holds (timers on the heap, restored states not
    /// declared yet) encoded now.
    pub fn snapshot(
        &mut self,
        id: CheckpointId,
        completed: CheckpointId,
        max_parallelism: u32,
    ) -> Result<StateSnapshot> {
        let keyed = snapshot_keyed_state(self, max_parallelism)?;
        let deferred = self.snapshot_disk(id, completed)?;
        Ok(StateSnapshot { keyed, deferred })
    }
}

impl<K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned> KeyedStates<K> {
    /// Keyed states kept in the disk backend's `store`, with a cache of decoded values in front.
    pub fn on_disk(store: RawStore) -> Self {
        KeyedStates { disk: Some(store), timers: Timers::on_disk(), ..KeyedStates::default() }
    }

    /// Keyed states kept in the disk backend's `store`, with their timers on the heap
    /// (`state.backend.disk.timer-service.factory: heap`), written into each snapshot.
    pub fn on_disk_with_heap_timers(store: RawStore) -> Self {
        KeyedStates { disk: Some(store), ..KeyedStates::default() }
    }

    /// The timers of the operator instance, to register and delete.
    pub fn timers(&mut self) -> &mut Timers<K> {
        &mut self.timers
    }

    /// The earliest live timer at or before `time` in one domain (event time or processing time),
    /// removed; `None` when there is none. Timers registered while firing are seen by later calls.
    pub fn pop_due_timer(&mut self, event_time: bool, time: Timestamp) -> Result<Option<(Timestamp, K)>> {
        self.timers.pop_due(event_time, time, self.disk.as_mut())
    }

    /// Writes the timers registered or deleted since the last call to the disk backend's store, so
    /// that memory holds no more of them than one batch of records registers (nothing to do on the
    /// heap).
    pub fn flush_timers(&mut self) -> Result<()> {
        match &mut self.disk {
            Some(store) => self.timers.flush(store),
            None => Ok(()),
        }
    }

    /// The slot index of state `name`, declaring it on first use; an error if it was declared
    /// with another kind or type.
    pub fn declare<S: Send + serde::Serialize + serde::de::DeserializeOwned + 'static>(
        &mut self,
        name: &str,
        kind: StateKind,
        ttl: Option<StateTtl>,
    ) -> Result<usize> {
        if name.starts_with('\0') {
            return Err(Error::invalid_job(format!(
                "state name {name:?} starts with a NUL character, which weir reserves for its own state; rename it"
            )));
        }
        if let Some(t) = ttl
            && t.ttl_ms < 1
        {
            return Err(Error::invalid_job(format!(
                "state '{name}' has a time-to-live of {} ms; it must be at least 1 ms",
                t.ttl_ms
            )));
        }
        if let Some(i) = self.declared.iter().position(|d| d.name == name) {
            let d = &self.declared[i];
            if d.kind != kind || d.type_id != TypeId::of::<S>() {
                return Err(Error::invalid_job(format!(
                    "state '{name}' is used as {kind:?} state of {} but was declared as {:?} state of {}; \
                     give each state its own name",
                    std::any::type_name::<S>(),
                    d.kind,
                    d.type_name
                )));
            }
            return Ok(i);
        }
        self.declared.push(Declared {
            name: name.to_string(),
            kind,
            type_id: TypeId::of::<S>(),
            type_name: std::any::type_name::<S>(),
            ttl,
            encode: encode_value::<S>,
            decode: decode_value::<S>,
        });
        let slot = self.declared.len() - 1;
        // Restored values of this state now have a type to be read as.
        if let Some(entries) = self.restored.remove(name) {
            for (k, bytes, touched) in entries {
                let value = decode_value::<S>(name, &bytes)?;
                let cells = self.per_key.entry(k).or_default();
                if cells.len() <= slot {
                    cells.resize_with(slot + 1, Cell::default);
                }
                cells[slot] = Cell { slot: Some(Slot { value, touched }), loaded: true, dirty: false };
            }
        }
        Ok(slot)
    }

    /// The state `slot` of `key`, created with `init` when absent or expired at `now`.
    pub fn get_or_init<S: Send + 'static>(
        &mut self,
        key: &K,
        slot: usize,
        now: Timestamp,
        init: impl FnOnce() -> S,
    ) -> Result<&mut S> {
        self.entry(key, slot, now, init).map(|(v, _)| v)
    }

    /// Like [`KeyedStates::get_or_init`], with the entry's last-write time, for handles that
    /// refresh the time-to-live when they write.
    pub fn entry<S: Send + 'static>(
        &mut self,
        key: &K,
        slot: usize,
        now: Timestamp,
        init: impl FnOnce() -> S,
    ) -> Result<(&mut S, &mut Timestamp)> {
        if let Some(store) = &self.disk
            && self.per_key.len() >= store.capacity()
            && !self.per_key.contains_key(key)
        {
            self.evict()?;
        }
        let d = self.declared.get(slot).ok_or_else(|| Error::internal("undeclared state slot"))?;
        let n = self.declared.len();
        let cells = self.per_key.entry(key.clone()).or_default();
        if cells.len() < n {
            cells.resize_with(n, Cell::default);
        }
        let cell = &mut cells[slot];
        if let Some(store) = &self.disk {
            if !cell.loaded {
                let sk = state_key(store.key_group(key), &d.name, key)?;
                if let Some(bytes) = store.get(&sk)? {
                    let (touched, value) = parse_stored_value(&bytes)?;
                    cell.slot = Some(Slot { value: (d.decode)(&d.name, value)?, touched });
                }
                cell.loaded = true;
            }
            // The handle may change it.
            cell.dirty = true;
        }
        let expired = match (cell.slot.as_ref(), d.ttl) {
            (Some(s), Some(t)) => now.saturating_sub(s.touched) >= t.ttl_ms,
            _ => false,
        };
        if expired || cell.slot.is_none() {
            cell.slot = Some(Slot { value: Box::new(init()), touched: now });
        } else if let (Some(s), Some(t)) = (cell.slot.as_mut(), d.ttl)
            && t.update_on_read
        {
            s.touched = now;
        }
        let s = cell.slot.as_mut().ok_or_else(|| Error::internal("state slot vanished"))?;
        let value = s.value.downcast_mut::<S>().ok_or_else(|| Error::internal("state slot holds another type"))?;
        Ok((value, &mut s.touched))
    }

    /// Marks `slot` of `key` as written at `now` (refreshing its time-to-live).
    pub fn touch(&mut self, key: &K, slot: usize, now: Timestamp) {
        if let Some(cell) = self.per_key.get_mut(key).and_then(|v| v.get_mut(slot))
            && let Some(s) = &mut cell.slot
        {
            s.touched = now;
            cell.dirty = true;
        }
    }

    /// Removes `slot` of `key`; on disk, the removal may write evicted keys back to the store
    /// (which can fail).
    pub fn clear(&mut self, key: &K, slot: usize) -> Result<()> {
        let on_disk = self.disk.is_some();
        if on_disk && !self.per_key.contains_key(key) {
            // A key out of the cache may still have the state in the store: the removal must reach
            // it too, as a tombstone written back with the key, in a cache kept to its bound.
            if self.disk.as_ref().is_some_and(|store| self.per_key.len() >= store.capacity()) {
                self.evict()?;
            }
            let mut cells = Vec::new();
            cells.resize_with(self.declared.len(), Cell::default);
            self.per_key.insert(key.clone(), cells);
        }
        if let Some(cells) = self.per_key.get_mut(key) {
            if let Some(c) = cells.get_mut(slot) {
                // On disk the removal is written back to the store as a tombstone.
                *c = Cell { slot: None, loaded: true, dirty: on_disk };
            }
            if !on_disk && cells.iter().all(|c| c.slot.is_none()) {
                self.per_key.remove(key);
            }
        }
        Ok(())
    }

    /// Removes every expired entry in memory (run from time to time; reads never see expired
    /// entries). On disk, an expired entry in the store is removed when it is next read.
    pub fn expire(&mut self, now: Timestamp) {
        let ttls: Vec<Option<StateTtl>> = self.declared.iter().map(|d| d.ttl).collect();
        if ttls.iter().all(Option::is_none) {
            return;
        }
        let on_disk = self.disk.is_some();
        self.per_key.retain(|_, cells| {
            for (c, ttl) in cells.iter_mut().zip(&ttls) {
                if let (Some(slot), Some(t)) = (c.slot.as_ref(), ttl)
                    && now.saturating_sub(slot.touched) >= t.ttl_ms
                {
                    *c = Cell { slot: None, loaded: true, dirty: on_disk };
                }
            }
            on_disk || cells.iter().any(|c| c.slot.is_some())
        });
    }

    /// Number of keys with any state in memory (on disk: in the cache).
    pub fn key_count(&self) -> usize {
        self.per_key.len()
    }

    /// The changed cells of `cells` (of `key`) as store writes; marks them clean.
    fn write_back(
        declared: &[Declared],
        store: &RawStore,
        key: &K,
        cells: &mut [Cell],
        out: &mut Vec<StoreWrite>,
    ) -> Result<()> {
        let kg = store.key_group(key);
        for (d, c) in declared.iter().zip(cells.iter_mut()).filter(|(_, c)| c.dirty) {
            c.dirty = false;
            let value = match &c.slot {
                Some(s) => Some(stored_value(s.touched, &(d.encode)(s.value.as_ref())?)),
                None => None,
            };
            out.push((kg, state_key(kg, &d.name, key)?, value));
        }
        Ok(())
    }

    /// Writes an eighth of the cache's keys back to the store (their changed states) and drops
    /// them from memory.
    fn evict(&mut self) -> Result<()> {
        let Some(store) = &mut self.disk else { return Ok(()) };
        let victims: Vec<K> = self.per_key.keys().take((store.capacity() / 8).max(1)).cloned().collect();
        let mut batch = Vec::new();
        for k in victims {
            if let Some(mut cells) = self.per_key.remove(&k) {
                Self::write_back(&self.declared, store, &k, &mut cells, &mut batch)?;
            }
        }
        store.write(batch)
    }

    /// On the disk backend, the snapshot of the states for checkpoint `id` (`completed`: the
    /// latest completed checkpoint), changed cached values written to the store first; `None` on
    /// the heap (where [`snapshot_keyed_state`] holds the states).
    pub fn snapshot_disk(&mut self, id: CheckpointId, completed: CheckpointId) -> Result<Option<DiskSnapshot>> {
        let Some(store) = &mut self.disk else { return Ok(None) };
        let mut batch = Vec::new();
        for (k, cells) in self.per_key.iter_mut() {
            Self::write_back(&self.declared, store, k, cells, &mut batch)?;
        }
        store.write(batch)?;
        self.timers.flush(store)?;
        store.snapshot(id, completed).map(Some)
    }
}

/// A convenience for maps kept in state.
pub type StateHashMap<MK, MV> = HashMap<MK, MV>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_per_key_typed_and_expires() -> Result<()> {
        let mut s: KeyedStates<u32> = KeyedStates::default();
        let ttl = Some(StateTtl { ttl_ms: 100, update_on_read: false });
        let count = s.declare::<Option<u64>>("count", StateKind::Value, ttl)?;
        *s.get_or_init(&1, count, 0, || None::<u64>)? = Some(5);
        *s.get_or_init(&2, count, 0, || None::<u64>)? = Some(7);
        assert_eq!(*s.get_or_init(&1, count, 50, || None::<u64>)?, Some(5));
        // Expired: reads start over.
        assert_eq!(*s.get_or_init(&1, count, 150, || None::<u64>)?, None);
        s.expire(1_000);
        assert_eq!(s.key_count(), 0);
        let e =
            s.declare::<Vec<String>>("count", StateKind::List, None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("state 'count' is used as List state") && e.contains("declared as Value state"), "{e}");
        Ok(())
    }

    fn disk_states(dir: &std::path::Path, cache: usize) -> Result<KeyedStates<u32>> {
        Ok(KeyedStates::on_disk(RawStore::open(&crate::disk::test_config(Some(dir), true, cache), "states", 16)?))
    }

    /// The chunks of a disk snapshot, made at once, and the links it builds on.
    fn disk_chunks(snapshot: Option<DiskSnapshot>) -> Result<(crate::disk::KeyedChunks, Vec<CheckpointId>)> {
        snapshot.ok_or_else(|| Error::internal("no disk snapshot"))?.made()
    }

    /// A key, and its values of "count" and "seen".
    type KeyRead = (u32, Option<u64>, Vec<u32>);

    /// Every key's values of the states "count" and "seen" (after declaring them), read at `now`.
    fn read_all(s: &mut KeyedStates<u32>, keys: u32, now: Timestamp) -> Result<Vec<KeyRead>> {
        let ttl = Some(StateTtl { ttl_ms: 1_000, update_on_read: false });
        let count = s.declare::<Option<u64>>("count", StateKind::Value, None)?;
        let seen = s.declare::<Vec<u32>>("seen", StateKind::List, ttl)?;
        let mut out = Vec::new();
        for k in 0..keys {
            let c = *s.get_or_init(&k, count, now, || None::<u64>)?;
            let l = s.get_or_init(&k, seen, now, Vec::<u32>::new)?.clone();
            out.push((k, c, l));
        }
        Ok(out)
    }

    #[test]
    fn keyed_states_on_disk_behave_as_on_the_heap_and_restore_either_way() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        // A cache of 3 keys for 40: most reads and writes go to the store.
        let (mut disk, mut heap) = (disk_states(dir.path(), 3)?, KeyedStates::<u32>::default());
        let ttl = Some(StateTtl { ttl_ms: 1_000, update_on_read: false });
        let mut chunks = Vec::new();
        let (mut rng, mut increments) = (7u32, 0);
        for round in 0..4u64 {
            for s in [&mut disk, &mut heap] {
                let count = s.declare::<Option<u64>>("count", StateKind::Value, None)?;
                let seen = s.declare::<Vec<u32>>("seen", StateKind::List, ttl)?;
                let mut r = rng;
                for i in 0..300u32 {
                    r ^= r << 13;
                    r ^= r >> 17;
                    r ^= r << 5;
                    let (k, now) = (r % 40, round as i64 * 600 + i64::from(i));
                    *s.get_or_init(&k, count, now, || None::<u64>)?.get_or_insert(0) += 1;
                    s.get_or_init(&k, seen, now, Vec::<u32>::new)?.push(i);
                    if i % 7 == 0 {
                        s.clear(&k, count)?;
                    }
                }
            }
            rng = rng.wrapping_mul(31).wrapping_add(1);
            let (raw, links) = disk_chunks(disk.snapshot_disk(round + 1, round)?)?;
            // A chain restarts with a full snapshot once its increments outweigh it; a restore
            // applies the chain.
            if links.is_empty() {
                chunks.clear();
            } else {
                increments += 1;
            }
            chunks.extend(raw);
            let now = round as i64 * 600 + 300;
            assert_eq!(read_all(&mut disk, 40, now)?, read_all(&mut heap, 40, now)?, "round {round}");
        }
        assert!(increments >= 1, "some snapshots were increments");
        // What the snapshots hold, restored on disk and on the heap, reads as the state did then.
        let now = 3 * 600 + 300;
        let want = read_all(&mut heap, 40, now)?;
        let mut on_disk = disk_states(dir.path(), 3)?;
        restore_keyed_state(&[], &chunks.clone().into(), &mut on_disk)?;
        assert_eq!(read_all(&mut on_disk, 40, now)?, want);
        let mut on_heap = KeyedStates::<u32>::default();
        restore_keyed_state(&[], &chunks.clone().into(), &mut on_heap)?;
        assert_eq!(read_all(&mut on_heap, 40, now)?, want);
        // And the heap's snapshot restores on disk; expired lists are not read back.
        let typed = snapshot_keyed_state(&heap, 16)?;
        let mut from_heap = disk_states(dir.path(), 3)?;
        restore_keyed_state(&typed, &Default::default(), &mut from_heap)?;
        assert_eq!(read_all(&mut from_heap, 40, now)?, want);
        let later = read_all(&mut from_heap, 40, now + 5_000)?;
        assert!(later.iter().all(|(_, _, seen)| seen.is_empty()), "the lists expired");
        // A state read as another type than it was written as is refused with what to do.
        let mut wrong = disk_states(dir.path(), 3)?;
        restore_keyed_state(&[], &chunks.clone().into(), &mut wrong)?;
        let slot = wrong.declare::<Option<String>>("count", StateKind::Value, None)?;
        let e = (0..40).find_map(|k| wrong.get_or_init(&k, slot, now, || None::<String>).err());
        assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("cannot be read as"));
        Ok(())
    }
}
