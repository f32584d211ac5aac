//! Event time: watermark strategies, timestamp assignment, side-output tags.

use std::marker::PhantomData;
use std::time::Duration;

use weir_runtime::output::Timestamp;
use weir_runtime::time::{TimestampsAndWatermarks, WatermarkSpec};

use crate::{Data, DataStream};

/// How a stream gets event-time timestamps and watermarks (Flink's `WatermarkStrategy`).
///
/// ```
/// use std::time::Duration;
/// use weir_api::WatermarkStrategy;
///
/// let strategy = WatermarkStrategy::<(String, i64)>::for_bounded_out_of_orderness(Duration::from_secs(5))
///     .with_timestamp_assigner(|event, _| event.1)
///     .with_idleness(Duration::from_secs(60));
/// ```
pub struct WatermarkStrategy<T, A = fn(&T, Option<Timestamp>) -> Timestamp> {
    assigner: A,
    spec: WatermarkSpec,
    has_assigner: bool,
    _t: PhantomData<fn(&T)>,
}

fn keep_timestamp<T>(_: &T, previous: Option<Timestamp>) -> Timestamp {
    previous.unwrap_or(Timestamp::MIN)
}

impl<T> WatermarkStrategy<T> {
    fn with_spec(out_of_orderness_ms: i64, emit: bool) -> Self {
        WatermarkStrategy {
            assigner: keep_timestamp::<T>,
            spec: WatermarkSpec { out_of_orderness_ms, idle_timeout_ms: None, emit, per_batch: false },
            has_assigner: false,
            _t: PhantomData,
        }
    }

    /// Timestamps only ever increase: the watermark follows the largest one seen.
    pub fn for_monotonous_timestamps() -> Self {
        Self::with_spec(0, true)
    }

    /// Records arrive at most `max` behind the largest timestamp seen so far.
    pub fn for_bounded_out_of_orderness(max: Duration) -> Self {
        Self::with_spec(i64::try_from(max.as_millis()).unwrap_or(i64::MAX), true)
    }

    /// Timestamps without watermarks (event-time windows then fire only at the end of input).
    pub fn no_watermarks() -> Self {
        Self::with_spec(0, false)
    }
}

impl<T, A> WatermarkStrategy<T, A> {
    /// How to read a record's timestamp (ms): `f(record, timestamp it already has, if any)`.
    pub fn with_timestamp_assigner<F>(self, f: F) -> WatermarkStrategy<T, F>
    where
        F: FnMut(&T, Option<Timestamp>) -> Timestamp + Clone + Send + Sync + 'static,
    {
        WatermarkStrategy { assigner: f, spec: self.spec, has_assigner: true, _t: PhantomData }
    }

    /// Emits a watermark after every batch of records as well as periodically, so watermarks
    /// follow the data instead of the clock (with `execution.batch-size` 1: after every record,
    /// which makes results independent of timing, for tests and replays).
    pub fn with_watermark_per_batch(mut self) -> Self {
        self.spec.per_batch = true;
        self
    }

    /// Marks the stream idle after `timeout` without records, so that it does not hold back
    /// event time downstream (for example a partition that receives no data).
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.spec.idle_timeout_ms = Some(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1));
        self
    }
}

impl<T: Data> DataStream<T> {
    /// Assigns event-time timestamps and generates watermarks, by `strategy`. Watermarks are
    /// emitted every `pipeline.auto-watermark-interval` (200 ms by default) and at the end of
    /// input.
    pub fn assign_timestamps_and_watermarks<A>(&self, strategy: WatermarkStrategy<T, A>) -> DataStream<T>
    where
        A: FnMut(&T, Option<Timestamp>) -> Timestamp + Clone + Send + Sync + 'static,
    {
        if !strategy.has_assigner && !self.has_timestamps() {
            self.b.borrow_mut().errors.push(weir_core::Error::invalid_job(
                "the watermark strategy has no timestamp assigner and the stream has no timestamps; \
                 add one with with_timestamp_assigner(|record, _| ...)",
            ));
        }
        let (assigner, spec) = (strategy.assigner, strategy.spec);
        self.operator(
            "Timestamps/Watermarks",
            move |_, next, _| Ok(Box::new(TimestampsAndWatermarks::new(assigner.clone(), spec, next))),
            None,
            None,
            Some(true),
        )
    }
}
