//! The Prometheus text exposition format, with the names Flink's Prometheus reporter gives.
//!
//! A metric `numRecordsIn` of a group with logical scope `taskmanager.job.task` is the family
//! `flink_taskmanager_job_task_numRecordsIn`; the group's variables are its labels. Characters
//! Prometheus does not allow in names (and, by default, in label values: Flink's
//! `filterLabelValueCharacters`) become `_`. Counters, gauges, meters and time shares are gauges
//! (Flink's counters may go down, so it exposes them as gauges too); histograms are summaries with
//! Flink's quantiles.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use weir_core::metric::{GroupSample, Sample};

/// Replaces every character Prometheus does not allow in a name with `_`.
pub fn name_filter(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == ':' || c == '_' { c } else { '_' }).collect()
}

/// The family name of metric `name` in logical scope `scope`.
pub fn family(scope: &str, name: &str) -> String {
    format!("flink_{}_{}", name_filter(scope), name_filter(name))
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else {
        format!("{v}")
    }
}

/// Renders `groups` as the text exposition format; with `filter_values`, label values lose the
/// characters names may not have, as Flink's reporter does by default.
pub fn render(groups: &[GroupSample], filter_values: bool) -> String {
    // Families in a stable order, each with its series (a family's lines must be together).
    struct Series<'a> {
        labels: String,
        sample: &'a Sample,
    }
    let mut families: BTreeMap<String, (String, &str, Vec<Series>)> = BTreeMap::new();
    for g in groups {
        let mut labels = String::new();
        for (k, v) in &g.vars {
            let v = if filter_values { name_filter(v) } else { v.clone() };
            if !labels.is_empty() {
                labels.push(',');
            }
            let _ = write!(labels, "{}=\"{}\"", name_filter(k), escape(&v));
        }
        for (name, sample) in &g.metrics {
            let entry = families.entry(family(&g.scope, name)).or_insert_with(|| (name.clone(), &g.scope, Vec::new()));
            entry.2.push(Series { labels: labels.clone(), sample });
        }
    }
    let mut out = String::new();
    let mut seen = HashSet::new();
    for (fam, (name, scope, series)) in &families {
        let summary = series.iter().any(|s| matches!(s.sample, Sample::Histogram(_)));
        let _ = writeln!(out, "# HELP {fam} {} (scope: {scope})", escape(name).replace('"', ""));
        let _ = writeln!(out, "# TYPE {fam} {}", if summary { "summary" } else { "gauge" });
        for s in series {
            if !seen.insert((fam.clone(), s.labels.clone())) {
                continue; // Two groups with the same variables: the first one is reported.
            }
            let braces = |extra: &str| match (s.labels.is_empty(), extra.is_empty()) {
                (true, true) => String::new(),
                (true, false) => format!("{{{extra}}}"),
                (false, true) => format!("{{{}}}", s.labels),
                (false, false) => format!("{{{},{extra}}}", s.labels),
            };
            match s.sample {
                Sample::Number(v) if !summary => {
                    let _ = writeln!(out, "{fam}{} {}", braces(""), number(*v));
                }
                Sample::Number(_) => {} // A gauge in a family of summaries: cannot be both.
                Sample::Histogram(h) => {
                    for (q, v) in h.quantiles() {
                        let _ = writeln!(out, "{fam}{} {}", braces(&format!("quantile=\"{q}\"")), number(v));
                    }
                    let _ = writeln!(out, "{fam}_sum{} {}", braces(""), number(h.sum));
                    let _ = writeln!(out, "{fam}_count{} {}", braces(""), h.count);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HistogramStats;

    #[test]
    fn names_and_labels_are_flinks() {
        let g = GroupSample {
            scope: "taskmanager.job.task.operator".into(),
            vars: vec![("job_name".into(), "word count \"x\"".into()), ("subtask_index".into(), "0".into())],
            metrics: vec![
                ("numRecordsIn".into(), Sample::Number(12.0)),
                ("currentInputWatermark".into(), Sample::Number(i64::MIN as f64)),
            ],
        };
        let text = render(std::slice::from_ref(&g), true);
        assert!(text.contains("# TYPE flink_taskmanager_job_task_operator_numRecordsIn gauge\n"), "{text}");
        assert!(
            text.contains(
                "flink_taskmanager_job_task_operator_numRecordsIn{job_name=\"word_count__x_\",subtask_index=\"0\"} 12\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "currentInputWatermark{job_name=\"word_count__x_\",subtask_index=\"0\"} -9223372036854776000\n"
            )
        );
        let raw = render(&[g], false);
        assert!(raw.contains("job_name=\"word count \\\"x\\\"\""), "{raw}");
    }

    #[test]
    fn histograms_are_summaries_and_process_names_are_filtered() {
        let h = HistogramStats { count: 3, sum: 6.0, p50: 2.0, ..Default::default() };
        let groups = vec![GroupSample {
            scope: "jobmanager.job".into(),
            vars: vec![],
            metrics: vec![
                ("checkpointDuration".into(), Sample::Histogram(h)),
                ("Status.Process.CPU.Load".into(), Sample::Number(f64::NAN)),
            ],
        }];
        let text = render(&groups, true);
        assert!(text.contains("# TYPE flink_jobmanager_job_checkpointDuration summary\n"), "{text}");
        assert!(text.contains("flink_jobmanager_job_checkpointDuration{quantile=\"0.5\"} 2\n"), "{text}");
        assert!(text.contains("flink_jobmanager_job_checkpointDuration_count 3\n"), "{text}");
        assert!(text.contains("flink_jobmanager_job_Status_Process_CPU_Load NaN\n"), "{text}");
    }
}
