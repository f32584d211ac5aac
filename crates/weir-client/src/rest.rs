//! The REST client of a weir (or Flink-shaped) JobManager, where its endpoint is (with high
//! availability, the leader's), and the client commands built on it: `list`, `cancel`,
//! `savepoint`, `stop`.

use std::time::Duration;

use serde_json::Value;
use weir_core::config::ClusterConfig;
use weir_core::{Error, Result};

use crate::runtime;
use crate::settings::Settings;

/// A small REST client for one JobManager.
pub struct RestClient {
    base: String,
    agent: ureq::Agent,
}

impl RestClient {
    /// A client for the plain-HTTP REST endpoint at `address` (`host:port`).
    pub fn new(address: &str) -> RestClient {
        let base = if address.contains("://") { address.to_string() } else { format!("http://{address}") };
        RestClient { base, agent: agent(None) }
    }

    /// A client for the REST endpoint at `address` of a cluster configured by `cluster`: HTTPS
    /// with `security.ssl.rest.enabled`, trusting `security.ssl.rest.truststore` and presenting
    /// `security.ssl.rest.keystore` with `security.ssl.rest.authentication-enabled`.
    pub fn secured(address: &str, cluster: &ClusterConfig) -> Result<RestClient> {
        let Some(tls) = weir_security::rest::client(cluster)? else {
            return Ok(RestClient::new(address));
        };
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts};
        let roots: Vec<Certificate<'static>> = tls.roots.iter().map(|c| Certificate::from_der(c).to_owned()).collect();
        let identity = match (&tls.identity, &cluster.security.rest_keystore) {
            (Some((chain, _)), Some(keystore)) => {
                // The key as ureq reads it: from the same PEM file, which weir-security checked.
                let pem = std::fs::read(keystore)
                    .map_err(|e| Error::io("cannot read security.ssl.rest.keystore", keystore, e))?;
                let key = PrivateKey::from_pem(&pem)
                    .map_err(|e| Error::Config(format!("security.ssl.rest.keystore ({keystore}): {e}")))?
                    .to_owned();
                let chain: Vec<Certificate<'static>> =
                    chain.iter().map(|c| Certificate::from_der(c).to_owned()).collect();
                Some(ClientCert::new_with_certs(&chain, key))
            }
            _ => None,
        };
        let config =
            tls_config().root_certs(RootCerts::Specific(std::sync::Arc::new(roots))).client_cert(identity).build();
        let host = address.split_once("://").map_or(address, |(_, rest)| rest);
        Ok(RestClient { base: format!("https://{host}"), agent: agent(Some(config)) })
    }

    /// A client for the endpoint at `url` (`http://` or `https://host:port`) of a JobManager this
    /// process started and read the address from (its own child's output): over HTTPS it does
    /// not check the certificate, since only that child listens on the port it announced.
    pub fn started(url: &str) -> RestClient {
        let Some(host) = url.strip_prefix("https://") else { return RestClient::new(url) };
        let config = tls_config().disable_verification(true).build();
        RestClient { base: format!("https://{host}"), agent: agent(Some(config)) }
    }

    /// The endpoint's base URL (`http://host:port` or `https://host:port`).
    pub fn base(&self) -> &str {
        &self.base
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

/// An HTTP agent: answers of every status come back (the client reads their errors), nothing takes
/// longer than 30 s, with `tls` for HTTPS.
fn agent(tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    let mut config =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(30)));
    if let Some(tls) = tls {
        config = config.tls_config(tls);
    }
    config.build().into()
}

/// rustls with weir's crypto provider, for HTTPS.
fn tls_config() -> ureq::tls::TlsConfigBuilder {
    ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(weir_security::rest::provider())
}

/// The URL of a REST endpoint given as `host:port` (plain HTTP) or as a URL already.
pub fn url(address: &str) -> String {
    if address.contains("://") { address.to_string() } else { format!("http://{address}") }
}

/// An endpoint as a JobManager's ready line announces it (`rest=URL`): `host:port` for plain HTTP,
/// the whole URL for HTTPS.
pub fn announced(url: &str) -> &str {
    url.strip_prefix("http://").unwrap_or(url)
}

/// A client for the cluster `settings` name (the endpoint at `explicit`, `-m`, if given), secured
/// as the settings say.
pub fn client(settings: &Settings, explicit: Option<&str>) -> Result<RestClient> {
    RestClient::secured(&rest_address(settings, explicit)?, &settings.cluster()?)
}

/// `weir list`: the cluster's jobs.
pub fn list(client: &RestClient) -> Result<()> {
    let jobs = client.get("/jobs/overview")?;
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
pub fn savepoint(client: &RestClient, job: &str, target: Option<&str>, stop: Option<bool>) -> Result<()> {
    let id: weir_core::JobId = job.parse()?;
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
            return Err(Error::external(
                format!("the savepoint of job {id}"),
                format!("the JobManager reports that it failed: {cause}; fix what the cause says and trigger it again"),
                false,
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(Error::external(
        format!("the savepoint of job {id}"),
        format!("it did not complete within an hour; see /jobs/{id}/checkpoints on the JobManager"),
        true,
    ))
}

/// `weir cancel`: cancels a job.
pub fn cancel(client: &RestClient, job: &str) -> Result<()> {
    let id: weir_core::JobId = job.parse()?;
    client.patch(&format!("/jobs/{id}?mode=cancel"))?;
    println!("Cancelled job {id}.");
    Ok(())
}
