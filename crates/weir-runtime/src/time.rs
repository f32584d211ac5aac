//! Event time: assigning timestamps and generating watermarks.

use weir_core::Result;

use crate::output::{Batch, Control, Output, Timestamp};

/// How watermarks follow the timestamps seen (Flink's built-in watermark generators).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// How far behind the largest timestamp seen the watermark stays, in ms (0: monotonous).
    pub out_of_orderness_ms: i64,
    /// Mark the stream idle after this many ms without records (`None`: never).
    pub idle_timeout_ms: Option<i64>,
    /// Whether to generate watermarks at all (`false`: timestamps only).
    pub emit: bool,
    /// Emit a watermark after every batch, not only on ticks: watermarks then follow the data
    /// deterministically (with a batch size of 1, after every record).
    pub per_batch: bool,
}

/// Assigns each record a timestamp and emits watermarks, periodically on processing-time ticks
/// and a final `Timestamp::MAX` at the end of input.
///
/// Watermarks from upstream are replaced by this operator's own, as in Flink. With bounded
/// out-of-orderness `d`, the watermark is `max_timestamp - d - 1`: every record at or below it is
/// late. Without records for the idle timeout, the stream is marked idle so it does not hold back
/// event time downstream; the next record makes it active again.
pub struct TimestampsAndWatermarks<T, A> {
    assign: A,
    spec: WatermarkSpec,
    max_ts: Timestamp,
    emitted: Timestamp,
    idle: bool,
    seen_since_tick: bool,
    last_active: Option<Timestamp>,
    next: Box<dyn Output<T>>,
}

impl<T, A> TimestampsAndWatermarks<T, A> {
    /// `assign(record, previous timestamp)` gives a record's timestamp.
    pub fn new(assign: A, spec: WatermarkSpec, next: Box<dyn Output<T>>) -> Self {
        TimestampsAndWatermarks {
            assign,
            spec,
            max_ts: Timestamp::MIN,
            emitted: Timestamp::MIN,
            idle: false,
            seen_since_tick: false,
            last_active: None,
            next,
        }
    }

    fn current_watermark(&self) -> Timestamp {
        if self.max_ts == Timestamp::MIN {
            Timestamp::MIN
        } else {
            self.max_ts.saturating_sub(self.spec.out_of_orderness_ms).saturating_sub(1)
        }
    }
}

impl<T, A> TimestampsAndWatermarks<T, A> {
    fn emit_watermark(&mut self) -> Result<()> {
        let wm = self.current_watermark();
        if wm > self.emitted {
            self.emitted = wm;
            self.next.control(Control::Watermark(wm))?;
        }
        Ok(())
    }
}

impl<T, A: FnMut(&T, Option<Timestamp>) -> Timestamp> Output<T> for TimestampsAndWatermarks<T, A> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.idle {
            self.idle = false;
            self.next.control(Control::Idle(false))?;
        }
        self.seen_since_tick = true;
        let mut ts = batch.timestamps.take().unwrap_or_default();
        if ts.len() == batch.records.len() {
            for (r, t) in batch.records.iter().zip(ts.iter_mut()) {
                *t = (self.assign)(r, Some(*t));
            }
        } else {
            ts.clear();
            ts.extend(batch.records.iter().map(|r| (self.assign)(r, None)));
        }
        if let Some(m) = ts.iter().copied().max() {
            self.max_ts = self.max_ts.max(m);
        }
        batch.timestamps = Some(ts);
        self.next.push(batch)?;
        if self.spec.emit && self.spec.per_batch {
            self.emit_watermark()?;
        }
        Ok(())
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match event {
            // Replaced by this operator's own.
            Control::Watermark(_) | Control::Idle(_) => Ok(()),
            // Event time restarts from the sources after a recovery: nothing to keep.
            Control::Barrier(_) => self.next.control(event),
            Control::Tick(now) => {
                if self.seen_since_tick || self.last_active.is_none() {
                    self.last_active = Some(now);
                }
                self.seen_since_tick = false;
                if self.spec.emit {
                    self.emit_watermark()?;
                }
                if let (Some(timeout), Some(active)) = (self.spec.idle_timeout_ms, self.last_active)
                    && !self.idle
                    && now - active >= timeout
                {
                    self.idle = true;
                    self.next.control(Control::Idle(true))?;
                }
                self.next.control(event)
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        if self.spec.emit && self.emitted < Timestamp::MAX {
            if self.idle {
                self.idle = false;
                self.next.control(Control::Idle(false))?;
            }
            self.emitted = Timestamp::MAX;
            self.next.control(Control::Watermark(Timestamp::MAX))?;
        }
        self.next.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    #[derive(Default)]
    struct Seen {
        timestamps: Vec<Timestamp>,
        controls: Vec<Control>,
    }
    struct Recorder(Rc<RefCell<Seen>>);
    impl Output<u64> for Recorder {
        fn push(&mut self, batch: &mut Batch<u64>) -> Result<()> {
            let mut s = self.0.borrow_mut();
            s.timestamps.extend(batch.timestamps.iter().flatten());
            batch.clear();
            Ok(())
        }
        fn control(&mut self, event: Control) -> Result<()> {
            if !matches!(event, Control::Tick(_)) {
                self.0.borrow_mut().controls.push(event);
            }
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bounded_out_of_orderness_idleness_and_the_final_watermark() -> Result<()> {
        let seen = Rc::new(RefCell::new(Seen::default()));
        let spec = WatermarkSpec { out_of_orderness_ms: 10, idle_timeout_ms: Some(500), emit: true, per_batch: false };
        let mut op = TimestampsAndWatermarks::new(|x: &u64, _| *x as i64 * 100, spec, Box::new(Recorder(seen.clone())));
        op.push(&mut Batch::of(vec![3, 1, 2]))?;
        assert_eq!(seen.borrow().timestamps, vec![300, 100, 200]);
        op.control(Control::Tick(1_000))?;
        // max 300 - 10 - 1
        assert_eq!(seen.borrow().controls, vec![Control::Watermark(289)]);
        op.control(Control::Tick(1_200))?;
        assert_eq!(seen.borrow().controls.len(), 1, "no new watermark without progress");
        op.control(Control::Tick(1_600))?;
        assert_eq!(seen.borrow().controls.last(), Some(&Control::Idle(true)));
        op.push(&mut Batch::of(vec![9]))?;
        op.control(Control::Tick(1_800))?;
        op.finish()?;
        let controls = seen.borrow().controls.clone();
        assert_eq!(
            controls,
            vec![
                Control::Watermark(289),
                Control::Idle(true),
                Control::Idle(false),
                Control::Watermark(889),
                Control::Watermark(Timestamp::MAX)
            ]
        );
        Ok(())
    }
}
