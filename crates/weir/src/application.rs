//! Application mode, on the cluster side: a JobManager that runs the program's `main` itself
//! (`jobmanager --application ID -- ARGS`). Every `execute` in `main` goes to this JobManager
//! (one after the other; `execute_async` side by side), whose resource provider starts the
//! TaskManagers they need. The cluster lives as long as the application: once `main` returned and
//! its jobs ended, or once any of its jobs was cancelled (which cancels the others), it records
//! the outcome in the job result store and shuts down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_api::{Driver, Executor, SubmittedJob};
use weir_core::result::{JobResult, VertexCounts};
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};
use weir_jobmanager::Cluster;
use weir_jobmanager::provider::ResourceProvider;
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
}

impl Application {
    fn record(&self) -> std::sync::MutexGuard<'_, ApplicationRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ids of its jobs so far.
    fn job_ids(&self) -> Vec<JobId> {
        self.record().jobs.iter().map(|j| j.id).collect()
    }

    /// Brings the jobs' statuses in the record up to date and writes it.
    fn save(&self) {
        let mut record = self.record();
        {
            let s = self.cluster.lock();
            for j in &mut record.jobs {
                if let Some(job) = s.jobs.get(&j.id) {
                    j.status = job.status.as_str().to_string();
                    j.error = if job.status == JobStatus::Failed {
                        job.exceptions.last().map(|(_, e)| e.clone())
                    } else {
                        None
                    };
                }
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
            let ids = self.job_ids();
            let s = self.cluster.lock();
            if ids.iter().all(|id| s.jobs.get(id).is_none_or(|j| j.status.is_terminal())) {
                return;
            }
            drop(s);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Records the outcome (once) and shuts the cluster down: TaskManagers stop, files it made go.
    fn end(&self, status: &str, error: Option<String>) -> bool {
        let _one = self.ending.lock().unwrap_or_else(|p| p.into_inner());
        if self.ended.swap(true, Ordering::SeqCst) {
            return false;
        }
        {
            let mut r = self.record();
            r.status = status.to_string();
            r.error = error;
            r.end_time = Some(weir_jobmanager::state::now_ms());
        }
        self.save();
        info!(application = %self.id, status, "application ended; shutting the cluster down");
        self.cluster.request_shutdown();
        // The shutdown messages go out; a provider then waits for its TaskManagers to be gone.
        std::thread::sleep(Duration::from_millis(20));
        if let Some(p) = &self.provider {
            p.shutdown();
        }
        self.cluster.blobs.close();
        true
    }

    /// The application's status from its jobs', once `main` returned and they ended.
    fn outcome(&self) -> (&'static str, Option<String>) {
        let s = self.cluster.lock();
        let ids = self.job_ids();
        let jobs: Vec<_> = ids.iter().filter_map(|id| s.jobs.get(id)).collect();
        if let Some(j) = jobs.iter().find(|j| j.status == JobStatus::Canceled) {
            return ("CANCELED", Some(format!("job {} ({}) was cancelled", j.id, j.graph.job_name)));
        }
        if let Some(j) = jobs.iter().find(|j| j.status != JobStatus::Finished) {
            let why = j.exceptions.last().map(|(_, e)| e.clone()).unwrap_or_else(|| j.status.as_str().to_string());
            return ("FAILED", Some(format!("job {} ({}) failed: {why}", j.id, j.graph.job_name)));
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

    fn submit(&self, mut graph: JobGraph, config: BTreeMap<String, String>) -> Result<Box<dyn SubmittedJob>> {
        if self.app.ended.load(Ordering::SeqCst) {
            return Err(Error::Cancelled(format!("application {} (it ended; no more jobs)", self.app.id)));
        }
        graph.artifact = weir_core::ArtifactDigest::current()?;
        let n = self.app.submitted.fetch_add(1, Ordering::SeqCst);
        let name = graph.job_name.clone();
        let id = self.app.cluster.submit_as(graph, config, job_id(self.app.id, n))?;
        self.app.record().jobs.push(ApplicationJob { id, name, status: "CREATED".into(), error: None });
        self.app.save();
        Ok(Box::new(EmbeddedJob { id, app: self.app.clone() }))
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
        let s = self.app.cluster.lock();
        s.jobs.get(&self.id).map(|j| j.status).ok_or_else(|| Error::internal(format!("job {} vanished", self.id)))
    }

    fn cancel(&self) -> Result<()> {
        self.app.cluster.cancel(self.id)
    }

    fn counts(&self) -> Result<Vec<VertexCounts>> {
        let s = self.app.cluster.lock();
        let job = s.jobs.get(&self.id).ok_or_else(|| Error::internal(format!("job {} vanished", self.id)))?;
        Ok(job.counts())
    }

    fn wait_timeout(&self, timeout: Duration) -> Result<Option<JobResult>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            {
                let s = self.app.cluster.lock();
                let job = s.jobs.get(&self.id).ok_or_else(|| Error::internal(format!("job {} vanished", self.id)))?;
                let id = self.id.to_string();
                match job.status {
                    JobStatus::Finished => {
                        return job
                            .result
                            .clone()
                            .map(Some)
                            .ok_or_else(|| Error::internal(format!("job {id} finished without a result")));
                    }
                    JobStatus::Canceled => return Err(Error::Cancelled(id)),
                    JobStatus::Failed => {
                        let message = job.exceptions.last().map(|(_, e)| e.clone()).unwrap_or_default();
                        return Err(Error::JobFailed { job: id, message });
                    }
                    _ => {}
                }
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
    let cluster = app.settings.cluster()?;
    app.settings.execution()?;
    if cluster.ha.enabled() {
        return Err(Error::Config(
            "high-availability.type applies to session clusters (weir jobmanager) for now; an application \
             cluster does not survive its JobManager yet: run the application's jobs on an HA session cluster \
             (execution.target: remote), or leave high availability off"
                .into(),
        ));
    }
    let provider = crate::remote::provider(&cluster, app.forwarded, app.role_prefix, false)?;
    let runtime = crate::remote::runtime()?;
    let options = weir_jobmanager::Options { provider: provider.clone(), per_job: false };
    let jm = runtime.block_on(weir_jobmanager::JobManager::start(cluster, options))?;
    let cluster = jm.cluster().clone();
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
            start_time: weir_jobmanager::state::now_ms(),
            end_time: None,
            jobs: Vec::new(),
        }),
        cluster,
        submitted: AtomicU64::new(0),
        ended: AtomicBool::new(false),
        ending: Mutex::new(()),
        closing: AtomicBool::new(false),
        provider,
    });
    application.store.write(&application.record())?;
    println!("weir jobmanager ready: rest=http://{} rpc={} application={}", jm.rest_address, jm.rpc_address, app.id);
    info!(application = %app.id, rest = %jm.rest_address, "application cluster started; running main");
    watch_cancellation(application.clone());
    let mut driver = driver.with_executor(Arc::new(EmbeddedExecutor { app: application.clone() }));
    app.settings.configure(&mut driver)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| main(&mut driver, &app.args)));
    let (status, error) = match outcome {
        Ok(Ok(())) => {
            // Jobs started with execute_async and not waited for still belong to the application.
            application.wait_all(Duration::MAX);
            let (status, error) = application.outcome();
            (status, error)
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
    };
    application.end(status, error.clone());
    drop(jm);
    runtime.shutdown_timeout(Duration::from_millis(200));
    match (status, error) {
        ("SUCCEEDED", _) => Ok(()),
        ("CANCELED", e) => Err(Error::Cancelled(format!("application {}: {}", app.id, e.unwrap_or_default()))),
        (_, e) => Err(Error::JobFailed { job: format!("application {}", app.id), message: e.unwrap_or_default() }),
    }
}

/// Cancelling any job of the application cancels all of them and ends the application, even while
/// `main` is still busy: the process exits once the outcome is recorded.
fn watch_cancellation(app: Arc<Application>) {
    let spawned = std::thread::Builder::new().name("application-watch".into()).spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(10));
            if app.ended.load(Ordering::SeqCst) || app.closing.load(Ordering::SeqCst) {
                return;
            }
            let Some(id) = app.cancelled_job() else {
                app.save_if_changed();
                continue;
            };
            info!(application = %app.id, job_id = %id, "a job of the application was cancelled: cancelling all of them");
            app.cancel_all();
            if app.end("CANCELED", Some(cancelled_message(id))) {
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
        let ids = self.job_ids();
        let s = self.cluster.lock();
        ids.into_iter().find(|id| s.jobs.get(id).is_some_and(|j| j.status == JobStatus::Canceled))
    }

    /// Writes the record when a job's status changed since it was last written.
    fn save_if_changed(&self) {
        let changed = {
            let record = self.record();
            let s = self.cluster.lock();
            record.jobs.iter().any(|j| s.jobs.get(&j.id).is_some_and(|job| job.status.as_str() != j.status))
        };
        if changed {
            self.save();
        }
    }
}
