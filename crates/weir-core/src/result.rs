//! What a finished job hands back, and per-operator record counts: both travel from the process
//! that ran a job to the client.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::{JobId, JobStatus};

/// A snapshot of one operator's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VertexCounts {
    /// Operator name.
    pub name: String,
    /// Records that entered the operator (`numRecordsIn`).
    #[serde(rename = "numRecordsIn")]
    pub records_in: u64,
    /// Records that the operator emitted (`numRecordsOut`); a sink's are 0.
    #[serde(rename = "numRecordsOut")]
    pub records_out: u64,
}

/// The outcome of a job that ran to a terminal status.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct JobResult {
    /// The job.
    pub job_id: JobId,
    /// Its registered name.
    pub job_name: String,
    /// FINISHED (a failed or cancelled job is an error instead).
    pub status: JobStatus,
    /// Wall time from submission to the terminal status.
    pub net_runtime: Duration,
    /// Values handed back by subtasks (the collect sink's records), per name and subtask.
    pub accumulators: BTreeMap<String, BTreeMap<u32, Vec<u8>>>,
    /// Record counters per operator.
    pub counts: Vec<VertexCounts>,
}

impl JobResult {
    /// The result of a job that ran as several parts (one per TaskManager), from theirs: counters
    /// add up, every subtask's values are kept, and the runtime is the longest part's.
    pub fn merge(parts: Vec<JobResult>) -> Option<JobResult> {
        let mut parts = parts.into_iter();
        let mut all = parts.next()?;
        for p in parts {
            all.net_runtime = all.net_runtime.max(p.net_runtime);
            for (name, values) in p.accumulators {
                all.accumulators.entry(name).or_default().extend(values);
            }
            for (mine, theirs) in all.counts.iter_mut().zip(p.counts) {
                mine.records_in += theirs.records_in;
                mine.records_out += theirs.records_out;
            }
        }
        Some(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_merge_by_subtask_and_counters_add_up() {
        let part = |subtask: u32, n: u64| JobResult {
            job_id: JobId(1),
            job_name: "j".into(),
            status: JobStatus::Finished,
            net_runtime: Duration::from_millis(u64::from(subtask) + 10),
            accumulators: [("out".to_string(), [(subtask, vec![subtask as u8])].into())].into(),
            counts: vec![VertexCounts { name: "v".into(), records_in: n, records_out: 2 * n }],
        };
        let all = JobResult::merge(vec![part(1, 5), part(0, 7)]).expect("two parts");
        assert_eq!(all.accumulators["out"], BTreeMap::from([(0, vec![0]), (1, vec![1])]));
        assert_eq!((all.counts[0].records_in, all.counts[0].records_out), (12, 24));
        assert_eq!(all.net_runtime, Duration::from_millis(11));
        assert!(JobResult::merge(Vec::new()).is_none());
    }

    #[test]
    fn results_round_trip_through_json_with_their_collected_values() {
        // The job result store of high availability keeps finished jobs' results as JSON.
        let r = JobResult {
            job_id: JobId(9),
            job_name: "j".into(),
            status: JobStatus::Finished,
            net_runtime: Duration::from_millis(1234),
            accumulators: [("sums".to_string(), [(0, vec![1, 2]), (3, vec![255])].into())].into(),
            counts: vec![VertexCounts { name: "v".into(), records_in: 4, records_out: 5 }],
        };
        let text = serde_json::to_vec(&r).expect("encodes");
        let back: JobResult = serde_json::from_slice(&text).expect("decodes");
        assert_eq!(back.accumulators, r.accumulators);
        assert_eq!((back.job_id, back.net_runtime, back.counts.len()), (r.job_id, r.net_runtime, 1));
    }
}
