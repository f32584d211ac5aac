//! The conformance suite of state backends: every backend's [`KeyedTable`] and [`WindowStore`]
//! runs the same operations against a model (ordered maps), and a snapshot of each restores into
//! each. A new backend passes when it is added to [`BACKENDS`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use weir_core::{Error, Result};

use super::backend::{HeapView, KeyedTable, Queue, Restored, StateSnapshot, TableSpec, WindowStore};
use super::table::{Table, Windows};
use crate::disk::KeyedChunks;
use crate::env::StateEnv;
use crate::time::Timestamp;
use weir_checkpoint::file::RawState;
use weir_core::checkpointing::StateBackendConfig;

/// The backends under test, by name: whether each is the disk backend (with a cache of 3 entries,
/// so that most operations go to its store).
const BACKENDS: [(&str, bool); 2] = [("heap", false), ("disk", true)];

/// Two queues: one kept in snapshots, one derived from the values (at the value's size).
const QUEUES: &[Queue] = &[Queue { tag: b"kept", derived: false }, Queue { tag: b"derived", derived: true }];

/// The value of a key: a list, so that updates in place show.
type Value = Vec<u32>;

/// A heap snapshot entry in this suite's format.
#[derive(Serialize, Deserialize)]
enum Entry<V> {
    Value(V),
    Timer(usize, Timestamp),
}

fn spec() -> TableSpec<u32> {
    TableSpec { group: weir_core::keygroup::key_group::<u32>, queues: QUEUES }
}

fn derive(_: &u32, v: &Value, out: &mut Vec<(usize, Timestamp)>) {
    out.push((1, v.len() as Timestamp));
}

fn encode(view: HeapView<'_, u32, Value>) -> Result<KeyedChunks> {
    let values = view.values.iter().map(|(k, v)| (k, Entry::Value(v)));
    // The derived queue is not kept: it is rebuilt from the values.
    let timers = view
        .timers
        .iter()
        .take(1)
        .enumerate()
        .flat_map(|(q, ts)| ts.iter().map(move |(at, k)| (*k, Entry::Timer(q, *at))));
    weir_checkpoint::snapshot_keyed_entries(values.chain(timers), MAX_PARALLELISM)
}

/// Key groups of the instances under test.
const MAX_PARALLELISM: u32 = 128;

/// What a fresh instance on a backend starts from: its backend (the disk backend with a cache of 3
/// entries) and what it restores (`snapshot`, if any).
struct Start {
    backend: StateBackendConfig,
    keyed: KeyedChunks,
    raw: RawState,
}

impl Start {
    fn env(&self) -> StateEnv<'_> {
        StateEnv {
            backend: &self.backend,
            restored_keyed: &self.keyed,
            restored_raw: &self.raw,
            instance: "conformance".into(),
            max_parallelism: MAX_PARALLELISM,
            parallelism: 1,
            subtask: 0,
        }
    }
}

fn env_on(disk: bool, snapshot: Option<&(KeyedChunks, KeyedChunks)>) -> Start {
    let backend = if disk { crate::disk::test_config(None, false, 3) } else { StateBackendConfig::default() };
    let (keyed, raw) = snapshot.cloned().unwrap_or_default();
    Start { backend, keyed, raw: RawState::from(raw) }
}

fn open(disk: bool, snapshot: Option<&(KeyedChunks, KeyedChunks)>) -> Result<Table<u32, Value>> {
    let start = env_on(disk, snapshot);
    let e = start.env();
    let mut restored = Restored::default();
    for (k, entry) in weir_checkpoint::restore_keyed::<u32, Entry<Value>>(e.restored_keyed)? {
        match entry {
            Entry::Value(v) => restored.entries.push((k, v)),
            Entry::Timer(q, at) => restored.timers.push((q, at, k)),
        }
    }
    Table::open(&e, spec(), restored, derive)
}

/// A snapshot made at once: (keyed chunks, raw chunks).
fn made(snapshot: StateSnapshot) -> Result<(KeyedChunks, KeyedChunks)> {
    let raw = match snapshot.deferred {
        None => Vec::new(),
        Some(d) => {
            let (raw, links) = d.made()?;
            if !links.is_empty() {
                return Err(Error::internal("a full snapshot was expected"));
            }
            raw
        }
    };
    Ok((snapshot.keyed, raw))
}

/// What a table holds, as the model does: values, and each queue's timers by time.
#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    values: BTreeMap<u32, Value>,
    timers: [BTreeMap<Timestamp, BTreeSet<u32>>; 2],
}

/// Deterministic pseudo-random numbers (xorshift), so a failure repeats.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One round of random operations on `table` and `model` alike, checking every result.
fn operate(table: &mut Table<u32, Value>, model: &mut Model, rng: &mut Rng, name: &str) -> Result<()> {
    for _ in 0..300 {
        let k = rng.below(40) as u32;
        match rng.below(6) {
            0 => {
                let r = table.update(
                    k,
                    k,
                    |v, x| {
                        v.push(x);
                        v.len()
                    },
                    |x| (vec![x], 1),
                )?;
                let m = model.values.entry(k).or_default();
                m.push(k);
                assert_eq!(r, m.len(), "{name}: update of {k}");
            }
            1 => {
                let (v, made) = table.entry(&k, Vec::new)?;
                assert_eq!(made, !model.values.contains_key(&k), "{name}: entry of {k}");
                v.push(1000 + k);
                model.values.entry(k).or_default().push(1000 + k);
            }
            2 => {
                let got = table.get_mut(&k)?.cloned();
                assert_eq!(got.as_ref(), model.values.get(&k), "{name}: get of {k}");
            }
            3 => {
                table.remove(&k)?;
                model.values.remove(&k);
            }
            4 => {
                let (q, at) = (rng.below(2) as usize, rng.below(50) as Timestamp);
                table.add_timer(q, at, &k)?;
                model.timers[q].entry(at).or_default().insert(k);
            }
            _ => {
                let (q, until) = (rng.below(2) as usize, rng.below(50) as Timestamp);
                pop_and_check(table, model, q, until, name)?;
            }
        }
    }
    Ok(())
}

/// Pops every timer of queue `q` due at `until` from both, checking that they agree: the same
/// timers, in order of time (within one time, in any order).
fn pop_and_check(
    table: &mut Table<u32, Value>,
    model: &mut Model,
    q: usize,
    until: Timestamp,
    name: &str,
) -> Result<()> {
    let mut popped: BTreeMap<Timestamp, BTreeSet<u32>> = BTreeMap::new();
    let mut last = Timestamp::MIN;
    while let Some((at, k)) = table.pop_timer(q, until)? {
        assert!(at >= last && at <= until, "{name}: timer at {at} after {last}, until {until}");
        last = at;
        assert!(popped.entry(at).or_default().insert(k), "{name}: timer ({at}, {k}) popped twice");
    }
    let mut due = model.timers[q].split_off(&until.saturating_add(1));
    std::mem::swap(&mut due, &mut model.timers[q]);
    assert_eq!(popped, due, "{name}: timers of queue {q} due at {until}");
    Ok(())
}

/// Everything a table holds, read through the trait (its timers popped).
fn contents(table: &mut Table<u32, Value>) -> Result<Model> {
    let mut model = Model::default();
    table.for_each(|k, v| {
        model.values.insert(*k, v.clone());
        Ok(())
    })?;
    for q in 0..2 {
        while let Some((at, k)) = table.pop_timer(q, Timestamp::MAX)? {
            model.timers[q].entry(at).or_default().insert(k);
        }
    }
    Ok(model)
}

#[test]
fn keyed_tables_of_every_backend_behave_as_the_model_and_restore_into_every_backend() -> Result<()> {
    for (name, disk) in BACKENDS {
        let mut table = open(disk, None)?;
        let mut model = Model::default();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..4 {
            operate(&mut table, &mut model, &mut rng, name)?;
            let snapshot = made(table.snapshot(round + 1, round, encode)?)?;
            // The derived queue restores from the values: at least a timer per value, at most those
            // and the ones it held (a backend may keep stale entries; operators skip them).
            let mut derived: BTreeMap<Timestamp, BTreeSet<u32>> = BTreeMap::new();
            for (k, v) in &model.values {
                derived.entry(v.len() as Timestamp).or_default().insert(*k);
            }
            for (into, into_disk) in BACKENDS {
                let mut restored = open(into_disk, Some(&snapshot))?;
                let mut got = contents(&mut restored)?;
                assert_eq!(
                    (&got.values, &got.timers[0]),
                    (&model.values, &model.timers[0]),
                    "{name} {round} into {into}"
                );
                for (at, keys) in &derived {
                    let held = got.timers[1].get(at);
                    assert!(held.is_some_and(|h| h.is_superset(keys)), "{name} {round} into {into}: derived at {at}");
                }
                got.timers[1].retain(|at, keys| {
                    keys.retain(|k| !derived.get(at).is_some_and(|d| d.contains(k)));
                    !keys.is_empty()
                });
                for (at, keys) in &got.timers[1] {
                    let held = model.timers[1].get(at);
                    assert!(held.is_some_and(|h| h.is_superset(keys)), "{name} {round} into {into}: stale at {at}");
                }
            }
        }
        // What the table holds after the rounds (its derived queue as operated, not rebuilt).
        assert_eq!(contents(&mut table)?, model, "{name} at the end");
    }
    Ok(())
}

/// Time windows' model: per end, per key, (fired, accumulator); and what fired, in order.
#[derive(Default)]
struct WindowModel {
    windows: BTreeMap<Timestamp, BTreeMap<u32, (bool, u64)>>,
}

fn open_windows(disk: bool, snapshot: Option<&(KeyedChunks, KeyedChunks)>) -> Result<Windows<u32, u64>> {
    let start = env_on(disk, snapshot);
    let typed = weir_checkpoint::restore_keyed::<u32, (Timestamp, bool, u64)>(&start.keyed)?;
    Windows::open(&start.env(), typed)
}

/// Fires what `advance(time)` fires on `windows`, sorted by (end, key).
fn fire(windows: &mut Windows<u32, u64>, time: Timestamp, lateness: i64) -> Result<Vec<(Timestamp, u32, u64)>> {
    let mut fired = Vec::new();
    windows.advance(time, lateness, |end, k, acc| fired.push((end, *k, *acc)))?;
    fired.sort_unstable();
    Ok(fired)
}

impl WindowModel {
    fn add(&mut self, end: Timestamp, k: u32, open: bool, x: u64) -> (u64, bool) {
        let slot = self.windows.entry(end).or_default().entry(k).or_insert((false, 0));
        slot.1 += x;
        if !open || slot.0 {
            slot.0 = true;
            return (slot.1, true);
        }
        (slot.1, false)
    }

    fn advance(&mut self, time: Timestamp, lateness: i64) -> Vec<(Timestamp, u32, u64)> {
        let mut fired = Vec::new();
        for (end, keys) in self.windows.iter_mut().filter(|(end, _)| **end - 1 <= time) {
            for (k, slot) in keys.iter_mut().filter(|(_, s)| !s.0) {
                fired.push((*end, *k, slot.1));
                slot.0 = true;
            }
        }
        self.windows.retain(|end, _| (end - 1).saturating_add(lateness) > time);
        fired
    }
}

#[test]
fn window_stores_of_every_backend_fire_as_the_model_and_restore_into_every_backend() -> Result<()> {
    let lateness = 20;
    for (name, disk) in BACKENDS {
        let mut windows = open_windows(disk, None)?;
        let mut model = WindowModel::default();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut watermark: Timestamp = 0;
        for round in 0..5 {
            for _ in 0..200 {
                let k = rng.below(30) as u32;
                // Windows of 10 ms ending after the watermark minus the lateness: some complete.
                let end = (watermark - lateness + 10 + rng.below(60) as Timestamp) / 10 * 10;
                if (end - 1).saturating_add(lateness) <= watermark {
                    continue;
                }
                let open = end - 1 > watermark;
                let x = rng.below(100);
                let (acc, fire) = windows.add(end, &k, open, || 0)?;
                *acc += x;
                assert_eq!((*acc, fire), model.add(end, k, open, x), "{name}: add to ({end}, {k})");
            }
            watermark += 15;
            assert_eq!(fire(&mut windows, watermark, lateness)?, model.advance(watermark, lateness), "{name} {round}");
            let snapshot = made(windows.snapshot(round + 1, round, MAX_PARALLELISM)?)?;
            for (into, into_disk) in BACKENDS {
                // A restored store fires what the original would: everything, at the end of time.
                let mut restored = open_windows(into_disk, Some(&snapshot))?;
                let mut copy = WindowModel { windows: model.windows.clone() };
                let want = copy.advance(Timestamp::MAX - 1, lateness);
                assert_eq!(fire(&mut restored, Timestamp::MAX - 1, lateness)?, want, "{name} {round} into {into}");
            }
        }
    }
    Ok(())
}

/// A key's process-function states in the model: a value, a list and a map.
type KeyStates = (Option<u64>, Vec<u32>, BTreeMap<u32, u32>);

/// The keyed states of a fresh process-function instance on a backend, restoring `snapshot`.
fn open_states(disk: bool, snapshot: Option<&(KeyedChunks, KeyedChunks)>) -> Result<super::KeyedStates<u32>> {
    super::KeyedStates::open(&env_on(disk, snapshot).env())
}

/// Every key's states, read through the states' API (declaring them first, as an operator does).
fn read_states(s: &mut super::KeyedStates<u32>) -> Result<BTreeMap<u32, KeyStates>> {
    use super::StateKind;
    let value = s.declare::<Option<u64>>("value", StateKind::Value, None)?;
    let list = s.declare::<Vec<u32>>("list", StateKind::List, None)?;
    let map = s.declare::<BTreeMap<u32, u32>>("map", StateKind::Map, None)?;
    let mut out = BTreeMap::new();
    for k in 0..40u32 {
        let v = *s.get_or_init(&k, value, 0, || None::<u64>)?;
        let l = s.get_or_init(&k, list, 0, Vec::<u32>::new)?.clone();
        let m = s.get_or_init(&k, map, 0, BTreeMap::<u32, u32>::new)?.clone();
        if v.is_some() || !l.is_empty() || !m.is_empty() {
            out.insert(k, (v, l, m));
        }
    }
    Ok(out)
}

/// Pops every event-time timer due at `until`, as (time, key) in order of time (within one time,
/// sorted).
fn pop_states_timers(s: &mut super::KeyedStates<u32>, until: Timestamp) -> Result<BTreeSet<(Timestamp, u32)>> {
    s.flush_timers()?;
    let mut out = BTreeSet::new();
    let mut last = Timestamp::MIN;
    while let Some((at, k)) = s.pop_due_timer(true, until)? {
        assert!(at >= last && at <= until, "timer at {at} after {last}, until {until}");
        last = at;
        assert!(out.insert((at, k)), "timer ({at}, {k}) popped twice");
    }
    Ok(out)
}

#[test]
fn keyed_states_of_every_backend_behave_as_the_model_and_restore_into_every_backend() -> Result<()> {
    use super::StateKind;
    for (name, disk) in BACKENDS {
        let mut s = open_states(disk, None)?;
        let mut model: BTreeMap<u32, KeyStates> = BTreeMap::new();
        let mut timers: BTreeSet<(Timestamp, u32)> = BTreeSet::new();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for round in 0..4u64 {
            let value = s.declare::<Option<u64>>("value", StateKind::Value, None)?;
            let list = s.declare::<Vec<u32>>("list", StateKind::List, None)?;
            let map = s.declare::<BTreeMap<u32, u32>>("map", StateKind::Map, None)?;
            for i in 0..300u32 {
                let k = rng.below(40) as u32;
                let m = model.entry(k).or_default();
                match rng.below(7) {
                    0 => {
                        *s.get_or_init(&k, value, 0, || None::<u64>)?.get_or_insert(0) += 1;
                        *m.0.get_or_insert(0) += 1;
                    }
                    1 => {
                        s.get_or_init(&k, list, 0, Vec::<u32>::new)?.push(i);
                        m.1.push(i);
                    }
                    2 => {
                        s.get_or_init(&k, map, 0, BTreeMap::<u32, u32>::new)?.insert(i % 5, i);
                        m.2.insert(i % 5, i);
                    }
                    3 => {
                        s.clear(&k, value)?;
                        m.0 = None;
                    }
                    4 => {
                        let at = rng.below(100) as Timestamp;
                        s.timers().register_event(&k, at);
                        timers.insert((at, k));
                    }
                    5 => {
                        let at = rng.below(100) as Timestamp;
                        s.timers().delete_event(&k, at);
                        timers.remove(&(at, k));
                    }
                    _ => {
                        let until = rng.below(30) as Timestamp;
                        let due: BTreeSet<_> = timers.iter().filter(|(at, _)| *at <= until).copied().collect();
                        timers.retain(|(at, _)| *at > until);
                        assert_eq!(pop_states_timers(&mut s, until)?, due, "{name}: timers due at {until}");
                    }
                }
            }
            s.flush_timers()?;
            model.retain(|_, (v, l, m)| v.is_some() || !l.is_empty() || !m.is_empty());
            let snapshot = made(s.snapshot(round + 1, round, MAX_PARALLELISM)?)?;
            assert_eq!(read_states(&mut s)?, model, "{name} round {round}");
            for (into, into_disk) in BACKENDS {
                let mut restored = open_states(into_disk, Some(&snapshot))?;
                assert_eq!(read_states(&mut restored)?, model, "{name} {round} into {into}: states");
                let all = pop_states_timers(&mut restored, Timestamp::MAX)?;
                assert_eq!(all, timers, "{name} {round} into {into}: timers");
            }
        }
    }
    Ok(())
}
