//! A bounded, parallel sequence of numbers: `from..=to`, split into contiguous ranges.

use weir_core::{Error, Result};
use weir_runtime::source::Source;
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
        let count = (i128::from(self.to) - i128::from(self.from) + 1) as u128;
        let (p, s) = (u128::from(ctx.parallelism), u128::from(ctx.subtask));
        let start = i128::from(self.from) + (count * s / p) as i128;
        let end = i128::from(self.from) + (count * (s + 1) / p) as i128;
        Ok(Box::new(SequenceReader { next: start, end }))
    }
}

struct SequenceReader {
    next: i128,
    end: i128,
}

impl SourceReader<i64> for SequenceReader {
    #[inline]
    fn poll(&mut self, out: &mut Vec<i64>, max: usize) -> Result<SourceStatus> {
        let stop = self.end.min(self.next + max as i128);
        // `stop` may be i64::MAX + 1, which has no i64 form: use an inclusive range.
        if stop > self.next {
            out.extend(self.next as i64..=(stop - 1) as i64);
        }
        self.next = stop;
        Ok(if self.next >= self.end { SourceStatus::Finished } else { SourceStatus::Continue })
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
}
