//! Task states with Flink's names (DEPLOYING, INITIALIZING, RUNNING, ...), as the REST API shows
//! them per vertex and per job.
//!
//! The JobManager hears from each TaskManager about its *part* of a job, so a task's state is its
//! part's: DEPLOYING once the part is sent, INITIALIZING once the TaskManager started it (its tasks
//! restore their state and open their readers), RUNNING once every task of the part has done so,
//! then the part's end. Subtask `s` of every operator runs in slot `s`, so the part that holds
//! slot `s` runs it.

use weir_core::JobStatus;

use crate::state::JobView;

/// The state of one task (one subtask of an operator), named as Flink names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Not placed yet (the job waits for slots, or restarts).
    Created,
    /// Sent to its TaskManager, which has not confirmed yet.
    Deploying,
    /// Started; restoring its state or opening its readers.
    Initializing,
    /// Processing records.
    Running,
    /// Ended with its input.
    Finished,
    /// Being stopped, because the job is cancelled or failing.
    Canceling,
    /// Stopped.
    Canceled,
    /// Failed.
    Failed,
}

impl TaskState {
    /// Every state, in the order of [`TaskCounts`].
    pub const ALL: [TaskState; 8] = [
        TaskState::Created,
        TaskState::Deploying,
        TaskState::Initializing,
        TaskState::Running,
        TaskState::Finished,
        TaskState::Canceling,
        TaskState::Canceled,
        TaskState::Failed,
    ];

    /// Flink's upper-case name, as in a vertex's `tasks` and `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Created => "CREATED",
            TaskState::Deploying => "DEPLOYING",
            TaskState::Initializing => "INITIALIZING",
            TaskState::Running => "RUNNING",
            TaskState::Finished => "FINISHED",
            TaskState::Canceling => "CANCELING",
            TaskState::Canceled => "CANCELED",
            TaskState::Failed => "FAILED",
        }
    }

    /// The lower-case key of a job's `tasks` counts.
    pub fn key(self) -> &'static str {
        match self {
            TaskState::Created => "created",
            TaskState::Deploying => "deploying",
            TaskState::Initializing => "initializing",
            TaskState::Running => "running",
            TaskState::Finished => "finished",
            TaskState::Canceling => "canceling",
            TaskState::Canceled => "canceled",
            TaskState::Failed => "failed",
        }
    }

    /// The state of every task of a job with no part to ask: all of them share the job's fate.
    fn of_job(status: JobStatus) -> TaskState {
        match status {
            JobStatus::Finished => TaskState::Finished,
            JobStatus::Canceled => TaskState::Canceled,
            JobStatus::Failed => TaskState::Failed,
            JobStatus::Cancelling | JobStatus::Failing => TaskState::Canceling,
            _ => TaskState::Created,
        }
    }

    /// The state of a task in a part that last reported `part`, in a job whose status is `job`.
    fn of_part(job: JobStatus, part: JobStatus) -> TaskState {
        match part {
            JobStatus::Finished => TaskState::Finished,
            JobStatus::Canceled => TaskState::Canceled,
            JobStatus::Failed => TaskState::Failed,
            _ if matches!(job, JobStatus::Cancelling | JobStatus::Failing | JobStatus::Restarting) => {
                TaskState::Canceling
            }
            JobStatus::Created => TaskState::Deploying,
            JobStatus::Initializing => TaskState::Initializing,
            _ => TaskState::Running,
        }
    }
}

/// How many tasks are in each state, in the order of [`TaskState::ALL`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts(pub [u32; 8]);

impl TaskCounts {
    /// The tasks in `state`.
    pub fn get(&self, state: TaskState) -> u32 {
        self.0[Self::index(state)]
    }

    fn add(&mut self, state: TaskState, n: u32) {
        self.0[Self::index(state)] += n;
    }

    fn index(state: TaskState) -> usize {
        TaskState::ALL.iter().position(|s| *s == state).unwrap_or(0)
    }

    /// All tasks counted.
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }

    /// The state that sums them up, as Flink's vertex `status`: every task's, when they agree;
    /// else the first of failed, canceling, canceled, running, initializing, deploying, created
    /// that any task is in (a vertex whose tasks all ended, some finished and some cancelled, is
    /// CANCELED).
    pub fn aggregate(&self) -> TaskState {
        if let Some(only) = TaskState::ALL.iter().find(|s| self.get(**s) == self.total()) {
            return *only;
        }
        [
            TaskState::Failed,
            TaskState::Canceling,
            TaskState::Canceled,
            TaskState::Running,
            TaskState::Initializing,
            TaskState::Deploying,
            TaskState::Created,
        ]
        .into_iter()
        .find(|s| self.get(*s) > 0)
        .unwrap_or(TaskState::Finished)
    }

    /// As a JSON object keyed by Flink's upper-case names (a vertex's `tasks`).
    pub fn by_name(&self) -> serde_json::Map<String, serde_json::Value> {
        TaskState::ALL.iter().map(|s| (s.as_str().to_string(), self.get(*s).into())).collect()
    }

    /// As a JSON object keyed by lower-case names with a `total` (a job's `tasks`).
    pub fn by_key(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m: serde_json::Map<String, serde_json::Value> =
            TaskState::ALL.iter().map(|s| (s.key().to_string(), self.get(*s).into())).collect();
        m.insert("total".into(), self.total().into());
        m
    }
}

/// Per vertex of the job's plan (in its order), how many of its subtasks are in each state.
pub fn per_vertex(job: &JobView) -> Vec<TaskCounts> {
    job.graph
        .plan
        .vertices
        .iter()
        .map(|v| {
            let mut counts = TaskCounts::default();
            if job.parts.is_empty() || job.status().is_terminal() {
                counts.add(TaskState::of_job(job.status()), v.parallelism);
                return counts;
            }
            let mut placed = 0;
            for part in &job.parts {
                let n = part.slots.iter().filter(|s| **s < v.parallelism).count() as u32;
                counts.add(TaskState::of_part(job.status(), part.status), n);
                placed += n;
            }
            // Subtasks no part holds cannot be; counted as not placed rather than dropped.
            counts.add(TaskState::Created, v.parallelism.saturating_sub(placed));
            counts
        })
        .collect()
}

/// The job's tasks: the subtasks of every chain of operators (Flink's job vertices), per state.
pub fn of_job(job: &JobView, per_vertex: &[TaskCounts]) -> TaskCounts {
    let heads = job.graph.plan.chain_heads();
    let mut all = TaskCounts::default();
    for ((v, head), counts) in job.graph.plan.vertices.iter().zip(&heads).zip(per_vertex) {
        if v.id == *head {
            for (sum, n) in all.0.iter_mut().zip(counts.0) {
                *sum += n;
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(TaskState, u32)]) -> TaskCounts {
        let mut c = TaskCounts::default();
        for (s, n) in pairs {
            c.add(*s, *n);
        }
        c
    }

    #[test]
    fn a_vertex_is_initializing_until_every_task_runs() {
        use TaskState::*;
        assert_eq!(counts(&[(Running, 3)]).aggregate(), Running);
        assert_eq!(counts(&[(Running, 2), (Initializing, 1)]).aggregate(), Running);
        assert_eq!(counts(&[(Initializing, 2), (Deploying, 1)]).aggregate(), Initializing);
        assert_eq!(counts(&[(Finished, 2), (Running, 1)]).aggregate(), Running);
        assert_eq!(counts(&[(Finished, 2), (Canceled, 1)]).aggregate(), Canceled);
        assert_eq!(counts(&[(Running, 2), (Failed, 1)]).aggregate(), Failed);
        assert_eq!(counts(&[]).aggregate(), Created);
    }

    #[test]
    fn a_part_still_reporting_while_the_job_winds_down_is_canceling() {
        use JobStatus as J;
        assert_eq!(TaskState::of_part(J::Running, J::Created), TaskState::Deploying);
        assert_eq!(TaskState::of_part(J::Running, J::Initializing), TaskState::Initializing);
        assert_eq!(TaskState::of_part(J::Running, J::Running), TaskState::Running);
        assert_eq!(TaskState::of_part(J::Failing, J::Running), TaskState::Canceling);
        assert_eq!(TaskState::of_part(J::Failing, J::Failed), TaskState::Failed);
        assert_eq!(TaskState::of_job(J::Restarting), TaskState::Created);
    }

    #[test]
    fn names_and_keys_match_flink() {
        let c = counts(&[(TaskState::Initializing, 2), (TaskState::Running, 1)]);
        assert_eq!(c.by_name().get("INITIALIZING"), Some(&serde_json::json!(2)));
        assert_eq!(c.by_key().get("running"), Some(&serde_json::json!(1)));
        assert_eq!(c.by_key().get("total"), Some(&serde_json::json!(3)));
    }
}
