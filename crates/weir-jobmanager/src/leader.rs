//! The JobManager as a leader under high availability: it campaigns through the coordination
//! service ([`lead`]), recovers every job of the job graph store once elected, writes what
//! happens ([`crate::ha::Event`]) into the stores under its epoch, and suspends its jobs when the
//! leadership is lost. Durable submission ([`Cluster::submit_durably`]) keeps a job in the store
//! before it runs.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_core::config::JobConfig;
use weir_core::result::JobResult;
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};

use crate::checkpoints::Input;
use crate::cluster::Cluster;
use crate::dispatcher::Origin;
use crate::events::DispatcherEvent;
use crate::ha::{Event, Ha, ID_BLOCK, STORED_JOB_FORMAT, StoredJob, StoredResult};
use crate::state::now_ms;

impl Cluster {
    /// Accepts a job; with high availability it is first kept in the job graph store (and its
    /// artifact in the HA storage directory), so that a new leader recovers it.
    pub async fn submit_durably(self: &Arc<Self>, graph: JobGraph, config: JobConfig) -> Result<JobId> {
        self.submit_durably_as(graph, config, JobId::random(), Origin::Rest).await
    }

    /// [`Cluster::submit_as`] on a thread of its own: a submission reads files and storage (it
    /// hashes the job's cached files into the blob store, and reads a savepoint's metadata to
    /// restore from), which must not hold up the threads that answer REST and heartbeats, however
    /// slow the storage is.
    pub async fn submit_off_loop(
        self: &Arc<Self>,
        graph: JobGraph,
        config: JobConfig,
        id: JobId,
        origin: Origin,
    ) -> Result<JobId> {
        let cluster = self.clone();
        tokio::task::spawn_blocking(move || cluster.submit_from(graph, config, id, origin))
            .await
            .map_err(|e| Error::internal(format!("a job submission did not finish: {e}")))?
    }

    /// As [`Cluster::submit_durably`], with id `id`.
    pub async fn submit_durably_as(
        self: &Arc<Self>,
        graph: JobGraph,
        config: JobConfig,
        id: JobId,
        origin: Origin,
    ) -> Result<JobId> {
        let Some(ha) = self.ha.clone() else { return self.submit_off_loop(graph, config, id, origin).await };
        // Not while it recovers: a recovered job and a new submission must not meet.
        let epoch = match (ha.ready(), ha.leading()) {
            (Some(epoch), _) => epoch,
            (None, Some(_)) => {
                return Err(Error::NotLeader(format!(
                    "this JobManager ({}) leads but is still recovering its jobs; try again shortly",
                    ha.me.id
                )));
            }
            (None, None) => return Err(ha.not_leading()),
        };
        let key = id.to_string();
        let hex = graph.artifact.hex().to_string();
        let kept = ha.kept_blobs.lock().unwrap_or_else(|p| p.into_inner()).contains(&hex);
        if let Some(path) = self.blobs.locate(&graph.artifact).filter(|_| !kept) {
            ha.stores.put_blob(&hex, path).await?;
            ha.kept_blobs.lock().unwrap_or_else(|p| p.into_inner()).insert(hex);
        }
        // A REST client's cached files are checked before the job is kept: a job the store keeps
        // is recovered by the next leader.
        if origin == Origin::Rest && !graph.plan.cached_files.is_empty() {
            let (cluster, files) = (self.clone(), graph.plan.cached_files.clone());
            tokio::task::spawn_blocking(move || {
                files.iter().try_for_each(|(name, path)| cluster.cached_file_allowed(name, path).map(|_| ()))
            })
            .await
            .map_err(|e| Error::internal(format!("a cached file check did not finish: {e}")))??;
        }
        let stored = StoredJob {
            format: STORED_JOB_FORMAT,
            graph: graph.clone(),
            config: config.clone(),
            submitted_ms: now_ms(),
            through_rest: origin == Origin::Rest,
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| Error::internal(format!("cannot encode a job: {e}")))?;
        ha.stores.put_job(epoch, &key, bytes).await?;
        // From here the submission runs to its end in a task of its own, even if the request that
        // asked for it goes away (a client that timed out): a job in the store is either running
        // with its ids reserved, or removed again.
        let cluster = self.clone();
        let finish = tokio::spawn(async move {
            match cluster.submit_off_loop(graph, config, id, origin).await {
                Ok(id) => {
                    reserve_ids(&cluster, &ha, epoch, id, 1).await;
                    Ok(id)
                }
                Err(e) => {
                    if let Err(undo) = ha.stores.remove_job(epoch, &key).await {
                        warn!(job_id = %id, error = %undo, "cannot remove a refused job from the job graph store");
                    }
                    Err(e)
                }
            }
        });
        finish.await.map_err(|e| Error::internal(format!("a durable job submission did not finish: {e}")))?
    }

    /// Leadership was lost: every job is suspended (cancelled here, kept in the stores), every
    /// TaskManager let go (they find the next leader). Returns once the Dispatcher forgot the jobs.
    async fn suspend_all(&self, why: &str) {
        let (done, suspended) = tokio::sync::oneshot::channel();
        let event = DispatcherEvent::SuspendAll { why: why.to_string(), done };
        if self.dispatcher.send(event).is_ok() {
            let _ = suspended.await;
        }
    }
}

/// Reserves the next block of checkpoint ids for `job` (at least `at_least`) and hands it to its
/// coordinator.
async fn reserve_ids(cluster: &Cluster, ha: &Ha, epoch: u64, job: JobId, at_least: u64) {
    let Some(cp) = cluster.job(job).and_then(|j| j.checkpoints.clone()) else { return };
    // Until ids are reserved, no checkpoint starts.
    cp.send(Input::HoldIds);
    match ha.stores.reserve_checkpoint_ids(epoch, &job.to_string(), at_least, ID_BLOCK).await {
        Ok(ids) => cp.send(Input::AllowIds(ids)),
        Err(e) => warn!(job_id = %job, error = %e, "cannot reserve checkpoint ids; checkpoints wait"),
    }
}

/// Campaigns, leads, and campaigns again after a loss, until shutdown.
pub async fn lead(cluster: Arc<Cluster>) {
    let Some(ha) = cluster.ha.clone() else { return };
    let Some(mut events) = ha.events_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
    let services = ha.stores.services().clone();
    loop {
        let leadership = tokio::select! {
            l = services.campaign(ha.me.clone()) => l,
            _ = cluster.shutdown_requested() => return,
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "cannot campaign for leadership; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let epoch = leadership.epoch;
        // Events of an earlier leadership are void: its jobs were suspended.
        while events.try_recv().is_ok() {}
        *ha.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(leadership.clone());
        ha.elected_ms.store(now_ms(), Ordering::SeqCst);
        info!(epoch, id = %ha.me.id, "leading: recovering jobs");
        let started = Instant::now();
        // Until every stored job is back, nothing is submitted here: tried again while it leads.
        let mut recovering = true;
        while recovering && !leadership.is_lost() && !cluster.is_shutting_down() {
            match recover(&cluster, &ha, epoch).await {
                Ok(n) => {
                    info!(epoch, jobs = n, ms = started.elapsed().as_millis() as u64, "jobs recovered");
                    ha.recovered.send_replace(epoch);
                    recovering = false;
                }
                Err(e) => {
                    warn!(epoch, error = %e, "cannot recover the jobs of the job graph store; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let lost = loop {
            tokio::select! {
                _ = leadership.lost() => break true,
                _ = cluster.shutdown_requested() => break false,
                Some(event) = events.recv() => {
                    // A service that does not answer must not hold up the loss.
                    tokio::select! {
                        r = apply(&cluster, &ha, epoch, event) => if let Err(e) = r {
                            warn!(epoch, error = %e, "cannot record in the HA stores");
                        },
                        _ = leadership.lost() => break true,
                    }
                }
            }
        };
        *ha.held.lock().unwrap_or_else(|p| p.into_inner()) = None;
        ha.recovered.send_replace(0);
        ha.stopped_ms.store(now_ms(), Ordering::SeqCst);
        if !lost {
            // A cluster shut down on purpose: jobs ended (or were cancelled) and are recorded as
            // such; a standby takes over at once.
            while let Ok(event) = events.try_recv() {
                let _ = apply(&cluster, &ha, epoch, event).await;
            }
            let _ = services.resign(&leadership).await;
            return;
        }
        warn!(epoch, "leadership lost: suspending every job; they resume under the next leader");
        cluster.suspend_all("the JobManager lost its leadership").await;
    }
}

/// Records one event.
async fn apply(cluster: &Cluster, ha: &Ha, epoch: u64, event: Event) -> Result<()> {
    match event {
        Event::Ended { job, status, error, result } => {
            record_end(ha, epoch, &job.to_string(), status, error, result.map(|r| *r)).await
        }
        Event::Checkpoint { job, attempt, id, location, retain, ids: (next, left) } => {
            ha.stores.add_checkpoint(epoch, &job.to_string(), id, &location, retain).await?;
            cluster.checkpoint_recorded(job, attempt, id);
            if left.is_some_and(|l| l < ID_BLOCK / 2) {
                reserve_ids(cluster, ha, epoch, job, next).await;
            }
            Ok(())
        }
    }
}

/// Submits every job of the job graph store that has no result yet, each restoring from its
/// latest completed checkpoint; returns how many.
async fn recover(cluster: &Arc<Cluster>, ha: &Ha, epoch: u64) -> Result<usize> {
    if let Err(e) = ha.stores.sweep().await {
        warn!(error = %e, "cannot sweep the job graph files");
    }
    let mut recovered = 0;
    for key in ha.stores.jobs().await? {
        if ha.stores.result(&key).await?.is_some() {
            // It ended under the previous leader, which died before cleaning up.
            ha.stores.remove_job(epoch, &key).await?;
            continue;
        }
        let id: JobId = match key.parse() {
            Ok(id) => id,
            Err(_) => {
                warn!(key, "the job graph store holds a job with an unreadable id; skipped");
                continue;
            }
        };
        if cluster.job(id).is_some() {
            // Recovered by an earlier attempt of this leadership.
            continue;
        }
        let Some(bytes) = ha.stores.job(&key).await? else { continue };
        let stored: StoredJob = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                warn!(job_id = %id, error = %e, "cannot recover a job: its stored graph is unreadable");
                let why = format!("its stored job graph cannot be read by this weir version: {e}");
                record_end(ha, epoch, &key, JobStatus::Failed, Some(why), None).await?;
                continue;
            }
        };
        let StoredJob { graph, mut config, through_rest, .. } = stored;
        let latest = ha.stores.latest_checkpoint(&key).await?;
        if let Some((n, location)) = &latest {
            info!(job_id = %id, checkpoint = n, %location, "recovering from the latest completed checkpoint");
            config.set("execution.savepoint.path", location)?;
        }
        if cluster.blobs.locate(&graph.artifact).is_none()
            && let Err(e) = restore_blob(cluster, ha, &graph).await
        {
            warn!(job_id = %id, error = %e, "cannot recover a job: its artifact is gone");
            record_end(ha, epoch, &key, JobStatus::Failed, Some(e.to_string()), None).await?;
            continue;
        }
        // Under the checks it was first submitted under.
        let origin = if through_rest { Origin::Rest } else { Origin::Program };
        match cluster.submit_off_loop(graph, config, id, origin).await {
            Ok(_) => {
                recovered += 1;
                reserve_ids(cluster, ha, epoch, id, latest.map(|(n, _)| n + 1).unwrap_or(1)).await;
            }
            Err(e) => {
                warn!(job_id = %id, error = %e, "cannot recover a job");
                record_end(ha, epoch, &key, JobStatus::Failed, Some(e.to_string()), None).await?;
            }
        }
    }
    Ok(recovered)
}

/// Records that job `key` ended (its result, and what it handed back) and forgets its graph and
/// checkpoint pointers.
async fn record_end(
    ha: &Ha,
    epoch: u64,
    key: &str,
    status: JobStatus,
    error: Option<String>,
    values: Option<JobResult>,
) -> Result<()> {
    let values = match values {
        Some(v) => {
            let bytes =
                serde_json::to_vec(&v).map_err(|e| Error::internal(format!("cannot encode a job's values: {e}")))?;
            Some(ha.stores.put_result_data(key, bytes).await?)
        }
        None => None,
    };
    let result = StoredResult { status: status.to_string(), error, end_time: now_ms(), values };
    let bytes = serde_json::to_vec(&result).map_err(|e| Error::internal(format!("cannot encode a job result: {e}")))?;
    ha.stores.put_result(epoch, key, bytes).await?;
    ha.stores.remove_job(epoch, key).await
}

/// Brings a job's artifact from the HA storage directory into this JobManager's blob store.
async fn restore_blob(cluster: &Arc<Cluster>, ha: &Ha, graph: &JobGraph) -> Result<()> {
    let hex = graph.artifact.hex().to_string();
    // Stored data that is gone, not a setting: the job cannot come back without it.
    let bytes = ha.stores.blob(&hex).await?.ok_or_else(|| Error::Storage {
        context: format!("cannot recover the artifact of job '{}' from", graph.job_name),
        location: format!("high-availability.storageDir (blobs/{hex})"),
        message: "it is neither there nor in this JobManager's blob store, so the job cannot be recovered; submit \
                  it again"
            .into(),
        blame: weir_core::Blame::External,
        retryable: false,
    })?;
    let cluster = cluster.clone();
    let digest = graph.artifact.clone();
    tokio::task::spawn_blocking(move || cluster.blobs.store_bytes(&digest, &bytes))
        .await
        .map_err(|e| Error::internal(format!("artifact task failed: {e}")))?
}
