//! Which windows a record belongs to: time windows, the assigners that give them (tumbling,
//! sliding, session, global) and their time domain, and the allowed lateness that bounds them.

use crate::output::Timestamp;

/// The window count windows and global windows report: all of time.
pub const GLOBAL_WINDOW: TimeWindow = TimeWindow { start: Timestamp::MIN, end: Timestamp::MAX };

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

/// Which windows records go to, and how long a window still takes late records after the
/// watermark passed its end (Flink's `allowedLateness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowBounds {
    /// How records are assigned to windows.
    pub assigner: WindowAssigner,
    /// How long after its end (in event time) a window takes late records, in ms.
    pub lateness_ms: i64,
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
            WindowAssigner::Global => f(GLOBAL_WINDOW),
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
