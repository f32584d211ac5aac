//! `KeyedStream`: a stream partitioned by key, with running per-key aggregations.

use std::ops::AddAssign;
use std::sync::Arc;

use weir_core::ShipStrategy;
use weir_runtime::operators::KeyedAggregate;

use crate::env::key_hash;
use crate::{AggregateFunction, Data, DataStream, Key};

/// A stream partitioned by a key (Flink's `KeyedStream<T, K>`). Its operators keep state per key
/// and emit the updated value for every record, as Flink's rolling aggregations do.
pub struct KeyedStream<K, T> {
    stream: DataStream<T>,
    key: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<K: Key, T: Data> KeyedStream<K, T> {
    pub(crate) fn new(stream: DataStream<T>, key: Arc<dyn Fn(&T) -> K + Send + Sync>) -> Self {
        KeyedStream { stream, key }
    }

    /// The key selector.
    pub fn key_selector(&self) -> Arc<dyn Fn(&T) -> K + Send + Sync> {
        self.key.clone()
    }

    /// A keyed running aggregation: `init` makes a key's accumulator, `step` folds a record in and
    /// returns what to emit.
    fn aggregate_with<A: Send + 'static, O: Data>(
        &self,
        operator: &str,
        init: impl FnMut() -> A + Clone + Send + Sync + 'static,
        step: impl FnMut(&mut A, T) -> O + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        let key = self.key.clone();
        self.stream.one_input(
            operator,
            move |_, next| {
                let key = key.clone();
                Ok(Box::new(KeyedAggregate::new(
                    move |t: &T| key(t),
                    init.clone(),
                    step.clone(),
                    next,
                )))
            },
            Some(ShipStrategy::Hash),
            Some(key_hash(self.key.clone())),
        )
    }

    /// Rolling reduce: per key, `f(previous result, record)`; the first record of a key is its
    /// first result. Emits the new result for every record.
    pub fn reduce(
        &self,
        f: impl FnMut(T, T) -> T + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        let mut f = f;
        self.aggregate_with(
            "Keyed Reduce",
            || None::<T>,
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
            || None::<T>,
            move |acc: &mut Option<T>, mut x: T| match acc {
                Some(a) => {
                    combine(field(a), *field(&mut x));
                    a.clone()
                }
                None => {
                    *acc = Some(x.clone());
                    x
                }
            },
        )
    }

    /// Rolling fold: per key an accumulator starting at `init`, updated by `f` for every record;
    /// emits the accumulator after every update.
    pub fn fold<A: Data>(
        &self,
        init: A,
        f: impl FnMut(&mut A, T) + Clone + Send + Sync + 'static,
    ) -> DataStream<A> {
        let mut f = f;
        self.aggregate_with(
            "Keyed Fold",
            move || init.clone(),
            move |acc: &mut A, x: T| {
                f(acc, x);
                acc.clone()
            },
        )
    }

    /// Rolling aggregation with an [`AggregateFunction`]: emits its result after every record.
    pub fn aggregate<F: AggregateFunction<T>>(&self, agg: F) -> DataStream<F::Out> {
        let init = agg.clone();
        self.aggregate_with(
            "Keyed Aggregate",
            move || init.create_accumulator(),
            move |acc: &mut F::Acc, x: T| {
                agg.add(x, acc);
                agg.get_result(acc)
            },
        )
    }
}
