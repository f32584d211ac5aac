//! The JobManager's side of checkpoints: one coordinator per job that takes checkpoints, driven by
//! a task of its own ([`coordinate`]); acknowledgements arrive through the TaskManagers
//! ([`crate::state::Cluster::checkpoint_event`]); a restarted run restores from the latest completed
//! checkpoint (or, before there is one, from the savepoint the job was started from).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;
use weir_core::checkpointing::{CheckpointConfig, CheckpointEvent, RestoreFrom};
use weir_core::protocol::ToTaskManager;
use weir_core::{Error, JobGraph, JobId, JobStatus, Result};
use weir_runtime::checkpoint::coordinator::{Command, Coordinator};
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
}

impl JobCheckpoints {
    /// The checkpointing `config` asks for, for `graph` under `id`; `None` without checkpoints. A
    /// savepoint to start from is checked here, so that a wrong one is refused at submission.
    pub fn setup(graph: &JobGraph, config: &BTreeMap<String, String>, id: JobId) -> Result<Option<JobCheckpoints>> {
        let cp = CheckpointConfig::from_map(config)?;
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
        let initial = match &cp.restore_path {
            Some(path) => {
                let from = RestoreFrom { location: path.clone(), dir: String::new() };
                let restore = Restore::open_from(&from)?;
                weir_runtime::checkpoint::check_claims(&restore, &graph.plan, cp.allow_non_restored)?;
                Some((from, restore.metadata.checkpoint_id, restore.describe()))
            }
            None => None,
        };
        let plan = &graph.plan;
        let targets: std::collections::BTreeSet<u32> = plan.edges.iter().map(|e| e.target.0).collect();
        let sources = plan.vertices.iter().filter(|v| !targets.contains(&v.id.0)).map(|v| v.parallelism as usize).sum();
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
        Ok(Some(JobCheckpoints { coordinator, sources, ended: 0, initial: initial.map(|(f, _, _)| f) }))
    }

    /// What a new run of the job restores from: the latest completed checkpoint, else the savepoint
    /// the job started from.
    pub fn restore_for_run(&mut self) -> Option<RestoreFrom> {
        self.ended = 0;
        match self.coordinator.latest().map(|c| (c.id, c.dir.clone())) {
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
    }
}

/// Sends `commands` of job `id` to every part of its current run.
fn send(s: &State, id: JobId, commands: Vec<Command>) {
    let Some(job) = s.jobs.get(&id) else { return };
    let attempt = job.deployments.saturating_sub(1);
    for cmd in commands {
        let m = match cmd {
            Command::Trigger { id: n, last } => ToTaskManager::TriggerCheckpoint { job_id: id, attempt, id: n, last },
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
        send(&s, id, commands);
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
            let command = s
                .jobs
                .get_mut(&id)
                .and_then(|j| j.checkpoints.as_mut())
                .and_then(|cp| cp.coordinator.poll(Instant::now(), now_ms()));
            if let Some(c) = command {
                send(&s, id, vec![c]);
            }
        }
    }
}
