//! Configuration files: one YAML file with Flink's key names (`config.yaml` in `WEIR_CONF_DIR`, or
//! a file named with `--config`).
//!
//! Keys may be written flat (`parallelism.default: 4`) or nested (`parallelism: {default: 4}`), as
//! Flink's `config.yaml` allows; both become the dotted key. Which keys exist, their types,
//! defaults and scopes are declared once, in the option [`registry`] (`options.rs` holds the
//! table); the typed configurations take their values from it: [`ClusterConfig`] for the cluster's
//! processes, [`ExecutionConfig`] for a job, and [`JobConfig`] for what a program set, which
//! travels with its job.

mod cluster;
mod def;
mod execution;
mod metrics;
mod options;
pub mod registry;

pub use cluster::{ClusterConfig, HaSettings, RestartStrategy, SecuritySettings};
pub use def::{OptionDef, Scope, Value};
pub use execution::{ExecutionConfig, JobConfig};
pub use metrics::{MetricsSettings, PROMETHEUS_FACTORIES, ReporterSettings, ports};

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

/// A boolean setting: `true` or `false`.
pub fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::Config(format!("{key}: '{other}' is not true or false"))),
    }
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
        assert!(e.contains("'yarn' is not one of standalone, process, docker (Who starts TaskManagers"), "{e}");
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

    #[test]
    fn every_key_is_accepted_where_it_is_scoped_and_reaches_its_reader() -> Result<()> {
        for def in registry::options() {
            let key = def.key;
            let value = def.parse(def.example)?;
            // Every process takes every key: a cluster process reads its own and keeps job keys as
            // defaults for its jobs; a job's configuration leaves cluster keys to the cluster.
            let mut cluster = ClusterConfig::default();
            cluster.set(key, def.example).map_err(|e| Error::Config(format!("cluster config refuses {key}: {e}")))?;
            let mut execution = ExecutionConfig::default();
            execution.set(key, def.example).map_err(|e| Error::Config(format!("job config refuses {key}: {e}")))?;
            let mut job = JobConfig::default();
            let is_job = job.set(key, def.example)?;
            match def.scope {
                Scope::Cluster => {
                    assert_ne!(cluster, ClusterConfig::default(), "{key} does not reach the cluster configuration");
                    assert_eq!(execution, ExecutionConfig::default(), "{key} changed a job's configuration");
                    assert!(!is_job && job.is_empty(), "{key} travelled with a job");
                }
                Scope::Job => {
                    assert_ne!(execution, ExecutionConfig::default(), "{key} does not reach the job configuration");
                    assert_eq!(cluster, ClusterConfig::default(), "{key} changed the cluster configuration");
                    // What travels to the JobManager, TaskManagers and workers gives the same
                    // setting where it lands.
                    assert_eq!(job.get(key), Some(&value), "{key} did not travel with its job");
                    let frame = crate::protocol::encode(&job)?;
                    let landed: JobConfig = crate::protocol::decode(&frame[4..])?;
                    assert_eq!(landed.resolve(&ExecutionConfig::default())?, execution, "{key} changed on the way");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn restart_settings_that_contradict_each_other_are_refused_at_start() -> Result<()> {
        let mut c = ClusterConfig::default();
        c.set("restart-strategy.type", "exponential-delay")?;
        c.set("restart-strategy.exponential-delay.initial-backoff", "2min")?;
        c.set("restart-strategy.exponential-delay.max-backoff", "1min")?;
        let e = c.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("initial-backoff (120000 ms) is longer than"), "{e}");
        // Even unvalidated, the strategy never panics: the delay stays within max-backoff.
        assert_eq!(c.restart_strategy().next_delay(1_000, &[900], 1, 120_000), Some(60_000));
        let mut c = ClusterConfig::default();
        c.set("heartbeat.timeout", "1s")?;
        assert!(c.validate().is_err(), "a timeout under the interval");
        // The order keys come in does not matter: checks run once all are set.
        let mut c = ClusterConfig::default();
        c.set("heartbeat.interval", "60s")?;
        c.set("heartbeat.timeout", "120s")?;
        c.validate()?;
        Ok(())
    }

    #[test]
    fn the_configuration_reference_is_current() -> Result<()> {
        // docs/config.md is generated from the registry; WEIR_UPDATE_DOCS=1 writes it anew.
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
        let want = registry::reference();
        if std::env::var_os("WEIR_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &want).map_err(|e| Error::io("cannot write", &path, e))?;
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/config.md differs from the option registry; run `WEIR_UPDATE_DOCS=1 cargo nextest run -p weir-core \
             reference` and commit it"
        );
        Ok(())
    }
}
