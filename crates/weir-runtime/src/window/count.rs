//! Count windows: a global window per key that fires, and is purged, every `size` records
//! (Flink's `countWindow(size)`).

use std::hash::Hash;

use weir_core::{Error, Result};

use super::{TimeWindow, WindowCheckpointing, WindowFunction};
use crate::operators::StateMap;
use crate::output::{Batch, Control, Output, Timestamp};

/// Keyed count windows with an incremental [`WindowFunction`]. Results carry the timestamp of
/// the record that completed the window when the input has timestamps. Windows still short of
/// `size` records at the end of input do not fire, as in Flink.
///
/// In a checkpoint it keeps, per key, the number of records in the open window and their
/// accumulator.
pub struct CountWindowOperator<K, T, KF, WF: WindowFunction<K, T>> {
    key: KF,
    wf: WF,
    size: u64,
    state: StateMap<K, (u64, WF::Acc)>,
    buf: Batch<WF::Out>,
    next: Box<dyn Output<WF::Out>>,
    checkpoint: WindowCheckpointing,
}

/// The window count windows report: all of time.
pub const GLOBAL_WINDOW: TimeWindow = TimeWindow { start: Timestamp::MIN, end: Timestamp::MAX };

impl<K, T, KF, WF: WindowFunction<K, T>> CountWindowOperator<K, T, KF, WF> {
    /// Fires every `size` records of a key.
    pub fn new(key: KF, wf: WF, size: u64, next: Box<dyn Output<WF::Out>>) -> Result<Self> {
        if size == 0 {
            return Err(Error::invalid_job("count window size 0: the size must be at least 1"));
        }
        Ok(CountWindowOperator {
            key,
            wf,
            size,
            state: StateMap::default(),
            buf: Batch::default(),
            next,
            checkpoint: WindowCheckpointing::default(),
        })
    }

    /// Takes part in the checkpoints of the task `env` describes, starting from the state it
    /// restored.
    pub fn checkpointed(mut self, env: &crate::context::TaskEnv) -> Result<Self>
    where
        K: Hash + Eq + serde::de::DeserializeOwned,
        WF::Acc: serde::de::DeserializeOwned,
    {
        self.checkpoint = WindowCheckpointing::of(env, false)?;
        for (k, (n, acc)) in crate::checkpoint::restore_keyed::<K, (u64, WF::Acc)>(&env.restored_keyed)? {
            if n >= self.size {
                return Err(Error::Config(format!(
                    "the restored count window of a key holds {n} records, but the window fires every {} records; \
                     restore with the program that wrote the snapshot, or give the changed window a new uid",
                    self.size
                )));
            }
            self.state.insert(k, (n, acc));
        }
        Ok(self)
    }
}

impl<K, T, KF, WF> Output<T> for CountWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone + serde::Serialize,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
    WF::Acc: serde::Serialize,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let has_ts = batch.timestamps.is_some();
        for (x, ts) in batch.drain() {
            let k = (self.key)(&x);
            let entry = self.state.entry(k.clone()).or_insert_with(|| (0, self.wf.create()));
            self.wf.add(&mut entry.1, x);
            entry.0 += 1;
            if entry.0 == self.size {
                let before = self.buf.records.len();
                self.wf.emit(&k, GLOBAL_WINDOW, &entry.1, &mut self.buf.records);
                if has_ts {
                    let col = self.buf.timestamps.get_or_insert_with(Vec::new);
                    col.resize(before, Timestamp::MIN);
                    col.resize(self.buf.records.len(), ts.unwrap_or(Timestamp::MIN));
                }
                self.state.remove(&k);
            }
        }
        if self.buf.is_empty() { Ok(()) } else { self.next.push(&mut self.buf) }
    }

    fn control(&mut self, event: Control) -> Result<()> {
        if let Control::Barrier(_) = event
            && self.checkpoint.enabled()
        {
            let keyed = crate::checkpoint::snapshot_keyed(self.state.iter(), self.checkpoint.max_parallelism())?;
            self.checkpoint.snapshot(keyed, Timestamp::MIN)?;
        }
        self.next.control(event)
    }

    fn finish(&mut self) -> Result<()> {
        self.next.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::TaskEnv;
    use crate::window::testing::{Event, Fired, SumCount, check_key_groups, check_restore, steps, watermarks};

    fn make(env: &TaskEnv, next: Box<dyn Output<Fired>>, _: Box<dyn Output<Event>>) -> Result<Box<dyn Output<Event>>> {
        Ok(Box::new(CountWindowOperator::new(|e: &Event| e.0, SumCount, 4, next)?.checkpointed(env)?))
    }

    #[test]
    fn count_windows_go_on_from_a_snapshot_at_any_parallelism() -> Result<()> {
        let steps = steps(17, 200, 6, 0);
        for (from, to) in [(1, 1), (1, 2), (2, 1), (2, 3)] {
            for cut in [1, steps.len() / 3, steps.len() / 2 + 1] {
                let snaps = check_restore(&make, &steps, cut, from, to)?;
                assert!(check_key_groups::<(u64, (i64, u32))>(&snaps)? > 0 || cut == 1);
                assert!(watermarks(&snaps)?.is_empty(), "count windows keep no watermark");
            }
        }
        Ok(())
    }

    #[test]
    fn a_restored_window_of_too_many_records_is_refused() -> Result<()> {
        let cps = crate::window::testing::Checkpoints::new()?;
        let task = cps.task(0);
        let env = crate::window::testing::env(task.clone(), 0, 1, &[]);
        let mut op = CountWindowOperator::new(|e: &Event| e.0, SumCount, 4, Box::new(crate::output::NullOutput))?
            .checkpointed(&env)?;
        op.push(&mut Batch::of(vec![(1, 0, 1), (1, 0, 1), (1, 0, 1)]))?;
        op.control(Control::Barrier(1))?;
        let snap = cps.taken(&task, 1)?;
        let env = crate::window::testing::env(cps.task(0), 0, 1, &[snap]);
        let e = CountWindowOperator::new(|e: &Event| e.0, SumCount, 2, Box::new(crate::output::NullOutput))
            .and_then(|op| op.checkpointed(&env))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("holds 3 records") && e.contains("new uid"), "{e}");
        Ok(())
    }
}
