//! The Docker Engine client that the `docker` target and `run-application -t docker` use:
//! [`bollard`] (the maintained Rust client of the Engine API, over hyper) on the engine's local
//! unix socket, behind a small blocking interface, since its callers are command-line paths and
//! the resource provider's blocking threads. Images are imported from a root file system (never
//! pulled); networks and containers carry the cluster's `weir.cluster` label.
//!
//! Requests run on a single-threaded tokio runtime of their own, on a thread that lives as long as
//! the process; a call hands its request over and waits for the answer. So a call works the same
//! from a command line, a blocking thread or inside another runtime (a JobManager shutting down),
//! and no runtime is ever dropped where that is not allowed.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::OnceLock;

use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, NetworkDisconnectRequest, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
    RemoveImageOptions, StopContainerOptions, TagImageOptions,
};
use futures_util::TryStreamExt;
use serde_json::Value;
use weir_core::{Error, Result};

/// The Engine API version used (Docker 20.10 and later speak it).
const API: bollard::ClientVersion = bollard::ClientVersion { major_version: 1, minor_version: 41 };

/// How long one request may take, in seconds (an image import of a large artifact included).
const TIMEOUT_S: u64 = 120;

/// A Docker engine, reached through its unix socket.
#[derive(Clone, Debug)]
pub struct Docker {
    client: bollard::Docker,
    socket: PathBuf,
    host: String,
}

/// The runtime Docker requests run on, started on first use on a thread of its own.
fn engine_runtime() -> Result<&'static tokio::runtime::Handle> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Handle, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("docker-engine".into())
                .spawn(move || runtime.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("cannot start the Docker client's runtime: {e}")))
}

/// Runs `request` on the Docker client's runtime and waits for its outcome.
fn run<T: Send + 'static>(request: impl Future<Output = T> + Send + 'static) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    engine_runtime()?.spawn(async move {
        let _ = tx.send(request.await);
    });
    rx.recv().map_err(|_| Error::internal("the Docker client's runtime dropped a request"))
}

/// A container to start.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// Its name (also its host name on its network).
    pub name: String,
    /// The image.
    pub image: String,
    /// The command line.
    pub cmd: Vec<String>,
    /// Environment, `KEY=value`.
    pub env: Vec<String>,
    /// The private network it joins.
    pub network: String,
    /// Labels (`weir.cluster` marks what a cluster made).
    pub labels: Vec<(String, String)>,
    /// Bind mounts, `host:container`.
    pub binds: Vec<String>,
    /// A container port published on the host's loopback at a free port (`8081/tcp`).
    pub publish: Option<String>,
    /// Removed by the engine once it exits.
    pub auto_remove: bool,
}

/// The error for an engine that cannot be reached at `host`.
fn unreachable_engine(host: &str, e: EngineError) -> Error {
    Error::Network {
        context: "cannot reach the Docker engine (start it, or name it with docker.host or $DOCKER_HOST) at".into(),
        peer: host.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The status code of an engine's refusal, if `e` is one.
fn status_of(e: &EngineError) -> Option<u16> {
    match e {
        EngineError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

impl Docker {
    /// The engine `docker.host` names, else `$DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    pub fn new(host: Option<&str>) -> Result<Docker> {
        let host = host
            .map(String::from)
            .or_else(|| std::env::var("DOCKER_HOST").ok())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        let socket = host.strip_prefix("unix://").ok_or_else(|| {
            Error::Config(format!(
                "docker.host '{host}': only a local engine on a unix socket is supported (unix:///var/run/docker.sock)"
            ))
        })?;
        // (The client is made inside the runtime that drives its requests.)
        let path = socket.to_string();
        let client = run(async move { bollard::Docker::connect_with_unix(&path, TIMEOUT_S, &API) })?;
        let client = client.map_err(|e| match e {
            // No socket there: the engine is not running (or lives elsewhere).
            EngineError::SocketNotFoundError(_) => unreachable_engine(&host, e),
            e => Error::Config(format!("docker.host '{host}': {e}")),
        })?;
        Ok(Docker { client, socket: PathBuf::from(socket), host })
    }

    /// The socket's path.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// Runs `request` of the engine (given a client of its own) to its end.
    fn block<T: Send + 'static, F: Future<Output = std::result::Result<T, EngineError>> + Send + 'static>(
        &self,
        request: impl FnOnce(bollard::Docker) -> F,
    ) -> std::result::Result<T, EngineError> {
        let request = request(self.client.clone());
        run(request).unwrap_or_else(|e| Err(EngineError::DockerStreamError { error: e.to_string() }))
    }

    /// The error for a failed request `what`: the engine out of reach is a network failure; its
    /// refusals say what the engine lacks (final), its own failures may pass.
    fn failed(&self, what: &str, e: EngineError) -> Error {
        match status_of(&e) {
            Some(status) => {
                let message = match &e {
                    EngineError::DockerResponseServerError { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                let hint = match status {
                    404 => "; check that the image and network it names exist (docker.image, docker.network)",
                    409 => "; remove what holds the name (docker ps -a, docker network ls), or run again",
                    _ => "",
                };
                Error::external(
                    format!("the Docker engine at {}", self.host),
                    format!("it refused to {what}: {message}{hint}"),
                    status >= 500,
                )
            }
            None => match e {
                EngineError::RequestTimeoutError => Error::external(
                    format!("the Docker engine at {}", self.host),
                    format!("it did not answer within {TIMEOUT_S} s when asked to {what}"),
                    true,
                ),
                other => unreachable_engine(&self.host, other),
            },
        }
    }

    /// Checks that the engine answers.
    pub fn ping(&self) -> Result<()> {
        self.block(|c| async move { c.ping().await }).map(|_| ()).map_err(|e| self.failed("answer its ping", e))
    }

    /// Whether the engine has image `name`.
    pub fn has_image(&self, name: &str) -> Result<bool> {
        let image = name.to_string();
        match self.block(|c| async move { c.inspect_image(&image).await }) {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.failed(&format!("inspect image {name}"), e)),
        }
    }

    /// Imports a root file system (a tar archive) as image `repo:tag`.
    pub fn import_image(&self, tar: &[u8], repo: &str, tag: &str) -> Result<()> {
        let options = CreateImageOptions {
            from_src: Some("-".into()),
            repo: Some(repo.into()),
            tag: Some(tag.into()),
            ..Default::default()
        };
        let body = bollard::body_full(bytes::Bytes::copy_from_slice(tar));
        // The engine streams its progress; an error in it fails the import.
        self.block(|c| async move {
            c.create_image(Some(options), Some(body), None).try_for_each(|_| async { Ok(()) }).await
        })
        .map_err(|e| self.failed(&format!("import image {repo}:{tag}"), e))
    }

    /// Gives image `name` another reference, `repo:tag`.
    pub fn tag(&self, name: &str, repo: &str, tag: &str) -> Result<()> {
        let options = TagImageOptions { repo: Some(repo.into()), tag: Some(tag.into()) };
        let image = name.to_string();
        self.block(|c| async move { c.tag_image(&image, Some(options)).await })
            .map_err(|e| self.failed(&format!("tag image {name} as {repo}:{tag}"), e))
    }

    /// Removes an image.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        let options = RemoveImageOptions { force: true, ..Default::default() };
        let image = name.to_string();
        self.block(|c| async move { c.remove_image(&image, Some(options), None).await })
            .map(|_| ())
            .map_err(|e| self.failed(&format!("remove image {name}"), e))
    }

    /// Creates a private (bridge) network labelled as `cluster`'s; its gateway address.
    pub fn create_network(&self, name: &str, cluster: &str) -> Result<String> {
        self.create_owned_network(name, cluster, None)
    }

    /// As [`Docker::create_network`], for a cluster whose JobManager runs in the container
    /// `jobmanager` (to be started next): once that container is gone while the cluster's other
    /// containers remain, [`Docker::sweep_orphans`] removes them and the network.
    pub fn create_owned_network(&self, name: &str, cluster: &str, jobmanager: Option<&str>) -> Result<String> {
        let mut labels = HashMap::from([("weir.cluster".to_string(), cluster.to_string())]);
        if let Some(jm) = jobmanager {
            labels.insert("weir.jobmanager-container".to_string(), jm.to_string());
        }
        let request = NetworkCreateRequest {
            name: name.into(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        };
        self.block(|c| async move { c.create_network(request).await })
            .map_err(|e| self.failed(&format!("create network {name}"), e))?;
        self.gateway(name)
    }

    /// The gateway address of a network (where containers on it reach the host).
    pub fn gateway(&self, network: &str) -> Result<String> {
        let name = network.to_string();
        let info = self
            .block(|c| async move { c.inspect_network(&name, None).await })
            .map_err(|e| self.failed(&format!("inspect network {network}"), e))?;
        info.ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.gateway))
            .ok_or_else(|| Error::external(format!("the Docker network {network}"), "it has no gateway address", false))
    }

    /// The `weir.cluster` label of a network, if it exists.
    pub fn network_cluster(&self, network: &str) -> Result<Option<String>> {
        let name = network.to_string();
        match self.block(|c| async move { c.inspect_network(&name, None).await }) {
            Ok(info) => Ok(info.labels.and_then(|mut l| l.remove("weir.cluster"))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.failed(&format!("inspect network {network}"), e)),
        }
    }

    /// Disconnects a container from a network (so the network can go while it still runs).
    pub fn disconnect(&self, network: &str, container: &str) -> Result<()> {
        let request = NetworkDisconnectRequest { container: container.into(), force: Some(true) };
        let name = network.to_string();
        self.block(|c| async move { c.disconnect_network(&name, request).await })
            .map_err(|e| self.failed(&format!("disconnect {container} from network {network}"), e))
    }

    /// Removes a network.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        let network = name.to_string();
        self.block(|c| async move { c.remove_network(&network).await })
            .map_err(|e| self.failed(&format!("remove network {name}"), e))
    }

    /// Creates and starts a container; its id.
    pub fn run(&self, spec: &ContainerSpec) -> Result<String> {
        let mut host = HostConfig {
            network_mode: Some(spec.network.clone()),
            auto_remove: Some(spec.auto_remove),
            binds: Some(spec.binds.clone()),
            ..Default::default()
        };
        let mut exposed = None;
        if let Some(port) = &spec.publish {
            let binding = PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) };
            host.port_bindings = Some(HashMap::from([(port.clone(), Some(vec![binding]))]));
            exposed = Some(vec![port.clone()]);
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            hostname: Some(spec.name.clone()),
            labels: Some(spec.labels.iter().cloned().collect()),
            exposed_ports: exposed,
            host_config: Some(host),
            ..Default::default()
        };
        let options = CreateContainerOptions { name: Some(spec.name.clone()), ..Default::default() };
        let created = self
            .block(|c| async move { c.create_container(Some(options), body).await })
            .map_err(|e| self.failed(&format!("create container {}", spec.name), e))?;
        let id = created.id.clone();
        if let Err(e) = self.block(|c| async move { c.start_container(&id, None).await }) {
            let _ = self.remove_container(&created.id);
            return Err(self.failed(&format!("start container {}", spec.name), e));
        }
        Ok(created.id)
    }

    /// A container's details as the engine gives them (`Ok(None)`: no such container).
    pub fn inspect(&self, name: &str) -> Result<Option<Value>> {
        let container = name.to_string();
        match self.block(|c| async move { c.inspect_container(&container, None).await }) {
            Ok(info) => serde_json::to_value(info)
                .map(Some)
                .map_err(|e| Error::internal(format!("cannot read container details: {e}"))),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.failed(&format!("inspect container {name}"), e)),
        }
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace_s` seconds); one that is gone or
    /// stopped already is fine.
    pub fn stop(&self, name: &str, grace_s: u32) -> Result<()> {
        let options = StopContainerOptions { t: Some(grace_s.min(i32::MAX as u32) as i32), ..Default::default() };
        let container = name.to_string();
        match self.block(|c| async move { c.stop_container(&container, Some(options)).await }) {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(self.failed(&format!("stop container {name}"), e)),
        }
    }

    /// Removes a container, running or not; one that is gone or being removed already is fine.
    pub fn remove_container(&self, name: &str) -> Result<()> {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        let container = name.to_string();
        match self.block(|c| async move { c.remove_container(&container, Some(options)).await }) {
            Ok(()) => Ok(()),
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => Ok(()),
            Err(e) => Err(self.failed(&format!("remove container {name}"), e)),
        }
    }

    /// Removes what clusters left behind whose JobManager container was killed (no one stopped
    /// their TaskManagers' containers or removed their network): every network made by
    /// [`Docker::create_owned_network`] whose JobManager container is gone while other containers
    /// of its cluster remain goes with those containers. (A cluster still starting has no other
    /// container before its JobManager's.) Returns the clusters swept.
    pub fn sweep_orphans(&self) -> Result<Vec<String>> {
        let filters = HashMap::from([("label".to_string(), vec!["weir.jobmanager-container".to_string()])]);
        let options = ListNetworksOptions { filters: Some(filters) };
        let networks = self
            .block(|c| async move { c.list_networks(Some(options)).await })
            .map_err(|e| self.failed("list weir's networks", e))?;
        let mut swept = Vec::new();
        for network in networks {
            let mut labels = network.labels.unwrap_or_default();
            let (Some(name), Some(cluster), Some(jobmanager)) =
                (network.name, labels.remove("weir.cluster"), labels.remove("weir.jobmanager-container"))
            else {
                continue;
            };
            if self.inspect(&jobmanager)?.is_some() {
                continue;
            }
            let filters = HashMap::from([("label".to_string(), vec![format!("weir.cluster={cluster}")])]);
            let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
            let containers = self
                .block(|c| async move { c.list_containers(Some(options)).await })
                .map_err(|e| self.failed(&format!("list the containers of cluster {cluster}"), e))?;
            if containers.is_empty() {
                continue;
            }
            for c in &containers {
                if let Some(n) = c.names.as_ref().and_then(|n| n.first()) {
                    self.remove_container(n.trim_start_matches('/'))?;
                }
            }
            // Gone already (its own cluster finished removing it meanwhile): nothing left to do.
            match self.block({
                let name = name.clone();
                |c| async move { c.remove_network(&name).await }
            }) {
                Ok(()) => {}
                Err(e) if matches!(status_of(&e), Some(404)) => {}
                Err(e) => return Err(self.failed(&format!("remove network {name}"), e)),
            }
            tracing::info!(cluster = %cluster, containers = containers.len(), "removed what a killed cluster left");
            swept.push(cluster);
        }
        Ok(swept)
    }

    /// Names of the containers labelled as `cluster`'s, running or not.
    pub fn containers_of(&self, cluster: &str) -> Result<Vec<String>> {
        let filters = HashMap::from([("label".to_string(), vec![format!("weir.cluster={cluster}")])]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = self
            .block(|c| async move { c.list_containers(Some(options)).await })
            .map_err(|e| self.failed(&format!("list the containers of cluster {cluster}"), e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| c.names.and_then(|n| n.into_iter().next()).map(|n| n.trim_start_matches('/').to_string()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_engines_are_supported_and_an_absent_one_is_a_clear_error() {
        let e = Docker::new(Some("tcp://10.0.0.1:2375")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("only a local engine on a unix socket"), "{e}");
        let absent = Docker::new(Some("unix:///nonexistent/docker.sock")).map(|d| d.ping());
        let e = match absent {
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
            Ok(Ok(())) => panic!("an absent engine answered"),
        };
        assert!(e.contains("cannot reach the Docker engine") && e.contains("/nonexistent/docker.sock"), "{e}");
    }

    #[tokio::test]
    async fn a_call_from_inside_another_runtime_is_driven_on_its_own_thread() {
        // (No engine needed: the error of an absent one shows the call ran to its end.)
        let docker = Docker::new(Some("unix:///nonexistent/docker.sock"));
        let e = match docker.map(|d| d.ping()) {
            Ok(Err(e)) | Err(e) => e.to_string(),
            Ok(Ok(())) => panic!("an absent engine answered"),
        };
        assert!(e.contains("/nonexistent/docker.sock"), "{e}");
    }
}
