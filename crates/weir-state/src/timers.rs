//! The timer service of keyed process functions: at most one timer per key, time and time domain,
//! kept on the heap or, with the disk backend, in the operator instance's store beside its states
//! (see [`crate::disk::timers`]).
//!
//! Registering and deleting never fail and never touch the store: on disk they are noted in memory
//! (the last word per timer wins) and written in one batch before timers are popped, before a
//! snapshot, and after each batch of records (the operator calls [`super::KeyedStates::flush_timers`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::Result;

use crate::disk::timers::DiskTimerQueue;
use crate::disk::{RawStore, decode, encode};
use crate::time::Timestamp;

/// The reserved state names timers are stored under on disk, event time first. User state names
/// cannot start with a NUL byte ([`super::KeyedStates::declare`] refuses them).
const TIMER_NAMES: [&str; 2] = ["\0timers:event", "\0timers:processing"];

/// The tag after the key group of a domain's timer keys: the reserved name as a process function's
/// state names are stored (length, 2 bytes, then the name).
fn tag(domain: usize) -> Vec<u8> {
    let name = TIMER_NAMES[domain].as_bytes();
    let mut out = (name.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(name);
    out
}

/// Index of a time domain: 0 event time, 1 processing time.
fn domain(event_time: bool) -> usize {
    if event_time { 0 } else { 1 }
}

/// One domain's timers on the heap: keys by time, and the set of live ones (deleting removes from
/// the set; popping skips what is no longer in it).
struct HeapTimers<K> {
    by_time: BTreeMap<Timestamp, Vec<K>>,
    live: HashSet<(Timestamp, K), foldhash::fast::RandomState>,
}

impl<K> Default for HeapTimers<K> {
    fn default() -> Self {
        HeapTimers { by_time: BTreeMap::new(), live: HashSet::default() }
    }
}

/// Timers in the disk backend's store, and what was registered or deleted since they were last
/// written there.
struct DiskTimers<K> {
    queues: [DiskTimerQueue; 2],
    /// (domain, time, key) → registered (`true`) or deleted.
    pending: HashMap<(usize, Timestamp, K), bool, foldhash::fast::RandomState>,
}

/// Timers of a keyed operator instance: at most one per key, time and time domain.
pub struct Timers<K> {
    heap: [HeapTimers<K>; 2],
    disk: Option<DiskTimers<K>>,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers { heap: [HeapTimers::default(), HeapTimers::default()], disk: None }
    }
}

impl<K: Hash + Eq + Clone + Serialize + DeserializeOwned> Timers<K> {
    /// Timers kept in the disk backend's store.
    pub(crate) fn on_disk() -> Self {
        let queues = [DiskTimerQueue::new(tag(0)), DiskTimerQueue::new(tag(1))];
        Timers { disk: Some(DiskTimers { queues, pending: HashMap::default() }), ..Timers::default() }
    }

    fn set(&mut self, event_time: bool, key: &K, at: Timestamp, live: bool) {
        let d = domain(event_time);
        if let Some(disk) = &mut self.disk {
            disk.pending.insert((d, at, key.clone()), live);
            return;
        }
        let heap = &mut self.heap[d];
        if live {
            if heap.live.insert((at, key.clone())) {
                heap.by_time.entry(at).or_default().push(key.clone());
            }
        } else {
            heap.live.remove(&(at, key.clone()));
        }
    }

    /// Registers an event-time timer; registering the same key and time again has no effect.
    pub fn register_event(&mut self, key: &K, at: Timestamp) {
        self.set(true, key, at, true)
    }

    /// Registers a processing-time timer.
    pub fn register_processing(&mut self, key: &K, at: Timestamp) {
        self.set(false, key, at, true)
    }

    /// Deletes an event-time timer.
    pub fn delete_event(&mut self, key: &K, at: Timestamp) {
        self.set(true, key, at, false)
    }

    /// Deletes a processing-time timer.
    pub fn delete_processing(&mut self, key: &K, at: Timestamp) {
        self.set(false, key, at, false)
    }

    /// Writes the registrations and deletions noted since the last call to `store` (on the heap:
    /// nothing to do).
    pub(crate) fn flush(&mut self, store: &mut RawStore) -> Result<()> {
        let Some(disk) = &mut self.disk else { return Ok(()) };
        if disk.pending.is_empty() {
            return Ok(());
        }
        let mut batch = Vec::with_capacity(disk.pending.len());
        let mut noted = Vec::new();
        for ((d, at, key), live) in disk.pending.drain() {
            let kg = store.key_group(&key);
            let sk = disk.queues[d].key(kg, at, &encode(&key)?);
            if live {
                noted.push((d, kg, sk.clone()));
            }
            batch.push((kg, sk, live.then(Vec::new)));
        }
        store.write(batch)?;
        for (d, kg, sk) in noted {
            disk.queues[d].noted(kg, &sk)?;
        }
        Ok(())
    }

    /// The earliest live timer at or before `time` in one domain, removed; `None` when there is
    /// none. Timers registered while firing are seen by later calls. `store` is the disk backend's
    /// (`None` on the heap).
    pub(crate) fn pop_due(
        &mut self,
        event_time: bool,
        time: Timestamp,
        store: Option<&mut RawStore>,
    ) -> Result<Option<(Timestamp, K)>> {
        if let Some(store) = store {
            self.flush(store)?;
            if let Some(disk) = &mut self.disk {
                return match disk.queues[domain(event_time)].pop_due(store, time)? {
                    Some((at, payload)) => Ok(Some((at, decode(&payload)?))),
                    None => Ok(None),
                };
            }
        }
        let heap = &mut self.heap[domain(event_time)];
        loop {
            let Some(mut entry) = heap.by_time.first_entry() else { return Ok(None) };
            let at = *entry.key();
            if at > time {
                return Ok(None);
            }
            match entry.get_mut().pop() {
                Some(k) => {
                    if heap.live.remove(&(at, k.clone())) {
                        return Ok(Some((at, k)));
                    }
                }
                None => {
                    entry.remove();
                }
            }
        }
    }

    /// After a restore wrote timers into `store`: finds each key group's earliest. Timers kept on
    /// the heap take those a snapshot of timers on disk put into the store, and remove them there,
    /// so that the store never holds a timer the heap no longer has.
    pub(crate) fn restored(&mut self, store: &mut RawStore) -> Result<()> {
        match &mut self.disk {
            Some(disk) => {
                for q in &mut disk.queues {
                    q.rebuild(store)?;
                }
            }
            None => {
                for d in 0..2 {
                    let mut stored = DiskTimerQueue::new(tag(d));
                    stored.rebuild(store)?;
                    while let Some((at, payload)) = stored.pop_due(store, Timestamp::MAX)? {
                        self.register_stored(d == 0, at, &payload)?;
                    }
                }
            }
        }
        self.flush(store)
    }

    /// The live timers on the heap: (event time?, time, key); none with timers in the disk
    /// backend's store, whose snapshot holds them.
    pub(crate) fn on_heap(&self) -> impl Iterator<Item = (bool, Timestamp, &K)> {
        self.heap.iter().enumerate().flat_map(|(d, h)| h.live.iter().map(move |(at, k)| (d == 0, *at, k)))
    }

    /// If `store_key` is a timer written by the disk backend: its domain (event time?), time and
    /// encoded key.
    pub(crate) fn parse_stored(store_key: &[u8]) -> Option<(bool, Timestamp, &[u8])> {
        (0..2).find_map(|d| {
            crate::disk::timers::parse_key(false, &tag(d), store_key).map(|(at, payload)| (d == 0, at, payload))
        })
    }

    /// Registers a timer read from a snapshot (decoded from what the disk backend wrote).
    pub(crate) fn register_stored(&mut self, event_time: bool, at: Timestamp, payload: &[u8]) -> Result<()> {
        let key: K = decode(payload)?;
        self.set(event_time, &key, at, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use weir_core::Error;
    use weir_core::checkpointing::StateBackendConfig;

    use super::super::{KeyedStates, restore_keyed_state, snapshot_keyed_state};
    use super::*;

    #[test]
    fn timers_fire_once_per_key_and_time_in_order_and_can_be_deleted() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        for mut s in [KeyedStates::<String>::default(), disk_states(dir.path())?] {
            let t = s.timers();
            t.register_event(&"a".into(), 20);
            t.register_event(&"a".into(), 20);
            t.register_event(&"b".into(), 10);
            t.register_event(&"c".into(), 30);
            t.delete_event(&"c".into(), 30);
            t.register_processing(&"a".into(), 5);
            let mut fired = Vec::new();
            while let Some(x) = s.pop_due_timer(true, 25)? {
                fired.push(x);
            }
            assert_eq!(fired, vec![(10, "b".to_string()), (20, "a".to_string())]);
            assert_eq!(s.pop_due_timer(true, 100)?, None, "the deleted timer does not fire");
            assert_eq!(s.pop_due_timer(false, 5)?, Some((5, "a".to_string())));
            assert_eq!(s.pop_due_timer(false, i64::MAX)?, None);
        }
        Ok(())
    }

    fn disk_states<K: Hash + Eq + Clone + Serialize + DeserializeOwned>(
        dir: &std::path::Path,
    ) -> Result<KeyedStates<K>> {
        Ok(KeyedStates::on_disk(RawStore::open(&disk_config(dir), "timers", 32)?))
    }

    fn disk_config(dir: &std::path::Path) -> StateBackendConfig {
        crate::disk::test_config(Some(dir), true, 4)
    }

    /// A model of one domain's timers: the live (time, key) pairs.
    type Model = BTreeSet<(Timestamp, u32)>;

    /// Pops every timer due at `time` from `s` (each domain), checking each against the model
    /// (the earliest time first; keys of one time in any order), and registering a follow-up
    /// timer for some, as `on_timer` may, at or before `time` too.
    fn fire(s: &mut KeyedStates<u32>, models: &mut [Model; 2], time: Timestamp) -> Result<usize> {
        let mut fired = 0;
        for (d, event) in [(0, true), (1, false)] {
            while let Some((at, k)) = s.pop_due_timer(event, time)? {
                let earliest = models[d].first().map(|(t, _)| *t);
                assert_eq!(Some(at), earliest, "timers fire earliest first");
                assert!(models[d].remove(&(at, k)), "timer ({at}, {k}) was live");
                fired += 1;
                if k % 5 == 0 && at < time {
                    let later = at + 1 + i64::from(k % 3);
                    if event {
                        s.timers().register_event(&(k + 1), later)
                    } else {
                        s.timers().register_processing(&(k + 1), later)
                    }
                    models[d].insert((later, k + 1));
                }
            }
            assert!(models[d].first().is_none_or(|(t, _)| *t > time), "every due timer fired");
        }
        Ok(fired)
    }

    #[test]
    fn timers_on_disk_fire_as_the_model_says_and_restore_into_either_backend() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut disk: KeyedStates<u32> = disk_states(dir.path())?;
        let mut models: [Model; 2] = [Model::new(), Model::new()];
        let mut rng = 99u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut chunks, mut time, mut fired) = (Vec::new(), 0i64, 0);
        for round in 1..=6u64 {
            // Many timers on few times (keys of one time fire together), some deleted.
            for _ in 0..3_000 {
                let (r, d) = (next(), (next() % 2) as usize);
                let (k, at) = ((r % 2_000) as u32, time + (r >> 20) as i64 % 50);
                if r % 11 == 0 {
                    if d == 0 {
                        disk.timers().delete_event(&k, at)
                    } else {
                        disk.timers().delete_processing(&k, at)
                    }
                    models[d].remove(&(at, k));
                } else {
                    if d == 0 {
                        disk.timers().register_event(&k, at)
                    } else {
                        disk.timers().register_processing(&k, at)
                    }
                    models[d].insert((at, k));
                }
            }
            disk.flush_timers()?;
            time += 20;
            fired += fire(&mut disk, &mut models, time)?;
            let (raw, links) =
                disk.snapshot_disk(round, round - 1)?.ok_or_else(|| Error::internal("no snapshot"))?.made()?;
            if links.is_empty() {
                chunks.clear();
            }
            chunks.extend(raw);
        }
        assert!(fired > 1_000, "{fired} timers fired");
        let live = models[0].len() + models[1].len();
        assert!(live > 1_000, "{live} timers left for the restores");
        // What the snapshots hold, restored on disk, on the heap, and on disk with timers on the
        // heap (`timer-service.factory: heap`), fires the same.
        for target in 0..3 {
            let mut back = match target {
                0 => disk_states(dir.path())?,
                1 => KeyedStates::default(),
                _ => KeyedStates::on_disk_with_heap_timers(RawStore::open(&disk_config(dir.path()), "heap-t", 32)?),
            };
            restore_keyed_state(&[], &chunks.clone().into(), &mut back)?;
            if target == 2 {
                // The timers moved to the heap: the store keeps none, the typed chunks all.
                let (raw, _) = back.snapshot_disk(100, 0)?.ok_or_else(|| Error::internal("no snapshot"))?.made()?;
                let mut store_only = disk_states::<u32>(dir.path())?;
                restore_keyed_state(&[], &raw.into(), &mut store_only)?;
                assert_eq!(store_only.pop_due_timer(true, i64::MAX)?, None, "no timer left in the store");
                assert_eq!(store_only.pop_due_timer(false, i64::MAX)?, None, "no timer left in the store");
                let typed = snapshot_keyed_state(&back, 32)?;
                let mut again = disk_states::<u32>(dir.path())?;
                restore_keyed_state(&typed, &Default::default(), &mut again)?;
                let mut m = models.clone();
                fire(&mut again, &mut m, i64::MAX)?;
                assert!(m.iter().all(BTreeSet::is_empty), "the typed chunks hold every timer");
            }
            let mut m = models.clone();
            let mut t = time;
            while m.iter().any(|m| !m.is_empty()) {
                t += 7;
                fire(&mut back, &mut m, t)?;
            }
        }
        // The heap's snapshot (typed chunks) restores on disk.
        let mut heap: KeyedStates<u32> = KeyedStates::default();
        restore_keyed_state(&[], &chunks.clone().into(), &mut heap)?;
        let typed = snapshot_keyed_state(&heap, 32)?;
        let mut from_heap: KeyedStates<u32> = disk_states(dir.path())?;
        restore_keyed_state(&typed, &Default::default(), &mut from_heap)?;
        let mut m = models.clone();
        fire(&mut from_heap, &mut m, i64::MAX)?;
        assert!(m.iter().all(BTreeSet::is_empty));
        Ok(())
    }

    #[test]
    fn firing_many_timers_of_one_time_keeps_memory_to_the_key_groups() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let mut s: KeyedStates<u64> = disk_states(dir.path())?;
        for k in 0..20_000u64 {
            s.timers().register_event(&k, 1_000 + (k % 3) as i64);
        }
        s.flush_timers()?;
        let queues = &s.timers.disk.as_ref().ok_or_else(|| Error::internal("not on disk"))?.queues;
        assert!(queues[0].key_groups() <= 32, "one position per key group, not per timer");
        let mut seen = BTreeSet::new();
        let mut last = i64::MIN;
        while let Some((at, k)) = s.pop_due_timer(true, 2_000)? {
            assert!(at >= last && at == 1_000 + (k % 3) as i64);
            last = at;
            assert!(seen.insert(k), "key {k} fired twice");
        }
        assert_eq!(seen.len(), 20_000);
        Ok(())
    }
}
