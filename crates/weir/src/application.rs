//! Application mode, on the cluster side: a JobManager that runs the program's `main` itself
//! (`jobmanager --application ID -- ARGS`). Every `execute` in `main` goes to this JobManager
//! (one after the other; `execute_async` side by side), whose resource provider starts the
//! TaskManagers they need. The cluster lives as long as the application: once `main` returned and
//! its jobs ended, or once any of its jobs was cancelled (which cancels the others), it records
//! the outcome in the job result store and shuts down.
//!
//! With high availability, the application's id derives from `high-availability.cluster-id`, and
//! every JobManager started for it campaigns; only the leader runs `main`. Its `n`th job has an id
//! derived from the application's, and is kept in the job graph store like a session cluster's. A
//! new leader recovers the running jobs and runs `main` again: an `execute` whose job runs again
//! attaches to it, one whose job ended under an earlier leader gets that job's recorded result
//! (with its values) without running it again, and the rest are submitted as before. So single-
//! and multi-`execute` applications survive their JobManager, provided `main` submits the same
//! jobs in the same order. A leader that loses its leadership keeps `main` waiting until it leads
//! again; the application's end is recorded, fenced, in the job result store, so that a standby
//! elected later shuts down instead of running `main` again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_api::{Driver, Executor, SubmittedJob};
use weir_core::config::JobConfig;
use weir_core::result::{JobResult, VertexCounts};
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};
use weir_deploy::ResourceProvider;
use weir_jobmanager::Cluster;
use weir_jobmanager::ha::{Ha, StoredResult};
use weir_jobmanager::results::{ApplicationJob, ApplicationRecord, JobResultStore};

use crate::remote::Settings;

/// A program's `main`, as the application's JobManager runs it.
pub type Main<'a> = Box<dyn FnOnce(&mut Driver, &[String]) -> Result<()> + 'a>;

/// The application's bookkeeping, shared by its executor, its watcher and its `main`.
struct Application {
    id: JobId,
    cluster: Arc<Cluster>,
    store: JobResultStore,
    record: Mutex<ApplicationRecord>,
    submitted: AtomicU64,
    /// Set once the outcome is recorded: nothing changes after.
    ended: AtomicBool,
    /// Held while the application ends, so that a second caller returns only once it has ended.
    ending: Mutex<()>,
    /// Set when `main` failed and its jobs are being cancelled for that (not by a user).
    closing: AtomicBool,
    provider: Option<Arc<dyn ResourceProvider>>,
    /// High availability, when on.
    ha: Option<Arc<Ha>>,
    /// The JobManager's runtime, for calls to the coordination service.
    handle: tokio::runtime::Handle,
    /// Jobs that ended under an earlier leader, as the job result store records them.
    ended_earlier: Mutex<BTreeMap<JobId, Ended>>,
}

/// How a job ended under an earlier leader.
#[derive(Clone)]
struct Ended {
    status: JobStatus,
    error: Option<String>,
    result: Option<Arc<JobResult>>,
}

/// Where a job of the application stands.
enum Standing {
    /// This JobManager runs it, or ran it to its end.
    Here {
        status: JobStatus,
        /// Why it failed.
        error: Option<String>,
    },
    /// It ended here, and its end is not in the job result store yet (high availability): until it
    /// is, a new leader would run it again, so nobody acts on the end.
    Ending { status: JobStatus, error: Option<String> },
    /// Its end is in the job result store (it ended here, or under an earlier leader).
    Earlier(Ended),
    /// Neither: this JobManager stands by, or has not recovered it yet.
    Away,
}

impl Standing {
    fn status(&self) -> JobStatus {
        match self {
            Standing::Here { status, .. } | Standing::Ending { status, .. } => *status,
            Standing::Earlier(e) => e.status,
            Standing::Away => JobStatus::Suspended,
        }
    }

    fn error(&self) -> Option<String> {
        match self {
            Standing::Here { error, .. } | Standing::Ending { error, .. } | Standing::Earlier(Ended { error, .. }) => {
                error.clone()
            }
            Standing::Away => None,
        }
    }

    /// Whether the job ended for good: its end is recorded where a new leader looks.
    fn ended(&self) -> bool {
        match self {
            Standing::Here { status, .. } => status.is_terminal(),
            Standing::Earlier(_) => true,
            Standing::Ending { .. } | Standing::Away => false,
        }
    }
}

/// Reads a status the job result store recorded.
fn recorded_status(stored: &StoredResult) -> Result<JobStatus> {
    serde_json::from_value(serde_json::Value::String(stored.status.clone()))
        .map_err(|_| Error::internal(format!("the job result store records an unknown status '{}'", stored.status)))
}

impl Application {
    fn record(&self) -> std::sync::MutexGuard<'_, ApplicationRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids of its jobs so far.
    fn job_ids(&self) -> Vec<JobId> {
        self.record().jobs.iter().map(|j| j.id).collect()
    }

    /// Where job `id` stands: in this JobManager, ended under an earlier leader, or away.
    /// Without high availability a job is always here (or an internal error).
    fn standing(&self, id: JobId) -> Result<Standing> {
        if let Some(e) = self.ended_earlier.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(Standing::Earlier(e.clone()));
        }
        let here = self.cluster.job(id).map(|j| {
            let error = (j.status() == JobStatus::Failed).then(|| j.exceptions.last().map(|(_, e)| e.clone()));
            (j.status(), error.flatten())
        });
        let Some(ha) = &self.ha else {
            return here
                .map(|(status, error)| Standing::Here { status, error })
                .ok_or_else(|| Error::internal(format!("job {id} vanished")));
        };
        match here {
            Some((status, error)) if !status.is_terminal() => return Ok(Standing::Here { status, error }),
            Some(_) => {}
            // While it stands by or recovers, this JobManager cannot tell; once it leads with its
            // jobs recovered, a job it does not run has ended, or was never submitted.
            None if ha.ready().is_none() => return Ok(Standing::Away),
            None => {}
        }
        let stored = match self.handle.block_on(ha.ended(id)) {
            Ok(s) => s,
            Err(e) if e.is_retryable() => None,
            Err(e) => return Err(e),
        };
        let Some((stored, result)) = stored else {
            return Ok(match here {
                Some((status, error)) => Standing::Ending { status, error },
                None => Standing::Away,
            });
        };
        let ended = Ended { status: recorded_status(&stored)?, error: stored.error, result: result.map(Arc::new) };
        self.ended_earlier.lock().unwrap_or_else(|p| p.into_inner()).insert(id, ended.clone());
        Ok(Standing::Earlier(ended))
    }

    /// Whether this JobManager may write the application's record: without high availability,
    /// or while it leads.
    fn writes_record(&self) -> bool {
        self.ha.as_ref().is_none_or(|ha| ha.leading().is_some())
    }

    /// How the application ended under another JobManager, if it did (the job result store
    /// records applications by their id too).
    fn ended_elsewhere(&self) -> Result<Option<StoredResult>> {
        let Some(ha) = &self.ha else { return Ok(None) };
        Ok(self.handle.block_on(ha.ended(self.id))?.map(|(stored, _)| stored))
    }

    /// Brings the jobs' statuses in the record up to date and writes it.
    fn save(&self) {
        if !self.writes_record() {
            return;
        }
        let ids = self.job_ids();
        let standings: Vec<Option<Standing>> = ids.iter().map(|id| self.standing(*id).ok()).collect();
        let mut record = self.record();
        for (j, standing) in record.jobs.iter_mut().zip(standings) {
            if let Some(st) = standing.filter(|st| !matches!(st, Standing::Away)) {
                j.status = st.status().as_str().to_string();
                j.error = st.error();
            }
        }
        if let Err(e) = self.store.write(&record) {
            warn!(application = %self.id, error = %e, "cannot record the application's state");
        }
    }

    /// Cancels every job that has not ended, and waits (bounded) until all have.
    fn cancel_all(&self) {
        for id in self.job_ids() {
            let _ = self.cluster.cancel(id);
        }
        self.wait_all(Duration::from_secs(30));
    }

    /// Waits until every job ended, up to `limit`.
    fn wait_all(&self, limit: Duration) {
        let deadline = Instant::now().checked_add(limit);
        while deadline.is_none_or(|d| Instant::now() < d) {
            let ended = |id: &JobId| self.standing(*id).map(|st| st.ended()).unwrap_or(self.ha.is_none());
            if self.job_ids().iter().all(ended) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Records the application's end in the job result store of high availability, as its leader
    /// (waiting to lead again when it does not); `Some` instead when another JobManager recorded
    /// it first.
    fn record_end_durably(&self, status: &str, error: &Option<String>) -> Option<StoredResult> {
        let ha = self.ha.as_ref()?;
        loop {
            let epoch = self.handle.block_on(ha.until_ready());
            match self.ended_elsewhere() {
                Ok(Some(earlier)) => return Some(earlier),
                Ok(None) => {}
                Err(e) => warn!(application = %self.id, error = %e, "cannot read the job result store"),
            }
            match self.handle.block_on(ha.record_application_end(epoch, self.id, status, error.clone())) {
                Ok(()) => return None,
                Err(e) if e.is_retryable() => {
                    warn!(application = %self.id, error = %e, "cannot record the application's end yet; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => {
                    warn!(application = %self.id, error = %e, "cannot record the application's end");
                    return None;
                }
            }
        }
    }

    /// Records the outcome (once) and shuts the cluster down: TaskManagers stop, files it made go.
    /// The outcome recorded (another JobManager's, when it recorded one first), or `None` when the
    /// application had ended already.
    fn end(&self, status: &str, error: Option<String>) -> Option<(String, Option<String>)> {
        let _one = self.ending.lock().unwrap_or_else(|p| p.into_inner());
        if self.ended.swap(true, Ordering::SeqCst) {
            return None;
        }
        let (status, error, recorded) = match self.record_end_durably(status, &error) {
            // The JobManager that ended it wrote the record, unless this one's store is elsewhere.
            Some(earlier) => {
                // Jobs this JobManager recovered belong to an application that ended: they are
                // cancelled, so that their ends are recorded and nobody recovers them again.
                let ids: Vec<JobId> = self.cluster.jobs().iter().map(|j| j.id).collect();
                for id in &ids {
                    let _ = self.cluster.cancel(*id);
                }
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline && !ids.iter().all(|id| self.standing(*id).is_ok_and(|st| st.ended())) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let written = self.store.get(self.id).ok().flatten().is_some_and(|r| r.is_terminal());
                (earlier.status, earlier.error, written)
            }
            None => (status.to_string(), error, false),
        };
        if !recorded {
            {
                let mut r = self.record();
                r.status = status.clone();
                r.error = error.clone();
                r.end_time = Some(weir_jobmanager::state::now_ms());
            }
            self.save();
        }
        info!(application = %self.id, status, "application ended; shutting the cluster down");
        self.shutdown();
        Some((status, error))
    }

    /// Shuts the cluster down: TaskManagers stop, files it made go.
    fn shutdown(&self) {
        self.cluster.request_shutdown();
        // The shutdown messages go out; a provider then waits for its TaskManagers to be gone.
        std::thread::sleep(Duration::from_millis(20));
        if let Some(p) = &self.provider {
            p.shutdown();
        }
        self.cluster.blobs.close();
    }

    /// Waits until every job ended for good, then the application's status from theirs. With
    /// high availability, every job's end is recorded and the leadership was held throughout.
    fn settled_outcome(&self) -> (&'static str, Option<String>) {
        let Some(ha) = self.ha.clone() else {
            self.wait_all(Duration::MAX);
            return self.outcome();
        };
        loop {
            let epoch = self.handle.block_on(ha.until_ready());
            self.wait_all(Duration::MAX);
            let all_known = self.job_ids().iter().all(|id| self.standing(*id).is_ok_and(|st| st.ended()));
            let outcome = self.outcome();
            if all_known && ha.ready() == Some(epoch) {
                return outcome;
            }
        }
    }

    /// The application's status from its jobs', once `main` returned and they ended.
    fn outcome(&self) -> (&'static str, Option<String>) {
        let jobs: Vec<(JobId, String)> = self.record().jobs.iter().map(|j| (j.id, j.name.clone())).collect();
        let standings: Vec<(JobId, String, Standing)> =
            jobs.into_iter().filter_map(|(id, name)| Some((id, name, self.standing(id).ok()?))).collect();
        if let Some((id, name, _)) = standings.iter().find(|(_, _, st)| st.status() == JobStatus::Canceled) {
            return ("CANCELED", Some(format!("job {id} ({name}) was cancelled")));
        }
        if let Some((id, name, st)) = standings.iter().find(|(_, _, st)| st.status() != JobStatus::Finished) {
            let why = st.error().unwrap_or_else(|| st.status().as_str().to_string());
            return ("FAILED", Some(format!("job {id} ({name}) failed: {why}")));
        }
        ("SUCCEEDED", None)
    }
}

/// Sends a driver's jobs to the application's own JobManager, in this process.
#[derive(Clone)]
struct EmbeddedExecutor {
    app: Arc<Application>,
}

impl std::fmt::Debug for EmbeddedExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedExecutor").field("application", &self.app.id).finish()
    }
}

/// The id of an application's `n`th job (from 0): derived from the application's id, so that the
/// same application gets the same job ids wherever it runs.
fn job_id(application: JobId, n: u64) -> JobId {
    JobId(application.0 ^ u128::from(n + 1).rotate_right(32))
}

impl Executor for EmbeddedExecutor {
    fn target(&self) -> &str {
        "application"
    }

    fn submit(&self, mut graph: JobGraph, config: JobConfig) -> Result<Box<dyn SubmittedJob>> {
        if self.app.ended.load(Ordering::SeqCst) {
            return Err(Error::Cancelled(format!("application {} (it ended; no more jobs)", self.app.id)));
        }
        graph.artifact = weir_core::ArtifactDigest::current()?;
        let n = self.app.submitted.fetch_add(1, Ordering::SeqCst);
        let name = graph.job_name.clone();
        let id = job_id(self.app.id, n);
        match &self.app.ha {
            None => {
                self.app.cluster.submit_as(graph, config, id)?;
            }
            Some(ha) => self.submit_durably(ha, graph, config, id, n)?,
        }
        {
            let mut record = self.app.record();
            if !record.jobs.iter().any(|j| j.id == id) {
                record.jobs.push(ApplicationJob { id, name, status: "CREATED".into(), error: None });
            }
        }
        self.app.save();
        Ok(Box::new(EmbeddedJob { id, app: self.app.clone() }))
    }
}

impl EmbeddedExecutor {
    /// Submits the application's `n`th job under high availability, as the leader with its jobs
    /// recovered: a job that runs again, or ended under an earlier leader, is not submitted again.
    fn submit_durably(&self, ha: &Ha, graph: JobGraph, config: JobConfig, id: JobId, n: u64) -> Result<()> {
        let app = &self.app;
        loop {
            app.handle.block_on(ha.until_ready());
            match app.ended_elsewhere() {
                Ok(Some(earlier)) => {
                    return Err(Error::Cancelled(format!(
                        "application {} (it ended {} under another JobManager)",
                        app.id, earlier.status
                    )));
                }
                Ok(None) => {}
                Err(e) if e.is_retryable() => {
                    warn!(application = %app.id, error = %e, "cannot read the job result store yet; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Err(e) => return Err(e),
            }
            match app.standing(id)? {
                Standing::Here { status, .. } | Standing::Ending { status, .. } => {
                    info!(application = %app.id, job_id = %id, n, %status, "the job was recovered: main follows it");
                    return Ok(());
                }
                Standing::Earlier(e) => {
                    info!(application = %app.id, job_id = %id, n, status = %e.status, "the job ended under an earlier leader: not run again");
                    return Ok(());
                }
                Standing::Away => {}
            }
            match app.handle.block_on(app.cluster.submit_durably_as(
                graph.clone(),
                config.clone(),
                id,
                weir_jobmanager::dispatcher::Origin::Program,
            )) {
                Ok(_) => return Ok(()),
                // Leadership went, or the service or storage is away for a moment: again once it
                // leads (the job graph store is written before the job starts, so it runs once).
                Err(e) if e.is_retryable() => {
                    warn!(application = %app.id, job_id = %id, error = %e, "cannot submit the job yet; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A job of the application, watched in the JobManager's state.
struct EmbeddedJob {
    id: JobId,
    app: Arc<Application>,
}

impl std::fmt::Debug for EmbeddedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedJob").field("id", &self.id).finish()
    }
}

impl SubmittedJob for EmbeddedJob {
    fn job_id(&self) -> JobId {
        self.id
    }

    fn status(&self) -> Result<JobStatus> {
        Ok(self.app.standing(self.id)?.status())
    }

    fn cancel(&self) -> Result<()> {
        self.app.cluster.cancel(self.id)
    }

    fn counts(&self) -> Result<Vec<VertexCounts>> {
        match self.app.standing(self.id)? {
            Standing::Earlier(e) => Ok(e.result.map(|r| r.counts.clone()).unwrap_or_default()),
            Standing::Away => Ok(Vec::new()),
            Standing::Here { .. } | Standing::Ending { .. } => {
                Ok(self.app.cluster.job(self.id).map(|j| j.counts()).unwrap_or_default())
            }
        }
    }

    fn wait_timeout(&self, timeout: Duration) -> Result<Option<JobResult>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(1);
        let id = self.id.to_string();
        let finished = |result: Option<JobResult>| {
            result.map(Some).ok_or_else(|| Error::internal(format!("job {id} finished without a result")))
        };
        loop {
            let standing = self.app.standing(self.id)?;
            // Under high availability, not before its end is recorded (else a new leader runs it
            // again while main goes on).
            let status = if standing.ended() { standing.status() } else { JobStatus::Running };
            match status {
                JobStatus::Finished => match &standing {
                    Standing::Earlier(e) => return finished(e.result.as_deref().cloned()),
                    // Gone meanwhile (leadership lost): it is looked for again.
                    _ => {
                        if let Some(j) = self.app.cluster.job(self.id) {
                            return finished(j.result.as_deref().cloned());
                        }
                    }
                },
                JobStatus::Canceled => return Err(Error::Cancelled(id)),
                JobStatus::Failed => {
                    return Err(Error::JobFailed { job: id, message: standing.error().unwrap_or_default() });
                }
                _ => {}
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(pause);
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

/// What the application's JobManager needs besides the program's `main`.
pub struct ApplicationArgs<'a> {
    /// The application's id (chosen by the client, which looks for its record).
    pub id: JobId,
    /// The program's name, for the record.
    pub program: String,
    /// The arguments for `main`.
    pub args: Vec<String>,
    /// The cluster's settings.
    pub settings: &'a Settings,
    /// The settings as arguments, for the TaskManagers it starts.
    pub forwarded: &'a [String],
    /// What reaches weir's command line in this executable.
    pub role_prefix: &'a [&'a str],
}

/// Runs an application cluster: JobManager, `main`, then shutdown. The outcome is in the job result
/// store; the error returned is the application's, for the exit code.
pub fn run(app: ApplicationArgs<'_>, driver: Driver, main: Main<'_>) -> Result<()> {
    let mut cluster = app.settings.cluster()?;
    // `main` follows its jobs to their ends and asks about them later: they stay while it runs
    // (the cluster goes with the application), whatever jobstore.* say.
    cluster.jobstore_capacity = u64::MAX;
    cluster.jobstore_expiration_ms = u64::MAX;
    app.settings.execution()?;
    if cluster.ha.enabled() {
        let derived = JobId::derived(&cluster.ha.cluster_id);
        if app.id != derived {
            return Err(Error::Config(format!(
                "with high availability an application's id derives from high-availability.cluster-id ('{}'): \
                 start its JobManagers with `--application {derived}`, or through run-application",
                cluster.ha.cluster_id
            )));
        }
    }
    let provider = crate::remote::provider(&cluster, app.forwarded, app.role_prefix, false)?;
    let runtime = crate::remote::runtime()?;
    let options = weir_jobmanager::Options {
        provider: provider.clone(),
        per_job: false,
        job_defaults: app.settings.job_config()?,
        security: None,
    };
    let scheme = weir_security::rest::scheme(&cluster);
    let jm = runtime.block_on(weir_jobmanager::JobManager::start(cluster, options))?;
    let cluster = jm.cluster().clone();
    // A JobManager taking over keeps its predecessor's start time; main submits the jobs again.
    let earlier = if cluster.ha.is_some() { cluster.results.get(app.id).ok().flatten() } else { None };
    let earlier = earlier.filter(|r| !r.is_terminal());
    let application = Arc::new(Application {
        id: app.id,
        store: cluster.results.clone(),
        record: Mutex::new(ApplicationRecord {
            id: app.id,
            program: app.program,
            args: app.args.clone(),
            status: "RUNNING".into(),
            error: None,
            rest: jm.rest_address.to_string(),
            pid: std::process::id(),
            start_time: earlier.as_ref().map(|r| r.start_time).unwrap_or_else(weir_jobmanager::state::now_ms),
            end_time: None,
            // main submits them again, in order.
            jobs: Vec::new(),
        }),
        ha: cluster.ha.clone(),
        handle: runtime.handle().clone(),
        ended_earlier: Mutex::new(BTreeMap::new()),
        cluster,
        submitted: AtomicU64::new(0),
        ended: AtomicBool::new(false),
        ending: Mutex::new(()),
        closing: AtomicBool::new(false),
        provider,
    });
    println!(
        "weir jobmanager ready: rest={scheme}://{} rpc={} application={}",
        jm.rest_address, jm.rpc_address, app.id
    );
    if let Some(ha) = &application.ha {
        info!(application = %app.id, "standing by until this JobManager leads the cluster");
        runtime.block_on(ha.until_ready());
        if let Some(earlier) = application.ended_elsewhere()? {
            info!(application = %app.id, status = %earlier.status, "the application ended under another JobManager");
            let outcome = application.end(&earlier.status, earlier.error);
            drop(jm);
            runtime.shutdown_timeout(Duration::from_millis(200));
            return outcome.map(|(status, error)| exit(app.id, &status, error)).unwrap_or(Ok(()));
        }
    }
    application.store.write(&application.record())?;
    info!(application = %app.id, rest = %jm.rest_address, "application cluster started; running main");
    watch_cancellation(application.clone());
    let mut driver = driver.with_executor(Arc::new(EmbeddedExecutor { app: application.clone() }));
    app.settings.configure(&mut driver)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| main(&mut driver, &app.args)));
    let (status, error) = main_outcome(&application, outcome);
    let outcome = application.end(status, error.clone());
    drop(jm);
    runtime.shutdown_timeout(Duration::from_millis(200));
    let (status, error) = outcome.unwrap_or((status.to_string(), error));
    exit(app.id, &status, error)
}

/// The application's status and error from how `main` returned: what it started settles;
/// an error or a panic cancels the rest (CANCELED when a job cancelled from outside made it fail).
fn main_outcome(application: &Application, outcome: std::thread::Result<Result<()>>) -> (&'static str, Option<String>) {
    match outcome {
        Ok(Ok(())) => {
            // Jobs started with execute_async and not waited for still belong to the application.
            application.settled_outcome()
        }
        Ok(Err(e)) => {
            // A job cancelled from outside may have made main fail: that cancels the application.
            let cancelled = application.cancelled_job();
            application.closing.store(true, Ordering::SeqCst);
            application.cancel_all();
            match cancelled {
                Some(id) => ("CANCELED", Some(cancelled_message(id))),
                None => {
                    let before = if application.job_ids().is_empty() { " before any job was submitted" } else { "" };
                    ("FAILED", Some(format!("main failed{before}: {e}")))
                }
            }
        }
        Err(panic) => {
            application.closing.store(true, Ordering::SeqCst);
            application.cancel_all();
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            ("FAILED", Some(format!("main panicked: {message}")))
        }
    }
}

/// The error (for the exit code) of an application that ended with `status`.
fn exit(id: JobId, status: &str, error: Option<String>) -> Result<()> {
    match status {
        "SUCCEEDED" => Ok(()),
        "CANCELED" => Err(Error::Cancelled(format!("application {id}: {}", error.unwrap_or_default()))),
        _ => Err(Error::JobFailed { job: format!("application {id}"), message: error.unwrap_or_default() }),
    }
}

/// Cancelling any job of the application cancels all of them and ends the application, even while
/// `main` is still busy: the process exits once the outcome is recorded.
fn watch_cancellation(app: Arc<Application>) {
    let spawned = std::thread::Builder::new().name("application-watch".into()).spawn(move || {
        let mut checked = app.ha.as_ref().and_then(|ha| ha.ready());
        loop {
            std::thread::sleep(Duration::from_millis(10));
            if app.ended.load(Ordering::SeqCst) || app.closing.load(Ordering::SeqCst) {
                return;
            }
            // Leading again after a while away: another JobManager may have ended the application.
            let ready = app.ha.as_ref().and_then(|ha| ha.ready());
            if ready.is_some() && ready != checked {
                checked = ready;
                if let Ok(Some(earlier)) = app.ended_elsewhere() {
                    info!(application = %app.id, status = %earlier.status, "the application ended under another JobManager");
                    if let Some((status, _)) = app.end(&earlier.status, earlier.error) {
                        std::process::exit(if status == "SUCCEEDED" { 0 } else { 1 });
                    }
                    return;
                }
            }
            let Some(id) = app.cancelled_job() else {
                app.save_if_changed();
                continue;
            };
            info!(application = %app.id, job_id = %id, "a job of the application was cancelled: cancelling all of them");
            app.cancel_all();
            if app.end("CANCELED", Some(cancelled_message(id))).is_some() {
                std::process::exit(1);
            }
            return;
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot watch the application's jobs for cancellation");
    }
}

fn cancelled_message(id: JobId) -> String {
    format!("job {id} was cancelled, which cancels the whole application")
}

impl Application {
    /// A job of the application that was cancelled, if any.
    fn cancelled_job(&self) -> Option<JobId> {
        let cancelled = |id: &JobId| self.standing(*id).is_ok_and(|st| st.status() == JobStatus::Canceled);
        self.job_ids().into_iter().find(cancelled)
    }

    /// Writes the record when a job's status changed since it was last written.
    fn save_if_changed(&self) {
        let recorded: Vec<(JobId, String)> = self.record().jobs.iter().map(|j| (j.id, j.status.clone())).collect();
        let changed = recorded.iter().any(|(id, status)| {
            self.standing(*id).is_ok_and(|st| !matches!(st, Standing::Away) && st.status().as_str() != status)
        });
        if changed {
            self.save();
        }
    }
}
