//! The one interface records flow through.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use weir_core::{Result, VertexId};

use crate::metrics::VertexMetrics;

/// A consumer of batches: the input of the next operator in a chain, an exchange to other tasks,
/// or a sink.
///
/// `push` takes every record out of `batch` and leaves it empty (its capacity may be kept and
/// reused by the caller). `finish` is called once, at the end of input, after the last `push`;
/// an implementation flushes what it buffers and finishes its own outputs.
pub trait Output<T> {
    /// Consumes all records of `batch`.
    fn push(&mut self, batch: &mut Vec<T>) -> Result<()>;
    /// End of input.
    fn finish(&mut self) -> Result<()>;
}

impl<T, O: Output<T> + ?Sized> Output<T> for Box<O> {
    #[inline]
    fn push(&mut self, batch: &mut Vec<T>) -> Result<()> {
        (**self).push(batch)
    }
    fn finish(&mut self) -> Result<()> {
        (**self).finish()
    }
}

/// Drops everything: the output of an operator that nothing consumes.
pub struct NullOutput;

impl<T> Output<T> for NullOutput {
    #[inline]
    fn push(&mut self, batch: &mut Vec<T>) -> Result<()> {
        batch.clear();
        Ok(())
    }
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Sends every batch to several outputs (an operator with more than one consumer).
pub struct FanOut<T> {
    outputs: Vec<Box<dyn Output<T>>>,
    scratch: Vec<T>,
}

impl<T> FanOut<T> {
    /// A fan-out to `outputs`.
    pub fn new(outputs: Vec<Box<dyn Output<T>>>) -> Self {
        FanOut { outputs, scratch: Vec::new() }
    }
}

impl<T: Clone> Output<T> for FanOut<T> {
    fn push(&mut self, batch: &mut Vec<T>) -> Result<()> {
        if let Some((last, rest)) = self.outputs.split_last_mut() {
            for out in rest {
                self.scratch.extend(batch.iter().cloned());
                out.push(&mut self.scratch)?;
            }
            last.push(batch)
        } else {
            batch.clear();
            Ok(())
        }
    }
    fn finish(&mut self) -> Result<()> {
        for out in &mut self.outputs {
            out.finish()?;
        }
        Ok(())
    }
}

/// Which operator of a task is running right now, so that a panic can be blamed on it.
#[derive(Clone, Debug, Default)]
pub struct CurrentOperator(Rc<Cell<Option<VertexId>>>);

impl CurrentOperator {
    /// The operator that was entered last and not yet left (after a panic: the one that panicked).
    pub fn get(&self) -> Option<VertexId> {
        self.0.get()
    }
    /// Marks `v` as running, returning the previous marker.
    #[inline]
    pub fn enter(&self, v: VertexId) -> Option<VertexId> {
        self.0.replace(Some(v))
    }
    /// Restores the marker saved by [`CurrentOperator::enter`].
    #[inline]
    pub fn leave(&self, previous: Option<VertexId>) {
        self.0.set(previous)
    }
}

/// Wraps an operator's input: counts records in and marks the operator as running while it works.
pub struct Traced<T> {
    vertex: VertexId,
    current: CurrentOperator,
    metrics: Arc<VertexMetrics>,
    inner: Box<dyn Output<T>>,
}

impl<T> Traced<T> {
    /// Wraps `inner`, the input of operator `vertex`.
    pub fn new(
        vertex: VertexId,
        current: CurrentOperator,
        metrics: Arc<VertexMetrics>,
        inner: Box<dyn Output<T>>,
    ) -> Self {
        Traced { vertex, current, metrics, inner }
    }
}

impl<T> Output<T> for Traced<T> {
    #[inline]
    fn push(&mut self, batch: &mut Vec<T>) -> Result<()> {
        self.metrics.add_in(batch.len());
        let prev = self.current.enter(self.vertex);
        let r = self.inner.push(batch);
        self.current.leave(prev);
        r
    }
    fn finish(&mut self) -> Result<()> {
        let prev = self.current.enter(self.vertex);
        let r = self.inner.finish();
        self.current.leave(prev);
        r
    }
}
