//! The one interface records flow through.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use weir_core::{Result, VertexId};

use crate::metrics::OperatorMetrics;

/// Event time in milliseconds since the epoch, as in Flink.
pub type Timestamp = i64;

/// A batch of records with, once timestamps have been assigned, one event-time timestamp per
/// record. Pipelines that never use event time carry no timestamp column at all.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T> {
    /// The records.
    pub records: Vec<T>,
    /// `Some` with one timestamp per record, or `None` when the stream has no event time.
    pub timestamps: Option<Vec<Timestamp>>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch { records: Vec::new(), timestamps: None }
    }
}

impl<T> Batch<T> {
    /// A batch of records without timestamps.
    pub fn of(records: Vec<T>) -> Self {
        Batch { records, timestamps: None }
    }

    /// A batch of records with their timestamps.
    pub fn timestamped(records: Vec<T>, timestamps: Vec<Timestamp>) -> Self {
        Batch { records, timestamps: Some(timestamps) }
    }

    /// Number of records.
    #[inline]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are no records.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Removes all records and the timestamp column. (An empty batch never keeps a column: a
    /// buffer reused for records without timestamps must not carry a stale one.)
    pub fn clear(&mut self) {
        self.records.clear();
        self.timestamps = None;
    }

    /// Takes the contents out, leaving an empty batch.
    pub fn take(&mut self) -> Batch<T> {
        Batch { records: std::mem::take(&mut self.records), timestamps: self.timestamps.take() }
    }

    /// Moves the timestamp column of `from` into `self`, for operators that emit exactly one
    /// record per input, in order.
    #[inline]
    pub fn take_timestamps_from(&mut self, from: &mut Batch<impl Sized>) {
        self.timestamps = from.timestamps.take();
    }

    /// Appends one record with an optional timestamp (the timestamp is used only when the batch
    /// has a timestamp column, which the first timestamped record creates).
    /// A record without a timestamp in a timestamped batch gets `Timestamp::MIN`.
    #[inline]
    pub fn push(&mut self, record: T, timestamp: Option<Timestamp>) {
        match (timestamp, &mut self.timestamps) {
            (Some(ts), Some(col)) => col.push(ts),
            (None, Some(col)) => col.push(Timestamp::MIN),
            (Some(ts), None) => {
                let mut col = vec![Timestamp::MIN; self.records.len()];
                col.push(ts);
                self.timestamps = Some(col);
            }
            (None, None) => {}
        }
        self.records.push(record);
    }

    /// Keeps the records for which `keep` is true, and their timestamps.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        match &mut self.timestamps {
            None => self.records.retain(keep),
            Some(ts) => {
                let mut w = 0;
                for r in 0..self.records.len() {
                    if keep(&self.records[r]) {
                        self.records.swap(w, r);
                        ts[w] = ts[r];
                        w += 1;
                    }
                }
                self.records.truncate(w);
                ts.truncate(w);
            }
        }
    }

    /// Iterates records with their timestamps, emptying the batch.
    pub fn drain(&mut self) -> impl Iterator<Item = (T, Option<Timestamp>)> + '_ {
        let ts = self.timestamps.take().unwrap_or_default();
        self.records.drain(..).zip(ts.into_iter().map(Some).chain(std::iter::repeat(None)))
    }
}

#[cfg(test)]
mod batch_tests {
    use super::*;

    #[test]
    fn an_emptied_batch_carries_no_timestamp_column() {
        let mut b = Batch::timestamped(vec![1, 2], vec![10, 20]);
        let taken = b.take();
        assert_eq!(taken.timestamps, Some(vec![10, 20]));
        assert_eq!(b.timestamps, None);
        b.records.extend([3, 4]);
        b.retain(|x| *x > 3);
        assert_eq!(b, Batch::of(vec![4]));
        let mut b = Batch::timestamped(vec![1], vec![10]);
        assert_eq!(b.drain().collect::<Vec<_>>(), vec![(1, Some(10))]);
        assert_eq!(b.timestamps, None);
        let mut b = Batch::timestamped(vec![1], vec![10]);
        b.clear();
        b.push(5, None);
        assert_eq!(b, Batch::of(vec![5]));
    }
}

/// In-band events other than records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Event time has reached this timestamp: no record with a timestamp at or below it is
    /// expected any more (later ones are late).
    Watermark(Timestamp),
    /// The stream is idle (`true`: no records or watermarks for a while, so it must not hold back
    /// event time downstream) or active again (`false`).
    Idle(bool),
    /// Processing time has advanced to this wall-clock time (ms since the epoch). Delivered
    /// within a task only (never across an exchange), at `pipeline.auto-watermark-interval`.
    Tick(Timestamp),
    /// Checkpoint barrier: every record before it is in the checkpoint, none after it. An operator
    /// hands its snapshot to its task's [`crate::checkpoint::task::TaskCheckpoint`] when the
    /// barrier reaches it, then forwards the barrier.
    Barrier(crate::checkpoint::CheckpointId),
}

/// A consumer of batches: the input of the next operator in a chain, an exchange to other tasks,
/// or a sink.
///
/// `push` takes every record (and timestamp) out of `batch` and leaves it empty (its capacity may
/// be kept and reused by the caller). `control` receives watermarks, idleness and ticks in order
/// with the records; an operator with an output forwards what it does not consume. `finish` is
/// called once, at the end of input, after the last `push`; an implementation flushes what it
/// buffers and finishes its own outputs.
pub trait Output<T> {
    /// Consumes all records of `batch`.
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()>;
    /// An in-band control event. The default ignores it, which suits sinks.
    fn control(&mut self, _event: Control) -> Result<()> {
        Ok(())
    }
    /// End of input.
    fn finish(&mut self) -> Result<()>;
}

impl<T, O: Output<T> + ?Sized> Output<T> for Box<O> {
    #[inline]
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        (**self).push(batch)
    }
    #[inline]
    fn control(&mut self, event: Control) -> Result<()> {
        (**self).control(event)
    }
    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }
}

/// Drops everything: the output of an operator that nothing consumes.
pub struct NullOutput;

impl<T> Output<T> for NullOutput {
    #[inline]
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        batch.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Sends every batch to several outputs (an operator with more than one consumer).
pub struct FanOut<T> {
    outputs: Vec<Box<dyn Output<T>>>,
    scratch: Batch<T>,
}

impl<T> FanOut<T> {
    /// A fan-out to `outputs`.
    pub fn new(outputs: Vec<Box<dyn Output<T>>>) -> Self {
        FanOut { outputs, scratch: Batch::default() }
    }
}

impl<T: Clone> Output<T> for FanOut<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        if let Some((last, rest)) = self.outputs.split_last_mut() {
            for out in rest {
                self.scratch.records.extend(batch.records.iter().cloned());
                if let Some(ts) = &batch.timestamps {
                    self.scratch.timestamps.get_or_insert_with(Vec::new).extend_from_slice(ts);
                }
                out.push(&mut self.scratch)?;
            }
            last.push(batch)
        } else {
            batch.clear();
            Ok(())
        }
    }
    fn control(&mut self, event: Control) -> Result<()> {
        for out in &mut self.outputs {
            out.control(event)?;
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        for out in &mut self.outputs {
            out.finish()?;
        }
        Ok(())
    }
}

/// Which operator of a task is running right now, so that a panic can be blamed on it.
#[derive(Clone, Debug, Default)]
pub struct CurrentOperator(Rc<Cell<Option<VertexId>>>);

impl CurrentOperator {
    /// The operator that was entered last and not yet left (after a panic: the one that panicked).
    pub fn get(&self) -> Option<VertexId> {
        self.0.get()
    }
    /// Marks `v` as running, returning the previous marker.
    #[inline]
    pub fn enter(&self, v: VertexId) -> Option<VertexId> {
        self.0.replace(Some(v))
    }
    /// Restores the marker saved by [`CurrentOperator::enter`].
    #[inline]
    pub fn leave(&self, previous: Option<VertexId>) {
        self.0.set(previous)
    }
}

/// Wraps an operator's input: counts records in and marks the operator as running while it works;
/// when a barrier has passed the operator, snapshots its operator list states.
pub struct Traced<T> {
    vertex: VertexId,
    current: CurrentOperator,
    metrics: Arc<OperatorMetrics>,
    inner: Box<dyn Output<T>>,
    lists: Option<(crate::state::OperatorStateStore, String, crate::checkpoint::task::TaskCheckpoint)>,
}

impl<T> Traced<T> {
    /// Wraps `inner`, the input of operator `vertex`.
    pub fn new(
        vertex: VertexId,
        current: CurrentOperator,
        metrics: Arc<OperatorMetrics>,
        inner: Box<dyn Output<T>>,
    ) -> Self {
        Traced { vertex, current, metrics, inner, lists: None }
    }

    /// Snapshots the operator list states of the operator `env` describes at every barrier.
    pub fn with_operator_state(mut self, env: &crate::context::TaskEnv) -> Self {
        if env.checkpoint.enabled() {
            self.lists = Some((env.op.operator_state.clone(), env.op.uid.clone(), env.checkpoint.clone()));
        }
        self
    }
}

impl<T> Output<T> for Traced<T> {
    #[inline]
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        self.metrics.add_in(batch.len());
        let prev = self.current.enter(self.vertex);
        let r = self.inner.push(batch);
        self.current.leave(prev);
        r
    }
    fn control(&mut self, event: Control) -> Result<()> {
        if let Control::Watermark(ts) = event {
            self.metrics.input_watermark(ts);
        }
        let prev = self.current.enter(self.vertex);
        let r = self.inner.control(event);
        self.current.leave(prev);
        r?;
        // The operator updated its list states for this barrier (a sink's pre-commit, say), and no
        // record has come since: they are its state at the barrier.
        if let (Control::Barrier(_), Some((store, uid, checkpoint))) = (event, &self.lists) {
            let lists = store.snapshot()?;
            if !lists.is_empty() {
                checkpoint.add(crate::checkpoint::OperatorSnapshot { uid: uid.clone(), lists, ..Default::default() });
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        let prev = self.current.enter(self.vertex);
        let r = self.inner.finish();
        self.current.leave(prev);
        r
    }
}

/// Wraps an operator's output: counts its records out (`numRecordsOut`) and notes its output
/// watermark (`currentOutputWatermark`).
pub struct Counted<T> {
    metrics: Arc<OperatorMetrics>,
    inner: Box<dyn Output<T>>,
}

impl<T> Counted<T> {
    /// Wraps `inner`, the output of the operator `metrics` belongs to.
    pub fn new(metrics: Arc<OperatorMetrics>, inner: Box<dyn Output<T>>) -> Self {
        Counted { metrics, inner }
    }
}

impl<T> Output<T> for Counted<T> {
    #[inline]
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        self.metrics.add_out(batch.len());
        self.inner.push(batch)
    }
    fn control(&mut self, event: Control) -> Result<()> {
        if let Control::Watermark(ts) = event {
            self.metrics.output_watermark(ts);
        }
        self.inner.control(event)
    }
    fn finish(&mut self) -> Result<()> {
        self.inner.finish()
    }
}

/// What travels on a channel.
#[derive(Debug)]
pub enum Message<T> {
    /// A batch of records.
    Records(Batch<T>),
    /// The sender's event time reached this timestamp.
    Watermark(Timestamp),
    /// The sender became idle (`true`) or active again (`false`).
    Idle(bool),
    /// The sender has no more records.
    EndOfInput,
    /// A checkpoint barrier.
    Barrier(crate::checkpoint::format::CheckpointId),
}
