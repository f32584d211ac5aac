//! The JobManager's side of checkpoints: one coordinator per job that takes checkpoints, driven by
//! a task of its own ([`coordinate`]); acknowledgements arrive through the TaskManagers
//! ([`crate::state::Cluster::checkpoint_event`]); a restarted run restores from the latest completed
//! checkpoint (or, before there is one, from the savepoint the job was started from).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;
use weir_core::checkpointing::{CheckpointEvent, RestoreFrom};
use weir_core::config::JobConfig;
use weir_core::protocol::ToTaskManager;
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};
use weir_runtime::checkpoint::coordinator::{Command, Coordinator, SavepointRequest};
use weir_runtime::checkpoint::storage::CheckpointStorage;
use weir_runtime::checkpoint::task::Restore;

use crate::state::{Cluster, State, now_ms};

/// A job's checkpointing.
pub struct JobCheckpoints {
    /// Its coordinator.
    pub coordinator: Coordinator,
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
            storage,
            initial.as_ref().map(|(_, n, _)| *n).unwrap_or(0),
        );
        coordinator.stats.restored = initial.as_ref().map(|(_, n, path)| (*n, path.clone()));
        Ok(Some(JobCheckpoints {
            coordinator,
            sources,
            ended: 0,
            initial: initial.map(|(f, _, _)| f),
            savepoints: BTreeMap::new(),
            in_progress: Default::default(),
            savepoint_dir,
        }))
    }

    /// Asks for a savepoint of job `id` under `target` (else `execution.checkpointing.savepoint-dir`);
    /// `stop`: the job stops with it (`drain`: after the largest watermark). The trigger id to ask
    /// about it with.
    pub fn request_savepoint(&mut self, id: JobId, target: Option<String>, stop: bool, drain: bool) -> Result<String> {
        let base = target.or_else(|| self.savepoint_dir.clone()).ok_or_else(|| {
            Error::Config(
                "no savepoint directory: give one (target-directory), or set execution.checkpointing.savepoint-dir"
                    .into(),
            )
        })?;
        let trigger = uuid::Uuid::new_v4().simple().to_string();
        let job = id.to_string();
        let target = format!("{}/savepoint-{}-{}", base.trim_end_matches('/'), &job[..6], &trigger[..12]);
        self.coordinator.request_savepoint(SavepointRequest { target, stop, drain });
        self.savepoints.insert(trigger.clone(), SavepointStatus::InProgress);
        self.in_progress.push_back(trigger.clone());
        Ok(trigger)
    }

    /// How the savepoint with trigger id `trigger` stands.
    pub fn savepoint(&self, trigger: &str) -> Option<&SavepointStatus> {
        self.savepoints.get(trigger)
    }

    /// Notes the outcomes of savepoints the coordinator finished.
    fn collect(&mut self) {
        for (_, outcome) in self.coordinator.take_savepoints() {
            let Some(trigger) = self.in_progress.pop_front() else { continue };
            let status = match outcome {
                Ok(location) => SavepointStatus::Completed(location),
                Err(e) => SavepointStatus::Failed(e.to_string()),
            };
            self.savepoints.insert(trigger, status);
        }
    }

    /// What a new run of the job restores from: the latest completed checkpoint, else the savepoint
    /// the job started from.
    pub fn restore_for_run(&mut self) -> Option<RestoreFrom> {
        self.ended = 0;
        match self.coordinator.latest_intact().map(|c| (c.id, c.dir.clone())) {
            Some((n, dir)) => {
                let location = self.coordinator.storage().location().to_string();
                self.coordinator.stats.restored = Some((n, format!("{}/{dir}", location.trim_end_matches('/'))));
                Some(RestoreFrom { location, dir })
            }
            None => self.initial.clone(),
        }
    }

    /// The run ended (failure, restart, cancellation): its checkpoint in progress is abandoned.
    pub fn run_ended(&mut self, why: &str) {
        self.coordinator.abort(why);
        self.ended = 0;
        self.collect();
        // Savepoints asked for but not started cannot happen any more.
        for trigger in self.in_progress.drain(..) {
            self.savepoints.insert(trigger, SavepointStatus::Failed(format!("the job's run ended: {why}")));
        }
        self.coordinator.clear_savepoint_requests();
    }
}

/// Sends `commands` of job `id` to every part of its current run.
fn send(s: &State, id: JobId, commands: Vec<Command>) {
    let Some(job) = s.jobs.get(&id) else { return };
    let attempt = job.deployments.saturating_sub(1);
    for cmd in commands {
        let m = match cmd {
            Command::Trigger { id: n, last, drain } => {
                ToTaskManager::TriggerCheckpoint { job_id: id, attempt, id: n, last, drain }
            }
            Command::Complete { id: n } => ToTaskManager::CheckpointComplete { job_id: id, attempt, id: n },
        };
        for part in &job.parts {
            if let Some(t) = s.taskmanagers.get(&part.taskmanager) {
                let _ = t.tx.send(m.clone());
            }
        }
    }
}

impl Cluster {
    /// A part reported a checkpoint event.
    pub fn checkpoint_event(&self, id: JobId, attempt: u32, event: CheckpointEvent) {
        let mut s = self.lock();
        let Some(job) = s.jobs.get_mut(&id) else { return };
        if job.status != JobStatus::Running || job.deployments != attempt + 1 {
            return;
        }
        let Some(cp) = job.checkpoints.as_mut() else { return };
        let mut commands = Vec::new();
        match event {
            CheckpointEvent::Ack(ack) => match cp.coordinator.ack(ack, now_ms()) {
                // With high availability a checkpoint counts (and its output is committed) once the
                // coordination service points to it, so that a new leader never restores an older
                // one than was committed.
                Ok(Some(Command::Complete { id: n })) if self.ha.is_some() => {
                    let location = cp
                        .coordinator
                        .latest()
                        .map(|l| format!("{}/{}", cp.coordinator.storage().location().trim_end_matches('/'), l.dir));
                    if let (Some(location), Some(ha)) = (location, &self.ha) {
                        ha.record(crate::ha::Event::Checkpoint {
                            job: id,
                            attempt,
                            id: n,
                            location,
                            retain: cp.coordinator.retained_count(),
                            ids: cp.coordinator.ids_left(),
                        });
                    }
                }
                Ok(c) => commands.extend(c),
                Err(e) => warn!(job_id = %id, error = %e, "cannot complete a checkpoint"),
            },
            CheckpointEvent::Decline { id: n, reason } => cp.coordinator.decline(n, reason),
            CheckpointEvent::SourceEnded => {
                cp.ended += 1;
                if cp.ended >= cp.sources {
                    cp.coordinator.request_final();
                }
            }
        }
        cp.collect();
        send(&s, id, commands);
    }
}

impl Cluster {
    /// Checkpoint `n` of job `id` is recorded in the coordination service: its run (if still the
    /// same) commits it, and older checkpoints beyond `num-retained` may go.
    pub fn checkpoint_recorded(&self, id: JobId, attempt: u32, n: u64) {
        let mut s = self.lock();
        let Some(job) = s.jobs.get_mut(&id) else { return };
        let same_run = job.deployments == attempt + 1 && !job.status.is_terminal();
        let Some(cp) = job.checkpoints.as_mut() else { return };
        cp.coordinator.confirm(n);
        if same_run {
            send(&s, id, vec![Command::Complete { id: n }]);
        }
    }
}

/// Triggers the checkpoints that are due, and fails those that took too long, until shutdown.
pub async fn coordinate(cluster: Arc<Cluster>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = cluster.shutdown_requested() => return,
        }
        let mut s = cluster.lock();
        // Only runs whose every part is up take checkpoints (a part still starting would miss the
        // trigger).
        let due: Vec<JobId> = s
            .jobs
            .values()
            .filter(|j| {
                j.status == JobStatus::Running
                    && j.checkpoints.is_some()
                    && !j.parts.is_empty()
                    && j.parts.iter().all(|p| p.status == JobStatus::Running)
            })
            .map(|j| j.id)
            .collect();
        for id in due {
            let command = s.jobs.get_mut(&id).and_then(|j| j.checkpoints.as_mut()).and_then(|cp| {
                let c = cp.coordinator.poll(Instant::now(), now_ms());
                cp.collect();
                c
            });
            if let Some(c) = command {
                send(&s, id, vec![c]);
            }
        }
    }
}
