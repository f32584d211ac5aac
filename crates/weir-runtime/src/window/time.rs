//! Tumbling and sliding windows, in event time or processing time.

use std::collections::{BTreeMap, VecDeque};
use std::hash::Hash;

use weir_core::{Error, Result};

use super::{TimeDomain, TimeWindow, WindowAssigner, WindowFunction, WindowOutputs};
use crate::exchange::now_millis;
use crate::operators::StateMap;
use crate::output::{Batch, Control, Output, Timestamp};

/// Keyed tumbling or sliding windows with an incremental [`WindowFunction`].
///
/// Event time: a window fires once when the watermark passes its last timestamp, with its
/// results timestamped `end - 1`. With allowed lateness `L`, its state is kept until the watermark
/// passes `end - 1 + L`; a record arriving for it in between updates it and fires it again at once
/// (a late firing). A record whose windows are all past that point is late: it goes to the late
/// output (a side output, or nowhere). Processing time: windows follow the wall clock and fire on
/// the task's ticks; at the end of input, the windows still open fire.
pub struct TimeWindowOperator<K, T, KF, WF: WindowFunction<K, T>> {
    key: KF,
    wf: WF,
    assigner: WindowAssigner,
    size: i64,
    lateness: i64,
    /// Windows not fired yet, sorted by end (there are few at a time: a linear layout with an
    /// index cache beats a tree on the per-record path).
    pending: VecDeque<(Timestamp, StateMap<K, WF::Acc>)>,
    /// Windows fired and kept for late records, by end.
    fired: BTreeMap<Timestamp, StateMap<K, WF::Acc>>,
    watermark: Timestamp,
    /// Keys in the last window that fired: new windows start with room for as many.
    expected_keys: usize,
    operator: String,
    out: WindowOutputs<T, WF::Out>,
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
            pending: VecDeque::new(),
            fired: BTreeMap::new(),
            watermark: Timestamp::MIN,
            expected_keys: 0,
            operator,
            out: WindowOutputs::new(next, late),
        })
    }

    /// Fires every pending window whose last timestamp is at or below `time`, and forgets fired
    /// windows whose lateness has run out.
    fn advance(&mut self, time: Timestamp) -> Result<()> {
        while let Some((end, _)) = self.pending.front() {
            let end = *end;
            if end - 1 > time {
                break;
            }
            let Some((_, states)) = self.pending.pop_front() else { break };
            self.expected_keys = states.len();
            let window = TimeWindow { start: end - self.size, end };
            for (k, acc) in &states {
                self.out.emit(&mut self.wf, k, window, acc);
            }
            if (end - 1).saturating_add(self.lateness) > time {
                self.fired.insert(end, states);
            }
        }
        while let Some(entry) = self.fired.first_entry() {
            if (entry.key() - 1).saturating_add(self.lateness) > time {
                break;
            }
            entry.remove();
        }
        self.out.flush()
    }
}

impl<K, T, KF, WF> Output<T> for TimeWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone,
    T: Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let event_time = self.assigner.domain() == TimeDomain::EventTime;
        let timestamps =
            if event_time { super::event_timestamps(batch, &self.operator)? } else { vec![now_millis(); batch.len()] };
        let wm = self.watermark;
        let lateness = self.lateness;
        let expected_keys = self.expected_keys;
        let Self { key, wf, assigner, pending, fired, out, .. } = self;
        // Consecutive records usually fall into the same window: keep its map at hand.
        let mut current: usize = usize::MAX;
        let mut windows: Vec<TimeWindow> = Vec::with_capacity(1);
        for (x, ts) in batch.records.drain(..).zip(timestamps.iter().copied()) {
            windows.clear();
            assigner.for_each_window(ts, |w| windows.push(w));
            // A window whose lateness has run out takes no more records.
            windows.retain(|w| w.max_timestamp().saturating_add(lateness) > wm);
            if windows.is_empty() {
                out.late(x, ts);
                continue;
            }
            let k = key(&x);
            let n = windows.len();
            let mut x = Some(x);
            for (i, &w) in windows.iter().enumerate() {
                // The record moves into its last window and is cloned for the others.
                let Some(record) = (if i + 1 == n { x.take() } else { x.clone() }) else { break };
                if w.max_timestamp() > wm {
                    if pending.get(current).is_none_or(|(end, _)| *end != w.end) {
                        current = pending.partition_point(|(end, _)| *end < w.end);
                        if pending.get(current).is_none_or(|(end, _)| *end != w.end) {
                            let states = StateMap::with_capacity_and_hasher(expected_keys, Default::default());
                            pending.insert(current, (w.end, states));
                        }
                    }
                    let acc = pending[current].1.entry(k.clone()).or_insert_with(|| wf.create());
                    wf.add(acc, record);
                } else {
                    // The window fired already but is within its lateness: update and fire again.
                    let acc = fired.entry(w.end).or_default().entry(k.clone()).or_insert_with(|| wf.create());
                    wf.add(acc, record);
                    out.emit(wf, &k, w, acc);
                }
            }
        }
        self.out.flush()
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match (event, self.assigner.domain()) {
            (Control::Watermark(wm), TimeDomain::EventTime) => {
                self.watermark = self.watermark.max(wm);
                self.advance(wm)?;
            }
            (Control::Tick(now), TimeDomain::ProcessingTime) => self.advance(now)?,
            _ => {}
        }
        self.out.control(event)
    }

    fn finish(&mut self) -> Result<()> {
        self.advance(Timestamp::MAX - 1)?;
        self.out.finish()
    }
}
