//! Keyed process functions: per-record code with keyed state, timers and side outputs (Flink's
//! `KeyedProcessFunction`).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

use weir_core::{Error, Result, ShipStrategy};
use weir_runtime::exchange::now_millis;
use weir_runtime::graph::{SideSink, TypedSideSink};
use weir_runtime::output::{Batch, Control, Output, Timestamp};
use weir_runtime::state::{KeyedStates, StateKind, StateTtl};
use weir_runtime::window::TimeDomain;

use crate::builder::key_hash;
use crate::{AggregateFunction, Data, DataStream, Key, KeyedStream, OutputTag};

/// Time-to-live of state entries (Flink's `StateTtlConfig`), in processing time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTtlConfig(StateTtl);

impl StateTtlConfig {
    /// Entries expire `ttl` after they were last written.
    pub const fn new(ttl: Duration) -> Self {
        let ms = ttl.as_millis();
        let ttl_ms = if ms > i64::MAX as u128 { i64::MAX } else { ms as i64 };
        StateTtlConfig(StateTtl { ttl_ms, update_on_read: false })
    }
    /// Reads refresh the entry too.
    pub const fn update_on_read_and_write(mut self) -> Self {
        self.0.update_on_read = true;
        self
    }
}

macro_rules! descriptor {
    ($name:ident, $doc:literal, $($p:ident),+) => {
        #[doc = $doc]
        pub struct $name<$($p),+> {
            name: &'static str,
            ttl: Option<StateTtl>,
            _t: PhantomData<fn() -> ($($p,)+)>,
        }
        impl<$($p),+> Clone for $name<$($p),+> {
            fn clone(&self) -> Self {
                $name { name: self.name, ttl: self.ttl, _t: PhantomData }
            }
        }
        impl<$($p),+> $name<$($p),+> {
            /// A state named `name` (unique within the operator).
            pub const fn new(name: &'static str) -> Self {
                $name { name, ttl: None, _t: PhantomData }
            }
            /// Entries expire as `ttl` says.
            pub const fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
                self.ttl = Some(ttl.0);
                self
            }
        }
    };
}

descriptor!(ValueStateDescriptor, "Declares a value state: one value per key.", V);
descriptor!(ListStateDescriptor, "Declares a list state: a list of values per key.", V);
descriptor!(MapStateDescriptor, "Declares a map state: a map per key.", MK, MV);

/// Declares a reducing state: per key, the values added so far folded with `reduce`.
pub struct ReducingStateDescriptor<V> {
    name: &'static str,
    reduce: fn(V, V) -> V,
    ttl: Option<StateTtl>,
}

impl<V> ReducingStateDescriptor<V> {
    /// A reducing state named `name`.
    pub const fn new(name: &'static str, reduce: fn(V, V) -> V) -> Self {
        ReducingStateDescriptor { name, reduce, ttl: None }
    }
    /// Entries expire as `ttl` says.
    pub const fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl.0);
        self
    }
}

/// A handle on the current key's value state.
pub struct ValueState<'a, V> {
    value: &'a mut Option<V>,
    touched: &'a mut Timestamp,
    now: Timestamp,
}

impl<V: Clone> ValueState<'_, V> {
    /// The value, if set.
    pub fn get(&self) -> Option<&V> {
        self.value.as_ref()
    }
    /// A copy of the value, if set.
    pub fn value(&self) -> Option<V> {
        self.value.clone()
    }
    /// Sets the value.
    pub fn update(&mut self, v: V) {
        *self.value = Some(v);
        *self.touched = self.now;
    }
    /// Removes the value.
    pub fn clear(&mut self) {
        *self.value = None;
    }
}

/// A handle on the current key's list state.
pub struct ListState<'a, V> {
    list: &'a mut Vec<V>,
    touched: &'a mut Timestamp,
    now: Timestamp,
}

impl<V> ListState<'_, V> {
    /// The values.
    pub fn get(&self) -> &[V] {
        self.list
    }
    /// Appends a value.
    pub fn add(&mut self, v: V) {
        self.list.push(v);
        *self.touched = self.now;
    }
    /// Replaces all values.
    pub fn update(&mut self, values: Vec<V>) {
        *self.list = values;
        *self.touched = self.now;
    }
    /// Removes all values.
    pub fn clear(&mut self) {
        self.list.clear();
    }
}

/// A handle on the current key's map state.
pub struct MapState<'a, MK, MV> {
    map: &'a mut HashMap<MK, MV>,
    touched: &'a mut Timestamp,
    now: Timestamp,
}

impl<MK: std::hash::Hash + Eq, MV> MapState<'_, MK, MV> {
    /// The value for `k`.
    pub fn get(&self, k: &MK) -> Option<&MV> {
        self.map.get(k)
    }
    /// Sets the value for `k`.
    pub fn put(&mut self, k: MK, v: MV) {
        self.map.insert(k, v);
        *self.touched = self.now;
    }
    /// Removes `k`.
    pub fn remove(&mut self, k: &MK) -> Option<MV> {
        let r = self.map.remove(k);
        *self.touched = self.now;
        r
    }
    /// Whether `k` is present.
    pub fn contains(&self, k: &MK) -> bool {
        self.map.contains_key(k)
    }
    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&MK, &MV)> {
        self.map.iter()
    }
    /// Removes all entries.
    pub fn clear(&mut self) {
        self.map.clear();
    }
}

/// A handle on the current key's reducing state.
pub struct ReducingState<'a, V> {
    value: &'a mut Option<V>,
    touched: &'a mut Timestamp,
    now: Timestamp,
    reduce: fn(V, V) -> V,
}

impl<V: Clone> ReducingState<'_, V> {
    /// The folded value, if any value was added.
    pub fn get(&self) -> Option<&V> {
        self.value.as_ref()
    }
    /// Folds `v` in.
    pub fn add(&mut self, v: V) {
        *self.value = Some(match self.value.take() {
            Some(a) => (self.reduce)(a, v),
            None => v,
        });
        *self.touched = self.now;
    }
    /// Removes the value.
    pub fn clear(&mut self) {
        *self.value = None;
    }
}

/// A handle on the current key's aggregating state.
pub struct AggregatingState<'a, T, F: AggregateFunction<T>> {
    acc: &'a mut Option<F::Acc>,
    touched: &'a mut Timestamp,
    now: Timestamp,
    agg: &'a F,
}

impl<T, F: AggregateFunction<T>> AggregatingState<'_, T, F> {
    /// The current result, if any value was added.
    pub fn get(&self) -> Option<F::Out> {
        self.acc.as_ref().map(|a| self.agg.get_result(a))
    }
    /// Adds `v`.
    pub fn add(&mut self, v: T) {
        let acc = self.acc.get_or_insert_with(|| self.agg.create_accumulator());
        self.agg.add(v, acc);
        *self.touched = self.now;
    }
    /// Removes the accumulator.
    pub fn clear(&mut self) {
        *self.acc = None;
    }
}

/// What a keyed process function sees: the current key, time, timers, state and outputs.
pub struct KeyedContext<'a, K, O> {
    key: &'a K,
    timestamp: Option<Timestamp>,
    timer_domain: Option<TimeDomain>,
    watermark: Timestamp,
    now: Timestamp,
    states: &'a mut KeyedStates<K>,
    out: &'a mut Batch<O>,
    sides: &'a mut HashMap<String, Box<dyn SideSink>>,
    metrics: &'a crate::MetricGroup,
}

impl<K: Key, O> KeyedContext<'_, K, O> {
    /// The operator instance's metric group, where the function registers its own metrics
    /// (Flink's `getRuntimeContext().getMetricGroup()`): register once and keep the handle,
    /// e.g. `self.late.get_or_insert_with(|| ctx.metric_group().counter("lateRecords")).inc()`.
    /// They are reported with the operator's variables, as
    /// `flink_taskmanager_job_task_operator_<name>`.
    pub fn metric_group(&self) -> &crate::MetricGroup {
        self.metrics
    }
    /// The key of the current record or timer.
    pub fn key(&self) -> &K {
        self.key
    }
    /// The current record's timestamp, or the firing timer's time (event time), if any.
    pub fn timestamp(&self) -> Option<Timestamp> {
        self.timestamp
    }
    /// In `on_timer`: the firing timer's time domain.
    pub fn timer_domain(&self) -> Option<TimeDomain> {
        self.timer_domain
    }
    /// The operator's current watermark (event time).
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }
    /// The current processing time (ms since the epoch).
    pub fn current_processing_time(&self) -> Timestamp {
        self.now
    }
    /// Calls `on_timer` for this key once the watermark reaches `at` (once per key and time).
    pub fn register_event_time_timer(&mut self, at: Timestamp) {
        self.states.timers().register_event(self.key, at)
    }
    /// Calls `on_timer` for this key once processing time reaches `at`.
    pub fn register_processing_time_timer(&mut self, at: Timestamp) {
        self.states.timers().register_processing(self.key, at)
    }
    /// Deletes an event-time timer of this key.
    pub fn delete_event_time_timer(&mut self, at: Timestamp) {
        self.states.timers().delete_event(self.key, at)
    }
    /// Deletes a processing-time timer of this key.
    pub fn delete_processing_time_timer(&mut self, at: Timestamp) {
        self.states.timers().delete_processing(self.key, at)
    }
    /// Emits a record (timestamped like the current record or timer).
    pub fn collect(&mut self, record: O) {
        self.out.push(record, self.timestamp)
    }
    /// Emits a record with the given event-time timestamp.
    pub fn collect_with_timestamp(&mut self, record: O, timestamp: Timestamp) {
        self.out.push(record, Some(timestamp))
    }
    /// Emits a record on the side output `tag` (read it with [`DataStream::side_output`]).
    pub fn output<S: Data>(&mut self, tag: &OutputTag<S>, record: S) -> Result<()> {
        let Some(sink) = self.sides.get_mut(tag.id()) else {
            // Nothing reads this side output.
            return Ok(());
        };
        let typed = sink.as_any().downcast_mut::<TypedSideSink<S>>().ok_or_else(|| {
            Error::invalid_job(format!(
                "side output '{}' carries another type than {}",
                tag.id(),
                std::any::type_name::<S>()
            ))
        })?;
        typed.buf.push(record, self.timestamp);
        Ok(())
    }
    /// The current key's value state.
    pub fn value_state<V: Data>(&mut self, d: &ValueStateDescriptor<V>) -> Result<ValueState<'_, V>> {
        let slot = self.states.declare::<Option<V>>(d.name, StateKind::Value, d.ttl)?;
        let (value, touched) = self.states.entry(self.key, slot, self.now, || None::<V>)?;
        Ok(ValueState { value, touched, now: self.now })
    }
    /// The current key's list state.
    pub fn list_state<V: Data>(&mut self, d: &ListStateDescriptor<V>) -> Result<ListState<'_, V>> {
        let slot = self.states.declare::<Vec<V>>(d.name, StateKind::List, d.ttl)?;
        let (list, touched) = self.states.entry(self.key, slot, self.now, Vec::<V>::new)?;
        Ok(ListState { list, touched, now: self.now })
    }
    /// The current key's map state.
    pub fn map_state<MK: Key, MV: Data>(&mut self, d: &MapStateDescriptor<MK, MV>) -> Result<MapState<'_, MK, MV>> {
        let slot = self.states.declare::<HashMap<MK, MV>>(d.name, StateKind::Map, d.ttl)?;
        let (map, touched) = self.states.entry(self.key, slot, self.now, HashMap::<MK, MV>::new)?;
        Ok(MapState { map, touched, now: self.now })
    }
    /// The current key's reducing state.
    pub fn reducing_state<V: Data>(&mut self, d: &ReducingStateDescriptor<V>) -> Result<ReducingState<'_, V>> {
        let slot = self.states.declare::<Option<V>>(d.name, StateKind::Reducing, d.ttl)?;
        let (value, touched) = self.states.entry(self.key, slot, self.now, || None::<V>)?;
        Ok(ReducingState { value, touched, now: self.now, reduce: d.reduce })
    }
    /// The current key's aggregating state, named `name`, folding values with `agg`.
    pub fn aggregating_state<'s, T, F: AggregateFunction<T>>(
        &'s mut self,
        name: &str,
        agg: &'s F,
    ) -> Result<AggregatingState<'s, T, F>> {
        let slot = self.states.declare::<Option<F::Acc>>(name, StateKind::Aggregating, None)?;
        let (acc, touched) = self.states.entry(self.key, slot, self.now, || None::<F::Acc>)?;
        Ok(AggregatingState { acc, touched, now: self.now, agg })
    }
}

/// Per-record code on a keyed stream, with keyed state and timers (Flink's
/// `KeyedProcessFunction`). Each parallel instance gets its own clone.
pub trait KeyedProcessFunction<K, T>: Clone + Send + Sync + 'static {
    /// What it emits.
    type Out: Data;
    /// Called for every record.
    fn process_element(&mut self, record: T, ctx: &mut KeyedContext<'_, K, Self::Out>) -> Result<()>;
    /// Called when a timer this key registered fires; `ctx.timer_domain()` says which clock.
    fn on_timer(&mut self, timestamp: Timestamp, ctx: &mut KeyedContext<'_, K, Self::Out>) -> Result<()> {
        let _ = (timestamp, ctx);
        Ok(())
    }
}

/// How often (in ticks) expired state is swept.
const EXPIRE_EVERY_TICKS: u32 = 5;

/// What a keyed process operator keeps for its function besides the function itself.
struct KeyedRuntime<K, O> {
    /// Keyed states and timers.
    states: KeyedStates<K>,
    watermark: Timestamp,
    now: Timestamp,
    buf: Batch<O>,
    sides: HashMap<String, Box<dyn SideSink>>,
    metrics: crate::MetricGroup,
}

impl<K: Key, O> KeyedRuntime<K, O> {
    /// The context for one record (`domain: None`) or one firing timer.
    fn context<'a>(
        &'a mut self,
        key: &'a K,
        timestamp: Option<Timestamp>,
        domain: Option<TimeDomain>,
    ) -> KeyedContext<'a, K, O> {
        KeyedContext {
            key,
            timestamp,
            timer_domain: domain,
            watermark: self.watermark,
            now: self.now,
            states: &mut self.states,
            out: &mut self.buf,
            sides: &mut self.sides,
            metrics: &self.metrics,
        }
    }
}

struct KeyedProcessOperator<K, T, KF, F: KeyedProcessFunction<K, T>> {
    key: KF,
    f: F,
    rt: KeyedRuntime<K, F::Out>,
    ticks: u32,
    next: Box<dyn Output<F::Out>>,
    checkpoint: Checkpointing,
    _t: PhantomData<fn(T)>,
}

/// A keyed process operator's part in checkpoints: its keyed state and timers by key group, and
/// its watermark (kept as the window operators keep theirs, so that a restored operator judges
/// lateness and fires event-time timers from where it was).
pub(crate) struct Checkpointing(weir_runtime::window::WindowCheckpointing);

impl Checkpointing {
    pub(crate) fn of(env: &weir_runtime::context::TaskEnv) -> Result<Self> {
        weir_runtime::window::WindowCheckpointing::of(env, true).map(Checkpointing)
    }

    /// The watermark to go on from: the restored one, or the start of time.
    pub(crate) fn restored_watermark(&self) -> Result<Timestamp> {
        Ok(self.0.restored_watermark()?.unwrap_or(Timestamp::MIN))
    }

    /// Hands in the snapshot for checkpoint `id` of keyed `states` (with their timers) and
    /// `watermark`.
    pub(crate) fn snapshot<K: Key>(&self, id: u64, states: &mut KeyedStates<K>, watermark: Timestamp) -> Result<()> {
        if self.0.enabled() {
            let snapshot = states.snapshot(id, self.0.completed(), self.0.max_parallelism())?;
            self.0.snapshot_state(snapshot, watermark)?;
        }
        Ok(())
    }

    /// The keyed states of the operator instance `env` describes, in the configured state backend,
    /// with its timers, as it restored them.
    pub(crate) fn restore_keyed<K: Key>(env: &weir_runtime::context::TaskEnv) -> Result<KeyedStates<K>> {
        KeyedStates::open(&env.state())
    }
}

impl<K: Key, T, KF: FnMut(&T) -> K, F: KeyedProcessFunction<K, T>> KeyedProcessOperator<K, T, KF, F> {
    fn fire(&mut self, event_time: bool, time: Timestamp) -> Result<()> {
        while let Some((at, k)) = self.rt.states.pop_due_timer(event_time, time)? {
            let (ts, domain) =
                if event_time { (Some(at), TimeDomain::EventTime) } else { (None, TimeDomain::ProcessingTime) };
            let mut ctx = self.rt.context(&k, ts, Some(domain));
            self.f.on_timer(at, &mut ctx)?;
        }
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        if !self.rt.buf.is_empty() {
            self.next.push(&mut self.rt.buf)?;
        }
        for s in self.rt.sides.values_mut() {
            s.flush()?;
        }
        Ok(())
    }
}

impl<K: Key, T, KF: FnMut(&T) -> K, F: KeyedProcessFunction<K, T>> Output<T> for KeyedProcessOperator<K, T, KF, F> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        self.rt.now = now_millis();
        for (x, ts) in batch.drain() {
            let k = (self.key)(&x);
            let mut ctx = self.rt.context(&k, ts, None);
            self.f.process_element(x, &mut ctx)?;
        }
        // On disk, the timers this batch registered go to the store now.
        self.rt.states.flush_timers()?;
        self.flush()
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match event {
            Control::Watermark(wm) => {
                self.rt.watermark = self.rt.watermark.max(wm);
                self.fire(true, wm)?;
            }
            Control::Tick(now) => {
                self.rt.now = now;
                self.fire(false, now)?;
                self.ticks += 1;
                if self.ticks.is_multiple_of(EXPIRE_EVERY_TICKS) {
                    self.rt.states.expire(now);
                }
            }
            Control::Idle(_) => {}
            Control::Barrier(id) => {
                self.flush()?;
                self.checkpoint.snapshot(id, &mut self.rt.states, self.rt.watermark)?;
            }
        }
        for s in self.rt.sides.values_mut() {
            s.control(event)?;
        }
        self.next.control(event)
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        for s in self.rt.sides.values_mut() {
            s.finish()?;
        }
        self.next.finish()
    }
}

impl<K: Key, T: Data, KS: Fn(&T) -> K + Clone + Send + Sync + 'static> KeyedStream<K, T, KS> {
    /// Runs a [`KeyedProcessFunction`] on every record, with keyed state and timers; its side
    /// outputs are read with [`DataStream::side_output`] on the result.
    pub fn process<F: KeyedProcessFunction<K, T>>(&self, f: F) -> DataStream<F::Out> {
        let key = self.key.clone();
        let out = self.stream.operator(
            "Keyed Process",
            move |env, next, sides| {
                let states = Checkpointing::restore_keyed(env)?;
                let checkpoint = Checkpointing::of(env)?;
                let watermark = checkpoint.restored_watermark()?;
                Ok(Box::new(KeyedProcessOperator {
                    key: key.clone(),
                    f: f.clone(),
                    checkpoint,
                    rt: KeyedRuntime {
                        states,
                        watermark,
                        now: now_millis(),
                        buf: Batch::default(),
                        sides: sides.take_all()?,
                        metrics: env.op.metrics.clone(),
                    },
                    ticks: 0,
                    next,
                    _t: PhantomData,
                }))
            },
            Some(ShipStrategy::Hash),
            Some(key_hash(self.key.clone())),
            None,
        );
        out.open_side_outputs();
        out
    }
}
