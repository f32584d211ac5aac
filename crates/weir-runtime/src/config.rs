//! Execution settings of one job: [`ExecutionConfig`] lives beside the option registry in
//! `weir_core::config`, so every process (client, JobManager, TaskManager, worker) reads job keys
//! through the same code; it is re-exported here where the runtime's users look for it.

pub use weir_core::config::ExecutionConfig;
