//! Checkpoints: consistent snapshots of a running job, taken with aligned barriers (asynchronous
//! barrier snapshotting), and what a job restores from after a failure. What the JobManager shares
//! with the tasks (format, state files, layout, the coordinator) is the `weir-checkpoint` crate,
//! re-exported here; the task side is [`task`].
//!
//! - The coordinator ([`coordinator`]) decides when a checkpoint starts, collects every task's
//!   acknowledgement and completes it once its metadata, which lists every file, is written; it is
//!   a pure core whose storage work [`io::Coordinating`] carries out.
//! - Sources put a barrier into their output between two batches; tasks with several input
//!   channels align barriers ([`crate::exchange::InputGate`]); every operator writes its state when
//!   the barrier passes it, and the task hands its snapshot to a writer thread, so processing goes
//!   on while state is written ([`task`]).
//! - State lives in checkpoint storage ([`storage`]): a directory, or any store `object_store`
//!   reaches.
//!
//! Keyed state is written by key group, so a job may restore with another parallelism; operator
//! list state is redistributed ([`crate::state::redistribute`]). Operators are matched to their
//! state by `uid`.

pub use weir_checkpoint::format::*;
pub use weir_checkpoint::{coordinator, file, format, io, layout, storage};
pub mod task;
pub use task::check_claims;
