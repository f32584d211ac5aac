//! The JobMaster's side of the JobManager: every change to a job's course (deployed, reported on,
//! cancelled, failed and restarted, finished, suspended) is one [`JobEvent`], handled by
//! [`Cluster::on_job`] on the cluster state under its lock. The job's status moves only through its
//! typed [`Lifecycle`]; slots are released and parts cancelled here, in one place.
//!
//! The events come from REST (cancel), the TaskManagers' reports (`rpc.rs`), the loss of a
//! TaskManager, the supervisor (restarts that are due, jobs that waited too long for slots, a
//! resource provider that cannot start TaskManagers) and the loss of leadership (`leader.rs`).
//! Storage and network I/O never happen here: checkpointing has a thread per job
//! (`checkpoints.rs`), and messages to TaskManagers are queued to their connections.

use std::time::{Duration, Instant};

use tracing::{info, warn};
use weir_core::protocol::{ToJobManager, ToTaskManager};
use weir_core::result::JobResult;
use weir_core::{Error, JobId, JobStatus, Result};

use crate::lifecycle::{Lifecycle, Outcome};
use crate::schedule::schedule;
use crate::state::{Cluster, State, now_ms};

/// Something that changes a job's course.
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
    },
    /// A TaskManager that runs a part of the job was lost.
    TaskManagerLost {
        /// What happened, for the job's exceptions.
        message: String,
    },
    /// The restart strategy's delay is over: the job waits for slots again.
    RestartDue,
    /// No slots will come: `slot.request.timeout` passed, or the resource provider cannot start
    /// TaskManagers. The job fails.
    NoSlots {
        /// Why.
        message: String,
    },
    /// This JobManager lost its leadership: the job is suspended here (and resumed by the next
    /// leader), not ended.
    Suspend {
        /// Why.
        why: String,
    },
}

impl Cluster {
    /// Applies `event` to job `id` (a job this cluster does not know: nothing happens).
    pub fn on_job(&self, s: &mut State, id: JobId, event: JobEvent) {
        let Some(job) = s.jobs.get_mut(&id) else { return };
        match event {
            JobEvent::Cancel => {
                // Deployed: its parts are told to stop, and it is CANCELED once they have. Waiting
                // for slots or a restart: CANCELED at once. Being cancelled already, or over:
                // nothing to do (a second cancel must not free slots its parts still hold).
                match job.lifecycle {
                    Lifecycle::Deployed(_) => {
                        job.transition(Lifecycle::cancel_deployed);
                        cancel_parts(s, id);
                    }
                    Lifecycle::Waiting(_) | Lifecycle::Restarting(_) => finish(s, id, Outcome::Canceled, None, None),
                    Lifecycle::Cancelling(_) | Lifecycle::Suspended(_) | Lifecycle::Ended(_) => {}
                }
            }
            JobEvent::PartReport { taskmanager, attempt, status, error, result, retryable } => {
                self.part_reported(s, id, &taskmanager, attempt, (status, error, result, retryable));
            }
            JobEvent::TaskManagerLost { message } => {
                if matches!(job.lifecycle, Lifecycle::Cancelling(_)) {
                    finish(s, id, Outcome::Canceled, Some(message), None);
                } else {
                    self.fail(s, id, message, true);
                }
            }
            JobEvent::RestartDue => {
                job.transition(|l| l.restart_due(Instant::now()));
            }
            JobEvent::NoSlots { message } => finish(s, id, Outcome::Failed, Some(message), None),
            JobEvent::Suspend { why } => suspend(s, id, &why),
        }
    }

    /// Cancels a job: waiting jobs at once, running ones through their TaskManagers.
    pub fn cancel(&self, id: JobId) -> Result<()> {
        let mut s = self.lock();
        if !s.jobs.contains_key(&id) {
            return Err(Error::Config(format!("job {id} is not known to this cluster; see `weir list`")));
        }
        self.on_job(&mut s, id, JobEvent::Cancel);
        Ok(())
    }

    /// A TaskManager reported on its part of a job: a status (a [`JobEvent::PartReport`]), or
    /// progress, which updates the part's counters.
    pub fn part_report(&self, tm: &str, report: ToJobManager) {
        let mut s = self.lock();
        match report {
            ToJobManager::JobState { job_id, attempt, status, error, result, retryable } => {
                let event =
                    JobEvent::PartReport { taskmanager: tm.to_string(), attempt, status, error, result, retryable };
                self.on_job(&mut s, job_id, event);
            }
            ToJobManager::Progress { job_id, attempt, counts } => {
                if let Some(job) = s.jobs.get_mut(&job_id).filter(|j| j.deployments == attempt + 1)
                    && let Some(part) = job.parts.iter_mut().find(|p| p.taskmanager == tm)
                {
                    part.progress = counts;
                }
            }
            _ => {}
        }
    }

    /// A part's status: the job finishes when every part has; one failing part fails the whole run
    /// (the others are cancelled) and the restart strategy decides what comes next.
    fn part_reported(
        &self,
        s: &mut State,
        id: JobId,
        tm: &str,
        attempt: u32,
        (status, error, result, retryable): (JobStatus, Option<String>, Option<JobResult>, bool),
    ) {
        let Some(job) = s.jobs.get_mut(&id) else { return };
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
                info!(job_id = %id, attempt, since_deployed_ms, "every task of the job runs");
            }
            JobStatus::Failed => {
                let message = error.unwrap_or_else(|| "failed without a message".into());
                self.fail(s, id, message, retryable);
                schedule(s);
            }
            JobStatus::Finished if job.parts.iter().all(|p| p.status == JobStatus::Finished) => {
                // (Also while being cancelled: every part finished before the cancel reached it.)
                let merged = JobResult::merge(job.parts.iter_mut().filter_map(|p| p.result.take()).collect());
                finish(s, id, Outcome::Finished, None, merged);
                schedule(s);
            }
            // Cancelled as asked: the job is CANCELED once every part has stopped, however each
            // stopped (some may have finished first).
            JobStatus::Canceled | JobStatus::Finished if matches!(job.lifecycle, Lifecycle::Cancelling(_)) => {
                let all_stopped = job.parts.iter().all(|p| p.status.is_terminal());
                if all_stopped {
                    finish(s, id, Outcome::Canceled, None, None);
                    schedule(s);
                }
            }
            JobStatus::Canceled => {
                let message = format!("its part on TaskManager {tm} was cancelled there");
                self.fail(s, id, message, true);
                schedule(s);
            }
            _ => {}
        }
    }

    /// A TaskManager is gone: its jobs fail (or end, when they were being cancelled) and its slots
    /// disappear. With `session`, only if that registration is still the current one.
    pub fn lose_taskmanager(&self, id: &str, session: Option<u64>, why: &str) {
        let mut s = self.lock();
        match s.taskmanagers.get(id) {
            Some(t) if session.is_none_or(|x| x == t.session) => {}
            _ => return,
        }
        let Some(tm) = s.taskmanagers.remove(id) else { return };
        if self.is_shutting_down() {
            info!(taskmanager = id, reason = why, "TaskManager stopped with the cluster");
        } else {
            warn!(taskmanager = id, host = %tm.host, reason = why, "TaskManager lost");
        }
        for job in tm.jobs {
            let message = format!("TaskManager {id} ({}, pid {}) was lost: {why}", tm.host, tm.pid);
            self.on_job(&mut s, job, JobEvent::TaskManagerLost { message });
        }
        schedule(&mut s);
    }

    /// A job failed: restart it after the strategy's delay, or let it fail for good.
    fn fail(&self, s: &mut State, id: JobId, message: String, retryable: bool) {
        let now = now_ms();
        let Some(job) = s.jobs.get_mut(&id) else { return };
        // Only a deployed job restarts (one being cancelled fails for good).
        let delay = if retryable && matches!(job.lifecycle, Lifecycle::Deployed(_)) {
            self.restart.next_delay(now, &job.failures, job.restarts, job.last_delay_ms)
        } else {
            None
        };
        let Some(delay) = delay else {
            finish(s, id, Outcome::Failed, Some(message), None);
            return;
        };
        job.exceptions.push((now, message));
        job.failures.push(now);
        job.restarts += 1;
        job.last_delay_ms = delay;
        // No delay: it waits for slots right away (the caller schedules); else RESTARTING until due.
        job.transition(|l| l.restart(Duration::from_millis(delay)));
        if delay > 0 {
            self.wake.notify_one();
        }
        if let Some(cp) = &job.checkpoints {
            cp.send(crate::checkpoints::Input::RunEnded { why: "the job failed and restarts".into() });
        }
        info!(job_id = %id, delay_ms = delay, restarts = job.restarts, "job failed; restarting");
        cancel_parts(s, id);
        release(s, id);
    }
}

/// Ends a job with `outcome`, if its state allows that end, and frees its slots.
pub(crate) fn finish(s: &mut State, id: JobId, outcome: Outcome, error: Option<String>, result: Option<JobResult>) {
    let now = now_ms();
    let Some(job) = s.jobs.get_mut(&id) else { return };
    let from = job.status();
    if !job.transition(|l| l.end(outcome, now)) {
        if !from.is_terminal() {
            warn!(job_id = %id, status = %from, outcome = ?outcome, "a job's end that its status does not allow, ignored");
        }
        return;
    }
    let status = outcome.status();
    if let Some(e) = error {
        job.exceptions.push((now, e));
    }
    job.result = result;
    if let Some(cp) = &job.checkpoints {
        cp.send(crate::checkpoints::Input::RunEnded { why: "the job ended".into() });
        cp.close();
    }
    info!(job_id = %id, status = %status, "job reached a terminal status");
    if outcome != Outcome::Finished {
        cancel_parts(s, id);
    }
    release(s, id);
    if let Some(ha) = &s.ha {
        let job = s.jobs.get(&id);
        let error = job.and_then(|j| j.exceptions.last()).map(|(_, e)| e.clone());
        let result = job.and_then(|j| j.result.clone()).map(Box::new);
        ha.record(crate::ha::Event::Ended { job: id, status, error, result });
    }
}

/// Suspends a job (its JobManager lost its leadership): its parts are cancelled, its slots freed,
/// and it is not recorded as ended, so that the next leader recovers it.
pub(crate) fn suspend(s: &mut State, id: JobId, why: &str) {
    let Some(job) = s.jobs.get_mut(&id) else { return };
    if !job.transition(Lifecycle::suspend) {
        return;
    }
    if let Some(cp) = &job.checkpoints {
        cp.send(crate::checkpoints::Input::RunEnded { why: why.to_string() });
    }
    warn!(job_id = %id, why, "job suspended");
    cancel_parts(s, id);
    release(s, id);
}

/// Asks every part of a job that has not ended to stop.
fn cancel_parts(s: &State, id: JobId) {
    let Some(job) = s.jobs.get(&id) else { return };
    for part in job.parts.iter().filter(|p| !p.status.is_terminal()) {
        if let Some(t) = s.taskmanagers.get(&part.taskmanager) {
            let _ = t.tx.send(ToTaskManager::Cancel { job_id: id });
        }
    }
}

/// Frees a job's slots.
fn release(s: &mut State, id: JobId) {
    let Some(job) = s.jobs.get_mut(&id) else { return };
    for part in std::mem::take(&mut job.parts) {
        if let Some(t) = s.taskmanagers.get_mut(&part.taskmanager) {
            t.used = t.used.saturating_sub(part.slots.len() as u32);
            t.jobs.remove(&id);
            if t.used == 0 {
                t.idle_since = Some(Instant::now());
            }
        }
    }
}
