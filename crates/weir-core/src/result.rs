//! What a finished job hands back, and per-operator record counts: both travel from the process
//! that ran a job to the client.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{JobId, JobStatus};

/// A snapshot of one operator's counters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VertexCounts {
    /// Operator name.
    pub name: String,
    /// Records that entered the operator (`numRecordsIn`).
    #[serde(rename = "numRecordsIn")]
    pub records_in: u64,
    /// Records that a source emitted (`numRecordsOut`); 0 for other operators.
    #[serde(rename = "numRecordsOut")]
    pub records_out: u64,
}

/// The outcome of a job that ran to a terminal status.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: JobId,
    /// Its registered name.
    pub job_name: String,
    /// FINISHED (a failed or cancelled job is an error instead).
    pub status: JobStatus,
    /// Wall time from submission to the terminal status.
    pub net_runtime: Duration,
    /// Values handed back by subtasks (the collect sink's records), per name, in subtask order.
    pub accumulators: BTreeMap<String, Vec<Vec<u8>>>,
    /// Record counters per operator.
    pub counts: Vec<VertexCounts>,
}
