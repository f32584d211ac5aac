//! Registered jobs: named, deterministic builder functions with serde arguments.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::{Error, Result};
use weir_runtime::ExecutionConfig;
use weir_runtime::graph::StreamGraph;

use crate::StreamEnv;

/// A job: a name and a builder that declares the pipeline for given arguments.
///
/// The builder must be deterministic: the same arguments must declare the same operators, edges
/// and parallelism, because every process that runs part of the job calls it again. Read clocks,
/// randomness and the environment in the driver and pass the values in as arguments.
///
/// ```
/// use weir_api::{Job, StreamEnv};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Args { n: i64 }
///
/// fn squares(env: &mut StreamEnv, args: Args) -> weir_core::Result<()> {
///     env.from_sequence(1, args.n).map(|x| x * x).collect("squares");
///     Ok(())
/// }
///
/// static SQUARES: Job<Args> = Job::new("squares", squares);
/// ```
pub struct Job<A> {
    name: &'static str,
    build: fn(&mut StreamEnv, A) -> Result<()>,
}

impl<A> Job<A> {
    /// A job named `name` built by `build`.
    pub const fn new(name: &'static str, build: fn(&mut StreamEnv, A) -> Result<()>) -> Self {
        Job { name, build }
    }

    /// The job's registered name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

type ErasedBuilder = Arc<dyn Fn(&mut StreamEnv, &serde_json::Value) -> Result<()> + Send + Sync>;

/// The jobs an artifact knows how to build, by name.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: BTreeMap<String, ErasedBuilder>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("jobs", &self.names()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `job` (a later registration under the same name replaces an earlier one).
    pub fn register<A: Serialize + DeserializeOwned + 'static>(mut self, job: &'static Job<A>) -> Self {
        let name = job.name;
        let build = job.build;
        self.jobs.insert(
            name.to_string(),
            Arc::new(move |env: &mut StreamEnv, args: &serde_json::Value| {
                let args: A = serde_json::from_value(args.clone())
                    .map_err(|e| Error::InvalidArguments { job: name.to_string(), message: e.to_string() })?;
                build(env, args)
            }),
        );
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.jobs.contains_key(name)
    }

    /// Runs job `name`'s builder on `args` and returns the graph it declares.
    pub fn build(&self, name: &str, args: &serde_json::Value, config: &ExecutionConfig) -> Result<StreamGraph> {
        let builder = self
            .jobs
            .get(name)
            .ok_or_else(|| Error::UnknownJob { name: name.to_string(), registered: self.names() })?;
        let mut env = StreamEnv::new(name, config.clone());
        match catch_unwind(AssertUnwindSafe(|| builder(&mut env, args))) {
            Ok(r) => r?,
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                return Err(Error::invalid_job(format!("the builder of job '{name}' panicked: {msg}")));
            }
        }
        env.into_graph()
    }
}
