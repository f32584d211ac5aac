//! weir-taskmanager: the TaskManager process.
//!
//! It connects to the JobManager (protocol version checked in a handshake), registers its slots,
//! sends heartbeats, and runs the parts of jobs deployed to it. A job built by this TaskManager's own
//! artifact is rebuilt from its registry by name and arguments, refused if the rebuilt plan's
//! fingerprint differs from the submitted one, and run in this process; a job of another artifact
//! runs in a worker process started from that artifact, fetched from the JobManager's blob store
//! and cached ([`worker`], [`artifacts`]). Status changes go back to the JobManager. When the
//! JobManager goes away, the TaskManager cancels its jobs and exits.

pub mod artifacts;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{info, warn};
use weir_api::Registry;
use weir_core::config::ClusterConfig;
use weir_core::config::JobConfig;
use weir_core::graph::ArtifactDigest;
use weir_core::protocol::io::{exchange_handshake, read_frame, write_frame};
use weir_core::protocol::{Deployment, ToJobManager, ToTaskManager};
use weir_core::{Error, JobId, JobStatus, Result};
use weir_runtime::local::JobHandle;
use weir_runtime::net::DataServer;
use weir_security::{AsyncStream, Internal};

/// How long to keep trying to reach the JobManager at start-up.
const CONNECT_ATTEMPTS: u32 = 20;
const CONNECT_PAUSE: Duration = Duration::from_millis(250);

/// What a TaskManager is told to be.
#[derive(Clone, Debug)]
pub struct Options {
    /// Its id (default: host, pid and a random suffix).
    pub id: Option<String>,
    /// Cluster settings (JobManager address, slots, heartbeats).
    pub cluster: ClusterConfig,
    /// The job keys of the TaskManager's own configuration: defaults for the jobs it runs, under
    /// each job's own settings.
    pub job_defaults: JobConfig,
    /// How its connections are secured (`None`: as `cluster` says, `security.*`).
    pub security: Option<Arc<Internal>>,
}

/// A TaskManager that registered with its JobManager.
pub struct Registered {
    stream: Box<dyn AsyncStream>,
    /// Its id.
    pub id: String,
    /// The JobManager's address.
    pub jobmanager: String,
    heartbeat: Duration,
    /// How long without a word from the JobManager before it counts as lost (none: until the
    /// connection closes).
    silence: Option<Duration>,
    /// The JobManager's leader epoch (0 without high availability).
    pub leader_epoch: u64,
    /// Where records from other TaskManagers arrive.
    pub data: std::sync::Arc<DataServer>,
    /// The digest of this TaskManager's executable: the artifact whose jobs it runs in-process.
    pub artifact: ArtifactDigest,
    /// The host other processes reach this TaskManager's (and its workers') data servers by.
    pub data_host: String,
    /// The address data servers listen on.
    pub bind_host: String,
    /// Artifacts of other programs, fetched for their jobs.
    pub artifacts: std::sync::Arc<artifacts::ArtifactCache>,
    /// Whether jobs of this TaskManager's own program run in its process
    /// (`taskmanager.job-isolation: shared`) rather than in worker processes.
    pub shared: bool,
}

/// Connects and registers; returns once the JobManager accepted this TaskManager.
pub async fn register(options: &Options) -> Result<Registered> {
    let address = format!("{}:{}", options.cluster.rpc_address, options.cluster.rpc_port);
    register_at(options, &address, CONNECT_ATTEMPTS).await
}

/// Connects to the JobManager at `address` (trying `attempts` times) and registers.
pub async fn register_at(options: &Options, address: &str, attempts: u32) -> Result<Registered> {
    let address = address.to_string();
    let mut attempt = 0;
    let security = match &options.security {
        Some(s) => s.clone(),
        None => Internal::from_config(&options.cluster)?,
    };
    let tcp = loop {
        match TcpStream::connect(&address).await {
            Ok(s) => break s,
            Err(e) if attempt + 1 < attempts.max(1) => {
                attempt += 1;
                tracing::debug!(%address, error = %e, attempt, "JobManager not reachable yet");
                tokio::time::sleep(CONNECT_PAUSE).await;
            }
            Err(e) => {
                return Err(Error::Network {
                    context: format!(
                        "cannot reach the JobManager after {attempts} attempts (start it first, or fix \
                         jobmanager.rpc.address/jobmanager.rpc.port):"
                    ),
                    peer: address,
                    source: e,
                });
            }
        }
    };
    let _ = tcp.set_nodelay(true);
    let who = format!("JobManager at {address}");
    // Other TaskManagers reach this one where the JobManager's connection comes from, unless told.
    let local_ip = tcp.local_addr().map(|a| a.ip().to_string()).unwrap_or_else(|_| "127.0.0.1".into());
    let mut stream = security.connect_async(tcp, &who).await?;
    tokio::time::timeout(Duration::from_secs(10), exchange_handshake(&mut stream, &who)).await.map_err(|_| {
        Error::external(
            who.clone(),
            "it sent no handshake within 10 s; is that address a weir JobManager's RPC port?",
            true,
        )
    })??;
    let host = options.cluster.taskmanager_host.clone().unwrap_or(local_ip);
    let bind = options.cluster.taskmanager_bind_host.clone().unwrap_or_else(|| host.clone());
    let data = DataServer::start(&format!("{bind}:{}", options.cluster.data_port), &host, security.clone())?;
    let artifact = tokio::task::spawn_blocking(ArtifactDigest::current)
        .await
        .map_err(|e| Error::internal(format!("cannot hash this executable: {e}")))??;
    let id = options.id.clone().unwrap_or_else(default_id);
    let register = ToJobManager::Register {
        taskmanager_id: id.clone(),
        slots: options.cluster.slots,
        host: hostname(),
        pid: std::process::id(),
        data_address: data.address().to_string(),
    };
    write_frame(&mut stream, &register).await?;
    match read_frame::<_, ToTaskManager>(&mut stream).await? {
        Some(ToTaskManager::Accepted { heartbeat_interval_ms, leader_epoch, heartbeat_timeout_ms }) => {
            info!(taskmanager = %id, jobmanager = %address, data = %data.address(), "registered");
            Ok(Registered {
                stream,
                id,
                jobmanager: address,
                heartbeat: Duration::from_millis(heartbeat_interval_ms.max(1)),
                silence: (heartbeat_timeout_ms > 0).then(|| Duration::from_millis(heartbeat_timeout_ms)),
                leader_epoch,
                data,
                artifact,
                data_host: host,
                bind_host: bind,
                artifacts: std::sync::Arc::new(artifacts::ArtifactCache::new(
                    options.cluster.blob_dir.as_deref(),
                    (options.cluster.blob_max_bytes, options.cluster.blob_cache_quota),
                    security,
                )),
                shared: options.cluster.job_isolation_shared,
            })
        }
        Some(ToTaskManager::Rejected { reason }) => {
            Err(Error::external(format!("the JobManager at {address} refused this TaskManager"), reason, true))
        }
        Some(other) => Err(Error::internal(format!("expected a registration answer, got {other:?}"))),
        None => Err(Error::external(
            format!("the JobManager at {address}"),
            "it closed the connection during registration",
            true,
        )),
    }
}

/// A TaskManager id: host, process id and a random suffix.
pub fn default_id() -> String {
    format!("{}-{}-{}", hostname(), std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// The connection to the JobManager broke: not this TaskManager's configuration, and a JobManager
/// that comes back (or a new leader) takes it again.
/// Reads `ToTaskManager` frames from `rd` on a task of its own until the stream ends or fails
/// (that last outcome is queued too), or until the receiver is dropped; notes when each frame
/// arrived (however long the loop takes to get to it).
fn read_frames(
    mut rd: tokio::io::ReadHalf<Box<dyn AsyncStream>>,
) -> (mpsc::Receiver<Result<Option<ToTaskManager>>>, Arc<Heard>, ReaderGuard) {
    let (tx, rx) = mpsc::channel(16);
    let heard = Arc::new(Heard { since: std::time::Instant::now(), last_ms: AtomicU64::new(0) });
    let noted = heard.clone();
    let task = tokio::spawn(async move {
        loop {
            let frame = read_frame::<_, ToTaskManager>(&mut rd).await;
            noted.last_ms.store(noted.since.elapsed().as_millis() as u64, Ordering::Relaxed);
            let last = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).await.is_err() || last {
                break;
            }
        }
    });
    (rx, heard, ReaderGuard(task))
}

/// When the JobManager was last heard from (any frame counts).
struct Heard {
    since: std::time::Instant,
    last_ms: AtomicU64,
}

impl Heard {
    /// How long since the last frame arrived (or since the connection was accepted).
    fn silent_for(&self) -> Duration {
        self.since.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Stops the frame reader when the connection's loop ends, whichever way.
struct ReaderGuard(tokio::task::JoinHandle<()>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn lost(jobmanager: &str, what: String) -> Error {
    Error::external(format!("lost the JobManager at {jobmanager}"), what, true)
}

fn hostname() -> String {
    weir_metrics::hostname()
}

/// What keeps a TaskManager process's metrics reported: its `taskmanager` group (the process's
/// figures) and the reporters that serve it with the metrics of the jobs it runs.
pub struct TaskManagerMetrics {
    /// The `taskmanager` group.
    pub group: weir_metrics::MetricGroup,
    /// The reporters (the Prometheus endpoint).
    pub reporters: weir_metrics::reporter::Reporters,
}

/// Registers TaskManager `id`'s own metrics and starts the reporters `cluster` configures; once per
/// process, whatever JobManager it registers with.
pub fn start_metrics(id: &str, cluster: &ClusterConfig) -> Result<TaskManagerMetrics> {
    let registry = weir_metrics::global();
    let group = registry.group("taskmanager", vec![("host".into(), hostname()), ("tm_id".into(), id.to_string())]);
    weir_metrics::process::register(&group);
    let reporters = weir_metrics::reporter::Reporters::start(&cluster.metrics, registry)?;
    Ok(TaskManagerMetrics { group, reporters })
}

/// Serves a registered TaskManager until the JobManager shuts it down (`Ok`), goes away (`Err`),
/// or `deposed` resolves (`Err`: with high availability, a newer leader was elected; orders of
/// the old one are not taken any more). Whatever runs here is cancelled when it returns.
pub async fn serve(
    registered: Registered,
    registry: Registry,
    job_defaults: JobConfig,
    deposed: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let Registered {
        stream,
        id,
        jobmanager,
        heartbeat,
        silence,
        data,
        artifact,
        data_host,
        bind_host,
        artifacts,
        shared,
        ..
    } = registered;
    let mut deposed = std::pin::pin!(deposed);
    let (rd, mut wr) = tokio::io::split(stream);
    // Frames are read on a task of their own and queued: a read inside the `select!` below would
    // be dropped half-way whenever a tick or an event came first, losing the bytes it had read
    // and leaving the stream mid-frame (a healthy connection then looked corrupt). A queue's
    // receive is cancel-safe; the reader stops after the end of the stream, or when this loop
    // goes away.
    let (mut frames, heard, _reader) = read_frames(rd);
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<ToJobManager>();
    let node = Node {
        registry,
        artifact,
        artifacts,
        jobmanager: jobmanager.clone(),
        data,
        data_host,
        bind_host,
        job_defaults,
        shared,
        events: events_tx,
    };
    // Parts of jobs running here, by job and attempt.
    let mut jobs: HashMap<(JobId, u32), Run> = HashMap::new();
    let mut ticker = tokio::time::interval(heartbeat);

    let outcome = loop {
        tokio::select! {
            message = frames.recv() => { match message.unwrap_or(Ok(None)) {
                Ok(Some(ToTaskManager::Deploy(deployment))) => {
                    let (job_id, attempt) = (deployment.job_id, deployment.assignment.attempt);
                    let first = match node.deploy(*deployment) {
                        Ok(run) => {
                            let in_process = matches!(run, Run::InProcess(_));
                            jobs.insert((job_id, attempt), run);
                            // A worker reports its own states; an in-process part is INITIALIZING
                            // now, and RUNNING follows from its watcher once every task restored.
                            in_process.then_some(Ok(JobStatus::Initializing))
                        }
                        Err(e) => {
                            warn!(job_id = %job_id, attempt, error = %e, "cannot run the deployed job");
                            Some(Err(e))
                        }
                    };
                    if let Some(first) = first {
                        write_frame(&mut wr, &first_report(job_id, attempt, first)).await?;
                    }
                }
                Ok(Some(ToTaskManager::Cancel { job_id })) => {
                    for ((job, _), h) in &jobs {
                        if *job == job_id {
                            h.cancel();
                        }
                    }
                }
                Ok(Some(m @ (ToTaskManager::TriggerCheckpoint { .. } | ToTaskManager::CheckpointComplete { .. }))) => {
                    forward_checkpoint(&jobs, m);
                }
                Ok(Some(ToTaskManager::Shutdown)) => {
                    info!(taskmanager = %id, "shut down by the JobManager");
                    break Ok(());
                }
                Ok(Some(ToTaskManager::Heartbeat)) => {}
                Ok(Some(ToTaskManager::Describe { request, what })) => {
                    // Files are read off the control loop; the answer joins the other events.
                    let events = node.events.clone();
                    tokio::task::spawn_blocking(move || {
                        let reply = weir_core::process::answer(&what);
                        let _ = events.send(ToJobManager::Described { request, reply });
                    });
                }
                Ok(Some(other)) => warn!(message = ?other, "unexpected message from the JobManager"),
                Ok(None) => break Err(lost(&jobmanager, "it closed the connection".into())),
                Err(e) => break Err(lost(&jobmanager, e.to_string())),
            }},
            () = &mut deposed => {
                break Err(Error::NotLeader(format!("the JobManager at {jobmanager} was replaced by a newer leader")));
            }
            _ = ticker.tick() => {
                // Partitioned away, or stalled: its tasks must not go on beside their replacements.
                if let Some(limit) = silence.filter(|l| heard.silent_for() > *l) {
                    let why = format!(
                        "it sent nothing for {} ms (heartbeat.timeout): it is partitioned away, stalled or gone",
                        limit.as_millis()
                    );
                    break Err(lost(&jobmanager, why));
                }
                // A job may have two runs here for a moment (one stopping, one starting): name it once.
                let running: Vec<JobId> =
                    jobs.keys().map(|(j, _)| *j).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
                // Only its own group: the jobs' reach the JobManager with their progress.
                let metrics = weir_metrics::global().samples_of(|scope, vars| {
                    scope == "taskmanager" && vars.iter().any(|(k, v)| k == "tm_id" && *v == id)
                });
                if let Err(e) = write_frame(&mut wr, &ToJobManager::Heartbeat { running, metrics }).await {
                    break Err(lost(&jobmanager, e.to_string()));
                }
            }
            Some(event) = events_rx.recv() => {
                if let ToJobManager::JobState { job_id, attempt, status, .. } = &event
                    && status.is_terminal()
                {
                    jobs.remove(&(*job_id, *attempt));
                }
                if let Err(e) = write_frame(&mut wr, &event).await {
                    break Err(lost(&jobmanager, e.to_string()));
                }
            }
        }
    };
    stop_runs(&jobs);
    outcome
}

/// The first report of a deployed part: INITIALIZING, or FAILED with why it could not run.
fn first_report(job_id: JobId, attempt: u32, first: Result<JobStatus>) -> ToJobManager {
    match first {
        Ok(status) => ToJobManager::JobState {
            job_id,
            attempt,
            status,
            error: None,
            result: None,
            retryable: false,
            damaged: false,
        },
        Err(e) => ToJobManager::failed(job_id, attempt, &e),
    }
}

/// Hands a checkpoint command to the run it is for (none: the run ended, nothing to checkpoint).
fn forward_checkpoint(jobs: &HashMap<(JobId, u32), Run>, m: ToTaskManager) {
    let (ToTaskManager::TriggerCheckpoint { job_id, attempt, .. }
    | ToTaskManager::CheckpointComplete { job_id, attempt, .. }) = &m
    else {
        return;
    };
    match jobs.get(&(*job_id, *attempt)) {
        Some(Run::InProcess(h)) => worker::checkpoint_command(h, &m),
        Some(Run::Worker(_, control)) => {
            let _ = control.send(m);
        }
        None => {}
    }
}

/// Nothing keeps running without a JobManager: every run is cancelled (workers too; any still
/// running when this process ends are killed), and in-process ones are waited for.
fn stop_runs(jobs: &HashMap<(JobId, u32), Run>) {
    for h in jobs.values() {
        h.cancel();
    }
    for h in jobs.values() {
        if let Run::InProcess(h) = h {
            let _ = tokio::task::block_in_place(|| h.wait_timeout(Duration::from_secs(30)));
        }
    }
}

/// What every deployment on this TaskManager needs: the program's registry and digest, the
/// artifact cache, the data server, the job defaults, and where the parts' reports go.
struct Node {
    registry: Registry,
    artifact: ArtifactDigest,
    artifacts: std::sync::Arc<artifacts::ArtifactCache>,
    jobmanager: String,
    data: std::sync::Arc<DataServer>,
    data_host: String,
    bind_host: String,
    job_defaults: JobConfig,
    shared: bool,
    events: mpsc::UnboundedSender<ToJobManager>,
}

impl Node {
    /// Starts `deployment` here: in a worker process of the job's program, or (with shared
    /// isolation, for this program's own jobs) in this process; its run.
    fn deploy(&self, mut deployment: Deployment) -> Result<Run> {
        let (job_id, attempt) = (deployment.job_id, deployment.assignment.attempt);
        deployment.config = self.job_defaults.under(&deployment.config);
        if !self.shared || deployment.graph.artifact != self.artifact {
            let launch = worker::Launch {
                own: self.artifact.clone(),
                cache: self.artifacts.clone(),
                jobmanager: self.jobmanager.clone(),
                data: self.data.clone(),
                data_host: self.data_host.clone(),
                bind_host: self.bind_host.clone(),
                deployment,
            };
            let (control, control_rx) = mpsc::unbounded_channel();
            tokio::spawn(worker::supervise(launch, control_rx, self.events.clone()));
            return Ok(Run::Worker(job_id, control));
        }
        let started = tokio::task::block_in_place(|| {
            worker::fetch_cached(&self.artifacts, &self.jobmanager, &mut deployment.cached_files)
        })
        .and_then(|()| worker::start_part(&self.registry, &self.artifact, &deployment, self.data.clone()))
        .and_then(|handle| {
            let events = self.events.clone();
            worker::watch(handle.clone(), job_id, attempt, move |m| {
                let _ = events.send(m);
            })?;
            Ok(handle)
        });
        started.map(Run::InProcess)
    }
}

/// A part running here.
enum Run {
    /// In this process.
    InProcess(JobHandle),
    /// In a worker process, reached through its supervisor.
    Worker(JobId, mpsc::UnboundedSender<ToTaskManager>),
}

impl Run {
    fn cancel(&self) {
        match self {
            Run::InProcess(h) => h.cancel(),
            Run::Worker(job_id, control) => {
                let _ = control.send(ToTaskManager::Cancel { job_id: *job_id });
            }
        }
    }
}
