//! The built-in one-input operators. Each processes a whole batch per call and pushes its output
//! batch to the next operator.

use std::hash::Hash;

use weir_core::Result;

use crate::output::{Batch, Control, Output};
use crate::state::backend::{HeapView, KeyedTable, Restored, TableSpec};
use crate::state::heap::HeapTable;
use crate::state::table::{Table, TableFn};

pub use crate::state::map::{StateHasher, StateMap};

/// `map`: one output per input.
pub struct Map<O, F> {
    f: F,
    buf: Batch<O>,
    next: Box<dyn Output<O>>,
}

impl<O, F> Map<O, F> {
    /// A map feeding `next`.
    pub fn new(f: F, next: Box<dyn Output<O>>) -> Self {
        Map { f, buf: Batch::default(), next }
    }
}

impl<I, O, F: FnMut(I) -> O> Output<I> for Map<O, F> {
    #[inline]
    fn push(&mut self, batch: &mut Batch<I>) -> Result<()> {
        self.buf.records.extend(batch.records.drain(..).map(&mut self.f));
        self.buf.take_timestamps_from(batch);
        self.next.push(&mut self.buf)
    }
    fn control(&mut self, event: Control) -> Result<()> {
        self.next.control(event)
    }
    fn finish(&mut self) -> Result<()> {
        self.next.finish()
    }
}

/// `filter`: keeps the records the predicate accepts.
pub struct Filter<T, F> {
    f: F,
    next: Box<dyn Output<T>>,
}

impl<T, F> Filter<T, F> {
    /// A filter feeding `next`.
    pub fn new(f: F, next: Box<dyn Output<T>>) -> Self {
        Filter { f, next }
    }
}

impl<T, F: FnMut(&T) -> bool> Output<T> for Filter<T, F> {
    #[inline]
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        batch.retain(&mut self.f);
        if batch.is_empty() { Ok(()) } else { self.next.push(batch) }
    }
    fn control(&mut self, event: Control) -> Result<()> {
        self.next.control(event)
    }
    fn finish(&mut self) -> Result<()> {
        self.next.finish()
    }
}

/// `flat_map`: any number of outputs per input, pushed onto the given vector.
pub struct FlatMap<O, F> {
    f: F,
    buf: Batch<O>,
    next: Box<dyn Output<O>>,
}

impl<O, F> FlatMap<O, F> {
    /// A flat map feeding `next`.
    pub fn new(f: F, next: Box<dyn Output<O>>) -> Self {
        FlatMap { f, buf: Batch::default(), next }
    }
}

impl<I, O, F: FnMut(I, &mut Vec<O>)> Output<I> for FlatMap<O, F> {
    #[inline]
    fn push(&mut self, batch: &mut Batch<I>) -> Result<()> {
        match batch.timestamps.take() {
            None => {
                for x in batch.records.drain(..) {
                    (self.f)(x, &mut self.buf.records);
                }
            }
            Some(mut ts) => {
                // Every output inherits the timestamp of the input it came from.
                let out_ts = self.buf.timestamps.get_or_insert_with(Vec::new);
                for (x, t) in batch.records.drain(..).zip(ts.drain(..)) {
                    (self.f)(x, &mut self.buf.records);
                    out_ts.resize(self.buf.records.len(), t);
                }
                batch.timestamps = Some(ts);
            }
        }
        if self.buf.is_empty() { Ok(()) } else { self.next.push(&mut self.buf) }
    }
    fn control(&mut self, event: Control) -> Result<()> {
        self.next.control(event)
    }
    fn finish(&mut self) -> Result<()> {
        self.next.finish()
    }
}

/// A keyed running aggregation (Flink's rolling `reduce`, `sum`, `aggregate`): one accumulator
/// per key, one output per input. `first` turns a key's first record into its accumulator and
/// the record to emit; `step` folds every later record into the accumulator and says what to emit.
/// (Two functions rather than an `Option` accumulator keep the state table small: with 100,000
/// keys, the difference decides whether it fits in a core's cache.)
pub struct KeyedAggregate<K, A, O, KF, First, Step> {
    key: KF,
    first: First,
    step: Step,
    /// The accumulators, in the job's state backend (on the heap until the task opens it).
    state: Table<K, A>,
    buf: Batch<O>,
    next: Box<dyn Output<O>>,
    checkpoint: crate::checkpoint::task::TaskCheckpoint,
    uid: String,
    max_parallelism: u32,
}

impl<K, A, O, KF, First, Step> KeyedAggregate<K, A, O, KF, First, Step> {
    /// `key` extracts the key; `first` and `step` as described on the type.
    pub fn new(key: KF, first: First, step: Step, next: Box<dyn Output<O>>) -> Self {
        KeyedAggregate {
            key,
            first,
            step,
            state: Table::Heap(HeapTable::default()),
            buf: Batch::default(),
            next,
            checkpoint: Default::default(),
            uid: String::new(),
            max_parallelism: 1,
        }
    }

    /// Takes part in the checkpoints of the task `env` describes, starting from the state it
    /// restored.
    pub fn checkpointed(mut self, env: &crate::context::TaskEnv) -> Result<Self>
    where
        K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
        A: serde::Serialize + serde::de::DeserializeOwned,
    {
        let entries = crate::checkpoint::restore_keyed::<K, A>(&env.restored_keyed)?;
        let spec = TableSpec { group: weir_core::keygroup::key_group::<K>, queues: &[] };
        self.state = Table::open(&env.state(), spec, Restored { entries, timers: Vec::new() }, |_, _, _| {})?;
        self.checkpoint = env.checkpoint.clone();
        self.uid = env.op.uid.clone();
        self.max_parallelism = env.op.max_parallelism;
        Ok(self)
    }
}

/// One batch of a keyed aggregation, folded into whichever backend holds the accumulators.
struct Fold<'a, T, O, KF, First, Step> {
    records: &'a mut Vec<T>,
    out: &'a mut Vec<O>,
    key: &'a mut KF,
    first: &'a mut First,
    step: &'a mut Step,
}

impl<T, K, A, O, KF, First, Step> TableFn<K, A> for Fold<'_, T, O, KF, First, Step>
where
    KF: FnMut(&T) -> K,
    First: FnMut(T) -> (A, O),
    Step: FnMut(&mut A, T) -> O,
{
    type Out = Result<()>;

    #[inline]
    fn call<Tb: KeyedTable<K, A>>(self, table: &mut Tb) -> Result<()> {
        for x in self.records.drain(..) {
            let out = table.update((self.key)(&x), x, &mut *self.step, &mut *self.first)?;
            self.out.push(out);
        }
        Ok(())
    }
}

impl<T, K, A, O, KF, First, Step> Output<T> for KeyedAggregate<K, A, O, KF, First, Step>
where
    K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
    A: serde::Serialize + serde::de::DeserializeOwned,
    KF: FnMut(&T) -> K,
    First: FnMut(T) -> (A, O),
    Step: FnMut(&mut A, T) -> O,
{
    #[inline]
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        self.buf.records.reserve(batch.len());
        let fold = Fold {
            records: &mut batch.records,
            out: &mut self.buf.records,
            key: &mut self.key,
            first: &mut self.first,
            step: &mut self.step,
        };
        self.state.with(fold)?;
        // One output per input, in order: the outputs keep the inputs' timestamps.
        self.buf.take_timestamps_from(batch);
        if self.buf.is_empty() { Ok(()) } else { self.next.push(&mut self.buf) }
    }
    fn control(&mut self, event: Control) -> Result<()> {
        if let Control::Barrier(id) = event
            && self.checkpoint.enabled()
        {
            use crate::checkpoint::OperatorSnapshot;
            let uid = self.uid.clone();
            let max_parallelism = self.max_parallelism;
            let encode =
                |view: HeapView<'_, K, A>| crate::checkpoint::snapshot_keyed(view.values.iter(), max_parallelism);
            let snapshot = self.state.snapshot(id, self.checkpoint.completed(), encode)?;
            self.checkpoint.add_state(snapshot, OperatorSnapshot { uid, ..Default::default() });
        }
        self.next.control(event)
    }
    fn finish(&mut self) -> Result<()> {
        self.next.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    struct Sink(Rc<RefCell<Vec<u64>>>, Rc<RefCell<bool>>);
    impl Output<u64> for Sink {
        fn push(&mut self, batch: &mut Batch<u64>) -> Result<()> {
            self.0.borrow_mut().append(&mut batch.records);
            batch.clear();
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            *self.1.borrow_mut() = true;
            Ok(())
        }
    }

    #[test]
    fn a_chain_of_map_filter_flat_map_and_keyed_sum() -> Result<()> {
        let got = Rc::new(RefCell::new(Vec::new()));
        let done = Rc::new(RefCell::new(false));
        let sink = Box::new(Sink(got.clone(), done.clone()));
        let sum = KeyedAggregate::new(
            |x: &u64| x % 2,
            |x: u64| (x, x),
            |a: &mut u64, x: u64| {
                *a += x;
                *a
            },
            sink,
        );
        let flat = FlatMap::new(|x: u64, out: &mut Vec<u64>| out.extend(std::iter::repeat_n(x, 2)), Box::new(sum));
        let filter = Filter::new(|x: &u64| *x < 4, Box::new(flat));
        let mut map = Map::new(|x: u64| x + 1, Box::new(filter));
        map.push(&mut Batch::of(vec![0, 1, 2, 3]))?;
        map.finish()?;
        // map: 1 2 3 4; filter: 1 2 3; flat: 1 1 2 2 3 3; running sums by parity.
        assert_eq!(*got.borrow(), vec![1, 2, 2, 4, 5, 8]);
        assert!(*done.borrow());
        Ok(())
    }
}
