//! Session windows: per key, records closer than the gap share a window; windows merge as
//! records fill the gaps between them.

use std::collections::BTreeMap;
use std::hash::Hash;

use weir_core::{Error, Result};

use super::{TimeDomain, TimeWindow, WindowAssigner, WindowFunction, WindowOutputs};
use crate::exchange::now_millis;
use crate::operators::StateMap;
use crate::output::{Batch, Control, Output, Timestamp};

struct Session<A> {
    window: TimeWindow,
    acc: A,
    fired: bool,
}

/// Keyed session windows with an incremental [`WindowFunction`] (its `merge` joins sessions).
///
/// A record at `t` opens the window `[t, t + gap)`, which merges with every session of its key it
/// overlaps. Firing, lateness and late output work as for [`super::time::TimeWindowOperator`].
pub struct SessionWindowOperator<K, T, KF, WF: WindowFunction<K, T>> {
    key: KF,
    wf: WF,
    gap: i64,
    domain: TimeDomain,
    lateness: i64,
    sessions: StateMap<K, Vec<Session<WF::Acc>>>,
    /// Keys that have (or had: entries may be stale after merges) a session ending at a time.
    by_end: BTreeMap<Timestamp, Vec<K>>,
    watermark: Timestamp,
    operator: String,
    out: WindowOutputs<T, WF::Out>,
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
            sessions: StateMap::default(),
            by_end: BTreeMap::new(),
            watermark: Timestamp::MIN,
            operator,
            out: WindowOutputs::new(next, late),
        })
    }

    fn add(&mut self, x: T, ts: Timestamp) {
        let wm = self.watermark;
        let mut window = TimeWindow { start: ts, end: ts.saturating_add(self.gap) };
        let k = (self.key)(&x);
        let sessions = self.sessions.entry(k.clone()).or_default();
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
                self.sessions.remove(&k);
            }
            self.out.late(x, ts);
            return;
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
        self.by_end.entry(at).or_default().push(k);
    }

    /// Fires sessions complete at `time` and forgets those whose lateness ran out.
    fn advance(&mut self, time: Timestamp) -> Result<()> {
        while let Some(entry) = self.by_end.first_entry() {
            let at = *entry.key();
            if at - 1 > time {
                break;
            }
            let keys = entry.remove();
            for k in keys {
                let Some(sessions) = self.sessions.get_mut(&k) else { continue };
                let mut keep_until = Vec::new();
                sessions.retain_mut(|s| {
                    if s.window.max_timestamp() > time {
                        return true;
                    }
                    if !s.fired {
                        self.out.emit(&mut self.wf, &k, s.window, &s.acc);
                        s.fired = true;
                    }
                    let cleanup = s.window.max_timestamp().saturating_add(self.lateness);
                    if cleanup > time {
                        keep_until.push(s.window.end.saturating_add(self.lateness));
                        true
                    } else {
                        false
                    }
                });
                if sessions.is_empty() {
                    self.sessions.remove(&k);
                }
                for at in keep_until {
                    self.by_end.entry(at).or_default().push(k.clone());
                }
            }
        }
        self.out.flush()
    }
}

impl<K, T, KF, WF> Output<T> for SessionWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        let timestamps = match self.domain {
            TimeDomain::EventTime => super::event_timestamps(batch, &self.operator)?,
            TimeDomain::ProcessingTime => vec![now_millis(); batch.len()],
        };
        let records: Vec<T> = batch.records.drain(..).collect();
        for (x, ts) in records.into_iter().zip(timestamps) {
            self.add(x, ts);
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
            _ => {}
        }
        self.out.control(event)
    }

    fn finish(&mut self) -> Result<()> {
        self.advance(Timestamp::MAX - 1)?;
        self.out.finish()
    }
}
