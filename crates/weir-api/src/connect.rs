//! Two-input operators: connected streams with co-functions, window joins and interval joins.
//!
//! Both inputs are tagged (`Either::Left`, `Either::Right`) by a map chained to each input and
//! unioned into one stream, so every two-input operator is a one-input operator on
//! `Either<A, B>`: keyed exchanges hash each side by its own key selector, and the operator's event
//! time is the minimum over the channels of both inputs.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};
use weir_core::{Error, Result};
use weir_runtime::output::Timestamp;
use weir_runtime::window::WindowAssigner;

use crate::process::ListStateDescriptor;
use crate::{Data, DataStream, Key, KeyedContext, KeyedProcessFunction, KeyedStream};

/// A record of one of two inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Either<A, B> {
    /// From the first input.
    Left(A),
    /// From the second input.
    Right(B),
}

/// Two streams of possibly different types, processed together (Flink's `ConnectedStreams`).
pub struct ConnectedStreams<A, B> {
    left: DataStream<A>,
    right: DataStream<B>,
}

impl<A: Data> DataStream<A> {
    /// This stream and `other`, for a co-map, co-flat-map or keyed co-process function.
    pub fn connect<B: Data>(&self, other: &DataStream<B>) -> ConnectedStreams<A, B> {
        ConnectedStreams { left: self.clone(), right: other.clone() }
    }

    /// A window join of this stream with `other`: `.where_key(..).equal_to(..).window(..).apply(..)`.
    pub fn join<B: Data>(&self, other: &DataStream<B>) -> JoinedStreams<A, B> {
        JoinedStreams { left: self.clone(), right: other.clone() }
    }

    fn tagged<O: Data>(&self, f: fn(A) -> O, side: &str) -> DataStream<O> {
        let p = self.b.borrow().nodes[self.id.0 as usize].vertex.parallelism;
        self.map(f).name(format!("Connect: {side}")).set_parallelism(p)
    }
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    fn merged(&self) -> DataStream<Either<A, B>> {
        let left = self.left.tagged(Either::<A, B>::Left, "left");
        let right = self.right.tagged(Either::<A, B>::Right, "right");
        left.union(&[right])
    }

    /// One output per record of either input.
    pub fn map<O: Data>(
        &self,
        f1: impl FnMut(A) -> O + Clone + Send + Sync + 'static,
        f2: impl FnMut(B) -> O + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        let (mut f1, mut f2) = (f1, f2);
        self.merged()
            .map(move |e| match e {
                Either::Left(a) => f1(a),
                Either::Right(b) => f2(b),
            })
            .name("Co-Map")
    }

    /// Any number of outputs per record of either input.
    pub fn flat_map<O: Data>(
        &self,
        f1: impl FnMut(A, &mut Vec<O>) + Clone + Send + Sync + 'static,
        f2: impl FnMut(B, &mut Vec<O>) + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        let (mut f1, mut f2) = (f1, f2);
        self.merged()
            .flat_map(move |e, out: &mut Vec<O>| match e {
                Either::Left(a) => f1(a, out),
                Either::Right(b) => f2(b, out),
            })
            .name("Co-Flat Map")
    }

    /// Keys both inputs (with keys of the same type), for a [`KeyedCoProcessFunction`].
    pub fn key_by<K: Key>(
        &self,
        left_key: impl Fn(&A) -> K + Clone + Send + Sync + 'static,
        right_key: impl Fn(&B) -> K + Clone + Send + Sync + 'static,
    ) -> KeyedConnectedStreams<K, A, B, impl Fn(&Either<A, B>) -> K + Clone + Send + Sync + 'static> {
        let merged = self.merged();
        let key = move |e: &Either<A, B>| match e {
            Either::Left(a) => left_key(a),
            Either::Right(b) => right_key(b),
        };
        KeyedConnectedStreams { keyed: merged.key_by(key), _t: PhantomData }
    }
}

/// Connected streams keyed by one key type.
pub struct KeyedConnectedStreams<K, A, B, KS> {
    keyed: KeyedStream<K, Either<A, B>, KS>,
    _t: PhantomData<fn() -> (A, B)>,
}

/// Per-record code on two keyed inputs sharing keyed state and timers (Flink's
/// `KeyedCoProcessFunction`).
pub trait KeyedCoProcessFunction<K, A, B>: Clone + Send + Sync + 'static {
    /// What it emits.
    type Out: Data;
    /// Called for every record of the first input.
    fn process_element1(&mut self, record: A, ctx: &mut KeyedContext<'_, K, Self::Out>) -> Result<()>;
    /// Called for every record of the second input.
    fn process_element2(&mut self, record: B, ctx: &mut KeyedContext<'_, K, Self::Out>) -> Result<()>;
    /// Called when a timer of this key fires.
    fn on_timer(&mut self, timestamp: Timestamp, ctx: &mut KeyedContext<'_, K, Self::Out>) -> Result<()> {
        let _ = (timestamp, ctx);
        Ok(())
    }
}

struct CoProcess<F, A, B>(F, PhantomData<fn() -> (A, B)>);

impl<F: Clone, A, B> Clone for CoProcess<F, A, B> {
    fn clone(&self) -> Self {
        CoProcess(self.0.clone(), PhantomData)
    }
}

impl<K, A, B, F> KeyedProcessFunction<K, Either<A, B>> for CoProcess<F, A, B>
where
    A: 'static,
    B: 'static,
    F: KeyedCoProcessFunction<K, A, B>,
{
    type Out = F::Out;
    fn process_element(&mut self, e: Either<A, B>, ctx: &mut KeyedContext<'_, K, F::Out>) -> Result<()> {
        match e {
            Either::Left(a) => self.0.process_element1(a, ctx),
            Either::Right(b) => self.0.process_element2(b, ctx),
        }
    }
    fn on_timer(&mut self, t: Timestamp, ctx: &mut KeyedContext<'_, K, F::Out>) -> Result<()> {
        self.0.on_timer(t, ctx)
    }
}

impl<K: Key, A: Data, B: Data, KS: Fn(&Either<A, B>) -> K + Clone + Send + Sync + 'static>
    KeyedConnectedStreams<K, A, B, KS>
{
    /// Runs a [`KeyedCoProcessFunction`]. It runs on the keyed process operator of
    /// [`KeyedStream::process`], so its keyed state and timers are kept in checkpoints (by key
    /// group) and restored, at any parallelism.
    pub fn process<F: KeyedCoProcessFunction<K, A, B>>(&self, f: F) -> DataStream<F::Out> {
        self.keyed.process(CoProcess(f, PhantomData)).name("Keyed Co-Process")
    }
}

/// Two streams to join in windows (Flink's `JoinedStreams`).
pub struct JoinedStreams<A, B> {
    left: DataStream<A>,
    right: DataStream<B>,
}

impl<A: Data, B: Data> JoinedStreams<A, B> {
    /// The first input's join key.
    pub fn where_key<K: Key, KA: Fn(&A) -> K + Clone + Send + Sync + 'static>(self, key: KA) -> JoinWhere<A, B, K, KA> {
        JoinWhere { joined: self, left_key: key, _k: PhantomData }
    }
}

/// A window join with its first key chosen.
pub struct JoinWhere<A, B, K, KA> {
    joined: JoinedStreams<A, B>,
    left_key: KA,
    _k: PhantomData<fn() -> K>,
}

impl<A: Data, B: Data, K: Key, KA: Fn(&A) -> K + Clone + Send + Sync + 'static> JoinWhere<A, B, K, KA> {
    /// The second input's join key.
    pub fn equal_to<KB: Fn(&B) -> K + Clone + Send + Sync + 'static>(self, key: KB) -> JoinEqual<A, B, K, KA, KB> {
        JoinEqual { on: self, right_key: key }
    }
}

/// A window join with both keys chosen.
pub struct JoinEqual<A, B, K, KA, KB> {
    on: JoinWhere<A, B, K, KA>,
    right_key: KB,
}

impl<A: Data, B: Data, K: Key, KA, KB> JoinEqual<A, B, K, KA, KB>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Joins records with equal keys that fall into the same window of `assigner`.
    pub fn window(self, assigner: WindowAssigner) -> WindowJoin<A, B, K, KA, KB> {
        WindowJoin { spec: self, assigner }
    }
}

/// A window join ready to apply a function (Flink's `JoinedStreams.WithWindow`).
pub struct WindowJoin<A, B, K, KA, KB> {
    spec: JoinEqual<A, B, K, KA, KB>,
    assigner: WindowAssigner,
}

impl<A: Data, B: Data, K: Key, KA, KB> WindowJoin<A, B, K, KA, KB>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Emits `f(a, b)` for every pair of records with equal keys in the same window (an inner join).
    pub fn apply<O: Data>(self, f: impl FnMut(&A, &B) -> O + Clone + Send + Sync + 'static) -> DataStream<O> {
        let connected = ConnectedStreams { left: self.spec.on.joined.left, right: self.spec.on.joined.right };
        let keyed = connected.key_by(self.spec.on.left_key, self.spec.right_key).keyed;
        let mut f = f;
        keyed
            .window(self.assigner)
            .process(move |_: &K, _: &crate::TimeWindow, records: &[Either<A, B>], out: &mut Vec<O>| {
                let lefts = records.iter().filter_map(|e| if let Either::Left(a) = e { Some(a) } else { None });
                for a in lefts {
                    for e in records {
                        if let Either::Right(b) = e {
                            out.push(f(a, b));
                        }
                    }
                }
            })
            .name("Window Join")
    }
}

impl<K: Key, A: Data, KA: Fn(&A) -> K + Clone + Send + Sync + 'static> KeyedStream<K, A, KA> {
    /// Joins this keyed stream with `other` on equal keys and event times within bounds:
    /// `.between(lower_ms, upper_ms)` pairs `a` with every `b` where
    /// `a.ts + lower <= b.ts <= a.ts + upper` (Flink's interval join).
    pub fn interval_join<B: Data, KB: Fn(&B) -> K + Clone + Send + Sync + 'static>(
        &self,
        other: &KeyedStream<K, B, KB>,
    ) -> IntervalJoin<K, A, B, KA, KB> {
        IntervalJoin {
            left: self.stream.clone(),
            right: other.stream.clone(),
            lk: self.key.clone(),
            rk: other.key.clone(),
            _k: PhantomData,
        }
    }
}

/// An interval join being declared.
pub struct IntervalJoin<K, A, B, KA, KB> {
    left: DataStream<A>,
    right: DataStream<B>,
    lk: KA,
    rk: KB,
    _k: PhantomData<fn() -> K>,
}

/// An interval join with its bounds.
pub struct IntervalJoinBounded<K, A, B, KA, KB> {
    join: IntervalJoin<K, A, B, KA, KB>,
    lower: i64,
    upper: i64,
}

impl<K: Key, A: Data, B: Data, KA, KB> IntervalJoin<K, A, B, KA, KB>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Bounds in milliseconds, relative to the first input's timestamps; `lower <= upper`.
    pub fn between(self, lower_ms: i64, upper_ms: i64) -> IntervalJoinBounded<K, A, B, KA, KB> {
        IntervalJoinBounded { join: self, lower: lower_ms, upper: upper_ms }
    }
}

impl<K: Key, A: Data, B: Data, KA, KB> IntervalJoinBounded<K, A, B, KA, KB>
where
    KA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    KB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    /// Calls `f(a, b, out)` for every matching pair; outputs carry the later of the two
    /// timestamps. Records behind the watermark when they arrive are dropped, as in Flink.
    ///
    /// The records still waiting for a match (keyed list state) and their cleanup timers are kept
    /// in checkpoints, like those of any keyed co-process function.
    pub fn process<O: Data>(self, f: impl FnMut(&A, &B, &mut Vec<O>) + Clone + Send + Sync + 'static) -> DataStream<O> {
        let j = self.join;
        let (lower, upper) = (self.lower, self.upper);
        if lower > upper {
            j.left.b.borrow_mut().errors.push(Error::invalid_job(format!(
                "interval join bounds [{lower}, {upper}] ms: the lower bound must not exceed the upper bound"
            )));
        }
        for (side, has) in [("first", j.left.has_timestamps()), ("second", j.right.has_timestamps())] {
            if !has {
                j.left.b.borrow_mut().errors.push(Error::invalid_job(format!(
                    "interval join: the {side} input has no timestamps; assign them with \
                     assign_timestamps_and_watermarks(...) before the join"
                )));
            }
        }
        let connected = ConnectedStreams { left: j.left, right: j.right };
        connected
            .key_by(j.lk, j.rk)
            .process(IntervalJoinFn {
                lower,
                upper,
                f,
                _o: PhantomData,
                lefts: ListStateDescriptor::new("interval-join-left"),
                rights: ListStateDescriptor::new("interval-join-right"),
            })
            .name("Interval Join")
    }
}

struct IntervalJoinFn<A, B, O, F> {
    lower: i64,
    upper: i64,
    f: F,
    _o: PhantomData<fn() -> O>,
    lefts: ListStateDescriptor<(Timestamp, A)>,
    rights: ListStateDescriptor<(Timestamp, B)>,
}

impl<A, B, O, F: Clone> Clone for IntervalJoinFn<A, B, O, F> {
    fn clone(&self) -> Self {
        IntervalJoinFn {
            lower: self.lower,
            upper: self.upper,
            f: self.f.clone(),
            _o: PhantomData,
            lefts: ListStateDescriptor::new("interval-join-left"),
            rights: ListStateDescriptor::new("interval-join-right"),
        }
    }
}

impl<K: Key, A: Data, B: Data, O: Data, F> KeyedCoProcessFunction<K, A, B> for IntervalJoinFn<A, B, O, F>
where
    F: FnMut(&A, &B, &mut Vec<O>) + Clone + Send + Sync + 'static,
{
    type Out = O;

    fn process_element1(&mut self, a: A, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        let Some(ta) = ctx.timestamp() else { return Err(no_timestamp()) };
        if ta < ctx.current_watermark() {
            return Ok(());
        }
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        for (tb, b) in ctx.list_state(&self.rights)?.get() {
            if ta.saturating_add(self.lower) <= *tb && *tb <= ta.saturating_add(self.upper) {
                (self.f)(&a, b, &mut scratch);
                out.extend(scratch.drain(..).map(|o| (o, ta.max(*tb))));
            }
        }
        for (o, ts) in out {
            ctx.collect_with_timestamp(o, ts);
        }
        ctx.list_state(&self.lefts)?.add((ta, a));
        // After the watermark passes ta + upper no second-input record can match.
        ctx.register_event_time_timer(ta.saturating_add(self.upper));
        Ok(())
    }

    fn process_element2(&mut self, b: B, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        let Some(tb) = ctx.timestamp() else { return Err(no_timestamp()) };
        if tb < ctx.current_watermark() {
            return Ok(());
        }
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        for (ta, a) in ctx.list_state(&self.lefts)?.get() {
            if ta.saturating_add(self.lower) <= tb && tb <= ta.saturating_add(self.upper) {
                (self.f)(a, &b, &mut scratch);
                out.extend(scratch.drain(..).map(|o| (o, tb.max(*ta))));
            }
        }
        for (o, ts) in out {
            ctx.collect_with_timestamp(o, ts);
        }
        ctx.list_state(&self.rights)?.add((tb, b));
        // After the watermark passes tb - lower no first-input record can match.
        ctx.register_event_time_timer(tb.saturating_sub(self.lower));
        Ok(())
    }

    fn on_timer(&mut self, _: Timestamp, ctx: &mut KeyedContext<'_, K, O>) -> Result<()> {
        let wm = ctx.current_watermark();
        let (lower, upper) = (self.lower, self.upper);
        let mut lefts = ctx.list_state(&self.lefts)?;
        let kept: Vec<(Timestamp, A)> =
            lefts.get().iter().filter(|(ta, _)| ta.saturating_add(upper) > wm).cloned().collect();
        lefts.update(kept);
        let mut rights = ctx.list_state(&self.rights)?;
        let kept: Vec<(Timestamp, B)> =
            rights.get().iter().filter(|(tb, _)| tb.saturating_sub(lower) > wm).cloned().collect();
        rights.update(kept);
        Ok(())
    }
}

fn no_timestamp() -> Error {
    Error::invalid_job("interval join got a record without a timestamp; assign timestamps on both inputs")
}
