//! The window operator for custom triggers and evictors.
//!
//! A [`Trigger`] decides, per key and window, when the window's function is evaluated (fires)
//! and when its contents are dropped (purges), from the records that arrive and from timers it
//! registers. An [`Evictor`] removes records from a window before or after evaluation. The window
//! operators in [`super::time`] and [`super::session`] implement the default triggers without
//! per-window timers; [`TriggerWindowOperator`] serves windows that declare their own. The
//! triggers and evictors themselves are in [`super::policy`], re-exported here.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;

use weir_core::Result;

use super::{TimeDomain, TimeWindow, WindowAssigner, WindowBounds, WindowCheckpointing, WindowFunction, WindowOutputs};
use crate::disk::timers::DiskTimerQueue;
use crate::exchange::now_millis;
use crate::output::{Batch, Control, Output, Timestamp};
use crate::state::map::StateMap;

pub use super::policy::{
    CountEvictor, CountTrigger, EventTimeTrigger, Evictor, NoEvictor, ProcessingTimeTrigger, PurgingTrigger,
    TimeEvictor, Trigger, TriggerContext, TriggerResult,
};

#[derive(serde::Serialize, serde::Deserialize)]
struct Pane<T, S> {
    records: Vec<(T, Timestamp)>,
    state: S,
}

/// Panes in the disk backend: one stored value per key and window, in the key group of the key.
type OnDisk<K, T, S> = crate::disk::DiskKeyed<(K, TimeWindow), Pane<T, S>>;

/// The tags of the queues kept aside in the disk backend's store: trigger timers, then the cleanup
/// schedule, each per domain (event time, processing time).
const TIMER_TAGS: [&[u8]; 2] = [b"trigger-timers:event", b"trigger-timers:processing"];
const CLEANUP_TAGS: [&[u8]; 2] = [b"trigger-cleanup:event", b"trigger-cleanup:processing"];

/// Panes in the disk backend, with the trigger timers and the cleanup schedule beside them, per
/// domain, as queues of `(time, (key, window))`.
struct PanesOnDisk<K, T, S> {
    panes: OnDisk<K, T, S>,
    timers: [DiskTimerQueue; 2],
    cleanup: [DiskTimerQueue; 2],
}

/// A queue entry of a pane, written to the store: the queue's store write, noted in the queue.
fn enqueue<K: Hash + serde::Serialize>(
    queue: &mut DiskTimerQueue,
    store: &mut crate::disk::RawStore,
    k: &K,
    w: TimeWindow,
    at: Timestamp,
) -> Result<()> {
    let kg = store.key_group(k);
    let sk = queue.key(kg, at, &crate::disk::encode(&(k, w))?);
    store.write(vec![(kg, sk.clone(), Some(Vec::new()))])?;
    queue.noted(kg, &sk)
}

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
/// With the disk state backend (`state.backend.type: disk`) the panes live in the instance's
/// store, one value per key and window, and the trigger timers and the cleanup schedule are queues
/// kept aside in the same store, so memory holds none of them per pane.
pub struct TriggerWindowOperator<K, T, KF, WF: WindowFunction<K, T>, Tr: Trigger<T>, Ev> {
    key: KF,
    wf: WF,
    trigger: Tr,
    evictor: Ev,
    assigner: WindowAssigner,
    lateness: i64,
    panes: StateMap<(K, TimeWindow), Pane<T, Tr::State>>,
    /// With the disk state backend: the panes, timers and cleanup schedule, there (and `panes`,
    /// `timers`, `live` and `cleanup` stay empty).
    disk: Option<Box<PanesOnDisk<K, T, Tr::State>>>,
    timers: [BTreeMap<Timestamp, Vec<(K, TimeWindow)>>; 2],
    live: [HashSet<(Timestamp, K, TimeWindow), foldhash::fast::RandomState>; 2],
    /// Window state to drop once the watermark passes `end - 1 + lateness`.
    /// Panes to drop once their domain's time passes `end - 1 + lateness` (processing time: no
    /// lateness), per domain.
    cleanup: [BTreeMap<Timestamp, Vec<(K, TimeWindow)>>; 2],
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
            panes: StateMap::default(),
            disk: None,
            timers: [BTreeMap::new(), BTreeMap::new()],
            live: [HashSet::default(), HashSet::default()],
            cleanup: [BTreeMap::new(), BTreeMap::new()],
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
        let mut panes: StateMap<(K, TimeWindow), Pane<T, Tr::State>> = StateMap::default();
        let mut timers = Vec::new();
        for (k, entry) in crate::checkpoint::restore_keyed::<K, Owned<T, Tr::State>>(&env.restored_keyed)? {
            match entry {
                TriggerEntry::Pane { window, records, state } => {
                    panes.insert((k, window), Pane { records, state });
                }
                TriggerEntry::Timer { window, event_time, at } => {
                    let domain = if event_time { TimeDomain::EventTime } else { TimeDomain::ProcessingTime };
                    timers.push((k, window, domain, at));
                }
            }
        }
        if env.state_backend.kind == weir_core::checkpointing::StateBackendKind::Disk {
            let name = format!("{}-{}-{}", env.op.job_id, env.op.vertex.0, env.op.subtask);
            let max_parallelism = env.op.max_parallelism.max(1);
            let mut disk = OnDisk::open_grouped(&env.state_backend, &name, max_parallelism, pane_group::<K>)?;
            disk.restore_entries(&env.restored_raw, panes.into_iter().collect())?;
            let queues = |tags: [&[u8]; 2]| tags.map(|t| DiskTimerQueue::aside(t.to_vec()));
            let (mut timer_queues, mut cleanup) = (queues(TIMER_TAGS), queues(CLEANUP_TAGS));
            // The cleanup schedule is written from the store's panes: one pass over them, whatever
            // wrote them (a snapshot of the disk backend holds its schedule too; writing it again
            // changes nothing). Timers of a disk snapshot came with it. Then each queue finds its
            // key groups' first entries.
            if !env.restored_raw.is_empty() || !env.restored_keyed.is_empty() {
                let schedule = self.cleanup_schedule();
                disk.index_aside(|(k, w), _, out| {
                    if let Some((d, at)) = schedule(w) {
                        let kg = weir_core::keygroup::key_group(&k, max_parallelism);
                        out.push((cleanup[d].key(kg, at, &crate::disk::encode(&(&k, w))?), Some(Vec::new())));
                    }
                    Ok(())
                })?;
                for q in timer_queues.iter_mut().chain(cleanup.iter_mut()) {
                    q.rebuild(disk.store_mut())?;
                }
            }
            self.disk = Some(Box::new(PanesOnDisk { panes: disk, timers: timer_queues, cleanup }));
        } else {
            crate::disk::apply_raw(&env.restored_raw, &mut panes)?;
            // Timers a disk snapshot kept aside.
            for (d, tag) in TIMER_TAGS.iter().enumerate() {
                for (at, payload) in crate::disk::timers::read_raw(&env.restored_raw, tag)? {
                    let (k, w): (K, TimeWindow) = crate::disk::decode(&payload)?;
                    let domain = if d == EVENT { TimeDomain::EventTime } else { TimeDomain::ProcessingTime };
                    timers.push((k, w, domain, at));
                }
            }
            for (k, w) in panes.keys() {
                self.schedule_cleanup(k, *w)?;
            }
            self.panes = panes;
        }
        for (k, w, domain, at) in timers {
            self.register(&k, w, vec![(domain, at)])?;
        }
        Ok(self)
    }

    /// Every pane (those on the heap) and live timer, by the key group of its key.
    fn snapshot(&self) -> Result<Vec<(u32, Vec<u8>)>>
    where
        K: serde::Serialize,
        T: serde::Serialize,
    {
        let panes = self
            .panes
            .iter()
            .map(|((k, w), p)| (k, TriggerEntry::Pane { window: *w, records: &p.records, state: &p.state }));
        let timers = self.live.iter().enumerate().flat_map(|(d, live)| {
            live.iter().map(move |(at, k, w)| (k, TriggerEntry::Timer { window: *w, event_time: d == EVENT, at: *at }))
        });
        super::snapshot_by_key_group(panes.chain(timers), self.checkpoint.max_parallelism())
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
        K: serde::Serialize,
    {
        let Some((d, at)) = self.cleanup_schedule()(w) else { return Ok(()) };
        match &mut self.disk {
            Some(disk) => enqueue(&mut disk.cleanup[d], disk.panes.store_mut(), k, w, at),
            None => {
                self.cleanup[d].entry(at).or_default().push((k.clone(), w));
                Ok(())
            }
        }
    }

    fn register(&mut self, k: &K, w: TimeWindow, timers: Vec<(TimeDomain, Timestamp)>) -> Result<()>
    where
        K: serde::Serialize,
    {
        for (domain, at) in timers {
            let d = if domain == TimeDomain::EventTime { EVENT } else { PROCESSING };
            if let Some(disk) = &mut self.disk {
                enqueue(&mut disk.timers[d], disk.panes.store_mut(), k, w, at)?;
            } else if self.live[d].insert((at, k.clone(), w)) {
                self.timers[d].entry(at).or_default().push((k.clone(), w));
            }
        }
        Ok(())
    }

    /// The next live timer of `domain` at or before `time`, removed: its time, key and window.
    fn next_timer(&mut self, domain: usize, time: Timestamp) -> Result<Option<(Timestamp, K, TimeWindow)>>
    where
        K: serde::de::DeserializeOwned,
    {
        if let Some(disk) = &mut self.disk {
            return match disk.timers[domain].pop_due(disk.panes.store_mut(), time)? {
                Some((at, payload)) => {
                    let (k, w) = crate::disk::decode(&payload)?;
                    Ok(Some((at, k, w)))
                }
                None => Ok(None),
            };
        }
        while let Some(mut entry) = self.timers[domain].first_entry() {
            let at = *entry.key();
            if at > time {
                break;
            }
            let Some((k, w)) = entry.get_mut().pop() else {
                entry.remove();
                continue;
            };
            if self.live[domain].remove(&(at, k.clone(), w)) {
                return Ok(Some((at, k, w)));
            }
        }
        Ok(None)
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
        let pane = match &mut self.disk {
            Some(disk) => disk.panes.get_mut(&(k.clone(), w))?,
            None => self.panes.get_mut(&(k.clone(), w)),
        };
        let Some(pane) = pane else { return Ok(()) };
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
            let pane = match &mut self.disk {
                Some(disk) => disk.panes.get_mut(&(k.clone(), w))?,
                None => self.panes.get_mut(&(k.clone(), w)),
            };
            let result = match pane {
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
        if let Some(disk) = &mut self.disk {
            while let Some((_, payload)) = disk.cleanup[domain].pop_due(disk.panes.store_mut(), time)? {
                let pane: (K, TimeWindow) = crate::disk::decode(&payload)?;
                disk.panes.remove(&pane)?;
            }
            return Ok(());
        }
        while let Some(entry) = self.cleanup[domain].first_entry() {
            if *entry.key() > time {
                break;
            }
            for pane in entry.remove() {
                self.panes.remove(&pane);
            }
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
                let (pane, fresh) = match &mut self.disk {
                    Some(disk) => disk.panes.entry(&(k.clone(), w), empty)?,
                    None => {
                        let fresh = !self.panes.contains_key(&(k.clone(), w));
                        (self.panes.entry((k.clone(), w)).or_insert_with(empty), fresh)
                    }
                };
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
                // On the heap, panes and timers go into typed chunks; on disk, the store holds them.
                let keyed = self.snapshot()?;
                match &mut self.disk {
                    Some(disk) => {
                        let panes = disk.panes.snapshot(id, self.checkpoint.completed())?;
                        self.checkpoint.snapshot_with(keyed, self.watermark, Some(panes))?;
                    }
                    None => self.checkpoint.snapshot(keyed, self.watermark)?,
                }
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
                    assert_eq!((op.panes.len(), op.live[EVENT].len(), op.watermark), (1, 1, 50));
                    op.control(Control::Watermark(148))?;
                    assert_eq!((op.panes.len(), op.live[EVENT].len()), (1, 0), "fired, kept for the lateness");
                    op.control(Control::Watermark(149))?;
                    assert!(op.panes.is_empty());
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
            let disk = op.disk.as_mut().ok_or_else(|| weir_core::Error::internal("not on disk"))?;
            disk.panes.store_mut().scan_aside(|_, _| {
                n += 1;
                Ok(())
            })?;
            Ok(n)
        };
        assert_eq!(aside(&mut op)?, 80, "a timer and a cleanup entry per pane, in the store");
        assert!(op.live.iter().all(|l| l.is_empty()) && op.timers.iter().all(BTreeMap::is_empty));
        assert!(op.cleanup.iter().all(BTreeMap::is_empty), "nothing per pane in memory");
        op.control(Control::Watermark(99))?;
        assert_eq!(aside(&mut op)?, 40, "the timers fired; the cleanup entries wait for the lateness");
        op.control(Control::Watermark(149))?;
        assert_eq!(aside(&mut op)?, 0);
        let disk = op.disk.as_mut().ok_or_else(|| weir_core::Error::internal("not on disk"))?;
        assert!(disk.panes.store_mut().next_key(&[])?.is_none(), "the panes are gone too");
        Ok(())
    }
}
