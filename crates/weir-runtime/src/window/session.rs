//! Session windows: per key, records closer than the gap share a window; windows merge as
//! records fill the gaps between them.

use std::hash::Hash;

use weir_core::{Error, Result};

use super::{TimeDomain, TimeWindow, WindowAssigner, WindowCheckpointing, WindowFunction, WindowOutputs};
use crate::exchange::now_millis;
use crate::output::{Batch, Control, Output, Timestamp};
use crate::state::backend::{Derived, HeapView, KeyedTable, Queue, Restored, TableSpec};
use crate::state::heap::HeapTable;
use crate::state::map::StateMap;
use crate::state::table::Table;

#[derive(serde::Serialize, serde::Deserialize)]
struct Session<A> {
    window: TimeWindow,
    acc: A,
    fired: bool,
}

/// The index of session ends: which keys to visit when time passes a point. Derived from the
/// sessions (rebuilt from them on restore); its tag names it in the disk backend's store.
const QUEUES: &[Queue] = &[Queue { tag: b"session-ends", derived: true }];
const ENDS: usize = 0;

/// Keyed session windows with an incremental [`WindowFunction`] (its `merge` joins sessions).
///
/// A record at `t` opens the window `[t, t + gap)`, which merges with every session of its key it
/// overlaps. Firing, lateness and late output work as for [`super::time::TimeWindowOperator`].
///
/// In a checkpoint it keeps every session per key (window, whether it fired, accumulator), grouped
/// by the key group of the key, and its watermark.
///
/// A key's sessions are one value of its keyed table, in the job's state backend, and the index of
/// session ends (which keys to visit when the watermark passes a time) is a timer queue of the same
/// table: with the disk backend (`state.backend.type: disk`) both are in the instance's store.
pub struct SessionWindowOperator<K, T, KF, WF: WindowFunction<K, T>> {
    key: KF,
    wf: WF,
    gap: i64,
    domain: TimeDomain,
    lateness: i64,
    /// Every key's sessions; its queue [`ENDS`] holds the keys that have (or had: entries may be
    /// stale after merges) a session ending at a time.
    sessions: Table<K, Vec<Session<WF::Acc>>>,
    watermark: Timestamp,
    operator: String,
    out: WindowOutputs<T, WF::Out>,
    checkpoint: WindowCheckpointing,
}

impl<K, T, KF, WF> SessionWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
{
    /// A session window operator; `assigner` must be a session assigner.
    pub fn new(
        key: KF,
        wf: WF,
        assigner: WindowAssigner,
        allowed_lateness_ms: i64,
        operator: String,
        late: Box<dyn Output<T>>,
        next: Box<dyn Output<WF::Out>>,
    ) -> Result<Self> {
        let WindowAssigner::Session { gap, domain } = assigner else {
            // (Global windows go to the trigger operator.)
            return Err(Error::internal("the session window operator needs a session assigner"));
        };
        assigner.validate()?;
        Ok(SessionWindowOperator {
            key,
            wf,
            gap,
            domain,
            lateness: if domain == TimeDomain::EventTime { allowed_lateness_ms.max(0) } else { 0 },
            sessions: Table::Heap(HeapTable::with_queues(QUEUES.len())),
            watermark: Timestamp::MIN,
            operator,
            out: WindowOutputs::new(next, late),
            checkpoint: WindowCheckpointing::default(),
        })
    }

    /// Takes part in the checkpoints of the task `env` describes, starting from the state (sessions
    /// and watermark) it restored.
    pub fn checkpointed(mut self, env: &crate::context::TaskEnv) -> Result<Self>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        // Processing-time sessions follow the wall clock: no watermark to keep.
        self.checkpoint = WindowCheckpointing::of(env, self.domain == TimeDomain::EventTime)?;
        if let Some(wm) = self.checkpoint.restored_watermark()? {
            self.watermark = self.watermark.max(wm);
        }
        let entries = crate::checkpoint::restore_keyed::<K, (TimeWindow, bool, WF::Acc)>(&env.restored_keyed)?;
        let mut sessions: StateMap<K, Vec<Session<WF::Acc>>> = StateMap::default();
        for (k, (window, fired, acc)) in entries {
            sessions.entry(k).or_default().push(Session { window, acc, fired });
        }
        let lateness = self.lateness;
        // As `add` and `advance` index them: by end until they fire, then by end of lateness.
        let derive = move |_: &K, ss: &Vec<Session<WF::Acc>>, out: &mut Derived| {
            for s in ss {
                out.push((ENDS, if s.fired { s.window.end.saturating_add(lateness) } else { s.window.end }));
            }
        };
        let spec = TableSpec { group: weir_core::keygroup::key_group::<K>, queues: QUEUES };
        let restored = Restored { entries: sessions.into_iter().collect(), timers: Vec::new() };
        self.sessions = Table::open(&env.state(), spec, restored, derive)?;
        Ok(self)
    }

    fn add(&mut self, x: T, ts: Timestamp) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        let wm = self.watermark;
        let mut window = TimeWindow { start: ts, end: ts.saturating_add(self.gap) };
        let k = (self.key)(&x);
        let sessions = self.sessions.value(&k, Vec::new)?;
        // Merge every session the new window intersects; windows that touch intersect (Flink's
        // TimeWindow.intersects is inclusive), so records exactly `gap` apart share a session.
        let mut acc = self.wf.create();
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.window.start <= window.end && window.start <= s.window.end {
                let s = sessions.swap_remove(i);
                window = TimeWindow { start: window.start.min(s.window.start), end: window.end.max(s.window.end) };
                self.wf.merge(s.acc, &mut acc);
            } else {
                i += 1;
            }
        }
        if window.max_timestamp().saturating_add(self.lateness) <= wm {
            // Late even after merging: only possible when nothing was merged.
            if sessions.is_empty() {
                self.sessions.remove(&k)?;
            }
            self.out.late(x, ts);
            return Ok(());
        }
        self.wf.add(&mut acc, x);
        // A merged session counts as fired only if it is complete already (then it fires now, a late
        // firing); otherwise it fires when the watermark passes its new end, whatever its parts did.
        let complete = window.max_timestamp() <= wm;
        if complete {
            self.out.emit(&mut self.wf, &k, window, &acc);
        }
        sessions.push(Session { window, acc, fired: complete });
        let at = if complete { window.end.saturating_add(self.lateness) } else { window.end };
        self.index(k, at)
    }

    /// Notes that `k` has a session to visit once time passes `at - 1`.
    fn index(&mut self, k: K, at: Timestamp) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.sessions.add_timer(ENDS, at, &k)
    }

    /// The next key with a session indexed at or before `time + 1`, its index entry removed.
    fn next_due(&mut self, time: Timestamp) -> Result<Option<K>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        Ok(self.sessions.pop_timer(ENDS, time.saturating_add(1))?.map(|(_, k)| k))
    }

    /// Fires sessions complete at `time` and forgets those whose lateness ran out.
    fn advance(&mut self, time: Timestamp) -> Result<()>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
    {
        while let Some(k) = self.next_due(time)? {
            {
                // (Entries of the index may be stale: a key whose sessions are gone has none.)
                let Some(sessions) = self.sessions.get_mut(&k)? else { continue };
                let mut keep_until = Vec::new();
                sessions.retain_mut(|s| {
                    if s.window.max_timestamp() > time {
                        return true;
                    }
                    let cleanup = s.window.max_timestamp().saturating_add(self.lateness);
                    if !s.fired {
                        self.out.emit(&mut self.wf, &k, s.window, &s.acc);
                        s.fired = true;
                        // Indexed again for its cleanup. (A session that fired before has its
                        // cleanup entry already: indexing it at every visit of its key would
                        // multiply the entries.)
                        if cleanup > time {
                            keep_until.push(s.window.end.saturating_add(self.lateness));
                        }
                    }
                    cleanup > time
                });
                if sessions.is_empty() {
                    self.sessions.remove(&k)?;
                }
                for at in keep_until {
                    self.index(k.clone(), at)?;
                }
            }
        }
        self.out.flush()
    }
}

impl<K, T, KF, WF> Output<T> for SessionWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone + serde::Serialize + serde::de::DeserializeOwned,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
    WF::Acc: serde::Serialize + serde::de::DeserializeOwned,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let timestamps = match self.domain {
            TimeDomain::EventTime => super::event_timestamps(batch, &self.operator)?,
            TimeDomain::ProcessingTime => vec![now_millis(); batch.len()],
        };
        let records: Vec<T> = batch.records.drain(..).collect();
        for (x, ts) in records.into_iter().zip(timestamps) {
            self.add(x, ts)?;
        }
        self.out.flush()
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match (event, self.domain) {
            (Control::Watermark(wm), TimeDomain::EventTime) => {
                self.watermark = self.watermark.max(wm);
                self.advance(wm)?;
            }
            (Control::Tick(now), TimeDomain::ProcessingTime) => self.advance(now)?,
            (Control::Barrier(id), _) if self.checkpoint.enabled() => {
                let max_parallelism = self.checkpoint.max_parallelism();
                let encode = |view: HeapView<'_, K, Vec<Session<WF::Acc>>>| {
                    let sessions =
                        view.values.iter().flat_map(|(k, ss)| ss.iter().map(move |s| (k, (s.window, s.fired, &s.acc))));
                    crate::checkpoint::snapshot_keyed_entries(sessions, max_parallelism)
                };
                let snapshot = self.sessions.snapshot(id, self.checkpoint.completed(), encode)?;
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
        Event, MakeFn, Step, SumCount, check_key_groups, check_restore, on_backend, restores, steps, uninterrupted,
        watermarks,
    };

    fn make(lateness: i64) -> MakeFn {
        on_disk(lateness, false, false)
    }

    /// Like [`make`], on the disk backend for a fresh start (`fresh`) or a restore (`restored`).
    fn on_disk(lateness: i64, fresh: bool, restored: bool) -> MakeFn {
        Box::new(move |env, next, late| {
            let env = on_backend(env, if restores(env) { restored } else { fresh });
            let assigner = WindowAssigner::Session { gap: 30, domain: TimeDomain::EventTime };
            let op = SessionWindowOperator::new(|e: &Event| e.0, SumCount, assigner, lateness, "s".into(), late, next)?;
            Ok(Box::new(op.checkpointed(&env)?))
        })
    }

    #[test]
    fn sessions_on_the_disk_backend_merge_and_fire_as_on_the_heap_and_restore_across_backends() -> Result<()> {
        for lateness in [0, 100] {
            // 9 keys and a cache of 3: sessions go to the store and come back from it.
            let steps = steps(7, 300, 9, 60);
            let heap = uninterrupted(&*make(lateness), &steps)?;
            assert!(!heap.0.is_empty(), "sessions fire");
            assert_eq!(uninterrupted(&*on_disk(lateness, true, true), &steps)?, heap, "lateness {lateness}");
            for (fresh, restored) in [(true, true), (true, false), (false, true)] {
                for (from, to) in [(1, 2), (2, 1), (2, 3)] {
                    check_restore(&*on_disk(lateness, fresh, restored), &steps, steps.len() / 2, from, to)?;
                }
            }
        }
        Ok(())
    }

    #[test]
    fn sessions_go_on_from_a_snapshot_at_any_parallelism() -> Result<()> {
        for lateness in [0, 100] {
            let steps = steps(5, 300, 4, 60);
            for (from, to) in [(1, 1), (1, 2), (2, 1), (2, 3)] {
                for cut in [steps.len() / 3, 2 * steps.len() / 3] {
                    let snaps = check_restore(&*make(lateness), &steps, cut, from, to)?;
                    assert!(check_key_groups::<(TimeWindow, bool, (i64, u32))>(&snaps)? > 0);
                    assert_eq!(watermarks(&snaps)?.len(), from as usize);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_index_of_session_ends_grows_with_the_records_not_with_their_visits() -> Result<()> {
        let (next, late) = (Box::new(crate::output::NullOutput), Box::new(crate::output::NullOutput));
        let assigner = WindowAssigner::Session { gap: 30, domain: TimeDomain::EventTime };
        let mut op = SessionWindowOperator::new(|e: &Event| e.0, SumCount, assigner, 100, "s".into(), late, next)?;
        let mut records = 0;
        for step in steps(5, 2_000, 4, 60) {
            match step {
                Step::Records(events) => {
                    records += events.len();
                    let ts = events.iter().map(|e| e.1).collect();
                    op.push(&mut Batch::timestamped(events, ts))?;
                }
                Step::Watermark(wm) => op.control(Control::Watermark(wm))?,
            }
            // One entry per record added, and one per session that fired.
            let entries = op.sessions.heap().ok_or_else(|| Error::internal("not on the heap"))?.queued(ENDS);
            assert!(entries <= 2 * records, "{entries} index entries after {records} records");
        }
        Ok(())
    }

    #[test]
    fn on_disk_the_index_of_session_ends_is_kept_in_the_store() -> Result<()> {
        let env = on_backend(&crate::window::testing::env(Default::default(), 0, 1, &[]), true);
        let (next, late) = (Box::new(crate::output::NullOutput), Box::new(crate::output::NullOutput));
        let assigner = WindowAssigner::Session { gap: 30, domain: TimeDomain::EventTime };
        let op = SessionWindowOperator::new(|e: &Event| e.0, SumCount, assigner, 100, "s".into(), late, next)?;
        let mut op = op.checkpointed(&env)?;
        let mut most_aside = 0;
        for step in steps(5, 400, 40, 60) {
            match step {
                Step::Records(events) => {
                    let ts = events.iter().map(|e| e.1).collect();
                    op.push(&mut Batch::timestamped(events, ts))?;
                }
                Step::Watermark(wm) => op.control(Control::Watermark(wm))?,
            }
            let disk = op.sessions.disk().ok_or_else(|| Error::internal("not on disk"))?;
            assert!(disk.queue_key_groups(ENDS) <= 40, "memory holds a position per key group at most");
            let mut aside = 0;
            disk.store().scan_aside(|_, _| {
                aside += 1;
                Ok(())
            })?;
            most_aside = most_aside.max(aside);
        }
        assert!(most_aside >= 20, "the index is in the store: {most_aside} entries at most");
        Ok(())
    }

    #[test]
    fn a_restored_session_merges_with_later_records_and_fires_once_complete() -> Result<()> {
        // Key 2: [0, 30) fires at watermark 29 and is kept (lateness 100); a record at 15 after the
        // restore joins it and fires it again at once; [100, 130) is still open at the cut and
        // takes a record at 120 after the restore; a record at 5 after watermark 300 is late.
        let steps = vec![
            Step::Records(vec![(2, 0, 1), (2, 100, 1)]),
            Step::Watermark(29),
            Step::Records(vec![(2, 15, 2), (2, 120, 4)]),
            Step::Watermark(300),
            Step::Records(vec![(2, 5, 8)]),
        ];
        let (fired, late) = uninterrupted(&*make(100), &steps)?;
        assert!(fired.contains(&((2, 0, 45, 3, 2), Some(44))), "{fired:?}");
        assert!(fired.contains(&((2, 100, 150, 5, 2), Some(149))), "{fired:?}");
        assert_eq!(late, vec![((2, 5, 8), Some(5))]);
        for cut in 1..steps.len() {
            for (from, to) in [(1, 1), (2, 1), (1, 3)] {
                check_restore(&*make(100), &steps, cut, from, to)?;
                check_restore(&*on_disk(100, true, true), &steps, cut, from, to)?;
            }
        }
        Ok(())
    }
}
