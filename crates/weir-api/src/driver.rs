//! The driver: what a program's `main` uses to run jobs.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;
use weir_core::graph::JOB_GRAPH_FORMAT_VERSION;
use weir_core::{ArtifactDigest, Error, JobGraph, JobId, JobStatus, Result};
use weir_runtime::ExecutionConfig;
use weir_runtime::local::{JobHandle, JobResult};
use weir_runtime::metrics::VertexCounts;

use crate::{Job, Registry};

/// Runs registered jobs. Today on the embedded local cluster (the default target); the driver's
/// code stays the same when later targets run the job elsewhere.
#[derive(Clone, Debug)]
pub struct Driver {
    registry: Arc<Registry>,
    config: ExecutionConfig,
}

impl Driver {
    /// A driver for the jobs of `registry`, running them on the embedded local cluster.
    pub fn local(registry: Registry) -> Self {
        Driver { registry: Arc::new(registry), config: ExecutionConfig::default() }
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
        self.config.set(key, value)?;
        Ok(self)
    }

    /// Applies every key of a configuration file.
    pub fn apply_file(&mut self, file: &weir_core::config::ConfigFile) -> Result<&mut Self> {
        self.config.apply_file(file)?;
        Ok(self)
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

    /// Submits a job graph: the cluster rebuilds the job from the registry and refuses it if the
    /// rebuilt plan is not the submitted one.
    pub fn submit(&self, graph: JobGraph) -> Result<JobClient> {
        let rebuilt = self.registry.build(&graph.job_name, &graph.args, &self.config)?;
        graph.check_rebuilt(None, &rebuilt.plan())?;
        let job_id = JobId::random();
        info!(job_id = %job_id, job = %graph.job_name, fingerprint = %graph.fingerprint, "submitting job");
        let handle = weir_runtime::local::submit(rebuilt, job_id)?;
        Ok(JobClient { handle })
    }
}

/// A handle on a submitted job.
#[derive(Clone, Debug)]
pub struct JobClient {
    handle: JobHandle,
}

impl JobClient {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.handle.job_id()
    }

    /// The job's status now.
    pub fn status(&self) -> JobStatus {
        self.handle.status()
    }

    /// Asks the job to stop; [`JobClient::wait`] then returns [`Error::Cancelled`].
    pub fn cancel(&self) {
        self.handle.cancel()
    }

    /// Record counters per operator, live.
    pub fn counts(&self) -> Vec<VertexCounts> {
        self.handle.counts()
    }

    /// Task threads of the job still alive (0 once it is terminal: nothing is left behind).
    pub fn live_tasks(&self) -> usize {
        self.handle.live_tasks()
    }

    /// Blocks until the job ends.
    pub fn wait(&self) -> Result<JobExecutionResult> {
        self.handle.wait().map(JobExecutionResult)
    }

    /// Blocks until the job ends or `timeout` passes (`Ok(None)`).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<JobExecutionResult>> {
        Ok(self.handle.wait_timeout(timeout)?.map(JobExecutionResult))
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
            Error::Config(format!(
                "the job has no collect sink named '{name}'; it has: {}",
                self.0.accumulators.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        parts.values().map(|p| weir_connectors::collect::decode::<T>(name, p)).collect()
    }

    /// The records the collect sink `name` received, subtask 0's first.
    pub fn collected<T: DeserializeOwned>(&self, name: &str) -> Result<Vec<T>> {
        let parts = self.0.accumulators.get(name).ok_or_else(|| {
            Error::Config(format!(
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
