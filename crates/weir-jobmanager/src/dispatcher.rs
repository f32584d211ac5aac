//! The Dispatcher: the JobManager's loop that owns the set of jobs. It accepts a submission
//! (checked and read on the submitter's thread by [`prepare`]) by starting the job's JobMaster,
//! publishes the jobs for REST and the clients to read, suspends every job when the leadership is
//! lost, and ends a per-job cluster once its job is done.
//!
//! It is fed by one inbox of [`DispatcherEvent`]s and does no storage or network I/O: a submission
//! reads the job's cached files and savepoint before it gets here, and each JobMaster runs on its
//! own task (`jobmaster.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::info;
use weir_core::config::JobConfig;
use weir_core::{Error, JobGraph, JobId, Result};

use crate::cluster::Cluster;
use crate::events::{DispatcherEvent, JobEvent, JobMasterHandle, Prepared, ResourceEvent};
use crate::jobmaster::JobMaster;
use crate::state::{Job, now_ms};

/// Where a submission comes from, which decides what the JobManager reads for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A program in this process (application mode, the mini cluster) or a job recovered from the
    /// job graph store: its cached files are read wherever they are.
    Program,
    /// A client through REST: its cached files only from `weir.cached-files.allowed-dirs`.
    Rest,
}

/// Checks a submitted job and reads what it needs (its cached files into the blob store, the
/// savepoint it starts from), on the caller's thread: storage may be slow, and no loop waits for
/// it.
pub(crate) fn prepare(
    cluster: &Cluster,
    graph: JobGraph,
    config: JobConfig,
    id: JobId,
    origin: Origin,
) -> Result<Prepared> {
    let config = cluster.job_defaults.under(&config);
    if graph.format_version != weir_core::graph::JOB_GRAPH_FORMAT_VERSION {
        return Err(Error::GraphMismatch {
            job: graph.job_name.clone(),
            message: format!(
                "the job graph has format version {} but this JobManager reads version {}; submit it with the same \
                 weir version as the cluster",
                graph.format_version,
                weir_core::graph::JOB_GRAPH_FORMAT_VERSION
            ),
        });
    }
    graph.plan.validate()?;
    if graph.plan.fingerprint() != graph.fingerprint {
        return Err(Error::GraphMismatch {
            job: graph.job_name.clone(),
            message: "the job graph's fingerprint does not match its plan; it was altered after it was built".into(),
        });
    }
    let slots = graph.plan.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
    if u64::from(slots) > cluster.config.max_slots {
        return Err(Error::InvalidJob(format!(
            "job '{}' needs {slots} slots (its highest parallelism) but this cluster offers at most {} \
             (slotmanager.number-of-slots.max); lower its parallelism",
            graph.job_name, cluster.config.max_slots
        )));
    }
    if cluster.blobs.locate(&graph.artifact).is_none() {
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
        // From REST, the file that was checked is the one read (its resolved path).
        let file = match origin {
            Origin::Rest => cluster.cached_file_allowed(name, path)?,
            Origin::Program => std::path::PathBuf::from(path),
        };
        let digest = cluster.blobs.store_file(&file).map_err(|e| {
            // A file the job names that cannot be read here is the job's to fix; a blob store
            // that cannot take it (a full disk) keeps its own blame.
            if e.blame() == weir_core::Blame::User {
                Error::InvalidJob(format!(
                    "the cached file '{name}' ({path}) is not reachable from the JobManager: {e}; cached files must \
                     be readable where the JobManager runs"
                ))
            } else {
                e
            }
        })?;
        cached_files.insert(name.clone(), weir_core::protocol::CachedFile { digest, path: None });
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let checkpoints = match crate::checkpoints::JobCheckpoints::setup(&graph, &config, id)? {
        Some(mut cp) => {
            cp.recorded_first = cluster.ha.is_some();
            let to_master = tx.clone();
            let out = move |o| {
                let _ = to_master.send(JobEvent::Checkpointing(o));
            };
            Some(Arc::new(crate::checkpoints::Checkpointing::start(id, cp, Box::new(out))?))
        }
        None => None,
    };
    let job = Job::new(id, graph, config, cached_files, checkpoints);
    Ok(Prepared { job, events: (tx, rx) })
}

impl Cluster {
    /// Refuses a cached file outside `weir.cached-files.allowed-dirs` (both sides resolved, so that
    /// neither `..` nor a symbolic link leads out).
    pub(crate) fn cached_file_allowed(&self, name: &str, path: &str) -> Result<std::path::PathBuf> {
        let resolved = std::fs::canonicalize(path).map_err(|e| {
            Error::InvalidJob(format!(
                "the cached file '{name}' ({path}) is not reachable from the JobManager: {e}; cached files must be \
                 readable where the JobManager runs"
            ))
        })?;
        let allowed = &self.config.cached_files_allowed;
        if allowed.iter().filter_map(|d| std::fs::canonicalize(d).ok()).any(|d| resolved.starts_with(&d)) {
            return Ok(resolved);
        }
        let listed = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
        Err(Error::InvalidJob(format!(
            "the cached file '{name}' ({path}) is outside the directories this cluster reads cached files from for \
             jobs submitted through REST (weir.cached-files.allowed-dirs: {listed}); ask its operator to allow its \
             directory, or run the job in application mode"
        )))
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
        self.submit_from(graph, config, id, Origin::Program)
    }

    /// As [`Cluster::submit_as`], for a submission from `origin`.
    pub fn submit_from(&self, graph: JobGraph, config: JobConfig, id: JobId, origin: Origin) -> Result<JobId> {
        let prepared = prepare(self, graph, config, id, origin)?;
        let (reply, answer) = oneshot::channel();
        self.dispatcher
            .send(DispatcherEvent::Submit { job: Box::new(prepared), reply })
            .map_err(|_| Error::Cancelled("the JobManager is shutting down".into()))?;
        answer.blocking_recv().map_err(|_| Error::Cancelled("the JobManager is shutting down".into()))??;
        Ok(id)
    }
}

/// The Dispatcher's loop: runs until shutdown.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    mut inbox: mpsc::UnboundedReceiver<DispatcherEvent>,
    published: watch::Sender<Arc<BTreeMap<JobId, JobMasterHandle>>>,
) {
    let mut jobs: BTreeMap<JobId, JobMasterHandle> = BTreeMap::new();
    // A per-job cluster looks now and then whether its job is done.
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = inbox.recv() => match event {
                Some(DispatcherEvent::Submit { job, reply }) => {
                    let answer = submit(&cluster, &mut jobs, *job);
                    if answer.is_ok() {
                        published.send_replace(Arc::new(jobs.clone()));
                    }
                    let _ = reply.send(answer);
                }
                Some(DispatcherEvent::SuspendAll { why, done }) => {
                    let mut suspended = Vec::with_capacity(jobs.len());
                    for handle in std::mem::take(&mut jobs).into_values() {
                        let (ack, acked) = oneshot::channel();
                        if handle.tx.send(JobEvent::Suspend { why: why.clone(), done: Some(ack) }).is_ok() {
                            suspended.push(acked);
                        }
                    }
                    published.send_replace(Arc::new(BTreeMap::new()));
                    let _ = cluster.resources.send(ResourceEvent::Reset);
                    // The JobMasters finish what they had queued first; the leader waits for that,
                    // not this loop. (A master that ended meanwhile drops its acknowledgement.)
                    tokio::spawn(async move {
                        for acked in suspended {
                            let _ = acked.await;
                        }
                        let _ = done.send(());
                    });
                }
                None => return,
            },
            _ = ticker.tick() => {
                if cluster.per_job {
                    if per_job_done(&cluster, &jobs) {
                        info!("the per-job cluster's job ended and its result was fetched (or nobody came for it): shutting down");
                        cluster.request_shutdown();
                        return;
                    }
                } else if retire_ended(&cluster.config, &mut jobs) {
                    published.send_replace(Arc::new(jobs.clone()));
                }
            }
            _ = cluster.shutdown_requested() => return,
        }
    }
}

/// Starts the JobMaster of a checked job.
fn submit(cluster: &Arc<Cluster>, jobs: &mut BTreeMap<JobId, JobMasterHandle>, prepared: Prepared) -> Result<()> {
    let Prepared { job, events: (tx, rx) } = prepared;
    let id = job.id;
    if jobs.contains_key(&id) {
        // Ids are random, or derived and checked against the running jobs before submission.
        return Err(Error::internal(format!("job {id} was submitted to this cluster already")));
    }
    if cluster.per_job && !jobs.is_empty() {
        return Err(Error::Config(
            "this is a per-job cluster and it runs its one job already; submit to a session cluster, or run another \
             per-job cluster (run -t per-job)"
                .into(),
        ));
    }
    info!(job_id = %id, job = %job.graph.job_name, slots = job.slots, "job submitted");
    let (view_tx, view) = watch::channel(Arc::new(job.view()));
    tokio::spawn(JobMaster::new(cluster.clone(), job, tx.clone(), view_tx).run(rx));
    jobs.insert(id, JobMasterHandle { tx, view });
    Ok(())
}

/// Lets ended jobs go that are past `jobstore.expiration-time`, and the longest ended beyond
/// `jobstore.max-capacity`; whether any went.
fn retire_ended(config: &weir_core::config::ClusterConfig, jobs: &mut BTreeMap<JobId, JobMasterHandle>) -> bool {
    let now = now_ms();
    let mut ended: Vec<(i64, JobId, bool)> =
        jobs.values().map(|h| h.view()).filter_map(|j| j.end_ms().map(|end| (end, j.id, j.result_served))).collect();
    ended.sort();
    let keep_ms = i64::try_from(config.jobstore_expiration_ms).unwrap_or(i64::MAX);
    let expired: Vec<JobId> =
        ended.iter().take_while(|(end, _, _)| now.saturating_sub(*end) > keep_ms).map(|(_, id, _)| *id).collect();
    // Beyond the capacity, the longest ended go first, but not one whose result a client has not
    // fetched yet within its first ten seconds (an attached client polls for it).
    let over = ended.len().saturating_sub(usize::try_from(config.jobstore_capacity).unwrap_or(usize::MAX));
    let crowded = ended
        .iter()
        .filter(|(end, _, served)| *served || now.saturating_sub(*end) > 10_000)
        .take(over)
        .map(|(_, id, _)| *id);
    let mut going: Vec<JobId> = expired.iter().copied().chain(crowded).collect();
    going.sort();
    going.dedup();
    for id in &going {
        if let Some(handle) = jobs.remove(id) {
            info!(job_id = %id, "an ended job leaves the JobManager (jobstore.max-capacity / jobstore.expiration-time)");
            let _ = handle.tx.send(JobEvent::Retire);
        }
    }
    !going.is_empty()
}

/// For a per-job cluster: whether it is time to go (its job ended and its result was fetched, or
/// a minute passed without that; or no job came within a minute).
fn per_job_done(cluster: &Cluster, jobs: &BTreeMap<JobId, JobMasterHandle>) -> bool {
    match jobs.values().next().map(|h| h.view()) {
        None => cluster.started.elapsed() > Duration::from_secs(60),
        Some(j) => {
            j.status().is_terminal() && (j.result_served || j.end_ms().is_some_and(|end| now_ms() - end > 60_000))
        }
    }
}
