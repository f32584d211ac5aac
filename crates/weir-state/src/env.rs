//! What an operator instance's state is opened with: its backend, what it restored, and who it is.

use weir_checkpoint::file::RawState;
use weir_core::checkpointing::StateBackendConfig;

/// The state side of an operator instance's environment (the runtime's task environment gives it).
#[derive(Clone, Debug)]
pub struct StateEnv<'a> {
    /// `state.backend.*` of the job.
    pub backend: &'a StateBackendConfig,
    /// Keyed state restored from the heap backend's snapshots, by key group.
    pub restored_keyed: &'a [(u32, Vec<u8>)],
    /// Keyed state restored from the disk backend's snapshots, in the order it applies.
    pub restored_raw: &'a RawState,
    /// A name unique to the instance (job, vertex, subtask), for the disk backend's directory.
    pub instance: String,
    /// Key groups (`pipeline.max-parallelism`).
    pub max_parallelism: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// The instance's subtask index.
    pub subtask: u32,
}
