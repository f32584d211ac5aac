//! The cluster roles of the executable and the client commands that talk to a running cluster.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use weir_api::{Driver, Registry};
use weir_core::config::{ClusterConfig, ConfigFile, JobConfig};
use weir_core::{Error, Result};
use weir_deploy::{DockerProvider, ProcessProvider, ResourceProvider};
use weir_runtime::ExecutionConfig;

/// Settings in the order they apply: the file (`--config`, else `$WEIR_CONF_DIR/config.yaml`),
/// then `-D key=value`, then `-p`. Each part of weir takes its own keys from the list.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Key, value, and where it came from (a file's path, `-D` or `-p`), in order.
    pub entries: Vec<(String, String, String)>,
}

/// Names the origin of a bad setting in its error.
fn from(origin: &str, e: Error) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!("{origin}: {m}")),
        other => other,
    }
}

impl Settings {
    /// Gathers the settings of a command.
    pub fn gather(config: Option<&Path>, parallelism: Option<u32>, define: &[String]) -> Result<Settings> {
        let file = match config {
            Some(path) => Some(ConfigFile::load(path)?),
            None => ConfigFile::from_env()?,
        };
        let mut entries: Vec<(String, String, String)> = match file {
            Some(f) => {
                let origin = f.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                f.values.into_iter().map(|(k, v)| (k, v, origin.clone())).collect()
            }
            None => Vec::new(),
        };
        for d in define {
            let (k, v) = d
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("-D {d}: expected key=value, e.g. -D parallelism.default=4")))?;
            entries.push((k.trim().to_string(), v.trim().to_string(), format!("-D {d}")));
        }
        if let Some(p) = parallelism {
            entries.push(("parallelism.default".into(), p.to_string(), format!("-p {p}")));
        }
        Ok(Settings { entries })
    }

    /// Applies the execution keys to a driver (and reports unknown keys).
    pub fn configure(&self, driver: &mut Driver) -> Result<()> {
        for (k, v, origin) in &self.entries {
            driver.set(k, v).map_err(|e| from(origin, e))?;
        }
        Ok(())
    }

    /// The execution settings.
    pub fn execution(&self) -> Result<ExecutionConfig> {
        let mut c = ExecutionConfig::default();
        for (k, v, origin) in &self.entries {
            c.set(k, v).map_err(|e| from(origin, e))?;
        }
        Ok(c)
    }

    /// The cluster settings.
    pub fn cluster(&self) -> Result<ClusterConfig> {
        let mut c = ClusterConfig::default();
        for (k, v, origin) in &self.entries {
            c.set(k, v).map_err(|e| from(origin, e))?;
        }
        c.validate()?;
        Ok(c)
    }

    /// The job keys, typed: what a job submitted to a cluster carries, or a cluster process's
    /// defaults for the jobs it runs.
    pub fn job_config(&self) -> Result<JobConfig> {
        let mut c = JobConfig::default();
        for (k, v, origin) in &self.entries {
            c.set(k, v).map_err(|e| from(origin, e))?;
        }
        Ok(c)
    }
}

/// The async runtime of a cluster process.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))
}

async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// The resource provider `resourcemanager.provider` names (`None`: standalone), starting
/// TaskManagers from this program behind `role_prefix` with `forwarded` settings; `quiet`: their
/// output goes nowhere.
pub fn provider(
    cluster: &ClusterConfig,
    forwarded: &[String],
    role_prefix: &[&str],
    quiet: bool,
) -> Result<Option<Arc<dyn ResourceProvider>>> {
    match cluster.provider.as_str() {
        "process" => {
            let program = weir_core::graph::this_program()?;
            let prefix = role_prefix.iter().map(|s| s.to_string()).collect();
            Ok(Some(Arc::new(ProcessProvider::new(program, prefix, forwarded.to_vec(), quiet)?)))
        }
        "docker" => {
            let needs = |key: &str, value: &Option<String>| {
                value.clone().ok_or_else(|| {
                    Error::Config(format!(
                        "resourcemanager.provider: docker needs {key} (run-application -t docker sets it for you)"
                    ))
                })
            };
            let image = needs("docker.image", &cluster.docker_image)?;
            let network = needs("docker.network", &cluster.docker_network)?;
            let docker = weir_deploy::docker::Docker::new(cluster.docker_host.as_deref())?;
            let program = vec![weir_deploy::image::PROGRAM.to_string(), "--weir".to_string()];
            Ok(Some(Arc::new(DockerProvider::new(docker, image, network, program, forwarded.to_vec())?)))
        }
        _ => Ok(None),
    }
}

/// `weir jobmanager`: serves until `DELETE /cluster`, SIGTERM or Ctrl-C (a per-job cluster: until
/// its job ended). `forwarded` are its settings as arguments, for the TaskManagers it starts with
/// an active resource provider (from this program, behind `role_prefix`).
pub fn jobmanager(
    settings: &Settings,
    forwarded: &[String],
    per_job: bool,
    detached: bool,
    role_prefix: &[&str],
) -> Result<()> {
    let cluster = settings.cluster()?;
    settings.execution()?;
    let job_defaults = settings.job_config()?;
    let provider = provider(&cluster, forwarded, role_prefix, detached)?;
    let options = weir_jobmanager::Options { provider: provider.clone(), per_job, job_defaults };
    let outcome = runtime()?.block_on(async {
        let jm = weir_jobmanager::JobManager::start(cluster, options).await?;
        println!("weir jobmanager ready: rest=http://{} rpc={}", jm.rest_address, jm.rpc_address);
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = jm.wait_for_shutdown() => {}
            _ = terminated() => jm.cluster().request_shutdown(),
        }
        // Let the shutdown messages and the REST answer go out (a provider then waits for its
        // TaskManagers to be gone, which says the messages went out).
        tokio::time::sleep(Duration::from_millis(if provider.is_some() { 20 } else { 200 })).await;
        Ok(())
    });
    // The TaskManagers it started stop on its shutdown message; any that does not is ended.
    if let Some(p) = provider {
        p.shutdown();
    }
    outcome
}

/// `weir taskmanager`: registers with the JobManager and runs what it deploys.
pub fn taskmanager(settings: &Settings, id: Option<String>, registry: Registry) -> Result<()> {
    let mut options =
        weir_taskmanager::Options { id, cluster: settings.cluster()?, job_defaults: settings.job_config()? };
    runtime()?.block_on(async {
        if let Some(ha) = weir_ha::connect(&options.cluster.ha).await? {
            // One id for every registration, so the leaders see the same TaskManager.
            options.id.get_or_insert_with(weir_taskmanager::default_id);
            return tokio::select! {
                r = follow_leaders(&options, ha, registry) => r,
                _ = terminated() => Ok(()),
            };
        }
        let registered = weir_taskmanager::register(&options).await?;
        // On stderr: a TaskManager's stdout carries its jobs' output (print sinks), which a per-job
        // or application cluster passes on as the program's own.
        eprintln!("weir taskmanager ready: id={} jobmanager={}", registered.id, registered.jobmanager);
        tokio::select! {
            r = weir_taskmanager::serve(registered, registry, options.job_defaults.clone(), std::future::pending()) => r,
            _ = terminated() => Ok(()),
        }
    })
}

/// A TaskManager with high availability: it registers with whichever JobManager leads, and when
/// a newer leader is elected (or its JobManager goes away) its jobs are cancelled and it registers
/// with the new one. It ends when a leader shuts it down.
async fn follow_leaders(
    options: &weir_taskmanager::Options,
    ha: Arc<dyn weir_ha::HaServices>,
    registry: Registry,
) -> Result<()> {
    let mut leader = weir_ha::follow_leader(ha.clone());
    let mut announced = false;
    loop {
        let current = leader
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::internal("leader retrieval stopped"))?
            .clone()
            .ok_or_else(|| Error::internal("leader retrieval gave no leader"))?;
        let registered = match weir_taskmanager::register_at(options, &current.info.rpc, 1).await {
            Ok(r) if r.leader_epoch >= current.epoch => r,
            Ok(r) => {
                tracing::warn!(epoch = r.leader_epoch, newest = current.epoch, "refusing a deposed leader");
                tokio::time::sleep(weir_ha::RETRIEVAL_INTERVAL).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(leader = %current.info.rpc, error = %e, "cannot register with the leader; retrying");
                tokio::time::sleep(weir_ha::RETRIEVAL_INTERVAL).await;
                continue;
            }
        };
        let epoch = registered.leader_epoch;
        if !announced {
            eprintln!(
                "weir taskmanager ready: id={} jobmanager={} (high availability)",
                registered.id, registered.jobmanager
            );
            announced = true;
        }
        tracing::info!(leader = %current.info.id, epoch, service = %ha.describe(), "serving the leader");
        let mut watch = leader.clone();
        let deposed = async move {
            let _ = watch.wait_for(|l| l.as_ref().is_some_and(|l| l.epoch > epoch)).await;
        };
        match weir_taskmanager::serve(registered, registry.clone(), options.job_defaults.clone(), deposed).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, "the leader is gone; finding the next one"),
        }
    }
}

/// A small REST client for one JobManager.
pub struct RestClient {
    base: String,
    agent: ureq::Agent,
}

impl RestClient {
    /// A client for the REST endpoint at `address` (`host:port`).
    pub fn new(address: &str) -> RestClient {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let base = if address.starts_with("http://") { address.to_string() } else { format!("http://{address}") };
        RestClient { base, agent }
    }

    fn unreachable(&self, e: ureq::Error) -> Error {
        Error::Network {
            context: "cannot reach the JobManager's REST endpoint (start the cluster, or pass its address with -m host:port) at".into(),
            peer: self.base.clone(),
            source: std::io::Error::other(e.to_string()),
        }
    }

    fn answer(&self, r: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<(u16, Value)> {
        let mut r = r.map_err(|e| self.unreachable(e))?;
        let status = r.status().as_u16();
        let body = r.body_mut().read_json::<Value>().unwrap_or(Value::Null);
        Ok((status, body))
    }

    fn ok(&self, (status, body): (u16, Value), what: &str) -> Result<Value> {
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let errors: Vec<String> = body["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e.as_str().map(String::from)).collect())
            .unwrap_or_default();
        let message = if errors.is_empty() { format!("HTTP {status}") } else { errors.join("; ") };
        Err(if status < 500 {
            Error::Config(format!("{what}: {message}"))
        } else {
            Error::internal(format!("{what}: {message}"))
        })
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Result<Value> {
        let r = self.answer(self.agent.get(&format!("{}{path}", self.base)).call())?;
        self.ok(r, &format!("GET {path}"))
    }

    /// POST JSON to a path.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let r = self.answer(self.agent.post(&format!("{}{path}", self.base)).send_json(body))?;
        self.ok(r, &format!("the JobManager refused POST {path}"))
    }

    /// Makes sure the cluster's blob store has the artifact at `path` with `digest`: asks, and
    /// uploads it (with the digest, which the JobManager verifies) when it is missing.
    pub fn ensure_artifact(&self, path: &std::path::Path, digest: &weir_core::ArtifactDigest) -> Result<()> {
        let id = digest.hex();
        let (status, _) = self.answer(self.agent.get(&format!("{}/artifacts/{id}", self.base)).call())?;
        if status == 200 {
            return Ok(());
        }
        let file = std::fs::File::open(path).map_err(|e| Error::io("cannot read the artifact to upload", path, e))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        eprintln!("Uploading artifact {} ({:.1} MB) to the cluster", digest.0, size as f64 / 1e6);
        let request = self
            .agent
            .post(&format!("{}/artifacts/upload?digest={id}", self.base))
            .header("content-type", "application/octet-stream")
            .config()
            // Large artifacts over slow links: no overall deadline, but no stall either.
            .timeout_global(None)
            .timeout_send_body(Some(Duration::from_secs(60)))
            .build();
        let r = self.answer(request.send(file))?;
        self.ok(r, "the JobManager refused the artifact upload").map(|_| ())
    }

    /// PATCH a path.
    pub fn patch(&self, path: &str) -> Result<Value> {
        let r = self.answer(self.agent.patch(&format!("{}{path}", self.base)).send_empty())?;
        self.ok(r, &format!("PATCH {path}"))
    }

    /// DELETE a path.
    pub fn delete(&self, path: &str) -> Result<Value> {
        let r = self.answer(self.agent.delete(&format!("{}{path}", self.base)).call())?;
        self.ok(r, &format!("DELETE {path}"))
    }
}

/// The REST address of the cluster: `-m`, else `rest.address:rest.port`.
pub fn rest_address(settings: &Settings, explicit: Option<&str>) -> Result<String> {
    match explicit {
        Some(m) => Ok(m.to_string()),
        None => cluster_rest_address(&settings.cluster()?),
    }
}

/// How long a client waits for a leader to be elected.
const LEADER_WAIT: Duration = Duration::from_secs(30);

/// The REST endpoint of a cluster: with high availability, the current leader's (retrieved from
/// the coordination service), else `rest.address:rest.port`.
pub fn cluster_rest_address(c: &ClusterConfig) -> Result<String> {
    if !c.ha.enabled() {
        return Ok(format!("{}:{}", c.rest_address, c.rest_port));
    }
    let find = async {
        let ha = weir_ha::connect(&c.ha).await?.ok_or_else(|| Error::internal("high availability is off"))?;
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            if let Some(leader) = ha.leader().await? {
                return Ok(leader.info.rest);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Coordination {
                    context: "cannot find the cluster's leader".into(),
                    service: ha.describe(),
                    message: format!(
                        "no JobManager of cluster '{}' leads after {} s; start one with the same \
                         high-availability settings",
                        c.ha.cluster_id,
                        LEADER_WAIT.as_secs()
                    ),
                    retryable: true,
                });
            }
            tokio::time::sleep(weir_ha::RETRIEVAL_INTERVAL).await;
        }
    };
    match tokio::runtime::Handle::try_current() {
        // Inside a runtime (a program's `execute`): on a thread of its own.
        Ok(_) => std::thread::scope(|scope| {
            scope.spawn(|| runtime()?.block_on(find)).join().map_err(|_| Error::internal("leader lookup panicked"))?
        }),
        Err(_) => runtime()?.block_on(find),
    }
}

/// `weir list`: the cluster's jobs.
pub fn list(address: &str) -> Result<()> {
    let jobs = RestClient::new(address).get("/jobs/overview")?;
    let jobs = jobs["jobs"].as_array().cloned().unwrap_or_default();
    if jobs.is_empty() {
        println!("No jobs.");
    }
    for j in jobs {
        println!(
            "{} : {} ({})",
            j["jid"].as_str().unwrap_or("?"),
            j["name"].as_str().unwrap_or("?"),
            j["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `weir savepoint` and `weir stop`: takes a savepoint of `job` under `target` (`stop`:
/// `Some(drain)` stops the job with it) and waits for it (bounded by an hour), printing where it is.
pub fn savepoint(address: &str, job: &str, target: Option<&str>, stop: Option<bool>) -> Result<()> {
    let id: weir_core::JobId = job.parse()?;
    let client = RestClient::new(address);
    let triggered = match stop {
        None => client.post(&format!("/jobs/{id}/savepoints"), &serde_json::json!({ "target-directory": target }))?,
        Some(drain) => client
            .post(&format!("/jobs/{id}/stop"), &serde_json::json!({ "targetDirectory": target, "drain": drain }))?,
    };
    let trigger = triggered["request-id"]
        .as_str()
        .ok_or_else(|| Error::internal(format!("the JobManager answered without a request id: {triggered}")))?
        .to_string();
    println!("Triggered savepoint {trigger} for job {id}.");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3600);
    while std::time::Instant::now() < deadline {
        let status = client.get(&format!("/jobs/{id}/savepoints/{trigger}"))?;
        if status["status"]["id"] == "COMPLETED" {
            if let Some(location) = status["operation"]["location"].as_str() {
                println!("Savepoint completed. Path: {location}");
                if stop.is_some() {
                    println!("Job {id} stopped with the savepoint.");
                }
                return Ok(());
            }
            let cause = status["operation"]["failure-cause"]["stack-trace"].as_str().unwrap_or("no cause given");
            return Err(Error::Config(format!("the savepoint of job {id} failed: {cause}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(Error::Config(format!("the savepoint of job {id} did not complete within an hour; see /jobs/{id}/checkpoints")))
}

/// `weir cancel`: cancels a job.
pub fn cancel(address: &str, job: &str) -> Result<()> {
    let id: weir_core::JobId = job.parse()?;
    RestClient::new(address).patch(&format!("/jobs/{id}?mode=cancel"))?;
    println!("Cancelled job {id}.");
    Ok(())
}
