//! Worker processes: a job built by another artifact than the TaskManager's own runs in a process
//! started from that artifact (DESIGN.md section 2).
//!
//! The TaskManager fetches the artifact ([`crate::artifacts`]), listens on a loopback port, and
//! starts `ARTIFACT --weir worker --connect ADDR ...` with a token in its environment. The worker opens its own data
//! server, connects back, proves it is the process that was started (the token), and says where
//! its records arrive; the TaskManager then redirects the job run's data connections there
//! ([`DataServer::redirect`]) and sends the deployment. The worker reports the part's status
//! changes, which the TaskManager forwards to the JobManager. A worker whose connection to its
//! TaskManager closes cancels its part and exits, so none outlives its TaskManager; a worker that
//! dies fails only its own job.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{info, warn};
use weir_api::Registry;
use weir_core::protocol::{
    CachedFile, Deployment, FromWorker, PROGRESS_INTERVAL_MS, ToJobManager, ToTaskManager, blocking, io,
};
use weir_core::{ArtifactDigest, Error, JobId, JobStatus, Result};
use weir_runtime::ExecutionConfig;
use weir_runtime::net::{DataServer, Placement};

use crate::artifacts::ArtifactCache;

/// How long a started worker has to connect back.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What a worker process is told on its command line.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    /// The job whose part it runs (shown by `ps`, and in its logs).
    pub job: JobId,
    /// The TaskManager's loopback address to connect to.
    pub connect: String,
    /// The secret to present.
    pub token: String,
    /// The digest of this artifact, as the TaskManager verified it.
    pub artifact: ArtifactDigest,
    /// The host other processes reach this worker's data server by.
    pub data_host: String,
    /// The address the data server listens on.
    pub bind_host: String,
}

/// The environment variable a worker finds its token in: on a command line, other users of the
/// machine would read it in `ps`; a process's environment only its own user (and root) can read.
pub const TOKEN_VARIABLE: &str = "WEIR_WORKER_TOKEN";

impl WorkerArgs {
    /// The arguments after `--weir worker` that produce these, with the token in the
    /// [`TOKEN_VARIABLE`] of the worker's environment.
    pub fn to_args(&self) -> Vec<String> {
        let job = self.job.to_string();
        [
            ("--job", &job),
            ("--connect", &self.connect),
            ("--artifact", &self.artifact.0),
            ("--data-host", &self.data_host),
            ("--bind-host", &self.bind_host),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }
}

/// The worker process: connects to its TaskManager, runs the one part it is given, reports, and
/// exits when the TaskManager closes the connection (or asks it to).
pub fn run_worker(registry: Registry, args: WorkerArgs) -> Result<()> {
    // The TaskManager handed its security down through the environment.
    let security = weir_security::Internal::from_env()?;
    let data = DataServer::start(&format!("{}:0", args.bind_host), &args.data_host, security)?;
    let mut stream = TcpStream::connect(&args.connect).map_err(|e| Error::Network {
        context: "a worker cannot reach".into(),
        peer: format!("its TaskManager at {}", args.connect),
        source: e,
    })?;
    let _ = stream.set_nodelay(true);
    blocking::exchange_handshake(&mut stream, "its TaskManager")?;
    let writer = stream.try_clone().map_err(|e| Error::internal(format!("cannot share a socket: {e}")))?;
    let writer = Arc::new(Mutex::new(writer));
    let send = {
        let writer = writer.clone();
        move |m: FromWorker| {
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = blocking::write_frame(&mut *w, &m) {
                warn!(error = %e, "a worker cannot report to its TaskManager");
            }
        }
    };
    send(FromWorker::Hello { token: args.token.clone(), data_address: data.address().to_string() });
    let mut reader = BufReader::new(stream);
    let mut running: Option<weir_runtime::local::JobHandle> = None;
    loop {
        match blocking::read_frame::<_, ToTaskManager>(&mut reader) {
            Ok(Some(ToTaskManager::Deploy(deployment))) if running.is_none() => {
                let (job_id, attempt) = (deployment.job_id, deployment.assignment.attempt);
                if job_id != args.job {
                    warn!(job_id = %job_id, expected = %args.job, "a worker was sent another job than it was started for");
                }
                let started = start_part(&registry, &args.artifact, &deployment, data.clone());
                match started {
                    Ok(handle) => {
                        send(FromWorker::State(state(job_id, attempt, JobStatus::Initializing, None)));
                        let report = send.clone();
                        watch(handle.clone(), job_id, attempt, move |s| report(FromWorker::State(s)))?;
                        running = Some(handle);
                    }
                    Err(e) => {
                        let retryable = e.is_retryable();
                        let mut s = state(job_id, attempt, JobStatus::Failed, Some(e.to_string()));
                        if let ToJobManager::JobState { retryable: r, .. } = &mut s {
                            *r = retryable;
                        }
                        send(FromWorker::State(s));
                        break;
                    }
                }
            }
            Ok(Some(ToTaskManager::Cancel { .. })) => {
                if let Some(h) = &running {
                    h.cancel();
                }
            }
            Ok(Some(m @ (ToTaskManager::TriggerCheckpoint { .. } | ToTaskManager::CheckpointComplete { .. }))) => {
                if let Some(h) = &running {
                    checkpoint_command(h, &m);
                }
            }
            Ok(Some(other)) => {
                warn!(message = ?other, "a worker got a message it does not expect; stopping");
                break;
            }
            // Shut down, or the TaskManager is gone: nothing runs without it.
            Ok(None) | Err(_) => break,
        }
    }
    if let Some(h) = running {
        h.cancel();
        let _ = h.wait_timeout(Duration::from_secs(30));
    }
    Ok(())
}

fn state(job_id: JobId, attempt: u32, status: JobStatus, error: Option<String>) -> ToJobManager {
    ToJobManager::JobState { job_id, attempt, status, error, result: None, retryable: false, damaged: false }
}

/// Rebuilds a deployed job from `registry` (built by `artifact`), checks it against the submitted
/// graph, and starts the part the deployment assigns here, its records going through `server`.
/// The deployment's settings are complete (the TaskManager's job defaults are under them already).
pub(crate) fn start_part(
    registry: &Registry,
    artifact: &ArtifactDigest,
    deployment: &Deployment,
    server: Arc<DataServer>,
) -> Result<weir_runtime::local::JobHandle> {
    let Deployment { job_id, graph, config, assignment, cached_files, restore } = deployment;
    let execution = config.resolve(&ExecutionConfig::default())?;
    let mut rebuilt = registry.build(&graph.job_name, &graph.args, &execution)?;
    graph.check_rebuilt(Some(artifact), &rebuilt.plan())?;
    // Cached files are read from the copies the TaskManager fetched.
    for (name, (_, here)) in rebuilt.cached_files.iter_mut() {
        if let Some(path) = cached_files.get(name).and_then(|c| c.path.as_ref()) {
            *here = path.into();
        }
    }
    let restore = restore.as_ref().map(weir_runtime::checkpoint::task::Restore::open_from).transpose()?;
    let placement = Placement { assignment: assignment.clone(), server };
    weir_runtime::local::submit_restored(rebuilt, *job_id, Some(placement), restore)
}

/// Hands a JobManager's checkpoint command to a running part.
pub(crate) fn checkpoint_command(handle: &weir_runtime::local::JobHandle, m: &ToTaskManager) {
    let Some(part) = handle.checkpoints() else { return };
    match m {
        ToTaskManager::TriggerCheckpoint { id, last, drain, .. } => part.trigger(*id, *last, *drain),
        ToTaskManager::CheckpointComplete { id, .. } => part.complete(*id),
        _ => {}
    }
}

/// Reports a running part's progress every [`PROGRESS_INTERVAL_MS`] and then its end through
/// `report`, from a thread of its own.
pub(crate) fn watch(
    handle: weir_runtime::local::JobHandle,
    job_id: JobId,
    attempt: u32,
    report: impl Fn(ToJobManager) + Send + Clone + 'static,
) -> Result<()> {
    // Checkpoint events go to the JobManager as they come.
    if let Some(events) = handle.take_checkpoint_events() {
        let report = report.clone();
        std::thread::Builder::new()
            .name(format!("checkpoints {job_id}"))
            .spawn(move || {
                for event in events {
                    report(ToJobManager::Checkpoint { job_id, attempt, event });
                }
            })
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
    }
    std::thread::Builder::new()
        .name(format!("job {job_id}"))
        .spawn(move || {
            let every = Duration::from_millis(PROGRESS_INTERVAL_MS);
            let started = std::time::Instant::now();
            let mut running = false;
            let ended = loop {
                // The part was reported INITIALIZING when it started; it is RUNNING once every
                // task has restored its state (reported from this thread, so always before the end).
                if !running {
                    match handle.wait_initialized(every) {
                        Ok(true) => {
                            running = true;
                            info!(job_id = %job_id, attempt, took_ms = started.elapsed().as_millis() as u64, "every task of the part runs");
                            report(state(job_id, attempt, JobStatus::Running, None));
                        }
                        Ok(false) => {}
                        Err(e) => break Err(e),
                    }
                }
                let wait = if running { every } else { Duration::ZERO };
                match handle.wait_timeout(wait) {
                    Ok(None) => report(ToJobManager::Progress {
                        job_id,
                        attempt,
                        counts: handle.counts(),
                        metrics: handle.metrics(),
                    }),
                    Ok(Some(result)) => break Ok(result),
                    Err(e) => break Err(e),
                }
            };
            let end = match ended {
                Ok(result) => ToJobManager::JobState {
                    job_id,
                    attempt,
                    status: JobStatus::Finished,
                    error: None,
                    result: Some(result),
                    retryable: false,
                    damaged: false,
                },
                Err(Error::Cancelled(_)) => state(job_id, attempt, JobStatus::Canceled, None),
                Err(e) => ToJobManager::JobState {
                    job_id,
                    attempt,
                    status: JobStatus::Failed,
                    error: Some(e.to_string()),
                    result: None,
                    // A job that ran and failed may succeed when run again (Flink restarts on any task failure).
                    retryable: true,
                    damaged: e.is_damaged(),
                },
            };
            report(end);
        })
        .map(|_| ())
        .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))
}

/// A deployment whose part runs in a worker process.
pub(crate) struct Launch {
    /// The TaskManager's own program, which needs no fetching.
    pub own: ArtifactDigest,
    pub cache: Arc<ArtifactCache>,
    pub jobmanager: String,
    pub data: Arc<DataServer>,
    pub data_host: String,
    pub bind_host: String,
    pub deployment: Deployment,
}

/// Fetches a job's cached files into the TaskManager's cache and notes where they are.
pub(crate) fn fetch_cached(
    cache: &ArtifactCache,
    jobmanager: &str,
    files: &mut BTreeMap<String, CachedFile>,
) -> Result<()> {
    for (name, file) in files.iter_mut() {
        let path = cache.get(jobmanager, &file.digest).map_err(|e| {
            let retryable = e.is_retryable();
            Error::external(
                format!("cannot fetch the job's cached file '{name}' from the JobManager"),
                e.to_string(),
                retryable,
            )
        })?;
        file.path = Some(path.display().to_string());
    }
    Ok(())
}

/// Runs a deployment in a worker process and reports its status changes through `events`, ending
/// with exactly one terminal state. `control` carries cancellations.
pub(crate) async fn supervise(
    launch: Launch,
    mut control: mpsc::UnboundedReceiver<ToTaskManager>,
    events: mpsc::UnboundedSender<ToJobManager>,
) {
    let (job_id, attempt) = (launch.deployment.job_id, launch.deployment.assignment.attempt);
    let data = launch.data.clone();
    let end = match run(launch, &mut control, &events).await {
        Ok(end) => end,
        Err(e) => Some(ToJobManager::failed(job_id, attempt, &e)),
    };
    data.forget_redirect(job_id, attempt);
    if let Some(end) = end {
        let _ = events.send(end);
    }
}

/// The deployment's life; `Ok(None)` once the worker reported a terminal state (already sent),
/// `Ok(Some(state))` for a terminal state to report.
async fn run(
    launch: Launch,
    control: &mut mpsc::UnboundedReceiver<ToTaskManager>,
    events: &mpsc::UnboundedSender<ToJobManager>,
) -> Result<Option<ToJobManager>> {
    let Launch { own, cache, jobmanager, data, data_host, bind_host, deployment } = launch;
    let Deployment { job_id, graph, config, assignment, cached_files, restore } = deployment;
    let attempt = assignment.attempt;
    let cancelled = Ok(Some(state(job_id, attempt, JobStatus::Canceled, None)));
    let digest = graph.artifact.clone();
    // 1. The artifact: this program, or one from the cache or the JobManager.
    let fetch = {
        let (cache, digest, mut cached_files) = (cache.clone(), digest.clone(), cached_files);
        tokio::task::spawn_blocking(move || {
            fetch_cached(&cache, &jobmanager, &mut cached_files)?;
            if digest == own {
                // The very image this process runs, even if its file was replaced since.
                return weir_core::graph::this_program().map(|p| (p, cached_files));
            }
            cache.get(&jobmanager, &digest).map(|p| (p, cached_files))
        })
    };
    let (path, cached_files) = tokio::select! {
        fetched = fetch => fetched.map_err(|e| Error::internal(format!("artifact fetch stopped: {e}")))??,
        _ = cancellation(control) => return cancelled,
    };
    // 2. The worker process, connecting back with its token.
    let security = data.security().clone();
    let started = start_worker(&path, &digest, job_id, attempt, (data_host, bind_host), security, control).await?;
    let Started::Up { child, stream, pid, worker_data } = started else {
        return Ok(match started {
            Started::Killed(end) => Some(end),
            _ => Some(state(job_id, attempt, JobStatus::Canceled, None)),
        });
    };
    info!(job_id = %job_id, attempt, pid, artifact = %digest.0, data = %worker_data, "worker process started");
    // 3. Records for this part go to the worker from now on; then the deployment.
    data.redirect(job_id, attempt, &worker_data);
    let (mut rd, mut wr) = stream.into_split();
    let deploy =
        ToTaskManager::Deploy(Box::new(Deployment { job_id, graph, config, assignment, cached_files, restore }));
    io::write_frame(&mut wr, &deploy).await?;
    let (frames_tx, frames) = mpsc::unbounded_channel::<FromWorker>();
    tokio::spawn(async move {
        loop {
            match io::read_frame::<_, FromWorker>(&mut rd).await {
                Ok(Some(m)) => {
                    if frames_tx.send(m).is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                // The worker is treated as dead (its connection is dropped); say why.
                Err(e) => {
                    warn!(job_id = %job_id, attempt, pid, "a worker's report cannot be read: {e}");
                    break;
                }
            }
        }
    });
    // 4. Forward its reports until it reports an end, or dies.
    let mut worker = RunningWorker { job_id, attempt, pid, child, frames, wr };
    let outcome = forward(&mut worker, control, events).await;
    let RunningWorker { mut child, wr, .. } = worker;
    // 5. Let it go: closing the connection ends it; a worker that hangs is killed.
    drop(wr);
    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
        warn!(job_id = %job_id, pid, "a worker did not exit after its job ended; killing it");
        let _ = child.kill().await;
    }
    Ok(outcome)
}

/// How starting a worker process went.
enum Started {
    /// It runs and introduced itself: its process, its connection, and where its records arrive.
    Up { child: tokio::process::Child, stream: tokio::net::TcpStream, pid: u32, worker_data: String },
    /// It was killed (SIGKILL, from outside) before it connected back: this end is reported.
    Killed(ToJobManager),
    /// The deployment was cancelled meanwhile.
    Cancelled,
}

/// Starts the worker process of `path` for run `attempt` of `job_id` and waits (bounded) until it
/// connects back with its token and says where its records arrive.
async fn start_worker(
    path: &std::path::Path,
    digest: &ArtifactDigest,
    job_id: JobId,
    attempt: u32,
    (data_host, bind_host): (String, String),
    security: Arc<weir_security::Internal>,
    control: &mut mpsc::UnboundedReceiver<ToTaskManager>,
) -> Result<Started> {
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| Error::Network {
        context: "cannot listen for a worker process on".into(),
        peer: "127.0.0.1".into(),
        source: e,
    })?;
    let connect = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let args = WorkerArgs {
        job: job_id,
        connect,
        token: uuid::Uuid::new_v4().simple().to_string(),
        artifact: digest.clone(),
        data_host,
        bind_host,
    };
    let command = format!("{} --weir worker", path.display());
    let mut child = tokio::process::Command::new(path)
        .args(["--weir", "worker"])
        .args(args.to_args())
        .env(TOKEN_VARIABLE, &args.token)
        .envs(security.child_env())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            // ENOEXEC: the uploaded program is not one this host can run, which is the job's to fix.
            // Anything else (no memory, a process limit) is this host's, with the blame of its kind.
            const ENOEXEC: i32 = 8;
            if e.raw_os_error() == Some(ENOEXEC) {
                Error::InvalidJob(format!(
                    "artifact {} cannot be started ({command}): {e}; upload an executable built for this \
                     TaskManager's platform",
                    digest.0
                ))
            } else {
                Error::io(format!("cannot start the worker process of artifact {} from", digest.0), path, e)
            }
        })?;
    let pid = child.id().unwrap_or(0);
    // The uploaded program, not a setting, is wrong: the job's to fix, and final.
    let not_weir = |how: String| {
        Error::InvalidJob(format!(
            "artifact {} is not a weir program of this version, or failed at start: `{command}` {how}; build it \
             against the weir library and run it through weir::App",
            digest.0
        ))
    };
    let mut stream = tokio::select! {
        accepted = listener.accept() => accepted.map_err(|e| Error::Network {
            context: "cannot accept a worker process on".into(), peer: args.connect.clone(), source: e,
        })?.0,
        exited = child.wait() => {
            // SIGKILL comes from outside (an operator, the OOM killer), not from the program: the
            // run may be retried. Any other early end says the program is not a weir worker.
            if let Ok(status) = &exited
                && std::os::unix::process::ExitStatusExt::signal(status) == Some(9)
            {
                let error = format!("the worker process (pid {pid}) of this job died before it connected back: {}", describe(*status));
                return Ok(Started::Killed(ToJobManager::JobState { job_id, attempt, status: JobStatus::Failed, error: Some(error), result: None, retryable: true, damaged: false }));
            }
            let how = exited.map(|s| format!("exited ({})", describe(s))).unwrap_or_else(|e| format!("failed: {e}"));
            return Err(not_weir(how));
        }
        _ = tokio::time::sleep(START_TIMEOUT) => {
            return Err(not_weir(format!("did not connect back within {} s", START_TIMEOUT.as_secs())));
        }
        _ = cancellation(control) => return Ok(Started::Cancelled),
    };
    drop(listener);
    let _ = stream.set_nodelay(true);
    let hello = async {
        io::exchange_handshake(&mut stream, "a worker process").await?;
        io::read_frame::<_, FromWorker>(&mut stream).await
    };
    let worker_data = match tokio::time::timeout(Duration::from_secs(10), hello).await {
        Ok(Ok(Some(FromWorker::Hello { token, data_address }))) if token == args.token => data_address,
        Ok(Ok(_)) => return Err(not_weir("did not introduce itself".into())),
        Ok(Err(e)) => return Err(not_weir(format!("broke the handshake: {e}"))),
        Err(_) => return Err(not_weir("sent no handshake within 10 s".into())),
    };
    Ok(Started::Up { child, stream, pid, worker_data })
}

/// A worker process at work, as [`forward`] tends it.
struct RunningWorker {
    job_id: JobId,
    attempt: u32,
    pid: u32,
    child: tokio::process::Child,
    /// Its reports, as they are read.
    frames: mpsc::UnboundedReceiver<FromWorker>,
    /// Orders to it.
    wr: tokio::net::tcp::OwnedWriteHalf,
}

/// Forwards a worker's reports to the TaskManager's `events` and `control`'s orders to the
/// worker, until it reports an end (`None`: already sent) or dies (its end, to send).
async fn forward(
    w: &mut RunningWorker,
    control: &mut mpsc::UnboundedReceiver<ToTaskManager>,
    events: &mpsc::UnboundedSender<ToJobManager>,
) -> Option<ToJobManager> {
    // The worker's metrics are reported by this TaskManager's reporters, from its progress
    // reports, until it ends.
    let key = format!("worker {} {} pid {}", w.job_id, w.attempt, w.pid);
    let _forget = Forget(key.clone());
    loop {
        tokio::select! {
            frame = w.frames.recv() => match frame {
                Some(FromWorker::State(s)) => {
                    if let ToJobManager::Progress { metrics, .. } = &s {
                        weir_metrics::global().set_remote(&key, metrics.clone());
                    }
                    let terminal = matches!(&s, ToJobManager::JobState { status, .. } if status.is_terminal());
                    let _ = events.send(s);
                    if terminal {
                        break None;
                    }
                }
                Some(FromWorker::Hello { .. }) => warn!(job_id = %w.job_id, "a worker introduced itself twice"),
                // Its connection closed without an end: it died. Its exit status says how.
                None => {
                    let status = tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await;
                    let how = match status {
                        Ok(Ok(s)) => describe(s),
                        _ => "its connection closed".to_string(),
                    };
                    break Some(ToJobManager::JobState {
                        job_id: w.job_id,
                        attempt: w.attempt,
                        status: JobStatus::Failed,
                        error: Some(format!("the worker process (pid {}) of this job died: {how}", w.pid)),
                        result: None,
                        retryable: true,
                        damaged: false,
                    });
                }
            },
            m = control.recv() => match m {
                Some(m) => {
                    if io::write_frame(&mut w.wr, &m).await.is_err() {
                        // It is going away; its end shows as the connection closing.
                        continue;
                    }
                }
                // The TaskManager itself is stopping: the worker is killed on drop.
                None => break Some(state(w.job_id, w.attempt, JobStatus::Canceled, None)),
            },
        }
    }
}

/// Removes a worker's metrics from the registry when its forwarding ends.
struct Forget(String);

impl Drop for Forget {
    fn drop(&mut self) {
        weir_metrics::global().remove_remote(&self.0);
    }
}

/// Resolves when `control` carries a cancellation (or closes).
async fn cancellation(control: &mut mpsc::UnboundedReceiver<ToTaskManager>) {
    loop {
        match control.recv().await {
            Some(ToTaskManager::Cancel { .. }) | None => return,
            Some(_) => {}
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(9)) => "killed (signal 9, SIGKILL)".into(),
        (None, Some(6)) => "aborted (signal 6, SIGABRT)".into(),
        (None, Some(11)) => "crashed (signal 11, SIGSEGV)".into(),
        (None, Some(sig)) => format!("ended by signal {sig}"),
        (None, None) => "ended".into(),
    }
}
