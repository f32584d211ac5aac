//! Sources: readers that fill batches, and the task loop that drives them.

use std::sync::Arc;
use std::time::Duration;

use weir_core::Result;

use std::time::Instant;

use crate::checkpoint::task::TaskCheckpoint;
use crate::context::OperatorContext;
use crate::exchange::now_millis;
use crate::metrics::TaskIo;
use crate::output::{Batch, Control, CurrentOperator, Output};

/// What a source reader says after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceStatus {
    /// More records may be available right away.
    Continue,
    /// Nothing is available now; poll again after at most this long (or sooner, the runtime
    /// decides). Cancellation interrupts the wait.
    Wait(Duration),
    /// The reader is exhausted: no more records, ever.
    Finished,
}

/// One parallel instance of a source.
///
/// `poll` appends at most `max` records to `out` and says whether more may follow. It should not
/// block for long: a reader waiting for data returns [`SourceStatus::Wait`] and is polled again, so
/// that cancellation is noticed promptly.
pub trait SourceReader<T> {
    /// Appends up to `max` records to `out`.
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourceStatus>;

    /// Writes the reader's position into the operator state it took from its context
    /// ([`OperatorContext::operator_state`]), for a checkpoint; a restored reader finds it there.
    /// Readers that cannot go back (a socket) keep this default: after a recovery they go on from
    /// wherever they are, which is at-most-once for what they read.
    fn snapshot(&mut self) -> Result<()> {
        Ok(())
    }

    /// [`SourceReader::snapshot`] for checkpoint `id`; readers that act when a checkpoint
    /// completes (a Kafka reader committing its offsets) remember what the snapshot of `id` held.
    fn snapshot_checkpoint(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        let _ = id;
        self.snapshot()
    }

    /// Checkpoint `id` completed (Flink's `notifyCheckpointComplete`): what the reader snapshotted
    /// for it, and for every checkpoint before it, is durable. Only a hint: a notification can be
    /// skipped (a newer checkpoint completes first) or come late, and nothing that recovery needs
    /// may depend on it.
    fn notify_checkpoint_complete(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        let _ = id;
        Ok(())
    }

    /// Readers that give their records event time (a Kafka reader: each partition's record
    /// timestamps) return here, after each poll, one timestamp per record that poll appended; the
    /// source task moves them into the batch and hands the (emptied) vector back next time.
    fn timestamps(&mut self) -> Option<&mut Vec<crate::output::Timestamp>> {
        None
    }

    /// Readers that generate watermarks themselves (per split, as Flink's sources do, so that a
    /// quiet partition does not hold event time back once it is idle) say where event time is, at
    /// wall-clock time `now` (ms): the task emits the watermark when it advances and idleness when
    /// it changes, and the largest watermark when the reader ends.
    fn event_time(&mut self, now: crate::output::Timestamp) -> Option<SourceTime> {
        let _ = now;
        None
    }
}

/// Where a reader's event time is ([`SourceReader::event_time`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceTime {
    /// No record at or below this timestamp is expected any more.
    pub watermark: crate::output::Timestamp,
    /// Nothing is coming: downstream must not wait for this reader's watermark.
    pub idle: bool,
}

/// A type-erased runnable task body.
pub trait TaskBody {
    /// Runs until the input ends, the job is cancelled or something fails.
    fn run(&mut self) -> Result<()>;
}

/// Drives a [`SourceReader`] into the task's first output.
pub struct SourceTask<T> {
    reader: Box<dyn SourceReader<T>>,
    output: Box<dyn Output<T>>,
    ctx: OperatorContext,
    io: Arc<TaskIo>,
    current: CurrentOperator,
    checkpoint: TaskCheckpoint,
    /// The latest completed checkpoint the reader was told of.
    notified: crate::checkpoint::CheckpointId,
    /// The reader's event time as last emitted (readers that generate watermarks).
    emitted: Option<SourceTime>,
}

impl<T> SourceTask<T> {
    /// A source task reading `reader` into `output`, in the task `env` describes.
    pub fn new(reader: Box<dyn SourceReader<T>>, output: Box<dyn Output<T>>, env: &crate::context::TaskEnv) -> Self {
        SourceTask {
            reader,
            output,
            ctx: env.op.clone(),
            io: env.io.clone(),
            current: env.current.clone(),
            notified: env.checkpoint.completed(),
            checkpoint: env.checkpoint.clone(),
            emitted: None,
        }
    }

    /// Emits the reader's watermark when it advanced, and idleness when it changed.
    fn emit_event_time(&mut self) -> Result<()> {
        let Some(now) = self.reader.event_time(now_millis()) else { return Ok(()) };
        let before = self.emitted.unwrap_or(SourceTime { watermark: crate::output::Timestamp::MIN, idle: false });
        if now.idle != before.idle {
            self.output.control(Control::Idle(now.idle))?;
        }
        if now.watermark > before.watermark {
            self.output.control(Control::Watermark(now.watermark))?;
        }
        self.emitted = Some(SourceTime { watermark: now.watermark.max(before.watermark), idle: now.idle });
        Ok(())
    }

    /// Moves the timestamps of the records just read into `batch` (readers that give them), and,
    /// if the reader was idle, says it is active again before the records go out.
    fn take_timestamps(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let Some(ts) = self.reader.timestamps() else { return Ok(()) };
        if ts.len() == batch.records.len() {
            let mut spare = batch.timestamps.take().unwrap_or_default();
            spare.clear();
            batch.timestamps = Some(std::mem::replace(ts, spare));
        } else {
            ts.clear();
        }
        if !batch.is_empty()
            && let Some(e) = self.emitted.as_mut().filter(|e| e.idle)
        {
            e.idle = false;
            self.output.control(Control::Idle(false))?;
        }
        Ok(())
    }

    /// The end of a reader that generated watermarks: event time is over.
    fn end_event_time(&mut self) -> Result<()> {
        if self.emitted.is_some_and(|e| e.watermark < crate::output::Timestamp::MAX) {
            if self.emitted.is_some_and(|e| e.idle) {
                self.output.control(Control::Idle(false))?;
            }
            self.output.control(Control::Watermark(crate::output::Timestamp::MAX))?;
            self.emitted = Some(SourceTime { watermark: crate::output::Timestamp::MAX, idle: false });
        }
        Ok(())
    }

    /// Tells the reader of a checkpoint that completed since the last call.
    fn notify_completed(&mut self) -> Result<()> {
        let completed = self.checkpoint.completed();
        if completed <= self.notified {
            return Ok(());
        }
        self.notified = completed;
        let prev = self.current.enter(self.ctx.vertex);
        let done = self.reader.notify_checkpoint_complete(completed);
        self.current.leave(prev);
        done
    }

    /// Snapshots the reader's position and puts barrier `id` into the output.
    fn snapshot(&mut self, id: crate::checkpoint::CheckpointId) -> Result<()> {
        let prev = self.current.enter(self.ctx.vertex);
        let written = self.reader.snapshot_checkpoint(id);
        self.current.leave(prev);
        written?;
        let lists = self.ctx.operator_state.snapshot()?;
        self.checkpoint.add(crate::checkpoint::OperatorSnapshot {
            uid: self.ctx.uid.clone(),
            lists,
            ..Default::default()
        });
        self.output.control(Control::Barrier(id))?;
        self.checkpoint.barrier_passed(id);
        Ok(())
    }
}

impl<T> TaskBody for SourceTask<T> {
    fn run(&mut self) -> Result<()> {
        let mut batch = Batch { records: Vec::with_capacity(self.ctx.batch_size), timestamps: None };
        let max = self.ctx.batch_size.max(1);
        let every = self.ctx.tick;
        let mut next_tick = Instant::now() + every;
        // With checkpoints, a source that read everything stays until the job's final checkpoint,
        // so that what the job wrote is committed before it ends.
        let mut ended = false;
        // The final checkpoint (or a stop's savepoint) this source emitted its barrier for: it reads
        // nothing more, and ends once that checkpoint completes (should it fail, a newer trigger
        // comes and reading goes on).
        let mut stopping = None;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Ok(());
            }
            self.notify_completed()?;
            if let Some((id, last, drain)) = self.checkpoint.due() {
                if drain {
                    self.output.control(Control::Watermark(crate::output::Timestamp::MAX))?;
                }
                self.snapshot(id)?;
                stopping = last.then_some(id);
            }
            if let Some(id) = stopping {
                if self.checkpoint.completed() >= id {
                    self.notify_completed()?;
                    break;
                }
                if self.ctx.cancel.wait_timeout(Duration::from_millis(2)) {
                    return Ok(());
                }
                continue;
            }
            if ended {
                if self.ctx.cancel.wait_timeout(Duration::from_millis(2)) {
                    return Ok(());
                }
                continue;
            }
            let prev = self.current.enter(self.ctx.vertex);
            let status = self.reader.poll(&mut batch.records, max);
            self.current.leave(prev);
            let status = status?;
            self.take_timestamps(&mut batch)?;
            if !batch.is_empty() {
                self.output.push(&mut batch)?;
            }
            self.emit_event_time()?;
            if Instant::now() >= next_tick {
                self.output.control(Control::Tick(now_millis()))?;
                next_tick = Instant::now() + every;
            }
            match status {
                SourceStatus::Continue => {}
                SourceStatus::Wait(d) => {
                    // Wake for the next tick even when the reader wants to wait longer (and soon, for
                    // barriers, when checkpoints are taken).
                    let mut d = d.min(next_tick.saturating_duration_since(Instant::now()));
                    if self.checkpoint.enabled() {
                        d = d.min(Duration::from_millis(5));
                    }
                    // A source with nothing to read is idle.
                    let since = Instant::now();
                    let cancelled = self.ctx.cancel.wait_timeout(d);
                    self.io.idle_for(since.elapsed());
                    if cancelled {
                        return Ok(());
                    }
                }
                SourceStatus::Finished if self.checkpoint.enabled() => {
                    self.end_event_time()?;
                    ended = true;
                    self.checkpoint.source_ended();
                }
                SourceStatus::Finished => break,
            }
        }
        self.end_event_time()?;
        self.output.finish()
    }
}

/// A source definition: what a job declares; it creates one [`SourceReader`] per parallel instance.
pub trait Source<T>: Send + Sync + 'static {
    /// Display name, e.g. `Sequence` (shown as `Source: Sequence`).
    fn name(&self) -> String;
    /// Checks run on the client before the job starts (input exists, address parses, ...).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// The largest parallelism this source supports (a socket: 1), if limited.
    fn max_parallelism(&self) -> Option<u32> {
        None
    }
    /// Whether its readers give records event-time timestamps and generate watermarks
    /// ([`SourceReader::event_time`]), so that event-time operators may follow it directly.
    fn has_event_time(&self) -> bool {
        false
    }
    /// The reader for subtask `ctx.subtask` of `ctx.parallelism`.
    fn create_reader(&self, ctx: &OperatorContext) -> Result<Box<dyn SourceReader<T>>>;
}

/// A sink definition: it creates one writer per parallel instance.
pub trait Sink<T>: Send + Sync + 'static {
    /// Display name, e.g. `Print` (shown as `Sink: Print`).
    fn name(&self) -> String;
    /// Checks run on the client before the job starts (output path writable, ...).
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// The writer for one subtask: an [`Output`] whose `finish` flushes and commits.
    fn create_writer(&self, env: &crate::context::TaskEnv) -> Result<Box<dyn Output<T>>>;
}
