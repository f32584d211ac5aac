//! A job's lifecycle as a typed state machine: the statuses Flink's JobMaster moves a job through,
//! each a type holding what only that status has (when it started waiting for slots, when it was
//! deployed, when its restart is due, how it ended). A transition is a method that consumes its
//! state and returns the next one, so a transition that is not allowed does not compile: an ended
//! job has no method at all, a waiting job cannot finish, a restarting one cannot be deployed
//! before its delay is over.
//!
//! ```
//! use weir_jobmanager::lifecycle::{Outcome, Waiting};
//! let ended = Waiting::new().deploy().finish(0);
//! assert_eq!(ended.outcome, Outcome::Finished);
//! ```
//!
//! ```compile_fail,E0599
//! use weir_jobmanager::lifecycle::Waiting;
//! let ended = Waiting::new().cancel(0);
//! ended.deploy(); // an ended job is never deployed again
//! ```
//!
//! ```compile_fail,E0599
//! use weir_jobmanager::lifecycle::Waiting;
//! Waiting::new().finish(0); // a job finishes only once it ran
//! ```
//!
//! [`Lifecycle`] holds whichever state a job is in and names its [`JobStatus`] for REST. Events
//! (a part's report, a lost TaskManager, a cancel request) arrive whatever the state, so the
//! cluster matches on the current state and applies the transition that state allows, or ignores
//! the event ([`Lifecycle::end`] and its siblings say which).
//!
//! ```text
//!             deploy              finish
//!   Waiting ─────────▶ Deployed ─────────▶ Ended(Finished)
//!    ▲  │ cancel/fail    │ │ fail (no restart left) ─▶ Ended(Failed)
//!    │  └─▶ Ended        │ └ cancel ─▶ Cancelling ── stopped ─▶ Ended(Canceled)
//!    │ due               │ restart (delay > 0)          ├ fail ─▶ Ended(Failed)
//!    │                   │                              └ finish (first) ─▶ Ended(Finished)
//!    └──── Restarting ◀──┘ (delay 0: straight to Waiting)
//!              └ cancel ─▶ Ended(Canceled)
//!   every state but Ended ── suspend ─▶ Suspended (leadership lost; another JobManager resumes)
//! ```

use std::time::{Duration, Instant};

use weir_core::JobStatus;

/// Waiting for slots (CREATED): a new job, or one whose restart delay is over.
#[derive(Debug)]
pub struct Waiting {
    /// Since when (for `slot.request.timeout`).
    pub since: Instant,
}

/// Deployed on TaskManagers (RUNNING): its parts are starting or running.
#[derive(Debug)]
pub struct Deployed {
    /// When.
    pub at: Instant,
}

/// Cancellation asked for while deployed (CANCELLING): its parts are stopping.
#[derive(Debug)]
pub struct Cancelling {
    /// When the run being stopped was deployed.
    pub deployed_at: Instant,
}

/// Failed, waiting out the restart strategy's delay (RESTARTING).
#[derive(Debug)]
pub struct Restarting {
    /// When the delay is over.
    pub due: Instant,
}

/// Its JobManager lost leadership (SUSPENDED): the next leader resumes it; this JobManager never
/// will, and does not record it as ended.
#[derive(Debug)]
pub struct Suspended;

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every source ended and every record was processed.
    Finished,
    /// It failed, with no restart left (or none allowed).
    Failed,
    /// It was cancelled.
    Canceled,
}

impl Outcome {
    /// The terminal [`JobStatus`] it is.
    pub fn status(self) -> JobStatus {
        match self {
            Outcome::Finished => JobStatus::Finished,
            Outcome::Failed => JobStatus::Failed,
            Outcome::Canceled => JobStatus::Canceled,
        }
    }
}

/// Ended for good (FINISHED, FAILED or CANCELED): no transition leaves it.
#[derive(Debug)]
pub struct Ended {
    /// How.
    pub outcome: Outcome,
    /// When (ms since the epoch).
    pub end_ms: i64,
}

impl Waiting {
    /// A job starts waiting for slots now.
    pub fn new() -> Self {
        Waiting { since: Instant::now() }
    }

    /// Its slots were found and its parts deployed.
    pub fn deploy(self) -> Deployed {
        Deployed { at: Instant::now() }
    }

    /// Cancelled before it was deployed.
    pub fn cancel(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Canceled, end_ms: now_ms }
    }

    /// No slots came (`slot.request.timeout`, or the resource provider failed).
    pub fn fail(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Failed, end_ms: now_ms }
    }
}

impl Default for Waiting {
    fn default() -> Self {
        Waiting::new()
    }
}

impl Deployed {
    /// Every part finished.
    pub fn finish(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Finished, end_ms: now_ms }
    }

    /// A part failed and the restart strategy allows no restart (or the failure is final).
    pub fn fail(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Failed, end_ms: now_ms }
    }

    /// Cancellation asked for: the parts are told to stop.
    pub fn cancel(self) -> Cancelling {
        Cancelling { deployed_at: self.at }
    }

    /// A part failed and the restart strategy restarts the job after `delay`: it waits for slots
    /// at once when there is none.
    pub fn restart(self, delay: Duration) -> Lifecycle {
        if delay.is_zero() {
            Lifecycle::Waiting(Waiting::new())
        } else {
            Lifecycle::Restarting(Restarting { due: Instant::now() + delay })
        }
    }
}

impl Cancelling {
    /// Every part finished before the cancellation reached it.
    pub fn finish(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Finished, end_ms: now_ms }
    }

    /// Every part stopped (or its TaskManager was lost): cancelled as asked.
    pub fn stopped(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Canceled, end_ms: now_ms }
    }

    /// A part failed while stopping.
    pub fn fail(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Failed, end_ms: now_ms }
    }
}

impl Restarting {
    /// The delay is over: the job waits for slots again.
    pub fn due(self) -> Waiting {
        Waiting::new()
    }

    /// Cancelled while it waited to restart.
    pub fn cancel(self, now_ms: i64) -> Ended {
        Ended { outcome: Outcome::Canceled, end_ms: now_ms }
    }
}

/// A state a job can be suspended from: every one but [`Ended`] and [`Suspended`].
pub trait Live: Sized {
    /// The JobManager lost its leadership.
    fn suspend(self) -> Suspended {
        Suspended
    }
}

impl Live for Waiting {}
impl Live for Deployed {}
impl Live for Cancelling {}
impl Live for Restarting {}

/// The state a job is in.
#[derive(Debug)]
pub enum Lifecycle {
    /// See [`Waiting`].
    Waiting(Waiting),
    /// See [`Deployed`].
    Deployed(Deployed),
    /// See [`Cancelling`].
    Cancelling(Cancelling),
    /// See [`Restarting`].
    Restarting(Restarting),
    /// See [`Suspended`].
    Suspended(Suspended),
    /// See [`Ended`].
    Ended(Ended),
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle::Waiting(Waiting::new())
    }
}

impl Lifecycle {
    /// The job's status, as REST shows it.
    pub fn status(&self) -> JobStatus {
        match self {
            Lifecycle::Waiting(_) => JobStatus::Created,
            Lifecycle::Deployed(_) => JobStatus::Running,
            Lifecycle::Cancelling(_) => JobStatus::Cancelling,
            Lifecycle::Restarting(_) => JobStatus::Restarting,
            Lifecycle::Suspended(_) => JobStatus::Suspended,
            Lifecycle::Ended(e) => e.outcome.status(),
        }
    }

    /// Whether the job reached its end (for this JobManager: suspended counts, it never resumes).
    pub fn is_over(&self) -> bool {
        matches!(self, Lifecycle::Ended(_) | Lifecycle::Suspended(_))
    }

    /// Applies `step` to the current state, which it consumes; `step` gives the next state, or the
    /// current one back when the event does not apply to it. Returns whether the state changed
    /// (as `step` says).
    fn apply(&mut self, step: impl FnOnce(Lifecycle) -> (Lifecycle, bool)) -> bool {
        let current = std::mem::replace(self, Lifecycle::Suspended(Suspended));
        let (next, changed) = step(current);
        *self = next;
        changed
    }

    /// Ends the job with `outcome` at `now_ms` if its state allows that end; whether it did.
    pub fn end(&mut self, outcome: Outcome, now_ms: i64) -> bool {
        self.apply(|state| match (state, outcome) {
            (Lifecycle::Waiting(w), Outcome::Canceled) => (Lifecycle::Ended(w.cancel(now_ms)), true),
            (Lifecycle::Waiting(w), Outcome::Failed) => (Lifecycle::Ended(w.fail(now_ms)), true),
            (Lifecycle::Deployed(d), Outcome::Finished) => (Lifecycle::Ended(d.finish(now_ms)), true),
            (Lifecycle::Deployed(d), Outcome::Failed) => (Lifecycle::Ended(d.fail(now_ms)), true),
            (Lifecycle::Cancelling(c), Outcome::Canceled) => (Lifecycle::Ended(c.stopped(now_ms)), true),
            (Lifecycle::Cancelling(c), Outcome::Finished) => (Lifecycle::Ended(c.finish(now_ms)), true),
            (Lifecycle::Cancelling(c), Outcome::Failed) => (Lifecycle::Ended(c.fail(now_ms)), true),
            (Lifecycle::Restarting(r), Outcome::Canceled) => (Lifecycle::Ended(r.cancel(now_ms)), true),
            (other, _) => (other, false),
        })
    }

    /// A deployed job is told to stop (cancellation); whether it was deployed.
    pub fn cancel_deployed(&mut self) -> bool {
        self.apply(|state| match state {
            Lifecycle::Deployed(d) => (Lifecycle::Cancelling(d.cancel()), true),
            other => (other, false),
        })
    }

    /// A deployed job restarts after `delay`; whether it was deployed.
    pub fn restart(&mut self, delay: Duration) -> bool {
        self.apply(|state| match state {
            Lifecycle::Deployed(d) => (d.restart(delay), true),
            other => (other, false),
        })
    }

    /// A waiting job was deployed; whether it was waiting.
    pub fn deploy(&mut self) -> bool {
        self.apply(|state| match state {
            Lifecycle::Waiting(w) => (Lifecycle::Deployed(w.deploy()), true),
            other => (other, false),
        })
    }

    /// A restarting job whose delay is over at `now` waits for slots again; whether it did.
    pub fn restart_due(&mut self, now: Instant) -> bool {
        self.apply(|state| match state {
            Lifecycle::Restarting(r) if r.due <= now => (Lifecycle::Waiting(r.due()), true),
            other => (other, false),
        })
    }

    /// The JobManager lost its leadership; whether the job was live.
    pub fn suspend(&mut self) -> bool {
        self.apply(|state| match state {
            Lifecycle::Waiting(s) => (Lifecycle::Suspended(s.suspend()), true),
            Lifecycle::Deployed(s) => (Lifecycle::Suspended(s.suspend()), true),
            Lifecycle::Cancelling(s) => (Lifecycle::Suspended(s.suspend()), true),
            Lifecycle::Restarting(s) => (Lifecycle::Suspended(s.suspend()), true),
            other => (other, false),
        })
    }

    /// When the job started waiting for slots, while it waits.
    pub fn waiting_since(&self) -> Option<Instant> {
        match self {
            Lifecycle::Waiting(w) => Some(w.since),
            _ => None,
        }
    }

    /// When its current run was deployed, while it runs or stops.
    pub fn deployed_at(&self) -> Option<Instant> {
        match self {
            Lifecycle::Deployed(d) => Some(d.at),
            Lifecycle::Cancelling(c) => Some(c.deployed_at),
            _ => None,
        }
    }

    /// When its restart is due, while it waits for one.
    pub fn restart_due_at(&self) -> Option<Instant> {
        match self {
            Lifecycle::Restarting(r) => Some(r.due),
            _ => None,
        }
    }

    /// When it ended, once it has.
    pub fn end_ms(&self) -> Option<i64> {
        match self {
            Lifecycle::Ended(e) => Some(e.end_ms),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_of_the_lifecycle_shows_flinks_statuses() {
        let mut job = Lifecycle::default();
        assert_eq!(job.status(), JobStatus::Created);
        assert!(!job.end(Outcome::Finished, 1), "a waiting job cannot finish");
        assert!(job.deploy());
        assert_eq!(job.status(), JobStatus::Running);
        assert!(job.deployed_at().is_some());
        assert!(!job.deploy(), "a deployed job is not deployed again");
        // A failure with a delay: RESTARTING until it is due, then CREATED again.
        assert!(job.restart(Duration::from_secs(60)));
        assert_eq!(job.status(), JobStatus::Restarting);
        assert!(!job.restart_due(Instant::now()), "not before the delay");
        let due = job.restart_due_at().unwrap_or_else(Instant::now);
        assert!(job.restart_due(due));
        assert_eq!(job.status(), JobStatus::Created);
        // Without a delay a failure waits for slots at once.
        assert!(job.deploy() && job.restart(Duration::ZERO));
        assert_eq!(job.status(), JobStatus::Created);
        // Cancelled while deployed: CANCELLING, then CANCELED once the parts stopped.
        assert!(job.deploy() && job.cancel_deployed());
        assert_eq!(job.status(), JobStatus::Cancelling);
        assert!(!job.cancel_deployed(), "a second cancel changes nothing");
        assert!(job.end(Outcome::Canceled, 3));
        assert_eq!((job.status(), job.end_ms()), (JobStatus::Canceled, Some(3)));
        // Nothing leaves the end.
        assert!(!job.deploy() && !job.cancel_deployed() && !job.restart(Duration::ZERO) && !job.suspend());
        assert!(!job.end(Outcome::Failed, 4));
        assert_eq!(job.status(), JobStatus::Canceled);

        let mut finished = Lifecycle::default();
        assert!(finished.deploy() && finished.end(Outcome::Finished, 5));
        assert_eq!(finished.status(), JobStatus::Finished);
        // Every part finished before a cancellation reached it: FINISHED, as in Flink.
        let mut raced = Lifecycle::default();
        assert!(raced.deploy() && raced.cancel_deployed() && raced.end(Outcome::Finished, 6));
        assert_eq!(raced.status(), JobStatus::Finished);
        let mut suspended = Lifecycle::default();
        assert!(suspended.suspend() && suspended.is_over());
        assert_eq!(suspended.status(), JobStatus::Suspended);
        assert!(!suspended.deploy() && !suspended.end(Outcome::Canceled, 6), "a suspended job stays so here");
    }
}
