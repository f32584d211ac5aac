//! The cluster's checkpoint traffic: a task of its own ([`coordinate`]) triggers what is due and
//! times out what took too long; the TaskManagers' acknowledgements come in through
//! [`Cluster::checkpoint_event`]; with high availability a checkpoint counts once the
//! coordination service points to it ([`Cluster::checkpoint_recorded`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;
use weir_core::checkpointing::CheckpointEvent;
use weir_core::protocol::ToTaskManager;
use weir_core::{JobId, JobStatus};
use weir_runtime::checkpoint::coordinator::Command;

use crate::state::{Cluster, State, now_ms};

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
            CheckpointEvent::SourceEnded => cp.source_ended(),
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
