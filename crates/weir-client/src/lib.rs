//! weir-client: how a client reaches a cluster. The REST client and the commands built on it
//! ([`rest`]), the settings a command gathers ([`settings`]), the `remote` and `per-job` targets
//! of a program's `execute` ([`targets`], [`perjob`]), and a standalone cluster of local processes
//! started and stopped as a whole ([`standalone`]). The facade crate `weir` uses it for its
//! command line; a job author does not need it.

pub mod perjob;
pub mod rest;
pub mod settings;
pub mod standalone;
pub mod targets;

use weir_core::{Error, Result};

/// The async runtime of a client or a cluster process (two worker threads).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the async runtime: {e}")))
}
