//! The JobManager's supervisor: loses TaskManagers whose heartbeats stopped, makes due restarts
//! wait for slots again, asks the resource provider for the TaskManagers waiting jobs lack (and
//! stops idle ones), fails jobs that waited too long for slots, and ends a per-job cluster once
//! its job is done. What it decides about a job goes through [`JobEvent`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;
use weir_core::JobId;
use weir_core::protocol::ToTaskManager;

use crate::jobmaster::JobEvent;
use crate::schedule::schedule;
use crate::state::Cluster;

impl Cluster {
    /// Asks the resource provider for the TaskManagers waiting jobs lack, and stops the ones it
    /// started that sat idle for `resourcemanager.taskmanager-timeout`.
    async fn provide(&self) {
        let Some(provider) = self.provider.clone() else { return };
        let per_tm = self.config.slots.max(1);
        let idle_timeout = Duration::from_millis(self.config.taskmanager_timeout_ms);
        let (start, stop) = {
            let mut s = self.lock();
            // A TaskManager that did not register in time is not coming.
            s.pending.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
            let wanted: u32 = s.jobs.values().filter(|j| j.lifecycle.waiting_since().is_some()).map(|j| j.slots).sum();
            let free: u32 = s.taskmanagers.values().map(|t| t.slots - t.used).sum();
            let coming: u32 = s.pending.values().map(|(n, _)| *n).sum();
            let missing = wanted.saturating_sub(free + coming);
            let mut start = Vec::new();
            for _ in 0..missing.div_ceil(per_tm) {
                s.provided_count += 1;
                // With high availability, TaskManagers started by an earlier leader may register
                // here too: the ids name the JobManager that started them.
                let id = match &s.ha {
                    Some(ha) => format!("{}-taskmanager-{}-{}", provider.kind(), ha.me.id, s.provided_count),
                    None => format!("{}-taskmanager-{}", provider.kind(), s.provided_count),
                };
                s.pending.insert(id.clone(), (per_tm, Instant::now()));
                start.push(id);
            }
            let stop: Vec<String> = if wanted > 0 {
                Vec::new()
            } else {
                s.taskmanagers
                    .values()
                    .filter(|t| t.provided && t.idle_since.is_some_and(|i| i.elapsed() >= idle_timeout))
                    .map(|t| t.id.clone())
                    .collect()
            };
            for id in &stop {
                if let Some(t) = s.taskmanagers.remove(id) {
                    info!(taskmanager = %id, "stopping an idle TaskManager (resourcemanager.taskmanager-timeout)");
                    let _ = t.tx.send(ToTaskManager::Shutdown);
                }
            }
            (start, stop)
        };
        for id in start {
            if let Err(e) = provider.clone().start(id.clone(), per_tm, self.rpc_address.clone()).await {
                // Nothing will come: the waiting jobs fail now, with why.
                let mut s = self.lock();
                s.pending.remove(&id);
                let waiting: Vec<JobId> =
                    s.jobs.values().filter(|j| j.lifecycle.waiting_since().is_some()).map(|j| j.id).collect();
                for job in waiting {
                    let message = format!("no TaskManager for this job: {e}");
                    self.on_job(&mut s, job, JobEvent::NoSlots { message });
                }
                break;
            }
        }
        for id in stop {
            provider.clone().stop(id).await;
        }
    }
}

/// Runs until shutdown: loses TaskManagers whose heartbeats stopped, and fails jobs that waited
/// too long for slots.
pub async fn supervise(cluster: Arc<Cluster>) {
    let every = Duration::from_millis((cluster.config.heartbeat_interval_ms / 2).clamp(10, 1000));
    let timeout = Duration::from_millis(cluster.config.heartbeat_timeout_ms);
    let slot_timeout = Duration::from_millis(cluster.config.slot_request_timeout_ms);
    loop {
        // Sleep until the next tick, or the next restart if that comes first.
        let next_restart = {
            let s = cluster.lock();
            s.jobs.values().filter_map(|j| j.lifecycle.restart_due_at()).min()
        };
        let nap = next_restart.map(|at| at.saturating_duration_since(Instant::now()).min(every)).unwrap_or(every);
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = cluster.wake.notified() => {}
            _ = cluster.shutdown_requested() => return,
        }
        let silent: Vec<String> = {
            let s = cluster.lock();
            s.taskmanagers.values().filter(|t| t.last_heartbeat.elapsed() > timeout).map(|t| t.id.clone()).collect()
        };
        for id in silent {
            cluster.lose_taskmanager(
                &id,
                None,
                &format!("no heartbeat for {} ms (heartbeat.timeout)", timeout.as_millis()),
            );
        }
        {
            let mut s = cluster.lock();
            // Restarts whose delay is over wait for slots like new jobs.
            let now = Instant::now();
            let due: Vec<JobId> = s
                .jobs
                .values()
                .filter(|j| j.lifecycle.restart_due_at().is_some_and(|at| at <= now))
                .map(|j| j.id)
                .collect();
            for id in &due {
                cluster.on_job(&mut s, *id, JobEvent::RestartDue);
            }
            if !due.is_empty() {
                schedule(&mut s);
            }
        }
        cluster.provide().await;
        if cluster.per_job && cluster.per_job_done() {
            info!("the per-job cluster's job ended and its result was fetched (or nobody came for it): shutting down");
            cluster.request_shutdown();
            return;
        }
        let mut s = cluster.lock();
        let offered: u32 = s.taskmanagers.values().map(|t| t.slots).sum();
        let starved: Vec<(JobId, u32)> = s
            .jobs
            .values()
            .filter(|j| j.lifecycle.waiting_since().is_some_and(|since| since.elapsed() > slot_timeout))
            .map(|j| (j.id, j.slots))
            .collect();
        for (id, slots) in starved {
            let message = format!(
                "could not get {slots} slots within {} ms (slot.request.timeout); the largest TaskManager offers \
                 {} of {offered} slots in all: add TaskManagers or slots (taskmanager.numberOfTaskSlots), or lower \
                 the job's parallelism",
                slot_timeout.as_millis(),
                s.taskmanagers.values().map(|t| t.slots).max().unwrap_or(0),
            );
            cluster.on_job(&mut s, id, JobEvent::NoSlots { message });
        }
    }
}
