//! Job status, with Flink's names.

use std::fmt;

/// The status of a job, named as Flink names it (`RUNNING`, `FINISHED`, ...), so that tools written
/// for Flink's REST API understand weir's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// A job: accepted, not yet scheduled. A TaskManager's part of a job: deployed, with tasks
    /// still restoring their state or opening their readers (Flink's task state INITIALIZING); it
    /// reports RUNNING once every task runs.
    Initializing,
    /// Scheduled, tasks not yet running.
    Created,
    /// Tasks are running.
    Running,
    /// A task failed; the others are being stopped.
    Failing,
    /// Terminal: the job failed.
    Failed,
    /// Cancellation requested; tasks are being stopped.
    Cancelling,
    /// Terminal: the job was cancelled.
    Canceled,
    /// Terminal: all sources ended and all records were processed.
    Finished,
    /// The job is being restarted after a failure.
    Restarting,
    /// The job was suspended (its JobManager lost leadership); another may resume it.
    Suspended,
    /// A new JobManager is reconciling the job's state.
    Reconciling,
}

impl JobStatus {
    /// Whether the job will never change status again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Failed | JobStatus::Canceled | JobStatus::Finished)
    }

    /// Flink's upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Initializing => "INITIALIZING",
            JobStatus::Created => "CREATED",
            JobStatus::Running => "RUNNING",
            JobStatus::Failing => "FAILING",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelling => "CANCELLING",
            JobStatus::Canceled => "CANCELED",
            JobStatus::Finished => "FINISHED",
            JobStatus::Restarting => "RESTARTING",
            JobStatus::Suspended => "SUSPENDED",
            JobStatus::Reconciling => "RECONCILING",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_flink() {
        assert_eq!(serde_json::to_string(&JobStatus::Canceled).ok().as_deref(), Some("\"CANCELED\""));
        assert_eq!(JobStatus::Running.to_string(), "RUNNING");
        assert!(JobStatus::Finished.is_terminal() && !JobStatus::Cancelling.is_terminal());
    }
}
