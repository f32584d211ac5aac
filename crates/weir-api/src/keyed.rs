//! `KeyedStream`: a stream partitioned by key, with running per-key aggregations.

use std::ops::AddAssign;

use weir_core::ShipStrategy;
use weir_runtime::operators::KeyedAggregate;

use crate::builder::key_hash;
use crate::{AggregateFunction, Data, DataStream, Key};

/// A stream partitioned by a key (Flink's `KeyedStream<T, K>`). Its operators keep state per key
/// and emit the updated value for every record, as Flink's rolling aggregations do.
///
/// `KS` is the key selector's type: keyed operators call it for every record, so it stays a
/// concrete type (inlined) rather than a boxed function.
pub struct KeyedStream<K, T, KS> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: KS,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<T: Data> DataStream<T> {
    /// Partitions the stream by key: records with equal keys go to the same subtask, in key groups.
    pub fn key_by<K: Key, KS: Fn(&T) -> K + Clone + Send + Sync + 'static>(&self, key: KS) -> KeyedStream<K, T, KS> {
        KeyedStream::new(self.clone(), key)
    }
}

impl<K: Key, T: Data, KS: Fn(&T) -> K + Clone + Send + Sync + 'static> KeyedStream<K, T, KS> {
    pub(crate) fn new(stream: DataStream<T>, key: KS) -> Self {
        KeyedStream { stream, key, _k: std::marker::PhantomData }
    }

    /// The key selector.
    pub fn key_selector(&self) -> KS {
        self.key.clone()
    }

    /// A keyed running aggregation: `first` turns a key's first record into its accumulator and
    /// output, `step` folds a later record in and returns what to emit.
    fn aggregate_with<A: Send + serde::Serialize + serde::de::DeserializeOwned + 'static, O: Data>(
        &self,
        operator: &str,
        first: impl FnMut(T) -> (A, O) + Clone + Send + Sync + 'static,
        step: impl FnMut(&mut A, T) -> O + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        let key = self.key.clone();
        self.stream.one_input(
            operator,
            move |env, next| {
                let key = key.clone();
                Ok(Box::new(
                    KeyedAggregate::new(move |t: &T| key(t), first.clone(), step.clone(), next).checkpointed(env)?,
                ))
            },
            Some(ShipStrategy::Hash),
            Some(key_hash(self.key.clone())),
        )
    }

    /// Rolling reduce: per key, `f(previous result, record)`; the first record of a key is its
    /// first result. Emits the new result for every record.
    pub fn reduce(&self, f: impl FnMut(T, T) -> T + Clone + Send + Sync + 'static) -> DataStream<T> {
        let mut f = f;
        // `f` takes both values by value: the accumulator is moved out of an Option and back,
        // which costs one clone per record (the emitted copy) and needs no `T: Default`.
        self.aggregate_with(
            "Keyed Reduce",
            |x: T| (Some(x.clone()), x),
            move |acc: &mut Option<T>, x: T| {
                let new = match acc.take() {
                    Some(prev) => f(prev, x),
                    None => x,
                };
                *acc = Some(new.clone());
                new
            },
        )
    }

    /// Rolling sum of the field `field` selects: emits the key's first record with that field
    /// replaced by the running sum (Flink's `sum(pos)`).
    pub fn sum<V: AddAssign + Copy + 'static>(
        &self,
        field: impl for<'a> Fn(&'a mut T) -> &'a mut V + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.fold_field("Keyed Aggregation (sum)", field, |acc, x| *acc += x)
    }

    /// Rolling minimum of a field (Flink's `min(pos)`).
    pub fn min<V: PartialOrd + Copy + 'static>(
        &self,
        field: impl for<'a> Fn(&'a mut T) -> &'a mut V + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.fold_field("Keyed Aggregation (min)", field, |acc, x| {
            if x < *acc {
                *acc = x
            }
        })
    }

    /// Rolling maximum of a field (Flink's `max(pos)`).
    pub fn max<V: PartialOrd + Copy + 'static>(
        &self,
        field: impl for<'a> Fn(&'a mut T) -> &'a mut V + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.fold_field("Keyed Aggregation (max)", field, |acc, x| {
            if x > *acc {
                *acc = x
            }
        })
    }

    fn fold_field<V: Copy + 'static>(
        &self,
        operator: &str,
        field: impl for<'a> Fn(&'a mut T) -> &'a mut V + Clone + Send + Sync + 'static,
        combine: fn(&mut V, V),
    ) -> DataStream<T> {
        self.aggregate_with(
            operator,
            |x: T| (x.clone(), x),
            move |acc: &mut T, mut x: T| {
                combine(field(acc), *field(&mut x));
                acc.clone()
            },
        )
    }

    /// Rolling fold: per key an accumulator starting at `init`, updated by `f` for every record;
    /// emits the accumulator after every update.
    pub fn fold<A: Data>(&self, init: A, f: impl FnMut(&mut A, T) + Clone + Send + Sync + 'static) -> DataStream<A> {
        let mut f = f;
        let mut g = f.clone();
        self.aggregate_with(
            "Keyed Fold",
            move |x: T| {
                let mut acc = init.clone();
                g(&mut acc, x);
                (acc.clone(), acc)
            },
            move |acc: &mut A, x: T| {
                f(acc, x);
                acc.clone()
            },
        )
    }

    /// Rolling aggregation with an [`AggregateFunction`]: emits its result after every record.
    pub fn aggregate<F: AggregateFunction<T>>(&self, agg: F) -> DataStream<F::Out> {
        let first = agg.clone();
        self.aggregate_with(
            "Keyed Aggregate",
            move |x: T| {
                let mut acc = first.create_accumulator();
                first.add(x, &mut acc);
                let out = first.get_result(&acc);
                (acc, out)
            },
            move |acc: &mut F::Acc, x: T| {
                agg.add(x, acc);
                agg.get_result(acc)
            },
        )
    }
}
