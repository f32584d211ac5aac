//! Windows: assigners, the functions evaluated per window, and the window operators.
//!
//! - [`time::TimeWindowOperator`]: tumbling and sliding windows in event or processing time.
//!   Windows of all keys that end at the same time fire together, so the operator keeps its
//!   state grouped by window end and a watermark fires whole groups, with no per-key timers.
//! - [`session::SessionWindowOperator`]: session windows, merged per key as records arrive.
//! - [`count::CountWindowOperator`]: global windows that fire and purge every N records of a key.
//! - [`trigger::TriggerWindowOperator`]: windows with custom triggers and evictors.
//!
//! Every window operator keeps its windows in checkpoints, by key group, and those that follow
//! event time keep their watermark too ([`WindowCheckpointing`]), so that a restored operator fires
//! the same windows and judges the same records late as the one that wrote the snapshot.

mod assigner;
pub mod count;
pub mod policy;
pub mod session;
pub mod time;
pub mod trigger;

use weir_core::Result;

use crate::checkpoint::OperatorSnapshot;
use crate::checkpoint::task::TaskCheckpoint;
use crate::output::{Batch, Control, Output, Timestamp};
use crate::state::backend::StateSnapshot;
use crate::state::{OperatorListState, OperatorStateStore, Redistribution};

pub use assigner::{GLOBAL_WINDOW, TimeDomain, TimeWindow, WindowAssigner, WindowBounds, window_start};

/// The operator list state in which a window operator keeps its watermark across a restore. It is
/// a union list: at another parallelism every new subtask gets the watermarks of all old ones and
/// goes on from the smallest.
pub const WATERMARK_STATE: &str = "window-watermark";

/// What a window operator needs to take part in checkpoints: its task's handle, its uid, its
/// number of key groups and, for operators that follow event time, the operator state that keeps
/// its watermark ([`WATERMARK_STATE`]).
///
/// Keyed window state is written by the key group of the record key (the part of the state key
/// the hash exchange routed by), so that a restore at another parallelism picks each subtask's
/// chunks by key group.
#[derive(Clone, Debug, Default)]
pub struct WindowCheckpointing {
    task: TaskCheckpoint,
    uid: String,
    max_parallelism: u32,
    operator_state: OperatorStateStore,
    watermark: Option<OperatorListState<Timestamp>>,
}

impl WindowCheckpointing {
    /// Checkpointing for the operator instance `env` describes; `with_watermark`: whether the
    /// operator keeps a watermark.
    pub fn of(env: &crate::context::TaskEnv, with_watermark: bool) -> Result<Self> {
        let watermark = if with_watermark {
            Some(env.op.operator_state.list_state::<Timestamp>(WATERMARK_STATE, Redistribution::Union)?)
        } else {
            None
        };
        Ok(WindowCheckpointing {
            task: env.checkpoint.clone(),
            uid: env.op.uid.clone(),
            max_parallelism: env.op.max_parallelism.max(1),
            operator_state: env.op.operator_state.clone(),
            watermark,
        })
    }

    /// The watermark to go on from after a restore: the smallest of the old subtasks' (they differ
    /// only when some input was idle, or watermarks were still travelling; the smallest never
    /// judges a record late that one of them took in). `None` when nothing was restored.
    pub fn restored_watermark(&self) -> Result<Option<Timestamp>> {
        match &self.watermark {
            Some(w) => Ok(w.get()?.into_iter().min()),
            None => Ok(None),
        }
    }

    /// Whether the job takes checkpoints.
    pub fn enabled(&self) -> bool {
        self.task.enabled()
    }

    /// The number of key groups.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// Hands the operator's snapshot to its task: `keyed` (its keyed state by key group, as
    /// [`crate::checkpoint::snapshot_keyed_entries`] writes it) and, for operators that keep one, `watermark`.
    pub fn snapshot(&self, keyed: Vec<(u32, Vec<u8>)>, watermark: Timestamp) -> Result<()> {
        self.snapshot_state(StateSnapshot::keyed(keyed), watermark)
    }

    /// The latest completed checkpoint (what an incremental snapshot builds on).
    pub fn completed(&self) -> crate::checkpoint::CheckpointId {
        self.task.completed()
    }

    /// Like [`WindowCheckpointing::snapshot`], with the operator's keyed state as its table made
    /// it (on the disk backend: an increment goes in with the rest; a full snapshot is made on the
    /// writer thread).
    pub fn snapshot_state(&self, state: StateSnapshot, watermark: Timestamp) -> Result<()> {
        if !self.task.enabled() {
            return Ok(());
        }
        if let Some(w) = &self.watermark {
            w.update(vec![watermark])?;
        }
        let lists = self.operator_state.snapshot()?;
        self.task.add_state(state, OperatorSnapshot { uid: self.uid.clone(), lists, ..Default::default() });
        Ok(())
    }
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

/// What the window operators' tests share: a window function, an output that records, real
/// checkpoints to take snapshots with, and a run that stops at a barrier and goes on from its
/// snapshot at another parallelism.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::time::Duration;

    use crossbeam_channel::Receiver;
    use weir_core::keygroup::{key_group, key_group_range, subtask_for_key_group};
    use weir_core::{Error, JobId, Result, VertexId};

    use super::{TimeWindow, WindowFunction};
    use crate::checkpoint::storage::CheckpointStorage;
    use crate::checkpoint::task::{PartCheckpoints, PartEvent, TaskCheckpoint};
    use crate::checkpoint::{OperatorSnapshot, TaskState, checkpoint_dir_name};
    use crate::context::{CancelToken, OperatorContext, TaskEnv};
    use crate::output::{Batch, Control, Output, Timestamp};
    use crate::state::{OperatorStateStore, redistribute};

    /// Key groups of the operators under test.
    pub const MAX_PARALLELISM: u32 = 128;
    /// Their uid.
    pub const UID: &str = "3:Window";

    /// (key, timestamp, value)
    pub type Event = (u32, i64, i64);
    /// (key, window start, window end, sum of values, number of records)
    pub type Fired = (u32, i64, i64, i64, u32);

    /// Sums values and counts records per window.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct SumCount;

    impl WindowFunction<u32, Event> for SumCount {
        type Acc = (i64, u32);
        type Out = Fired;
        fn create(&mut self) -> (i64, u32) {
            (0, 0)
        }
        fn add(&mut self, acc: &mut (i64, u32), e: Event) {
            acc.0 += e.2;
            acc.1 += 1;
        }
        fn merge(&mut self, from: (i64, u32), into: &mut (i64, u32)) {
            into.0 += from.0;
            into.1 += from.1;
        }
        fn emit(&mut self, k: &u32, w: TimeWindow, acc: &(i64, u32), out: &mut Vec<Fired>) {
            out.push((*k, w.start, w.end, acc.0, acc.1));
        }
    }

    /// Records with their timestamps, as an operator emitted them.
    pub type Seen<T> = Rc<RefCell<Vec<(T, Option<Timestamp>)>>>;

    /// Records what reaches it, with timestamps.
    pub struct Collect<T>(pub Seen<T>);

    impl<T> Output<T> for Collect<T> {
        fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
            self.0.borrow_mut().extend(batch.drain());
            Ok(())
        }
        fn finish(&mut self) -> Result<()> {
            Ok(())
        }
    }

    /// What a test feeds an operator.
    #[derive(Clone, Debug)]
    pub enum Step {
        /// Records with their timestamps.
        Records(Vec<Event>),
        /// A watermark.
        Watermark(Timestamp),
    }

    /// Real checkpointing of a job part, writing to a temporary directory.
    pub struct Checkpoints {
        _dir: tempfile::TempDir,
        storage: CheckpointStorage,
        part: Arc<PartCheckpoints>,
        events: Receiver<PartEvent>,
        job: JobId,
    }

    impl Checkpoints {
        /// Checkpoints of job 9, with the default settings.
        pub fn new() -> Result<Self> {
            let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create", "tempdir", e))?;
            let storage = CheckpointStorage::open(&dir.path().display().to_string())?;
            let (tx, events) = crossbeam_channel::unbounded();
            let job = JobId(9);
            let config = weir_core::checkpointing::CheckpointConfig::default();
            let part = PartCheckpoints::start(job, &config, storage.clone(), tx, None)?;
            Ok(Checkpoints { _dir: dir, storage, part, events, job })
        }

        /// The handle of subtask `subtask`'s task.
        pub fn task(&self, subtask: u32) -> TaskCheckpoint {
            TaskCheckpoint::new(self.part.clone(), 0, subtask)
        }

        /// The snapshot the operator handed to `task` when barrier `id` passed it, as the task wrote
        /// it to checkpoint storage.
        pub fn taken(&self, task: &TaskCheckpoint, id: u64) -> Result<OperatorSnapshot> {
            task.barrier_passed(id);
            let event = self
                .events
                .recv_timeout(Duration::from_secs(30))
                .map_err(|e| Error::internal(format!("no checkpoint event: {e}")))?;
            let PartEvent::Ack(ack) = event else {
                return Err(Error::internal(format!("the state was not written: {event:?}")));
            };
            let rel = format!(
                "{}/{}/{}",
                crate::checkpoint::coordinator::job_dir(self.job),
                checkpoint_dir_name(id),
                ack.file.path
            );
            let state = TaskState::decode(&self.storage.get(&rel)?, &rel)?;
            Ok(state.operators.into_iter().find(|o| o.uid == UID).unwrap_or_default())
        }
    }

    /// The environment of subtask `subtask` of `parallelism`, taking checkpoints with `task` and
    /// restoring from `old`, the snapshots of all subtasks of an earlier run (none: a fresh start),
    /// as a restore does: keyed chunks by key group, list states whole at the same parallelism and
    /// redistributed at another.
    pub fn env(task: TaskCheckpoint, subtask: u32, parallelism: u32, old: &[OperatorSnapshot]) -> TaskEnv {
        let range = key_group_range(MAX_PARALLELISM, parallelism, subtask);
        let restored_keyed =
            old.iter().flat_map(|o| o.keyed.iter().filter(|(kg, _)| range.contains(kg)).cloned()).collect();
        // One checkpoint per run: the disk backend's snapshots are full ones, no chains to follow.
        let restored_raw = old
            .iter()
            .flat_map(|o| o.raw.iter().filter(|(kg, _)| range.contains(kg)).cloned())
            .collect::<Vec<_>>()
            .into();
        let mut lists = BTreeMap::new();
        for name in old.iter().flat_map(|o| o.lists.keys()) {
            let parts: Vec<Vec<Vec<u8>>> =
                old.iter().map(|o| o.lists.get(name).map(|l| l.entries.clone()).unwrap_or_default()).collect();
            let Some(mut l) = old.iter().find_map(|o| o.lists.get(name).cloned()) else { continue };
            l.entries = if old.len() == parallelism as usize {
                parts[subtask as usize].clone()
            } else {
                redistribute(&parts, parallelism, l.mode).into_iter().nth(subtask as usize).unwrap_or_default()
            };
            lists.insert(name.clone(), l);
        }
        let operator_state =
            if old.is_empty() { OperatorStateStore::default() } else { OperatorStateStore::restored(lists) };
        TaskEnv {
            op: OperatorContext {
                job_id: JobId(9),
                job_name: "test".into(),
                vertex: VertexId(3),
                operator_name: "Window".into(),
                subtask,
                parallelism,
                max_parallelism: MAX_PARALLELISM,
                attempt: 0,
                batch_size: 16,
                tick: Duration::from_millis(200),
                cancel: CancelToken::new(),
                operator_state,
                uid: UID.into(),
                metrics: weir_metrics::MetricGroup::detached("operator"),
            },
            metrics: Default::default(),
            io: Default::default(),
            current: Default::default(),
            accumulators: Default::default(),
            checkpoint: task,
            restored_keyed,
            restored_raw,
            state_backend: Default::default(),
        }
    }

    /// `env` on the disk state backend when `disk`, with a cache of 3 entries (most reads and writes
    /// go to the store), or on the heap.
    pub fn on_backend(env: &TaskEnv, disk: bool) -> TaskEnv {
        let mut env = env.clone();
        if disk {
            env.state_backend = weir_core::checkpointing::StateBackendConfig {
                kind: weir_core::checkpointing::StateBackendKind::Disk,
                incremental: false,
                dir: None,
                cache_entries: 3,
                timers_on_heap: false,
            };
        }
        env
    }

    /// Whether `env` restores state.
    pub fn restores(env: &TaskEnv) -> bool {
        !env.restored_keyed.is_empty() || !env.restored_raw.is_empty()
    }

    /// Builds the operator under test for `env`, with its results going to the first output and
    /// late records to the second.
    pub type MakeFn =
        Box<dyn Fn(&TaskEnv, Box<dyn Output<Fired>>, Box<dyn Output<Event>>) -> Result<Box<dyn Output<Event>>>>;

    /// A borrowed [`MakeFn`].
    pub type Make<'a> =
        &'a dyn Fn(&TaskEnv, Box<dyn Output<Fired>>, Box<dyn Output<Event>>) -> Result<Box<dyn Output<Event>>>;

    /// Everything a run emitted, sorted: results and late records.
    pub type Emitted = (Vec<(Fired, Option<Timestamp>)>, Vec<(Event, Option<Timestamp>)>);

    struct Instance {
        op: Box<dyn Output<Event>>,
        task: TaskCheckpoint,
    }

    /// Subtasks of one run, sharing what they emit.
    struct Run {
        instances: Vec<Instance>,
        results: Seen<Fired>,
        late: Seen<Event>,
    }

    impl Run {
        fn start(make: Make<'_>, cps: Option<&Checkpoints>, parallelism: u32, old: &[OperatorSnapshot]) -> Result<Run> {
            let (results, late) = (Rc::new(RefCell::new(Vec::new())), Rc::new(RefCell::new(Vec::new())));
            let mut instances = Vec::new();
            for s in 0..parallelism {
                let task = cps.map(|c| c.task(s)).unwrap_or_default();
                let env = env(task.clone(), s, parallelism, old);
                let op = make(&env, Box::new(Collect(results.clone())), Box::new(Collect(late.clone())))?;
                instances.push(Instance { op, task });
            }
            Ok(Run { instances, results, late })
        }

        /// Feeds `steps`: each record to the subtask that owns its key, as the hash exchange does;
        /// watermarks to all.
        fn feed(&mut self, steps: &[Step]) -> Result<()> {
            let p = self.instances.len() as u32;
            for step in steps {
                match step {
                    Step::Records(events) => {
                        let mut per: Vec<Batch<Event>> = (0..p).map(|_| Batch::default()).collect();
                        for e in events {
                            let s = subtask_for_key_group(key_group(&e.0, MAX_PARALLELISM), MAX_PARALLELISM, p);
                            per[s as usize].push(*e, Some(e.1));
                        }
                        for (i, mut b) in per.into_iter().enumerate() {
                            if !b.is_empty() {
                                self.instances[i].op.push(&mut b)?;
                            }
                        }
                    }
                    Step::Watermark(wm) => {
                        for i in &mut self.instances {
                            i.op.control(Control::Watermark(*wm))?;
                        }
                    }
                }
            }
            Ok(())
        }

        fn emitted(&self) -> Emitted {
            let mut results = self.results.borrow().clone();
            let mut late = self.late.borrow().clone();
            results.sort();
            late.sort();
            (results, late)
        }
    }

    /// What an operator that never stopped emits for `steps`, then at the end of input.
    pub fn uninterrupted(make: Make<'_>, steps: &[Step]) -> Result<Emitted> {
        let mut run = Run::start(make, None, 1, &[])?;
        run.feed(steps)?;
        for i in &mut run.instances {
            i.op.finish()?;
        }
        Ok(run.emitted())
    }

    /// Runs `steps[..cut]` at parallelism `from`, takes checkpoint 1, drops the operators, restores
    /// fresh ones at parallelism `to` from the snapshots, runs the rest and ends the input. What
    /// the first run emitted before the barrier and the second after the restore must be what an
    /// operator that never stopped emits. Returns the snapshots.
    pub fn check_restore(
        make: Make<'_>,
        steps: &[Step],
        cut: usize,
        from: u32,
        to: u32,
    ) -> Result<Vec<OperatorSnapshot>> {
        let want = uninterrupted(make, steps)?;
        let cps = Checkpoints::new()?;
        let mut first = Run::start(make, Some(&cps), from, &[])?;
        first.feed(&steps[..cut])?;
        let mut snapshots = Vec::new();
        for i in &mut first.instances {
            i.op.control(Control::Barrier(1))?;
            snapshots.push(cps.taken(&i.task, 1)?);
        }
        let cps2 = Checkpoints::new()?;
        let mut second = Run::start(make, Some(&cps2), to, &snapshots)?;
        second.feed(&steps[cut..])?;
        for i in &mut second.instances {
            i.op.finish()?;
        }
        let (mut results, mut late) = first.emitted();
        let (r2, l2) = second.emitted();
        results.extend(r2);
        late.extend(l2);
        results.sort();
        late.sort();
        assert_eq!((results, late), want, "restored from {from} subtask(s) at {to}, cut after step {cut}");
        Ok(snapshots)
    }

    /// Checks that every keyed chunk of `snapshots` holds only entries `(key, E)` of keys in its
    /// key group (the one the hash exchange routes the key to); returns the number of entries.
    pub fn check_key_groups<E: serde::de::DeserializeOwned>(snapshots: &[OperatorSnapshot]) -> Result<usize> {
        let mut n = 0;
        for s in snapshots {
            for (kg, bytes) in &s.keyed {
                let entries = crate::checkpoint::restore_keyed::<u32, E>(&[(*kg, bytes.clone())])?;
                for (k, _) in &entries {
                    assert_eq!(key_group(k, MAX_PARALLELISM), *kg, "key {k} in the chunk of key group {kg}");
                }
                n += entries.len();
            }
        }
        Ok(n)
    }

    /// The watermarks the snapshots keep.
    pub fn watermarks(snapshots: &[OperatorSnapshot]) -> Result<Vec<Timestamp>> {
        let mut out = Vec::new();
        for s in snapshots {
            if let Some(l) = s.lists.get(super::WATERMARK_STATE) {
                for b in &l.entries {
                    out.push(bitcode::deserialize(b).map_err(|e| Error::internal(e.to_string()))?);
                }
            }
        }
        Ok(out)
    }

    /// Pseudo-random out-of-order events, with a watermark (bounded out-of-orderness `delay`)
    /// after every few records: `n` records of `keys` keys; some are late.
    pub fn steps(seed: u64, n: usize, keys: u32, delay: i64) -> Vec<Step> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut t, mut max_ts) = (0i64, i64::MIN);
        let mut steps = Vec::new();
        let mut batch = Vec::new();
        for i in 0..n {
            t += (next() % 20) as i64;
            let lag = (next() % 150) as i64;
            let e = ((next() % u64::from(keys)) as u32, (t - lag).max(0), i as i64 % 7 - 2);
            max_ts = max_ts.max(e.1);
            batch.push(e);
            if next() % 3 == 0 {
                steps.push(Step::Records(std::mem::take(&mut batch)));
                steps.push(Step::Watermark(max_ts - delay - 1));
            }
        }
        steps.push(Step::Records(batch));
        steps
    }
}
