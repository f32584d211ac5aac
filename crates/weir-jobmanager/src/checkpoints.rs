//! The JobManager's side of checkpoints, per job: one coordinator for each job that takes
//! checkpoints, its savepoint requests, and what a restarted run restores from (the latest
//! completed checkpoint or, before there is one, the savepoint the job was started from).
//!
//! Each job's checkpointing runs on a thread of its own ([`Checkpointing::start`]), fed by one
//! queue of [`Input`]s and answering with [`Output`]s, because completing, failing or cleaning up
//! a checkpoint writes to storage, and storage may stall (an S3 endpoint that stops answering): the
//! JobMaster's loop never waits, nor an async thread blocks, while it does. What REST and the
//! scheduler read of it (statistics, savepoints, what the next run restores from) is published in
//! a [`View`] after every input. The job's JobMaster feeds it (`jobmaster.rs`); nothing here
//! reaches the cluster's state.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use weir_core::checkpointing::{CheckpointEvent, RestoreFrom};
use weir_core::config::JobConfig;
use weir_core::{Error, JobGraph, JobId, Result};
use weir_runtime::checkpoint::coordinator::{CheckpointStats, Command, Coordinator, SavepointRequest};
use weir_runtime::checkpoint::io::Coordinating;
use weir_runtime::checkpoint::storage::CheckpointStorage;
use weir_runtime::checkpoint::task::Restore;

/// A job's checkpointing.
pub struct JobCheckpoints {
    /// Its coordinator.
    pub coordinator: Coordinating,
    /// Source subtasks of the job.
    sources: usize,
    /// Sources of the current run that ended.
    ended: usize,
    /// The savepoint the job was started from.
    initial: Option<RestoreFrom>,
    /// Savepoints asked for through REST, by trigger id, and the ids of those in progress in the
    /// order they were asked for.
    savepoints: BTreeMap<String, SavepointStatus>,
    in_progress: std::collections::VecDeque<String>,
    /// Where savepoints go when a request names no directory.
    savepoint_dir: Option<String>,
    /// With high availability: completed checkpoints count once recorded in the service.
    pub recorded_first: bool,
}

/// Where a savepoint asked for through REST stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SavepointStatus {
    /// Not complete yet.
    InProgress,
    /// Written, at this location.
    Completed(String),
    /// Failed, and why.
    Failed(String),
}

impl JobCheckpoints {
    /// The checkpointing `config` asks for, for `graph` under `id`; `None` without checkpoints. A
    /// savepoint to start from is checked here, so that a wrong one is refused at submission.
    pub fn setup(graph: &JobGraph, config: &JobConfig, id: JobId) -> Result<Option<JobCheckpoints>> {
        let cp = config.checkpointing()?;
        if !cp.enabled() {
            if cp.restore_path.is_some() {
                return Err(Error::Config(
                    "the job restores from a snapshot (execution.savepoint.path) but takes no checkpoints; set \
                     execution.checkpointing.interval"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let storage = CheckpointStorage::open(&cp.dir())?;
        let savepoint_dir = cp.savepoint_dir.clone();
        let initial = match &cp.restore_path {
            Some(path) => {
                let from = weir_runtime::checkpoint::task::restore_from(path);
                let restore = Restore::open_from(&from)?;
                weir_runtime::checkpoint::check_claims(&restore, &graph.plan, cp.allow_non_restored)?;
                Some((from, restore.metadata.checkpoint_id, restore.describe()))
            }
            None => None,
        };
        let plan = &graph.plan;
        let sources = plan.source_subtasks();
        let mut coordinator = Coordinator::new(
            cp,
            id,
            graph.job_name.clone(),
            weir_runtime::checkpoint::operators_of(plan),
            weir_runtime::local::task_count(plan),
            storage.location().to_string(),
            initial.as_ref().map(|(_, n, _)| *n).unwrap_or(0),
        );
        coordinator.stats.restored = initial.as_ref().map(|(_, n, path)| (*n, path.clone()));
        Ok(Some(JobCheckpoints {
            coordinator: Coordinating::new(coordinator, storage),
            sources,
            ended: 0,
            initial: initial.map(|(f, _, _)| f),
            savepoints: BTreeMap::new(),
            in_progress: Default::default(),
            savepoint_dir,
            recorded_first: false,
        }))
    }

    /// A source subtask of the run ended; once every one has, the final checkpoint is asked for.
    fn source_ended(&mut self) {
        self.ended += 1;
        if self.ended >= self.sources {
            self.coordinator.core.request_final();
        }
    }

    fn collect(&mut self) {
        for (_, outcome) in self.coordinator.core.take_savepoints() {
            let Some(trigger) = self.in_progress.pop_front() else { continue };
            let status = match outcome {
                Ok(location) => SavepointStatus::Completed(location),
                Err(e) => SavepointStatus::Failed(e.to_string()),
            };
            self.savepoints.insert(trigger, status);
        }
    }

    /// What a new run of the job restores from: the latest completed checkpoint that is whole,
    /// else the savepoint the job started from. Reads storage.
    fn restore_for_run(&mut self) -> Option<RestoreFrom> {
        match self.coordinator.latest_intact().map(|c| (c.id, c.dir.clone())) {
            Some((n, dir)) => {
                let location = self.coordinator.storage().location().to_string();
                self.coordinator.core.stats.restored = Some((n, format!("{}/{dir}", location.trim_end_matches('/'))));
                Some(RestoreFrom { location, dir })
            }
            None => self.initial.clone(),
        }
    }

    /// The run ended (failure, restart, cancellation): its checkpoint in progress is abandoned.
    fn run_ended(&mut self, why: &str) {
        self.coordinator.abort(why);
        self.ended = 0;
        self.collect();
        // Savepoints asked for but not started cannot happen any more.
        for trigger in self.in_progress.drain(..) {
            self.savepoints.insert(trigger, SavepointStatus::Failed(format!("the job's run ended: {why}")));
        }
        self.coordinator.core.clear_savepoint_requests();
    }
}

/// What a job's checkpointing is told, in the order it happens.
#[derive(Debug)]
pub enum Input {
    /// A part of run `attempt` reported a checkpoint event (the caller checked the run is current).
    Part {
        /// The run.
        attempt: u32,
        /// What it reported.
        event: CheckpointEvent,
    },
    /// With high availability: checkpoint `n`, completed in run `attempt`, is recorded in the
    /// coordination service, so it counts.
    Recorded {
        /// The run.
        attempt: u32,
        /// The checkpoint.
        n: u64,
    },
    /// Time passed while every part of run `attempt` runs: trigger what is due, fail what took
    /// too long.
    Tick {
        /// The run.
        attempt: u32,
    },
    /// The current run ended: its checkpoint in progress is abandoned, and what the next run
    /// restores from is found (if one follows).
    RunEnded {
        /// Why, for the abandoned checkpoint's record.
        why: String,
        /// Whether another run follows (a restart, or a resumption elsewhere after a suspension);
        /// not after the job's end, whose statistics keep the restore its runs made.
        next_run: bool,
    },
    /// A savepoint was asked for (its trigger id is in the view already, as in progress).
    Savepoint {
        /// The id REST answers about it with.
        trigger: String,
        /// Its directory.
        target: String,
        /// The job stops with it.
        stop: bool,
        /// ... after the largest watermark.
        drain: bool,
    },
    /// A run could not read the snapshot it restored from (damaged data): the next run falls back
    /// to the retained checkpoint before it.
    Damaged {
        /// What the run restored from.
        restore: RestoreFrom,
    },
    /// With high availability: this JobManager leads the job anew; no checkpoint starts until
    /// ids are reserved for it.
    HoldIds,
    /// With high availability: checkpoint ids reserved for this leader.
    AllowIds(Range<u64>),
}

/// What a job's checkpointing asks of the cluster.
#[derive(Debug)]
pub enum Output {
    /// Send `commands` to every part of run `attempt` of `job`, if it is still the current run.
    Send {
        /// The run.
        attempt: u32,
        /// Triggers and completions.
        commands: Vec<Command>,
    },
    /// With high availability: record checkpoint `n` of run `attempt` in the coordination service
    /// before it counts.
    Record {
        /// The run.
        attempt: u32,
        /// The checkpoint.
        n: u64,
        /// Where it is.
        location: String,
        /// How many completed checkpoints are kept.
        retain: usize,
        /// The next id and the ids left in the reserved block.
        ids: (u64, Option<u64>),
    },
    /// The end of a run is handled: what the next run restores from is known, so a job that
    /// waits to run again may be scheduled.
    RunEndHandled,
}

/// What the rest of the JobManager reads of a job's checkpointing, as of its last input.
#[derive(Clone, Debug)]
pub struct View {
    /// Counts and history (REST `/checkpoints`).
    pub stats: CheckpointStats,
    /// Savepoints asked for through REST, by trigger id.
    pub savepoints: BTreeMap<String, SavepointStatus>,
    /// What the next run restores from.
    pub restore: Option<RestoreFrom>,
}

/// The handle on a job's checkpointing thread.
pub struct Checkpointing {
    job: JobId,
    /// `None` once the job ended for good: the thread handles what is queued and ends.
    tx: Mutex<Option<mpsc::Sender<Input>>>,
    view: Arc<Mutex<View>>,
    /// A tick is queued and not handled yet (ticks are not queued twice).
    tick_queued: Arc<AtomicBool>,
    /// A run's end is queued and not handled yet: no new run starts before it is, since what it
    /// restores from is not known until then.
    run_end_queued: Arc<AtomicBool>,
    /// Where savepoints go when a request names no directory.
    savepoint_dir: Option<String>,
}

impl std::fmt::Debug for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointing").field("job", &self.job).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Checkpointing {
    /// Starts the thread of job `job`'s checkpointing `cp`, which answers through `out` (to the
    /// job's JobMaster). The thread ends when the job ends ([`Checkpointing::close`]) or the handle
    /// is dropped.
    pub fn start(job: JobId, cp: JobCheckpoints, out: Answer) -> Result<Checkpointing> {
        let (tx, rx) = mpsc::channel();
        let view = Arc::new(Mutex::new(View {
            stats: cp.coordinator.core.stats.clone(),
            savepoints: BTreeMap::new(),
            restore: cp.initial.clone(),
        }));
        let handle = Checkpointing {
            job,
            tx: Mutex::new(Some(tx)),
            view: view.clone(),
            tick_queued: Arc::new(AtomicBool::new(false)),
            run_end_queued: Arc::new(AtomicBool::new(false)),
            savepoint_dir: cp.savepoint_dir.clone(),
        };
        let worker = Worker {
            cp,
            out,
            view,
            tick_queued: handle.tick_queued.clone(),
            run_end_queued: handle.run_end_queued.clone(),
        };
        std::thread::Builder::new()
            .name(format!("checkpoints {job}"))
            .spawn(move || worker.run(rx))
            .map_err(|e| Error::internal(format!("cannot start the checkpointing thread of job {job}: {e}")))?;
        Ok(handle)
    }

    /// Queues `input` (a thread that ended with its job drops it).
    pub fn send(&self, input: Input) {
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else { return };
        if matches!(input, Input::RunEnded { .. }) {
            self.run_end_queued.store(true, Ordering::SeqCst);
        }
        if tx.send(input).is_err() {
            self.run_end_queued.store(false, Ordering::SeqCst);
        }
    }

    /// Queues a tick for run `attempt`, unless one is queued already.
    pub fn tick(&self, attempt: u32) {
        if !self.tick_queued.swap(true, Ordering::SeqCst) {
            self.send(Input::Tick { attempt });
        }
    }

    /// The job ended for good: the thread handles what is queued, publishes its last view and
    /// ends (the view stays readable).
    pub fn close(&self) {
        lock(&self.tx).take();
    }

    /// The latest view.
    pub fn view(&self) -> View {
        lock(&self.view).clone()
    }

    /// Whether a run's end is still being handled (the next run waits for what it restores from).
    pub fn busy(&self) -> bool {
        self.run_end_queued.load(Ordering::SeqCst)
    }

    /// What the next run restores from.
    pub fn restore_for_run(&self) -> Option<RestoreFrom> {
        lock(&self.view).restore.clone()
    }

    /// How the savepoint with trigger id `trigger` stands.
    pub fn savepoint(&self, trigger: &str) -> Option<SavepointStatus> {
        lock(&self.view).savepoints.get(trigger).cloned()
    }

    /// Asks for a savepoint under `target` (else `execution.checkpointing.savepoint-dir`); `stop`:
    /// the job stops with it (`drain`: after the largest watermark). The trigger id to ask about
    /// it with: `trigger`, when the client chose one (Flink's `triggerId`; asking again with the
    /// same id is the same request, not a second savepoint), else a new one.
    pub fn request_savepoint(
        &self,
        target: Option<String>,
        stop: bool,
        drain: bool,
        trigger: Option<String>,
    ) -> Result<String> {
        if let Some(t) = &trigger {
            if t.len() != 32 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Config(format!("triggerId '{t}' is not 32 hexadecimal digits")));
            }
            if lock(&self.view).savepoints.contains_key(t) {
                return Ok(t.clone());
            }
        }
        let base = target.or_else(|| self.savepoint_dir.clone()).ok_or_else(|| {
            Error::Config(
                "no savepoint directory: give one (target-directory), or set execution.checkpointing.savepoint-dir"
                    .into(),
            )
        })?;
        let trigger = trigger.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let job = self.job.to_string();
        let target = format!("{}/savepoint-{}-{}", base.trim_end_matches('/'), &job[..6], &trigger[..12]);
        lock(&self.view).savepoints.insert(trigger.clone(), SavepointStatus::InProgress);
        self.send(Input::Savepoint { trigger: trigger.clone(), target, stop, drain });
        Ok(trigger)
    }
}

/// Where a job's checkpointing thread sends its [`Output`]s.
pub type Answer = Box<dyn Fn(Output) + Send>;

/// The thread that owns a job's checkpointing.
struct Worker {
    cp: JobCheckpoints,
    out: Answer,
    view: Arc<Mutex<View>>,
    tick_queued: Arc<AtomicBool>,
    run_end_queued: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Input>) {
        while let Ok(input) = rx.recv() {
            self.handle(input);
            self.cp.collect();
            let mut view = lock(&self.view);
            view.stats = self.cp.coordinator.core.stats.clone();
            view.savepoints.extend(self.cp.savepoints.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    /// Asks for completed checkpoint `n` to be recorded in the coordination service before it
    /// counts.
    fn record(&self, attempt: u32, n: u64) {
        let coordinating = &self.cp.coordinator;
        let core = &coordinating.core;
        if let Some(latest) = core.latest() {
            let root = coordinating.storage().location().trim_end_matches('/');
            (self.out)(Output::Record {
                attempt,
                n,
                location: format!("{root}/{}", latest.dir),
                retain: core.retained_count(),
                ids: core.ids_left(),
            });
        }
    }

    fn send(&self, attempt: u32, commands: Vec<Command>) {
        if !commands.is_empty() {
            (self.out)(Output::Send { attempt, commands });
        }
    }

    fn handle(&mut self, input: Input) {
        let now_ms = weir_core::clock::now_millis();
        match input {
            Input::Part { attempt, event } => match event {
                CheckpointEvent::Ack(ack) => {
                    let mut commands = self.cp.coordinator.ack(ack, now_ms);
                    // With high availability a checkpoint counts (and its output is committed) once
                    // the coordination service points to it, so that a new leader never restores
                    // an older one than was committed.
                    if self.cp.recorded_first {
                        commands.retain(|c| match c {
                            Command::Complete { id: n } => {
                                self.record(attempt, *n);
                                false
                            }
                            Command::Trigger { .. } => true,
                        });
                    }
                    self.send(attempt, commands);
                }
                CheckpointEvent::Decline { id: n, reason } => self.cp.coordinator.decline(n, reason),
                CheckpointEvent::SourceEnded => self.cp.source_ended(),
            },
            Input::Recorded { attempt, n } => {
                self.cp.coordinator.confirm(n);
                self.send(attempt, vec![Command::Complete { id: n }]);
            }
            Input::Tick { attempt } => {
                self.tick_queued.store(false, Ordering::SeqCst);
                let commands = self.cp.coordinator.poll(std::time::Instant::now(), now_ms);
                self.send(attempt, commands);
            }
            Input::RunEnded { why, next_run } => {
                self.cp.run_ended(&why);
                self.cp.ended = 0;
                if next_run {
                    let restore = self.cp.restore_for_run();
                    lock(&self.view).restore = restore;
                }
                self.run_end_queued.store(false, Ordering::SeqCst);
                (self.out)(Output::RunEndHandled);
            }
            Input::Savepoint { trigger, target, stop, drain } => {
                self.cp.coordinator.core.request_savepoint(SavepointRequest { target, stop, drain });
                self.cp.savepoints.insert(trigger.clone(), SavepointStatus::InProgress);
                self.cp.in_progress.push_back(trigger);
            }
            Input::Damaged { restore } => {
                let job = self.cp.coordinator.core.job_id();
                if self.cp.coordinator.core.forget(&restore.dir) {
                    tracing::warn!(job_id = %job, checkpoint = %restore.dir, "a run could not read this checkpoint; the next one restores from the one before");
                    // The run's end may have been handled first: what the next run restores from
                    // is found again.
                    let restore = self.cp.restore_for_run();
                    lock(&self.view).restore = restore;
                } else {
                    tracing::warn!(job_id = %job, checkpoint = %restore.dir, "a run could not read this checkpoint, and none before it is retained: runs keep restoring it (the restart strategy decides how often)");
                }
            }
            Input::HoldIds => {
                let core = &mut self.cp.coordinator.core;
                core.confirm_first();
                let (next, left) = core.ids_left();
                if left.is_none() {
                    core.allow_ids(next..next);
                }
            }
            Input::AllowIds(ids) => self.cp.coordinator.core.allow_ids(ids),
        }
    }
}
