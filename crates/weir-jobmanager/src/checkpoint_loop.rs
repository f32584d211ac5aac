//! The cluster's checkpoint traffic. Every job's checkpointing runs on a thread of its own
//! ([`crate::checkpoints::Checkpointing`]); this module feeds it and carries out what it asks:
//! [`coordinate`] ticks the jobs whose every part runs, and sends the triggers and completions
//! the threads answer with to the TaskManagers (or, with high availability, has a completed
//! checkpoint recorded first); the TaskManagers' reports come in through
//! [`Cluster::checkpoint_event`], the coordination service's records through
//! [`Cluster::checkpoint_recorded`]. The cluster's lock is only taken to look jobs up and to send,
//! never across storage I/O, which happens on the jobs' own threads.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use weir_core::checkpointing::CheckpointEvent;
use weir_core::protocol::ToTaskManager;
use weir_core::{JobId, JobStatus};
use weir_runtime::checkpoint::coordinator::Command;

use crate::checkpoints::{Input, Output};
use crate::state::{Cluster, State};

/// How often the jobs' checkpointing is ticked (checkpoint intervals are at least 10 ms).
const TICK: Duration = Duration::from_millis(5);

/// Sends `commands` to every part of run `attempt` of job `id`, if that is still its current run.
fn send(s: &State, id: JobId, attempt: u32, commands: Vec<Command>) {
    let Some(job) = s.jobs.get(&id) else { return };
    if job.deployments != attempt + 1 || job.status().is_terminal() {
        return;
    }
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
    /// A part of run `attempt` of job `id` reported a checkpoint event: it goes to the job's
    /// checkpointing if that run is the current one and runs.
    pub fn checkpoint_event(&self, id: JobId, attempt: u32, event: CheckpointEvent) {
        let s = self.lock();
        let Some(job) = s.jobs.get(&id) else { return };
        if job.status() != JobStatus::Running || job.deployments != attempt + 1 {
            return;
        }
        if let Some(cp) = &job.checkpoints {
            cp.send(Input::Part { attempt, event });
        }
    }

    /// Checkpoint `n` of job `id`, completed in run `attempt`, is recorded in the coordination
    /// service: its run (if still the current one) commits it, and older checkpoints beyond
    /// `num-retained` may go.
    pub fn checkpoint_recorded(&self, id: JobId, attempt: u32, n: u64) {
        let s = self.lock();
        if let Some(cp) = s.jobs.get(&id).and_then(|j| j.checkpoints.as_ref()) {
            cp.send(Input::Recorded { attempt, n });
        }
    }

    /// Carries out what a job's checkpointing asked for.
    fn checkpoint_output(&self, output: Output) {
        match output {
            Output::Send { job, attempt, commands } => send(&self.lock(), job, attempt, commands),
            Output::Record { job, attempt, n, location, retain, ids } => {
                if let Some(ha) = &self.ha {
                    ha.record(crate::ha::Event::Checkpoint { job, attempt, id: n, location, retain, ids });
                }
            }
            Output::RunEndHandled { .. } => crate::state::schedule(&mut self.lock()),
        }
    }
}

/// Ticks the checkpointing of every job whose parts all run, and carries out what the jobs'
/// checkpointing threads answer, until shutdown.
pub async fn coordinate(cluster: Arc<Cluster>, mut outputs: UnboundedReceiver<Output>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let s = cluster.lock();
                // Only runs whose every part is up take checkpoints (a part still starting would
                // miss the trigger).
                for job in s.jobs.values() {
                    let Some(cp) = &job.checkpoints else { continue };
                    if job.status() == JobStatus::Running
                        && !job.parts.is_empty()
                        && job.parts.iter().all(|p| p.status == JobStatus::Running)
                    {
                        cp.tick(job.deployments.saturating_sub(1));
                    }
                }
            }
            Some(output) = outputs.recv() => cluster.checkpoint_output(output),
            _ = cluster.shutdown_requested() => return,
        }
    }
}
