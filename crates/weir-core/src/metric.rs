//! Metric values as they are reported and sent between processes (the metric system itself is
//! the `weir-metrics` crate).

use serde::{Deserialize, Serialize};

/// The value of one metric at one moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Sample {
    /// A counter, gauge, meter or time share.
    Number(#[serde(with = "any_f64")] f64),
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

/// Numbers that may not be finite (a gauge that has nothing to say yet reads NaN), in a form
/// JSON can carry: finite ones as numbers, the others as Flink's REST API writes them ("NaN",
/// "Infinity", "-Infinity"). Plain JSON would write them as `null`, which no `f64` reads back:
/// one such gauge made every report of its process unreadable.
mod any_f64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Any {
        Number(f64),
        Text(String),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(match Any::deserialize(d)? {
            Any::Number(n) => n,
            Any::Text(t) if t == "Infinity" => f64::INFINITY,
            Any::Text(t) if t == "-Infinity" => f64::NEG_INFINITY,
            Any::Text(_) | Any::Null(()) => f64::NAN,
        })
    }
}

/// A histogram's statistics over its window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramStats {
    /// Values recorded in all (not only in the window).
    pub count: u64,
    /// Their sum.
    #[serde(with = "any_f64")]
    pub sum: f64,
    /// The smallest value in the window.
    pub min: i64,
    /// The largest.
    pub max: i64,
    /// The mean of the window.
    #[serde(with = "any_f64")]
    pub mean: f64,
    /// Its standard deviation.
    #[serde(with = "any_f64")]
    pub stddev: f64,
    /// The median.
    #[serde(with = "any_f64")]
    pub p50: f64,
    /// The 75th percentile.
    #[serde(with = "any_f64")]
    pub p75: f64,
    /// The 95th percentile.
    #[serde(with = "any_f64")]
    pub p95: f64,
    /// The 98th percentile.
    #[serde(with = "any_f64")]
    pub p98: f64,
    /// The 99th percentile.
    #[serde(with = "any_f64")]
    pub p99: f64,
    /// The 99.9th percentile.
    #[serde(with = "any_f64")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_that_are_not_finite_cross_json_and_come_back() -> Result<(), serde_json::Error> {
        let g = GroupSample {
            scope: "s".into(),
            vars: vec![],
            metrics: vec![
                ("nan".into(), Sample::Number(f64::NAN)),
                ("inf".into(), Sample::Number(f64::INFINITY)),
                ("ninf".into(), Sample::Number(f64::NEG_INFINITY)),
                ("one".into(), Sample::Number(1.5)),
                ("h".into(), Sample::Histogram(HistogramStats { mean: f64::NAN, p99: 3.0, ..Default::default() })),
            ],
        };
        let text = serde_json::to_string(&g)?;
        assert!(text.contains(r#""NaN""#) && text.contains(r#""-Infinity""#) && text.contains("1.5"), "{text}");
        let back: GroupSample = serde_json::from_str(&text)?;
        let n = |name: &str| back.metric(name).map(Sample::number).unwrap_or(0.0);
        assert!(n("nan").is_nan() && n("h").is_nan());
        assert_eq!((n("inf"), n("ninf"), n("one")), (f64::INFINITY, f64::NEG_INFINITY, 1.5));
        // What plain JSON wrote for them before (null) reads as NaN.
        let old: Sample = serde_json::from_str(r#"{"Number":null}"#)?;
        assert!(old.number().is_nan());
        Ok(())
    }
}
