//! A sink that hands its records back to the driver with the job's result, for tests and for
//! drivers that use a job's output. Records are serialized, so the same works when the job runs on
//! a remote cluster.

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_core::{Error, Result};
use weir_runtime::Output;
use weir_runtime::context::{Accumulators, TaskEnv};
use weir_runtime::output::Batch;
use weir_runtime::source::Sink;

/// Collects records under `name`; read them with [`decode`] from the job result.
#[derive(Clone, Debug)]
pub struct Collect {
    name: String,
}

impl Collect {
    /// A collect sink whose records are filed under `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Collect { name: name.into() }
    }
}

impl<T: Serialize + 'static> Sink<T> for Collect {
    fn name(&self) -> String {
        format!("Collect {}", self.name)
    }
    fn create_writer(&self, env: &TaskEnv) -> Result<Box<dyn Output<T>>> {
        Ok(Box::new(CollectWriter {
            name: self.name.clone(),
            subtask: env.op.subtask,
            accumulators: env.accumulators.clone(),
            items: Vec::new(),
        }))
    }
}

struct CollectWriter<T> {
    name: String,
    subtask: u32,
    accumulators: std::sync::Arc<Accumulators>,
    items: Vec<T>,
}

impl<T: Serialize> Output<T> for CollectWriter<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        self.items.append(&mut batch.records);
        batch.timestamps = None;
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        let bytes = postcard::to_allocvec(&self.items)
            .map_err(|e| Error::internal(format!("cannot serialize collected records: {e}")))?;
        self.accumulators.put(&self.name, self.subtask, bytes);
        Ok(())
    }
}

/// Decodes one subtask's collected records.
pub fn decode<T: DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<Vec<T>> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::invalid_job(format!(
            "the records of collect sink '{name}' do not decode as {}: {e}; read them with the record type the \
             sink collects",
            std::any::type_name::<T>()
        ))
    })
}
