//! The kinds of metric: counters, gauges, meters, time shares and histograms.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weir_core::metric::{HistogramStats, Sample};

/// How often rates ([`Meter`], [`TimeShare`]) are brought up to date: every 5 s, as Flink's
/// view updater does.
pub const VIEW_UPDATE_INTERVAL: Duration = Duration::from_secs(5);

/// The span a rate is measured over: the last minute, as Flink's `MeterView`.
const RATE_SPAN: Duration = Duration::from_secs(60);

/// A count that grows (Flink's `Counter`); cheap to clone, every clone counts into the same value.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// A counter at 0, not registered anywhere (a group's [`crate::MetricGroup::counter`] makes
    /// registered ones).
    pub fn new() -> Counter {
        Counter::default()
    }
    /// Adds 1.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The count.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value read when the metric is reported.
pub type Gauge = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Samples of a growing count, for a rate over the last minute.
#[derive(Debug, Default)]
struct Window {
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// The rate, as `f64` bits.
    rate: AtomicU64,
}

impl Window {
    /// Takes a sample of `count` at `now` and computes the rate per second over the samples of
    /// the last minute (over the time since the first sample while there is less than a minute of
    /// them, so a new meter shows its real rate instead of one that ramps up).
    fn update(&self, now: Instant, count: u64) {
        let Ok(mut samples) = self.samples.lock() else { return };
        samples.push_back((now, count));
        while samples.len() > 2 && samples.front().is_some_and(|(t, _)| now.duration_since(*t) > RATE_SPAN) {
            samples.pop_front();
        }
        let rate = match (samples.front(), samples.back()) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => {
                c1.saturating_sub(*c0) as f64 / t1.duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        };
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }
}

/// The rate per second of a count (Flink's `MeterView`): `numRecordsInPerSecond` from
/// `numRecordsIn`. Brought up to date every [`VIEW_UPDATE_INTERVAL`] by the registry.
pub struct Meter {
    count: Box<dyn Fn() -> u64 + Send + Sync>,
    window: Window,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").field("count", &(self.count)()).field("rate", &self.rate()).finish()
    }
}

impl Meter {
    /// A meter of `counter`'s rate.
    pub fn of(counter: Counter) -> Meter {
        Meter::of_fn(move || counter.get())
    }
    /// A meter of the rate of what `count` returns (a sum of counters, say).
    pub fn of_fn(count: impl Fn() -> u64 + Send + Sync + 'static) -> Meter {
        let window = Window::default();
        window.update(Instant::now(), count());
        Meter { count: Box::new(count), window }
    }
    /// Events per second over the last minute.
    pub fn rate(&self) -> f64 {
        self.window.rate()
    }
    /// The events counted so far.
    pub fn count(&self) -> u64 {
        (self.count)()
    }
    pub(crate) fn update(&self, now: Instant) {
        self.window.update(now, (self.count)());
    }
}

/// Time a thread spends in one condition (idle, back-pressured), reported as milliseconds per
/// second, as Flink's `idleTimeMsPerSecond` and `backPressuredTimeMsPerSecond`. The thread adds
/// the nanoseconds it spent; the registry turns them into a rate every [`VIEW_UPDATE_INTERVAL`].
#[derive(Debug, Default)]
pub struct TimeShare {
    nanos: Counter,
    window: Window,
}

impl TimeShare {
    /// A share at 0.
    pub fn new() -> TimeShare {
        let share = TimeShare::default();
        share.window.update(Instant::now(), 0);
        share
    }
    /// Adds time spent in the condition.
    #[inline]
    pub fn add(&self, spent: Duration) {
        self.nanos.add(spent.as_nanos() as u64);
    }
    /// Milliseconds per second spent in the condition, over the last minute (0 to 1000).
    pub fn ms_per_second(&self) -> f64 {
        (self.window.rate() / 1e6).clamp(0.0, 1000.0)
    }
    pub(crate) fn update(&self, now: Instant) {
        self.window.update(now, self.nanos.get());
    }
}

/// Statistics over the last values recorded (Flink's `DescriptiveStatisticsHistogram`): count,
/// min, max, mean, standard deviation and quantiles over a sliding window.
#[derive(Debug)]
pub struct Histogram {
    window: usize,
    values: Mutex<VecDeque<i64>>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram over the last `window` values (at least 1).
    pub fn new(window: usize) -> Histogram {
        let window = window.max(1);
        Histogram {
            window,
            values: Mutex::new(VecDeque::with_capacity(window)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
    /// Records a value.
    pub fn update(&self, value: i64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value as u64, Ordering::Relaxed);
        if let Ok(mut v) = self.values.lock() {
            if v.len() == self.window {
                v.pop_front();
            }
            v.push_back(value);
        }
    }
    /// The statistics now.
    pub fn stats(&self) -> HistogramStats {
        let mut values: Vec<i64> = self.values.lock().map(|v| v.iter().copied().collect()).unwrap_or_default();
        values.sort_unstable();
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum.load(Ordering::Relaxed) as i64 as f64;
        if values.is_empty() {
            return HistogramStats { count, sum, ..Default::default() };
        }
        let n = values.len() as f64;
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
        let variance = if values.len() > 1 {
            values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        // The value below which the given share of the window lies (nearest rank).
        let q = |p: f64| values[(((p * n).ceil() as usize).max(1) - 1).min(values.len() - 1)] as f64;
        HistogramStats {
            count,
            sum,
            min: values[0],
            max: values[values.len() - 1],
            mean,
            stddev: variance.sqrt(),
            p50: q(0.5),
            p75: q(0.75),
            p95: q(0.95),
            p98: q(0.98),
            p99: q(0.99),
            p999: q(0.999),
        }
    }
}

/// One registered metric.
#[derive(Clone)]
pub enum Metric {
    /// A count.
    Counter(Counter),
    /// A value read when reported.
    Gauge(Gauge),
    /// A rate per second.
    Meter(Arc<Meter>),
    /// Milliseconds per second spent in a condition.
    TimeShare(Arc<TimeShare>),
    /// Statistics over recent values.
    Histogram(Arc<Histogram>),
}

impl Metric {
    /// Its value now.
    pub fn sample(&self) -> Sample {
        match self {
            Metric::Counter(c) => Sample::Number(c.get() as f64),
            Metric::Gauge(g) => Sample::Number(g()),
            Metric::Meter(m) => Sample::Number(m.rate()),
            Metric::TimeShare(t) => Sample::Number(t.ms_per_second()),
            Metric::Histogram(h) => Sample::Histogram(h.stats()),
        }
    }

    /// Brings a rate up to date.
    pub(crate) fn update_view(&self, now: Instant) {
        match self {
            Metric::Meter(m) => m.update(now),
            Metric::TimeShare(t) => t.update(now),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_shows_the_rate_of_its_counter_over_the_samples_it_has() {
        let c = Counter::new();
        let m = Meter::of(c.clone());
        let t0 = Instant::now();
        c.add(500);
        m.update(t0 + Duration::from_secs(5));
        assert!((m.rate() - 100.0).abs() < 1.0, "{}", m.rate());
        c.add(1000);
        m.update(t0 + Duration::from_secs(10));
        assert!((m.rate() - 150.0).abs() < 1.0, "{}", m.rate());
        // After more than a minute of nothing, the rate falls to 0.
        for s in 1..=14 {
            m.update(t0 + Duration::from_secs(10 + 5 * s));
        }
        assert!(m.rate() < 1e-9, "{}", m.rate());
        assert_eq!(m.count(), 1500);
    }

    #[test]
    fn a_time_share_is_milliseconds_per_second_within_0_and_1000() {
        let t = TimeShare::new();
        let t0 = Instant::now();
        t.add(Duration::from_millis(1250));
        t.update(t0 + Duration::from_secs(5));
        assert!((t.ms_per_second() - 250.0).abs() < 5.0, "{}", t.ms_per_second());
        t.add(Duration::from_secs(100));
        t.update(t0 + Duration::from_secs(10));
        assert_eq!(t.ms_per_second(), 1000.0);
    }

    #[test]
    fn a_histogram_keeps_its_window_and_counts_everything() {
        let h = Histogram::new(100);
        for v in 1..=1000 {
            h.update(v);
        }
        let s = h.stats();
        assert_eq!((s.count, s.min, s.max), (1000, 901, 1000));
        assert_eq!(s.p50, 950.0);
        assert_eq!(s.p99, 999.0);
        assert!((s.mean - 950.5).abs() < 1e-9);
        assert_eq!(s.sum, 500_500.0);
        assert_eq!(Histogram::new(10).stats().count, 0);
    }
}
