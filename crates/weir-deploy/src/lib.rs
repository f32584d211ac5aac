//! weir-deploy: where TaskManagers run.
//!
//! With `resourcemanager.provider: standalone` (the default) TaskManagers are started by someone
//! else and register by themselves. An active [`ResourceProvider`] is asked by the JobManager for
//! TaskManagers when jobs wait for slots, and told to stop the ones it started once they sat idle
//! for `resourcemanager.taskmanager-timeout`. One module per target: [`process`] (child processes
//! of the JobManager, from its own program) and [`docker`] (containers on the cluster's private
//! network, through the Docker Engine client in [`engine`]); a new target (Kubernetes) is a new
//! module here. The images of weir artifacts, built from scratch, are [`image`].
//!
//! The trait is asynchronous, so that a target whose client is (a Kubernetes API client) fits as
//! it is; the two targets here do their blocking work on tokio's blocking threads, never on the
//! JobManager's async threads.

pub mod docker;
pub mod engine;
pub mod image;
pub mod process;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use weir_core::{Error, Result};

pub use docker::DockerProvider;
pub use process::ProcessProvider;

/// A boxed future, so that [`ResourceProvider`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts and stops TaskManagers for a JobManager.
pub trait ResourceProvider: Send + Sync + std::fmt::Debug {
    /// Its name (`process`, `docker`, ...).
    fn kind(&self) -> &'static str;
    /// Starts a TaskManager with id `id` and `slots` slots that registers with the JobManager at
    /// `rpc` (`host:port`); resolves once it was started (not registered).
    fn start(self: Arc<Self>, id: String, slots: u32, rpc: String) -> BoxFuture<'static, Result<()>>;
    /// Ends a TaskManager it started, which was told to shut down: waits a little, then forces it.
    fn stop(self: Arc<Self>, id: String) -> BoxFuture<'static, ()>;
    /// Ends every TaskManager it started and removes what it made (also when the JobManager's
    /// runtime is gone: it blocks).
    fn shutdown(&self);
}

/// Runs blocking `work` on tokio's blocking threads.
fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> BoxFuture<'static, Result<T>> {
    Box::pin(async move {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(format!("a resource provider's task stopped: {e}")))?
    })
}

/// Runs blocking `work` that cannot fail on tokio's blocking threads (a stop: what goes wrong is
/// logged where it happens).
fn in_background(work: impl FnOnce() + Send + 'static) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let _ = tokio::task::spawn_blocking(work).await;
    })
}
