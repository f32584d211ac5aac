//! weir-runtime: how a job's operators run.
//!
//! Records move in batches (`Vec<T>`) through [`Output`]s. Operators joined by forward edges of
//! equal parallelism are chained: the upstream operator holds the downstream one as its output and
//! calls it directly, one virtual call per batch. Between tasks, records travel through bounded
//! channels ([`exchange`]), so a slow consumer backpressures its producers and memory stays bounded.
//! End of input travels in-band, so bounded jobs finish by themselves.
//!
//! The API layer builds a [`graph::StreamGraph`] whose nodes carry type-erased factories; this
//! crate's [`local`] executor turns it into tasks on threads of the current process.

pub mod cache;
pub mod checkpoint;
pub mod config;
pub mod context;
pub mod exchange;
pub mod graph;
pub mod local;
pub mod metrics;
pub mod net;
pub mod operators;
pub mod output;
pub mod source;
pub mod time;
pub mod window;

/// Keyed and operator state, in a crate of its own (`weir-state`): the state-backend traits and
/// the heap and disk backends.
pub use weir_state as state;
pub use weir_state::disk;

pub use config::ExecutionConfig;
pub use context::{CancelToken, OperatorContext};
pub use output::Output;
pub use source::{SourceReader, SourceStatus, SourceTime};
pub use weir_metrics::{Counter, MetricGroup};
