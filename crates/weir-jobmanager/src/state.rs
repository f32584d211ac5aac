//! The JobManager's view of the cluster: TaskManagers with their slots, and jobs with their
//! status, placement and outcome. One mutex guards it; no lock is held across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};
use tracing::{info, warn};
use weir_core::config::{ClusterConfig, RestartStrategy};
use weir_core::protocol::ToTaskManager;
use weir_core::result::JobResult;
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
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
}

/// A submitted job.
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Its graph.
    pub graph: JobGraph,
    /// Execution settings.
    pub config: BTreeMap<String, String>,
    /// Status.
    pub status: JobStatus,
    /// Slots it needs (its highest parallelism).
    pub slots: u32,
    /// The TaskManager running it.
    pub taskmanager: Option<String>,
    /// Submission time (ms).
    pub submitted_ms: i64,
    /// When it reached its current status (ms).
    pub modified_ms: i64,
    /// End time (ms), once terminal.
    pub end_ms: Option<i64>,
    /// Failures: (time ms, message), oldest first.
    pub exceptions: Vec<(i64, String)>,
    /// The result, once finished.
    pub result: Option<JobResult>,
    /// Cancellation asked for.
    pub cancel_requested: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// Times of failures that led to restarts (ms).
    failures: Vec<i64>,
    last_delay_ms: u64,
    restart_at: Option<Instant>,
    submitted_at: Instant,
}

/// Everything the JobManager knows.
#[derive(Default)]
pub struct State {
    /// TaskManagers by id.
    pub taskmanagers: BTreeMap<String, TaskManager>,
    /// Jobs by id, in submission order of ids.
    pub jobs: BTreeMap<JobId, Job>,
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
    wake: Notify,
    shutting_down: std::sync::atomic::AtomicBool,
    /// Start time (ms).
    pub started_ms: i64,
}

impl Cluster {
    /// An empty cluster.
    pub fn new(config: ClusterConfig) -> Self {
        Cluster {
            restart: config.restart_strategy(),
            config,
            state: Mutex::new(State::default()),
            shutdown: Notify::new(),
            wake: Notify::new(),
            shutting_down: Default::default(),
            started_ms: now_ms(),
        }
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
    pub fn submit(&self, graph: JobGraph, config: BTreeMap<String, String>) -> Result<JobId> {
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
        let slots = graph.plan.vertices.iter().map(|v| v.parallelism).max().unwrap_or(1);
        let id = JobId::random();
        let now = now_ms();
        info!(job_id = %id, job = %graph.job_name, slots, "job submitted");
        let mut s = self.lock();
        s.jobs.insert(
            id,
            Job {
                id,
                graph,
                config,
                status: JobStatus::Created,
                slots,
                taskmanager: None,
                submitted_ms: now,
                modified_ms: now,
                end_ms: None,
                exceptions: Vec::new(),
                result: None,
                cancel_requested: false,
                restarts: 0,
                failures: Vec::new(),
                last_delay_ms: 0,
                restart_at: None,
                submitted_at: Instant::now(),
            },
        );
        schedule(&mut s);
        Ok(id)
    }

    /// Cancels a job: waiting jobs at once, running ones through their TaskManager.
    pub fn cancel(&self, id: JobId) -> Result<()> {
        let mut s = self.lock();
        let job = s
            .jobs
            .get_mut(&id)
            .ok_or_else(|| Error::Config(format!("job {id} is not known to this cluster; see `weir list`")))?;
        if job.status.is_terminal() {
            return Ok(());
        }
        job.cancel_requested = true;
        if job.status == JobStatus::Restarting {
            finish(&mut s, id, JobStatus::Canceled, None, None);
            return Ok(());
        }
        match job.taskmanager.clone() {
            None => finish(&mut s, id, JobStatus::Canceled, None, None),
            Some(tm) => {
                set_status(&mut s, id, JobStatus::Cancelling);
                if let Some(t) = s.taskmanagers.get(&tm) {
                    let _ = t.tx.send(ToTaskManager::Cancel { job_id: id });
                }
            }
        }
        Ok(())
    }

    /// A TaskManager reported on a job.
    pub fn job_state(
        &self,
        tm: &str,
        id: JobId,
        status: JobStatus,
        error: Option<String>,
        result: Option<JobResult>,
        retryable: bool,
    ) {
        let mut s = self.lock();
        let Some(job) = s.jobs.get(&id) else { return };
        if job.taskmanager.as_deref() != Some(tm) || job.status.is_terminal() {
            return;
        }
        if status == JobStatus::Failed {
            let message = error.unwrap_or_else(|| "failed without a message".into());
            self.fail(&mut s, id, message, retryable);
            schedule(&mut s);
        } else if status.is_terminal() {
            finish(&mut s, id, status, error, result);
            schedule(&mut s);
        } else if status == JobStatus::Running {
            set_status(&mut s, id, JobStatus::Running);
        }
    }

    /// A TaskManager is gone: its jobs fail and its slots disappear. With `session`, only if that
    /// registration is still the current one.
    pub fn lose_taskmanager(&self, id: &str, session: Option<u64>, why: &str) {
        let mut s = self.lock();
        match s.taskmanagers.get(id) {
            Some(t) if session.is_none_or(|x| x == t.session) => {}
            _ => return,
        }
        let Some(tm) = s.taskmanagers.remove(id) else { return };
        warn!(taskmanager = id, host = %tm.host, reason = why, "TaskManager lost");
        for job in tm.jobs {
            let message = format!("TaskManager {id} ({}, pid {}) was lost: {why}", tm.host, tm.pid);
            let cancelled = s.jobs.get(&job).map(|j| j.cancel_requested).unwrap_or(false);
            if cancelled {
                finish(&mut s, job, JobStatus::Canceled, Some(message), None);
            } else {
                self.fail(&mut s, job, message, true);
            }
        }
        schedule(&mut s);
    }

    /// A job failed: restart it after the strategy's delay, or let it fail for good.
    fn fail(&self, s: &mut State, id: JobId, message: String, retryable: bool) {
        let now = now_ms();
        let Some(job) = s.jobs.get_mut(&id) else { return };
        let delay = if retryable && !job.cancel_requested {
            self.restart.next_delay(now, &job.failures, job.restarts, job.last_delay_ms)
        } else {
            None
        };
        let Some(delay) = delay else {
            finish(s, id, JobStatus::Failed, Some(message), None);
            return;
        };
        job.exceptions.push((now, message));
        job.failures.push(now);
        job.restarts += 1;
        job.last_delay_ms = delay;
        job.modified_ms = now;
        if delay == 0 {
            // No delay: wait for slots right away (the caller schedules).
            job.status = JobStatus::Created;
            job.restart_at = None;
            job.submitted_at = Instant::now();
        } else {
            job.status = JobStatus::Restarting;
            job.restart_at = Some(Instant::now() + Duration::from_millis(delay));
            self.wake.notify_one();
        }
        let (tm, slots) = (job.taskmanager.take(), job.slots);
        info!(job_id = %id, delay_ms = delay, restarts = job.restarts, "job failed; restarting");
        if let Some(t) = tm.and_then(|t| s.taskmanagers.get_mut(&t)) {
            t.used = t.used.saturating_sub(slots);
            t.jobs.remove(&id);
        }
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn set_status(s: &mut State, id: JobId, status: JobStatus) {
    if let Some(j) = s.jobs.get_mut(&id)
        && !j.status.is_terminal()
    {
        j.status = status;
        j.modified_ms = now_ms();
    }
}

/// Moves a job to a terminal status and frees its slots.
fn finish(s: &mut State, id: JobId, status: JobStatus, error: Option<String>, result: Option<JobResult>) {
    let now = now_ms();
    let Some(job) = s.jobs.get_mut(&id) else { return };
    if job.status.is_terminal() {
        return;
    }
    job.status = status;
    job.modified_ms = now;
    job.end_ms = Some(now);
    if let Some(e) = error {
        job.exceptions.push((now, e));
    }
    job.result = result;
    let (tm, slots) = (job.taskmanager.clone(), job.slots);
    info!(job_id = %id, status = %status, "job reached a terminal status");
    if let Some(t) = tm.and_then(|t| s.taskmanagers.get_mut(&t)) {
        t.used = t.used.saturating_sub(slots);
        t.jobs.remove(&id);
    }
}

/// Places waiting jobs, oldest first, on the TaskManager with the most free slots that fits.
pub fn schedule(s: &mut State) {
    let waiting: Vec<JobId> = s.jobs.values().filter(|j| j.status == JobStatus::Created).map(|j| j.id).collect();
    for id in waiting {
        let Some(slots) = s.jobs.get(&id).map(|j| j.slots) else { continue };
        let best = s
            .taskmanagers
            .values()
            .filter(|t| t.slots - t.used >= slots)
            .max_by_key(|t| (t.slots - t.used, std::cmp::Reverse(t.id.clone())))
            .map(|t| t.id.clone());
        let Some(tm_id) = best else { continue };
        let (graph, config) = match s.jobs.get(&id) {
            Some(j) => (j.graph.clone(), j.config.clone()),
            None => continue,
        };
        let Some(tm) = s.taskmanagers.get_mut(&tm_id) else { continue };
        if tm.tx.send(ToTaskManager::Deploy { job_id: id, graph, config }).is_err() {
            continue;
        }
        tm.used += slots;
        tm.jobs.insert(id);
        info!(job_id = %id, taskmanager = %tm_id, slots, "job deployed");
        if let Some(j) = s.jobs.get_mut(&id) {
            j.taskmanager = Some(tm_id);
        }
        set_status(s, id, JobStatus::Running);
    }
}

/// Runs until shutdown: loses TaskManagers whose heartbeats stopped, and fails jobs that waited
/// too long for slots.
pub async fn supervise(cluster: Arc<Cluster>) {
    let every = Duration::from_millis((cluster.config.heartbeat_interval_ms / 2).clamp(10, 1000));
    let timeout = Duration::from_millis(cluster.config.heartbeat_timeout_ms);
    let slot_timeout = Duration::from_millis(cluster.config.slot_request_timeout_ms);
    loop {
        // Sleep until the next tick, or the next restart if that comes first.
        let next_restart = {
            let s = cluster.lock();
            s.jobs.values().filter_map(|j| j.restart_at).min()
        };
        let nap = next_restart.map(|at| at.saturating_duration_since(Instant::now()).min(every)).unwrap_or(every);
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = cluster.wake.notified() => {}
            _ = cluster.shutdown_requested() => return,
        }
        let silent: Vec<String> = {
            let s = cluster.lock();
            s.taskmanagers.values().filter(|t| t.last_heartbeat.elapsed() > timeout).map(|t| t.id.clone()).collect()
        };
        for id in silent {
            cluster.lose_taskmanager(
                &id,
                None,
                &format!("no heartbeat for {} ms (heartbeat.timeout)", timeout.as_millis()),
            );
        }
        let mut s = cluster.lock();
        // Restarts whose delay is over wait for slots like new jobs.
        let due: Vec<JobId> = s
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Restarting && j.restart_at.is_some_and(|at| at <= Instant::now()))
            .map(|j| j.id)
            .collect();
        for id in &due {
            if let Some(j) = s.jobs.get_mut(id) {
                j.status = JobStatus::Created;
                j.restart_at = None;
                j.submitted_at = Instant::now();
            }
        }
        if !due.is_empty() {
            schedule(&mut s);
        }
        let offered: u32 = s.taskmanagers.values().map(|t| t.slots).sum();
        let starved: Vec<(JobId, u32)> = s
            .jobs
            .values()
            .filter(|j| j.status == JobStatus::Created && j.submitted_at.elapsed() > slot_timeout)
            .map(|j| (j.id, j.slots))
            .collect();
        for (id, slots) in starved {
            let message = format!(
                "could not get {slots} slots within {} ms (slot.request.timeout); the largest TaskManager offers \
                 {} of {offered} slots in all: add TaskManagers or slots (taskmanager.numberOfTaskSlots), or lower \
                 the job's parallelism",
                slot_timeout.as_millis(),
                s.taskmanagers.values().map(|t| t.slots).max().unwrap_or(0),
            );
            finish(&mut s, id, JobStatus::Failed, Some(message), None);
        }
    }
}
