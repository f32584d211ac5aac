//! A job's configuration: [`ExecutionConfig`], the settings a job runs with, and [`JobConfig`],
//! what a program (or `-D`) set for its job, which travels with the job as one typed value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigFile;
use super::registry::{self, OptionDef, Scope, Value};
use crate::checkpointing::{CheckpointConfig, StateBackendConfig};
use crate::keygroup::DEFAULT_MAX_PARALLELISM;
use crate::{Error, Result};

/// Settings that shape how a job runs, with Flink's key names where one exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionConfig {
    /// `parallelism.default`: parallelism of operators that do not set their own.
    pub parallelism: u32,
    /// `pipeline.max-parallelism`: number of key groups of keyed operators.
    pub max_parallelism: u32,
    /// `execution.batch-size`: most records a source emits per batch.
    pub batch_size: usize,
    /// `execution.channel-capacity`: batches buffered per channel between two subtasks before
    /// the sender blocks (backpressure).
    pub channel_capacity: usize,
    /// `pipeline.auto-watermark-interval` in milliseconds: how often tasks tick with processing
    /// time, which emits periodic watermarks, detects idle sources and fires processing-time
    /// timers (Flink's default, 200).
    pub auto_watermark_interval_ms: u64,
    /// `execution.checkpointing.*`.
    pub checkpointing: CheckpointConfig,
    /// `state.backend.*`.
    pub state_backend: StateBackendConfig,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            parallelism: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            max_parallelism: DEFAULT_MAX_PARALLELISM,
            batch_size: 1024,
            channel_capacity: 8,
            auto_watermark_interval_ms: 200,
            checkpointing: Default::default(),
            state_backend: Default::default(),
        }
    }
}

impl ExecutionConfig {
    /// The largest `execution.batch-size`: larger batches only cost memory.
    pub const MAX_BATCH_SIZE: usize = 1 << 20;
    /// The largest `execution.channel-capacity`, in batches.
    pub const MAX_CHANNEL_CAPACITY: usize = 1 << 16;

    /// The processing-time tick interval.
    pub fn tick(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.auto_watermark_interval_ms.max(1))
    }

    /// Every setting as `key: value`, such that [`ExecutionConfig::set`] on a default
    /// configuration gives this one back.
    pub fn entries(&self) -> BTreeMap<String, String> {
        [
            ("parallelism.default", self.parallelism.to_string()),
            ("pipeline.max-parallelism", self.max_parallelism.to_string()),
            ("pipeline.auto-watermark-interval", format!("{}ms", self.auto_watermark_interval_ms)),
            ("execution.batch-size", self.batch_size.to_string()),
            ("execution.channel-capacity", self.channel_capacity.to_string()),
        ]
        .into_iter()
        .chain(self.checkpointing.entries())
        .chain(self.state_backend.entries())
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Sets one key from its text: a cluster key is accepted and left to the cluster's processes,
    /// an unknown key or a bad value is an error that says what to write.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let (def, value) = registry::parse(key, value)?;
        self.apply(def, &value)
    }

    /// Sets one key from its typed value (a cluster key is left to the cluster's processes).
    pub fn apply(&mut self, def: &OptionDef, value: &Value) -> Result<()> {
        if def.scope != Scope::Job {
            return Ok(());
        }
        let key = def.key;
        match key {
            "parallelism.default" => self.parallelism = value.int(key)?,
            "pipeline.max-parallelism" => self.max_parallelism = value.int(key)?,
            "execution.batch-size" => self.batch_size = value.int(key)?,
            "execution.channel-capacity" => self.channel_capacity = value.int(key)?,
            "pipeline.auto-watermark-interval" => self.auto_watermark_interval_ms = value.number(key)?,
            k if self.checkpointing.apply(k, value)? => {}
            k if self.state_backend.apply(k, value)? => {}
            other => {
                return Err(Error::internal(format!(
                    "the registry declares the job key {other} but the execution configuration does not read it"
                )));
            }
        }
        Ok(())
    }

    /// Applies every key of a configuration file; the first unknown key or bad value is an error
    /// that names the file.
    pub fn apply_file(&mut self, file: &ConfigFile) -> Result<()> {
        file.apply(|k, v| self.set(k, v))
    }

    /// Checks ranges (the registry checks each value; this checks a configuration built in code).
    pub fn validate(&self) -> Result<()> {
        if self.parallelism == 0 {
            return Err(Error::Config("parallelism.default must be at least 1".into()));
        }
        if self.max_parallelism == 0 || self.max_parallelism > crate::keygroup::UPPER_BOUND_MAX_PARALLELISM {
            return Err(Error::Config(format!(
                "pipeline.max-parallelism must be between 1 and {}",
                crate::keygroup::UPPER_BOUND_MAX_PARALLELISM
            )));
        }
        if self.auto_watermark_interval_ms == 0 || self.auto_watermark_interval_ms > 24 * 3600 * 1000 {
            return Err(Error::Config("pipeline.auto-watermark-interval must be between 1 ms and one day".into()));
        }
        if self.batch_size == 0 || self.batch_size > Self::MAX_BATCH_SIZE {
            return Err(Error::Config(format!("execution.batch-size must be between 1 and {}", Self::MAX_BATCH_SIZE)));
        }
        if self.channel_capacity == 0 || self.channel_capacity > Self::MAX_CHANNEL_CAPACITY {
            return Err(Error::Config(format!(
                "execution.channel-capacity must be between 1 and {} batches",
                Self::MAX_CHANNEL_CAPACITY
            )));
        }
        Ok(())
    }
}

/// The job keys a program, a configuration file or `-D` set for a job, checked and typed once
/// where they were given. It travels with the job (to the JobManager, its HA store, the
/// TaskManagers and their worker processes) as this one value, and each of them applies it over
/// its own defaults with [`JobConfig::resolve`]: nothing on the way parses text again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobConfig {
    values: BTreeMap<String, Value>,
}

impl JobConfig {
    /// Sets `key` from its text if it is a job key (`Ok(false)` for a cluster key); an unknown key
    /// or a bad value is an error.
    pub fn set(&mut self, key: &str, text: &str) -> Result<bool> {
        let (def, value) = registry::parse(key, text)?;
        if def.scope != Scope::Job {
            return Ok(false);
        }
        self.values.insert(def.key.to_string(), value);
        Ok(true)
    }

    /// The job keys of `settings` (key, text pairs in order; later ones win); cluster keys are
    /// skipped, unknown keys and bad values are errors.
    pub fn from_settings<'a>(settings: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<JobConfig> {
        let mut c = JobConfig::default();
        for (k, v) in settings {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// The settings a client submitted with a job (REST's `config` object): every key must be a
    /// job key; a cluster key is an error, since a job cannot change its cluster.
    pub fn submitted<'a>(settings: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<JobConfig> {
        let mut c = JobConfig::default();
        for (k, v) in settings {
            if !c.set(k, v)? {
                return Err(Error::Config(format!(
                    "{k} is a cluster key; a job cannot set it (set it in the cluster's configuration)"
                )));
            }
        }
        Ok(c)
    }

    /// `other`'s settings over these (a job's own over a cluster's defaults).
    pub fn overlay(&mut self, other: &JobConfig) {
        self.values.extend(other.values.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    /// `job`'s settings over these defaults, as a new value.
    pub fn under(&self, job: &JobConfig) -> JobConfig {
        let mut c = self.clone();
        c.overlay(job);
        c
    }

    /// The typed value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The settings as `key`, text pairs, as `-D` would give them.
    pub fn rendered(&self) -> Vec<(String, String)> {
        self.values.iter().map(|(k, v)| (k.clone(), v.render())).collect()
    }

    /// `base` with these settings applied. A key this build does not know (a job from a newer
    /// build) is an error that says so.
    pub fn resolve(&self, base: &ExecutionConfig) -> Result<ExecutionConfig> {
        let mut c = base.clone();
        for (k, v) in &self.values {
            let def = registry::known(k)?;
            c.apply(def, v)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// The checkpoint settings alone (what the JobManager needs of a job).
    pub fn checkpointing(&self) -> Result<CheckpointConfig> {
        Ok(self.resolve(&ExecutionConfig::default())?.checkpointing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpointing::StateBackendKind;

    #[test]
    fn unknown_keys_and_bad_values_are_reported() {
        let mut c = ExecutionConfig::default();
        assert!(c.set("parallelism.default", "3").is_ok());
        assert_eq!(c.parallelism, 3);
        let e = c.set("parallelism.defualt", "3").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown configuration key 'parallelism.defualt'"), "{e}");
        assert!(c.set("parallelism.default", "0").is_err());
        assert!(c.set("execution.batch-size", "many").is_err());
        let e = c.set("state.backend.type", "rocksdb").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("'disk' is its embedded on-disk backend"), "{e}");
        assert!(c.set("state.backend.disk.cache-entries", "0").is_err());
        assert!(c.set("state.backend.incremental", "yes").is_err());
        let e = c.set("state.backend.disk.timer-service.factory", "rocksdb").err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("'rocksdb' is not one of disk, heap"));
        let e = c.set("state.backend.rocksdb.timer-service.factory", "HEAP").err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("takes state.backend.disk.timer-service.factory"));
        let mut c = ExecutionConfig::default();
        assert!(c.set("state.backend.disk.timer-service.factory", "HEAP").is_ok());
        assert!(c.state_backend.timers_on_heap);
        assert!(c.set("rest.port", "9").is_ok(), "a cluster key is left to the cluster");
    }

    #[test]
    fn entries_give_the_configuration_back() -> Result<()> {
        let c = ExecutionConfig {
            parallelism: 3,
            max_parallelism: 64,
            batch_size: 7,
            channel_capacity: 2,
            auto_watermark_interval_ms: 50,
            checkpointing: CheckpointConfig { interval_ms: Some(300), ..Default::default() },
            state_backend: StateBackendConfig {
                kind: StateBackendKind::Disk,
                incremental: true,
                dir: Some("/var/tmp/state".into()),
                cache_entries: 5000,
                timers_on_heap: true,
            },
        };
        let mut back = ExecutionConfig::default();
        for (k, v) in c.entries() {
            back.set(&k, &v)?;
        }
        assert_eq!(back, c);
        Ok(())
    }

    #[test]
    fn a_job_config_travels_typed_and_overrides_the_defaults_it_lands_on() -> Result<()> {
        let job = JobConfig::from_settings([
            ("parallelism.default", "3"),
            ("rest.port", "9000"),
            ("state.backend.disk.timer-service.factory", "heap"),
        ])?;
        assert_eq!(job.get("rest.port"), None, "cluster keys stay out");
        let wire = crate::protocol::encode(&job)?;
        let wire = &wire[4..];
        let back: JobConfig = crate::protocol::decode(wire)?;
        assert_eq!(back, job);
        let mut base = ExecutionConfig::default();
        base.set("state.backend.disk.dir", "/tm/local")?;
        base.set("parallelism.default", "8")?;
        let resolved = back.resolve(&base)?;
        assert_eq!(resolved.parallelism, 3, "the job's own setting wins");
        assert!(resolved.state_backend.timers_on_heap);
        assert_eq!(resolved.state_backend.dir.as_deref(), Some("/tm/local"), "the process's default stays");
        let mut defaults = JobConfig::from_settings([("parallelism.default", "5"), ("execution.batch-size", "9")])?;
        defaults.overlay(&job);
        let r = defaults.resolve(&ExecutionConfig::default())?;
        assert_eq!((r.parallelism, r.batch_size), (3, 9));
        Ok(())
    }
}
