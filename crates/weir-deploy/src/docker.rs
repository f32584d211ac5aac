//! The `docker` target: TaskManagers as containers ([`DockerProvider`]) on the cluster's private
//! network, started through the Docker Engine client ([`crate::engine`], re-exported here). No
//! image is ever pulled.

use std::sync::{Arc, Mutex};

use tracing::{info, warn};
use weir_core::{Error, Result};

use crate::{BoxFuture, ResourceProvider, blocking, in_background};

pub use crate::engine::{ContainerSpec, Docker};

/// This process's environment variables that every process of a cluster needs, as `KEY=value`,
/// for the containers it starts: the `AWS_*` ones that configure checkpoint storage on S3 (see
/// `CheckpointStorage::open`), and the cluster secret (`WEIR_CLUSTER_SECRET`) that internal
/// connections prove.
pub fn forwarded_env() -> Vec<String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k == "WEIR_CLUSTER_SECRET")
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// TaskManagers as containers on the cluster's private network, started through the Docker Engine
/// API from the cluster's image (`docker.image`, on `docker.network`).
#[derive(Debug)]
pub struct DockerProvider {
    docker: Docker,
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
        docker: Docker,
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

    fn start(self: Arc<Self>, id: String, slots: u32, rpc: String) -> BoxFuture<'static, Result<()>> {
        blocking(move || self.start_now(&id, slots, &rpc))
    }

    fn stop(self: Arc<Self>, id: String) -> BoxFuture<'static, ()> {
        in_background(move || self.stop_now(&id))
    }

    fn shutdown(&self) {
        self.shutdown_now();
    }
}

impl DockerProvider {
    fn start_now(&self, id: &str, slots: u32, rpc: &str) -> Result<()> {
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
        let spec = ContainerSpec {
            name: name.clone(),
            image: self.image.clone(),
            cmd,
            env: [vec!["TMPDIR=/tmp".to_string()], forwarded_env()].concat(),
            network: self.network.clone(),
            labels: vec![("weir.cluster".into(), self.network.clone())],
            ..Default::default()
        };
        self.docker.run(&spec).map_err(|e| {
            // The engine failed or refused: nobody's configuration; whether it may pass is kept.
            let retryable = e.is_retryable();
            Error::external(
                "the docker resource provider cannot start a TaskManager container",
                e.to_string(),
                retryable,
            )
        })?;
        info!(taskmanager = id, container = %name, slots, "TaskManager container started");
        self.started().push(name);
        Ok(())
    }

    fn stop_now(&self, id: &str) {
        let name = self.container(id);
        self.started().retain(|n| *n != name);
        if let Err(e) = self.docker.stop(&name, 5).and_then(|()| self.docker.remove_container(&name)) {
            warn!(container = %name, error = %e, "cannot remove a TaskManager container");
        }
    }

    fn shutdown_now(&self) {
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
