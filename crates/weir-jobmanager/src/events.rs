//! The JobManager's events: what each of its loops is told, in one enum per loop
//! ([`DispatcherEvent`], [`ResourceEvent`], [`JobEvent`]), and what travels with them. The loops
//! (`dispatcher.rs`, `resources.rs`, `jobmaster.rs`) send each other these and nothing else; this
//! module sits under all of them, so that none imports another.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use weir_core::checkpointing::CheckpointEvent;
use weir_core::protocol::ToTaskManager;
use weir_core::result::JobResult;
use weir_core::{JobId, JobStatus, Result};

use crate::checkpoints::Output;
use crate::state::{Job, JobView, TaskManager};

/// What the Dispatcher is told.
pub(crate) enum DispatcherEvent {
    /// Start a checked job's JobMaster (refused when the id is taken, or when a per-job cluster
    /// has its job already).
    Submit {
        /// The job, as [`prepare`] made it.
        job: Box<Prepared>,
        /// The answer.
        reply: oneshot::Sender<Result<()>>,
    },
    /// This JobManager lost its leadership: every job is suspended and forgotten here (the next
    /// leader recovers them), every TaskManager let go. `done` once every JobMaster has suspended
    /// its job (so none records anything of this leadership later).
    SuspendAll {
        /// Why.
        why: String,
        /// Told once the jobs are forgotten.
        done: oneshot::Sender<()>,
    },
}

/// A job checked and read, whose JobMaster is not started yet.
pub(crate) struct Prepared {
    pub(crate) job: Job,
    pub(crate) events: (mpsc::UnboundedSender<JobEvent>, mpsc::UnboundedReceiver<JobEvent>),
}

/// How the others reach a job's JobMaster and read what it published last.
#[derive(Clone)]
pub struct JobMasterHandle {
    /// Its inbox.
    pub(crate) tx: mpsc::UnboundedSender<JobEvent>,
    /// What it published last.
    pub(crate) view: watch::Receiver<Arc<JobView>>,
}

impl JobMasterHandle {
    /// The job as its JobMaster last published it.
    pub fn view(&self) -> Arc<JobView> {
        self.view.borrow().clone()
    }
}

/// What the ResourceManager is told.
pub(crate) enum ResourceEvent {
    /// A TaskManager wants to register; the answer is `Err(why)` when it may not (its id is taken).
    Register {
        /// It.
        taskmanager: Box<TaskManager>,
        /// The answer.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// A TaskManager's heartbeat (of registration `session`).
    Heartbeat {
        /// Its id.
        taskmanager: String,
        /// Its registration.
        session: u64,
        /// Its own metrics.
        metrics: Vec<weir_core::metric::GroupSample>,
    },
    /// A TaskManager's connection ended (if `session` is still its registration, it is lost).
    Disconnected {
        /// Its id.
        taskmanager: String,
        /// Its registration.
        session: u64,
        /// What happened.
        why: String,
    },
    /// A JobMaster asks for `slots` slots for its job's next run.
    RequestSlots {
        /// The job.
        job: JobId,
        /// Which JobMaster of it.
        holder: u64,
        /// How many.
        slots: u32,
        /// Where the grant (or the refusal) goes.
        master: mpsc::UnboundedSender<JobEvent>,
    },
    /// A JobMaster frees its job's slots, and forgets its request if it has one.
    Release {
        /// The job.
        job: JobId,
        /// Which JobMaster of it.
        holder: u64,
    },
    /// The resource provider could not start a TaskManager: nothing waiting will get slots.
    StartFailed {
        /// The TaskManager it was to be.
        taskmanager: String,
        /// Why.
        error: String,
    },
    /// Leadership was lost: every TaskManager is let go (they find the next leader), every request
    /// and grant forgotten.
    Reset,
    /// The cluster shuts down: every TaskManager is told to stop.
    Shutdown,
}

/// Slots given to a job on one TaskManager.
#[derive(Debug)]
pub struct Grant {
    /// The TaskManager.
    pub taskmanager: String,
    /// How many of its slots.
    pub slots: u32,
    /// Its connection.
    pub tx: mpsc::UnboundedSender<ToTaskManager>,
    /// Where other TaskManagers send it records.
    pub data_address: String,
}

/// What a JobMaster is told.
#[derive(Debug)]
pub enum JobEvent {
    /// Cancellation asked for (REST, the CLI): a deployed job's parts are told to stop, a waiting or
    /// restarting one ends at once.
    Cancel,
    /// A TaskManager reported the status of its part of run `attempt`.
    PartReport {
        /// The TaskManager.
        taskmanager: String,
        /// The run the report is about (reports of earlier runs change nothing).
        attempt: u32,
        /// The part's status.
        status: JobStatus,
        /// Why it failed.
        error: Option<String>,
        /// Its result, when it finished.
        result: Option<JobResult>,
        /// Whether running it again may succeed.
        retryable: bool,
        /// It could not read the snapshot it restored from.
        damaged: bool,
    },
    /// A TaskManager reported its part's counters.
    Progress {
        /// The TaskManager.
        taskmanager: String,
        /// The run.
        attempt: u32,
        /// Records in and out per operator.
        counts: Vec<weir_core::result::VertexCounts>,
        /// The part's task and operator metrics.
        metrics: Vec<weir_core::metric::GroupSample>,
    },
    /// A part of run `attempt` reported a checkpoint event.
    Checkpoint {
        /// The TaskManager it came from (only one that runs a part of that run counts).
        taskmanager: String,
        /// The run.
        attempt: u32,
        /// What it reported.
        event: CheckpointEvent,
    },
    /// What the job's checkpointing thread asks for.
    Checkpointing(Output),
    /// The ResourceManager gave the job the slots it asked for, part by part.
    SlotsGranted {
        /// Which TaskManagers, how many slots each.
        grants: Vec<Grant>,
    },
    /// A TaskManager that runs a part of the job was lost.
    TaskManagerLost {
        /// Which one.
        taskmanager: String,
        /// What happened, for the job's exceptions.
        message: String,
    },
    /// No slots will come: `slot.request.timeout` passed, or the resource provider cannot start
    /// TaskManagers. The job fails.
    NoSlots {
        /// Why.
        message: String,
    },
    /// This JobManager lost its leadership: the job is suspended here (and resumed by the next
    /// leader), not ended; the JobMaster stops.
    Suspend {
        /// Why.
        why: String,
        /// Told once it is suspended: every event queued before this one was handled, so nothing
        /// of this leadership is recorded in the HA stores after it.
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// A client fetched the job's final result (a per-job cluster waits for that).
    ResultServed,
    /// The Dispatcher let the ended job go (`jobstore.max-capacity`, `jobstore.expiration-time`):
    /// its JobMaster stops.
    Retire,
}
