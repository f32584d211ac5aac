//! weir-metrics: the metric system.
//!
//! Metrics live in [`MetricGroup`]s, each with a *logical scope* (`jobmanager`, `taskmanager`,
//! `jobmanager.job`, `taskmanager.job.task`, `taskmanager.job.task.operator`) and *variables*
//! (`host`, `tm_id`, `job_id`, `task_name`, `subtask_index`...), as in Flink, so that a metric
//! has the name Flink gives it (`flink_taskmanager_job_task_operator_numRecordsIn` with labels
//! in Prometheus) and dashboards and alerts written for Flink keep working.
//!
//! Four kinds, as Flink's: a [`Counter`] (a count that only grows here), a gauge (a function read
//! when the metric is reported), a [`Meter`] (a counter's rate per second over the last minute,
//! Flink's `MeterView`) and a [`Histogram`] (statistics over a sliding window of values).
//!
//! Every group registers with a [`Registry`] (one per process: [`global`]), which reporters read
//! ([`Registry::samples`]). A group's metrics are reported until the group is dropped. Metrics of
//! other processes (a TaskManager's worker processes) join a registry as snapshots
//! ([`Registry::set_remote`]).
//!
//! Updating a metric is one relaxed atomic add on memory owned by the thread that updates it;
//! reading happens only when a reporter or the REST API asks.

mod group;
mod kinds;
pub mod process;
pub mod prometheus;
pub mod reporter;

pub use group::{Collector, MetricGroup, Registry, global};
pub use kinds::{Counter, Gauge, Histogram, Meter, Metric, TimeShare, VIEW_UPDATE_INTERVAL};
pub use weir_core::metric::{GroupSample, HistogramStats, Sample};

/// The name of this machine, for the `host` variable.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}
