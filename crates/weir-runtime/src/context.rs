//! What a running operator knows about where it runs, and how it learns that it must stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use weir_core::{JobId, VertexId};

/// Cooperative cancellation shared by all tasks of one job attempt.
///
/// Cheap to poll ([`CancelToken::is_cancelled`]) and able to wake threads that wait on it
/// ([`CancelToken::wait_timeout`], or a [`crossbeam_channel::Select`] over [`CancelToken::receiver`]).
#[derive(Clone, Debug)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
    wake: Receiver<()>,
    trigger: Arc<Mutex<Option<Sender<()>>>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        CancelToken { flag: Arc::new(AtomicBool::new(false)), wake: rx, trigger: Arc::new(Mutex::new(Some(tx))) }
    }

    /// Cancels: every holder sees it, and every waiter wakes up.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Ok(mut t) = self.trigger.lock() {
            // Dropping the only sender disconnects the channel, which wakes all receivers.
            t.take();
        }
    }

    /// Whether [`CancelToken::cancel`] was called.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Sleeps up to `d`; returns early, with `true`, once cancelled.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        if self.is_cancelled() {
            return true;
        }
        match self.wake.recv_timeout(d) {
            Err(RecvTimeoutError::Timeout) => self.is_cancelled(),
            _ => true,
        }
    }

    /// A receiver that becomes ready (disconnected) when cancelled, for use in a select.
    pub fn receiver(&self) -> &Receiver<()> {
        &self.wake
    }
}

/// Where an operator instance runs: job, operator, subtask, attempt.
#[derive(Clone, Debug)]
pub struct OperatorContext {
    /// The job.
    pub job_id: JobId,
    /// The job's name.
    pub job_name: String,
    /// The operator.
    pub vertex: VertexId,
    /// The operator's display name.
    pub operator_name: String,
    /// Zero-based subtask index.
    pub subtask: u32,
    /// The operator's parallelism.
    pub parallelism: u32,
    /// Number of key groups.
    pub max_parallelism: u32,
    /// Execution attempt (0 for the first).
    pub attempt: u32,
    /// Largest batch to emit at once.
    pub batch_size: usize,
    /// How often the task ticks with processing time (`pipeline.auto-watermark-interval`).
    pub tick: Duration,
    /// The job attempt's cancellation.
    pub cancel: CancelToken,
    /// This instance's operator (non-keyed) list states (restored ones included).
    pub operator_state: crate::state::OperatorStateStore,
    /// The operator's uid: what its state is found by in checkpoints and savepoints.
    pub uid: String,
    /// The instance's metric group (`taskmanager.job.task.operator`), where user code registers
    /// its own metrics (Flink's `getRuntimeContext().getMetricGroup()`).
    pub metrics: weir_metrics::MetricGroup,
}

impl OperatorContext {
    /// `name (i/p)`, as Flink names subtasks (one-based).
    pub fn subtask_name(&self) -> String {
        format!("{} ({}/{})", self.operator_name, self.subtask + 1, self.parallelism)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn cancel_wakes_a_waiter() {
        let t = CancelToken::new();
        let t2 = t.clone();
        let start = Instant::now();
        let h = std::thread::spawn(move || t2.wait_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        t.cancel();
        assert_eq!(h.join().ok(), Some(true));
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(!CancelToken::new().wait_timeout(Duration::from_millis(1)));
    }
}

/// Values that subtasks hand back to the client with the job's result (the collect sink's records,
/// for one), kept per name and subtask.
#[derive(Debug, Default)]
pub struct Accumulators(Mutex<std::collections::BTreeMap<String, std::collections::BTreeMap<u32, Vec<u8>>>>);

impl Accumulators {
    /// Stores subtask `subtask`'s serialized value for `name`.
    pub fn put(&self, name: &str, subtask: u32, bytes: Vec<u8>) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(name.to_string()).or_default().insert(subtask, bytes);
        }
    }

    /// Every name with its values by subtask.
    pub fn snapshot(&self) -> std::collections::BTreeMap<String, std::collections::BTreeMap<u32, Vec<u8>>> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Everything an operator factory gets to build one operator instance.
#[derive(Clone)]
pub struct TaskEnv {
    /// Where the instance runs.
    pub op: OperatorContext,
    /// The operator instance's metrics (and the group user functions register theirs in).
    pub metrics: Arc<crate::metrics::OperatorMetrics>,
    /// Its task's input and output figures.
    pub io: Arc<crate::metrics::TaskIo>,
    /// The task's running-operator marker.
    pub current: crate::output::CurrentOperator,
    /// The job's accumulators.
    pub accumulators: Arc<Accumulators>,
    /// The task's checkpointing (disabled when the job takes no checkpoints).
    pub checkpoint: crate::checkpoint::task::TaskCheckpoint,
    /// The instance's restored keyed state, when the job restored from a snapshot holding it.
    pub restored_keyed: Vec<(u32, Vec<u8>)>,
    /// Its restored keyed state of the disk backend, in the order the chunks apply (read from
    /// storage a chunk at a time as the operator loads it).
    pub restored_raw: crate::checkpoint::file::RawState,
    /// Where keyed state lives (`state.backend.*`).
    pub state_backend: weir_core::checkpointing::StateBackendConfig,
}

impl TaskEnv {
    /// What the instance's state is opened with.
    pub fn state(&self) -> crate::state::StateEnv<'_> {
        crate::state::StateEnv {
            backend: &self.state_backend,
            restored_keyed: &self.restored_keyed,
            restored_raw: &self.restored_raw,
            instance: format!("{}-{}-{}", self.op.job_id, self.op.vertex.0, self.op.subtask),
            max_parallelism: self.op.max_parallelism,
            parallelism: self.op.parallelism,
            subtask: self.op.subtask,
        }
    }
}
