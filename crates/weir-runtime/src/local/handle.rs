//! A client's handle on a job of the embedded local cluster: its status, counters, cancellation,
//! and waiting for its tasks to initialize or for its end.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::info;
use weir_core::{Error, JobId, JobStatus, Result};

use super::{JobResult, JobShared};
use crate::checkpoint::coordinator::CheckpointStats;
use crate::checkpoint::task::{PartCheckpoints, PartEvent};
use crate::metrics::VertexCounts;

/// A client's handle on a job running in the local cluster.
#[derive(Clone)]
pub struct JobHandle {
    pub(super) shared: Arc<JobShared>,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle").field("job_id", &self.shared.job_id).field("status", &self.status()).finish()
    }
}

impl JobHandle {
    /// The job's id.
    pub fn job_id(&self) -> JobId {
        self.shared.job_id
    }

    /// The job's current status.
    pub fn status(&self) -> JobStatus {
        self.shared.state.lock().map(|s| s.status).unwrap_or(JobStatus::Failed)
    }

    /// Asks the job to stop. Returns at once; [`JobHandle::wait`] returns once every task has stopped.
    pub fn cancel(&self) {
        let mut cancel = false;
        if let Ok(mut s) = self.shared.state.lock()
            && !s.status.is_terminal()
            && s.status != JobStatus::Failing
        {
            s.status = JobStatus::Cancelling;
            cancel = true;
        }
        if cancel {
            info!(job_id = %self.shared.job_id, "cancelling job");
            self.shared.cancel.cancel();
            self.shared.changed.notify_all();
        }
    }

    /// Record counters per operator, live.
    pub fn counts(&self) -> Vec<VertexCounts> {
        self.shared.counts()
    }

    /// The part's metrics now: its job, task and operator groups.
    pub fn metrics(&self) -> Vec<weir_core::metric::GroupSample> {
        self.shared.metrics.samples()
    }

    /// The part's checkpointing, when the job takes checkpoints.
    pub fn checkpoints(&self) -> Option<Arc<PartCheckpoints>> {
        self.shared.checkpoints.clone()
    }

    /// The part's checkpoint events (acknowledgements, declines, ended sources), for a part whose
    /// checkpoints a JobManager coordinates; `None` once taken, or without checkpoints.
    pub fn take_checkpoint_events(&self) -> Option<crossbeam_channel::Receiver<PartEvent>> {
        self.shared.events.lock().ok().and_then(|mut e| e.take())
    }

    /// Checkpoint counts and history, for a job the embedded cluster coordinates.
    pub fn checkpoint_stats(&self) -> Option<CheckpointStats> {
        self.shared.coordinator.lock().ok().and_then(|c| c.as_ref().map(|c| c.core.stats.clone()))
    }

    /// Task threads of this job still alive; 0 once the job is terminal.
    pub fn live_tasks(&self) -> usize {
        self.shared.live_tasks.load(Ordering::SeqCst)
    }

    /// Tasks still initializing: building their operators, which restore their state and open their
    /// readers (Flink's task state INITIALIZING). The others run.
    pub fn initializing(&self) -> usize {
        self.shared.initializing.load(Ordering::SeqCst)
    }

    /// Blocks until every task has initialized (`Ok(true)`), or until `timeout` passes or the job
    /// reaches a terminal status first (`Ok(false)`).
    pub fn wait_initialized(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.shared.state.lock().map_err(|_| Error::internal("job state lock poisoned"))?;
        loop {
            if s.status.is_terminal() {
                return Ok(false);
            }
            if self.initializing() == 0 {
                return Ok(true);
            }
            let Some(wait) = time_left(deadline) else { return Ok(false) };
            s = self.shared.changed.wait_timeout(s, wait).map_err(|_| Error::internal("job state lock poisoned"))?.0;
        }
    }

    /// Blocks until the job reaches a terminal status; its result, or why it did not finish.
    pub fn wait(&self) -> Result<JobResult> {
        self.wait_timeout(Duration::MAX)
            .and_then(|r| r.ok_or_else(|| Error::internal("wait without a timeout timed out")))
    }

    /// Like [`JobHandle::wait`], but gives up after `timeout` with `Ok(None)`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<JobResult>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.shared.state.lock().map_err(|_| Error::internal("job state lock poisoned"))?;
        while !s.status.is_terminal() {
            let Some(wait) = time_left(deadline) else { return Ok(None) };
            s = self.shared.changed.wait_timeout(s, wait).map_err(|_| Error::internal("job state lock poisoned"))?.0;
        }
        match s.status {
            JobStatus::Finished => {
                s.result.clone().map(Some).ok_or_else(|| Error::internal("finished without a result"))
            }
            JobStatus::Canceled => Err(Error::Cancelled(self.shared.job_id.to_string())),
            _ => Err(match &s.error {
                Some(e) => clone_error(e),
                None => Error::internal("job failed without an error"),
            }),
        }
    }
}

/// How long to wait on the job's condition variable before `deadline` (`None`: no deadline, so an
/// hour at a time); `None` once it has passed.
fn time_left(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        Some(d) => d.checked_duration_since(Instant::now()).filter(|w| !w.is_zero()),
        None => Some(Duration::from_secs(3600)),
    }
}

/// Errors are not `Clone` (they hold `io::Error`s); waiters get an equivalent copy.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Task { operator, subtask, parallelism, message, blame, retryable, damaged } => Error::Task {
            operator: operator.clone(),
            subtask: *subtask,
            parallelism: *parallelism,
            message: message.clone(),
            blame: *blame,
            retryable: *retryable,
            damaged: *damaged,
        },
        Error::Cancelled(s) => Error::Cancelled(s.clone()),
        Error::GraphMismatch { job, message } => Error::GraphMismatch { job: job.clone(), message: message.clone() },
        Error::InvalidJob(s) => Error::InvalidJob(s.clone()),
        Error::ChannelClosed(s) => Error::ChannelClosed(s.clone()),
        Error::Config(s) => Error::Config(s.clone()),
        Error::Storage { context, location, message, blame, retryable } => Error::Storage {
            context: context.clone(),
            location: location.clone(),
            message: message.clone(),
            blame: *blame,
            retryable: *retryable,
        },
        Error::Network { context, peer, source } => Error::Network {
            context: context.clone(),
            peer: peer.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::External { context, message, retryable } => {
            Error::External { context: context.clone(), message: message.clone(), retryable: *retryable }
        }
        Error::Coordination { context, service, message, retryable } => Error::Coordination {
            context: context.clone(),
            service: service.clone(),
            message: message.clone(),
            retryable: *retryable,
        },
        Error::InvalidArguments { job, message } => {
            Error::InvalidArguments { job: job.clone(), message: message.clone() }
        }
        Error::UnknownJob { name, registered } => {
            Error::UnknownJob { name: name.clone(), registered: registered.clone() }
        }
        Error::Io { context, path, source } => Error::Io {
            context: context.clone(),
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        Error::NotLeader(s) => Error::NotLeader(s.clone()),
        Error::JobFailed { job, message } => Error::JobFailed { job: job.clone(), message: message.clone() },
        Error::Internal(s) => Error::Internal(s.clone()),
        // (`Error` is non-exhaustive: a variant added later is copied as what it says.)
        other => Error::Internal(other.to_string()),
    }
}
