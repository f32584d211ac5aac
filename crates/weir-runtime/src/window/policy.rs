//! Triggers and evictors: what decides, per key and window, when a window with a custom trigger
//! fires and purges, and which of its records its function sees
//! ([`super::trigger::TriggerWindowOperator`] runs them).
//!
//! A [`Trigger`] decides from the records that arrive and from timers it registers; an
//! [`Evictor`] removes records from a window before or after evaluation.

use super::{TimeDomain, TimeWindow};
use crate::output::Timestamp;

/// What a trigger decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerResult {
    /// Nothing.
    Continue,
    /// Evaluate the window's function and emit; keep the contents.
    Fire,
    /// Drop the window's contents.
    Purge,
    /// Evaluate, emit, then drop the contents.
    FireAndPurge,
}

impl TriggerResult {
    pub(crate) fn fires(self) -> bool {
        matches!(self, TriggerResult::Fire | TriggerResult::FireAndPurge)
    }
    pub(crate) fn purges(self) -> bool {
        matches!(self, TriggerResult::Purge | TriggerResult::FireAndPurge)
    }
}

/// What a trigger can see and do.
pub struct TriggerContext<'a> {
    /// The operator's watermark.
    pub watermark: Timestamp,
    /// Processing time now.
    pub now: Timestamp,
    /// Records in the window (its pane) now.
    pub count: usize,
    pub(crate) timers: &'a mut Vec<(TimeDomain, Timestamp)>,
}

impl TriggerContext<'_> {
    /// Calls the trigger's `on_event_time` for this window once the watermark reaches `at`.
    pub fn register_event_time_timer(&mut self, at: Timestamp) {
        self.timers.push((TimeDomain::EventTime, at));
    }
    /// Calls the trigger's `on_processing_time` for this window once processing time reaches `at`.
    pub fn register_processing_time_timer(&mut self, at: Timestamp) {
        self.timers.push((TimeDomain::ProcessingTime, at));
    }
}

/// Decides when a window fires and purges (Flink's `Trigger`). `State` is kept per key and
/// window (for example a counter) and reset when the window purges; checkpoints keep it, so it is
/// serializable.
pub trait Trigger<T>: Clone + Send + Sync + 'static {
    /// Per key and window state.
    type State: Default + Send + serde::Serialize + serde::de::DeserializeOwned + 'static;
    /// A record was added to `window`.
    fn on_element(
        &mut self,
        record: &T,
        timestamp: Timestamp,
        window: &TimeWindow,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult;
    /// An event-time timer of `window` fired.
    fn on_event_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        let _ = (time, window, state, ctx);
        TriggerResult::Continue
    }
    /// A processing-time timer of `window` fired.
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        window: &TimeWindow,
        state: &mut Self::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        let _ = (time, window, state, ctx);
        TriggerResult::Continue
    }
}

/// Fires once the watermark passes the window's end, and again for every late record within the
/// allowed lateness (Flink's `EventTimeTrigger`, the default for event-time windows).
#[derive(Clone, Copy, Debug, Default)]
pub struct EventTimeTrigger;

impl<T> Trigger<T> for EventTimeTrigger {
    type State = ();
    fn on_element(
        &mut self,
        _: &T,
        _: Timestamp,
        w: &TimeWindow,
        _: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if w.max_timestamp() <= ctx.watermark {
            TriggerResult::Fire
        } else {
            ctx.register_event_time_timer(w.max_timestamp());
            TriggerResult::Continue
        }
    }
    fn on_event_time(
        &mut self,
        time: Timestamp,
        w: &TimeWindow,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if time == w.max_timestamp() { TriggerResult::Fire } else { TriggerResult::Continue }
    }
}

/// Fires when processing time passes the window's end (Flink's `ProcessingTimeTrigger`).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessingTimeTrigger;

impl<T> Trigger<T> for ProcessingTimeTrigger {
    type State = ();
    fn on_element(
        &mut self,
        _: &T,
        _: Timestamp,
        w: &TimeWindow,
        _: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        ctx.register_processing_time_timer(w.max_timestamp());
        TriggerResult::Continue
    }
    fn on_processing_time(
        &mut self,
        time: Timestamp,
        w: &TimeWindow,
        _: &mut (),
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        if time >= w.max_timestamp() { TriggerResult::Fire } else { TriggerResult::Continue }
    }
}

/// Fires every `n` records added to a window (Flink's `CountTrigger`).
#[derive(Clone, Copy, Debug)]
pub struct CountTrigger(pub u64);

impl CountTrigger {
    /// Fires every `n` records.
    pub fn of(n: u64) -> Self {
        CountTrigger(n.max(1))
    }
}

impl<T> Trigger<T> for CountTrigger {
    type State = u64;
    fn on_element(
        &mut self,
        _: &T,
        _: Timestamp,
        _: &TimeWindow,
        seen: &mut u64,
        _: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        *seen += 1;
        if *seen >= self.0 {
            *seen = 0;
            TriggerResult::Fire
        } else {
            TriggerResult::Continue
        }
    }
}

/// Turns every firing of the wrapped trigger into fire-and-purge (Flink's `PurgingTrigger`).
#[derive(Clone, Copy, Debug)]
pub struct PurgingTrigger<Tr>(pub Tr);

impl<Tr> PurgingTrigger<Tr> {
    /// Purges whenever `trigger` fires.
    pub fn of(trigger: Tr) -> Self {
        PurgingTrigger(trigger)
    }
}

fn purging(r: TriggerResult) -> TriggerResult {
    if r.fires() { TriggerResult::FireAndPurge } else { r }
}

impl<T, Tr: Trigger<T>> Trigger<T> for PurgingTrigger<Tr> {
    type State = Tr::State;
    fn on_element(
        &mut self,
        r: &T,
        ts: Timestamp,
        w: &TimeWindow,
        s: &mut Tr::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        purging(self.0.on_element(r, ts, w, s, ctx))
    }
    fn on_event_time(
        &mut self,
        t: Timestamp,
        w: &TimeWindow,
        s: &mut Tr::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        purging(self.0.on_event_time(t, w, s, ctx))
    }
    fn on_processing_time(
        &mut self,
        t: Timestamp,
        w: &TimeWindow,
        s: &mut Tr::State,
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        purging(self.0.on_processing_time(t, w, s, ctx))
    }
}

/// Removes records from a window before and/or after its function is evaluated (Flink's
/// `Evictor`). Records come with their timestamps, oldest first.
pub trait Evictor<T>: Clone + Send + Sync + 'static {
    /// Before evaluation.
    fn evict_before(&mut self, records: &mut Vec<(T, Timestamp)>, window: &TimeWindow) {
        let _ = (records, window);
    }
    /// After evaluation.
    fn evict_after(&mut self, records: &mut Vec<(T, Timestamp)>, window: &TimeWindow) {
        let _ = (records, window);
    }
}

/// Keeps only the last `n` records of a window before evaluation (Flink's `CountEvictor`).
#[derive(Clone, Copy, Debug)]
pub struct CountEvictor(pub usize);

impl CountEvictor {
    /// Keeps the last `n` records.
    pub fn of(n: usize) -> Self {
        CountEvictor(n)
    }
}

impl<T: Send + Sync + 'static> Evictor<T> for CountEvictor {
    fn evict_before(&mut self, records: &mut Vec<(T, Timestamp)>, _: &TimeWindow) {
        if records.len() > self.0 {
            records.drain(..records.len() - self.0);
        }
    }
}

/// Keeps only records within `keep_ms` of the newest record of a window before evaluation
/// (Flink's `TimeEvictor`).
#[derive(Clone, Copy, Debug)]
pub struct TimeEvictor(pub i64);

impl TimeEvictor {
    /// Keeps records with timestamps above `newest - keep`.
    pub fn of(keep: std::time::Duration) -> Self {
        TimeEvictor(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX))
    }
}

impl<T: Send + Sync + 'static> Evictor<T> for TimeEvictor {
    fn evict_before(&mut self, records: &mut Vec<(T, Timestamp)>, _: &TimeWindow) {
        if let Some(newest) = records.iter().map(|r| r.1).max() {
            records.retain(|r| r.1 > newest.saturating_sub(self.0));
        }
    }
}

/// No evictor.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvictor;

impl<T> Evictor<T> for NoEvictor where T: Send + Sync + 'static {}
