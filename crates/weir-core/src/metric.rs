//! Metric values as they are reported and sent between processes (the metric system itself is
//! the `weir-metrics` crate).

use serde::{Deserialize, Serialize};

/// The value of one metric at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Sample {
    /// A counter, gauge, meter or time share.
    Number(f64),
    /// A histogram's statistics.
    Histogram(HistogramStats),
}

impl Sample {
    /// The value as one number: a histogram's mean.
    pub fn number(&self) -> f64 {
        match self {
            Sample::Number(n) => *n,
            Sample::Histogram(h) => h.mean,
        }
    }
}

/// A histogram's statistics over its window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramStats {
    /// Values recorded in all (not only in the window).
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest value in the window.
    pub min: i64,
    /// The largest.
    pub max: i64,
    /// The mean of the window.
    pub mean: f64,
    /// Its standard deviation.
    pub stddev: f64,
    /// The median.
    pub p50: f64,
    /// The 75th percentile.
    pub p75: f64,
    /// The 95th percentile.
    pub p95: f64,
    /// The 98th percentile.
    pub p98: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The 99.9th percentile.
    pub p999: f64,
}

impl HistogramStats {
    /// The quantiles by their value in 0..1, as Prometheus summaries show them.
    pub fn quantiles(&self) -> [(f64, f64); 6] {
        [(0.5, self.p50), (0.75, self.p75), (0.95, self.p95), (0.98, self.p98), (0.99, self.p99), (0.999, self.p999)]
    }
}

/// Every metric of one group at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupSample {
    /// The logical scope, dot-separated (`taskmanager.job.task.operator`).
    pub scope: String,
    /// The variables, by name without Flink's angle brackets (`job_id`, `subtask_index`).
    pub vars: Vec<(String, String)>,
    /// The metrics by name.
    pub metrics: Vec<(String, Sample)>,
}

impl GroupSample {
    /// The value of variable `name`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// The value of metric `name`.
    pub fn metric(&self, name: &str) -> Option<&Sample> {
        self.metrics.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}
