//! weir-connectors: the sources and sinks that ship with weir, one module per connector (Kafka's,
//! whose client is heavy, are in `weir-kafka`).
//!
//! Every source implements [`weir_runtime::source::Source`] and every sink
//! [`weir_runtime::source::Sink`]; user-written connectors implement the same traits.

pub mod collect;
pub mod collection;
pub mod datagen;
pub mod discard;
pub mod elasticsearch;
pub mod file;
pub mod print;
pub mod sequence;
pub mod socket;

/// Splits `0..n` into `parallelism` contiguous ranges; the one of `subtask`.
pub(crate) fn split_range(n: u64, parallelism: u32, subtask: u32) -> std::ops::Range<u64> {
    let (p, s) = (u128::from(parallelism), u128::from(subtask));
    let n = u128::from(n);
    ((n * s / p) as u64)..((n * (s + 1) / p) as u64)
}

#[cfg(test)]
pub(crate) mod testing {
    use weir_core::{JobId, VertexId};
    use weir_runtime::context::{Accumulators, OperatorContext, TaskEnv};
    use weir_runtime::{CancelToken, SourceReader, SourceStatus};

    pub fn ctx(subtask: u32, parallelism: u32) -> OperatorContext {
        OperatorContext {
            job_id: JobId(1),
            job_name: "test".into(),
            vertex: VertexId(0),
            operator_name: "op".into(),
            subtask,
            parallelism,
            max_parallelism: 128,
            attempt: 0,
            batch_size: 7,
            tick: std::time::Duration::from_millis(200),
            operator_state: Default::default(),
            uid: "0:op".into(),
            cancel: CancelToken::new(),
            metrics: weir_runtime::MetricGroup::detached("operator"),
        }
    }

    pub fn env(subtask: u32, parallelism: u32) -> TaskEnv {
        TaskEnv {
            op: ctx(subtask, parallelism),
            metrics: Default::default(),
            io: Default::default(),
            current: Default::default(),
            accumulators: std::sync::Arc::new(Accumulators::default()),
            checkpoint: Default::default(),
            restored_keyed: Vec::new(),
            restored_raw: Default::default(),
            state_backend: Default::default(),
        }
    }

    /// The context of subtask `s` of `p` restoring the list state `name` from `snaps`, the operator
    /// state snapshots of the old subtasks, redistributed (even split) as a restore does.
    pub fn restored_ctx(
        snaps: &[std::collections::BTreeMap<String, weir_runtime::checkpoint::ListSnapshot>],
        name: &str,
        s: u32,
        p: u32,
    ) -> OperatorContext {
        let parts: Vec<Vec<Vec<u8>>> =
            snaps.iter().map(|m| m.get(name).map(|l| l.entries.clone()).unwrap_or_default()).collect();
        let mut mine = snaps.first().and_then(|m| m.get(name).cloned()).unwrap_or_default();
        mine.entries = weir_runtime::state::redistribute(&parts, p, weir_runtime::state::Redistribution::EvenSplit)
            .into_iter()
            .nth(s as usize)
            .unwrap_or_default();
        let mut c = ctx(s, p);
        c.operator_state = weir_runtime::state::OperatorStateStore::restored([(name.to_string(), mine)].into());
        c
    }

    /// Reads a reader to its end (bounded loop).
    pub fn read_all<T>(mut r: Box<dyn SourceReader<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for _ in 0..1_000_000 {
            match r.poll(&mut out, 7) {
                Ok(SourceStatus::Finished) => return out,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
        panic!("reader did not finish")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_range_covers_everything_once() {
        for n in [0u64, 1, 10, 1001] {
            for p in 1..6 {
                let mut next = 0;
                for s in 0..p {
                    let r = super::split_range(n, p, s);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
