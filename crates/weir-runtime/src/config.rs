//! Execution settings of one job.

use weir_core::keygroup::DEFAULT_MAX_PARALLELISM;
use weir_core::{Error, Result};

/// Settings that shape how a job runs, with Flink's key names where one exists.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    pub checkpointing: weir_core::checkpointing::CheckpointConfig,
    /// `state.backend.*`.
    pub state_backend: weir_core::checkpointing::StateBackendConfig,
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

    /// The keys [`ExecutionConfig::set`] understands.
    pub const KEYS: [&'static str; 18] = weir_core::config::EXECUTION_KEYS;

    /// Every setting as `key: value`, such that [`ExecutionConfig::set`] on a default
    /// configuration gives this one back.
    pub fn entries(&self) -> std::collections::BTreeMap<String, String> {
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

    /// Sets one key from its text value; unknown keys and bad values are errors that say so.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        fn num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
            value.trim().parse().map_err(|_| Error::Config(format!("{key}: '{value}' is not a valid number")))
        }
        match key {
            "parallelism.default" => self.parallelism = num(key, value)?,
            "pipeline.max-parallelism" => self.max_parallelism = num(key, value)?,
            "execution.batch-size" => self.batch_size = num(key, value)?,
            "execution.channel-capacity" => self.channel_capacity = num(key, value)?,
            "pipeline.auto-watermark-interval" => {
                let v = value.trim();
                let ms = v.strip_suffix("ms").unwrap_or(v).trim();
                self.auto_watermark_interval_ms = num(key, ms)?
            }
            k if self.checkpointing.set(k, value)? => {}
            k if self.state_backend.set(k, value)? => {}
            // A key of the cluster processes: not this part's business.
            k if weir_core::config::ClusterConfig::KEYS.contains(&k) => {}
            k => return Err(weir_core::config::unknown_key(k)),
        }
        self.validate()
    }

    /// Applies every key of a configuration file; the first unknown key or bad value is an error
    /// that names the file.
    pub fn apply_file(&mut self, file: &weir_core::config::ConfigFile) -> Result<()> {
        file.apply(|k, v| self.set(k, v))
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if self.parallelism == 0 {
            return Err(Error::Config("parallelism.default must be at least 1".into()));
        }
        if self.max_parallelism == 0 || self.max_parallelism > weir_core::keygroup::UPPER_BOUND_MAX_PARALLELISM {
            return Err(Error::Config(format!(
                "pipeline.max-parallelism must be between 1 and {}",
                weir_core::keygroup::UPPER_BOUND_MAX_PARALLELISM
            )));
        }
        if self.auto_watermark_interval_ms == 0 {
            return Err(Error::Config("pipeline.auto-watermark-interval must be at least 1 ms".into()));
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
        if self.auto_watermark_interval_ms > 24 * 3600 * 1000 {
            return Err(Error::Config("pipeline.auto-watermark-interval must be at most one day".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(e.unwrap_or_default().contains("'rocksdb' is not disk or heap"));
        let e = c.set("state.backend.rocksdb.timer-service.factory", "HEAP").err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("takes state.backend.disk.timer-service.factory"));
        let mut c = ExecutionConfig::default();
        assert!(c.set("state.backend.disk.timer-service.factory", "HEAP").is_ok());
        assert!(c.state_backend.timers_on_heap);
    }

    #[test]
    fn entries_give_the_configuration_back() -> Result<()> {
        let c = ExecutionConfig {
            parallelism: 3,
            max_parallelism: 64,
            batch_size: 7,
            channel_capacity: 2,
            auto_watermark_interval_ms: 50,
            checkpointing: weir_core::checkpointing::CheckpointConfig { interval_ms: Some(300), ..Default::default() },
            state_backend: weir_core::checkpointing::StateBackendConfig {
                kind: weir_core::checkpointing::StateBackendKind::Disk,
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
}
