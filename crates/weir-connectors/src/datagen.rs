//! A data generator: records made by a function of their index, bounded or unbounded, with an
//! optional rate limit (Flink's `DataGeneratorSource`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_core::{Error, Result};
use weir_runtime::source::Source;
use weir_runtime::state::{OperatorListState, Redistribution};
use weir_runtime::{OperatorContext, SourceReader, SourceStatus};

/// The function that makes record number `i`.
pub type GeneratorFn<T> = Arc<dyn Fn(u64) -> T + Send + Sync>;

/// Generates `f(0), f(1), ...`: `count` records in all (or without end), at most
/// `records_per_second` in all (spread evenly over subtasks). Subtask `s` of `p` makes the indices
/// `s, s + p, s + 2p, ...`.
#[derive(Clone)]
pub struct DataGen<T> {
    f: GeneratorFn<T>,
    count: Option<u64>,
    records_per_second: Option<f64>,
}

impl<T> DataGen<T> {
    /// A generator of `count` records (`None`: unbounded), limited to `records_per_second`
    /// (`None`: as fast as downstream takes them).
    pub fn new(f: GeneratorFn<T>, count: Option<u64>, records_per_second: Option<f64>) -> Self {
        DataGen { f, count, records_per_second }
    }
}

impl<T: Send + 'static> Source<T> for DataGen<T> {
    fn name(&self) -> String {
        "DataGenerator".into()
    }
    fn validate(&self) -> Result<()> {
        match self.records_per_second {
            Some(r) if !(r.is_finite() && r > 0.0) => Err(Error::invalid_job(format!(
                "data generator rate {r} records/s: the rate must be a positive number"
            ))),
            _ => Ok(()),
        }
    }
    fn create_reader(&self, ctx: &OperatorContext) -> Result<Box<dyn SourceReader<T>>> {
        let state = ctx.operator_state.list_state::<(u64, u64)>("strides", Redistribution::EvenSplit)?;
        // Restored: the strides' next indices (at another parallelism, strides spread over subtasks).
        let strides = if ctx.operator_state.is_restored() {
            state.get()?
        } else {
            vec![(u64::from(ctx.subtask), u64::from(ctx.parallelism))]
        };
        Ok(Box::new(DataGenReader {
            f: self.f.clone(),
            strides,
            state,
            end: self.count.unwrap_or(u64::MAX),
            rate: self.records_per_second.map(|r| r / f64::from(ctx.parallelism)),
            started: Instant::now(),
            emitted: 0,
        }))
    }
}

struct DataGenReader<T> {
    f: GeneratorFn<T>,
    /// (next index, step) of each stride of indices this reader makes.
    strides: Vec<(u64, u64)>,
    state: OperatorListState<(u64, u64)>,
    end: u64,
    rate: Option<f64>,
    started: Instant,
    emitted: u64,
}

impl<T> SourceReader<T> for DataGenReader<T> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourceStatus> {
        let mut allowed = max as u64;
        if let Some(rate) = self.rate {
            let due = (self.started.elapsed().as_secs_f64() * rate) as u64;
            allowed = allowed.min(due.saturating_sub(self.emitted));
            if allowed == 0 {
                let next_at = (self.emitted + 1) as f64 / rate;
                let wait = (next_at - self.started.elapsed().as_secs_f64()).clamp(0.0, 0.1);
                return Ok(SourceStatus::Wait(Duration::from_secs_f64(wait)));
            }
        }
        let end = self.end;
        for (next, step) in self.strides.iter_mut() {
            while allowed > 0 && *next < end {
                out.push((self.f)(*next));
                self.emitted += 1;
                allowed -= 1;
                *next = next.checked_add(*step).unwrap_or(end);
            }
        }
        self.strides.retain(|(next, _)| *next < end);
        Ok(if self.strides.is_empty() { SourceStatus::Finished } else { SourceStatus::Continue })
    }

    fn snapshot(&mut self) -> Result<()> {
        self.state.update(self.strides.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ctx, read_all};

    #[test]
    fn bounded_generators_make_every_index_once() -> Result<()> {
        let g = DataGen::new(Arc::new(|i| i * 10), Some(25), None);
        let mut all = Vec::new();
        for s in 0..3 {
            all.extend(read_all(g.create_reader(&ctx(s, 3))?));
        }
        all.sort();
        assert_eq!(all, (0..25).map(|i| i * 10).collect::<Vec<_>>());
        assert!(DataGen::new(Arc::new(|i| i), None, Some(-1.0)).validate().is_err());
        Ok(())
    }

    #[test]
    fn the_rate_limit_holds_records_back() -> Result<()> {
        let g = DataGen::new(Arc::new(|i| i), None, Some(1000.0));
        let mut r = g.create_reader(&ctx(0, 1))?;
        let mut out = Vec::new();
        let start = Instant::now();
        // Bounded: until 20 records or 5 s.
        while out.len() < 20 && start.elapsed() < Duration::from_secs(5) {
            if let SourceStatus::Wait(d) = r.poll(&mut out, 1024)? {
                std::thread::sleep(d);
            }
        }
        let allowed = (start.elapsed().as_secs_f64() * 1000.0) as usize + 1;
        assert!(out.len() >= 20, "only {} records in {:?}", out.len(), start.elapsed());
        assert!(out.len() <= allowed, "{} records in {:?}", out.len(), start.elapsed());
        Ok(())
    }
}
