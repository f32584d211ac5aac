//! Operator list state: per operator instance, not per key (Flink's `ListState` from an
//! `OperatorStateStore`), snapshotted whole and divided among the new instances on a restore at
//! another parallelism ([`redistribute`]): evenly, or every entry to every instance (a union).

use std::any::{Any, TypeId};
use std::collections::BTreeMap;

use weir_core::{Error, Result};

pub use weir_checkpoint::format::Redistribution;

type Encode = fn(&(dyn Any + Send)) -> Result<Vec<Vec<u8>>>;

struct OperatorEntry {
    mode: Redistribution,
    type_id: TypeId,
    type_name: &'static str,
    values: Box<dyn Any + Send>,
    encode: Encode,
}

#[derive(Default)]
struct OperatorStates {
    declared: BTreeMap<String, OperatorEntry>,
    /// Restored states not declared (yet) by this instance, kept as they were.
    restored: BTreeMap<String, weir_checkpoint::ListSnapshot>,
    was_restored: bool,
}

fn encode_list<S: serde::Serialize + 'static>(values: &(dyn Any + Send)) -> Result<Vec<Vec<u8>>> {
    let values = values.downcast_ref::<Vec<S>>().ok_or_else(|| Error::internal("operator state of another type"))?;
    values
        .iter()
        .map(|v| bitcode::serialize(v).map_err(|e| Error::internal(format!("cannot encode operator state: {e}"))))
        .collect()
}

/// The operator (non-keyed) list states of one operator instance, by name: what sources and sinks
/// keep about their progress (offsets, pending files), which checkpoints snapshot and restores
/// redistribute with [`redistribute`].
#[derive(Clone, Default)]
pub struct OperatorStateStore {
    states: std::sync::Arc<std::sync::Mutex<OperatorStates>>,
}

impl std::fmt::Debug for OperatorStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorStateStore").field("states", &self.names()).finish()
    }
}

impl OperatorStateStore {
    /// A store holding restored states, which [`OperatorStateStore::list_state`] hands out.
    pub fn restored(lists: BTreeMap<String, weir_checkpoint::ListSnapshot>) -> Self {
        let states = OperatorStates { declared: BTreeMap::new(), restored: lists, was_restored: true };
        OperatorStateStore { states: std::sync::Arc::new(std::sync::Mutex::new(states)) }
    }

    /// Whether the instance restored from a snapshot (so a source goes on from its state rather
    /// than starting over, even where that state is empty).
    pub fn is_restored(&self) -> bool {
        self.states.lock().map(|s| s.was_restored).unwrap_or(false)
    }

    /// The list state `name` of element type `S`, created empty on first use (or with its
    /// restored entries); an error if the name was used with another type or redistribution mode.
    pub fn list_state<S: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static>(
        &self,
        name: &str,
        mode: Redistribution,
    ) -> Result<OperatorListState<S>> {
        let mut states = self.states.lock().map_err(|_| Error::internal("operator state lock poisoned"))?;
        match states.declared.get(name) {
            Some(e) if e.type_id != TypeId::of::<S>() || e.mode != mode => {
                return Err(Error::invalid_job(format!(
                    "operator state '{name}' is used as a {mode:?} list of {} but was declared as a {:?} list of {}",
                    std::any::type_name::<S>(),
                    e.mode,
                    e.type_name
                )));
            }
            Some(_) => {}
            None => {
                let values: Vec<S> = match states.restored.remove(name) {
                    None => Vec::new(),
                    Some(l) => l
                        .entries
                        .iter()
                        .map(|b| {
                            bitcode::deserialize(b).map_err(|e| {
                                Error::InvalidJob(format!(
                                    "the restored operator state '{name}' was written as {} and cannot be read as {}:                                      {e}",
                                    l.type_name,
                                    std::any::type_name::<S>()
                                ))
                            })
                        })
                        .collect::<Result<_>>()?,
                };
                states.declared.insert(
                    name.to_string(),
                    OperatorEntry {
                        mode,
                        type_id: TypeId::of::<S>(),
                        type_name: std::any::type_name::<S>(),
                        values: Box::new(values),
                        encode: encode_list::<S>,
                    },
                );
            }
        }
        Ok(OperatorListState { store: self.clone(), name: name.to_string(), _s: std::marker::PhantomData })
    }

    /// The names of the declared states.
    pub fn names(&self) -> Vec<String> {
        self.states.lock().map(|s| s.declared.keys().cloned().collect()).unwrap_or_default()
    }

    /// Every state, encoded for a checkpoint (restored ones not declared since included).
    pub fn snapshot(&self) -> Result<BTreeMap<String, weir_checkpoint::ListSnapshot>> {
        let states = self.states.lock().map_err(|_| Error::internal("operator state lock poisoned"))?;
        let mut out = states.restored.clone();
        for (name, e) in &states.declared {
            let entries = (e.encode)(e.values.as_ref())?;
            out.insert(
                name.clone(),
                weir_checkpoint::ListSnapshot { mode: e.mode, type_name: e.type_name.to_string(), entries },
            );
        }
        Ok(out)
    }
}

/// A handle on one operator list state.
#[derive(Clone, Debug)]
pub struct OperatorListState<S> {
    store: OperatorStateStore,
    name: String,
    _s: std::marker::PhantomData<fn() -> S>,
}

impl<S: Clone + Send + 'static> OperatorListState<S> {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<S>) -> R) -> Result<R> {
        let mut states = self.store.states.lock().map_err(|_| Error::internal("operator state lock poisoned"))?;
        let entry = states.declared.get_mut(&self.name).ok_or_else(|| Error::internal("operator state vanished"))?;
        let values =
            entry.values.downcast_mut::<Vec<S>>().ok_or_else(|| Error::internal("operator state of another type"))?;
        Ok(f(values))
    }
    /// The entries.
    pub fn get(&self) -> Result<Vec<S>> {
        self.with(|v| v.clone())
    }
    /// Replaces the entries.
    pub fn update(&self, values: Vec<S>) -> Result<()> {
        self.with(|v| *v = values)
    }
    /// Appends an entry.
    pub fn add(&self, value: S) -> Result<()> {
        self.with(|v| v.push(value))
    }
}

/// Divides the list states of `parts.len()` old instances among `parallelism` new ones.
pub fn redistribute<S: Clone>(parts: &[Vec<S>], parallelism: u32, mode: Redistribution) -> Vec<Vec<S>> {
    let all: Vec<S> = parts.iter().flatten().cloned().collect();
    let p = parallelism.max(1) as usize;
    match mode {
        Redistribution::Union => vec![all; p],
        Redistribution::EvenSplit => {
            let n = all.len();
            let mut out = Vec::with_capacity(p);
            let mut it = all.into_iter();
            for i in 0..p {
                let take = n * (i + 1) / p - n * i / p;
                out.push(it.by_ref().take(take).collect());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_list_state_is_typed_and_redistributes_evenly_or_as_a_union() -> Result<()> {
        let store = OperatorStateStore::default();
        let offsets = store.list_state::<u64>("offsets", Redistribution::EvenSplit)?;
        offsets.add(3)?;
        offsets.add(5)?;
        assert_eq!(store.list_state::<u64>("offsets", Redistribution::EvenSplit)?.get()?, vec![3, 5]);
        let e = store.list_state::<String>("offsets", Redistribution::EvenSplit).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("operator state 'offsets' is used as"));
        // Snapshot and restore: declared states by value, undeclared restored ones as they were.
        let snap = store.snapshot()?;
        let back = OperatorStateStore::restored(snap.clone());
        assert!(back.is_restored() && !store.is_restored());
        assert_eq!(back.snapshot()?, snap, "undeclared restored states are kept");
        assert_eq!(back.list_state::<u64>("offsets", Redistribution::EvenSplit)?.get()?, vec![3, 5]);
        let e = OperatorStateStore::restored(snap).list_state::<String>("offsets", Redistribution::EvenSplit);
        assert!(e.err().map(|e| e.to_string()).unwrap_or_default().contains("cannot be read as"));
        let old = vec![vec![1, 2, 3], vec![4], vec![5, 6, 7, 8, 9]];
        for p in 1..6 {
            let new = redistribute(&old, p, Redistribution::EvenSplit);
            assert_eq!(new.len(), p as usize);
            assert_eq!(new.concat(), (1..=9).collect::<Vec<_>>(), "each entry exactly once");
            let sizes: Vec<usize> = new.iter().map(Vec::len).collect();
            assert!(sizes.iter().max().unwrap_or(&0) - sizes.iter().min().unwrap_or(&0) <= 1, "{sizes:?}");
            assert!(redistribute(&old, p, Redistribution::Union).iter().all(|v| v.len() == 9));
        }
        Ok(())
    }
}
