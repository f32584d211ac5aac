//! The driver: what a program's `main` uses to run jobs.
//!
//! Where the jobs run is the driver's target (`execution.target`): `local` runs them in this
//! process; every other target is an [`Executor`] that the `weir` crate supplies (a session
//! cluster, a per-job cluster, or the application's own JobManager in application mode). The
//! driver code stays the same whatever the target.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;
use weir_core::config::JobConfig;
use weir_core::graph::JOB_GRAPH_FORMAT_VERSION;
use weir_core::{ArtifactDigest, Error, JobGraph, JobId, JobStatus, Result};
use weir_runtime::ExecutionConfig;
use weir_runtime::local::{JobHandle, JobResult};
use weir_runtime::metrics::VertexCounts;

use crate::{Job, Registry};

/// Runs checked job graphs somewhere other than this process.
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// The target's name, for messages (`remote`, `per-job`, ...).
    fn target(&self) -> &str;
    /// Submits a job graph, built and checked by the driver, with the execution settings the
    /// program set (`config`); returns once the cluster accepted it.
    fn submit(&self, graph: JobGraph, config: JobConfig) -> Result<Box<dyn SubmittedJob>>;
}

/// A job an [`Executor`] submitted.
pub trait SubmittedJob: Send + Sync + std::fmt::Debug {
    /// The job's id.
    fn job_id(&self) -> JobId;
    /// The job's status now.
    fn status(&self) -> Result<JobStatus>;
    /// Asks the job to stop.
    fn cancel(&self) -> Result<()>;
    /// Record counters per operator, as last reported.
    fn counts(&self) -> Result<Vec<VertexCounts>>;
    /// Blocks until the job ends or `timeout` passes (`Ok(None)`): its result, or why it did not
    /// finish.
    fn wait_timeout(&self, timeout: Duration) -> Result<Option<JobResult>>;
}

/// Makes the executor of a target named by `execution.target`.
pub trait Targets: Send + Sync + std::fmt::Debug {
    /// The targets it knows, for messages.
    fn names(&self) -> Vec<&'static str>;
    /// The executor of `target`, given every setting the program made, in order.
    fn executor(&self, target: &str, settings: &[(String, String)]) -> Result<Arc<dyn Executor>>;
}

/// An executor with the target it was made for.
type MadeExecutor = (String, Arc<dyn Executor>);

/// Runs registered jobs: on the embedded local cluster by default, or on the target that
/// `execution.target` names.
#[derive(Clone, Debug)]
pub struct Driver {
    registry: Arc<Registry>,
    config: ExecutionConfig,
    /// Every setting made, in order (the targets take their own keys from them).
    settings: Vec<(String, String)>,
    /// The job keys among them, typed: what every job submitted elsewhere carries.
    job: JobConfig,
    target: String,
    targets: Option<Arc<dyn Targets>>,
    /// The executor in use, made at the first submission, with the target it was made for.
    executor: Arc<Mutex<Option<MadeExecutor>>>,
    /// Set by the runtime (application mode): every job goes there, whatever the target says.
    fixed: Option<Arc<dyn Executor>>,
    /// The embedded cluster's metrics and reporters, started with its first job when
    /// `metrics.reporter.*` configures any.
    metrics: Arc<std::sync::OnceLock<LocalMetrics>>,
}

/// The embedded cluster's own metric group (the process's figures, as a TaskManager `local`) and
/// its reporters.
struct LocalMetrics {
    _group: weir_metrics::MetricGroup,
    _reporters: weir_metrics::reporter::Reporters,
}

impl std::fmt::Debug for LocalMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalMetrics").finish()
    }
}

impl Driver {
    /// A driver for the jobs of `registry`, running them on the embedded local cluster.
    pub fn local(registry: Registry) -> Self {
        Driver {
            registry: Arc::new(registry),
            config: ExecutionConfig::default(),
            settings: Vec::new(),
            job: JobConfig::default(),
            target: "local".into(),
            targets: None,
            executor: Arc::new(Mutex::new(None)),
            fixed: None,
            metrics: Arc::default(),
        }
    }

    /// Starts the embedded cluster's reporters, once, if the settings configure any.
    fn start_local_metrics(&self) -> Result<()> {
        if self.metrics.get().is_some() || !self.settings.iter().any(|(k, _)| k.starts_with("metrics.")) {
            return Ok(());
        }
        let mut cluster = weir_core::config::ClusterConfig::default();
        for (k, v) in &self.settings {
            cluster.set(k, v)?;
        }
        let registry = weir_metrics::global();
        let group = registry
            .group("taskmanager", vec![("host".into(), weir_metrics::hostname()), ("tm_id".into(), "local".into())]);
        weir_metrics::process::register(&group);
        let reporters = weir_metrics::reporter::Reporters::start(&cluster.metrics, registry)?;
        for a in reporters.addresses() {
            info!(address = %a, "the embedded cluster's metrics are at http://{a}/metrics");
        }
        let _ = self.metrics.set(LocalMetrics { _group: group, _reporters: reporters });
        Ok(())
    }

    /// Lets `execution.target` name the targets that `targets` makes.
    pub fn with_targets(mut self, targets: Arc<dyn Targets>) -> Self {
        self.targets = Some(targets);
        self
    }

    /// Sends every job to `executor`, whatever `execution.target` says (the runtime's choice: in
    /// application mode, the application's JobManager).
    pub fn with_executor(mut self, executor: Arc<dyn Executor>) -> Self {
        self.fixed = Some(executor);
        self
    }

    /// The target jobs go to (`execution.target`).
    pub fn target(&self) -> &str {
        self.fixed.as_ref().map(|e| e.target()).unwrap_or(&self.target)
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The execution settings jobs get.
    pub fn config(&self) -> &ExecutionConfig {
        &self.config
    }

    /// Sets one configuration key (Flink's names, e.g. `parallelism.default`); unknown keys and
    /// bad values are errors.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        let (def, typed) = weir_core::config::registry::parse(key, value)?;
        self.config.apply(def, &typed)?;
        if def.scope == weir_core::config::Scope::Job {
            self.job.set(key, value)?;
        }
        if def.key == "execution.target" {
            self.target = value.trim().to_string();
        }
        self.settings.push((key.to_string(), value.to_string()));
        Ok(self)
    }

    /// Applies every key of a configuration file.
    pub fn apply_file(&mut self, file: &weir_core::config::ConfigFile) -> Result<&mut Self> {
        file.apply(|k, v| self.set(k, v).map(|_| ()))?;
        Ok(self)
    }

    /// The job keys the program set, typed (the cluster's own defaults apply to the rest).
    pub fn job_settings(&self) -> &JobConfig {
        &self.job
    }

    /// The executor of the target, made on first use.
    fn executor(&self) -> Result<Option<Arc<dyn Executor>>> {
        if let Some(e) = &self.fixed {
            return Ok(Some(e.clone()));
        }
        if self.target == "local" {
            return Ok(None);
        }
        let mut made = self.executor.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((target, e)) = made.as_ref()
            && *target == self.target
        {
            return Ok(Some(e.clone()));
        }
        let Some(targets) = &self.targets else {
            return Err(Error::Config(format!(
                "execution.target '{}' needs the weir runtime: run the program through weir::App (only 'local' \
                 works without it)",
                self.target
            )));
        };
        let e = targets.executor(&self.target, &self.settings)?;
        *made = Some((self.target.clone(), e.clone()));
        Ok(Some(e))
    }

    /// Sets the default parallelism.
    pub fn with_parallelism(mut self, parallelism: u32) -> Result<Self> {
        self.set("parallelism.default", &parallelism.to_string())?;
        Ok(self)
    }

    /// The job graph that would be submitted for `name` and `args`, after the client-side checks.
    pub fn job_graph(&self, name: &str, args: &serde_json::Value) -> Result<JobGraph> {
        let graph = self.registry.build(name, args, &self.config)?;
        graph.validate()?;
        let plan = graph.plan();
        Ok(JobGraph {
            format_version: JOB_GRAPH_FORMAT_VERSION,
            // The local target runs in this very process, so the artifact is known to match and
            // hashing the executable would only slow start-up. Remote targets fill in the digest.
            artifact: ArtifactDigest("in-process".into()),
            job_name: name.to_string(),
            args: args.clone(),
            fingerprint: plan.fingerprint(),
            plan,
        })
    }

    /// Runs `job` with `args` and blocks until it ends: its result, or why it did not finish.
    pub fn execute<A: Serialize>(&self, job: &Job<A>, args: A) -> Result<JobExecutionResult> {
        self.execute_async(job, args)?.wait()
    }

    /// Starts `job` with `args` and returns a handle at once.
    pub fn execute_async<A: Serialize>(&self, job: &Job<A>, args: A) -> Result<JobClient> {
        let args = serde_json::to_value(args)
            .map_err(|e| Error::InvalidArguments { job: job.name().to_string(), message: e.to_string() })?;
        self.execute_named(job.name(), &args)
    }

    /// Starts the job registered as `name` with JSON `args`.
    pub fn execute_named(&self, name: &str, args: &serde_json::Value) -> Result<JobClient> {
        let graph = self.job_graph(name, args)?;
        self.submit(graph)
    }

    /// What a job takes to the cluster: the job keys the program set, and the two that shaped its
    /// graph (parallelism and key groups) as they were when it was built. The cluster rebuilds the
    /// job to check it, and its own defaults for those two would give another graph.
    pub fn submitted_config(&self) -> Result<JobConfig> {
        let mut c = self.job.clone();
        c.set("parallelism.default", &self.config.parallelism.to_string())?;
        c.set("pipeline.max-parallelism", &self.config.max_parallelism.to_string())?;
        Ok(c)
    }

    /// Submits a job graph: the cluster rebuilds the job from the registry and refuses it if the
    /// rebuilt plan is not the submitted one.
    pub fn submit(&self, graph: JobGraph) -> Result<JobClient> {
        if let Some(executor) = self.executor()? {
            info!(job = %graph.job_name, target = executor.target(), fingerprint = %graph.fingerprint, "submitting job");
            let job = executor.submit(graph, self.submitted_config()?)?;
            return Ok(JobClient { inner: Inner::Submitted(Arc::from(job)) });
        }
        let rebuilt = self.registry.build(&graph.job_name, &graph.args, &self.config)?;
        graph.check_rebuilt(None, &rebuilt.plan())?;
        let job_id = JobId::random();
        info!(job_id = %job_id, job = %graph.job_name, fingerprint = %graph.fingerprint, "submitting job");
        self.start_local_metrics()?;
        let handle = weir_runtime::local::submit(rebuilt, job_id)?;
        Ok(JobClient { inner: Inner::Local(handle) })
    }
}

/// A handle on a submitted job.
#[derive(Clone, Debug)]
pub struct JobClient {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    /// Running in this process.
    Local(JobHandle),
    /// Running where an executor sent it.
    Submitted(Arc<dyn SubmittedJob>),
}

impl JobClient {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        match &self.inner {
            Inner::Local(h) => h.job_id(),
            Inner::Submitted(j) => j.job_id(),
        }
    }

    /// The job's status now (a job on a cluster that cannot be reached: the error).
    pub fn status(&self) -> Result<JobStatus> {
        match &self.inner {
            Inner::Local(h) => Ok(h.status()),
            Inner::Submitted(j) => j.status(),
        }
    }

    /// Asks the job to stop; [`JobClient::wait`] then returns [`Error::Cancelled`].
    pub fn cancel(&self) -> Result<()> {
        match &self.inner {
            Inner::Local(h) => {
                h.cancel();
                Ok(())
            }
            Inner::Submitted(j) => j.cancel(),
        }
    }

    /// Record counters per operator, live (on a cluster: as last reported, about every second).
    pub fn counts(&self) -> Vec<VertexCounts> {
        match &self.inner {
            Inner::Local(h) => h.counts(),
            Inner::Submitted(j) => j.counts().unwrap_or_default(),
        }
    }

    /// Checkpoint counts and history of a job running in this process with checkpoints.
    pub fn checkpoint_stats(&self) -> Option<weir_runtime::checkpoint::coordinator::CheckpointStats> {
        match &self.inner {
            Inner::Local(h) => h.checkpoint_stats(),
            Inner::Submitted(_) => None,
        }
    }

    /// Task threads of the job still alive in this process (0 once it is terminal: nothing is
    /// left behind; always 0 for a job running elsewhere).
    pub fn live_tasks(&self) -> usize {
        match &self.inner {
            Inner::Local(h) => h.live_tasks(),
            Inner::Submitted(_) => 0,
        }
    }

    /// For a job running in this process: its tasks still initializing (restoring their state,
    /// opening their readers), which take no part in checkpoints yet; `None` for a job running
    /// elsewhere (its REST API counts them per vertex, as `INITIALIZING`).
    pub fn initializing_tasks(&self) -> Option<usize> {
        match &self.inner {
            Inner::Local(h) => Some(h.initializing()),
            Inner::Submitted(_) => None,
        }
    }

    /// Blocks until the job ends.
    pub fn wait(&self) -> Result<JobExecutionResult> {
        match &self.inner {
            Inner::Local(h) => h.wait().map(JobExecutionResult),
            Inner::Submitted(j) => loop {
                if let Some(r) = j.wait_timeout(Duration::from_secs(3600))? {
                    return Ok(JobExecutionResult(r));
                }
            },
        }
    }

    /// Blocks until the job ends or `timeout` passes (`Ok(None)`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<JobExecutionResult>> {
        let r = match &self.inner {
            Inner::Local(h) => h.wait_timeout(timeout)?,
            Inner::Submitted(j) => j.wait_timeout(timeout)?,
        };
        Ok(r.map(JobExecutionResult))
    }
}

/// What a finished job hands back (Flink's `JobExecutionResult`).
#[derive(Clone, Debug)]
pub struct JobExecutionResult(pub JobResult);

impl JobExecutionResult {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.0.job_id
    }

    /// Wall time from submission to the end.
    pub fn net_runtime(&self) -> Duration {
        self.0.net_runtime
    }

    /// Record counters per operator.
    pub fn counts(&self) -> &[VertexCounts] {
        &self.0.counts
    }

    /// The records each subtask of the collect sink `name` received, by subtask index.
    pub fn collected_by_subtask<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<Vec<T>>> {
        let parts = self.0.accumulators.get(name).ok_or_else(|| {
            Error::InvalidJob(format!(
                "the job has no collect sink named '{name}'; it has: {}",
                self.0.accumulators.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        parts.values().map(|p| weir_connectors::collect::decode::<T>(name, p)).collect()
    }

    /// The records the collect sink `name` received, subtask 0's first.
    pub fn collected<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>> {
        let parts = self.0.accumulators.get(name).ok_or_else(|| {
            Error::InvalidJob(format!(
                "the job has no collect sink named '{name}'; it has: {}",
                self.0.accumulators.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let mut all = Vec::new();
        for p in parts.values() {
            all.extend(weir_connectors::collect::decode::<T>(name, p)?);
        }
        Ok(all)
    }
}
