//! The JobManager's view of the cluster: TaskManagers with their slots, and jobs with their
//! status, placement and outcome. One mutex guards it; no lock is held across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tracing::info;
use weir_core::config::{ClusterConfig, JobConfig, RestartStrategy};
use weir_core::protocol::ToTaskManager;
use weir_core::result::JobResult;
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};

use crate::lifecycle::Lifecycle;

pub use crate::schedule::schedule;

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
}

/// A registered TaskManager.
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
    /// Registration time (ms since the epoch).
    pub registered_ms: i64,
    /// Messages to it.
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
}

/// A submitted job.
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its graph.
    pub graph: JobGraph,
    /// Execution settings.
    pub config: JobConfig,
    /// Where it is in its lifecycle (its status, and what only that status has).
    pub lifecycle: Lifecycle,
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
    pub result: Option<JobResult>,
    /// Restarts so far.
    pub restarts: u32,
    /// Times of failures that led to restarts (ms).
    pub(crate) failures: Vec<i64>,
    pub(crate) last_delay_ms: u64,
    /// Whether a client fetched its final result (a per-job cluster waits for that).
    pub result_served: bool,
    /// Its cached files, in the blob store.
    pub cached_files: BTreeMap<String, weir_core::protocol::CachedFile>,
    /// Its checkpointing, when it takes checkpoints.
    pub checkpoints: Option<crate::checkpoints::Checkpointing>,
}

impl Job {
    /// Its status, as REST shows it.
    pub fn status(&self) -> JobStatus {
        self.lifecycle.status()
    }

    /// When it ended (ms), once it has.
    pub fn end_ms(&self) -> Option<i64> {
        self.lifecycle.end_ms()
    }

    /// Applies a lifecycle transition (one of [`Lifecycle`]'s); notes when the status changed.
    pub(crate) fn transition(&mut self, step: impl FnOnce(&mut Lifecycle) -> bool) -> bool {
        let changed = step(&mut self.lifecycle);
        if changed {
            self.modified_ms = now_ms();
        }
        changed
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

/// Everything the JobManager knows.
#[derive(Default)]
pub struct State {
    /// TaskManagers by id.
    pub taskmanagers: BTreeMap<String, TaskManager>,
    /// Jobs by id, in submission order of ids.
    pub jobs: BTreeMap<JobId, Job>,
    /// `cluster.evenly-spread-out-slots`.
    pub spread_out_slots: bool,
    /// TaskManagers the resource provider is starting, by id, with their slots and start time.
    pub pending: BTreeMap<String, (u32, Instant)>,
    /// TaskManagers the provider started so far (for their ids).
    pub provided_count: u64,
    /// High availability, where job ends and checkpoints are recorded.
    pub ha: Option<Arc<crate::ha::Ha>>,
}

/// The shared cluster state with its configuration.
pub struct Cluster {
    /// Settings.
    pub config: ClusterConfig,
    /// What happens when a job fails.
    pub restart: RestartStrategy,
    state: Mutex<State>,
    shutdown: Notify,
    /// Wakes the supervisor when a restart is due earlier than its next tick.
    pub(crate) wake: Notify,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Start time (ms).
    pub started_ms: i64,
    pub(crate) started: Instant,
    /// Artifacts by digest.
    pub blobs: crate::blob::BlobStore,
    /// Who starts TaskManagers when jobs need slots (none: standalone).
    pub provider: Option<Arc<dyn weir_deploy::ResourceProvider>>,
    /// Where TaskManagers reach this JobManager (`host:port`), for the ones the provider starts.
    pub rpc_address: String,
    /// A per-job cluster: one job, then it shuts down.
    pub per_job: bool,
    /// The job keys of the JobManager's configuration: every job's defaults.
    pub job_defaults: JobConfig,
    /// Where application outcomes are kept (`job-result-store.storage-path`).
    pub results: crate::results::JobResultStore,
    /// High availability (`high-availability.type`), if on.
    pub ha: Option<Arc<crate::ha::Ha>>,
    /// Where the jobs' checkpointing threads send what they ask of the cluster, and the receiving
    /// end until the checkpoint loop takes it.
    checkpoint_out: tokio::sync::mpsc::UnboundedSender<crate::checkpoints::Output>,
    checkpoint_in: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::checkpoints::Output>>>,
}

impl Cluster {
    /// An empty cluster.
    pub fn new(
        config: ClusterConfig,
        blobs: crate::blob::BlobStore,
        options: Options,
        rpc_address: String,
        ha: Option<Arc<crate::ha::Ha>>,
    ) -> Self {
        let spread_out_slots = config.spread_out_slots;
        let (checkpoint_out, checkpoint_in) = tokio::sync::mpsc::unbounded_channel();
        Cluster {
            checkpoint_out,
            checkpoint_in: Mutex::new(Some(checkpoint_in)),
            ha: ha.clone(),
            results: crate::results::JobResultStore::new(config.job_result_path()),
            restart: config.restart_strategy(),
            config,
            state: Mutex::new(State { spread_out_slots, ha, ..State::default() }),
            shutdown: Notify::new(),
            wake: Notify::new(),
            shutting_down: Default::default(),
            started_ms: now_ms(),
            started: Instant::now(),
            blobs,
            provider: options.provider,
            rpc_address,
            per_job: options.per_job,
            job_defaults: options.job_defaults,
        }
    }

    /// What the jobs' checkpointing threads ask of the cluster (once: the checkpoint loop takes it).
    pub fn take_checkpoint_outputs(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::checkpoints::Output>> {
        self.checkpoint_in.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Asks every part to stop (REST `DELETE /cluster`).
    pub fn request_shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        {
            let s = self.lock();
            for tm in s.taskmanagers.values() {
                let _ = tm.tx.send(ToTaskManager::Shutdown);
            }
        }
        self.shutdown.notify_waiters();
    }

    /// Resolves once shutdown was requested.
    pub async fn shutdown_requested(&self) {
        loop {
            let notified = self.shutdown.notified();
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Accepts a job graph; it is scheduled as soon as a TaskManager has the slots.
    pub fn submit(&self, graph: JobGraph, config: JobConfig) -> Result<JobId> {
        self.submit_as(graph, config, JobId::random())
    }

    /// Accepts a job graph under a given id (an application's jobs have ids derived from the
    /// application's, so that they are the same wherever it runs).
    pub fn submit_as(&self, graph: JobGraph, config: JobConfig, id: JobId) -> Result<JobId> {
        let config = self.job_defaults.under(&config);
        if graph.format_version != weir_core::graph::JOB_GRAPH_FORMAT_VERSION {
            return Err(Error::GraphMismatch {
                job: graph.job_name.clone(),
                message: format!(
                    "the job graph has format version {} but this JobManager reads version {}; submit it with the \
                     same weir version as the cluster",
                    graph.format_version,
                    weir_core::graph::JOB_GRAPH_FORMAT_VERSION
                ),
            });
        }
        graph.plan.validate()?;
        if graph.plan.fingerprint() != graph.fingerprint {
            return Err(Error::GraphMismatch {
                job: graph.job_name.clone(),
                message: "the job graph's fingerprint does not match its plan; it was altered after it was built"
                    .into(),
            });
        }
        if self.blobs.locate(&graph.artifact).is_none() {
            return Err(Error::InvalidJob(format!(
                "the job's artifact {} is not in this cluster's blob store: upload it first (POST \
                 /artifacts/upload?digest={}), as `run -t remote` does by itself",
                graph.artifact.0,
                graph.artifact.hex()
            )));
        }
        // Cached files are read here, where the job is submitted, and shipped from the blob store.
        let mut cached_files = BTreeMap::new();
        for (name, path) in &graph.plan.cached_files {
            let digest = self.blobs.store_file(std::path::Path::new(path)).map_err(|e| {
                // A file the job names that cannot be read here is the job's to fix; a blob store
                // that cannot take it (a full disk) keeps its own blame.
                if e.blame() == weir_core::Blame::User {
                    Error::InvalidJob(format!(
                        "the cached file '{name}' ({path}) is not reachable from the JobManager: {e}; cached files \
                         must be readable where the JobManager runs"
                    ))
                } else {
                    e
                }
            })?;
            cached_files.insert(name.clone(), weir_core::protocol::CachedFile { digest, path: None });
        }
        let checkpoints = match crate::checkpoints::JobCheckpoints::setup(&graph, &config, id)? {
            Some(mut cp) => {
                cp.recorded_first = self.ha.is_some();
                Some(crate::checkpoints::Checkpointing::start(id, cp, self.checkpoint_out.clone())?)
            }
            None => None,
        };
        let slots = graph.plan.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        let now = now_ms();
        let mut s = self.lock();
        if s.jobs.contains_key(&id) {
            // Ids are random, or derived and checked against the running jobs before submission.
            return Err(Error::internal(format!("job {id} was submitted to this cluster already")));
        }
        if self.per_job && !s.jobs.is_empty() {
            return Err(Error::Config(
                "this is a per-job cluster and it runs its one job already; submit to a session cluster, or \
                 run another per-job cluster (run -t per-job)"
                    .into(),
            ));
        }
        info!(job_id = %id, job = %graph.job_name, slots, "job submitted");
        s.jobs.insert(
            id,
            Job {
                id,
                graph,
                config,
                lifecycle: Lifecycle::default(),
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
                cached_files,
                checkpoints,
            },
        );
        schedule(&mut s);
        // A job still waiting may need TaskManagers from the provider: ask now, not at the next tick.
        if self.provider.is_some() {
            self.wake.notify_one();
        }
        Ok(id)
    }

    /// For a per-job cluster: whether it is time to go (its job ended and its result was fetched,
    /// or a minute passed without that; or no job came within a minute).
    pub(crate) fn per_job_done(&self) -> bool {
        let s = self.lock();
        match s.jobs.values().next() {
            None => self.started.elapsed() > Duration::from_secs(60),
            Some(j) => {
                j.status().is_terminal() && (j.result_served || j.end_ms().is_some_and(|end| now_ms() - end > 60_000))
            }
        }
    }

    /// A client fetched the result of a job: once it is terminal, a per-job cluster may go.
    pub fn result_served(&self, id: JobId) {
        let mut s = self.lock();
        if let Some(j) = s.jobs.get_mut(&id).filter(|j| j.status().is_terminal()) {
            j.result_served = true;
            if self.per_job {
                self.wake.notify_one();
            }
        }
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A waiting job was deployed: it runs.
pub(crate) fn deployed(s: &mut State, id: JobId) {
    if let Some(j) = s.jobs.get_mut(&id) {
        j.transition(Lifecycle::deploy);
    }
}
