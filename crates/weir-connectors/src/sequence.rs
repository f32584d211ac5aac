//! A bounded, parallel sequence of numbers: `from..=to`, split into contiguous ranges.

use weir_core::{Error, Result};
use weir_runtime::source::Source;
use weir_runtime::state::{OperatorListState, Redistribution};
use weir_runtime::{OperatorContext, SourceReader, SourceStatus};

/// Emits every integer of `from..=to` once, across all subtasks.
#[derive(Clone, Debug)]
pub struct Sequence {
    from: i64,
    to: i64,
}

impl Sequence {
    /// The numbers `from..=to`.
    pub fn new(from: i64, to: i64) -> Self {
        Sequence { from, to }
    }
}

impl Source<i64> for Sequence {
    fn name(&self) -> String {
        "Sequence".into()
    }
    fn validate(&self) -> Result<()> {
        if self.from > self.to {
            return Err(Error::invalid_job(format!(
                "sequence from {} to {}: 'from' must not be greater than 'to'",
                self.from, self.to
            )));
        }
        Ok(())
    }
    fn create_reader(&self, ctx: &OperatorContext) -> Result<Box<dyn SourceReader<i64>>> {
        let state = ctx.operator_state.list_state::<(i64, i64)>("ranges", Redistribution::EvenSplit)?;
        // Restored: the ranges not read yet (at another parallelism, spread over the subtasks).
        let mut ranges: Vec<(i128, i128)> = if ctx.operator_state.is_restored() {
            state.get()?.into_iter().map(|(a, b)| (i128::from(a), i128::from(b) + 1)).collect()
        } else {
            let count = (i128::from(self.to) - i128::from(self.from) + 1) as u128;
            let (p, s) = (u128::from(ctx.parallelism), u128::from(ctx.subtask));
            let start = i128::from(self.from) + (count * s / p) as i128;
            let end = i128::from(self.from) + (count * (s + 1) / p) as i128;
            vec![(start, end)]
        };
        ranges.reverse();
        Ok(Box::new(SequenceReader { ranges, state }))
    }
}

struct SequenceReader {
    /// Ranges `[next, end)` still to read, the current one last.
    ranges: Vec<(i128, i128)>,
    state: OperatorListState<(i64, i64)>,
}

impl SourceReader<i64> for SequenceReader {
    #[inline]
    fn poll(&mut self, out: &mut Vec<i64>, max: usize) -> Result<SourceStatus> {
        let Some((next, end)) = self.ranges.last_mut() else { return Ok(SourceStatus::Finished) };
        let stop = (*end).min(*next + max as i128);
        // `stop` may be i64::MAX + 1, which has no i64 form: use an inclusive range.
        if stop > *next {
            out.extend(*next as i64..=(stop - 1) as i64);
        }
        *next = stop;
        if *next >= *end {
            self.ranges.pop();
        }
        Ok(if self.ranges.is_empty() { SourceStatus::Finished } else { SourceStatus::Continue })
    }

    fn snapshot(&mut self) -> Result<()> {
        // Inclusive ends, so that a range reaching i64::MAX has an i64 form.
        self.state.update(self.ranges.iter().rev().map(|&(a, b)| (a as i64, (b - 1) as i64)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ctx, read_all};

    #[test]
    fn parallel_readers_cover_the_range_once() -> Result<()> {
        let seq = Sequence::new(-5, 100);
        let mut all = Vec::new();
        for s in 0..3 {
            all.extend(read_all(seq.create_reader(&ctx(s, 3))?));
        }
        all.sort();
        assert_eq!(all, (-5..=100).collect::<Vec<_>>());
        assert!(Sequence::new(3, 2).validate().is_err());
        assert_eq!(read_all(Sequence::new(i64::MAX - 1, i64::MAX).create_reader(&ctx(0, 1))?).len(), 2);
        Ok(())
    }

    #[test]
    fn a_restored_reader_goes_on_where_the_snapshot_was_taken_at_any_parallelism() -> Result<()> {
        let seq = Sequence::new(1, 100);
        // Two readers each read one poll of 7 and snapshot.
        let mut read = Vec::new();
        let mut snaps = Vec::new();
        for s in 0..2 {
            let c = ctx(s, 2);
            let mut r = seq.create_reader(&c)?;
            r.poll(&mut read, 7)?;
            r.snapshot()?;
            snaps.push(c.operator_state.snapshot()?);
        }
        for p in [1, 2, 3] {
            let mut all = read.clone();
            for s in 0..p {
                let c = crate::testing::restored_ctx(&snaps, "ranges", s, p);
                all.extend(read_all(seq.create_reader(&c)?));
            }
            all.sort();
            assert_eq!(all, (1..=100).collect::<Vec<_>>(), "parallelism {p}");
        }
        Ok(())
    }
}
