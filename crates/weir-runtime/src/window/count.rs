//! Count windows: a global window per key that fires, and is purged, every `size` records
//! (Flink's `countWindow(size)`).

use std::hash::Hash;

use weir_core::{Error, Result};

use super::{GLOBAL_WINDOW, WindowCheckpointing, WindowFunction};
use crate::output::{Batch, Control, Output, Timestamp};
use crate::state::backend::{HeapView, KeyedTable, Restored, TableSpec};
use crate::state::heap::HeapTable;
use crate::state::table::Table;

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
    /// Per key: the records in the open window and their accumulator.
    state: Table<K, (u64, WF::Acc)>,
    buf: Batch<WF::Out>,
    next: Box<dyn Output<WF::Out>>,
    checkpoint: WindowCheckpointing,
}

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
            state: Table::Heap(HeapTable::default()),
            buf: Batch::default(),
            next,
            checkpoint: WindowCheckpointing::default(),
        })
    }

    /// Takes part in the checkpoints of the task `env` describes, starting from the state it
    /// restored.
    pub fn checkpointed(mut self, env: &crate::context::TaskEnv) -> Result<Self>
    where
        K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.checkpoint = WindowCheckpointing::of(env, false)?;
        let typed = crate::checkpoint::restore_keyed::<K, (u64, WF::Acc)>(&env.restored_keyed)?;
        if let Some((n, _)) = typed.iter().map(|(_, v)| v).find(|(n, _)| *n >= self.size) {
            return Err(too_many(*n, self.size));
        }
        let spec = TableSpec { group: weir_core::keygroup::key_group::<K>, queues: &[] };
        // Windows of the disk backend's snapshots are checked as they are read.
        self.state = Table::open(&env.state(), spec, Restored { entries: typed, timers: Vec::new() }, |_, _, _| {})?;
        Ok(self)
    }
}

/// The error for a restored window of `n` records where the window fires every `size`.
fn too_many(n: u64, size: u64) -> Error {
    Error::InvalidJob(format!(
        "the restored count window of a key holds {n} records, but the window fires every {size} records; \
         restore with the program that wrote the snapshot, or give the changed window a new uid"
    ))
}

impl<K, T, KF, WF> Output<T> for CountWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
    WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let has_ts = batch.timestamps.is_some();
        for (x, ts) in batch.drain() {
            let k = (self.key)(&x);
            let entry = self.state.value(&k, || (0, self.wf.create()))?;
            if entry.0 >= self.size {
                return Err(too_many(entry.0, self.size));
            }
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
                self.state.remove(&k)?;
            }
        }
        if self.buf.is_empty() { Ok(()) } else { self.next.push(&mut self.buf) }
    }

    fn control(&mut self, event: Control) -> Result<()> {
        if let Control::Barrier(id) = event
            && self.checkpoint.enabled()
        {
            let max_parallelism = self.checkpoint.max_parallelism();
            let encode = |view: HeapView<'_, K, (u64, WF::Acc)>| {
                crate::checkpoint::snapshot_keyed(view.values.iter(), max_parallelism)
            };
            let snapshot = self.state.snapshot(id, self.checkpoint.completed(), encode)?;
            self.checkpoint.snapshot_state(snapshot, Timestamp::MIN)?;
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
    use crate::window::testing::{
        Event, Fired, MakeFn, SumCount, check_key_groups, check_restore, on_backend, restores, steps, uninterrupted,
        watermarks,
    };

    fn make(env: &TaskEnv, next: Box<dyn Output<Fired>>, _: Box<dyn Output<Event>>) -> Result<Box<dyn Output<Event>>> {
        Ok(Box::new(CountWindowOperator::new(|e: &Event| e.0, SumCount, 4, next)?.checkpointed(env)?))
    }

    /// Like [`make`], on the disk backend for a fresh start (`fresh`) or a restore (`restored`).
    fn on_disk(fresh: bool, restored: bool) -> MakeFn {
        Box::new(move |env, next, late| {
            make(&on_backend(env, if restores(env) { restored } else { fresh }), next, late)
        })
    }

    #[test]
    fn count_windows_on_the_disk_backend_fire_as_on_the_heap_and_restore_across_backends() -> Result<()> {
        // 9 keys and a cache of 3: windows go to the store and come back from it.
        let steps = steps(23, 300, 9, 0);
        let heap = uninterrupted(&make, &steps)?;
        assert!(heap.0.len() > 20, "windows fire: {}", heap.0.len());
        assert_eq!(uninterrupted(&*on_disk(true, true), &steps)?, heap);
        for (fresh, restored) in [(true, true), (true, false), (false, true)] {
            for (from, to) in [(1, 2), (2, 1), (2, 3)] {
                check_restore(&*on_disk(fresh, restored), &steps, steps.len() / 2, from, to)?;
            }
        }
        Ok(())
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
        // On the disk backend, from the heap's snapshot at once; from its own when the key is read.
        let disk = on_backend(&env, true);
        let e = CountWindowOperator::new(|e: &Event| e.0, SumCount, 2, Box::new(crate::output::NullOutput))
            .and_then(|op| op.checkpointed(&disk))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("holds 3 records"), "{e}");
        let cps = crate::window::testing::Checkpoints::new()?;
        let task = cps.task(0);
        let fresh = on_backend(&crate::window::testing::env(task.clone(), 0, 1, &[]), true);
        let mut op = CountWindowOperator::new(|e: &Event| e.0, SumCount, 4, Box::new(crate::output::NullOutput))?
            .checkpointed(&fresh)?;
        op.push(&mut Batch::of(vec![(1, 0, 1), (1, 0, 1), (1, 0, 1)]))?;
        op.control(Control::Barrier(1))?;
        let snap = cps.taken(&task, 1)?;
        assert!(snap.keyed.is_empty() && !snap.raw.is_empty(), "the disk backend's snapshot");
        let env = on_backend(&crate::window::testing::env(cps.task(0), 0, 1, &[snap]), true);
        let mut op = CountWindowOperator::new(|e: &Event| e.0, SumCount, 2, Box::new(crate::output::NullOutput))?
            .checkpointed(&env)?;
        let e = op.push(&mut Batch::of(vec![(1, 0, 1)])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("holds 3 records"), "{e}");
        Ok(())
    }
}
