//! The metrics of a part's tasks and operators, in Flink's scopes and with Flink's names.
//!
//! A part registers one group per job (`taskmanager.job`: `host`, `tm_id`, `job_id`,
//! `job_name`), one per task (`taskmanager.job.task`: `task_id`, `task_name`,
//! `task_attempt_id`, `task_attempt_num`, `subtask_index`) and one per operator instance
//! (`taskmanager.job.task.operator`: `operator_id`, `operator_name`). Counting costs one relaxed
//! atomic add per batch on a counter only its task's thread writes; rates and time shares are
//! computed by the metric registry's thread, not on the task's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_core::{JobId, VertexId};
use weir_metrics::{Counter, MetricGroup, TimeShare};

pub use weir_core::result::VertexCounts;

/// The watermark of an operator that has seen none: Flink's `Long.MIN_VALUE`.
pub const NO_WATERMARK: i64 = i64::MIN;

/// The metrics of one operator instance (one operator in one subtask).
pub struct OperatorMetrics {
    records_in: Counter,
    records_out: Counter,
    input_watermark: Arc<AtomicI64>,
    output_watermark: Arc<AtomicI64>,
    group: MetricGroup,
}

impl std::fmt::Debug for OperatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorMetrics").field("in", &self.records_in()).field("out", &self.records_out()).finish()
    }
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        OperatorMetrics::in_group(MetricGroup::detached("operator"))
    }
}

impl OperatorMetrics {
    /// Counters registered nowhere (for operators built outside a job, as in unit tests).
    pub fn detached() -> Arc<OperatorMetrics> {
        Arc::new(OperatorMetrics::default())
    }

    fn in_group(group: MetricGroup) -> OperatorMetrics {
        let m = OperatorMetrics {
            records_in: group.counter("numRecordsIn"),
            records_out: group.counter("numRecordsOut"),
            input_watermark: Arc::new(AtomicI64::new(NO_WATERMARK)),
            output_watermark: Arc::new(AtomicI64::new(NO_WATERMARK)),
            group,
        };
        m.group.meter("numRecordsInPerSecond", &m.records_in);
        m.group.meter("numRecordsOutPerSecond", &m.records_out);
        let w = m.input_watermark.clone();
        m.group.gauge("currentInputWatermark", move || w.load(Ordering::Relaxed) as f64);
        let w = m.output_watermark.clone();
        m.group.gauge("currentOutputWatermark", move || w.load(Ordering::Relaxed) as f64);
        m
    }

    /// Adds to `numRecordsIn`.
    #[inline]
    pub fn add_in(&self, n: usize) {
        self.records_in.add(n as u64);
    }
    /// Adds to `numRecordsOut`.
    #[inline]
    pub fn add_out(&self, n: usize) {
        self.records_out.add(n as u64);
    }
    /// `numRecordsIn`.
    pub fn records_in(&self) -> u64 {
        self.records_in.get()
    }
    /// `numRecordsOut`.
    pub fn records_out(&self) -> u64 {
        self.records_out.get()
    }
    /// Sets `currentInputWatermark`.
    #[inline]
    pub fn input_watermark(&self, ts: i64) {
        self.input_watermark.store(ts, Ordering::Relaxed);
    }
    /// Sets `currentOutputWatermark`.
    #[inline]
    pub fn output_watermark(&self, ts: i64) {
        self.output_watermark.store(ts, Ordering::Relaxed);
    }
    /// The operator instance's group, where user functions register their own metrics.
    pub fn group(&self) -> &MetricGroup {
        &self.group
    }
}

/// The input and output figures of one task (a chain in one subtask).
pub struct TaskIo {
    /// Records the task sent to other tasks (`numRecordsOut`).
    pub records_out: Counter,
    /// Bytes it sent to other processes (`numBytesOut`).
    pub bytes_out: Counter,
    /// Bytes that arrived from other processes, per channel (summed as `numBytesIn`).
    bytes_in: Arc<Mutex<Vec<Counter>>>,
    /// Time spent waiting for input (`idleTimeMsPerSecond`).
    pub idle: Arc<TimeShare>,
    /// Time spent waiting for room downstream (`backPressuredTimeMsPerSecond`).
    pub back_pressured: Arc<TimeShare>,
    _group: Option<MetricGroup>,
}

impl Default for TaskIo {
    fn default() -> Self {
        TaskIo {
            records_out: Counter::new(),
            bytes_out: Counter::new(),
            bytes_in: Arc::default(),
            idle: Arc::new(TimeShare::new()),
            back_pressured: Arc::new(TimeShare::new()),
            _group: None,
        }
    }
}

impl TaskIo {
    /// Figures registered nowhere (for tasks built outside a job, as in unit tests).
    pub fn detached() -> Arc<TaskIo> {
        Arc::new(TaskIo::default())
    }

    fn in_group(group: MetricGroup, records_in: &Counter) -> TaskIo {
        let io = TaskIo { _group: Some(group.clone()), ..TaskIo::default() };
        group.add_counter("numRecordsIn", records_in);
        group.add_counter("numRecordsOut", &io.records_out);
        group.meter("numRecordsInPerSecond", records_in);
        group.meter("numRecordsOutPerSecond", &io.records_out);
        let sum = |channels: &Arc<Mutex<Vec<Counter>>>| {
            let channels = channels.clone();
            move || channels.lock().map(|c| c.iter().map(Counter::get).sum::<u64>()).unwrap_or(0)
        };
        let bytes_in = sum(&io.bytes_in);
        group.gauge("numBytesIn", move || bytes_in() as f64);
        group.meter_fn("numBytesInPerSecond", sum(&io.bytes_in));
        group.add_counter("numBytesOut", &io.bytes_out);
        group.meter("numBytesOutPerSecond", &io.bytes_out);
        group.time_share("idleTimeMsPerSecond", &io.idle);
        group.time_share("backPressuredTimeMsPerSecond", &io.back_pressured);
        let (idle, back) = (io.idle.clone(), io.back_pressured.clone());
        group.gauge("busyTimeMsPerSecond", move || {
            (1000.0 - idle.ms_per_second() - back.ms_per_second()).clamp(0.0, 1000.0)
        });
        let back = io.back_pressured.clone();
        group.gauge("isBackPressured", move || f64::from(u8::from(back.ms_per_second() > 0.0)));
        io
    }

    /// Counts the bytes of an inbound channel from another process as the task's.
    pub fn add_inbound(&self, channel_bytes: Counter) {
        if let Ok(mut c) = self.bytes_in.lock() {
            c.push(channel_bytes);
        }
    }

    /// Adds the time since `since` to the task's back-pressured time.
    #[inline]
    pub fn back_pressured_since(&self, since: Instant) {
        self.back_pressured.add(since.elapsed());
    }

    /// Adds `d` to the task's idle time.
    #[inline]
    pub fn idle_for(&self, d: Duration) {
        self.idle.add(d);
    }
}

/// Who a part is, for its metrics' variables.
#[derive(Clone, Debug)]
pub struct PartIdentity {
    /// The TaskManager's id (`tm_id`).
    pub taskmanager: String,
    /// Which run of the job (`task_attempt_num`).
    pub attempt: u32,
}

/// Where a task or operator instance runs: its (head) vertex and subtask.
type At = (VertexId, u32);

/// The metrics of one part of a job.
pub struct PartMetrics {
    job_id: JobId,
    attempt: u32,
    names: Vec<String>,
    job: Mutex<Option<MetricGroup>>,
    tasks: Mutex<HashMap<At, (MetricGroup, Arc<TaskIo>)>>,
    operators: Mutex<Vec<(At, Arc<OperatorMetrics>)>>,
    /// The counts when the part ended (its groups are gone then).
    ended: Mutex<Option<Vec<VertexCounts>>>,
}

impl PartMetrics {
    /// The part's job group, registered in the process's registry.
    pub fn new(job_id: JobId, job_name: &str, names: Vec<String>, who: &PartIdentity) -> PartMetrics {
        let vars = vec![("host".to_string(), weir_metrics::hostname()), ("tm_id".to_string(), who.taskmanager.clone())];
        let job = weir_metrics::global().group("taskmanager", vars).child(
            "job",
            vec![("job_id".to_string(), job_id.to_string()), ("job_name".to_string(), job_name.to_string())],
        );
        PartMetrics {
            job_id,
            attempt: who.attempt,
            names,
            job: Mutex::new(Some(job)),
            tasks: Mutex::default(),
            operators: Mutex::default(),
            ended: Mutex::default(),
        }
    }

    /// The figures of task `head` (a chain named `chain`) in `subtask`, made on first use.
    pub fn task(&self, head: VertexId, chain: &str, subtask: u32) -> Arc<TaskIo> {
        let Ok(mut tasks) = self.tasks.lock() else { return TaskIo::detached() };
        if let Some((_, io)) = tasks.get(&(head, subtask)) {
            return io.clone();
        }
        let Some(job) = self.job.lock().ok().and_then(|j| j.clone()) else { return TaskIo::detached() };
        let group = job.child(
            "task",
            vec![
                ("task_id".into(), head.0.to_string()),
                ("task_name".into(), chain.to_string()),
                ("task_attempt_id".into(), format!("{}-{}-{}-{}", self.job_id, head.0, subtask, self.attempt)),
                ("task_attempt_num".into(), self.attempt.to_string()),
                ("subtask_index".into(), subtask.to_string()),
            ],
        );
        // The task's records in are its head operator's.
        let head_in = self.operator_in(&group, head, subtask);
        let io = Arc::new(TaskIo::in_group(group.clone(), &head_in.records_in));
        tasks.insert((head, subtask), (group, io.clone()));
        io
    }

    fn operator_in(&self, task: &MetricGroup, v: VertexId, subtask: u32) -> Arc<OperatorMetrics> {
        let Ok(mut ops) = self.operators.lock() else { return OperatorMetrics::detached() };
        if let Some((_, m)) = ops.iter().find(|(at, _)| *at == (v, subtask)) {
            return m.clone();
        }
        let name = self.names.get(v.0 as usize).cloned().unwrap_or_default();
        let group =
            task.child("operator", vec![("operator_id".into(), v.0.to_string()), ("operator_name".into(), name)]);
        let m = Arc::new(OperatorMetrics::in_group(group));
        ops.push(((v, subtask), m.clone()));
        m
    }

    /// The metrics of operator `v` in `subtask`, of the task `head` leads.
    pub fn operator(&self, head: VertexId, chain: &str, v: VertexId, subtask: u32) -> Arc<OperatorMetrics> {
        self.task(head, chain, subtask);
        let group = self.tasks.lock().ok().and_then(|t| t.get(&(head, subtask)).map(|(g, _)| g.clone()));
        match group {
            Some(g) => self.operator_in(&g, v, subtask),
            None => OperatorMetrics::detached(),
        }
    }

    /// Records in and out per operator, summed over this part's subtasks.
    pub fn counts(&self) -> Vec<VertexCounts> {
        if let Some(ended) = self.ended.lock().ok().and_then(|e| e.clone()) {
            return ended;
        }
        let mut counts: Vec<VertexCounts> =
            self.names.iter().map(|n| VertexCounts { name: n.clone(), ..Default::default() }).collect();
        if let Ok(ops) = self.operators.lock() {
            for ((v, _), m) in ops.iter() {
                if let Some(c) = counts.get_mut(v.0 as usize) {
                    c.records_in += m.records_in();
                    c.records_out += m.records_out();
                }
            }
        }
        counts
    }

    /// Every metric of the part now: its job's, tasks' and operators' groups (and the groups
    /// user functions added under them).
    pub fn samples(&self) -> Vec<weir_metrics::GroupSample> {
        let mut out = Vec::new();
        if let Some(job) = self.job.lock().ok().and_then(|j| j.clone()) {
            out.push(job.sample());
        }
        if let Ok(tasks) = self.tasks.lock() {
            out.extend(tasks.values().map(|(g, _)| g.sample()));
        }
        if let Ok(ops) = self.operators.lock() {
            out.extend(ops.iter().flat_map(|(_, m)| m.group.sample_all()));
        }
        out
    }

    /// The part ended: its counts are kept, its groups leave the registry.
    pub fn close(&self) {
        let counts = self.counts();
        if let Ok(mut e) = self.ended.lock() {
            *e = Some(counts);
        }
        if let Ok(mut ops) = self.operators.lock() {
            ops.clear();
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.clear();
        }
        if let Ok(mut job) = self.job.lock() {
            job.take();
        }
    }
}
