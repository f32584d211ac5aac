//! Tumbling and sliding windows, in event time or processing time.

use std::hash::Hash;

use weir_core::{Error, Result};

use super::{TimeDomain, TimeWindow, WindowAssigner, WindowBounds, WindowCheckpointing, WindowFunction, WindowOutputs};
use crate::exchange::now_millis;
use crate::output::{Batch, Control, Output, Timestamp};
use crate::state::backend::WindowStore;
use crate::state::table::{Windows, WindowsFn};
use crate::state::windows::HeapWindows;

/// Keyed tumbling or sliding windows with an incremental [`WindowFunction`].
///
/// Event time: a window fires once when the watermark passes its last timestamp, with its
/// results timestamped `end - 1`. With allowed lateness `L`, its state is kept until the watermark
/// passes `end - 1 + L`; a record arriving for it in between updates it and fires it again at once
/// (a late firing). A record whose windows are all past that point is late: it goes to the late
/// output (a side output, or nowhere). Processing time: windows follow the wall clock and fire on
/// the task's ticks; at the end of input, the windows still open fire.
///
/// In a checkpoint it keeps every window's accumulator per key (with the window's end and whether
/// it fired already), grouped by the key group of the key, and its watermark; a restored operator
/// fires and judges lateness exactly as the one that wrote the snapshot would have.
///
/// The accumulators are a [`WindowStore`] in the job's state backend: with the disk backend
/// (`state.backend.type: disk`) they live in the instance's store, and only the distinct window
/// ends stay in memory.
pub struct TimeWindowOperator<K, T, KF, WF: WindowFunction<K, T>> {
    key: KF,
    wf: WF,
    assigner: WindowAssigner,
    size: i64,
    lateness: i64,
    /// Every window's accumulator per key.
    windows: Windows<K, WF::Acc>,
    watermark: Timestamp,
    operator: String,
    out: WindowOutputs<T, WF::Out>,
    checkpoint: WindowCheckpointing,
}

impl<K, T, KF, WF> TimeWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone,
    T: Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
{
    /// A window operator; `assigner` must be tumbling or sliding.
    pub fn new(
        key: KF,
        wf: WF,
        assigner: WindowAssigner,
        allowed_lateness_ms: i64,
        operator: String,
        late: Box<dyn Output<T>>,
        next: Box<dyn Output<WF::Out>>,
    ) -> Result<Self> {
        let size = match assigner {
            WindowAssigner::Tumbling { size, .. } | WindowAssigner::Sliding { size, .. } => size,
            WindowAssigner::Session { .. } | WindowAssigner::Global => {
                return Err(Error::internal("session and global windows need their own operators"));
            }
        };
        assigner.validate()?;
        Ok(TimeWindowOperator {
            key,
            wf,
            assigner,
            size,
            lateness: if assigner.domain() == TimeDomain::EventTime { allowed_lateness_ms.max(0) } else { 0 },
            windows: Windows::Heap(HeapWindows::default()),
            watermark: Timestamp::MIN,
            operator,
            out: WindowOutputs::new(next, late),
            checkpoint: WindowCheckpointing::default(),
        })
    }

    /// Takes part in the checkpoints of the task `env` describes, starting from the state (windows
    /// and watermark) it restored.
    pub fn checkpointed(mut self, env: &crate::context::TaskEnv) -> Result<Self>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        // Processing-time windows follow the wall clock: no watermark to keep.
        self.checkpoint = WindowCheckpointing::of(env, self.assigner.domain() == TimeDomain::EventTime)?;
        if let Some(wm) = self.checkpoint.restored_watermark()? {
            self.watermark = self.watermark.max(wm);
        }
        let entries = crate::checkpoint::restore_keyed::<K, (Timestamp, bool, WF::Acc)>(&env.restored_keyed)?;
        self.windows = Windows::open(&env.state(), entries)?;
        Ok(self)
    }

    /// Fires every pending window whose last timestamp is at or below `time`, and forgets fired
    /// windows whose lateness has run out.
    fn advance(&mut self, time: Timestamp) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        let Self { windows, wf, out, size, lateness, .. } = self;
        windows.advance(time, *lateness, |end, k, acc| out.emit(wf, k, TimeWindow { start: end - *size, end }, acc))?;
        self.out.flush()
    }
}

/// One batch added to its windows, in whichever backend holds them.
struct Accumulate<'a, T, K, KF, WF: WindowFunction<K, T>> {
    batch: &'a mut Batch<T>,
    timestamps: &'a [Timestamp],
    bounds: WindowBounds,
    wm: Timestamp,
    key: &'a mut KF,
    wf: &'a mut WF,
    out: &'a mut WindowOutputs<T, WF::Out>,
}

impl<T, K, KF, WF> WindowsFn<K, WF::Acc> for Accumulate<'_, T, K, KF, WF>
where
    T: Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
{
    type Out = Result<()>;

    #[inline]
    fn call<W: WindowStore<K, WF::Acc>>(self, windows: &mut W) -> Result<()> {
        let Accumulate { batch, timestamps, bounds, wm, key, wf, out } = self;
        assign(batch, timestamps, bounds, wm, key, out, |k, w, record, out| {
            let (acc, fire) = windows.add(w.end, k, w.max_timestamp() > wm, || wf.create())?;
            wf.add(acc, record);
            if fire {
                // The window fired already but is within its lateness: fire it again.
                out.emit(wf, k, w, acc);
            }
            Ok(())
        })
    }
}

/// Assigns the records of `batch` (timestamped `timestamps`) to their windows that still take
/// records (watermark `wm`, allowed lateness `lateness`), and calls `add` with each record's key,
/// each of its windows and the record (moved into its last window, cloned for the others); a
/// record with no such window goes to the late output.
#[inline]
fn assign<K, T: Clone, O>(
    batch: &mut Batch<T>,
    timestamps: &[Timestamp],
    bounds: WindowBounds,
    wm: Timestamp,
    key: &mut impl FnMut(&T) -> K,
    out: &mut WindowOutputs<T, O>,
    mut add: impl FnMut(&K, TimeWindow, T, &mut WindowOutputs<T, O>) -> Result<()>,
) -> Result<()> {
    let mut windows: Vec<TimeWindow> = Vec::with_capacity(1);
    for (x, ts) in batch.records.drain(..).zip(timestamps.iter().copied()) {
        windows.clear();
        bounds.assigner.for_each_window(ts, |w| windows.push(w));
        // A window whose lateness has run out takes no more records.
        windows.retain(|w| w.max_timestamp().saturating_add(bounds.lateness_ms) > wm);
        if windows.is_empty() {
            out.late(x, ts);
            continue;
        }
        let k = key(&x);
        let n = windows.len();
        let mut x = Some(x);
        for (i, &w) in windows.iter().enumerate() {
            let Some(record) = (if i + 1 == n { x.take() } else { x.clone() }) else { break };
            add(&k, w, record, out)?;
        }
    }
    Ok(())
}

impl<K, T, KF, WF> Output<T> for TimeWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
    T: Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
    WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let event_time = self.assigner.domain() == TimeDomain::EventTime;
        let timestamps =
            if event_time { super::event_timestamps(batch, &self.operator)? } else { vec![now_millis(); batch.len()] };
        let Self { key, wf, assigner, windows, out, lateness, watermark, .. } = self;
        let bounds = WindowBounds { assigner: *assigner, lateness_ms: *lateness };
        windows.with(Accumulate { batch, timestamps: &timestamps, bounds, wm: *watermark, key, wf, out })?;
        self.out.flush()
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match (event, self.assigner.domain()) {
            (Control::Watermark(wm), TimeDomain::EventTime) => {
                self.watermark = self.watermark.max(wm);
                self.advance(wm)?;
            }
            (Control::Tick(now), TimeDomain::ProcessingTime) => self.advance(now)?,
            (Control::Barrier(id), _) if self.checkpoint.enabled() => {
                let snapshot =
                    self.windows.snapshot(id, self.checkpoint.completed(), self.checkpoint.max_parallelism())?;
                self.checkpoint.snapshot_state(snapshot, self.watermark)?;
            }
            _ => {}
        }
        self.out.control(event)
    }

    fn finish(&mut self) -> Result<()> {
        self.advance(Timestamp::MAX - 1)?;
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::testing::{
        Checkpoints, Event, Fired, MakeFn, Seen, Step, SumCount, check_key_groups, check_restore, env, on_backend,
        restores, steps, uninterrupted, watermarks,
    };
    use std::collections::BTreeMap;

    fn make(assigner: WindowAssigner, lateness: i64) -> MakeFn {
        on_disk(assigner, lateness, false, false)
    }

    /// Like [`make`], on the disk backend for a fresh start (`fresh`) or a restore (`restored`).
    fn on_disk(assigner: WindowAssigner, lateness: i64, fresh: bool, restored: bool) -> MakeFn {
        Box::new(move |env, next, late| {
            let env = on_backend(env, if restores(env) { restored } else { fresh });
            let op = TimeWindowOperator::new(|e: &Event| e.0, SumCount, assigner, lateness, "w".into(), late, next)?;
            Ok(Box::new(op.checkpointed(&env)?))
        })
    }

    const TUMBLING: WindowAssigner = WindowAssigner::Tumbling { size: 100, offset: 0, domain: TimeDomain::EventTime };
    const SLIDING: WindowAssigner =
        WindowAssigner::Sliding { size: 100, slide: 40, offset: 0, domain: TimeDomain::EventTime };

    #[test]
    fn tumbling_and_sliding_windows_go_on_from_a_snapshot_at_any_parallelism() -> Result<()> {
        for (seed, assigner) in [(3, TUMBLING), (11, SLIDING)] {
            for lateness in [0, 60] {
                let steps = steps(seed, 300, 5, 100);
                for (from, to) in [(1, 1), (1, 2), (2, 1), (2, 3)] {
                    for cut in [steps.len() / 3, 2 * steps.len() / 3] {
                        let snaps = check_restore(&*make(assigner, lateness), &steps, cut, from, to)?;
                        assert!(check_key_groups::<(Timestamp, bool, (i64, u32))>(&snaps)? > 0);
                        assert_eq!(watermarks(&snaps)?.len(), from as usize, "one watermark per subtask");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn windows_on_the_disk_backend_fire_as_on_the_heap_and_restore_across_backends() -> Result<()> {
        let mut late_records = 0;
        for (seed, assigner) in [(5, TUMBLING), (13, SLIDING)] {
            for lateness in [0, 60] {
                let steps = steps(seed, 300, 7, 100);
                let heap = uninterrupted(&*make(assigner, lateness), &steps)?;
                let disk = uninterrupted(&*on_disk(assigner, lateness, true, true), &steps)?;
                assert!(!heap.0.is_empty(), "windows fire");
                late_records += heap.1.len();
                assert_eq!(disk, heap, "{assigner:?}, lateness {lateness}");
                // Disk to disk, disk to heap and heap to disk, at other parallelisms.
                for (fresh, restored) in [(true, true), (true, false), (false, true)] {
                    for (from, to) in [(1, 2), (2, 1), (2, 3)] {
                        let cut = steps.len() / 2;
                        check_restore(&*on_disk(assigner, lateness, fresh, restored), &steps, cut, from, to)?;
                    }
                }
            }
        }
        assert!(late_records > 0, "some records came too late for their windows");
        // A late firing of a window restored as fired, on disk.
        let steps = vec![
            Step::Records(vec![(1, 10, 1), (2, 20, 1), (1, 200, 1)]),
            Step::Watermark(99),
            Step::Records(vec![(1, 50, 5)]),
            Step::Watermark(199),
            Step::Records(vec![(2, 20, 7)]),
        ];
        for cut in 1..steps.len() {
            check_restore(&*on_disk(TUMBLING, 60, true, true), &steps, cut, 1, 2)?;
        }
        Ok(())
    }

    #[test]
    fn a_restored_window_keeps_its_watermark_so_late_firings_and_late_records_are_the_same() -> Result<()> {
        // [0, 100) fires at watermark 99; after the restore a record at 50 (within the lateness of
        // 60) fires it again with both records, and one at 20 after watermark 199 is late.
        let steps = vec![
            Step::Records(vec![(1, 10, 1), (1, 200, 1)]),
            Step::Watermark(99),
            Step::Records(vec![(1, 50, 5)]),
            Step::Records(vec![(1, 300, 1)]),
            Step::Watermark(199),
            Step::Records(vec![(1, 20, 7)]),
        ];
        let (fired, late) = uninterrupted(&*make(TUMBLING, 60), &steps)?;
        assert!(fired.contains(&((1, 0, 100, 1, 1), Some(99))) && fired.contains(&((1, 0, 100, 6, 2), Some(99))));
        assert_eq!(late, vec![((1, 20, 7), Some(20))]);
        for cut in 1..steps.len() {
            for (from, to) in [(1, 1), (1, 2), (2, 1)] {
                let snaps = check_restore(&*make(TUMBLING, 60), &steps, cut, from, to)?;
                if cut >= 2 {
                    assert_eq!(watermarks(&snaps)?.into_iter().max(), Some(if cut >= 5 { 199 } else { 99 }));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn processing_time_windows_keep_their_windows_but_no_watermark() -> Result<()> {
        let day = WindowAssigner::Tumbling { size: 86_400_000, offset: 0, domain: TimeDomain::ProcessingTime };
        let make = make(day, 0);
        let cps = Checkpoints::new()?;
        let task = cps.task(0);
        let seen: Seen<Fired> = Default::default();
        let collect = crate::window::testing::Collect(seen.clone());
        let mut op = make(&env(task.clone(), 0, 1, &[]), Box::new(collect), Box::new(crate::output::NullOutput))?;
        op.push(&mut Batch::of(vec![(1, 0, 1), (2, 0, 2)]))?;
        op.control(Control::Barrier(1))?;
        let snap = cps.taken(&task, 1)?;
        assert!(watermarks(std::slice::from_ref(&snap))?.is_empty() && snap.lists.is_empty());
        assert_eq!(check_key_groups::<(Timestamp, bool, (i64, u32))>(std::slice::from_ref(&snap))?, 2);
        let collect = crate::window::testing::Collect(seen.clone());
        let mut op = make(&env(cps.task(0), 0, 1, &[snap]), Box::new(collect), Box::new(crate::output::NullOutput))?;
        op.push(&mut Batch::of(vec![(1, 0, 4)]))?;
        op.finish()?;
        // Per key, over however many windows the wall clock made.
        let mut totals = BTreeMap::new();
        for ((k, _, _, sum, n), _) in seen.borrow().iter() {
            let t = totals.entry(*k).or_insert((0, 0));
            *t = (t.0 + sum, t.1 + n);
        }
        assert_eq!(totals, BTreeMap::from([(1, (5, 2)), (2, (2, 1))]));
        Ok(())
    }

    #[test]
    fn a_window_fired_in_one_old_subtask_is_not_fired_again_when_another_was_behind() -> Result<()> {
        // Old subtask 0 saw watermark 150 (so [0, 100) fired for key 1), old subtask 1 only 50; the
        // restored operator goes on from watermark 50 and must treat key 1's window as fired.
        let make = make(TUMBLING, 100);
        let cps = Checkpoints::new()?;
        let mut snaps = Vec::new();
        let fired: Seen<Fired> = Default::default();
        for (subtask, wm) in [(0, 150), (1, 50)] {
            let task = cps.task(subtask);
            let collect = crate::window::testing::Collect(fired.clone());
            let mut op =
                make(&env(task.clone(), subtask, 2, &[]), Box::new(collect), Box::new(crate::output::NullOutput))?;
            if subtask == 0 {
                op.push(&mut Batch::timestamped(vec![(1, 10, 1)], vec![10]))?;
            }
            op.control(Control::Watermark(wm))?;
            op.control(Control::Barrier(1))?;
            snaps.push(cps.taken(&task, 1)?);
        }
        assert_eq!(fired.borrow().clone(), vec![((1, 0, 100, 1, 1), Some(99))]);
        fired.borrow_mut().clear();
        let collect = crate::window::testing::Collect(fired.clone());
        let cps2 = Checkpoints::new()?;
        let mut op = make(&env(cps2.task(0), 0, 1, &snaps), Box::new(collect), Box::new(crate::output::NullOutput))?;
        op.push(&mut Batch::timestamped(vec![(1, 20, 2)], vec![20]))?;
        // A late firing with both records at once; nothing more when the watermark passes.
        assert_eq!(fired.borrow().clone(), vec![((1, 0, 100, 3, 2), Some(99))]);
        op.control(Control::Watermark(150))?;
        op.finish()?;
        assert_eq!(fired.borrow().len(), 1, "{:?}", fired.borrow());
        Ok(())
    }
}
