//! A bounded source over an in-memory collection.

use std::sync::Arc;

use weir_core::Result;
use weir_runtime::source::Source;
use weir_runtime::{OperatorContext, SourceReader, SourceStatus};

use crate::split_range;

/// Emits the elements of a vector, split into contiguous parts across subtasks, in order within
/// each part.
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
        let r = split_range(self.items.len() as u64, ctx.parallelism, ctx.subtask);
        Ok(Box::new(CollectionReader { items: self.items.clone(), next: r.start as usize, end: r.end as usize }))
    }
}

struct CollectionReader<T> {
    items: Arc<Vec<T>>,
    next: usize,
    end: usize,
}

impl<T: Clone> SourceReader<T> for CollectionReader<T> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourceStatus> {
        let stop = self.end.min(self.next + max);
        out.extend_from_slice(&self.items[self.next..stop]);
        self.next = stop;
        Ok(if self.next >= self.end { SourceStatus::Finished } else { SourceStatus::Continue })
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
}
