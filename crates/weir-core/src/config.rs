//! Configuration files: one YAML file with Flink's key names (`config.yaml` in `WEIR_CONF_DIR`, or
//! a file named with `--config`).
//!
//! Keys may be written flat (`parallelism.default: 4`) or nested (`parallelism: {default: 4}`), as
//! Flink's `config.yaml` allows; both become the dotted key. What the keys mean, and which exist, is
//! decided by the typed configuration structs that consume them, which report unknown keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::{Error, Result};

/// The environment variable naming the directory that holds `config.yaml`.
pub const CONF_DIR_ENV: &str = "WEIR_CONF_DIR";

/// The file name looked for in the configuration directory.
pub const CONFIG_FILE_NAME: &str = "config.yaml";

/// Key-value settings from a file, in the order of their keys, with where each came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// Dotted key to value (scalars as text).
    pub values: BTreeMap<String, String>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read the configuration file; pass an existing YAML file:", path, e))?;
        let mut c = Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        c.path = Some(path.to_path_buf());
        Ok(c)
    }

    /// `$WEIR_CONF_DIR/config.yaml` when the variable is set (an error if the file is missing),
    /// nothing otherwise.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var_os(CONF_DIR_ENV) {
            None => Ok(None),
            Some(dir) => {
                let path = Path::new(&dir).join(CONFIG_FILE_NAME);
                if !path.is_file() {
                    return Err(Error::Config(format!(
                        "{CONF_DIR_ENV} is {} but it holds no {CONFIG_FILE_NAME}; create the file or unset {CONF_DIR_ENV}",
                        Path::new(&dir).display()
                    )));
                }
                Self::load(&path).map(Some)
            }
        }
    }

    /// Calls `set` for every key in order; an error is prefixed with the file it came from.
    pub fn apply(&self, mut set: impl FnMut(&str, &str) -> Result<()>) -> Result<()> {
        let origin = self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "configuration".into());
        for (k, v) in &self.values {
            set(k, v).map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("{origin}: {m}")),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Parses YAML text.
    pub fn parse(text: &str) -> Result<Self> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| Error::Config(format!("not valid YAML: {e}")))?;
        let mut values = BTreeMap::new();
        match docs.as_slice() {
            [] => {}
            [doc] => flatten("", doc, &mut values)?,
            _ => return Err(Error::Config("holds several YAML documents; use one".into())),
        }
        Ok(ConfigFile { path: None, values })
    }
}

fn flatten(prefix: &str, node: &Yaml, out: &mut BTreeMap<String, String>) -> Result<()> {
    let scalar = |v: String, out: &mut BTreeMap<String, String>| -> Result<()> {
        if prefix.is_empty() {
            return Err(Error::Config("expected key: value pairs at the top level".into()));
        }
        if out.insert(prefix.to_string(), v).is_some() {
            return Err(Error::Config(format!("key '{prefix}' is set twice")));
        }
        Ok(())
    };
    match node {
        Yaml::Hash(map) => {
            for (k, v) in map {
                let k = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    other => return Err(Error::Config(format!("a key must be text, not {other:?}"))),
                };
                let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten(&key, v, out)?;
            }
            Ok(())
        }
        Yaml::String(s) | Yaml::Real(s) => scalar(s.clone(), out),
        Yaml::Integer(i) => scalar(i.to_string(), out),
        Yaml::Boolean(b) => scalar(b.to_string(), out),
        Yaml::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                match item {
                    Yaml::String(s) | Yaml::Real(s) => parts.push(s.clone()),
                    Yaml::Integer(i) => parts.push(i.to_string()),
                    Yaml::Boolean(b) => parts.push(b.to_string()),
                    _ => return Err(Error::Config(format!("key '{prefix}': list items must be plain values"))),
                }
            }
            scalar(parts.join(";"), out)
        }
        Yaml::Null => Ok(()),
        other => Err(Error::Config(format!("key '{prefix}': unsupported value {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_strategies_decide_like_flinks() -> Result<()> {
        let mut c = ClusterConfig::default();
        assert_eq!(c.restart_strategy().next_delay(0, &[], 0, 0), None, "no restarts by default");
        // Options may come before the type (files apply in key order).
        c.set("restart-strategy.fixed-delay.attempts", "2")?;
        c.set("restart-strategy.type", "fixed-delay")?;
        c.set("restart-strategy.fixed-delay.delay", "250 ms")?;
        let r = &c.restart_strategy();
        assert_eq!(
            (r.next_delay(0, &[], 0, 0), r.next_delay(0, &[0], 1, 250), r.next_delay(0, &[0, 0], 2, 250)),
            (Some(250), Some(250), None)
        );
        c.set("restart-strategy.type", "exponential-delay")?;
        c.set("restart-strategy.exponential-delay.initial-backoff", "100ms")?;
        c.set("restart-strategy.exponential-delay.max-backoff", "1s")?;
        c.set("restart-strategy.exponential-delay.backoff-multiplier", "2")?;
        c.set("restart-strategy.exponential-delay.reset-backoff-threshold", "10s")?;
        let r = &c.restart_strategy();
        assert_eq!(r.next_delay(1_000, &[], 0, 0), Some(100));
        assert_eq!(r.next_delay(1_000, &[900], 1, 100), Some(200));
        assert_eq!(r.next_delay(1_000, &[900], 5, 800), Some(1_000), "capped at max-backoff");
        assert_eq!(r.next_delay(50_000, &[900], 6, 1_000), Some(100), "reset after a quiet spell");
        c.set("restart-strategy.type", "failure-rate")?;
        c.set("restart-strategy.failure-rate.max-failures-per-interval", "2")?;
        c.set("restart-strategy.failure-rate.failure-rate-interval", "1min")?;
        let r = &c.restart_strategy();
        assert_eq!(r.next_delay(10_000, &[5_000], 1, 0), Some(1_000));
        assert_eq!(r.next_delay(10_000, &[5_000, 9_000], 2, 0), None, "a third failure within a minute");
        assert_eq!(r.next_delay(200_000, &[5_000, 9_000], 2, 0), Some(1_000), "old failures do not count");
        assert!(c.set("restart-strategy.fixed-delay.attempts", "three").is_err());
        assert!(c.set("restart-strategy.fixed-delay.delay", "5 parsecs").is_err());
        assert!(c.set("restart-strategy.type", "sometimes").is_err());
        assert!(c.set("restart-strategy.fixed-delay.atempts", "3").is_err(), "unknown restart keys are errors");
        Ok(())
    }

    #[test]
    fn flat_and_nested_keys_become_dotted_keys() -> Result<()> {
        let c = ConfigFile::parse(
            "parallelism.default: 4\npipeline:\n  max-parallelism: 256\n  auto-watermark-interval: 50ms\n",
        )?;
        let want: Vec<(&str, &str)> = vec![
            ("parallelism.default", "4"),
            ("pipeline.auto-watermark-interval", "50ms"),
            ("pipeline.max-parallelism", "256"),
        ];
        assert_eq!(c.values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), want);
        Ok(())
    }

    #[test]
    fn sizes_and_durations_read_flinks_notation() -> Result<()> {
        assert_eq!(bytes("k", "1024")?, 1024);
        assert_eq!(bytes("k", "64kb")?, 64 << 10);
        assert_eq!(bytes("k", "512 mb")?, 512 << 20);
        assert_eq!(bytes("k", "2GiB")?, 2 << 30);
        let e = |v: &str| bytes("blob.artifact.max-size", v).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e("lots").contains("is not a size"), "{}", e("lots"));
        assert!(e("5 parsecs").contains("unknown size unit 'parsecs'"), "{}", e("5 parsecs"));
        assert!(e("99999999999tb").contains("too large"), "{}", e("99999999999tb"));
        assert_eq!(duration_ms("k", "2min")?, 120_000);
        let mut c = ClusterConfig::default();
        c.set("blob.artifact.max-size", "10mb")?;
        c.set("blob.storage.directory", "/var/weir/blobs")?;
        assert_eq!((c.blob_max_bytes, c.blob_dir.as_deref()), (10 << 20, Some("/var/weir/blobs")));
        c.set("resourcemanager.provider", "process")?;
        c.set("resourcemanager.taskmanager-timeout", "5 s")?;
        c.set("taskmanager.job-isolation", "shared")?;
        assert_eq!((c.provider.as_str(), c.taskmanager_timeout_ms, c.job_isolation_shared), ("process", 5000, true));
        let e = c.set("resourcemanager.provider", "yarn").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("'yarn' is not a resource provider; use standalone"), "{e}");
        Ok(())
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = |t: &str| ConfigFile::parse(t).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e("a: [1, 2\n").contains("not valid YAML"));
        assert!(e("a.b: 1\na:\n  b: 2\n").contains("key 'a.b' is set twice"));
        assert!(e("- 1\n- 2\n").contains("key: value pairs"));
        let missing =
            ConfigFile::load(Path::new("/no/such/config.yaml")).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.contains("/no/such/config.yaml"), "{missing}");
    }
}

/// The execution keys (see the runtime's `ExecutionConfig`).
pub const EXECUTION_KEYS: [&str; 18] = [
    "execution.savepoint.path",
    "execution.savepoint.ignore-unclaimed-state",
    "parallelism.default",
    "pipeline.max-parallelism",
    "pipeline.auto-watermark-interval",
    "execution.batch-size",
    "execution.channel-capacity",
    "execution.checkpointing.interval",
    "execution.checkpointing.timeout",
    "execution.checkpointing.min-pause",
    "execution.checkpointing.num-retained",
    "execution.checkpointing.mode",
    "execution.checkpointing.dir",
    "execution.checkpointing.savepoint-dir",
    "state.backend.type",
    "state.backend.incremental",
    "state.backend.disk.dir",
    "state.backend.disk.cache-entries",
];

/// Every key weir knows, for messages about unknown keys.
pub fn all_keys() -> Vec<&'static str> {
    EXECUTION_KEYS.iter().chain(ClusterConfig::KEYS.iter()).copied().collect()
}

/// An error for a key no part of weir knows.
pub fn unknown_key(key: &str) -> Error {
    Error::Config(format!("unknown configuration key '{key}'; known keys: {}", all_keys().join(", ")))
}

/// A boolean setting: `true` or `false`.
pub fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::Config(format!("{key}: '{other}' is not true or false"))),
    }
}

fn path_root(key: &str, value: &str) -> Result<String> {
    let v = value.trim().trim_end_matches('/');
    if !v.starts_with('/') || v.len() < 2 {
        return Err(Error::Config(format!("{key}: '{}' is not an absolute path like /weir", value.trim())));
    }
    Ok(v.to_string())
}

/// A duration in milliseconds from Flink's notation: `500`, `500ms`, `10 s`, `2min`, `1h`.
pub fn duration_ms(key: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 =
        n.parse().map_err(|_| Error::Config(format!("{key}: '{value}' is not a duration (e.g. 500ms, 10s, 2min)")))?;
    let factor = match unit.trim() {
        "" | "ms" | "milli" | "millis" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "m" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        other => return Err(Error::Config(format!("{key}: unknown time unit '{other}' (use ms, s, min, h or d)"))),
    };
    n.checked_mul(factor).ok_or_else(|| Error::Config(format!("{key}: '{value}' is too long")))
}

/// A size in bytes from Flink's notation: `1024`, `64kb`, `512 mb`, `1g`, `2 GiB`.
pub fn bytes(key: &str, value: &str) -> Result<u64> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 =
        n.parse().map_err(|_| Error::Config(format!("{key}: '{value}' is not a size (e.g. 512mb, 1gb, 1048576)")))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kib" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mib" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gib" | "gibibytes" => 1 << 30,
        "t" | "tb" | "tib" | "tebibytes" => 1 << 40,
        other => return Err(Error::Config(format!("{key}: unknown size unit '{other}' (use b, kb, mb, gb or tb)"))),
    };
    n.checked_mul(factor).ok_or_else(|| Error::Config(format!("{key}: '{value}' is too large")))
}

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
    pub restart_options: BTreeMap<String, String>,
    /// `high-availability.*`: standby JobManagers through a coordination service.
    pub ha: HaSettings,
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
                    Some(((last_delay_ms as f64 * multiplier) as u64).clamp(initial_ms, max_ms))
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
            slots: 1,
            taskmanager_host: None,
            taskmanager_bind_host: None,
            data_port: 0,
            spread_out_slots: false,
            job_isolation_shared: false,
            blob_dir: None,
            blob_max_bytes: 1 << 30,
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

    /// The keys [`ClusterConfig::set`] understands.
    pub const KEYS: [&'static str; 42] = [
        "high-availability.type",
        "high-availability.cluster-id",
        "high-availability.storageDir",
        "high-availability.zookeeper.quorum",
        "high-availability.zookeeper.path.root",
        "high-availability.zookeeper.client.session-timeout",
        "high-availability.etcd.endpoints",
        "high-availability.etcd.path.root",
        "high-availability.etcd.lease-ttl",
        "restart-strategy.type",
        "restart-strategy.fixed-delay.attempts",
        "restart-strategy.fixed-delay.delay",
        "restart-strategy.exponential-delay.initial-backoff",
        "restart-strategy.exponential-delay.max-backoff",
        "restart-strategy.exponential-delay.backoff-multiplier",
        "restart-strategy.exponential-delay.reset-backoff-threshold",
        "restart-strategy.failure-rate.max-failures-per-interval",
        "restart-strategy.failure-rate.failure-rate-interval",
        "restart-strategy.failure-rate.delay",
        "jobmanager.rpc.address",
        "jobmanager.rpc.port",
        "rest.address",
        "rest.bind-address",
        "rest.port",
        "taskmanager.numberOfTaskSlots",
        "taskmanager.host",
        "taskmanager.bind-host",
        "taskmanager.data.port",
        "cluster.evenly-spread-out-slots",
        "taskmanager.job-isolation",
        "blob.storage.directory",
        "blob.artifact.max-size",
        "resourcemanager.provider",
        "resourcemanager.taskmanager-timeout",
        "execution.target",
        "job-result-store.storage-path",
        "docker.host",
        "docker.image",
        "docker.network",
        "heartbeat.interval",
        "heartbeat.timeout",
        "slot.request.timeout",
    ];

    /// Sets one key; a key of another part of weir is ignored, an unknown key is an error.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        fn num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
            let v = value.trim();
            let v = v.strip_suffix("ms").unwrap_or(v).trim();
            v.parse().map_err(|_| Error::Config(format!("{key}: '{value}' is not a valid number")))
        }
        match key {
            "jobmanager.rpc.address" => self.rpc_address = value.trim().to_string(),
            "jobmanager.rpc.port" => self.rpc_port = num(key, value)?,
            "rest.address" => self.rest_address = value.trim().to_string(),
            "rest.bind-address" => self.rest_bind_address = value.trim().to_string(),
            "rest.port" => self.rest_port = num(key, value)?,
            "taskmanager.numberOfTaskSlots" => self.slots = num(key, value)?,
            "taskmanager.host" => self.taskmanager_host = Some(value.trim().to_string()),
            "taskmanager.bind-host" => self.taskmanager_bind_host = Some(value.trim().to_string()),
            "taskmanager.data.port" => self.data_port = num(key, value)?,
            "cluster.evenly-spread-out-slots" => self.spread_out_slots = boolean(key, value)?,
            "taskmanager.job-isolation" => {
                self.job_isolation_shared = match value.trim() {
                    "process" => false,
                    "shared" => true,
                    other => {
                        return Err(Error::Config(format!(
                            "{key}: '{other}' is not an isolation; use process (a worker process per job) or shared"
                        )));
                    }
                }
            }
            "blob.storage.directory" => self.blob_dir = Some(value.trim().to_string()),
            "resourcemanager.provider" => {
                let v = value.trim();
                if !["standalone", "process", "docker"].contains(&v) {
                    return Err(Error::Config(format!(
                        "{key}: '{v}' is not a resource provider; use standalone (TaskManagers you start), process \
                         (the JobManager starts them as processes) or docker (as containers)"
                    )));
                }
                self.provider = v.to_string();
            }
            "execution.target" => {
                let v = value.trim();
                if !Self::TARGETS.contains(&v) {
                    return Err(Error::Config(format!(
                        "{key}: unknown target '{v}'; valid targets: {}",
                        Self::TARGETS.join(", ")
                    )));
                }
                self.target = v.to_string();
            }
            "job-result-store.storage-path" => self.job_result_dir = Some(value.trim().to_string()),
            "high-availability.type" => {
                let v = value.trim().to_ascii_lowercase();
                self.ha.kind = match v.as_str() {
                    "none" | "etcd" | "zookeeper" => v,
                    _ => {
                        return Err(Error::Config(format!(
                            "{key}: '{}' is not a high-availability service; use none, etcd or zookeeper",
                            value.trim()
                        )));
                    }
                }
            }
            "high-availability.cluster-id" => {
                self.ha.cluster_id = value.trim().trim_matches('/').to_string();
            }
            "high-availability.storageDir" => self.ha.storage_dir = Some(value.trim().to_string()),
            "high-availability.zookeeper.quorum" => self.ha.zookeeper_quorum = Some(value.trim().to_string()),
            "high-availability.zookeeper.path.root" => self.ha.zookeeper_root = path_root(key, value)?,
            "high-availability.zookeeper.client.session-timeout" => {
                self.ha.zookeeper_session_timeout_ms = duration_ms(key, value)?;
                if self.ha.zookeeper_session_timeout_ms < 1_000 {
                    return Err(Error::Config(format!("{key} must be at least 1 s")));
                }
            }
            "high-availability.etcd.endpoints" => self.ha.etcd_endpoints = Some(value.trim().to_string()),
            "high-availability.etcd.path.root" => self.ha.etcd_root = path_root(key, value)?,
            "high-availability.etcd.lease-ttl" => {
                self.ha.etcd_lease_ttl_ms = duration_ms(key, value)?;
                if self.ha.etcd_lease_ttl_ms < 2_000 {
                    return Err(Error::Config(format!("{key} must be at least 2 s (etcd's shortest lease)")));
                }
            }
            "docker.host" => self.docker_host = Some(value.trim().to_string()),
            "docker.image" => self.docker_image = Some(value.trim().to_string()),
            "docker.network" => self.docker_network = Some(value.trim().to_string()),
            "resourcemanager.taskmanager-timeout" => self.taskmanager_timeout_ms = duration_ms(key, value)?,
            "blob.artifact.max-size" => self.blob_max_bytes = bytes(key, value)?,
            "heartbeat.interval" => self.heartbeat_interval_ms = duration_ms(key, value)?,
            "heartbeat.timeout" => self.heartbeat_timeout_ms = duration_ms(key, value)?,
            "slot.request.timeout" => self.slot_request_timeout_ms = duration_ms(key, value)?,
            "restart-strategy.type" => {
                let t = value.trim();
                if ![
                    "none",
                    "off",
                    "disable",
                    "fixed-delay",
                    "fixeddelay",
                    "exponential-delay",
                    "exponentialdelay",
                    "failure-rate",
                    "failurerate",
                ]
                .contains(&t)
                {
                    return Err(Error::Config(format!(
                        "restart-strategy.type '{t}': use none, fixed-delay, exponential-delay or failure-rate"
                    )));
                }
                self.restart_type = t.to_string();
            }
            k if k.starts_with("restart-strategy.") && Self::KEYS.contains(&k) => {
                if k.ends_with(".attempts") || k.ends_with(".max-failures-per-interval") {
                    value
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| Error::Config(format!("{k}: '{value}' is not a whole number")))?;
                } else if k.ends_with(".backoff-multiplier") {
                    let m: f64 =
                        value.trim().parse().map_err(|_| Error::Config(format!("{k}: '{value}' is not a number")))?;
                    if !(m.is_finite() && m >= 1.0) {
                        return Err(Error::Config(format!("{k} must be a number of at least 1")));
                    }
                } else {
                    duration_ms(k, value)?;
                }
                self.restart_options.insert(k.to_string(), value.trim().to_string());
            }
            k if EXECUTION_KEYS.contains(&k) => {}
            k => return Err(unknown_key(k)),
        }
        if self.slots == 0 || self.slots > 1 << 16 {
            return Err(Error::Config("taskmanager.numberOfTaskSlots must be between 1 and 65536".into()));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_timeout_ms <= self.heartbeat_interval_ms {
            return Err(Error::Config("heartbeat.interval must be positive and smaller than heartbeat.timeout".into()));
        }
        Ok(())
    }

    /// The restart strategy the settings describe (options of other strategies are ignored).
    pub fn restart_strategy(&self) -> RestartStrategy {
        let opt = |k: &str| self.restart_options.get(k).map(String::as_str);
        let dur = |k: &str, default: u64| opt(k).and_then(|v| duration_ms(k, v).ok()).unwrap_or(default);
        let int = |k: &str, default: u32| opt(k).and_then(|v| v.parse().ok()).unwrap_or(default);
        match self.restart_type.as_str() {
            "fixed-delay" | "fixeddelay" => RestartStrategy::FixedDelay {
                attempts: int("restart-strategy.fixed-delay.attempts", 1),
                delay_ms: dur("restart-strategy.fixed-delay.delay", 1_000),
            },
            "exponential-delay" | "exponentialdelay" => RestartStrategy::ExponentialDelay {
                initial_ms: dur("restart-strategy.exponential-delay.initial-backoff", 1_000),
                max_ms: dur("restart-strategy.exponential-delay.max-backoff", 60_000),
                multiplier: opt("restart-strategy.exponential-delay.backoff-multiplier")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1.5),
                reset_ms: dur("restart-strategy.exponential-delay.reset-backoff-threshold", 3_600_000),
            },
            "failure-rate" | "failurerate" => RestartStrategy::FailureRate {
                max_failures: int("restart-strategy.failure-rate.max-failures-per-interval", 1),
                interval_ms: dur("restart-strategy.failure-rate.failure-rate-interval", 60_000),
                delay_ms: dur("restart-strategy.failure-rate.delay", 1_000),
            },
            _ => RestartStrategy::None,
        }
    }

    /// Applies every key of a file.
    pub fn apply_file(&mut self, file: &ConfigFile) -> Result<()> {
        file.apply(|k, v| self.set(k, v))
    }
}
