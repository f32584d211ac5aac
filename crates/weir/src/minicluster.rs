//! A JobManager and TaskManagers in one process (Flink's `MiniCluster`): the same JobManager and
//! TaskManager code as the `weir jobmanager` and `weir taskmanager` processes, speaking the real
//! control and data protocols over loopback, but started in milliseconds, with no executable to
//! build and no logs to read. Jobs run in the TaskManagers' process (`taskmanager.job-isolation:
//! shared`), rebuilt from the program's own registry.
//!
//! For tests of a job on a cluster, and of the cluster itself: a TaskManager can be stopped (its
//! JobManager sees its connection close, as after a crash) and added again, the REST endpoint
//! answers as a standalone JobManager's does. What needs real processes (a `kill -9`, network
//! partitions, worker processes of other programs, images) is tested with processes.
//!
//! ```
//! use std::time::Duration;
//! use weir::{Job, MiniCluster, Registry, StreamEnv};
//!
//! fn count(env: &mut StreamEnv, n: i64) -> weir::Result<()> {
//!     env.from_sequence(1, n).map(|x| (x % 2, 1u64)).key_by(|t| t.0).sum(|t| &mut t.1).collect("counts");
//!     Ok(())
//! }
//! static COUNT: Job<i64> = Job::new("count", count);
//!
//! # fn main() -> weir::Result<()> {
//! let cluster = MiniCluster::start(Registry::new().register(&COUNT), 2, 2)?;
//! let id = cluster.submit(&COUNT, 1000, &[("parallelism.default", "2")])?;
//! assert_eq!(cluster.wait(id, Duration::from_secs(30))?, weir::JobStatus::Finished);
//! let counts = cluster.result(id).map(|r| r.collected_by_subtask::<(i64, u64)>("counts")).transpose()?;
//! assert!(counts.is_some_and(|c| c.iter().flatten().any(|&(k, n)| k == 1 && n == 500)));
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_api::{Driver, Job, JobExecutionResult, Registry};
use weir_core::config::{ClusterConfig, JobConfig};
use weir_core::{Error, JobId, JobStatus, Result};
use weir_jobmanager::JobManager;

/// A JobManager and TaskManagers running in this process; everything stops when it is dropped.
pub struct MiniCluster {
    runtime: tokio::runtime::Runtime,
    jobmanager: JobManager,
    taskmanagers: Vec<TaskManager>,
    registry: Registry,
    /// The TaskManagers' settings.
    config: ClusterConfig,
    /// How its processes' connections are secured (a secret of its own at least).
    security: Arc<weir_security::Internal>,
    /// TaskManagers added so far (their ids are `taskmanager-N`).
    added: usize,
}

struct TaskManager {
    id: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<()>>,
}

impl std::fmt::Debug for MiniCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniCluster")
            .field("rest", &self.jobmanager.rest_address)
            .field("taskmanagers", &self.taskmanagers.iter().map(|t| t.id.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl MiniCluster {
    /// A cluster of `taskmanagers` TaskManagers with `slots` slots each, running the jobs of
    /// `registry`; returns once every TaskManager is registered.
    pub fn start(registry: Registry, taskmanagers: usize, slots: u32) -> Result<MiniCluster> {
        MiniCluster::with_settings(registry, taskmanagers, slots, &[])
    }

    /// As [`MiniCluster::start`], with cluster `settings` (Flink's keys, e.g. `heartbeat.timeout`
    /// or `restart-strategy.type`) for the JobManager and the TaskManagers.
    pub fn with_settings(
        registry: Registry,
        taskmanagers: usize,
        slots: u32,
        settings: &[(&str, &str)],
    ) -> Result<MiniCluster> {
        let mut config = ClusterConfig::default();
        let slots = slots.to_string();
        let base = [
            ("rest.address", "127.0.0.1"),
            ("rest.bind-address", "127.0.0.1"),
            ("rest.port", "0"),
            ("jobmanager.rpc.address", "127.0.0.1"),
            ("jobmanager.rpc.port", "0"),
            ("taskmanager.host", "127.0.0.1"),
            ("taskmanager.job-isolation", "shared"),
            ("taskmanager.numberOfTaskSlots", slots.as_str()),
        ];
        for (k, v) in base.iter().chain(settings) {
            config.set(k, v)?;
        }
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-minicluster")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))?;
        // Its ports are on loopback, which other users of the machine reach too: unless the
        // settings secure it otherwise, the cluster proves a secret of its own on every connection.
        let mut security = weir_security::Internal::from_config(&config)?;
        if security.secret().is_none() {
            security = security.with_secret(weir_security::Secret::generate()?);
        }
        let options = weir_jobmanager::Options { security: Some(security.clone()), ..Default::default() };
        let jobmanager = runtime.block_on(JobManager::start(config.clone(), options))?;
        config.set("jobmanager.rpc.port", &jobmanager.rpc_address.port().to_string())?;
        let mut cluster =
            MiniCluster { runtime, jobmanager, taskmanagers: Vec::new(), registry, config, security, added: 0 };
        for _ in 0..taskmanagers {
            cluster.add_taskmanager()?;
        }
        Ok(cluster)
    }

    /// Where its REST endpoint answers (`host:port`).
    pub fn rest_address(&self) -> String {
        self.jobmanager.rest_address.to_string()
    }

    /// Where TaskManagers reach its JobManager (`host:port`).
    pub fn rpc_address(&self) -> String {
        self.jobmanager.rpc_address.to_string()
    }

    /// The ids of its running TaskManagers.
    pub fn taskmanagers(&self) -> Vec<String> {
        self.taskmanagers.iter().filter(|t| !t.task.is_finished()).map(|t| t.id.clone()).collect()
    }

    /// Starts one more TaskManager; its id once it is registered.
    pub fn add_taskmanager(&mut self) -> Result<String> {
        self.added += 1;
        let id = format!("taskmanager-{}", self.added);
        let options = weir_taskmanager::Options {
            id: Some(id.clone()),
            cluster: self.config.clone(),
            job_defaults: JobConfig::default(),
            security: Some(self.security.clone()),
        };
        let registered = self.runtime.block_on(weir_taskmanager::register(&options))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let registry = self.registry.clone();
        let task = self.runtime.spawn(async move {
            weir_taskmanager::serve(registered, registry, options.job_defaults, async {
                let _ = stopped.await;
            })
            .await
        });
        self.taskmanagers.push(TaskManager { id: id.clone(), stop: Some(stop), task });
        Ok(id)
    }

    /// Stops TaskManager `id` at once: it cancels what it runs and its connection closes, so the
    /// JobManager loses it as it loses a crashed one (its jobs fail over). Waits (bounded) until
    /// it is gone.
    pub fn stop_taskmanager(&mut self, id: &str) -> Result<()> {
        let at =
            self.taskmanagers.iter().position(|t| t.id == id).ok_or_else(|| {
                Error::Config(format!("no TaskManager '{id}' in this mini cluster; see taskmanagers()"))
            })?;
        let mut tm = self.taskmanagers.remove(at);
        if let Some(stop) = tm.stop.take() {
            let _ = stop.send(());
        }
        let limit = Duration::from_secs(30);
        match self.runtime.block_on(async { tokio::time::timeout(limit, &mut tm.task).await }) {
            Ok(_) => Ok(()),
            Err(_) => {
                tm.task.abort();
                Err(Error::internal(format!("TaskManager {id} did not stop within {limit:?}")))
            }
        }
    }

    /// Submits `job` with `args` and job `settings` (e.g. `parallelism.default`,
    /// `execution.checkpointing.interval`); its id.
    pub fn submit<A: Serialize>(&self, job: &Job<A>, args: A, settings: &[(&str, &str)]) -> Result<JobId> {
        let args = serde_json::to_value(args)
            .map_err(|e| Error::InvalidArguments { job: job.name().to_string(), message: e.to_string() })?;
        let mut driver = Driver::local(self.registry.clone());
        for (k, v) in settings {
            if weir_core::config::registry::known(k)?.scope != weir_core::config::Scope::Job {
                return Err(Error::Config(format!(
                    "{k} is a cluster key, which a job cannot set: give it to MiniCluster::with_settings"
                )));
            }
            driver.set(k, v)?;
        }
        let mut graph = driver.job_graph(job.name(), &args)?;
        // The TaskManagers rebuild it from this very program, which the JobManager's blob store holds.
        graph.artifact = weir_core::ArtifactDigest::current()?;
        self.jobmanager.cluster().submit(graph, driver.submitted_config()?)
    }

    /// Job `id`'s status now.
    pub fn status(&self, id: JobId) -> Result<JobStatus> {
        self.jobmanager
            .cluster()
            .job(id)
            .map(|j| j.status())
            .ok_or_else(|| Error::Config(format!("job {id} is not known to this cluster")))
    }

    /// Waits (at most `limit`) until job `id` reached a terminal status, and returns it.
    pub fn wait(&self, id: JobId, limit: Duration) -> Result<JobStatus> {
        let start = Instant::now();
        loop {
            let status = self.status(id)?;
            if status.is_terminal() {
                return Ok(status);
            }
            if start.elapsed() > limit {
                return Err(Error::external(
                    format!("job {id} on the mini cluster"),
                    format!("it is still {status} after {limit:?}"),
                    true,
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What job `id` produced, once it finished (counters and collected records).
    pub fn result(&self, id: JobId) -> Option<JobExecutionResult> {
        self.jobmanager.cluster().job(id).and_then(|j| j.result.as_deref().cloned()).map(JobExecutionResult)
    }

    /// Why job `id` failed, oldest first (each run's failure).
    pub fn exceptions(&self, id: JobId) -> Vec<String> {
        self.jobmanager
            .cluster()
            .job(id)
            .map(|j| j.exceptions.iter().map(|(_, e)| e.clone()).collect())
            .unwrap_or_default()
    }

    /// The JobManager's cluster state, for what the methods above do not show.
    pub fn jobmanager(&self) -> &JobManager {
        &self.jobmanager
    }
}

impl Drop for MiniCluster {
    fn drop(&mut self) {
        self.jobmanager.cluster().request_shutdown();
        for tm in &mut self.taskmanagers {
            if let Some(stop) = tm.stop.take() {
                let _ = stop.send(());
            }
        }
        let tasks: Vec<_> = self.taskmanagers.drain(..).map(|t| t.task).collect();
        self.runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), async {
                for t in tasks {
                    let _ = t.await;
                }
            })
            .await;
        });
    }
}
