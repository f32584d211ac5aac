//! The records the JobManager's loops own (a [`TaskManager`] in the ResourceManager, a [`Job`] in
//! its JobMaster) and what they publish for REST and the clients to read ([`JobView`]). No lock
//! guards them: each loop owns its own (see `dispatcher.rs`, `resources.rs`, `jobmaster.rs`), and
//! what others read of it is a snapshot it published after its last event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use weir_core::config::JobConfig;
use weir_core::protocol::ToTaskManager;
use weir_core::result::JobResult;
use weir_core::{JobGraph, JobId, JobStatus};

use crate::checkpoints::Checkpointing;

/// Milliseconds since the epoch.
pub use weir_core::clock::now_millis as now_ms;

/// How a JobManager runs, beyond its settings.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Who starts TaskManagers when jobs need slots (`None`: standalone, they come by themselves).
    pub provider: Option<Arc<dyn weir_deploy::ResourceProvider>>,
    /// A per-job cluster: it accepts one job and shuts down once that job ended and its result
    /// was fetched.
    pub per_job: bool,
    /// The job keys of the JobManager's own configuration: defaults for every job it runs, under
    /// the job's own settings (as Flink's cluster configuration is for its jobs).
    pub job_defaults: weir_core::config::JobConfig,
    /// How internal connections are secured (`None`: as the configuration says, `security.*`).
    pub security: Option<Arc<weir_security::Internal>>,
}

/// A registered TaskManager, as the ResourceManager keeps it.
#[derive(Clone, Debug)]
pub struct TaskManager {
    /// Its id.
    pub id: String,
    /// Its host.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Slots offered.
    pub slots: u32,
    /// Slots in use.
    pub used: u32,
    /// Jobs placed on it.
    pub jobs: BTreeSet<JobId>,
    /// When its last heartbeat arrived.
    pub last_heartbeat: Instant,
    /// Its own metrics, as its last heartbeat brought them.
    pub metrics: Arc<Vec<weir_core::metric::GroupSample>>,
    /// Registration time (ms since the epoch).
    pub registered_ms: i64,
    /// Messages to it (its connection ends once every sender is gone).
    pub tx: mpsc::UnboundedSender<ToTaskManager>,
    /// Which registration this is (a TaskManager that registers again gets a new session).
    pub session: u64,
    /// Where other TaskManagers send it records.
    pub data_address: String,
    /// Whether the resource provider started it (and stops it when idle).
    pub provided: bool,
    /// Since when no job has used it.
    pub idle_since: Option<Instant>,
}

impl TaskManager {
    /// A TaskManager registering now (registration `session`) with `slots` slots, none in use.
    pub(crate) fn new(
        id: String,
        (host, pid): (String, u32),
        slots: u32,
        tx: mpsc::UnboundedSender<ToTaskManager>,
        session: u64,
        data_address: String,
    ) -> TaskManager {
        let now = Instant::now();
        TaskManager {
            id,
            host,
            pid,
            slots,
            used: 0,
            jobs: Default::default(),
            last_heartbeat: now,
            metrics: Arc::default(),
            registered_ms: now_ms(),
            tx,
            session,
            data_address,
            provided: false,
            idle_since: Some(now),
        }
    }
}

/// The share of a job one TaskManager runs.
#[derive(Clone, Debug)]
pub struct Part {
    /// The TaskManager.
    pub taskmanager: String,
    /// The job's slots it runs (slot `i` runs subtask `i` of every operator).
    pub slots: Vec<u32>,
    /// Its status as last reported.
    pub status: JobStatus,
    /// Its result, once finished.
    pub result: Option<JobResult>,
    /// Its counters while it runs, as last reported.
    pub progress: Vec<weir_core::result::VertexCounts>,
    /// Its task and operator metrics, as last reported.
    pub metrics: Vec<weir_core::metric::GroupSample>,
}

/// A submitted job, as its JobMaster owns it.
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its graph.
    pub graph: Arc<JobGraph>,
    /// Execution settings.
    pub config: Arc<JobConfig>,
    /// Where it is in its lifecycle (its status, and what only that status has).
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// Slots it needs (its highest parallelism).
    pub slots: u32,
    /// Its parts in the current run: one per TaskManager it runs on (none while it waits).
    pub parts: Vec<Part>,
    /// Runs started so far (the current run's attempt number is one less).
    pub deployments: u32,
    /// Submission time (ms).
    pub submitted_ms: i64,
    /// When it reached its current status (ms).
    pub modified_ms: i64,
    /// Failures: (time ms, message), oldest first.
    pub exceptions: Vec<(i64, String)>,
    /// The result, once finished.
    pub result: Option<Arc<JobResult>>,
    /// Restarts so far.
    pub restarts: u32,
    /// Times of failures that led to restarts (ms).
    pub(crate) failures: Vec<i64>,
    pub(crate) last_delay_ms: u64,
    /// Whether a client fetched its final result (a per-job cluster waits for that).
    pub result_served: bool,
    /// Its cached files, in the blob store.
    pub cached_files: Arc<BTreeMap<String, weir_core::protocol::CachedFile>>,
    /// Its checkpointing, when it takes checkpoints.
    pub checkpoints: Option<Arc<Checkpointing>>,
}

impl Job {
    /// A job waiting for its first run; it needs as many slots as its highest parallelism.
    pub(crate) fn new(
        id: JobId,
        graph: JobGraph,
        config: JobConfig,
        cached_files: BTreeMap<String, weir_core::protocol::CachedFile>,
        checkpoints: Option<Arc<Checkpointing>>,
    ) -> Job {
        let slots = graph.plan.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        let now = now_ms();
        Job {
            id,
            graph: Arc::new(graph),
            config: Arc::new(config),
            lifecycle: crate::lifecycle::Lifecycle::default(),
            slots,
            parts: Vec::new(),
            deployments: 0,
            submitted_ms: now,
            modified_ms: now,
            exceptions: Vec::new(),
            result: None,
            restarts: 0,
            failures: Vec::new(),
            last_delay_ms: 0,
            result_served: false,
            cached_files: Arc::new(cached_files),
            checkpoints,
        }
    }

    /// Its status.
    pub fn status(&self) -> JobStatus {
        self.lifecycle.status()
    }

    /// Applies a lifecycle transition (one of [`crate::lifecycle::Lifecycle`]'s); notes when the
    /// status changed.
    pub(crate) fn transition(&mut self, step: impl FnOnce(&mut crate::lifecycle::Lifecycle) -> bool) -> bool {
        let changed = step(&mut self.lifecycle);
        if changed {
            self.modified_ms = now_ms();
        }
        changed
    }

    /// The TaskManagers of its current run.
    pub(crate) fn taskmanagers_now(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.taskmanager.clone()).collect()
    }

    /// Records a failure, keeping the latest `keep` (`web.exception-history-size`).
    pub(crate) fn note_failure(&mut self, at_ms: i64, message: String, keep: usize) {
        self.exceptions.push((at_ms, message));
        let over = self.exceptions.len().saturating_sub(keep.max(1));
        self.exceptions.drain(..over);
    }

    /// What others may read of it now.
    pub(crate) fn view(&self) -> JobView {
        JobView {
            id: self.id,
            graph: self.graph.clone(),
            config: self.config.clone(),
            status: self.status(),
            end_ms: self.lifecycle.end_ms(),
            slots: self.slots,
            parts: self.parts.clone(),
            deployments: self.deployments,
            submitted_ms: self.submitted_ms,
            modified_ms: self.modified_ms,
            exceptions: self.exceptions.clone(),
            result: self.result.clone(),
            restarts: self.restarts,
            result_served: self.result_served,
            checkpoints: self.checkpoints.clone(),
        }
    }
}

/// A job as its JobMaster last published it: what REST, the clients and the other loops read.
#[derive(Clone, Debug)]
pub struct JobView {
    /// Its id.
    pub id: JobId,
    /// Its graph.
    pub graph: Arc<JobGraph>,
    /// Execution settings.
    pub config: Arc<JobConfig>,
    /// Its status.
    pub status: JobStatus,
    /// When it ended (ms), once it has.
    pub end_ms: Option<i64>,
    /// Slots it needs.
    pub slots: u32,
    /// Its parts in the current run.
    pub parts: Vec<Part>,
    /// Runs started so far.
    pub deployments: u32,
    /// Submission time (ms).
    pub submitted_ms: i64,
    /// When it reached its current status (ms).
    pub modified_ms: i64,
    /// Failures: (time ms, message), oldest first.
    pub exceptions: Vec<(i64, String)>,
    /// The result, once finished.
    pub result: Option<Arc<JobResult>>,
    /// Restarts so far.
    pub restarts: u32,
    /// Whether a client fetched its final result.
    pub result_served: bool,
    /// Its checkpointing (statistics and savepoints are read, savepoints asked for, through it).
    pub checkpoints: Option<Arc<Checkpointing>>,
}

impl JobView {
    /// Its status, as REST shows it.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// When it ended (ms), once it has.
    pub fn end_ms(&self) -> Option<i64> {
        self.end_ms
    }

    /// Record counters per operator: the result's once finished, else what its parts reported
    /// last, added up.
    pub fn counts(&self) -> Vec<weir_core::result::VertexCounts> {
        if let Some(r) = &self.result {
            return r.counts.clone();
        }
        let mut all: Vec<weir_core::result::VertexCounts> = self
            .graph
            .plan
            .vertices
            .iter()
            .map(|v| weir_core::result::VertexCounts { name: v.name.clone(), ..Default::default() })
            .collect();
        for part in &self.parts {
            for (sum, c) in all.iter_mut().zip(&part.progress) {
                sum.records_in += c.records_in;
                sum.records_out += c.records_out;
            }
        }
        all
    }

    /// The TaskManagers of its current run.
    pub fn taskmanagers(&self) -> Vec<String> {
        self.parts.iter().map(|p| p.taskmanager.clone()).collect()
    }
}
