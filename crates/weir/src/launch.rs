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

/// The secret of the HA application cluster `cluster_id`: made by its first JobManager's launch,
/// read by the standbys' (a file readable by this user only, in a directory of this user's).
fn shared_secret(store: &JobResultStore, cluster_id: &str) -> Result<weir_security::Secret> {
    let dir = store.dir().join("secrets");
    weir_core::blob::private_dir(&dir)
        .map_err(|e| Error::io("cannot create the directory of cluster secrets", &dir, e))?;
    let file = dir.join(cluster_id.replace('/', "_"));
    match weir_security::read_secret_file(&file.display().to_string()) {
        Ok(secret) => Ok(secret),
        Err(_) if !file.exists() => weir_security::write_secret_file(&file),
        Err(e) => Err(e),
    }
}

/// `run-application -t process`: starts the application's JobManager from `artifact` as a process of
/// its own (in its own process group, so the client's terminal does not stop it), with `forwarded`
/// settings, and returns once it has recorded that it runs.
///
/// With high availability the application's id derives from the cluster id, so that the same
/// command run again while the application runs starts a standby JobManager for it.
pub fn run_process(artifact: &Path, args: &[String], cluster: &ClusterConfig, forwarded: &[String]) -> Result<()> {
    let artifact = check_artifact(artifact)?;
    let store = JobResultStore::new(cluster.job_result_path());
    std::fs::create_dir_all(store.dir())
        .map_err(|e| Error::io("cannot create the job result store (job-result-store.storage-path)", store.dir(), e))?;
    let (id, running) = if cluster.ha.enabled() {
        let id = JobId::derived(&cluster.ha.cluster_id);
        let record = store.get(id)?;
        if let Some(r) = record.as_ref().filter(|r| r.is_terminal()) {
            return Err(ended_already(cluster, r));
        }
        (id, record)
    } else {
        (JobId::random(), None)
    };
    let log_path = match &running {
        None => store.log_path(id),
        Some(_) => standby_log_path(&store, id),
    };
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
    // The application's cluster proves a secret of its own (unless this process has one, or the
    // settings name a file): its JobManager hands it to the TaskManagers it starts. With high
    // availability, the standby JobManagers of the same cluster id must prove the same one (the
    // TaskManagers follow whichever leads): it is kept beside the results, private to this user.
    if weir_security::fresh_secret()?.is_some() {
        let secret = if cluster.ha.enabled() {
            shared_secret(&store, &cluster.ha.cluster_id)?
        } else {
            weir_security::Secret::generate()?
        };
        command.env(weir_security::SECRET_VARIABLE, secret.text());
    }
    let mut child = command.spawn().map_err(|e| Error::io("cannot start the application from", artifact, e))?;
    let output = || format!("its last output:\n{}", tail(&log_path));
    if let Some(leader) = running {
        let ready =
            || Ok(std::fs::read_to_string(&log_path).is_ok_and(|t| t.contains("weir jobmanager ready:")).then_some(()));
        wait_for("the standby JobManager", ready, || child.try_wait().ok().flatten().map(|s| s.to_string()), &output)?;
        // The record may be stale: its JobManager killed with no standby left. The new one then
        // takes the application over (it leads once the old leadership expired).
        // (A zombie, exited and not yet reaped by whoever adopted it, counts as gone.)
        let recorded_alive = std::fs::read_to_string(format!("/proc/{}/stat", leader.pid))
            .ok()
            .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false);
        let what = if recorded_alive {
            format!(
                "Application {id} already runs (high-availability.cluster-id '{}', JobManager pid {}); a standby \
                 JobManager (pid {}) now stands by for it",
                cluster.ha.cluster_id,
                leader.pid,
                child.id()
            )
        } else {
            format!(
                "Application {id} was left RUNNING by a JobManager that is gone (pid {}); a new JobManager (pid {}) \
                 takes it over from its last state (high-availability.cluster-id '{}')",
                leader.pid,
                child.id(),
                cluster.ha.cluster_id
            )
        };
        let _ = writeln!(
            std::io::stdout(),
            "{what}:\n  output:        {}\n  its outcome:   weir applications {id}",
            log_path.display()
        );
        return Ok(());
    }
    let record = wait_started(&store, id, || child.try_wait().ok().flatten().map(|s| s.to_string()), &output)?;
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

/// `run-application -t docker`: builds (once) the artifact's image, makes the cluster's private
/// network, and starts the application's JobManager as a container on it, which starts its
/// TaskManagers as containers through the engine's socket. Returns once the application runs; the
/// containers and the network go when it ends.
pub fn run_docker(artifact: &Path, args: &[String], cluster: &ClusterConfig, forwarded: &[String]) -> Result<()> {
    if cluster.ha.enabled() {
        return Err(Error::Config(
            "run-application -t docker does not take high-availability.type yet (its containers would need the \
             coordination service on their network); use -t process, or leave high availability off"
                .into(),
        ));
    }
    let artifact = check_artifact(artifact)?;
    let docker = weir_deploy::docker::Docker::new(cluster.docker_host.as_deref())?;
    docker.ping()?;
    let image = weir_deploy::image::ensure(&docker, &artifact)?;
    let store = JobResultStore::new(cluster.job_result_path());
    std::fs::create_dir_all(store.dir())
        .map_err(|e| Error::io("cannot create the job result store (job-result-store.storage-path)", store.dir(), e))?;
    let store_dir = std::fs::canonicalize(store.dir()).map_err(|e| Error::io("cannot resolve", store.dir(), e))?;
    let id = JobId::random();
    let name = format!("weir-{}", &id.to_string()[..12]);
    // Clusters whose JobManager container was killed left their TaskManagers behind.
    for cluster in docker.sweep_orphans()? {
        eprintln!("Removed the containers and the network that cluster {cluster} left behind.");
    }
    docker.create_owned_network(&name, &name, Some(&name))?;
    let mut cmd: Vec<String> = [weir_deploy::image::PROGRAM, "--weir", "jobmanager", "--application"]
        .iter()
        .map(|s| s.to_string())
        .chain([id.to_string()])
        .chain(forwarded.iter().cloned())
        .collect();
    for setting in [
        "resourcemanager.provider=docker".to_string(),
        format!("docker.image={image}"),
        format!("docker.network={name}"),
        format!("jobmanager.rpc.address={name}"),
        "jobmanager.rpc.port=6123".to_string(),
        "rest.bind-address=0.0.0.0".to_string(),
        "rest.port=8081".to_string(),
        "job-result-store.storage-path=/weir/results".to_string(),
    ] {
        cmd.extend(["-D".to_string(), setting]);
    }
    cmd.push("--".into());
    cmd.extend(args.iter().cloned());
    let socket = docker.socket().display().to_string();
    let spec = weir_deploy::docker::ContainerSpec {
        name: name.clone(),
        image,
        cmd,
        env: [
            vec![format!("WEIR_CONTAINER={name}"), "TMPDIR=/tmp".into()],
            weir_deploy::docker::forwarded_env(),
            // The application's cluster proves a secret of its own (unless this process has one).
            weir_security::fresh_secret()?
                .map(|s| format!("{}={}", weir_security::SECRET_VARIABLE, s.text()))
                .into_iter()
                .collect(),
        ]
        .concat(),
        network: name.clone(),
        labels: vec![("weir.cluster".into(), name.clone()), ("weir.application".into(), id.to_string())],
        binds: vec![format!("{socket}:/var/run/docker.sock"), format!("{}:/weir/results", store_dir.display())],
        publish: Some("8081/tcp".into()),
        auto_remove: true,
    };
    if let Err(e) = docker.run(&spec) {
        let _ = docker.remove_network(&name);
        return Err(e);
    }
    let exited = || match docker.inspect(&name) {
        Ok(Some(c)) if c["State"]["Running"].as_bool() == Some(true) => None,
        Ok(Some(c)) => Some(format!("exit code {}", c["State"]["ExitCode"])),
        _ => Some("its container is gone".to_string()),
    };
    let output = || format!("see `docker logs {name}` while its container exists");
    wait_started(&store, id, exited, &output).inspect_err(|_| {
        let _ = docker.remove_container(&name);
        let _ = docker.remove_network(&name);
    })?;
    let port = docker
        .inspect(&name)?
        .and_then(|c| c["NetworkSettings"]["Ports"]["8081/tcp"][0]["HostPort"].as_str().map(String::from))
        .unwrap_or_default();
    let _ = writeln!(
        std::io::stdout(),
        "Application {id} is RUNNING on its own cluster (JobManager container {name}):\n  REST endpoint: \
         http://127.0.0.1:{port}\n  output:        docker logs -f {name}\n  its outcome:   weir applications {id}"
    );
    Ok(())
}

/// Waits (bounded) for the application's first record; `exited` says whether its JobManager ended,
/// `output` where to see what it printed.
pub(crate) fn wait_started(
    store: &JobResultStore,
    id: JobId,
    exited: impl FnMut() -> Option<String>,
    output: &dyn Fn() -> String,
) -> Result<ApplicationRecord> {
    wait_for("the application's JobManager", || store.get(id), exited, output)
}

/// Waits (bounded) until `found` gives something, unless `who` exited first.
fn wait_for<T>(
    who: &str,
    mut found: impl FnMut() -> Result<Option<T>>,
    mut exited: impl FnMut() -> Option<String>,
    output: &dyn Fn() -> String,
) -> Result<T> {
    let started = Instant::now();
    loop {
        if let Some(t) = found()? {
            return Ok(t);
        }
        if let Some(status) = exited() {
            // The process failed, not the command: its own output says why.
            return Err(Error::external(
                who.to_string(),
                format!("it exited at start ({status}); fix what it says and run the command again; {}", output()),
                false,
            ));
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(Error::external(
                who.to_string(),
                format!("it did not start within {} s; {}", START_TIMEOUT.as_secs(), output()),
                true,
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Why an application cannot start again under the same cluster id.
fn ended_already(cluster: &ClusterConfig, record: &ApplicationRecord) -> Error {
    Error::Config(format!(
        "the application of high-availability.cluster-id '{}' ({}) ended already ({}); a cluster id holds one \
         application: give a new high-availability.cluster-id to run it again (`weir applications {}` shows how it \
         went)",
        cluster.ha.cluster_id, record.id, record.status, record.id
    ))
}

/// A log file for another JobManager of application `id`: `ID.standby-N.log`, the first N free.
fn standby_log_path(store: &JobResultStore, id: JobId) -> PathBuf {
    (1..10_000)
        .map(|n| store.dir().join(format!("{id}.standby-{n}.log")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| store.dir().join(format!("{id}.standby-{}.log", JobId::random())))
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
