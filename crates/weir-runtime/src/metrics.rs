//! Per-operator counters, with Flink's metric names.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one operator, summed over its subtasks in this process.
#[derive(Debug, Default)]
pub struct VertexMetrics {
    records_in: AtomicU64,
    records_out: AtomicU64,
}

impl VertexMetrics {
    /// Adds to `numRecordsIn`.
    #[inline]
    pub fn add_in(&self, n: usize) {
        self.records_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// Adds to `numRecordsOut` (counted for sources).
    #[inline]
    pub fn add_out(&self, n: usize) {
        self.records_out.fetch_add(n as u64, Ordering::Relaxed);
    }
    /// `numRecordsIn`.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }
    /// `numRecordsOut` (sources only).
    pub fn records_out(&self) -> u64 {
        self.records_out.load(Ordering::Relaxed)
    }
}

pub use weir_core::result::VertexCounts;
