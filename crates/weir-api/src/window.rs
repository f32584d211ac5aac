//! Windows on keyed streams.

use std::marker::PhantomData;
use std::time::Duration;

use weir_core::{Error, ShipStrategy};
use weir_runtime::output::NullOutput;
use weir_runtime::window::count::CountWindowOperator;
use weir_runtime::window::session::SessionWindowOperator;
use weir_runtime::window::time::TimeWindowOperator;
use weir_runtime::window::trigger::{
    EventTimeTrigger, Evictor, NoEvictor, ProcessingTimeTrigger, Trigger, TriggerContext, TriggerResult,
    TriggerWindowOperator,
};
use weir_runtime::window::{TimeDomain, TimeWindow, WindowAssigner, WindowBounds, WindowFunction};

use crate::builder::key_hash;
use crate::{AggregateFunction, Data, DataStream, Key, KeyedStream, OutputTag};

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Fixed-size, non-overlapping event-time windows.
pub struct TumblingEventTimeWindows;
impl TumblingEventTimeWindows {
    /// Windows of length `size`, aligned to the epoch.
    pub fn of(size: Duration) -> WindowAssigner {
        WindowAssigner::Tumbling { size: ms(size), offset: 0, domain: TimeDomain::EventTime }
    }
    /// Windows of length `size`, starting `offset` after the epoch's alignment.
    pub fn of_with_offset(size: Duration, offset: Duration) -> WindowAssigner {
        WindowAssigner::Tumbling { size: ms(size), offset: ms(offset), domain: TimeDomain::EventTime }
    }
}

/// Fixed-size, non-overlapping processing-time windows.
pub struct TumblingProcessingTimeWindows;
impl TumblingProcessingTimeWindows {
    /// Windows of length `size`, aligned to the epoch.
    pub fn of(size: Duration) -> WindowAssigner {
        WindowAssigner::Tumbling { size: ms(size), offset: 0, domain: TimeDomain::ProcessingTime }
    }
}

/// Overlapping event-time windows of length `size`, one starting every `slide`.
pub struct SlidingEventTimeWindows;
impl SlidingEventTimeWindows {
    /// Windows of length `size` every `slide`.
    pub fn of(size: Duration, slide: Duration) -> WindowAssigner {
        WindowAssigner::Sliding { size: ms(size), slide: ms(slide), offset: 0, domain: TimeDomain::EventTime }
    }
}

/// Overlapping processing-time windows of length `size`, one starting every `slide`.
pub struct SlidingProcessingTimeWindows;
impl SlidingProcessingTimeWindows {
    /// Windows of length `size` every `slide`.
    pub fn of(size: Duration, slide: Duration) -> WindowAssigner {
        WindowAssigner::Sliding { size: ms(size), slide: ms(slide), offset: 0, domain: TimeDomain::ProcessingTime }
    }
}

/// Event-time sessions: per key, records less than `gap` apart share a window.
pub struct EventTimeSessionWindows;
impl EventTimeSessionWindows {
    /// Sessions closed by `gap` of inactivity.
    pub fn with_gap(gap: Duration) -> WindowAssigner {
        WindowAssigner::Session { gap: ms(gap), domain: TimeDomain::EventTime }
    }
}

/// Processing-time sessions.
pub struct ProcessingTimeSessionWindows;
impl ProcessingTimeSessionWindows {
    /// Sessions closed by `gap` of inactivity.
    pub fn with_gap(gap: Duration) -> WindowAssigner {
        WindowAssigner::Session { gap: ms(gap), domain: TimeDomain::ProcessingTime }
    }
}

/// One window per key over all time; it fires only by a trigger (`.trigger(CountTrigger::of(n))`).
pub struct GlobalWindows;
impl GlobalWindows {
    /// The global window assigner.
    pub fn create() -> WindowAssigner {
        WindowAssigner::Global
    }
}

/// The trigger a window gets unless it declares one: event-time windows fire when the watermark
/// passes their end, processing-time windows when the clock does. Windows with the default
/// trigger and no evictor run on operators that need no per-window timers.
#[derive(Clone, Copy, Debug)]
pub struct DefaultTrigger(TimeDomain);

impl<T> Trigger<T> for DefaultTrigger {
    type State = ();
    fn on_element(
        &mut self,
        r: &T,
        ts: i64,
        w: &TimeWindow,
        s: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        match self.0 {
            TimeDomain::EventTime => Trigger::<T>::on_element(&mut EventTimeTrigger, r, ts, w, s, ctx),
            TimeDomain::ProcessingTime => Trigger::<T>::on_element(&mut ProcessingTimeTrigger, r, ts, w, s, ctx),
        }
    }
    fn on_event_time(&mut self, t: i64, w: &TimeWindow, s: &mut (), ctx: &mut TriggerContext<'_>) -> TriggerResult {
        Trigger::<T>::on_event_time(&mut EventTimeTrigger, t, w, s, ctx)
    }
    fn on_processing_time(
        &mut self,
        t: i64,
        w: &TimeWindow,
        s: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        Trigger::<T>::on_processing_time(&mut ProcessingTimeTrigger, t, w, s, ctx)
    }
}

fn describe(a: &WindowAssigner) -> String {
    let d = |domain: &TimeDomain| if *domain == TimeDomain::EventTime { "EventTime" } else { "ProcessingTime" };
    match a {
        WindowAssigner::Tumbling { size, domain, .. } => format!("Tumbling{}Windows({size})", d(domain)),
        WindowAssigner::Sliding { size, slide, domain, .. } => format!("Sliding{}Windows({size}, {slide})", d(domain)),
        WindowAssigner::Session { gap, domain } => format!("{}SessionWindows({gap})", d(domain)),
        WindowAssigner::Global => "GlobalWindows".to_string(),
    }
}

#[derive(Clone, Copy)]
enum WindowSpec {
    Time(WindowAssigner),
    Count(u64),
}

/// A keyed stream cut into windows (Flink's `WindowedStream`): choose the function evaluated per
/// key and window with [`WindowedStream::reduce`], [`WindowedStream::aggregate`] or
/// [`WindowedStream::process`].
pub struct WindowedStream<K, T, KS, Tr = DefaultTrigger, Ev = NoEvictor> {
    stream: DataStream<T>,
    key: KS,
    spec: WindowSpec,
    lateness_ms: i64,
    late: Option<OutputTag<T>>,
    trigger: Tr,
    evictor: Ev,
    custom: bool,
    _k: PhantomData<fn() -> K>,
}

impl<K: Key, T: Data, KS: Fn(&T) -> K + Clone + Send + Sync + 'static> KeyedStream<K, T, KS> {
    /// Windows by `assigner` (e.g. `TumblingEventTimeWindows::of(Duration::from_secs(1))`).
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream<K, T, KS> {
        self.windowed(WindowSpec::Time(assigner))
    }

    /// A window per key that fires, and is purged, every `size` records (Flink's `countWindow`).
    pub fn count_window(&self, size: u64) -> WindowedStream<K, T, KS> {
        self.windowed(WindowSpec::Count(size))
    }

    fn windowed(&self, spec: WindowSpec) -> WindowedStream<K, T, KS> {
        WindowedStream {
            stream: self.stream.clone(),
            key: self.key.clone(),
            spec,
            lateness_ms: 0,
            late: None,
            trigger: DefaultTrigger(match spec {
                WindowSpec::Time(a) => a.domain(),
                WindowSpec::Count(_) => TimeDomain::EventTime,
            }),
            evictor: NoEvictor,
            custom: false,
            _k: PhantomData,
        }
    }
}

/// Reduce per window: `Acc` is the reduced value so far.
#[derive(Clone)]
struct ReduceWindow<F>(F);
impl<K, T: Clone, F: FnMut(T, T) -> T> WindowFunction<K, T> for ReduceWindow<F> {
    type Acc = Option<T>;
    type Out = T;
    fn create(&mut self) -> Option<T> {
        None
    }
    fn add(&mut self, acc: &mut Option<T>, x: T) {
        *acc = Some(match acc.take() {
            Some(a) => (self.0)(a, x),
            None => x,
        });
    }
    fn merge(&mut self, from: Option<T>, into: &mut Option<T>) {
        if let Some(f) = from {
            <Self as WindowFunction<K, T>>::add(self, into, f);
        }
    }
    fn emit(&mut self, _: &K, _: TimeWindow, acc: &Option<T>, out: &mut Vec<T>) {
        if let Some(v) = acc {
            out.push(v.clone());
        }
    }
}

/// An [`AggregateFunction`] per window.
#[derive(Clone)]
struct AggregateWindow<F>(F);
impl<K, T, F: AggregateFunction<T>> WindowFunction<K, T> for AggregateWindow<F> {
    type Acc = F::Acc;
    type Out = F::Out;
    fn create(&mut self) -> F::Acc {
        self.0.create_accumulator()
    }
    fn add(&mut self, acc: &mut F::Acc, x: T) {
        self.0.add(x, acc)
    }
    fn merge(&mut self, from: F::Acc, into: &mut F::Acc) {
        self.0.merge(from, into)
    }
    fn emit(&mut self, _: &K, _: TimeWindow, acc: &F::Acc, out: &mut Vec<F::Out>) {
        out.push(self.0.get_result(acc))
    }
}

/// All records of a window, handed to a function with the key and window when it fires.
struct ProcessWindow<F, O>(F, PhantomData<fn() -> O>);
impl<F: Clone, O> Clone for ProcessWindow<F, O> {
    fn clone(&self) -> Self {
        ProcessWindow(self.0.clone(), PhantomData)
    }
}
impl<K, T, O, F: FnMut(&K, &TimeWindow, &[T], &mut Vec<O>)> WindowFunction<K, T> for ProcessWindow<F, O> {
    type Acc = Vec<T>;
    type Out = O;
    fn create(&mut self) -> Vec<T> {
        Vec::new()
    }
    fn add(&mut self, acc: &mut Vec<T>, x: T) {
        acc.push(x)
    }
    fn merge(&mut self, mut from: Vec<T>, into: &mut Vec<T>) {
        into.append(&mut from)
    }
    fn emit(&mut self, key: &K, window: TimeWindow, acc: &Vec<T>, out: &mut Vec<O>) {
        (self.0)(key, &window, acc, out)
    }
}

impl<K: Key, T: Data, KS: Fn(&T) -> K + Clone + Send + Sync + 'static, Tr: Trigger<T>, Ev: Evictor<T>>
    WindowedStream<K, T, KS, Tr, Ev>
{
    /// Fires the windows by `trigger` instead of by the clock (e.g. `CountTrigger::of(100)`, or
    /// your own [`Trigger`]). The window's records are kept and the function evaluated over them.
    pub fn trigger<Tr2: Trigger<T>>(self, trigger: Tr2) -> WindowedStream<K, T, KS, Tr2, Ev> {
        WindowedStream {
            stream: self.stream,
            key: self.key,
            spec: self.spec,
            lateness_ms: self.lateness_ms,
            late: self.late,
            trigger,
            evictor: self.evictor,
            custom: true,
            _k: PhantomData,
        }
    }

    /// Removes records from each window before/after evaluation (e.g. `CountEvictor::of(10)`).
    pub fn evictor<Ev2: Evictor<T>>(self, evictor: Ev2) -> WindowedStream<K, T, KS, Tr, Ev2> {
        WindowedStream {
            stream: self.stream,
            key: self.key,
            spec: self.spec,
            lateness_ms: self.lateness_ms,
            late: self.late,
            trigger: self.trigger,
            evictor,
            custom: true,
            _k: PhantomData,
        }
    }

    /// Keeps event-time windows for `lateness` after they fire: records arriving in that time
    /// update the window and fire it again (late firings). Later records are late data.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.lateness_ms = ms(lateness);
        self
    }

    /// Sends late records (too late for every window they belong to) to the side output `tag`,
    /// readable with [`DataStream::side_output`] on the windowed result; otherwise they are
    /// dropped.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late = Some(tag.clone());
        self
    }

    /// Reduces each window's records with `f`, incrementally; emits one value per key and window.
    pub fn reduce(self, f: impl FnMut(T, T) -> T + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.build("reduce", ReduceWindow(f))
    }

    /// Aggregates each window's records with `agg`, incrementally; emits its result per key and
    /// window.
    pub fn aggregate<F: AggregateFunction<T>>(self, agg: F) -> DataStream<F::Out> {
        self.build("aggregate", AggregateWindow(agg))
    }

    /// Calls `f(key, window, records, out)` once per key and window with all its records; `f`
    /// pushes its outputs onto `out`.
    pub fn process<O: Data>(
        self,
        f: impl FnMut(&K, &TimeWindow, &[T], &mut Vec<O>) + Clone + Send + Sync + 'static,
    ) -> DataStream<O> {
        self.build("process", ProcessWindow(f, PhantomData))
    }

    fn build<O: Data, WF>(self, function: &str, wf: WF) -> DataStream<O>
    where
        WF: WindowFunction<K, T, Out = O> + Clone + Send + Sync + 'static,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        let name = match &self.spec {
            WindowSpec::Time(a) => format!("Window({}, {function})", describe(a)),
            WindowSpec::Count(n) => format!("Window(CountWindow({n}), {function})"),
        };
        let problem = match &self.spec {
            WindowSpec::Time(a) => match a.validate() {
                Err(e) => Some(e),
                Ok(()) if a.domain() == TimeDomain::EventTime && !self.stream.has_timestamps() => {
                    Some(Error::invalid_job(format!(
                        "{name} is an event-time window on a stream without timestamps; call \
                         assign_timestamps_and_watermarks(...) before key_by, or use a processing-time window"
                    )))
                }
                Ok(()) => None,
            },
            WindowSpec::Count(0) => Some(Error::invalid_job("count window size 0: the size must be at least 1")),
            WindowSpec::Count(_) => None,
        }
        .or(match (&self.spec, self.custom) {
            (WindowSpec::Time(WindowAssigner::Global), false) => Some(Error::invalid_job(
                "global windows never fire by themselves; give them a trigger, e.g. .trigger(CountTrigger::of(100))",
            )),
            (WindowSpec::Time(WindowAssigner::Session { .. }), true) => Some(Error::invalid_job(
                "custom triggers and evictors work with tumbling, sliding and global windows, not sessions",
            )),
            (WindowSpec::Count(_), true) => Some(Error::invalid_job(
                "count windows have their own trigger; use window(GlobalWindows::create()).trigger(...) instead",
            )),
            _ => None,
        });
        if let Some(e) = problem {
            self.stream.b.borrow_mut().errors.push(e);
        }
        let (key, spec, lateness) = (self.key.clone(), self.spec, self.lateness_ms);
        let (trigger, evictor, custom) = (self.trigger.clone(), self.evictor.clone(), self.custom);
        let late_tag = self.late.as_ref().map(|t| t.id.clone());
        let timestamps = match spec {
            WindowSpec::Time(_) => Some(true),
            WindowSpec::Count(_) => None,
        };
        let out = self.stream.operator(
            &name,
            move |env, next, sides| {
                let late: Box<dyn weir_runtime::Output<T>> = match &late_tag {
                    Some(tag) => sides.take::<T>(tag)?,
                    None => Box::new(NullOutput),
                };
                let operator = env.op.operator_name.clone();
                // Every window operator keeps its windows (and watermark) in checkpoints and starts
                // from what `env` restored.
                Ok(match spec {
                    WindowSpec::Time(a) if custom || a == WindowAssigner::Global => Box::new(
                        TriggerWindowOperator::new(
                            key.clone(),
                            wf.clone(),
                            trigger.clone(),
                            evictor.clone(),
                            WindowBounds { assigner: a, lateness_ms: lateness },
                            late,
                            next,
                        )?
                        .checkpointed(env)?,
                    ),
                    WindowSpec::Time(a @ WindowAssigner::Session { .. }) => Box::new(
                        SessionWindowOperator::new(key.clone(), wf.clone(), a, lateness, operator, late, next)?
                            .checkpointed(env)?,
                    ),
                    WindowSpec::Time(a) => Box::new(
                        TimeWindowOperator::new(key.clone(), wf.clone(), a, lateness, operator, late, next)?
                            .checkpointed(env)?,
                    ),
                    WindowSpec::Count(n) => {
                        Box::new(CountWindowOperator::new(key.clone(), wf.clone(), n, next)?.checkpointed(env)?)
                    }
                })
            },
            Some(ShipStrategy::Hash),
            Some(key_hash(self.key.clone())),
            timestamps,
        );
        if let Some(tag) = &self.late {
            out.declare_side_output(tag);
        }
        out
    }
}
