//! A bounded source over an in-memory collection.

use std::sync::Arc;

use weir_core::Result;
use weir_runtime::source::Source;
use weir_runtime::state::{OperatorListState, Redistribution};
use weir_runtime::{OperatorContext, SourceReader, SourceStatus};

use crate::split_range;

/// Emits the elements of a vector, split into contiguous parts across subtasks, in order within
/// each part. Its position (the index ranges not read yet) is checkpointed, so a restored job goes
/// on where it was, at any parallelism.
#[derive(Clone, Debug)]
pub struct Collection<T> {
    items: Arc<Vec<T>>,
}

impl<T> Collection<T> {
    /// A source over `items`.
    pub fn new(items: Vec<T>) -> Self {
        Collection { items: Arc::new(items) }
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for Collection<T> {
    fn name(&self) -> String {
        "Collection".into()
    }
    fn create_reader(&self, ctx: &OperatorContext) -> Result<Box<dyn SourceReader<T>>> {
        let state = ctx.operator_state.list_state::<(u64, u64)>("ranges", Redistribution::EvenSplit)?;
        let len = self.items.len() as u64;
        // Restored: the index ranges not read yet (at another parallelism, spread over the subtasks).
        let mut ranges: Vec<(u64, u64)> = if ctx.operator_state.is_restored() {
            state.get()?.into_iter().map(|(a, b)| (a.min(len), b.min(len))).collect()
        } else {
            let r = split_range(len, ctx.parallelism, ctx.subtask);
            vec![(r.start, r.end)]
        };
        ranges.reverse();
        Ok(Box::new(CollectionReader { items: self.items.clone(), ranges, state }))
    }
}

struct CollectionReader<T> {
    items: Arc<Vec<T>>,
    /// Index ranges `[next, end)` still to read, the current one last.
    ranges: Vec<(u64, u64)>,
    state: OperatorListState<(u64, u64)>,
}

impl<T: Clone> SourceReader<T> for CollectionReader<T> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourceStatus> {
        let Some((next, end)) = self.ranges.last_mut() else { return Ok(SourceStatus::Finished) };
        let stop = (*end).min(*next + max as u64);
        out.extend_from_slice(&self.items[*next as usize..stop as usize]);
        *next = stop;
        if *next >= *end {
            self.ranges.pop();
        }
        Ok(if self.ranges.is_empty() { SourceStatus::Finished } else { SourceStatus::Continue })
    }

    fn snapshot(&mut self) -> Result<()> {
        self.state.update(self.ranges.iter().rev().copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ctx, read_all};

    #[test]
    fn parts_concatenate_to_the_collection() -> Result<()> {
        let c = Collection::new((0..50).map(|i| format!("x{i}")).collect());
        let mut all = Vec::new();
        for s in 0..4 {
            all.extend(read_all(c.create_reader(&ctx(s, 4))?));
        }
        assert_eq!(all, (0..50).map(|i| format!("x{i}")).collect::<Vec<_>>());
        Ok(())
    }

    #[test]
    fn a_restored_reader_goes_on_where_the_snapshot_was_taken_at_any_parallelism() -> Result<()> {
        let c = Collection::new((0..100).collect::<Vec<u32>>());
        let mut read = Vec::new();
        let mut snaps = Vec::new();
        for s in 0..2 {
            let cx = ctx(s, 2);
            let mut r = c.create_reader(&cx)?;
            r.poll(&mut read, 7)?;
            r.snapshot()?;
            snaps.push(cx.operator_state.snapshot()?);
        }
        for p in [1, 2, 3] {
            let mut all = read.clone();
            for s in 0..p {
                let cx = crate::testing::restored_ctx(&snaps, "ranges", s, p);
                all.extend(read_all(c.create_reader(&cx)?));
            }
            all.sort();
            assert_eq!(all, (0..100).collect::<Vec<_>>(), "parallelism {p}");
        }
        Ok(())
    }
}
