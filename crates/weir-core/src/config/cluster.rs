//! The cluster processes' configuration: [`ClusterConfig`], its high-availability part and the
//! restart strategies.

use std::collections::BTreeMap;

use super::ConfigFile;
use super::registry::{self, OptionDef, Scope, Value};
use crate::{Error, Result};

/// Settings of the cluster processes, with Flink's key names and defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterConfig {
    /// `jobmanager.rpc.address`: where TaskManagers reach the JobManager.
    pub rpc_address: String,
    /// `jobmanager.rpc.port`: the JobManager's control port (0: any free port).
    pub rpc_port: u16,
    /// `rest.address`: where clients reach the REST endpoint.
    pub rest_address: String,
    /// `rest.bind-address`: the address the REST endpoint listens on (loopback by default).
    pub rest_bind_address: String,
    /// `rest.port`: the REST port (0: any free port).
    pub rest_port: u16,
    /// `web.submit.enable`: whether programs may be uploaded, run and deleted through REST.
    pub web_submit: bool,
    /// `web.cancel.enable`: whether jobs may be cancelled through REST.
    pub web_cancel: bool,
    /// `weir.rest.allowed-hosts`: host names REST requests may name besides the configured
    /// addresses, localhost and IP addresses.
    pub rest_allowed_hosts: Vec<String>,
    /// `jobstore.max-capacity`: how many ended jobs the JobManager keeps.
    pub jobstore_capacity: u64,
    /// `jobstore.expiration-time`: how long the JobManager keeps an ended job (ms).
    pub jobstore_expiration_ms: u64,
    /// `web.exception-history-size`: how many failures of a job are kept.
    pub exception_history: usize,
    /// `slotmanager.number-of-slots.max`: the most slots the TaskManagers may offer together.
    pub max_slots: u64,
    /// `weir.cached-files.allowed-dirs`: directories whose files jobs submitted through REST may
    /// name as cached files (none by default).
    pub cached_files_allowed: Vec<String>,
    /// `taskmanager.numberOfTaskSlots`: slots a TaskManager offers.
    pub slots: u32,
    /// `taskmanager.host`: the address other TaskManagers send records to (default: the address
    /// this TaskManager reaches the JobManager from).
    pub taskmanager_host: Option<String>,
    /// `taskmanager.bind-host`: the address the data port listens on (default: as
    /// `taskmanager.host`).
    pub taskmanager_bind_host: Option<String>,
    /// `taskmanager.data.port`: the port records arrive on (0: any free port).
    pub data_port: u16,
    /// `cluster.evenly-spread-out-slots`: spread a job's slots over the TaskManagers instead of
    /// keeping them on as few as possible.
    pub spread_out_slots: bool,
    /// `taskmanager.job-isolation`: `process` (default) runs every job's part in a worker process
    /// of its own, so a job that crashes its process fails alone; `shared` runs the jobs of the
    /// TaskManager's own program in the TaskManager's process, as Flink runs every job in one JVM
    /// (other programs' jobs always get worker processes).
    pub job_isolation_shared: bool,
    /// `blob.storage.directory`: where the JobManager keeps uploaded artifacts and a TaskManager
    /// caches the artifacts it fetched (default: a fresh directory under the system's temporary
    /// directory for the JobManager, removed when it stops; `~/.cache/weir/artifacts` for
    /// TaskManagers, shared by those of one user, since entries are named by their digest).
    pub blob_dir: Option<String>,
    /// `blob.artifact.max-size`: the largest artifact the blob store accepts, in bytes.
    pub blob_max_bytes: u64,
    /// `weir.blob.storage.max-total-size`: the most the JobManager's blob store holds, in bytes.
    pub blob_store_quota: u64,
    /// `weir.blob.cache.max-total-size`: the most a TaskManager's artifact cache keeps, in bytes.
    pub blob_cache_quota: u64,
    /// `blob.fetch.num-concurrent`: artifact fetches the JobManager serves at once.
    pub blob_fetches: u32,
    /// `weir.rest.upload.max-concurrent`: artifact uploads REST takes at once.
    pub uploads: u32,
    /// `resourcemanager.provider`: who starts TaskManagers: `standalone` (you do; the default),
    /// `process` (the JobManager starts them as child processes when jobs need slots) or `docker`
    /// (as containers, through the Docker Engine API).
    pub provider: String,
    /// `execution.target`: where a program's `execute` sends its jobs: `local` (the embedded
    /// cluster; the default), `remote` (a running session cluster at `rest.address:rest.port`) or
    /// `per-job` (a cluster started for each job, gone when it ends).
    pub target: String,
    /// `job-result-store.storage-path`: where application clusters keep the outcome of their
    /// applications and jobs after they are gone (default `~/.local/share/weir/job-results`).
    pub job_result_dir: Option<String>,
    /// `docker.host`: the Docker Engine API's address (default `$DOCKER_HOST`, else
    /// `unix:///var/run/docker.sock`).
    pub docker_host: Option<String>,
    /// `docker.image`: the image TaskManager containers run (default: the JobManager's own).
    pub docker_image: Option<String>,
    /// `docker.network`: the private network of a cluster's containers.
    pub docker_network: Option<String>,
    /// `resourcemanager.taskmanager-timeout` in ms: a TaskManager the provider started is stopped
    /// after this long without jobs.
    pub taskmanager_timeout_ms: u64,
    /// `heartbeat.interval` in ms.
    pub heartbeat_interval_ms: u64,
    /// `heartbeat.timeout` in ms: a TaskManager silent this long is lost.
    pub heartbeat_timeout_ms: u64,
    /// `slot.request.timeout` in ms: how long a job waits for slots before it fails.
    pub slot_request_timeout_ms: u64,
    /// `restart-strategy.type`: none, fixed-delay, exponential-delay or failure-rate.
    pub restart_type: String,
    /// The other `restart-strategy.*` keys, checked on entry and read for the chosen type only
    /// (as Flink does), so their order does not matter.
    pub restart_options: BTreeMap<String, Value>,
    /// `high-availability.*`: standby JobManagers through a coordination service.
    pub ha: HaSettings,
    /// `security.*`: TLS and the cluster secret.
    pub security: SecuritySettings,
    /// `metrics.*`: the reporters.
    pub metrics: super::MetricsSettings,
    /// Every key set explicitly (from a file or `-D`), as written, in Flink's names: what
    /// `/jobmanager/config` shows (secrets hidden there).
    #[serde(default)]
    pub explicit: BTreeMap<String, String>,
}

/// The `security.*` settings: Flink's SSL keys, with PEM files where Flink takes Java keystores.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecuritySettings {
    /// `security.ssl.internal.enabled`: mutual TLS on internal connections.
    pub internal_tls: bool,
    /// `security.ssl.internal.keystore`: this process's certificate chain and key (PEM).
    pub internal_keystore: Option<String>,
    /// `security.ssl.internal.truststore`: the certificates internal peers are checked against (PEM).
    pub internal_truststore: Option<String>,
    /// `security.ssl.rest.enabled`: HTTPS on the REST endpoint.
    pub rest_tls: bool,
    /// `security.ssl.rest.keystore`: the REST endpoint's (and clients') certificate chain and key.
    pub rest_keystore: Option<String>,
    /// `security.ssl.rest.truststore`: the certificates REST peers are checked against.
    pub rest_truststore: Option<String>,
    /// `security.ssl.rest.authentication-enabled`: REST clients must present a certificate.
    pub rest_authentication: bool,
    /// `security.ssl.verify-hostname` turned off (REST clients skip the host name check).
    pub skip_hostname_check: bool,
    /// `weir.security.cluster-secret-file`: the file holding the cluster secret.
    pub secret_file: Option<String>,
    /// Flink's keystore password keys that were given (names only, never the values): PEM files
    /// have no password, so they are unused, which the security setup says in its log.
    pub unused_passwords: Vec<String>,
}

/// The `high-availability.*` settings, with Flink's key names where Flink has the key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HaSettings {
    /// `high-availability.type`: `none` (the default), `etcd` or `zookeeper`.
    pub kind: String,
    /// `high-availability.cluster-id`: JobManagers with the same id are one cluster (one leads,
    /// the others stand by).
    pub cluster_id: String,
    /// `high-availability.storageDir`: where job graphs and artifacts go (a directory or
    /// `s3://BUCKET/PREFIX`); the coordination service keeps only pointers to them.
    pub storage_dir: Option<String>,
    /// `high-availability.zookeeper.quorum`: `host:port` of the ZooKeeper servers, comma-separated.
    pub zookeeper_quorum: Option<String>,
    /// `high-availability.zookeeper.path.root`: the znode every weir cluster lives under.
    pub zookeeper_root: String,
    /// `high-availability.zookeeper.client.session-timeout` in ms: a JobManager silent this long
    /// loses its leadership (10 s; Flink's default is 60 s).
    pub zookeeper_session_timeout_ms: u64,
    /// `high-availability.etcd.endpoints`: `host:port` of the etcd members' client URLs,
    /// comma-separated.
    pub etcd_endpoints: Option<String>,
    /// `high-availability.etcd.path.root`: the key prefix every weir cluster lives under.
    pub etcd_root: String,
    /// `high-availability.etcd.lease-ttl` in ms: a leader that cannot renew its lease this long
    /// is replaced (10 s).
    pub etcd_lease_ttl_ms: u64,
}

impl Default for HaSettings {
    fn default() -> Self {
        HaSettings {
            kind: "none".into(),
            cluster_id: "default".into(),
            storage_dir: None,
            zookeeper_quorum: None,
            zookeeper_root: "/weir".into(),
            zookeeper_session_timeout_ms: 10_000,
            etcd_endpoints: None,
            etcd_root: "/weir".into(),
            etcd_lease_ttl_ms: 10_000,
        }
    }
}

impl HaSettings {
    /// Whether high availability is on.
    pub fn enabled(&self) -> bool {
        self.kind != "none"
    }

    /// Checks that an enabled setup names everything it needs; says what is missing.
    pub fn check(&self) -> Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.storage_dir.is_none() {
            return Err(Error::Config(format!(
                "high-availability.type is {} but high-availability.storageDir is not set: give a directory (or \
                 s3://BUCKET/PREFIX) that every JobManager of the cluster reaches",
                self.kind
            )));
        }
        let (key, value) = match self.kind.as_str() {
            "etcd" => ("high-availability.etcd.endpoints", &self.etcd_endpoints),
            _ => ("high-availability.zookeeper.quorum", &self.zookeeper_quorum),
        };
        if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
            return Err(Error::Config(format!(
                "high-availability.type is {} but {key} is not set: give the servers as host:port, comma-separated",
                self.kind
            )));
        }
        if self.cluster_id.trim().is_empty() || self.cluster_id.contains(['\n', '\0']) {
            return Err(Error::Config("high-availability.cluster-id must be a non-empty single-line name".into()));
        }
        Ok(())
    }
}

/// Flink's restart strategies, with Flink's keys and defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RestartStrategy {
    /// `none`: a failed job stays failed.
    None,
    /// `fixed-delay`: up to `attempts` restarts, `delay_ms` apart.
    FixedDelay {
        /// `restart-strategy.fixed-delay.attempts` (default 1).
        attempts: u32,
        /// `restart-strategy.fixed-delay.delay` (default 1 s).
        delay_ms: u64,
    },
    /// `exponential-delay`: restarts forever, the delay growing by `multiplier` up to `max_ms`,
    /// back to `initial_ms` after `reset_ms` without failures.
    ExponentialDelay {
        /// `restart-strategy.exponential-delay.initial-backoff` (default 1 s).
        initial_ms: u64,
        /// `restart-strategy.exponential-delay.max-backoff` (default 1 min).
        max_ms: u64,
        /// `restart-strategy.exponential-delay.backoff-multiplier` (default 1.5).
        multiplier: f64,
        /// `restart-strategy.exponential-delay.reset-backoff-threshold` (default 1 h).
        reset_ms: u64,
    },
    /// `failure-rate`: restarts `delay_ms` apart while at most `max_failures` happen per
    /// `interval_ms`.
    FailureRate {
        /// `restart-strategy.failure-rate.max-failures-per-interval` (default 1).
        max_failures: u32,
        /// `restart-strategy.failure-rate.failure-rate-interval` (default 1 min).
        interval_ms: u64,
        /// `restart-strategy.failure-rate.delay` (default 1 s).
        delay_ms: u64,
    },
}

impl RestartStrategy {
    /// Whether to restart after a failure at `now_ms`, and after what delay: `failures` holds the
    /// times of earlier failures (oldest first), `restarts` how many restarts happened,
    /// `last_delay_ms` the previous delay (exponential).
    pub fn next_delay(&self, now_ms: i64, failures: &[i64], restarts: u32, last_delay_ms: u64) -> Option<u64> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay_ms } => (restarts < attempts).then_some(delay_ms),
            RestartStrategy::ExponentialDelay { initial_ms, max_ms, multiplier, reset_ms } => {
                let quiet = failures.last().is_none_or(|&t| now_ms.saturating_sub(t) >= reset_ms as i64);
                if quiet || last_delay_ms == 0 {
                    Some(initial_ms.min(max_ms))
                } else {
                    // max before min: never panics, even on settings validate() would refuse.
                    Some(((last_delay_ms as f64 * multiplier) as u64).max(initial_ms).min(max_ms))
                }
            }
            RestartStrategy::FailureRate { max_failures, interval_ms, delay_ms } => {
                let recent = failures.iter().filter(|&&t| now_ms.saturating_sub(t) < interval_ms as i64).count() + 1;
                (recent <= max_failures as usize).then_some(delay_ms)
            }
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            rpc_address: "127.0.0.1".into(),
            rpc_port: 6123,
            rest_address: "127.0.0.1".into(),
            rest_bind_address: "127.0.0.1".into(),
            rest_port: 8081,
            web_submit: true,
            web_cancel: true,
            rest_allowed_hosts: Vec::new(),
            cached_files_allowed: Vec::new(),
            jobstore_capacity: i32::MAX as u64,
            jobstore_expiration_ms: 3_600_000,
            exception_history: 16,
            max_slots: i32::MAX as u64,
            slots: 1,
            taskmanager_host: None,
            taskmanager_bind_host: None,
            data_port: 0,
            spread_out_slots: false,
            job_isolation_shared: false,
            blob_dir: None,
            blob_max_bytes: 1 << 30,
            blob_store_quota: 20 << 30,
            blob_cache_quota: 10 << 30,
            blob_fetches: 50,
            uploads: 4,
            provider: "standalone".into(),
            target: "local".into(),
            job_result_dir: None,
            docker_host: None,
            docker_image: None,
            docker_network: None,
            taskmanager_timeout_ms: 30_000,
            heartbeat_interval_ms: 10_000,
            heartbeat_timeout_ms: 50_000,
            slot_request_timeout_ms: 300_000,
            restart_type: "none".into(),
            restart_options: BTreeMap::new(),
            ha: HaSettings::default(),
            security: SecuritySettings::default(),
            metrics: super::MetricsSettings::default(),
            explicit: BTreeMap::new(),
        }
    }
}

impl ClusterConfig {
    /// The values of `execution.target`.
    pub const TARGETS: [&'static str; 3] = ["local", "remote", "per-job"];

    /// Where application results are kept (`job-result-store.storage-path`).
    pub fn job_result_path(&self) -> std::path::PathBuf {
        match &self.job_result_dir {
            Some(d) => d.into(),
            None => {
                let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
                home.join(".local/share/weir/job-results")
            }
        }
    }

    /// Sets one key from its text: a job key is accepted and left to the jobs, an unknown key or
    /// a bad value is an error that says what to write. Settings that depend on each other are
    /// checked by [`ClusterConfig::validate`] once all are set.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let (def, parsed) = registry::parse(key, value)?;
        if def.key.starts_with("metrics.") {
            self.metrics.set(def.key, registry::named(def.key, key), &parsed)?;
        } else {
            self.apply(def, &parsed)?;
        }
        // Job keys are the jobs' defaults, shown from there.
        if def.scope == Scope::Cluster {
            self.explicit.insert(key.to_string(), value.to_string());
        }
        Ok(())
    }

    /// Sets one key from its typed value (a job key is left to the jobs).
    pub fn apply(&mut self, def: &OptionDef, value: &Value) -> Result<()> {
        if def.scope != Scope::Cluster {
            return Ok(());
        }
        let key = def.key;
        let text = || value.text(key).map(str::to_string);
        match key {
            "jobmanager.rpc.address" => self.rpc_address = text()?,
            "jobmanager.rpc.port" => self.rpc_port = value.int(key)?,
            "rest.address" => self.rest_address = text()?,
            "rest.bind-address" => self.rest_bind_address = text()?,
            "rest.port" => self.rest_port = value.int(key)?,
            "web.submit.enable" => self.web_submit = value.flag(key)?,
            "web.cancel.enable" => self.web_cancel = value.flag(key)?,
            "jobstore.max-capacity" => self.jobstore_capacity = value.int(key)?,
            "jobstore.expiration-time" => self.jobstore_expiration_ms = value.number(key)?,
            "web.exception-history-size" => self.exception_history = value.int(key)?,
            "slotmanager.number-of-slots.max" => self.max_slots = value.int(key)?,
            "weir.cached-files.allowed-dirs" => {
                self.cached_files_allowed =
                    text()?.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect()
            }
            "security.ssl.internal.enabled" => self.security.internal_tls = value.flag(key)?,
            "security.ssl.internal.keystore" => self.security.internal_keystore = Some(text()?),
            "security.ssl.internal.truststore" => self.security.internal_truststore = Some(text()?),
            "security.ssl.rest.enabled" => self.security.rest_tls = value.flag(key)?,
            "security.ssl.rest.keystore" => self.security.rest_keystore = Some(text()?),
            "security.ssl.rest.truststore" => self.security.rest_truststore = Some(text()?),
            "security.ssl.rest.authentication-enabled" => self.security.rest_authentication = value.flag(key)?,
            "security.ssl.verify-hostname" => self.security.skip_hostname_check = !value.flag(key)?,
            "weir.security.cluster-secret-file" => self.security.secret_file = Some(text()?),
            // Flink's keystore passwords: PEM files have none (declared so a Flink file loads).
            k if k.starts_with("security.ssl.") && k.ends_with("password") => {
                if !self.security.unused_passwords.iter().any(|p| p == k) {
                    self.security.unused_passwords.push(k.to_string());
                }
            }
            "weir.rest.allowed-hosts" => {
                self.rest_allowed_hosts =
                    text()?.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect()
            }
            "taskmanager.numberOfTaskSlots" => self.slots = value.int(key)?,
            "taskmanager.host" => self.taskmanager_host = Some(text()?),
            "taskmanager.bind-host" => self.taskmanager_bind_host = Some(text()?),
            "taskmanager.data.port" => self.data_port = value.int(key)?,
            "cluster.evenly-spread-out-slots" => self.spread_out_slots = value.flag(key)?,
            "taskmanager.job-isolation" => self.job_isolation_shared = value.text(key)? == "shared",
            "blob.storage.directory" => self.blob_dir = Some(text()?),
            "blob.artifact.max-size" => self.blob_max_bytes = value.number(key)?,
            "weir.blob.storage.max-total-size" => self.blob_store_quota = value.number(key)?,
            "weir.blob.cache.max-total-size" => self.blob_cache_quota = value.number(key)?,
            "blob.fetch.num-concurrent" => self.blob_fetches = value.int(key)?,
            "weir.rest.upload.max-concurrent" => self.uploads = value.int(key)?,
            "resourcemanager.provider" => self.provider = text()?,
            "resourcemanager.taskmanager-timeout" => self.taskmanager_timeout_ms = value.number(key)?,
            "execution.target" => self.target = text()?,
            "job-result-store.storage-path" => self.job_result_dir = Some(text()?),
            "docker.host" => self.docker_host = Some(text()?),
            "docker.image" => self.docker_image = Some(text()?),
            "docker.network" => self.docker_network = Some(text()?),
            "heartbeat.interval" => self.heartbeat_interval_ms = value.number(key)?,
            "heartbeat.timeout" => self.heartbeat_timeout_ms = value.number(key)?,
            "slot.request.timeout" => self.slot_request_timeout_ms = value.number(key)?,
            "restart-strategy.type" => self.restart_type = text()?,
            k if k.starts_with("restart-strategy.") => {
                self.restart_options.insert(k.to_string(), value.clone());
            }
            "high-availability.type" => self.ha.kind = text()?,
            "high-availability.cluster-id" => {
                let id = value.text(key)?.trim_matches('/');
                if id.is_empty() {
                    return Err(Error::Config(format!("{key} must be a name, not only '/'")));
                }
                self.ha.cluster_id = id.to_string();
            }
            "high-availability.storageDir" => self.ha.storage_dir = Some(text()?),
            "high-availability.zookeeper.quorum" => self.ha.zookeeper_quorum = Some(text()?),
            "high-availability.zookeeper.path.root" => self.ha.zookeeper_root = text()?,
            "high-availability.zookeeper.client.session-timeout" => {
                self.ha.zookeeper_session_timeout_ms = value.number(key)?
            }
            "high-availability.etcd.endpoints" => self.ha.etcd_endpoints = Some(text()?),
            "high-availability.etcd.path.root" => self.ha.etcd_root = text()?,
            "high-availability.etcd.lease-ttl" => self.ha.etcd_lease_ttl_ms = value.number(key)?,
            "metrics.reporters" => self.metrics.set(key, None, value)?,
            other => {
                return Err(Error::internal(format!(
                    "the registry declares the cluster key {other} but the cluster configuration does not read it"
                )));
            }
        }
        Ok(())
    }

    /// Checks the settings that depend on each other; called once every key is set, before a
    /// process acts on them.
    pub fn validate(&self) -> Result<()> {
        self.metrics.active()?;
        let s = &self.security;
        if s.internal_tls && (s.internal_keystore.is_none() || s.internal_truststore.is_none()) {
            return Err(Error::Config(
                "security.ssl.internal.enabled needs security.ssl.internal.keystore (this process's certificate \
                 and key, PEM) and security.ssl.internal.truststore (the certificates peers are checked against, \
                 PEM); set both, or turn internal SSL off"
                    .into(),
            ));
        }
        if s.rest_authentication && !s.rest_tls {
            return Err(Error::Config(
                "security.ssl.rest.authentication-enabled needs security.ssl.rest.enabled: client certificates \
                 are checked in the TLS handshake"
                    .into(),
            ));
        }
        if self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(Error::Config(format!(
                "heartbeat.timeout ({} ms) must be longer than heartbeat.interval ({} ms)",
                self.heartbeat_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        if let RestartStrategy::ExponentialDelay { initial_ms, max_ms, .. } = self.restart_strategy()
            && initial_ms > max_ms
        {
            return Err(Error::Config(format!(
                "restart-strategy.exponential-delay.initial-backoff ({initial_ms} ms) is longer than \
                 restart-strategy.exponential-delay.max-backoff ({max_ms} ms); make max-backoff at least \
                 initial-backoff"
            )));
        }
        Ok(())
    }

    /// The restart strategy the settings describe (options of other strategies are ignored, as
    /// Flink does).
    pub fn restart_strategy(&self) -> RestartStrategy {
        let opt = |k: &str| self.restart_options.get(k);
        let ms = |k: &str, default: u64| opt(k).and_then(|v| v.number(k).ok()).unwrap_or(default);
        let int = |k: &str, default: u32| opt(k).and_then(|v| v.int(k).ok()).unwrap_or(default);
        match self.restart_type.as_str() {
            "fixed-delay" => RestartStrategy::FixedDelay {
                attempts: int("restart-strategy.fixed-delay.attempts", 1),
                delay_ms: ms("restart-strategy.fixed-delay.delay", 1_000),
            },
            "exponential-delay" => RestartStrategy::ExponentialDelay {
                initial_ms: ms("restart-strategy.exponential-delay.initial-backoff", 1_000),
                max_ms: ms("restart-strategy.exponential-delay.max-backoff", 60_000),
                multiplier: opt("restart-strategy.exponential-delay.backoff-multiplier")
                    .and_then(|v| v.float("restart-strategy.exponential-delay.backoff-multiplier").ok())
                    .unwrap_or(1.5),
                reset_ms: ms("restart-strategy.exponential-delay.reset-backoff-threshold", 3_600_000),
            },
            "failure-rate" => RestartStrategy::FailureRate {
                max_failures: int("restart-strategy.failure-rate.max-failures-per-interval", 1),
                interval_ms: ms("restart-strategy.failure-rate.failure-rate-interval", 60_000),
                delay_ms: ms("restart-strategy.failure-rate.delay", 1_000),
            },
            _ => RestartStrategy::None,
        }
    }

    /// Applies every key of a file, then checks the result.
    pub fn apply_file(&mut self, file: &ConfigFile) -> Result<()> {
        file.apply(|k, v| self.set(k, v))?;
        self.validate()
    }
}
