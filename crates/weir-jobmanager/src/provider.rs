//! Resource providers: who starts TaskManagers.
//!
//! With `standalone` (the default) TaskManagers are started by someone else and register by
//! themselves. An active provider is asked by the JobManager for TaskManagers when jobs wait for
//! slots, and told to stop the ones it started once they sat idle for
//! `resourcemanager.taskmanager-timeout`. [`ProcessProvider`] starts them as child processes of
//! the JobManager, from the JobManager's own program.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_core::{Error, Result};

/// Starts and stops TaskManagers for a JobManager.
pub trait ResourceProvider: Send + Sync + std::fmt::Debug {
    /// Its name (`process`, ...).
    fn kind(&self) -> &'static str;
    /// Starts a TaskManager with id `id` and `slots` slots that registers with the JobManager at
    /// `rpc` (`host:port`).
    fn start(&self, id: &str, slots: u32, rpc: &str) -> Result<()>;
    /// Ends a TaskManager it started, which was told to shut down: waits a little, then forces it.
    fn stop(&self, id: &str);
    /// Ends every TaskManager it started and removes what it made.
    fn shutdown(&self);
}

/// TaskManagers as child processes of the JobManager, started from its own program.
#[derive(Debug)]
pub struct ProcessProvider {
    program: PathBuf,
    prefix: Vec<String>,
    settings: Vec<String>,
    dir: PathBuf,
    quiet: bool,
    children: Mutex<HashMap<String, Child>>,
}

impl ProcessProvider {
    /// A provider that runs `program PREFIX... taskmanager --id ID SETTINGS... -D ...`; `settings`
    /// are arguments every TaskManager gets (`-D key=value` pairs). Artifact caches go under a
    /// directory of its own, removed at [`ResourceProvider::shutdown`]. The TaskManagers' output
    /// (print sinks) goes where the JobManager's goes, or nowhere when `quiet`.
    pub fn new(program: PathBuf, prefix: Vec<String>, settings: Vec<String>, quiet: bool) -> Result<ProcessProvider> {
        let dir = std::env::temp_dir().join(format!("weir-taskmanagers-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("cannot create a directory for the TaskManagers it starts", &dir, e))?;
        Ok(ProcessProvider { program, prefix, settings, dir, quiet, children: Mutex::new(HashMap::new()) })
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Waits up to `grace` for a child to exit, then kills it; reaps it either way.
fn end(id: &str, mut child: Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => break,
        }
    }
    warn!(taskmanager = id, pid = child.id(), "a TaskManager did not stop when asked; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

impl ResourceProvider for ProcessProvider {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn start(&self, id: &str, slots: u32, rpc: &str) -> Result<()> {
        let (host, port) = rpc.rsplit_once(':').unwrap_or((rpc, "6123"));
        let cache = self.dir.join(id);
        let mut command = Command::new(&self.program);
        command
            .args(&self.prefix)
            .args(["taskmanager", "--id", id])
            .args(&self.settings)
            .args(["-D", &format!("jobmanager.rpc.address={host}")])
            .args(["-D", &format!("jobmanager.rpc.port={port}")])
            .args(["-D", &format!("taskmanager.numberOfTaskSlots={slots}")])
            .args(["-D", &format!("blob.storage.directory={}", cache.display())])
            .stdin(Stdio::null());
        if self.quiet {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command.spawn().map_err(|e| {
            Error::io("the process resource provider cannot start a TaskManager from", &self.program, e)
        })?;
        info!(taskmanager = id, pid = child.id(), slots, "TaskManager process started");
        self.children().insert(id.to_string(), child);
        Ok(())
    }

    fn stop(&self, id: &str) {
        if let Some(child) = self.children().remove(id) {
            end(id, child, Duration::from_secs(5));
        }
    }

    fn shutdown(&self) {
        let children: Vec<(String, Child)> = self.children().drain().collect();
        for (id, child) in children {
            end(&id, child, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for ProcessProvider {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// TaskManagers as containers on the cluster's private network, started through the Docker Engine
/// API from the cluster's image (`docker.image`, on `docker.network`).
#[derive(Debug)]
pub struct DockerProvider {
    docker: crate::docker::Docker,
    image: String,
    network: String,
    /// The command line before `taskmanager` (the program in the image and its role prefix).
    program: Vec<String>,
    settings: Vec<String>,
    /// The JobManager's own container, when it runs in one (it leaves the network at shutdown).
    own_container: Option<String>,
    started: Mutex<Vec<String>>,
}

impl DockerProvider {
    /// A provider that runs `PROGRAM... taskmanager --id ID SETTINGS... -D ...` in containers of
    /// `image` on `network`. Fails at once if the engine cannot be reached.
    pub fn new(
        docker: crate::docker::Docker,
        image: String,
        network: String,
        program: Vec<String>,
        settings: Vec<String>,
    ) -> Result<DockerProvider> {
        docker.ping()?;
        let own_container = std::env::var("WEIR_CONTAINER").ok();
        Ok(DockerProvider { docker, image, network, program, settings, own_container, started: Mutex::new(Vec::new()) })
    }

    fn started(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container name of TaskManager `id`.
    pub fn container(&self, id: &str) -> String {
        format!("{}-{id}", self.network)
    }
}

impl ResourceProvider for DockerProvider {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn start(&self, id: &str, slots: u32, rpc: &str) -> Result<()> {
        let (host, port) = rpc.rsplit_once(':').unwrap_or((rpc, "6123"));
        let name = self.container(id);
        let mut cmd = self.program.clone();
        cmd.extend(["taskmanager".into(), "--id".into(), id.into()]);
        cmd.extend(self.settings.iter().cloned());
        for setting in [
            format!("jobmanager.rpc.address={host}"),
            format!("jobmanager.rpc.port={port}"),
            format!("taskmanager.numberOfTaskSlots={slots}"),
            // Other TaskManagers reach it by its name on the network.
            format!("taskmanager.host={name}"),
            "taskmanager.bind-host=0.0.0.0".to_string(),
            "blob.storage.directory=/tmp/weir-artifacts".to_string(),
        ] {
            cmd.extend(["-D".to_string(), setting]);
        }
        let spec = crate::docker::ContainerSpec {
            name: name.clone(),
            image: self.image.clone(),
            cmd,
            env: [vec!["TMPDIR=/tmp".to_string()], crate::docker::aws_env()].concat(),
            network: self.network.clone(),
            labels: vec![("weir.cluster".into(), self.network.clone())],
            ..Default::default()
        };
        self.docker.run(&spec).map_err(|e| match e {
            // Keep the blame of what the engine said: a missing image is the user's to build, an
            // engine that is down is nobody's configuration.
            Error::Config(m) => {
                Error::Config(format!("the docker resource provider cannot start a TaskManager container: {m}"))
            }
            e => {
                let retryable = e.is_retryable();
                Error::external(
                    "the docker resource provider cannot start a TaskManager container",
                    e.to_string(),
                    retryable,
                )
            }
        })?;
        info!(taskmanager = id, container = %name, slots, "TaskManager container started");
        self.started().push(name);
        Ok(())
    }

    fn stop(&self, id: &str) {
        let name = self.container(id);
        self.started().retain(|n| *n != name);
        if let Err(e) = self.docker.stop(&name, 5).and_then(|()| self.docker.remove_container(&name)) {
            warn!(container = %name, error = %e, "cannot remove a TaskManager container");
        }
    }

    fn shutdown(&self) {
        // Every container of the cluster, also ones a crash kept out of the list.
        let mut names: Vec<String> = self.started().drain(..).collect();
        names.extend(self.docker.containers_of(&self.network).unwrap_or_default());
        names.sort();
        names.dedup();
        for name in names.iter().filter(|n| Some(*n) != self.own_container.as_ref()) {
            if let Err(e) = self.docker.remove_container(name) {
                warn!(container = %name, error = %e, "cannot remove a TaskManager container");
            }
        }
        // The network goes with the cluster that made it.
        if self.docker.network_cluster(&self.network).ok().flatten().as_deref() == Some(self.network.as_str()) {
            if let Some(own) = &self.own_container {
                let _ = self.docker.disconnect(&self.network, own);
            }
            if let Err(e) = self.docker.remove_network(&self.network) {
                warn!(network = %self.network, error = %e, "cannot remove the cluster's network");
            }
        }
    }
}
