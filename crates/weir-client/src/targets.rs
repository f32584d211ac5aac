//! The targets a driver's jobs go to besides `local` (`execution.target`): `remote`, a running
//! session cluster, and `per-job`, a cluster started for each job and gone when it ends. Both talk
//! to a JobManager's REST endpoint, so one executor serves them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weir_api::{Executor, SubmittedJob, Targets};
use weir_core::config::{ClusterConfig, JobConfig};
use weir_core::result::{JobResult, VertexCounts};
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};

use crate::perjob::PerJobCluster;
use crate::rest::RestClient;

/// The targets of the `weir` crate, for [`weir_api::Driver::with_targets`].
#[derive(Debug)]
pub struct WeirTargets {
    /// What reaches weir's command line in this executable (`--weir` in a user's program).
    pub role_prefix: Vec<String>,
}

impl Targets for WeirTargets {
    fn names(&self) -> Vec<&'static str> {
        ClusterConfig::TARGETS.to_vec()
    }

    fn executor(&self, target: &str, settings: &[(String, String)]) -> Result<Arc<dyn Executor>> {
        let mut cluster = ClusterConfig::default();
        for (k, v) in settings {
            cluster.set(k, v)?;
        }
        match target {
            "remote" => Ok(Arc::new(RestExecutor::remote(&crate::rest::cluster_rest_address(&cluster)?, &cluster))),
            "per-job" => {
                let forwarded = settings.iter().flat_map(|(k, v)| ["-D".to_string(), format!("{k}={v}")]).collect();
                Ok(Arc::new(RestExecutor::per_job(forwarded, self.role_prefix.clone(), false)))
            }
            other => Err(Error::Config(format!(
                "unknown target '{other}'; valid targets: {}",
                ClusterConfig::TARGETS.join(", ")
            ))),
        }
    }
}

/// Where a [`RestExecutor`] sends jobs.
#[derive(Debug)]
enum Destination {
    /// A running cluster's REST address, and the settings its client is secured by.
    Remote(String, Box<ClusterConfig>),
    /// A per-job cluster for each job, started from this program with these settings.
    PerJob { forwarded: Vec<String>, role_prefix: Vec<String>, detached: bool },
}

/// Submits jobs to a JobManager over REST, uploading this program when the cluster lacks it.
#[derive(Debug)]
pub struct RestExecutor {
    destination: Destination,
}

impl RestExecutor {
    /// Jobs go to the session cluster whose REST endpoint is at `address` (`host:port`), over
    /// HTTPS if `cluster` says so (`security.ssl.rest.*`).
    pub fn remote(address: &str, cluster: &ClusterConfig) -> RestExecutor {
        RestExecutor { destination: Destination::Remote(address.to_string(), Box::new(cluster.clone())) }
    }

    /// Every job gets a cluster of its own, started from this program with `forwarded` settings
    /// (`-D key=value` arguments) behind `role_prefix`. A `detached` cluster runs its job to the end
    /// without the client.
    pub fn per_job(forwarded: Vec<String>, role_prefix: Vec<String>, detached: bool) -> RestExecutor {
        RestExecutor { destination: Destination::PerJob { forwarded, role_prefix, detached } }
    }
}

impl Executor for RestExecutor {
    fn target(&self) -> &str {
        match self.destination {
            Destination::Remote(..) => "remote",
            Destination::PerJob { .. } => "per-job",
        }
    }

    fn submit(&self, mut graph: JobGraph, config: JobConfig) -> Result<Box<dyn SubmittedJob>> {
        // The cluster runs the job from the artifact that built it: this executable, uploaded to its
        // blob store unless the cluster has it already (a cluster started from this program does).
        graph.artifact = weir_core::graph::ArtifactDigest::current()?;
        let (cluster, client, detached) = match &self.destination {
            Destination::Remote(address, settings) => (None, RestClient::secured(address, settings)?, false),
            Destination::PerJob { forwarded, role_prefix, detached } => {
                let prefix: Vec<&str> = role_prefix.iter().map(String::as_str).collect();
                // The cluster is this job's: it may read exactly the job's cached files.
                let mut forwarded = forwarded.clone();
                if !graph.plan.cached_files.is_empty() {
                    let files: Vec<&str> = graph.plan.cached_files.values().map(String::as_str).collect();
                    forwarded.extend(["-D".to_string(), format!("weir.cached-files.allowed-dirs={}", files.join(","))]);
                }
                let cluster = PerJobCluster::start(&forwarded, &prefix, *detached)?;
                eprintln!("Per-job cluster started: {}", crate::rest::url(&cluster.rest));
                let client = RestClient::started(&cluster.rest);
                (Some(cluster), client, *detached)
            }
        };
        let exe = weir_core::graph::this_program()?;
        client.ensure_artifact(&exe, &graph.artifact)?;
        let answer = client.post(
            "/jobs",
            &json!({ "graph": graph, "config": config.rendered().into_iter().collect::<BTreeMap<_, _>>() }),
        )?;
        let id: JobId = answer["jobid"]
            .as_str()
            .ok_or_else(|| Error::internal("the JobManager answered without a job id"))?
            .parse()?;
        // A detached per-job cluster shuts down by itself once its job ended.
        let cluster = match cluster {
            Some(c) if detached => {
                c.detach();
                None
            }
            other => other,
        };
        Ok(Box::new(RestJob { id, client, cluster: Mutex::new(cluster) }))
    }
}

/// A job on a cluster, watched over REST.
struct RestJob {
    id: JobId,
    client: RestClient,
    /// The per-job cluster the job runs on, until it is gone.
    cluster: Mutex<Option<PerJobCluster>>,
}

impl std::fmt::Debug for RestJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestJob").field("id", &self.id).finish()
    }
}

impl RestJob {
    fn details(&self) -> Result<Value> {
        self.client.get(&format!("/jobs/{}", self.id))
    }

    /// The result of the job, which is terminal; a per-job cluster then shuts down.
    fn outcome(&self, status: JobStatus) -> Result<JobResult> {
        let result = self.client.get(&format!("/jobs/{}/execution-result", self.id));
        if let Some(cluster) = self.cluster.lock().unwrap_or_else(|p| p.into_inner()).take() {
            cluster.wait_gone()?;
        }
        let result = result?;
        let r = &result["job-execution-result"];
        let id = self.id.to_string();
        match status {
            JobStatus::Finished => serde_json::from_value(r["weir-result"].clone())
                .map_err(|e| Error::internal(format!("the JobManager sent a result this client cannot read: {e}"))),
            JobStatus::Canceled => Err(Error::Cancelled(id)),
            _ => Err(Error::JobFailed {
                job: id,
                message: r["failure-cause"]["stack-trace"].as_str().unwrap_or("no cause reported").to_string(),
            }),
        }
    }
}

impl SubmittedJob for RestJob {
    fn job_id(&self) -> JobId {
        self.id
    }

    fn status(&self) -> Result<JobStatus> {
        serde_json::from_value(self.details()?["state"].clone())
            .map_err(|e| Error::internal(format!("the JobManager sent a job status this client cannot read: {e}")))
    }

    fn cancel(&self) -> Result<()> {
        self.client.patch(&format!("/jobs/{}?mode=cancel", self.id)).map(|_| ())
    }

    fn counts(&self) -> Result<Vec<VertexCounts>> {
        let job = self.details()?;
        let vertices = job["vertices"].as_array().cloned().unwrap_or_default();
        Ok(vertices
            .iter()
            .map(|v| VertexCounts {
                name: v["name"].as_str().unwrap_or_default().to_string(),
                records_in: v["metrics"]["read-records"].as_u64().unwrap_or(0),
                records_out: v["metrics"]["write-records"].as_u64().unwrap_or(0),
            })
            .collect())
    }

    fn wait_timeout(&self, timeout: Duration) -> Result<Option<JobResult>> {
        let deadline = Instant::now().checked_add(timeout);
        // Poll quickly at first (most jobs a client waits for are short), then back off.
        let mut pause = Duration::from_millis(2);
        loop {
            let status = self.status()?;
            if status.is_terminal() {
                return self.outcome(status).map(Some);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now())).unwrap_or(pause);
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}
