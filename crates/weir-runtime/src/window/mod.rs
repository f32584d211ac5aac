//! Windows: assigners, the functions evaluated per window, and the window operators.
//!
//! - [`time::TimeWindowOperator`]: tumbling and sliding windows in event or processing time.
//!   Windows of all keys that end at the same time fire together, so the operator keeps its
//!   state grouped by window end and a watermark fires whole groups, with no per-key timers.
//! - [`session::SessionWindowOperator`]: session windows, merged per key as records arrive.
//! - [`count::CountWindowOperator`]: global windows that fire and purge every N records of a key.

pub mod count;
pub mod session;
pub mod time;
pub mod trigger;

use weir_core::Result;

use crate::output::{Batch, Control, Output, Timestamp};

/// A time window `[start, end)`; its last timestamp is `end - 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TimeWindow {
    /// First timestamp in the window.
    pub start: Timestamp,
    /// First timestamp after the window.
    pub end: Timestamp,
}

impl TimeWindow {
    /// The largest timestamp in the window (Flink's `maxTimestamp`).
    pub fn max_timestamp(&self) -> Timestamp {
        self.end - 1
    }
}

/// Which clock a window follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// The records' timestamps, advanced by watermarks.
    EventTime,
    /// The wall clock of the machine running the operator.
    ProcessingTime,
}

/// How records are assigned to windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed-size, non-overlapping windows.
    Tumbling {
        /// Window length in ms.
        size: i64,
        /// Shift of window starts from the epoch, in ms.
        offset: i64,
        /// Clock.
        domain: TimeDomain,
    },
    /// Fixed-size windows starting every `slide` ms; a record belongs to `size / slide` windows.
    Sliding {
        /// Window length in ms.
        size: i64,
        /// Distance between window starts in ms.
        slide: i64,
        /// Shift of window starts from the epoch, in ms.
        offset: i64,
        /// Clock.
        domain: TimeDomain,
    },
    /// Windows of activity separated by gaps of at least `gap` ms, per key.
    Session {
        /// Inactivity that closes a session, in ms.
        gap: i64,
        /// Clock.
        domain: TimeDomain,
    },
    /// One window per key spanning all time; only a trigger makes it fire.
    Global,
}

impl WindowAssigner {
    /// The clock.
    pub fn domain(&self) -> TimeDomain {
        match self {
            WindowAssigner::Tumbling { domain, .. }
            | WindowAssigner::Sliding { domain, .. }
            | WindowAssigner::Session { domain, .. } => *domain,
            // Global windows follow no clock; event time lets triggers use watermarks.
            WindowAssigner::Global => TimeDomain::EventTime,
        }
    }

    /// Checks sizes: what cannot make sense is an error that says why.
    pub fn validate(&self) -> weir_core::Result<()> {
        let bad = |m: String| Err(weir_core::Error::invalid_job(m));
        match *self {
            WindowAssigner::Tumbling { size, offset, .. } => {
                if size <= 0 {
                    return bad(format!("tumbling window size {size} ms: the size must be positive"));
                }
                if offset.abs() >= size {
                    return bad(format!("window offset {offset} ms must be smaller than the size {size} ms"));
                }
            }
            WindowAssigner::Sliding { size, slide, offset, .. } => {
                if size <= 0 || slide <= 0 {
                    return bad(format!(
                        "sliding window of size {size} ms and slide {slide} ms: both must be positive"
                    ));
                }
                if slide > size {
                    return bad(format!(
                        "sliding window slide {slide} ms is larger than its size {size} ms, which would \
                         skip records; use a slide no larger than the size (or tumbling windows)"
                    ));
                }
                if offset.abs() >= slide {
                    return bad(format!("window offset {offset} ms must be smaller than the slide {slide} ms"));
                }
            }
            WindowAssigner::Session { gap, .. } => {
                if gap <= 0 {
                    return bad(format!("session gap {gap} ms: the gap must be positive"));
                }
            }
            WindowAssigner::Global => {}
        }
        Ok(())
    }

    /// Calls `f` with every non-merging window containing `ts`.
    #[inline]
    pub fn for_each_window(&self, ts: Timestamp, mut f: impl FnMut(TimeWindow)) {
        match *self {
            WindowAssigner::Tumbling { size, offset, .. } => {
                let start = window_start(ts, offset, size);
                f(TimeWindow { start, end: start.saturating_add(size) });
            }
            WindowAssigner::Sliding { size, slide, offset, .. } => {
                let mut start = window_start(ts, offset, slide);
                let first = ts.saturating_sub(size);
                while start > first {
                    f(TimeWindow { start, end: start.saturating_add(size) });
                    if start == i64::MIN {
                        break;
                    }
                    start = start.saturating_sub(slide);
                }
            }
            WindowAssigner::Session { gap, .. } => f(TimeWindow { start: ts, end: ts + gap }),
            WindowAssigner::Global => f(count::GLOBAL_WINDOW),
        }
    }
}

/// The start of the window of length `size` (shifted by `offset`) containing `ts`.
#[inline]
pub fn window_start(ts: Timestamp, offset: i64, size: i64) -> Timestamp {
    // In i128: timestamps near the ends of the i64 range must not overflow.
    let (t, o, s) = (i128::from(ts), i128::from(offset), i128::from(size.max(1)));
    (t - (t - o).rem_euclid(s)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// Where a window operator's results and late records go, with their buffers: shared by all
/// window operators.
pub struct WindowOutputs<T, O> {
    results: Batch<O>,
    late_records: Batch<T>,
    next: Box<dyn Output<O>>,
    late: Box<dyn Output<T>>,
}

impl<T, O> WindowOutputs<T, O> {
    /// Results go to `next`, late records to `late`.
    pub fn new(next: Box<dyn Output<O>>, late: Box<dyn Output<T>>) -> Self {
        WindowOutputs { results: Batch::default(), late_records: Batch::default(), next, late }
    }

    /// Emits `acc`'s result(s) for `(key, window)`, timestamped with the window's last timestamp.
    pub fn emit<K, WF: WindowFunction<K, T, Out = O>>(
        &mut self,
        wf: &mut WF,
        key: &K,
        window: TimeWindow,
        acc: &WF::Acc,
    ) {
        let before = self.results.records.len();
        wf.emit(key, window, acc, &mut self.results.records);
        let ts = self.results.timestamps.get_or_insert_with(Vec::new);
        ts.resize(before, Timestamp::MIN);
        ts.resize(self.results.records.len(), window.max_timestamp());
    }

    /// Sends a record that was too late for all its windows to the late output.
    pub fn late(&mut self, record: T, timestamp: Timestamp) {
        self.late_records.push(record, Some(timestamp));
    }

    /// Pushes what is buffered.
    pub fn flush(&mut self) -> Result<()> {
        if !self.results.is_empty() {
            self.next.push(&mut self.results)?;
        }
        if !self.late_records.is_empty() {
            self.late.push(&mut self.late_records)?;
        }
        Ok(())
    }

    /// Forwards a control event to both outputs, after what is buffered.
    pub fn control(&mut self, event: Control) -> Result<()> {
        self.flush()?;
        self.next.control(event)?;
        self.late.control(event)
    }

    /// Flushes and ends both outputs.
    pub fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.late.finish()?;
        self.next.finish()
    }
}

/// The timestamps of a batch for an event-time window, or an error naming the operator that says
/// what to do.
pub fn event_timestamps<T>(batch: &mut Batch<T>, operator: &str) -> Result<Vec<Timestamp>> {
    match batch.timestamps.take() {
        Some(ts) if ts.contains(&Timestamp::MIN) => {
            batch.clear();
            Err(weir_core::Error::invalid_job(format!(
                "event-time window '{operator}' got a record without a timestamp (for example one emitted by a \
                 processing-time timer); assign timestamps with assign_timestamps_and_watermarks(...) before the \
                 window, or collect such records with collect_with_timestamp"
            )))
        }
        Some(ts) => Ok(ts),
        None => {
            batch.clear();
            Err(weir_core::Error::invalid_job(format!(
                "event-time window '{operator}' got records without timestamps; assign them with \
                 assign_timestamps_and_watermarks(...) before the window, or use a processing-time window"
            )))
        }
    }
}

/// What is computed per key and window: an accumulator that records are added to one at a time
/// (incremental aggregation), merged when session windows merge, and turned into output when the
/// window fires.
pub trait WindowFunction<K, T> {
    /// The per-window state.
    type Acc;
    /// The output.
    type Out;
    /// A new, empty accumulator.
    fn create(&mut self) -> Self::Acc;
    /// Adds one record.
    fn add(&mut self, acc: &mut Self::Acc, record: T);
    /// Merges `from` into `into`.
    fn merge(&mut self, from: Self::Acc, into: &mut Self::Acc);
    /// Emits the window's result(s).
    fn emit(&mut self, key: &K, window: TimeWindow, acc: &Self::Acc, out: &mut Vec<Self::Out>);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigners_place_records_in_the_right_windows() {
        let mut got = Vec::new();
        let t = WindowAssigner::Tumbling { size: 10, offset: 0, domain: TimeDomain::EventTime };
        t.for_each_window(-1, |w| got.push(w));
        t.for_each_window(25, |w| got.push(w));
        assert_eq!(got, vec![TimeWindow { start: -10, end: 0 }, TimeWindow { start: 20, end: 30 }]);
        got.clear();
        let s = WindowAssigner::Sliding { size: 10, slide: 5, offset: 0, domain: TimeDomain::EventTime };
        s.for_each_window(12, |w| got.push(w));
        assert_eq!(got, vec![TimeWindow { start: 10, end: 20 }, TimeWindow { start: 5, end: 15 }]);
        assert!(
            WindowAssigner::Sliding { size: 10, slide: 20, offset: 0, domain: TimeDomain::EventTime }
                .validate()
                .is_err()
        );
        assert!(WindowAssigner::Tumbling { size: 0, offset: 0, domain: TimeDomain::EventTime }.validate().is_err());
        assert!(WindowAssigner::Session { gap: -5, domain: TimeDomain::ProcessingTime }.validate().is_err());
    }
}
