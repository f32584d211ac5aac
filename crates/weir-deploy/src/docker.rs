//! The `docker` target: TaskManagers as containers ([`DockerProvider`]), and the small client of
//! the Docker Engine API it and `run-application -t docker` use, over the engine's local unix
//! socket (images imported from a root file system, networks, containers). No image is ever
//! pulled.
//!
//! Each request is one HTTP/1.1 exchange on a fresh connection with `Connection: close`, so a
//! response ends where the stream ends; chunked bodies are decoded. That subset of HTTP is all the
//! Engine API needs here, which is why this is not a general HTTP client.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};
use weir_core::{Error, Result};

use crate::{BoxFuture, ResourceProvider, blocking, in_background};

/// The Engine API version used (Docker 20.10 and later speak it).
const API: &str = "/v1.41";

/// A Docker engine, reached through its unix socket.
#[derive(Clone, Debug)]
pub struct Docker {
    socket: PathBuf,
    host: String,
}

/// This process's `AWS_*` environment variables as `KEY=value`, for the containers it starts:
/// checkpoint storage on S3 is configured by them in every process (see `CheckpointStorage::open`).
pub fn aws_env() -> Vec<String> {
    std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).map(|(k, v)| format!("{k}={v}")).collect()
}

/// What a container runs, and where.
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
        Ok(Docker { socket: PathBuf::from(socket), host })
    }

    /// The socket's path.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    fn unreachable(&self, e: std::io::Error) -> Error {
        Error::Network {
            context: "cannot reach the Docker engine (start it, or name it with docker.host or $DOCKER_HOST) at".into(),
            peer: self.host.clone(),
            source: e,
        }
    }

    /// One request; the status and the body.
    pub fn request(&self, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<(u16, Vec<u8>)> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| self.unreachable(e))?;
        stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| self.unreachable(e))?;
        let mut head = format!("{method} {API}{path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
        if let Some((kind, bytes)) = body {
            head.push_str(&format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", bytes.len()));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(|e| self.unreachable(e))?;
        if let Some((_, bytes)) = body {
            stream.write_all(bytes).map_err(|e| self.unreachable(e))?;
        }
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).map_err(|e| self.unreachable(e))?;
        parse_response(&answer).ok_or_else(|| {
            Error::external(format!("the Docker engine at {}", self.host), "it sent an answer that is not HTTP", false)
        })
    }

    /// A request with a JSON body (or none) whose answer must be a success; its JSON (or null).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let text = body.map(|b| b.to_string());
        let (status, bytes) = self.request(method, path, text.as_ref().map(|t| ("application/json", t.as_bytes())))?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 400 {
            let message = value["message"].as_str().map(String::from).unwrap_or_else(|| format!("HTTP {status}"));
            // A refusal (an image or network that is not there, a name in use) is final, and says
            // what the engine lacks; the engine's own failure (5xx) may pass.
            let hint = match status {
                404 => "; check that the image and network it names exist (docker.image, docker.network)",
                409 => "; remove what holds the name (docker ps -a, docker network ls), or run again",
                _ => "",
            };
            return Err(Error::external(
                format!("the Docker engine at {}", self.host),
                format!("it refused {method} {path}: {message}{hint}"),
                status >= 500,
            ));
        }
        Ok(value)
    }

    /// Checks that the engine answers.
    pub fn ping(&self) -> Result<()> {
        let (status, _) = self.request("GET", "/_ping", None)?;
        if status == 200 {
            Ok(())
        } else {
            Err(Error::external(
                format!("the Docker engine at {}", self.host),
                format!("it answered its ping with HTTP {status}"),
                true,
            ))
        }
    }

    /// Whether the engine has image `name`.
    pub fn has_image(&self, name: &str) -> Result<bool> {
        Ok(self.request("GET", &format!("/images/{name}/json"), None)?.0 == 200)
    }

    /// Imports a root file system (a tar archive) as image `repo:tag`.
    pub fn import_image(&self, tar: &[u8], repo: &str, tag: &str) -> Result<()> {
        let (status, body) = self.request(
            "POST",
            &format!("/images/create?fromSrc=-&repo={repo}&tag={tag}"),
            Some(("application/x-tar", tar)),
        )?;
        let text = String::from_utf8_lossy(&body);
        if status >= 400 || text.contains("\"error\"") {
            return Err(Error::external(
                format!("the Docker engine could not import image {repo}:{tag}"),
                text,
                status >= 500,
            ));
        }
        Ok(())
    }

    /// Gives image `name` another reference, `repo:tag`.
    pub fn tag(&self, name: &str, repo: &str, tag: &str) -> Result<()> {
        self.call("POST", &format!("/images/{name}/tag?repo={repo}&tag={tag}"), None).map(|_| ())
    }

    /// Removes an image.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        self.call("DELETE", &format!("/images/{name}?force=true"), None).map(|_| ())
    }

    /// Creates a private (bridge) network labelled as `cluster`'s; its gateway address.
    pub fn create_network(&self, name: &str, cluster: &str) -> Result<String> {
        self.call(
            "POST",
            "/networks/create",
            Some(&json!({ "Name": name, "Driver": "bridge", "CheckDuplicate": true, "Labels": { "weir.cluster": cluster } })),
        )?;
        self.gateway(name)
    }

    /// The gateway address of a network (where containers on it reach the host).
    pub fn gateway(&self, network: &str) -> Result<String> {
        let info = self.call("GET", &format!("/networks/{network}"), None)?;
        info["IPAM"]["Config"][0]["Gateway"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| Error::external(format!("the Docker network {network}"), "it has no gateway address", false))
    }

    /// The `weir.cluster` label of a network, if it exists.
    pub fn network_cluster(&self, network: &str) -> Result<Option<String>> {
        let (status, body) = self.request("GET", &format!("/networks/{network}"), None)?;
        if status == 404 {
            return Ok(None);
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(v["Labels"]["weir.cluster"].as_str().map(String::from))
    }

    /// Disconnects a container from a network (so the network can go while it still runs).
    pub fn disconnect(&self, network: &str, container: &str) -> Result<()> {
        self.call(
            "POST",
            &format!("/networks/{network}/disconnect"),
            Some(&json!({ "Container": container, "Force": true })),
        )
        .map(|_| ())
    }

    /// Removes a network.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        self.call("DELETE", &format!("/networks/{name}"), None).map(|_| ())
    }

    /// Creates and starts a container; its id.
    pub fn run(&self, spec: &ContainerSpec) -> Result<String> {
        let labels: serde_json::Map<String, Value> =
            spec.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let mut host = json!({ "NetworkMode": spec.network, "AutoRemove": spec.auto_remove, "Binds": spec.binds });
        let mut exposed = json!({});
        if let Some(port) = &spec.publish {
            host["PortBindings"] = json!({ port: [{ "HostIp": "127.0.0.1", "HostPort": "" }] });
            exposed = json!({ port: {} });
        }
        let body = json!({
            "Image": spec.image,
            "Cmd": spec.cmd,
            "Env": spec.env,
            "Hostname": spec.name,
            "Labels": labels,
            "ExposedPorts": exposed,
            "HostConfig": host,
        });
        let created = self.call("POST", &format!("/containers/create?name={}", spec.name), Some(&body))?;
        let id = created["Id"].as_str().unwrap_or(&spec.name).to_string();
        if let Err(e) = self.call("POST", &format!("/containers/{id}/start"), None) {
            let _ = self.remove_container(&id);
            return Err(e);
        }
        Ok(id)
    }

    /// A container's details (`Ok(None)`: no such container).
    pub fn inspect(&self, name: &str) -> Result<Option<Value>> {
        let (status, body) = self.request("GET", &format!("/containers/{name}/json"), None)?;
        if status == 404 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace_s` seconds).
    pub fn stop(&self, name: &str, grace_s: u32) -> Result<()> {
        let (status, body) = self.request("POST", &format!("/containers/{name}/stop?t={grace_s}"), None)?;
        match status {
            204 | 304 | 404 => Ok(()),
            _ => Err(Error::external(
                format!("the Docker engine cannot stop container {name}"),
                String::from_utf8_lossy(&body),
                status >= 500,
            )),
        }
    }

    /// Removes a container, running or not.
    pub fn remove_container(&self, name: &str) -> Result<()> {
        let (status, body) = self.request("DELETE", &format!("/containers/{name}?force=true"), None)?;
        match status {
            204 | 404 | 409 => Ok(()),
            _ => Err(Error::external(
                format!("the Docker engine cannot remove container {name}"),
                String::from_utf8_lossy(&body),
                status >= 500,
            )),
        }
    }

    /// Names of the containers labelled as `cluster`'s, running or not.
    pub fn containers_of(&self, cluster: &str) -> Result<Vec<String>> {
        let filters = format!("{{\"label\":[\"weir.cluster={cluster}\"]}}");
        let list = self.call("GET", &format!("/containers/json?all=true&filters={}", percent(&filters)), None)?;
        Ok(list
            .as_array()
            .map(|a| {
                a.iter().filter_map(|c| c["Names"][0].as_str().map(|n| n.trim_start_matches('/').to_string())).collect()
            })
            .unwrap_or_default())
    }
}

/// Percent-encodes a query value.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Splits an HTTP/1.1 response read to its end into status and body, decoding a chunked body.
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = &raw[end + 4..];
    if !chunked {
        return Some((status, body.to_vec()));
    }
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some((status, out));
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_parse_plain_and_chunked_and_garbage_is_refused() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(plain), Some((200, b"ok".to_vec())));
        let chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((201, b"abcde".to_vec())));
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"), None);
        assert_eq!(parse_response(b"not http"), None);
        assert_eq!(percent("{\"a\":[\"b=c\"]}"), "%7B%22a%22%3A%5B%22b%3Dc%22%5D%7D");
    }

    #[test]
    fn only_local_engines_are_supported_and_an_absent_one_is_a_clear_error() {
        let e = Docker::new(Some("tcp://10.0.0.1:2375")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("only a local engine on a unix socket"), "{e}");
        let absent = Docker::new(Some("unix:///nonexistent/docker.sock")).map(|d| d.ping());
        let e = match absent {
            Ok(Err(e)) => e.to_string(),
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(e.contains("cannot reach the Docker engine") && e.contains("/nonexistent/docker.sock"), "{e}");
    }
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
            env: [vec!["TMPDIR=/tmp".to_string()], aws_env()].concat(),
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
