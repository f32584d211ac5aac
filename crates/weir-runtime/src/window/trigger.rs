//! The window operator for custom triggers and evictors.
//!
//! A [`Trigger`] decides, per key and window, when the window's function is evaluated (fires)
//! and when its contents are dropped (purges), from the records that arrive and from timers it
//! registers. An [`Evictor`] removes records from a window before or after evaluation. The window
//! operators in [`super::time`] and [`super::session`] implement the default triggers without
//! per-window timers; [`TriggerWindowOperator`] serves windows that declare their own. The
//! triggers and evictors themselves are in [`super::policy`], re-exported here.

use std::hash::Hash;

use weir_core::Result;

use super::{TimeDomain, TimeWindow, WindowAssigner, WindowBounds, WindowCheckpointing, WindowFunction, WindowOutputs};
use crate::disk::KeyedChunks;
use crate::exchange::now_millis;
use crate::output::{Batch, Control, Output, Timestamp};
use crate::state::backend::{Derived, HeapView, KeyedTable, Queue, Restored, TableSpec};
use crate::state::heap::HeapTable;
use crate::state::table::Table;

pub use super::policy::{
    CountEvictor, CountTrigger, EventTimeTrigger, Evictor, NoEvictor, ProcessingTimeTrigger, PurgingTrigger,
    TimeEvictor, Trigger, TriggerContext, TriggerResult,
};

#[derive(serde::Serialize, serde::Deserialize)]
struct Pane<T, S> {
    records: Vec<(T, Timestamp)>,
    state: S,
}

/// The timer queues of the panes' table: trigger timers per domain (event time, processing time),
/// kept in snapshots; then the cleanup schedule per domain, derived from the panes' windows. Their
/// tags name them in the disk backend's store.
const QUEUES: &[Queue] = &[
    Queue { tag: b"trigger-timers:event", derived: false },
    Queue { tag: b"trigger-timers:processing", derived: false },
    Queue { tag: b"trigger-cleanup:event", derived: true },
    Queue { tag: b"trigger-cleanup:processing", derived: true },
];
/// The first of [`QUEUES`]' cleanup queues (a domain's is this plus the domain's index).
const CLEANUP: usize = 2;

/// The key group of a pane: its record key's.
fn pane_group<K: Hash>(pane: &(K, TimeWindow), max_parallelism: u32) -> u32 {
    weir_core::keygroup::key_group(&pane.0, max_parallelism)
}

/// One keyed entry of a [`TriggerWindowOperator`]'s snapshot (`R`, `S`: the records and trigger
/// state, borrowed when written, owned when read).
#[derive(serde::Serialize, serde::Deserialize)]
enum TriggerEntry<R, S> {
    /// A window's pane.
    Pane { window: TimeWindow, records: R, state: S },
    /// A live trigger timer of a window.
    Timer { window: TimeWindow, event_time: bool, at: Timestamp },
}

/// Keyed windows (tumbling, sliding or global) with a custom trigger and optional evictor. The
/// window's records are kept and the function is evaluated over them when the trigger fires.
///
/// In a checkpoint it keeps every pane (the window's records with their timestamps, and the
/// trigger's state) and every live trigger timer, grouped by the key group of the key, and its
/// watermark; the cleanup of panes follows from their windows and is scheduled again on restore.
/// Processing time is the wall clock and is not kept.
///
/// The panes are a keyed table (one value per key and window) in the job's state backend, and the
/// trigger timers and the cleanup schedule are timer queues of the same table: with the disk
/// backend (`state.backend.type: disk`) all of them are in the instance's store, so memory holds
/// none of them per pane.
pub struct TriggerWindowOperator<K, T, KF, WF: WindowFunction<K, T>, Tr: Trigger<T>, Ev> {
    key: KF,
    wf: WF,
    trigger: Tr,
    evictor: Ev,
    assigner: WindowAssigner,
    lateness: i64,
    /// The panes by key and window, with the [`QUEUES`].
    panes: Table<(K, TimeWindow), Pane<T, Tr::State>>,
    watermark: Timestamp,
    now: Timestamp,
    out: WindowOutputs<T, WF::Out>,
    checkpoint: WindowCheckpointing,
}

const EVENT: usize = 0;
const PROCESSING: usize = 1;

impl<K, T, KF, WF, Tr, Ev> TriggerWindowOperator<K, T, KF, WF, Tr, Ev>
where
    K: Hash + Eq + Clone,
    T: Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
    Tr: Trigger<T>,
    Ev: Evictor<T>,
{
    /// An operator; its windows must not be sessions.
    pub fn new(
        key: KF,
        wf: WF,
        trigger: Tr,
        evictor: Ev,
        bounds: WindowBounds,
        late: Box<dyn Output<T>>,
        next: Box<dyn Output<WF::Out>>,
    ) -> Result<Self> {
        let WindowBounds { assigner, lateness_ms: allowed_lateness_ms } = bounds;
        assigner.validate()?;
        if let WindowAssigner::Session { .. } = assigner {
            return Err(weir_core::Error::invalid_job(
                "custom triggers and evictors work with tumbling, sliding and global windows, not sessions",
            ));
        }
        Ok(TriggerWindowOperator {
            key,
            wf,
            trigger,
            evictor,
            assigner,
            lateness: allowed_lateness_ms.max(0),
            panes: Table::Heap(HeapTable::with_queues(QUEUES.len())),
            watermark: Timestamp::MIN,
            now: now_millis(),
            out: WindowOutputs::new(next, late),
            checkpoint: WindowCheckpointing::default(),
        })
    }

    /// Takes part in the checkpoints of the task `env` describes, starting from the state (panes,
    /// timers and watermark) it restored.
    pub fn checkpointed(mut self, env: &crate::context::TaskEnv) -> Result<Self>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        // Triggers see the watermark in every domain (and global windows follow event time).
        self.checkpoint = WindowCheckpointing::of(env, true)?;
        if let Some(wm) = self.checkpoint.restored_watermark()? {
            self.watermark = self.watermark.max(wm);
        }
        type Owned<T, S> = TriggerEntry<Vec<(T, Timestamp)>, S>;
        let mut restored = Restored::default();
        for (k, entry) in crate::checkpoint::restore_keyed::<K, Owned<T, Tr::State>>(&env.restored_keyed)? {
            match entry {
                TriggerEntry::Pane { window, records, state } => {
                    restored.entries.push(((k, window), Pane { records, state }))
                }
                TriggerEntry::Timer { window, event_time, at } => {
                    restored.timers.push((if event_time { EVENT } else { PROCESSING }, at, (k, window)));
                }
            }
        }
        let schedule = self.cleanup_schedule();
        let derive = move |(_, w): &(K, TimeWindow), _: &Pane<T, Tr::State>, out: &mut Derived| {
            if let Some((d, at)) = schedule(*w) {
                out.push((CLEANUP + d, at));
            }
        };
        self.panes = Table::open(&env.state(), TableSpec { group: pane_group::<K>, queues: QUEUES }, restored, derive)?;
        Ok(self)
    }

    /// Every pane and live timer (of the heap backend's table) by the key group of its key.
    fn encode(view: HeapView<'_, (K, TimeWindow), Pane<T, Tr::State>>, max_parallelism: u32) -> Result<KeyedChunks>
    where
        K: serde::Serialize,
        T: serde::Serialize,
    {
        let panes = view
            .values
            .iter()
            .map(|((k, w), p)| (k, TriggerEntry::Pane { window: *w, records: &p.records, state: &p.state }));
        let timers = view.timers.iter().take(CLEANUP).enumerate().flat_map(|(d, timers)| {
            timers
                .iter()
                .map(move |(at, (k, w))| (k, TriggerEntry::Timer { window: *w, event_time: d == EVENT, at: *at }))
        });
        crate::checkpoint::snapshot_keyed_entries(panes.chain(timers), max_parallelism)
    }

    fn event_time_windows(&self) -> bool {
        self.assigner.domain() == TimeDomain::EventTime && self.assigner != WindowAssigner::Global
    }

    /// When a pane of window `w` is removed: event-time windows once the watermark passes their
    /// end and lateness, processing-time ones once the clock passes their end (domain and time);
    /// global windows never.
    fn cleanup_schedule(&self) -> impl Fn(TimeWindow) -> Option<(usize, Timestamp)> + use<K, T, KF, WF, Tr, Ev> {
        let (event, processing, lateness) =
            (self.event_time_windows(), self.assigner.domain() == TimeDomain::ProcessingTime, self.lateness);
        move |w| {
            if event {
                Some((EVENT, w.max_timestamp().saturating_add(lateness)))
            } else if processing {
                Some((PROCESSING, w.max_timestamp()))
            } else {
                None
            }
        }
    }

    /// Schedules the removal of the new pane `(k, w)`.
    fn schedule_cleanup(&mut self, k: &K, w: TimeWindow) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        let Some((d, at)) = self.cleanup_schedule()(w) else { return Ok(()) };
        self.panes.add_timer(CLEANUP + d, at, &(k.clone(), w))
    }

    fn register(&mut self, k: &K, w: TimeWindow, timers: Vec<(TimeDomain, Timestamp)>) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        for (domain, at) in timers {
            let d = if domain == TimeDomain::EventTime { EVENT } else { PROCESSING };
            self.panes.add_timer(d, at, &(k.clone(), w))?;
        }
        Ok(())
    }

    /// The next live timer of `domain` at or before `time`, removed: its time, key and window.
    fn next_timer(&mut self, domain: usize, time: Timestamp) -> Result<Option<(Timestamp, K, TimeWindow)>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        Ok(self.panes.pop_timer(domain, time)?.map(|(at, (k, w))| (at, k, w)))
    }

    /// Acts on a trigger's decision for `(k, w)`.
    fn act(&mut self, k: &K, w: TimeWindow, result: TriggerResult) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        if result == TriggerResult::Continue {
            return Ok(());
        }
        let Some(pane) = self.panes.get_mut(&(k.clone(), w))? else { return Ok(()) };
        if result.fires() {
            self.evictor.evict_before(&mut pane.records, &w);
            let mut acc = self.wf.create();
            for (r, _) in &pane.records {
                self.wf.add(&mut acc, r.clone());
            }
            self.out.emit(&mut self.wf, k, w, &acc);
            self.evictor.evict_after(&mut pane.records, &w);
        }
        if result.purges() {
            pane.records.clear();
            pane.state = Tr::State::default();
        }
        Ok(())
    }

    fn fire_timers(&mut self, domain: usize, time: Timestamp) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        while let Some((at, k, w)) = self.next_timer(domain, time)? {
            let mut new_timers = Vec::new();
            let result = match self.panes.get_mut(&(k.clone(), w))? {
                None => continue,
                Some(pane) => {
                    let mut ctx = TriggerContext {
                        watermark: self.watermark,
                        now: self.now,
                        count: pane.records.len(),
                        timers: &mut new_timers,
                    };
                    if domain == EVENT {
                        self.trigger.on_event_time(at, &w, &mut pane.state, &mut ctx)
                    } else {
                        self.trigger.on_processing_time(at, &w, &mut pane.state, &mut ctx)
                    }
                }
            };
            self.register(&k, w, new_timers)?;
            self.act(&k, w, result)?;
        }
        Ok(())
    }

    fn clean_up(&mut self, domain: usize, time: Timestamp) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        while let Some((_, pane)) = self.panes.pop_timer(CLEANUP + domain, time)? {
            self.panes.remove(&pane)?;
        }
        Ok(())
    }
}

impl<K, T, KF, WF, Tr, Ev> Output<T> for TriggerWindowOperator<K, T, KF, WF, Tr, Ev>
where
    K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
    T: Clone + serde::Serialize + serde::de::DeserializeOwned,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
    Tr: Trigger<T>,
    Ev: Evictor<T>,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let event_windows = self.event_time_windows();
        if event_windows && batch.timestamps.is_none() {
            super::event_timestamps(batch, "window")?;
        }
        self.now = now_millis();
        let processing = self.assigner.domain() == TimeDomain::ProcessingTime;
        let records: Vec<(T, Option<Timestamp>)> = batch.drain().collect();
        let mut windows = Vec::with_capacity(1);
        for (x, ts) in records {
            let ts = if processing { self.now } else { ts.unwrap_or(Timestamp::MIN) };
            windows.clear();
            self.assigner.for_each_window(ts, |w| windows.push(w));
            if event_windows {
                let (wm, lateness) = (self.watermark, self.lateness);
                windows.retain(|w| w.max_timestamp().saturating_add(lateness) > wm);
                if windows.is_empty() {
                    self.out.late(x, ts);
                    continue;
                }
            }
            let k = (self.key)(&x);
            for &w in &windows {
                let empty = || Pane { records: Vec::new(), state: Tr::State::default() };
                let (pane, fresh) = self.panes.entry(&(k.clone(), w), empty)?;
                pane.records.push((x.clone(), ts));
                let mut new_timers = Vec::new();
                let mut ctx = TriggerContext {
                    watermark: self.watermark,
                    now: self.now,
                    count: pane.records.len(),
                    timers: &mut new_timers,
                };
                let result = self.trigger.on_element(&x, ts, &w, &mut pane.state, &mut ctx);
                self.register(&k, w, new_timers)?;
                if fresh {
                    self.schedule_cleanup(&k, w)?;
                }
                self.act(&k, w, result)?;
            }
        }
        self.out.flush()
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match event {
            Control::Watermark(wm) => {
                self.watermark = self.watermark.max(wm);
                self.fire_timers(EVENT, wm)?;
                self.clean_up(EVENT, wm)?;
                self.out.flush()?;
            }
            Control::Tick(now) => {
                self.now = now;
                self.fire_timers(PROCESSING, now)?;
                self.clean_up(PROCESSING, now)?;
                self.out.flush()?;
            }
            Control::Barrier(id) if self.checkpoint.enabled() => {
                let max_parallelism = self.checkpoint.max_parallelism();
                let snapshot =
                    self.panes.snapshot(id, self.checkpoint.completed(), |view| Self::encode(view, max_parallelism))?;
                self.checkpoint.snapshot_state(snapshot, self.watermark)?;
            }
            Control::Idle(_) | Control::Barrier(_) => {}
        }
        self.out.control(event)
    }

    fn finish(&mut self) -> Result<()> {
        // As the other processing-time windows do at the end of input: time runs out, timers fire.
        self.now = Timestamp::MAX;
        self.fire_timers(PROCESSING, Timestamp::MAX)?;
        self.out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::testing::{
        Event, MakeFn, Step, SumCount, check_key_groups, check_restore, on_backend, restores, steps, uninterrupted,
        watermarks,
    };

    fn make<Tr: Trigger<Event>, Ev: Evictor<Event>>(
        trigger: Tr,
        evictor: Ev,
        assigner: WindowAssigner,
        lateness: i64,
    ) -> MakeFn {
        on_disk(trigger, evictor, assigner, lateness, false, false)
    }

    /// Like [`make`], on the disk backend for a fresh start (`fresh`) or a restore (`restored`).
    fn on_disk<Tr: Trigger<Event>, Ev: Evictor<Event>>(
        trigger: Tr,
        evictor: Ev,
        assigner: WindowAssigner,
        lateness: i64,
        fresh: bool,
        restored: bool,
    ) -> MakeFn {
        Box::new(move |env, next, late| {
            let env = &on_backend(env, if restores(env) { restored } else { fresh });
            let op = TriggerWindowOperator::new(
                |e: &Event| e.0,
                SumCount,
                trigger.clone(),
                evictor.clone(),
                WindowBounds { assigner, lateness_ms: lateness },
                late,
                next,
            )?;
            Ok(Box::new(op.checkpointed(env)?))
        })
    }

    const TUMBLING: WindowAssigner = WindowAssigner::Tumbling { size: 100, offset: 0, domain: TimeDomain::EventTime };
    const SLIDING: WindowAssigner =
        WindowAssigner::Sliding { size: 100, slide: 40, offset: 0, domain: TimeDomain::EventTime };

    #[test]
    fn panes_trigger_state_and_timers_go_on_from_a_snapshot_at_any_parallelism() -> Result<()> {
        let cases: Vec<(&str, MakeFn, u64)> = vec![
            ("global, count trigger", make(CountTrigger::of(3), NoEvictor, WindowAssigner::Global, 0), 1),
            (
                "tumbling, event-time trigger, count evictor",
                make(EventTimeTrigger, CountEvictor::of(2), TUMBLING, 50),
                2,
            ),
            ("sliding, purging count trigger", make(PurgingTrigger::of(CountTrigger::of(2)), NoEvictor, SLIDING, 0), 3),
        ];
        for (what, make, seed) in cases {
            let steps = steps(seed, 250, 5, 100);
            for (from, to) in [(1, 1), (1, 2), (2, 1), (2, 3)] {
                for cut in [steps.len() / 3, 2 * steps.len() / 3] {
                    let snaps = check_restore(&*make, &steps, cut, from, to)?;
                    let entries = check_key_groups::<TriggerEntry<Vec<(Event, Timestamp)>, u64>>(&snaps)
                        .or_else(|_| check_key_groups::<TriggerEntry<Vec<(Event, Timestamp)>, ()>>(&snaps))?;
                    assert!(entries > 0, "{what}");
                    assert_eq!(watermarks(&snaps)?.len(), from as usize, "{what}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn panes_on_the_disk_backend_fire_as_on_the_heap_and_restore_across_backends() -> Result<()> {
        type Case = (&'static str, fn(bool, bool) -> MakeFn);
        let cases: [Case; 3] = [
            ("global, count trigger", |f, r| on_disk(CountTrigger::of(3), NoEvictor, WindowAssigner::Global, 0, f, r)),
            ("tumbling, event-time trigger, count evictor", |f, r| {
                on_disk(EventTimeTrigger, CountEvictor::of(2), TUMBLING, 50, f, r)
            }),
            ("sliding, purging count trigger", |f, r| {
                on_disk(PurgingTrigger::of(CountTrigger::of(2)), NoEvictor, SLIDING, 0, f, r)
            }),
        ];
        for (what, make) in cases {
            // 9 keys and a cache of 3: panes go to the store and come back from it.
            let steps = steps(29, 250, 9, 100);
            let heap = uninterrupted(&*make(false, false), &steps)?;
            assert!(!heap.0.is_empty(), "{what}: windows fire");
            assert_eq!(uninterrupted(&*make(true, true), &steps)?, heap, "{what}");
            for (fresh, restored) in [(true, true), (true, false), (false, true)] {
                for (from, to) in [(1, 2), (2, 1), (2, 3)] {
                    check_restore(&*make(fresh, restored), &steps, steps.len() / 2, from, to)?;
                }
            }
        }
        Ok(())
    }

    #[test]
    fn restored_timers_fire_and_restored_panes_are_cleaned_up() -> Result<()> {
        // Key 3's window [0, 100) has a timer at 99 when the snapshot is taken; it fires after the
        // restore. Its pane is kept for the lateness of 50: the record at 40 fires it again (with
        // the evictor keeping the last two records), the one at 30 after watermark 160 is late.
        let steps = vec![
            Step::Records(vec![(3, 10, 1), (3, 20, 2), (3, 30, 4)]),
            Step::Watermark(50),
            Step::Watermark(120),
            Step::Records(vec![(3, 40, 8)]),
            Step::Watermark(160),
            Step::Records(vec![(3, 30, 16)]),
        ];
        let make = make(EventTimeTrigger, CountEvictor::of(2), TUMBLING, 50);
        let (fired, late) = uninterrupted(&*make, &steps)?;
        assert_eq!(fired, vec![((3, 0, 100, 6, 2), Some(99)), ((3, 0, 100, 12, 2), Some(99))]);
        assert_eq!(late, vec![((3, 30, 16), Some(30))]);
        for cut in 1..steps.len() {
            for (from, to) in [(1, 1), (2, 1), (1, 2)] {
                let snaps = check_restore(&*make, &steps, cut, from, to)?;
                if cut == 2 && from == 1 {
                    // The pane and its timer.
                    let entries = check_key_groups::<TriggerEntry<Vec<(Event, Timestamp)>, ()>>(&snaps)?;
                    assert_eq!(entries, 2);
                    // The restored pane is dropped once the watermark passes its end and lateness.
                    let env = crate::window::testing::env(Default::default(), 0, 1, &snaps);
                    let (next, late) = (Box::new(crate::output::NullOutput), Box::new(crate::output::NullOutput));
                    let mut op = TriggerWindowOperator::new(
                        |e: &Event| e.0,
                        SumCount,
                        EventTimeTrigger,
                        CountEvictor::of(2),
                        WindowBounds { assigner: TUMBLING, lateness_ms: 50 },
                        late,
                        next,
                    )?
                    .checkpointed(&env)?;
                    let heap = |op: &TriggerWindowOperator<_, _, _, _, _, _>| -> Result<(usize, usize)> {
                        let t = op.panes.heap().ok_or_else(|| weir_core::Error::internal("not on the heap"))?;
                        Ok((t.len(), t.queued(EVENT)))
                    };
                    assert_eq!((heap(&op)?, op.watermark), ((1, 1), 50));
                    op.control(Control::Watermark(148))?;
                    assert_eq!(heap(&op)?, (1, 0), "fired, kept for the lateness");
                    op.control(Control::Watermark(149))?;
                    assert_eq!(heap(&op)?.0, 0);
                }
            }
        }
        // The same on the disk backend, where the timer and the cleanup entry live in the store.
        let on_disk = on_disk(EventTimeTrigger, CountEvictor::of(2), TUMBLING, 50, true, true);
        assert_eq!(uninterrupted(&*on_disk, &steps)?, (fired, late));
        for cut in 1..steps.len() {
            for (from, to) in [(1, 1), (2, 1), (1, 2)] {
                check_restore(&*on_disk, &steps, cut, from, to)?;
            }
        }
        let env = on_backend(&crate::window::testing::env(Default::default(), 0, 1, &[]), true);
        let (next, late) = (Box::new(crate::output::NullOutput), Box::new(crate::output::NullOutput));
        let mut op = TriggerWindowOperator::new(
            |e: &Event| e.0,
            SumCount,
            EventTimeTrigger,
            NoEvictor,
            WindowBounds { assigner: TUMBLING, lateness_ms: 50 },
            late,
            next,
        )?
        .checkpointed(&env)?;
        let events: Vec<Event> = (0..40).map(|k| (k, 10, 1)).collect();
        let ts = events.iter().map(|e| e.1).collect();
        op.push(&mut Batch::timestamped(events, ts))?;
        let aside = |op: &mut TriggerWindowOperator<_, _, _, _, _, _>| -> Result<usize> {
            let mut n = 0;
            let disk = op.panes.disk().ok_or_else(|| weir_core::Error::internal("not on disk"))?;
            disk.store().scan_aside(|_, _| {
                n += 1;
                Ok(())
            })?;
            Ok(n)
        };
        assert_eq!(aside(&mut op)?, 80, "a timer and a cleanup entry per pane, in the store");
        let disk = op.panes.disk().ok_or_else(|| weir_core::Error::internal("not on disk"))?;
        // 40 panes in key groups of their own, two queued entries each, all in the store: memory holds
        // a position per queue and key group that has entries.
        let positions: Vec<usize> = (0..QUEUES.len()).map(|q| disk.queue_key_groups(q)).collect();
        let groups: std::collections::BTreeSet<u32> =
            (0..40u32).map(|k| weir_core::keygroup::key_group(&k, crate::window::testing::MAX_PARALLELISM)).collect();
        assert_eq!(positions, vec![groups.len(), 0, groups.len(), 0], "nothing per pane in memory");
        op.control(Control::Watermark(99))?;
        assert_eq!(aside(&mut op)?, 40, "the timers fired; the cleanup entries wait for the lateness");
        op.control(Control::Watermark(149))?;
        assert_eq!(aside(&mut op)?, 0);
        let disk = op.panes.disk().ok_or_else(|| weir_core::Error::internal("not on disk"))?;
        assert!(disk.store().next_key(&[])?.is_none(), "the panes are gone too");
        Ok(())
    }
}
