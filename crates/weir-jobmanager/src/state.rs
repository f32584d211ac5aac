//! What the JobManager's parts share: its settings and stores ([`Cluster`]), the records each
//! loop owns (a [`TaskManager`] in the ResourceManager, a [`Job`] in its JobMaster) and what they
//! publish for REST and the clients to read ([`JobView`], the TaskManager map). No lock guards the
//! cluster's state: each loop owns its own (see `dispatcher.rs`, `resources.rs`, `jobmaster.rs`),
//! and what others read of it is a snapshot it published after its last event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use weir_core::config::{ClusterConfig, JobConfig, RestartStrategy};
use weir_core::protocol::ToTaskManager;
use weir_core::result::JobResult;
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};

use crate::checkpoints::Checkpointing;
use crate::dispatcher::{DispatcherEvent, JobMasterHandle};
use crate::jobmaster::JobEvent;
use crate::resources::ResourceEvent;

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

/// The JobManager as its parts and clients see it: settings, stores, and the inboxes and
/// published views of its loops (the Dispatcher, the ResourceManager, a JobMaster per job).
pub struct Cluster {
    /// Settings.
    pub config: ClusterConfig,
    /// What happens when a job fails.
    pub restart: RestartStrategy,
    shutdown: Notify,
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
    /// The Dispatcher's inbox.
    pub(crate) dispatcher: mpsc::UnboundedSender<DispatcherEvent>,
    /// The ResourceManager's inbox.
    pub(crate) resources: mpsc::UnboundedSender<ResourceEvent>,
    /// The jobs, as the Dispatcher last published them.
    jobs: watch::Receiver<Arc<BTreeMap<JobId, JobMasterHandle>>>,
    /// The TaskManagers, as the ResourceManager last published them.
    taskmanagers: watch::Receiver<Arc<BTreeMap<String, TaskManager>>>,
}

/// The receiving ends of the loops' inboxes and the sending ends of their views, until
/// [`crate::JobManager::start`] hands them to the loops.
pub(crate) struct Loops {
    pub(crate) dispatcher: mpsc::UnboundedReceiver<DispatcherEvent>,
    pub(crate) jobs: watch::Sender<Arc<BTreeMap<JobId, JobMasterHandle>>>,
    pub(crate) resources: mpsc::UnboundedReceiver<ResourceEvent>,
    pub(crate) taskmanagers: watch::Sender<Arc<BTreeMap<String, TaskManager>>>,
}

impl Cluster {
    /// The cluster, and the loops' ends that [`crate::JobManager::start`] runs them with.
    pub(crate) fn new(
        config: ClusterConfig,
        blobs: crate::blob::BlobStore,
        options: Options,
        rpc_address: String,
        ha: Option<Arc<crate::ha::Ha>>,
    ) -> (Self, Loops) {
        let (dispatcher, dispatcher_rx) = mpsc::unbounded_channel();
        let (resources, resources_rx) = mpsc::unbounded_channel();
        let (jobs_tx, jobs) = watch::channel(Arc::new(BTreeMap::new()));
        let (tms_tx, taskmanagers) = watch::channel(Arc::new(BTreeMap::new()));
        let cluster = Cluster {
            ha,
            results: crate::results::JobResultStore::new(config.job_result_path()),
            restart: config.restart_strategy(),
            config,
            shutdown: Notify::new(),
            shutting_down: Default::default(),
            started_ms: now_ms(),
            started: Instant::now(),
            blobs,
            provider: options.provider,
            rpc_address,
            per_job: options.per_job,
            job_defaults: options.job_defaults,
            dispatcher,
            resources,
            jobs,
            taskmanagers,
        };
        let loops = Loops { dispatcher: dispatcher_rx, jobs: jobs_tx, resources: resources_rx, taskmanagers: tms_tx };
        (cluster, loops)
    }

    /// Every job, as its JobMaster last published it, in id order.
    pub fn jobs(&self) -> Vec<Arc<JobView>> {
        let handles = self.jobs.borrow().clone();
        handles.values().map(|h| h.view()).collect()
    }

    /// Job `id`, as its JobMaster last published it.
    pub fn job(&self, id: JobId) -> Option<Arc<JobView>> {
        self.jobs.borrow().get(&id).map(|h| h.view())
    }

    /// Sends `event` to job `id`'s JobMaster; `false` for a job this cluster does not know.
    pub(crate) fn to_job(&self, id: JobId, event: JobEvent) -> bool {
        let tx = self.jobs.borrow().get(&id).map(|h| h.tx.clone());
        tx.is_some_and(|tx| tx.send(event).is_ok())
    }

    /// Every registered TaskManager, as the ResourceManager last published them.
    pub fn taskmanagers(&self) -> Arc<BTreeMap<String, TaskManager>> {
        self.taskmanagers.borrow().clone()
    }

    /// Asks every part to stop (REST `DELETE /cluster`).
    pub fn request_shutdown(&self) {
        self.shutting_down.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.resources.send(ResourceEvent::Shutdown);
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

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Accepts a job graph; it is scheduled as soon as a TaskManager has the slots. Reads files
    /// and storage (see [`Cluster::submit_as`]): not for an async thread.
    pub fn submit(&self, graph: JobGraph, config: JobConfig) -> Result<JobId> {
        self.submit_as(graph, config, JobId::random())
    }

    /// Accepts a job graph under a given id (an application's jobs have ids derived from the
    /// application's, so that they are the same wherever it runs). The job is checked and its
    /// cached files and savepoint read here, on the caller's thread; the Dispatcher then starts
    /// its JobMaster.
    pub fn submit_as(&self, graph: JobGraph, config: JobConfig, id: JobId) -> Result<JobId> {
        let prepared = crate::dispatcher::prepare(self, graph, config, id)?;
        let (reply, answer) = oneshot::channel();
        self.dispatcher
            .send(DispatcherEvent::Submit { job: Box::new(prepared), reply })
            .map_err(|_| Error::Cancelled("the JobManager is shutting down".into()))?;
        answer.blocking_recv().map_err(|_| Error::Cancelled("the JobManager is shutting down".into()))??;
        Ok(id)
    }

    /// Cancels a job: waiting jobs at once, running ones through their TaskManagers.
    pub fn cancel(&self, id: JobId) -> Result<()> {
        if self.to_job(id, JobEvent::Cancel) {
            Ok(())
        } else {
            Err(Error::Config(format!("job {id} is not known to this cluster; see `weir list`")))
        }
    }

    /// A client fetched the result of a job: once it is terminal, a per-job cluster may go.
    pub fn result_served(&self, id: JobId) {
        self.to_job(id, JobEvent::ResultServed);
    }
}

/// What the loops' unit tests share: a cluster whose loops are not running, so a test drives one
/// loop's handlers itself and reads what it sent the others.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// A cluster with `config`, its blob store in `dir`; the loops' ends are returned unstarted.
    pub(crate) fn cluster(mut config: ClusterConfig, dir: &std::path::Path) -> (Arc<Cluster>, Loops) {
        config.blob_dir = Some(dir.display().to_string());
        let blobs = crate::blob::BlobStore::open(&config, None).expect("a blob store in a fresh directory");
        let (cluster, loops) = Cluster::new(config, blobs, Options::default(), "127.0.0.1:1".into(), None);
        (Arc::new(cluster), loops)
    }

    /// A TaskManager record with `slots`, and the receiving end of its connection.
    pub(crate) fn taskmanager(id: &str, slots: u32) -> (TaskManager, mpsc::UnboundedReceiver<ToTaskManager>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let tm = TaskManager {
            id: id.into(),
            host: "localhost".into(),
            pid: 1,
            slots,
            used: 0,
            jobs: Default::default(),
            last_heartbeat: Instant::now(),
            registered_ms: now_ms(),
            tx,
            session: 1,
            data_address: format!("{id}:1"),
            provided: false,
            idle_since: Some(Instant::now()),
        };
        (tm, rx)
    }
}
