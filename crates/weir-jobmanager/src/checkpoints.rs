//! The JobManager's side of checkpoints, per job: one coordinator for each job that takes
//! checkpoints, its savepoint requests, and what a restarted run restores from (the latest
//! completed checkpoint or, before there is one, the savepoint the job was started from). The
//! cluster feeds it in `checkpoint_loop.rs`; nothing here reaches the cluster's state.

use std::collections::BTreeMap;

use weir_core::checkpointing::RestoreFrom;
use weir_core::config::JobConfig;
use weir_core::{Error, JobGraph, JobId, Result};
use weir_runtime::checkpoint::coordinator::{Coordinator, SavepointRequest};
use weir_runtime::checkpoint::storage::CheckpointStorage;
use weir_runtime::checkpoint::task::Restore;

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
    /// A source subtask of the run ended; once every one has, the final checkpoint is asked for.
    pub fn source_ended(&mut self) {
        self.ended += 1;
        if self.ended >= self.sources {
            self.coordinator.request_final();
        }
    }

    pub(crate) fn collect(&mut self) {
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
