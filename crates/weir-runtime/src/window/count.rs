//! Count windows: a global window per key that fires, and is purged, every `size` records
//! (Flink's `countWindow(size)`).

use std::hash::Hash;

use weir_core::{Error, Result};

use super::{TimeWindow, WindowFunction};
use crate::operators::StateMap;
use crate::output::{Batch, Control, Output, Timestamp};

/// Keyed count windows with an incremental [`WindowFunction`]. Results carry the timestamp of
/// the record that completed the window when the input has timestamps. Windows still short of
/// `size` records at the end of input do not fire, as in Flink.
pub struct CountWindowOperator<K, T, KF, WF: WindowFunction<K, T>> {
    key: KF,
    wf: WF,
    size: u64,
    state: StateMap<K, (u64, WF::Acc)>,
    buf: Batch<WF::Out>,
    next: Box<dyn Output<WF::Out>>,
}

/// The window count windows report: all of time.
pub const GLOBAL_WINDOW: TimeWindow = TimeWindow { start: Timestamp::MIN, end: Timestamp::MAX };

impl<K, T, KF, WF: WindowFunction<K, T>> CountWindowOperator<K, T, KF, WF> {
    /// Fires every `size` records of a key.
    pub fn new(key: KF, wf: WF, size: u64, next: Box<dyn Output<WF::Out>>) -> Result<Self> {
        if size == 0 {
            return Err(Error::invalid_job("count window size 0: the size must be at least 1"));
        }
        Ok(CountWindowOperator { key, wf, size, state: StateMap::default(), buf: Batch::default(), next })
    }
}

impl<K, T, KF, WF> Output<T> for CountWindowOperator<K, T, KF, WF>
where
    K: Hash + Eq + Clone,
    KF: FnMut(&T) -> K,
    WF: WindowFunction<K, T>,
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
        self.next.control(event)
    }

    fn finish(&mut self) -> Result<()> {
        self.next.finish()
    }
}
