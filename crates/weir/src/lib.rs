//! weir: the architecture of Apache Flink (clients, a JobManager, TaskManagers with slots, session,
//! per-job and application modes) in a native Rust binary.
//!
//! This is the crate a weir user depends on. A program registers its jobs with an [`App`] and drives
//! them from `main`:
//!
//! ```no_run
//! use weir::{App, Job, StreamEnv};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Args { n: i64 }
//!
//! fn squares(env: &mut StreamEnv, args: Args) -> weir::Result<()> {
//!     env.from_sequence(1, args.n)
//!         .map(|x| (x % 3, x * x))
//!         .key_by(|t| t.0)
//!         .sum(|t| &mut t.1)
//!         .print();
//!     Ok(())
//! }
//!
//! static SQUARES: Job<Args> = Job::new("squares", squares);
//!
//! fn main() -> std::process::ExitCode {
//!     App::new("squares").job(&SQUARES).run(|driver, _args| {
//!         driver.execute(&SQUARES, Args { n: 10 })?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! The same executable answers `--info JOB [--args JSON] [--format json|dot]` with the job's plan.

mod app;
pub mod application;
pub mod builtin;
mod cli;
pub mod command;
pub mod launch;
mod minicluster;
pub mod remote;
/// The client side: REST client, settings, the remote and per-job targets, standalone clusters.
pub use weir_client::{perjob, standalone, targets};

pub use app::App;
pub use cli::{InfoArgs, PlanFormat, configure as cli_configure, exit_code, init_tracing, parse_json_args, print_info};
pub use minicluster::MiniCluster;
pub use weir_api::*;
pub use weir_core::{Blame, Error, JobId, JobStatus, Result};

/// Connectors: the built-in sources and sinks, and the traits to write your own.
pub mod connectors {
    pub use weir_connectors::*;
    pub use weir_runtime::source::{Sink, Source};
    pub use weir_runtime::state::{OperatorListState, OperatorStateStore, Redistribution};
    pub use weir_runtime::{OperatorContext, Output, SourceReader, SourceStatus};
}

/// Execution settings.
pub use weir_runtime::ExecutionConfig;

/// The README, compiled as documentation so that its examples stay true.
#[doc = include_str!("../../../README.md")]
pub mod readme {}
