//! The JobMaster: one loop per job, owning the job (its [`Job`] record, the links to the
//! TaskManagers of its current run) and fed by one inbox of [`JobEvent`]s. Every change to the
//! job's course (deployed, reported on, cancelled, failed and restarted, finished, suspended)
//! happens here, and the job's status moves only through its typed [`Lifecycle`]. After every
//! event it publishes a [`JobView`] that REST and the clients read without waiting for it.
//!
//! The events come from REST (cancel), the TaskManagers' reports (`rpc.rs`), the ResourceManager
//! (slots granted, none to be had, a TaskManager lost), the job's checkpointing thread and the
//! Dispatcher (suspension). Two timers are its own: a restart that is due, and the checkpoint
//! tick. Storage and network I/O never happen here: checkpointing has a thread per job
//! (`checkpoints.rs`), HA writes go to the leader's recorder (`leader.rs`), and messages to
//! TaskManagers are queued to their connections.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};
use weir_core::protocol::{Assignment, Deployment, ToTaskManager};
use weir_core::result::JobResult;
use weir_core::{JobId, JobStatus};
use weir_runtime::checkpoint::coordinator::Command;

use crate::checkpoints::{Input, Output};
use crate::cluster::Cluster;
use crate::events::{Grant, JobEvent, ResourceEvent};
use crate::lifecycle::{Lifecycle, Outcome};
use crate::state::{Job, JobView, Part, now_ms};

/// How often a running job's checkpointing is ticked (checkpoint intervals are at least 10 ms).
const CHECKPOINT_TICK: Duration = Duration::from_millis(5);

/// Tells each JobMaster apart from an earlier one of the same job (after a leadership change), so
/// that the ResourceManager never frees a newer one's slots for an older one.
static HOLDERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// One job's master.
pub(crate) struct JobMaster {
    cluster: Arc<Cluster>,
    job: Job,
    holder: u64,
    /// Its own inbox, for the ResourceManager to answer a slot request through.
    me: mpsc::UnboundedSender<JobEvent>,
    published: watch::Sender<Arc<JobView>>,
    /// The TaskManagers of the current run.
    links: BTreeMap<String, mpsc::UnboundedSender<ToTaskManager>>,
    /// Slots are asked for and not granted (nor refused) yet.
    requested: bool,
    /// What the current run restored from.
    restored_from: Option<weir_core::checkpointing::RestoreFrom>,
    /// The run that ended last: its attempt, TaskManagers and what it restored from (its parts
    /// may still report how they failed).
    previous: Option<(u32, Vec<String>, Option<weir_core::checkpointing::RestoreFrom>)>,
}

impl JobMaster {
    /// The master of `job`.
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        job: Job,
        me: mpsc::UnboundedSender<JobEvent>,
        published: watch::Sender<Arc<JobView>>,
    ) -> JobMaster {
        let holder = HOLDERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        JobMaster {
            cluster,
            job,
            holder,
            me,
            published,
            links: BTreeMap::new(),
            requested: false,
            restored_from: None,
            previous: None,
        }
    }

    /// Runs until the job is suspended or the cluster shuts down (an ended job's master stays, to
    /// hear that its result was fetched).
    pub(crate) async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<JobEvent>) {
        let mut ticker = tokio::time::interval(CHECKPOINT_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let checkpoints = self.job.checkpoints.is_some();
        self.request_slots();
        loop {
            let restart_at = self.job.lifecycle.restart_due_at();
            tokio::select! {
                event = inbox.recv() => {
                    let Some(event) = event else { return };
                    if matches!(event, JobEvent::Retire) && self.job.status().is_terminal() {
                        return;
                    }
                    if let JobEvent::Suspend { why, done } = event {
                        self.suspend(&why);
                        self.published.send_replace(Arc::new(self.job.view()));
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                    self.on_event(event);
                }
                _ = sleep_until(restart_at), if restart_at.is_some() => {
                    self.job.transition(|l| l.restart_due(Instant::now()));
                }
                _ = ticker.tick(), if checkpoints && !self.job.status().is_terminal() => {
                    self.tick_checkpoints();
                    // Nothing to publish: a tick changes only what the checkpointing thread shows.
                    continue;
                }
                _ = self.cluster.shutdown_requested() => return,
            }
            self.request_slots();
            self.published.send_replace(Arc::new(self.job.view()));
        }
    }

    /// Applies `event`.
    fn on_event(&mut self, event: JobEvent) {
        match event {
            JobEvent::Cancel => {
                // Deployed: its parts are told to stop, and it is CANCELED once they have. Waiting
                // for slots or a restart: CANCELED at once. Being cancelled already, or over:
                // nothing to do (a second cancel must not free slots its parts still hold).
                match self.job.lifecycle {
                    Lifecycle::Deployed(_) => {
                        self.job.transition(Lifecycle::cancel_deployed);
                        self.cancel_parts();
                    }
                    Lifecycle::Waiting(_) | Lifecycle::Restarting(_) => self.finish(Outcome::Canceled, None, None),
                    Lifecycle::Cancelling(_) | Lifecycle::Suspended(_) | Lifecycle::Ended(_) => {}
                }
            }
            JobEvent::PartReport { taskmanager, attempt, status, error, result, retryable, damaged } => {
                // Damaged data in a part of this run, or of the one that just ended (another part
                // may have failed it first): the snapshot it restored from is taken to be at fault.
                let restoring = damaged && status == JobStatus::Failed && self.restore_of(&taskmanager, attempt);
                if let Some(restore) = restoring.then(|| self.restore_used(attempt)).flatten() {
                    self.restored_damaged(restore);
                }
                // A run whose snapshot was damaged may succeed from the one before.
                let retryable = retryable || restoring;
                self.part_reported(&taskmanager, attempt, (status, error, result, retryable));
            }
            JobEvent::Progress { taskmanager, attempt, counts, metrics } => {
                if self.job.deployments == attempt + 1
                    && let Some(part) = self.job.parts.iter_mut().find(|p| p.taskmanager == taskmanager)
                {
                    part.progress = counts;
                    part.metrics = metrics;
                }
            }
            JobEvent::Checkpoint { taskmanager, attempt, event } => {
                // Only from the current run, and from a TaskManager that runs a part of it: an
                // acknowledgement from elsewhere would complete a checkpoint (and commit
                // exactly-once output) the job's own tasks never took.
                if self.job.status() == JobStatus::Running
                    && self.speaks_for_current_run(&taskmanager, attempt)
                    && let Some(cp) = &self.job.checkpoints
                {
                    cp.send(Input::Part { attempt, event });
                }
            }
            JobEvent::Checkpointing(output) => self.checkpointing(output),
            JobEvent::SlotsGranted { grants } => self.deploy(grants),
            JobEvent::TaskManagerLost { taskmanager, message } => {
                // The ResourceManager may tell of a TaskManager of a run that ended meanwhile.
                if !self.job.parts.iter().any(|p| p.taskmanager == taskmanager) {
                    return;
                }
                if matches!(self.job.lifecycle, Lifecycle::Cancelling(_)) {
                    self.finish(Outcome::Canceled, Some(message), None);
                } else {
                    self.fail(message, true);
                }
            }
            JobEvent::NoSlots { message } => {
                self.requested = false;
                if self.job.lifecycle.waiting_since().is_some() {
                    self.finish(Outcome::Failed, Some(message), None);
                }
            }
            JobEvent::Suspend { why, .. } => self.suspend(&why),
            // Handled by the loop (the JobMaster of an ended job stops); a live job stays.
            JobEvent::Retire => {}
            JobEvent::ResultServed => {
                if self.job.status().is_terminal() {
                    self.job.result_served = true;
                }
            }
        }
    }

    /// Whether a report from `taskmanager` about run `attempt` is about the current run and comes
    /// from a TaskManager the run was deployed to.
    fn speaks_for_current_run(&self, taskmanager: &str, attempt: u32) -> bool {
        self.job.deployments == attempt + 1 && self.job.parts.iter().any(|p| p.taskmanager == taskmanager)
    }

    /// A part of the current run could not read the snapshot it restored from: the job's
    /// checkpointing forgets that checkpoint (before it hears of the run's end), so the next run
    /// restores from the one before.
    fn restored_damaged(&self, restore: weir_core::checkpointing::RestoreFrom) {
        if let Some(cp) = &self.job.checkpoints {
            warn!(job_id = %self.job.id, location = %restore.location, dir = %restore.dir, "the run could not read the snapshot it restored from");
            cp.send(Input::Damaged { restore });
        }
    }

    /// Whether `taskmanager` ran a part of run `attempt`: the current run, or the one that just
    /// ended (another part may have failed it first). (Keyed state is read from the snapshot as
    /// the tasks run, so a part may report damaged data after it reported RUNNING.)
    fn restore_of(&self, taskmanager: &str, attempt: u32) -> bool {
        let current = self.speaks_for_current_run(taskmanager, attempt);
        let previous =
            self.previous.as_ref().is_some_and(|(a, tms, _)| *a == attempt && tms.iter().any(|t| t == taskmanager));
        current || previous
    }

    /// What run `attempt` restored from.
    fn restore_used(&self, attempt: u32) -> Option<weir_core::checkpointing::RestoreFrom> {
        if self.job.deployments == attempt + 1 && !self.job.parts.is_empty() {
            return self.restored_from.clone();
        }
        self.previous.as_ref().filter(|(a, _, _)| *a == attempt).and_then(|(_, _, r)| r.clone())
    }

    /// Asks the ResourceManager for slots when the job waits for them and knows what it restores
    /// from (its checkpointing may still be handling the end of the previous run).
    fn request_slots(&mut self) {
        let waiting = self.job.lifecycle.waiting_since().is_some();
        let busy = self.job.checkpoints.as_ref().is_some_and(|c| c.busy());
        if waiting && !busy && !self.requested {
            self.requested = true;
            let _ = self.cluster.resources.send(ResourceEvent::RequestSlots {
                job: self.job.id,
                holder: self.holder,
                slots: self.job.slots,
                master: self.me.clone(),
            });
        }
    }

    /// Slots were granted: every part is deployed with the addresses of the others.
    fn deploy(&mut self, grants: Vec<Grant>) {
        self.requested = false;
        let id = self.job.id;
        if self.job.lifecycle.waiting_since().is_none() {
            // Cancelled (or suspended) while the grant was on its way.
            self.release();
            return;
        }
        let mut parts = Vec::with_capacity(grants.len());
        let mut addresses = Vec::with_capacity(grants.len());
        let mut slot_parts = Vec::with_capacity(self.job.slots as usize);
        for (k, grant) in grants.iter().enumerate() {
            let first = slot_parts.len() as u32;
            slot_parts.extend(std::iter::repeat_n(k as u32, grant.slots as usize));
            addresses.push(grant.data_address.clone());
            parts.push(Part {
                taskmanager: grant.taskmanager.clone(),
                slots: (first..first + grant.slots).collect(),
                status: JobStatus::Created,
                result: None,
                progress: Vec::new(),
                metrics: Vec::new(),
            });
        }
        let attempt = self.job.deployments;
        self.job.deployments += 1;
        let restore = self.job.checkpoints.as_ref().and_then(|cp| cp.restore_for_run());
        self.restored_from = restore.clone();
        // Each part gets a key of its own for its data connections; every part learns only the
        // others' digests, so no process but the one deployed as a part can send as it.
        let keys: Vec<Vec<u8>> = (0..grants.len()).map(|_| run_key()).collect();
        let digests: Vec<Vec<u8>> = keys.iter().map(|k| sha2::Sha256::digest(k).to_vec()).collect();
        for (k, grant) in grants.into_iter().enumerate() {
            let assignment = Assignment {
                attempt,
                part: k as u32,
                slot_parts: slot_parts.clone(),
                part_addresses: addresses.clone(),
                send_key: keys[k].clone(),
                sender_digests: digests.clone(),
                taskmanager: grant.taskmanager.clone(),
            };
            let deploy = ToTaskManager::Deploy(Box::new(Deployment {
                job_id: id,
                graph: Box::new((*self.job.graph).clone()),
                config: (*self.job.config).clone(),
                assignment,
                cached_files: (*self.job.cached_files).clone(),
                restore: restore.clone(),
            }));
            // A TaskManager whose connection just closed is being lost; that fails this run.
            let _ = grant.tx.send(deploy);
            self.links.insert(grant.taskmanager, grant.tx);
        }
        let names: Vec<&str> = parts.iter().map(|p| p.taskmanager.as_str()).collect();
        info!(job_id = %id, attempt, slots = self.job.slots, taskmanagers = ?names, "job deployed");
        self.job.parts = parts;
        self.job.transition(Lifecycle::deploy);
    }

    /// A part's status: the job finishes when every part has; one failing part fails the whole run
    /// (the others are cancelled) and the restart strategy decides what comes next.
    fn part_reported(
        &mut self,
        tm: &str,
        attempt: u32,
        (status, error, result, retryable): (JobStatus, Option<String>, Option<JobResult>, bool),
    ) {
        let job = &mut self.job;
        // Reports of an earlier run, or of a job already decided, change nothing.
        if job.status().is_terminal() || job.deployments != attempt + 1 {
            return;
        }
        let Some(part) = job.parts.iter_mut().find(|p| p.taskmanager == tm) else { return };
        // A part goes INITIALIZING, RUNNING, then to its end; never back.
        if part.status.is_terminal() || (status == JobStatus::Initializing && part.status == JobStatus::Running) {
            return;
        }
        part.status = status;
        if status == JobStatus::Finished {
            part.result = result;
        }
        match status {
            JobStatus::Running if job.parts.iter().all(|p| p.status == JobStatus::Running) => {
                let since_deployed_ms = job.lifecycle.deployed_at().map(|t| t.elapsed().as_millis() as u64);
                info!(job_id = %job.id, attempt, since_deployed_ms, "every task of the job runs");
            }
            JobStatus::Failed => {
                let message = error.unwrap_or_else(|| "failed without a message".into());
                self.fail(message, retryable);
            }
            JobStatus::Finished if job.parts.iter().all(|p| p.status == JobStatus::Finished) => {
                // (Also while being cancelled: every part finished before the cancel reached it.)
                let merged = JobResult::merge(job.parts.iter_mut().filter_map(|p| p.result.take()).collect());
                self.finish(Outcome::Finished, None, merged);
            }
            // Cancelled as asked: the job is CANCELED once every part has stopped, however each
            // stopped (some may have finished first).
            JobStatus::Canceled | JobStatus::Finished if matches!(job.lifecycle, Lifecycle::Cancelling(_)) => {
                // (Not a guard of the arm: a part cancelled while others run is no failure here.)
                let all_stopped = job.parts.iter().all(|p| p.status.is_terminal());
                if all_stopped {
                    self.finish(Outcome::Canceled, None, None);
                }
            }
            JobStatus::Canceled => {
                let message = format!("its part on TaskManager {tm} was cancelled there");
                self.fail(message, true);
            }
            _ => {}
        }
    }

    /// The job failed: restart it after the strategy's delay, or let it fail for good.
    fn fail(&mut self, message: String, retryable: bool) {
        let now = now_ms();
        let job = &mut self.job;
        // Only a deployed job restarts (one being cancelled fails for good).
        let delay = if retryable && matches!(job.lifecycle, Lifecycle::Deployed(_)) {
            self.cluster.restart.next_delay(now, &job.failures, job.restarts, job.last_delay_ms)
        } else {
            None
        };
        let Some(delay) = delay else {
            self.finish(Outcome::Failed, Some(message), None);
            return;
        };
        job.note_failure(now, message, self.cluster.config.exception_history);
        job.failures.push(now);
        job.restarts += 1;
        job.last_delay_ms = delay;
        // No delay: it waits for slots right away; else RESTARTING until due.
        job.transition(|l| l.restart(Duration::from_millis(delay)));
        if let Some(cp) = &job.checkpoints {
            cp.send(Input::RunEnded { why: "the job failed and restarts".into(), next_run: true });
        }
        info!(job_id = %job.id, delay_ms = delay, restarts = job.restarts, "job failed; restarting");
        self.cancel_parts();
        self.release();
    }

    /// Ends the job with `outcome`, if its state allows that end, and frees its slots.
    fn finish(&mut self, outcome: Outcome, error: Option<String>, result: Option<JobResult>) {
        let now = now_ms();
        let job = &mut self.job;
        let from = job.status();
        if !job.transition(|l| l.end(outcome, now)) {
            if !from.is_terminal() {
                warn!(job_id = %job.id, status = %from, outcome = ?outcome, "a job's end that its status does not allow, ignored");
            }
            return;
        }
        let status = outcome.status();
        if let Some(e) = error {
            job.note_failure(now, e, self.cluster.config.exception_history);
        }
        job.result = result.map(Arc::new);
        if let Some(cp) = &job.checkpoints {
            cp.send(Input::RunEnded { why: "the job ended".into(), next_run: false });
            cp.close();
        }
        info!(job_id = %job.id, status = %status, "job reached a terminal status");
        if let Some(ha) = &self.cluster.ha {
            let error = job.exceptions.last().map(|(_, e)| e.clone());
            let result = job.result.as_deref().cloned().map(Box::new);
            ha.record(crate::ha::Event::Ended { job: job.id, status, error, result });
        }
        if outcome != Outcome::Finished {
            self.cancel_parts();
        }
        self.release();
    }

    /// Suspends the job (its JobManager lost its leadership): its parts are cancelled, its slots
    /// freed, and it is not recorded as ended, so that the next leader recovers it.
    fn suspend(&mut self, why: &str) {
        if !self.job.transition(Lifecycle::suspend) {
            return;
        }
        if let Some(cp) = &self.job.checkpoints {
            cp.send(Input::RunEnded { why: why.to_string(), next_run: false });
        }
        warn!(job_id = %self.job.id, why, "job suspended");
        self.cancel_parts();
        self.release();
    }

    /// Asks every part of the job that has not ended to stop.
    fn cancel_parts(&self) {
        let id = self.job.id;
        for part in self.job.parts.iter().filter(|p| !p.status.is_terminal()) {
            if let Some(tx) = self.links.get(&part.taskmanager) {
                let _ = tx.send(ToTaskManager::Cancel { job_id: id });
            }
        }
    }

    /// Frees the job's slots (and forgets a slot request not answered yet).
    fn release(&mut self) {
        if !self.job.parts.is_empty() {
            let attempt = self.job.deployments.saturating_sub(1);
            self.previous = Some((attempt, self.job.taskmanagers_now(), self.restored_from.take()));
        }
        self.job.parts.clear();
        self.links.clear();
        self.requested = false;
        let _ = self.cluster.resources.send(ResourceEvent::Release { job: self.job.id, holder: self.holder });
    }

    /// Ticks the checkpointing of the current run once every part of it runs (a part still
    /// starting would miss the trigger).
    fn tick_checkpoints(&self) {
        let job = &self.job;
        let Some(cp) = &job.checkpoints else { return };
        if job.status() == JobStatus::Running
            && !job.parts.is_empty()
            && job.parts.iter().all(|p| p.status == JobStatus::Running)
        {
            cp.tick(job.deployments.saturating_sub(1));
        }
    }

    /// Carries out what the job's checkpointing asked for.
    fn checkpointing(&mut self, output: Output) {
        match output {
            Output::Send { attempt, commands } => {
                if self.job.deployments != attempt + 1 || self.job.status().is_terminal() {
                    return;
                }
                let id = self.job.id;
                for cmd in commands {
                    let m = match cmd {
                        Command::Trigger { id: n, last, drain } => {
                            ToTaskManager::TriggerCheckpoint { job_id: id, attempt, id: n, last, drain }
                        }
                        Command::Complete { id: n } => ToTaskManager::CheckpointComplete { job_id: id, attempt, id: n },
                    };
                    for part in &self.job.parts {
                        if let Some(tx) = self.links.get(&part.taskmanager) {
                            let _ = tx.send(m.clone());
                        }
                    }
                }
            }
            Output::Record { attempt, n, location, retain, ids } => {
                if let Some(ha) = &self.cluster.ha {
                    let job = self.job.id;
                    ha.record(crate::ha::Event::Checkpoint { job, attempt, id: n, location, retain, ids });
                }
            }
            // What the next run restores from is known: a job waiting to run again asks for slots
            // (after this event).
            Output::RunEndHandled => {}
        }
    }
}

/// Sleeps until `at` (never, without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Cluster {
    /// Checkpoint `n` of job `id`, completed in run `attempt`, is recorded in the coordination
    /// service: its run (if still the current one) commits it, and older checkpoints beyond
    /// `num-retained` may go.
    pub fn checkpoint_recorded(&self, id: JobId, attempt: u32, n: u64) {
        if let Some(cp) = self.job(id).and_then(|j| j.checkpoints.clone()) {
            cp.send(Input::Recorded { attempt, n });
        }
    }
}

/// A random 32-byte key (from the operating system; two random UUIDs where it gives none).
fn run_key() -> Vec<u8> {
    match weir_security::random_key() {
        Ok(k) => k.to_vec(),
        Err(_) => [uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat(),
    }
}

#[cfg(test)]
mod tests {
    use weir_core::config::{ClusterConfig, JobConfig};
    use weir_core::{ArtifactDigest, JobGraph};

    use super::*;
    use crate::cluster::fixture;

    /// A job of one slot that takes no checkpoints, waiting for its first run.
    fn job() -> Job {
        let plan = weir_core::plan::Plan::default();
        let graph = JobGraph {
            format_version: weir_core::graph::JOB_GRAPH_FORMAT_VERSION,
            artifact: ArtifactDigest("sha256:0".into()),
            job_name: "test".into(),
            args: serde_json::Value::Null,
            fingerprint: plan.fingerprint(),
            plan,
        };
        Job::new(JobId::random(), graph, JobConfig::default(), Default::default(), None)
    }

    /// A master of `job()`, and what it sent the ResourceManager.
    fn master(dir: &std::path::Path) -> (JobMaster, mpsc::UnboundedReceiver<ResourceEvent>) {
        let (cluster, loops) = fixture::cluster(ClusterConfig::default(), dir);
        let job = job();
        let (me, _inbox) = mpsc::unbounded_channel();
        let (published, _) = watch::channel(Arc::new(job.view()));
        (JobMaster::new(cluster, job, me, published), loops.resources)
    }

    fn grant(tm: &str) -> (Grant, mpsc::UnboundedReceiver<ToTaskManager>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Grant { taskmanager: tm.into(), slots: 1, tx, data_address: format!("{tm}:1") }, rx)
    }

    fn sent(rm: &mut mpsc::UnboundedReceiver<ResourceEvent>) -> Vec<&'static str> {
        std::iter::from_fn(|| rm.try_recv().ok())
            .map(|e| match e {
                ResourceEvent::RequestSlots { .. } => "request",
                ResourceEvent::Release { .. } => "release",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn slots_granted_after_a_cancel_are_handed_back_and_nothing_is_deployed() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut jm, mut rm) = master(dir.path());
        jm.request_slots();
        jm.request_slots();
        assert_eq!(sent(&mut rm), vec!["request"], "one request at a time");
        jm.on_event(JobEvent::Cancel);
        assert_eq!(jm.job.status(), JobStatus::Canceled);
        let (g, mut tm) = grant("a");
        jm.on_event(JobEvent::SlotsGranted { grants: vec![g] });
        assert_eq!(sent(&mut rm), vec!["release", "release"]);
        assert!(tm.try_recv().is_err(), "nothing was deployed");
        assert_eq!(jm.job.deployments, 0);
    }

    #[test]
    fn a_run_is_deployed_followed_and_finished_and_reports_of_other_runs_change_nothing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut jm, mut rm) = master(dir.path());
        jm.request_slots();
        let (g, mut tm) = grant("a");
        jm.on_event(JobEvent::SlotsGranted { grants: vec![g] });
        assert!(matches!(tm.try_recv(), Ok(ToTaskManager::Deploy(d)) if d.assignment.attempt == 0));
        assert_eq!(jm.job.status(), JobStatus::Running);
        // A TaskManager lost that runs none of this run's parts.
        jm.on_event(JobEvent::TaskManagerLost { taskmanager: "b".into(), message: "gone".into() });
        // A report of another run.
        let report = |attempt, status| JobEvent::PartReport {
            taskmanager: "a".into(),
            attempt,
            status,
            error: Some("boom".into()),
            result: None,
            retryable: false,
            damaged: false,
        };
        jm.on_event(report(3, JobStatus::Failed));
        assert_eq!(jm.job.status(), JobStatus::Running);
        assert!(jm.job.exceptions.is_empty());
        jm.on_event(report(0, JobStatus::Running));
        jm.on_event(report(0, JobStatus::Failed));
        assert_eq!(jm.job.status(), JobStatus::Failed, "not retryable: no restart");
        assert_eq!(jm.job.exceptions.last().map(|(_, e)| e.as_str()), Some("boom"));
        assert_eq!(sent(&mut rm), vec!["request", "release"]);
        assert!(jm.job.parts.is_empty() && jm.links.is_empty(), "the TaskManager's connection is let go");
    }

    #[test]
    fn a_job_keeps_its_latest_failures_only() {
        let mut job = job();
        for i in 0..20 {
            job.note_failure(i, format!("failure {i}"), 16);
        }
        assert_eq!(job.exceptions.len(), 16);
        assert_eq!(job.exceptions.first().map(|(t, _)| *t), Some(4));
        assert_eq!(job.exceptions.last().map(|(_, e)| e.as_str()), Some("failure 19"));
    }

    #[test]
    fn only_the_taskmanagers_of_the_current_run_speak_for_it() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (mut jm, _rm) = master(dir.path());
        assert!(!jm.speaks_for_current_run("a", 0), "nothing is deployed yet");
        let (g, _tm) = grant("a");
        jm.on_event(JobEvent::SlotsGranted { grants: vec![g] });
        assert!(jm.speaks_for_current_run("a", 0));
        assert!(!jm.speaks_for_current_run("b", 0), "a TaskManager the run was not deployed to");
        assert!(!jm.speaks_for_current_run("a", 1), "a run that is not the current one");
    }
}
