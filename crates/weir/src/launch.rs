//! Application mode, on the client side (`run-application -t process|docker ARTIFACT -- ARGS`):
//! the client checks the artifact, starts the application's JobManager from it and returns. The
//! JobManager runs the program's `main`; the job result store tells how the application went,
//! also after its cluster is gone (`applications`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_core::config::ClusterConfig;
use weir_core::{Error, JobId, Result};
use weir_jobmanager::results::{ApplicationRecord, JobResultStore};

/// The targets of `run-application`.
pub const TARGETS: [&str; 2] = ["process", "docker"];

/// How long an application's JobManager has to record that it runs.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks that `path` is a weir artifact this client can start: it exists, is an executable file,
/// and carries the marker of this build's protocol and job-graph versions.
pub fn check_artifact(path: &Path) -> Result<PathBuf> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io("the artifact cannot be read (give the path of a program built with weir)", path, e))?;
    if !meta.is_file() {
        return Err(Error::Config(format!(
            "{} is not a file; give the path of a program built with weir",
            path.display()
        )));
    }
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 {
        return Err(Error::Config(format!("{} is not executable; chmod +x it, or build it again", path.display())));
    }
    let ours = (weir_core::protocol::PROTOCOL_VERSION, weir_core::graph::JOB_GRAPH_FORMAT_VERSION);
    match weir_core::graph::artifact_versions(path)? {
        None => Err(Error::Config(format!(
            "{} is not a weir artifact (it does not link weir); application mode runs programs built with the weir crate",
            path.display()
        ))),
        Some(v) if v != ours => Err(Error::GraphMismatch {
            job: path.display().to_string(),
            message: format!(
                "the artifact was built with another weir version (protocol {}, job graph {}; this client speaks \
                 protocol {}, job graph {}); build it against the same weir version",
                v.0, v.1, ours.0, ours.1
            ),
        }),
        Some(_) => std::fs::canonicalize(path).map_err(|e| Error::io("cannot resolve the artifact's path", path, e)),
    }
}

/// `run-application -t process`: starts the application's JobManager from `artifact` as a process of
/// its own (in its own process group, so the client's terminal does not stop it), with `forwarded`
/// settings, and returns once it has recorded that it runs.
pub fn run_process(artifact: &Path, args: &[String], cluster: &ClusterConfig, forwarded: &[String]) -> Result<()> {
    let artifact = check_artifact(artifact)?;
    let store = JobResultStore::new(cluster.job_result_path());
    std::fs::create_dir_all(store.dir())
        .map_err(|e| Error::io("cannot create the job result store (job-result-store.storage-path)", store.dir(), e))?;
    let id = JobId::random();
    let log_path = store.log_path(id);
    let log =
        std::fs::File::create(&log_path).map_err(|e| Error::io("cannot create the application's log", &log_path, e))?;
    let log2 = log.try_clone().map_err(|e| Error::io("cannot create the application's log", &log_path, e))?;
    let mut command = Command::new(&artifact);
    command
        .args(["--weir", "jobmanager", "--application", &id.to_string()])
        .args(forwarded)
        .args(["-D", "resourcemanager.provider=process", "-D", "rest.port=0", "-D", "jobmanager.rpc.port=0"])
        .args(["-D", &format!("job-result-store.storage-path={}", store.dir().display())])
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start the application from {}: {e}", artifact.display())))?;
    let record = wait_started(&store, id, || child.try_wait().ok().flatten().map(|s| s.to_string()), &log_path)?;
    // A closed pipe (`| head`) only cuts the listing short.
    let _ = writeln!(
        std::io::stdout(),
        "Application {id} is RUNNING on its own cluster (JobManager pid {}):\n  REST endpoint: http://{}\n  output:        \
         {}\n  its outcome:   weir applications {id}",
        record.pid,
        record.rest,
        log_path.display()
    );
    Ok(())
}

/// Waits (bounded) for the application's first record; `exited` says whether its JobManager ended.
pub(crate) fn wait_started(
    store: &JobResultStore,
    id: JobId,
    mut exited: impl FnMut() -> Option<String>,
    log: &Path,
) -> Result<ApplicationRecord> {
    let started = Instant::now();
    loop {
        if let Some(record) = store.get(id)? {
            return Ok(record);
        }
        if let Some(status) = exited() {
            return Err(Error::Config(format!(
                "the application's JobManager exited at start ({status}): {}",
                tail(log)
            )));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(Error::Config(format!(
                "the application's JobManager did not start within {} s; see {}",
                START_TIMEOUT.as_secs(),
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The last lines of a log, for an error.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// `applications [ID]`: what the job result store holds.
pub fn show(cluster: &ClusterConfig, id: Option<&str>) -> Result<()> {
    let store = JobResultStore::new(cluster.job_result_path());
    let Some(id) = id else {
        let all = store.list();
        if all.is_empty() {
            println!("No applications in {}.", store.dir().display());
        }
        for r in all {
            println!("{} : {} ({}, {} jobs)", r.id, r.program, r.status, r.jobs.len());
        }
        return Ok(());
    };
    let id: JobId = id.parse()?;
    let r = store.get(id)?.ok_or_else(|| {
        Error::Config(format!(
            "application {id} is not in the job result store at {} (job-result-store.storage-path)",
            store.dir().display()
        ))
    })?;
    println!("Application {} : {} {}", r.id, r.program, r.args.join(" "));
    println!("  status: {}", r.status);
    if let Some(e) = &r.error {
        println!("  error:  {e}");
    }
    for j in &r.jobs {
        println!("  job {} : {} ({})", j.id, j.name, j.status);
        if let Some(e) = &j.error {
            println!("    {e}");
        }
    }
    Ok(())
}
