//! The JobManager's metrics, with Flink's names: the `jobmanager` group (TaskManagers, slots,
//! running jobs, the process's figures) and one `jobmanager.job` group per job (uptime, restarts,
//! checkpoints), and the reporters that serve them.

use std::sync::{Arc, Weak};

use weir_core::JobStatus;
use weir_core::metric::{GroupSample, Sample};
use weir_metrics::reporter::Reporters;
use weir_metrics::{Collector, MetricGroup};

use crate::cluster::Cluster;
use crate::state::{JobView, now_ms};

/// What keeps the JobManager's metrics reported: its group, the per-job collector and the
/// reporters, for as long as the JobManager lives.
pub struct JobManagerMetrics {
    /// The `jobmanager` group.
    pub group: MetricGroup,
    _jobs: Arc<Collector>,
    /// The reporters (the Prometheus endpoint).
    pub reporters: Reporters,
}

impl JobManagerMetrics {
    /// Registers the JobManager's metrics, reading `cluster` when they are reported, and starts
    /// the configured reporters.
    pub fn start(cluster: &Arc<Cluster>) -> weir_core::Result<JobManagerMetrics> {
        let host = weir_metrics::hostname();
        let registry = weir_metrics::global();
        let group = registry.group("jobmanager", vec![("host".into(), host.clone())]);
        weir_metrics::process::register(&group);
        let read = |f: fn(&Cluster) -> f64| {
            let weak: Weak<Cluster> = Arc::downgrade(cluster);
            move || weak.upgrade().map(|c| f(&c)).unwrap_or(f64::NAN)
        };
        group.gauge("numRegisteredTaskManagers", read(|c| c.taskmanagers().len() as f64));
        group.gauge("taskSlotsTotal", read(|c| c.taskmanagers().values().map(|t| f64::from(t.slots)).sum()));
        group.gauge(
            "taskSlotsAvailable",
            read(|c| c.taskmanagers().values().map(|t| f64::from(t.slots.saturating_sub(t.used))).sum()),
        );
        group.gauge(
            "numRunningJobs",
            read(|c| c.jobs().iter().filter(|j| j.status() == JobStatus::Running).count() as f64),
        );
        let weak = Arc::downgrade(cluster);
        let jobs = registry.collect(move || match weak.upgrade() {
            Some(c) => c.jobs().iter().map(|j| job_group(j, &host)).collect(),
            None => Vec::new(),
        });
        let reporters = Reporters::start(&cluster.config.metrics, registry)?;
        Ok(JobManagerMetrics { group, _jobs: jobs, reporters })
    }
}

/// Job `j`'s `jobmanager.job` group, as Flink's JobManager reports it.
pub fn job_group(j: &JobView, host: &str) -> GroupSample {
    let now = now_ms();
    let status = j.status();
    let since = (now - j.modified_ms).max(0) as f64;
    // Flink: -1 once the job ended, 0 while not in the state measured.
    let (uptime, downtime) = match status {
        s if s.is_terminal() => (-1.0, -1.0),
        JobStatus::Running => (since, 0.0),
        JobStatus::Failing | JobStatus::Restarting => (0.0, since),
        _ => (0.0, 0.0),
    };
    let mut metrics = vec![
        ("uptime".to_string(), Sample::Number(uptime)),
        ("downtime".to_string(), Sample::Number(downtime)),
        ("numRestarts".to_string(), Sample::Number(f64::from(j.restarts))),
    ];
    if let Some(cp) = &j.checkpoints {
        let stats = cp.view().stats;
        let last = stats.history.iter().find(|h| h.status == "COMPLETED");
        let in_progress = stats.history.iter().filter(|h| h.status == "IN_PROGRESS").count();
        let n = |v: f64| Sample::Number(v);
        metrics.extend([
            ("totalNumberOfCheckpoints".to_string(), n(stats.triggered as f64)),
            ("numberOfCompletedCheckpoints".to_string(), n(stats.completed as f64)),
            ("numberOfFailedCheckpoints".to_string(), n(stats.failed as f64)),
            ("numberOfInProgressCheckpoints".to_string(), n(in_progress as f64)),
            ("lastCheckpointDuration".to_string(), n(last.map(|l| l.end_to_end_duration as f64).unwrap_or(-1.0))),
            ("lastCheckpointSize".to_string(), n(last.map(|l| l.checkpointed_size as f64).unwrap_or(-1.0))),
            ("lastCheckpointFullSize".to_string(), n(last.map(|l| l.state_size as f64).unwrap_or(-1.0))),
            ("lastCompletedCheckpointId".to_string(), n(last.map(|l| l.id as f64).unwrap_or(-1.0))),
        ]);
    }
    GroupSample {
        scope: "jobmanager.job".into(),
        vars: vec![
            ("host".into(), host.to_string()),
            ("job_id".into(), j.id.to_string()),
            ("job_name".into(), j.graph.job_name.clone()),
        ],
        metrics,
    }
}
