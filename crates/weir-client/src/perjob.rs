//! Per-job mode (`run -t per-job`): the client starts a cluster for its one job, from its own
//! program: a JobManager (`jobmanager --per-job`) whose process resource provider starts the
//! TaskManagers the job needs. The cluster shuts itself down once the job ended and its result was
//! fetched, and removes what it made; the client waits for that when attached.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_core::{Error, Result};

/// How long a per-job JobManager has to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A per-job cluster's JobManager, started by this client.
#[derive(Debug)]
pub struct PerJobCluster {
    child: Option<Child>,
    /// Says when the JobManager's output has been passed on to the end.
    output_done: Option<mpsc::Receiver<()>>,
    /// Its REST address (`host:port`).
    pub rest: String,
}

pub use weir_core::graph::this_program;

/// The settings that `forwarded` arguments (`--config FILE`, `-D key=value`) make.
fn settings_of(forwarded: &[String]) -> Result<crate::settings::Settings> {
    let mut config = None;
    let mut defines = Vec::new();
    let mut args = forwarded.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next().map(std::path::PathBuf::from),
            "-D" => defines.extend(args.next().cloned()),
            _ => {}
        }
    }
    crate::settings::Settings::gather(config.as_deref(), None, &defines)
}

/// For a per-job cluster with the docker provider: the image of this program, and a private
/// network of the cluster's own (removed with it), whose gateway is where its TaskManager
/// containers reach the JobManager running here. The settings that say so.
fn docker_cluster(cluster: &weir_core::config::ClusterConfig) -> Result<(Vec<String>, MadeNetwork)> {
    let docker = weir_deploy::docker::Docker::new(cluster.docker_host.as_deref())?;
    docker.ping()?;
    let exe = std::env::current_exe().map_err(|e| Error::internal(format!("cannot locate this executable: {e}")))?;
    let image = weir_deploy::image::ensure(&docker, &exe)?;
    let network = format!("weir-{}", &uuid_hex()[..12]);
    // Application clusters whose JobManager container was killed left their TaskManagers behind.
    for cluster in docker.sweep_orphans()? {
        eprintln!("Removed the containers and the network that cluster {cluster} left behind.");
    }
    let gateway = docker.create_network(&network, &network)?;
    let settings = vec![
        "resourcemanager.provider=docker".into(),
        format!("docker.image={image}"),
        format!("docker.network={network}"),
        format!("jobmanager.rpc.address={gateway}"),
    ];
    Ok((settings, MadeNetwork { docker, name: network, keep: false }))
}

/// A network made for a per-job cluster: removed again if the cluster does not start.
struct MadeNetwork {
    docker: weir_deploy::docker::Docker,
    name: String,
    keep: bool,
}

impl Drop for MadeNetwork {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.docker.remove_network(&self.name);
        }
    }
}

fn uuid_hex() -> String {
    weir_core::JobId::random().to_string()
}

impl PerJobCluster {
    /// Starts the JobManager with the client's settings (`forwarded`) and waits until it listens.
    /// `detached`: the client will not wait, so the cluster's output must not depend on it.
    pub fn start(forwarded: &[String], role_prefix: &[&str], detached: bool) -> Result<PerJobCluster> {
        let program = this_program()?;
        let mut command = Command::new(&program);
        command.args(role_prefix).args(["jobmanager", "--per-job"]);
        if detached {
            command.arg("--detached").stderr(Stdio::null());
        }
        command.args(forwarded);
        // The job's cluster proves a secret of its own on internal connections (unless this
        // process has one, or the settings name a file): its JobManager hands it to its TaskManagers.
        if let Some(secret) = weir_security::fresh_secret()? {
            command.env(weir_security::SECRET_VARIABLE, secret.text());
        }
        // Its own TaskManagers: containers with the docker provider, else processes.
        let cluster = settings_of(forwarded)?.cluster()?;
        // A network made here goes again unless the JobManager starts (then it is the cluster's).
        let mut network: Option<MadeNetwork> = None;
        if cluster.provider == "docker" {
            let (settings, made) = docker_cluster(&cluster)?;
            network = Some(made);
            for setting in settings {
                command.args(["-D", &setting]);
            }
        } else {
            command.args(["-D", "resourcemanager.provider=process"]);
        }
        let mut child = command
            // Its own ports, whatever the configuration says for sessions.
            .args(["-D", "rest.port=0", "-D", "jobmanager.rpc.port=0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("cannot start a per-job cluster from", program, e))?;
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let _done = done_tx;
                // The ready line tells where it listens; the rest is the job's output (print sinks).
                let mut ready = false;
                for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
                    if !ready && let Some(rest) = line.split_whitespace().find_map(|w| w.strip_prefix("rest=")) {
                        ready = true;
                        let _ = tx.send(crate::rest::announced(rest).to_string());
                    } else {
                        println!("{line}");
                    }
                }
            });
        }
        let mut cluster = PerJobCluster { child: Some(child), output_done: Some(done_rx), rest: String::new() };
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(rest) => {
                    if let Some(n) = network.as_mut() {
                        n.keep = true;
                    }
                    cluster.rest = rest;
                    return Ok(cluster);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < READY_TIMEOUT => {}
                // Its output ended without the ready line: it exited.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = cluster.child.take().and_then(|mut c| c.wait().ok());
                    let status = status.map(|s| s.to_string()).unwrap_or_else(|| "no status".into());
                    return Err(Error::external(
                        "the per-job cluster's JobManager",
                        format!("it exited at start ({status}); its error is above: fix what it says and run again"),
                        false,
                    ));
                }
                Err(_) => {
                    // Dropping it stops it.
                    return Err(Error::external(
                        "the per-job cluster's JobManager",
                        format!("it did not start within {} s", READY_TIMEOUT.as_secs()),
                        true,
                    ));
                }
            }
        }
    }

    /// Waits (bounded) until the cluster has shut itself down after its job.
    pub fn wait_gone(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => {
                    // Everything it and its TaskManagers printed, before the client goes.
                    if let Some(done) = self.output_done.take() {
                        let _ = done.recv_timeout(Duration::from_secs(5));
                    }
                    return Ok(());
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::internal("the per-job cluster did not shut down after its job; it was killed"));
                }
            }
        }
    }

    /// Leaves the cluster running its job (detached): it shuts down by itself when the job ends.
    pub fn detach(mut self) {
        self.child = None;
    }
}

impl Drop for PerJobCluster {
    /// A cluster whose job never started is stopped: nothing is left running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Asked to shut down, the JobManager stops its TaskManagers and removes its files.
            if !self.rest.is_empty() {
                let _ = crate::rest::RestClient::started(&self.rest).delete("/cluster");
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
