//! A client's (and a cluster process's) settings: the configuration file, then `-D key=value`,
//! then `-p`, each checked against the option registry where it is read.

use std::path::Path;

use weir_api::Driver;
use weir_core::config::{ClusterConfig, ConfigFile, ExecutionConfig, JobConfig};
use weir_core::{Error, Result};

/// Settings in the order they apply: the file (`--config`, else `$WEIR_CONF_DIR/config.yaml`),
/// then `-D key=value`, then `-p`. Each part of weir takes its own keys from the list.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Key, value, and where it came from (a file's path, `-D` or `-p`), in order.
    pub entries: Vec<(String, String, String)>,
}

/// Names the origin of a bad setting in its error.
fn from(origin: &str, e: Error) -> Error {
    match e {
        Error::Config(m) => Error::Config(format!("{origin}: {m}")),
        other => other,
    }
}

impl Settings {
    /// Gathers the settings of a command.
    pub fn gather(config: Option<&Path>, parallelism: Option<u32>, define: &[String]) -> Result<Settings> {
        let file = match config {
            Some(path) => Some(ConfigFile::load(path)?),
            None => ConfigFile::from_env()?,
        };
        let mut entries: Vec<(String, String, String)> = match file {
            Some(f) => {
                let origin = f.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
                f.values.into_iter().map(|(k, v)| (k, v, origin.clone())).collect()
            }
            None => Vec::new(),
        };
        for d in define {
            let (k, v) = d
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("-D {d}: expected key=value, e.g. -D parallelism.default=4")))?;
            entries.push((k.trim().to_string(), v.trim().to_string(), format!("-D {d}")));
        }
        if let Some(p) = parallelism {
            entries.push(("parallelism.default".into(), p.to_string(), format!("-p {p}")));
        }
        Ok(Settings { entries })
    }

    /// Applies the execution keys to a driver (and reports unknown keys).
    pub fn configure(&self, driver: &mut Driver) -> Result<()> {
        for (k, v, origin) in &self.entries {
            driver.set(k, v).map_err(|e| from(origin, e))?;
        }
        Ok(())
    }

    /// The execution settings.
    pub fn execution(&self) -> Result<ExecutionConfig> {
        let mut c = ExecutionConfig::default();
        for (k, v, origin) in &self.entries {
            c.set(k, v).map_err(|e| from(origin, e))?;
        }
        Ok(c)
    }

    /// The cluster settings.
    pub fn cluster(&self) -> Result<ClusterConfig> {
        let mut c = ClusterConfig::default();
        for (k, v, origin) in &self.entries {
            c.set(k, v).map_err(|e| from(origin, e))?;
        }
        c.validate()?;
        Ok(c)
    }

    /// The job keys, typed: what a job submitted to a cluster carries, or a cluster process's
    /// defaults for the jobs it runs.
    pub fn job_config(&self) -> Result<JobConfig> {
        let mut c = JobConfig::default();
        for (k, v, origin) in &self.entries {
            c.set(k, v).map_err(|e| from(origin, e))?;
        }
        Ok(c)
    }
}
