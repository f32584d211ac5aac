//! weir-core: the vocabulary every other weir crate speaks.
//!
//! It owns what crosses process boundaries or is shared by all layers: identifiers, the error type
//! with its blame and retry classification, Flink's job status names, the logical plan of a job
//! (with its fingerprint, its JSON and Graphviz renderings and the chaining rule), the job graph
//! that a client submits, and the key-group arithmetic that decides which subtask owns a key.

pub mod blob;
pub mod checkpointing;
pub mod clock;
pub mod config;
pub mod error;
pub mod graph;
pub mod ids;
pub mod keygroup;
pub mod metric;
pub mod plan;
pub mod process;
pub mod protocol;
pub mod result;
pub mod status;

pub use error::{Blame, Error, Result};
pub use graph::{ArtifactDigest, JobGraph};
pub use ids::{JobId, VertexId};
pub use plan::{Plan, PlanEdge, PlanVertex, ShipStrategy};
pub use status::JobStatus;
