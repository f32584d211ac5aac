//! Windows checked against reference implementations written here, over randomized out-of-order
//! streams with late records, at parallelism 1 and 4.
//!
//! Watermarks follow the data (`with_watermark_per_batch` and a batch size of 1, so a watermark
//! follows every record), which makes the expected output independent of timing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use weir::{
    AggregateFunction, Driver, EventTimeSessionWindows, Job, OutputTag, Registry, Result, SlidingEventTimeWindows,
    StreamEnv, TumblingEventTimeWindows, TumblingProcessingTimeWindows, WatermarkStrategy,
};

/// (key, timestamp, value)
type Event = (u32, i64, i64);
/// (key, window start, window end, sum of values, number of records)
type Fired = (u32, i64, i64, i64, usize);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    events: Vec<Event>,
    kind: Kind,
    out_of_orderness: i64,
    lateness: i64,
    p: u32,
}

#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
enum Kind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
}

#[derive(Clone)]
struct SumCount;
impl AggregateFunction<Event> for SumCount {
    type Acc = (i64, usize);
    type Out = (i64, usize);
    fn create_accumulator(&self) -> (i64, usize) {
        (0, 0)
    }
    fn add(&self, e: Event, acc: &mut (i64, usize)) {
        acc.0 += e.2;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, usize)) -> (i64, usize) {
        *acc
    }
    fn merge(&self, other: (i64, usize), acc: &mut (i64, usize)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

fn ms(x: i64) -> Duration {
    Duration::from_millis(x as u64)
}

fn windows(env: &mut StreamEnv, a: Args) -> Result<()> {
    let late = OutputTag::<Event>::new("late");
    let stamped = env.from_collection(a.events).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_bounded_out_of_orderness(ms(a.out_of_orderness))
            .with_timestamp_assigner(|e: &Event, _| e.1)
            .with_watermark_per_batch(),
    );
    let assigner = match a.kind {
        Kind::Tumbling(size) => TumblingEventTimeWindows::of(ms(size)),
        Kind::Sliding(size, slide) => SlidingEventTimeWindows::of(ms(size), ms(slide)),
        Kind::Session(gap) => EventTimeSessionWindows::with_gap(ms(gap)),
    };
    let keyed = stamped.key_by(|e: &Event| e.0);
    let processed = keyed
        .window(assigner)
        .allowed_lateness(ms(a.lateness))
        .side_output_late_data(&late)
        .process(|k: &u32, w: &weir::TimeWindow, events: &[Event], out: &mut Vec<Fired>| {
            out.push((*k, w.start, w.end, events.iter().map(|e| e.2).sum(), events.len()))
        })
        .set_parallelism(a.p);
    processed.collect("process");
    processed.side_output(&late).collect("late");
    keyed
        .window(assigner)
        .allowed_lateness(ms(a.lateness))
        .aggregate(SumCount)
        .set_parallelism(a.p)
        .collect("aggregate");
    keyed
        .window(assigner)
        .allowed_lateness(ms(a.lateness))
        .reduce(|x, y| (x.0, x.1, x.2 + y.2))
        .set_parallelism(a.p)
        .map(|e: Event| (e.0, e.2))
        .collect("reduce");
    Ok(())
}
static WINDOWS: Job<Args> = Job::new("windows", windows);

/// Flink's semantics, computed directly: per-record watermarks, firing when the watermark passes
/// a window's end, late firings within the allowed lateness, late records to the side output.
fn reference(a: &Args) -> (Vec<Fired>, Vec<Event>) {
    let (mut fired, mut late) = (Vec::new(), Vec::new());
    let mut wm = i64::MIN;
    let mut max_ts = i64::MIN;
    // (end, start, key) -> (values, fired)
    let mut state: BTreeMap<(i64, i64, u32), (Vec<i64>, bool)> = BTreeMap::new();
    let emit = |k: u32, s: i64, e: i64, vals: &Vec<i64>, out: &mut Vec<Fired>| {
        out.push((k, s, e, vals.iter().sum(), vals.len()))
    };
    for &(k, ts, v) in &a.events {
        match a.kind {
            Kind::Tumbling(_) | Kind::Sliding(..) => {
                let (size, slide) = match a.kind {
                    Kind::Tumbling(size) => (size, size),
                    Kind::Sliding(size, slide) => (size, slide),
                    Kind::Session(_) => unreachable!(),
                };
                let mut starts = Vec::new();
                let mut s = ts - ts.rem_euclid(slide);
                while s > ts - size {
                    starts.push(s);
                    s -= slide;
                }
                starts.retain(|s| s + size - 1 + a.lateness > wm);
                if starts.is_empty() {
                    late.push((k, ts, v));
                }
                for s in starts {
                    let entry = state.entry((s + size, s, k)).or_default();
                    entry.0.push(v);
                    if s + size - 1 <= wm {
                        emit(k, s, s + size, &entry.0, &mut fired);
                        entry.1 = true;
                    }
                }
            }
            Kind::Session(gap) => {
                // Flink: a record opens [ts, ts + gap), which merges with every session of its key
                // it intersects (touching counts: TimeWindow.intersects is inclusive). The merged
                // window fires when the watermark passes its end; if it is complete already, at
                // once (a late firing).
                let (mut start, mut end) = (ts, ts + gap);
                let mut vals = vec![v];
                let intersecting: Vec<(i64, i64, u32)> =
                    state.keys().filter(|(e, s, key)| *key == k && *s <= end && start <= *e).copied().collect();
                for key in intersecting {
                    if let Some((vs, _)) = state.remove(&key) {
                        start = start.min(key.1);
                        end = end.max(key.0);
                        vals.extend(vs);
                    }
                }
                if end - 1 + a.lateness <= wm {
                    late.push((k, ts, v));
                    continue;
                }
                let complete = end - 1 <= wm;
                if complete {
                    emit(k, start, end, &vals, &mut fired);
                }
                state.insert((end, start, k), (vals, complete));
            }
        }
        max_ts = max_ts.max(ts);
        let new_wm = max_ts - a.out_of_orderness - 1;
        if new_wm > wm {
            wm = new_wm;
            for (&(e, s, key), (vals, f)) in state.iter_mut() {
                if e - 1 <= wm && !*f {
                    emit(key, s, e, vals, &mut fired);
                    *f = true;
                }
            }
            state.retain(|&(e, _, _), _| e - 1 + a.lateness > wm);
        }
    }
    for (&(e, s, key), (vals, f)) in &state {
        if !*f {
            emit(key, s, e, vals, &mut fired);
        }
    }
    fired.sort();
    late.sort();
    (fired, late)
}

/// A random out-of-order stream: time moves forward in small steps, records lag behind it by up
/// to `max_lag` (beyond the out-of-orderness bound some are late).
fn events(seed: u64, n: usize, keys: u32, max_lag: i64) -> Vec<Event> {
    let mut x = seed | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = 0i64;
    (0..n)
        .map(|i| {
            t += (next() % 25) as i64;
            let lag = (next() % (max_lag as u64 + 1)) as i64;
            ((next() % u64::from(keys)) as u32, (t - lag).max(0), i as i64 % 7 - 2)
        })
        .collect()
}

fn run_and_compare(a: Args) -> Result<()> {
    let mut driver = Driver::local(Registry::new().register(&WINDOWS));
    driver.set("execution.batch-size", "1")?;
    driver.set("parallelism.default", "1")?;
    let r = driver.execute(&WINDOWS, a.clone())?;
    let (want, want_late) = reference(&a);
    let mut got: Vec<Fired> = r.collected("process")?;
    got.sort();
    assert_eq!(got, want, "process, {:?} p={}", a.kind, a.p);
    let mut late: Vec<Event> = r.collected("late")?;
    late.sort();
    assert_eq!(late, want_late, "late records, {:?}", a.kind);
    let mut agg: Vec<(i64, usize)> = r.collected("aggregate")?;
    agg.sort();
    let mut want_agg: Vec<(i64, usize)> = want.iter().map(|f| (f.3, f.4)).collect();
    want_agg.sort();
    assert_eq!(agg, want_agg, "aggregate, {:?}", a.kind);
    let mut red: Vec<(u32, i64)> = r.collected("reduce")?;
    red.sort();
    let mut want_red: Vec<(u32, i64)> = want.iter().map(|f| (f.0, f.3)).collect();
    want_red.sort();
    assert_eq!(red, want_red, "reduce, {:?}", a.kind);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, .. ProptestConfig::default() })]

    #[test]
    fn event_time_windows_match_the_reference(seed in any::<u64>(), lateness in prop_oneof![Just(0i64), Just(60)]) {
        let evs = events(seed, 400, 4, 250);
        for kind in [Kind::Tumbling(100), Kind::Sliding(100, 40), Kind::Session(30)] {
            for p in [1, 4] {
                let a = Args { events: evs.clone(), kind, out_of_orderness: 100, lateness, p };
                let r = run_and_compare(a);
                prop_assert!(r.is_ok(), "{:?}", r.err());
            }
        }
    }
}

#[test]
fn late_records_go_to_the_side_output_and_late_firings_update_windows() -> Result<()> {
    // Key 1: a window [0, 100) fires at watermark 99 (record at 200 with out-of-orderness 100 -> 99),
    // then a record at 50 arrives within the lateness and fires it again; a record at 10 after the
    // watermark passed 99 + 60 is late.
    let events = vec![(1, 10, 1), (1, 200, 1), (1, 50, 5), (1, 300, 1), (1, 20, 7)];
    let a = Args { events, kind: Kind::Tumbling(100), out_of_orderness: 100, lateness: 60, p: 1 };
    let (want, want_late) = reference(&a);
    assert_eq!(want_late, vec![(1, 20, 7)]);
    assert!(want.contains(&(1, 0, 100, 1, 1)) && want.contains(&(1, 0, 100, 6, 2)), "{want:?}");
    run_and_compare(a)?;
    // Sessions: key 2 at 0 opens [0, 10), which fires at watermark 9; at 15 a new session starts;
    // the late record at 9 (within the lateness) bridges them into one session [0, 25) of all
    // three, which fires again as a whole; records exactly `gap` apart (30, 40) share a session.
    let events = vec![(2, 0, 1), (2, 15, 1), (2, 9, 1), (2, 100, 1), (2, 30, 5), (2, 40, 5), (2, 300, 1)];
    let a = Args { events, kind: Kind::Session(10), out_of_orderness: 0, lateness: 100, p: 1 };
    let (want, _) = reference(&a);
    assert!(want.contains(&(2, 0, 25, 3, 3)) && want.contains(&(2, 30, 50, 10, 2)), "{want:?}");
    run_and_compare(a)
}

fn counts(env: &mut StreamEnv, a: (Vec<Event>, u32)) -> Result<()> {
    env.from_collection(a.0)
        .key_by(|e: &Event| e.0)
        .count_window(3)
        .reduce(|x, y| (x.0, y.1, x.2 + y.2))
        .set_parallelism(a.1)
        .collect("out");
    Ok(())
}
static COUNTS: Job<(Vec<Event>, u32)> = Job::new("counts", counts);

#[test]
fn count_windows_fire_every_n_records_per_key() -> Result<()> {
    let evs = events(7, 500, 5, 0);
    let mut want = Vec::new();
    let mut per_key: HashMap<u32, Vec<i64>> = HashMap::new();
    for e in &evs {
        let v = per_key.entry(e.0).or_default();
        v.push(e.2);
        if v.len() == 3 {
            want.push((e.0, v.iter().sum::<i64>()));
            v.clear();
        }
    }
    want.sort();
    for p in [1, 4] {
        let r = Driver::local(Registry::new().register(&COUNTS)).execute(&COUNTS, (evs.clone(), p))?;
        let mut got: Vec<(u32, i64)> = r.collected::<Event>("out")?.into_iter().map(|e| (e.0, e.2)).collect();
        got.sort();
        assert_eq!(got, want, "p={p}");
    }
    Ok(())
}

fn processing(env: &mut StreamEnv, _: ()) -> Result<()> {
    let keyed = env.datagen(Some(600), Some(2000.0), |i| (i % 3, 1u64)).key_by(|t: &(u64, u64)| t.0);
    let report = |k: &u64, w: &weir::TimeWindow, e: &[(u64, u64)], out: &mut Vec<(u64, i64, i64, u64)>| {
        out.push((*k, w.start, w.end, e.len() as u64))
    };
    keyed.window(TumblingProcessingTimeWindows::of(Duration::from_millis(50))).process(report).collect("out");
    keyed
        .window(weir::SlidingProcessingTimeWindows::of(Duration::from_millis(60), Duration::from_millis(20)))
        .process(report)
        .collect("sliding");
    keyed
        .window(weir::ProcessingTimeSessionWindows::with_gap(Duration::from_millis(200)))
        .process(report)
        .collect("sessions");
    Ok(())
}
static PROCESSING: Job<()> = Job::new("processing", processing);

#[test]
fn processing_time_windows_count_every_record_once_in_aligned_windows() -> Result<()> {
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let r = Driver::local(Registry::new().register(&PROCESSING)).with_parallelism(2)?.execute(&PROCESSING, ())?;
    let after =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let got: Vec<(u64, i64, i64, u64)> = r.collected("out")?;
    assert_eq!(got.iter().map(|w| w.3).sum::<u64>(), 600, "every record in exactly one window");
    for (k, start, end, n) in &got {
        assert!(*k < 3 && *n > 0);
        assert_eq!(end - start, 50);
        assert_eq!(start.rem_euclid(50), 0, "aligned to the epoch");
        assert!(*end > before - 50 && *start <= after, "window [{start}, {end}) outside the run");
    }
    // 600 records at 2000/s take about 300 ms: they spread over several windows.
    let distinct: std::collections::HashSet<i64> = got.iter().map(|w| w.1).collect();
    assert!(distinct.len() >= 3, "{distinct:?}");
    // Sliding: every record is in exactly size / slide = 3 windows, all of which fire.
    let sliding: Vec<(u64, i64, i64, u64)> = r.collected("sliding")?;
    assert_eq!(sliding.iter().map(|w| w.3).sum::<u64>(), 3 * 600);
    assert!(sliding.iter().all(|w| w.2 - w.1 == 60 && w.1.rem_euclid(20) == 0), "{sliding:?}");
    // Sessions: records of a key arrive every 1.5 ms, far within the 200 ms gap: every record is in
    // exactly one session, and a key's sessions do not overlap.
    let sessions: Vec<(u64, i64, i64, u64)> = r.collected("sessions")?;
    assert_eq!(sessions.iter().map(|w| w.3).sum::<u64>(), 600);
    for k in 0..3 {
        let mut mine: Vec<(i64, i64)> = sessions.iter().filter(|w| w.0 == k).map(|w| (w.1, w.2)).collect();
        mine.sort();
        assert!(!mine.is_empty() && mine.windows(2).all(|p| p[0].1 <= p[1].0), "key {k}: {mine:?}");
    }
    Ok(())
}

static FIRED: AtomicU64 = AtomicU64::new(0);

/// Subtask 0 emits timestamped records forever; subtask 1 emits nothing and never ends.
#[derive(Clone)]
struct HalfSilent;
struct HalfSilentReader {
    subtask: u32,
    next: i64,
}
impl weir::connectors::Source<Event> for HalfSilent {
    fn name(&self) -> String {
        "HalfSilent".into()
    }
    fn create_reader(
        &self,
        ctx: &weir::connectors::OperatorContext,
    ) -> Result<Box<dyn weir::connectors::SourceReader<Event>>> {
        Ok(Box::new(HalfSilentReader { subtask: ctx.subtask, next: 0 }))
    }
}
impl weir::connectors::SourceReader<Event> for HalfSilentReader {
    fn poll(&mut self, out: &mut Vec<Event>, _max: usize) -> Result<weir::connectors::SourceStatus> {
        if self.subtask == 0 {
            out.push((0, self.next, 1));
            self.next += 10;
        }
        Ok(weir::connectors::SourceStatus::Wait(Duration::from_millis(5)))
    }
}

fn idle_partition(env: &mut StreamEnv, idleness: bool) -> Result<()> {
    let mut strategy = WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &Event, _| e.1);
    if idleness {
        strategy = strategy.with_idleness(Duration::from_millis(100));
    }
    env.add_source(HalfSilent)
        .set_parallelism(2)
        .assign_timestamps_and_watermarks(strategy)
        .set_parallelism(2)
        .key_by(|e: &Event| e.0)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(50)))
        .reduce(|a, b| (a.0, a.1, a.2 + b.2))
        .set_parallelism(1)
        .map(|e: Event| {
            FIRED.fetch_add(1, Ordering::SeqCst);
            e
        })
        .set_parallelism(1)
        .discard();
    Ok(())
}
static IDLE: Job<bool> = Job::new("idle-partition", idle_partition);

#[test]
fn an_idle_partition_does_not_hold_back_event_time() -> Result<()> {
    let d = Driver::local(Registry::new().register(&IDLE));
    // Without idleness, the silent subtask's missing watermark holds every window back.
    FIRED.store(0, Ordering::SeqCst);
    let client = d.execute_async(&IDLE, false)?;
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(FIRED.load(Ordering::SeqCst), 0, "windows fired although one input never sent a watermark");
    client.cancel().expect("cancel");
    let _ = client.wait_timeout(Duration::from_secs(20));
    assert_eq!(client.live_tasks(), 0);
    // With idleness, the silent subtask is marked idle and windows fire while the job runs.
    let client = d.execute_async(&IDLE, true)?;
    let start = Instant::now();
    while FIRED.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let fired = FIRED.load(Ordering::SeqCst);
    client.cancel().expect("cancel");
    let _ = client.wait_timeout(Duration::from_secs(20));
    assert!(fired > 0, "no window fired in 15 s although the silent input is idle");
    assert_eq!(client.live_tasks(), 0);
    Ok(())
}

fn bad_windows(env: &mut StreamEnv, which: u32) -> Result<()> {
    let s = env.from_collection(vec![(0u32, 0i64, 0i64)]);
    let keyed = s.key_by(|e: &Event| e.0);
    match which {
        0 => {
            keyed.window(TumblingEventTimeWindows::of(Duration::from_secs(1))).reduce(|a, _| a).discard();
        }
        1 => {
            keyed
                .window(SlidingEventTimeWindows::of(Duration::from_secs(1), Duration::from_secs(2)))
                .reduce(|a, _| a)
                .discard();
        }
        2 => {
            keyed.window(TumblingProcessingTimeWindows::of(Duration::ZERO)).reduce(|a, _| a).discard();
        }
        3 => {
            keyed.count_window(0).reduce(|a, _| a).discard();
        }
        4 => {
            let tag = OutputTag::<Event>::new("nope");
            keyed.count_window(2).reduce(|a, _| a).side_output(&tag).discard();
        }
        _ => {
            s.assign_timestamps_and_watermarks(WatermarkStrategy::for_monotonous_timestamps()).discard();
        }
    }
    Ok(())
}
static BAD: Job<u32> = Job::new("bad-windows", bad_windows);

#[test]
fn impossible_windows_are_plan_errors() {
    let d = Driver::local(Registry::new().register(&BAD));
    let expect = [
        "event-time window on a stream without timestamps",
        "slide 2000 ms is larger than its size 1000 ms",
        "the size must be positive",
        "count window size 0",
        "has no side output 'nope'",
        "has no timestamp assigner and the stream has no timestamps",
    ];
    for (i, want) in expect.iter().enumerate() {
        let e = d.execute_async(&BAD, i as u32).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(want), "case {i}: {e}");
    }
}

fn extremes(env: &mut StreamEnv, _: ()) -> Result<()> {
    // Timestamps at the far end of the range, and a lateness that never runs out.
    env.from_collection(vec![(1u32, i64::MAX - 5, 1i64), (1, i64::MAX - 1, 2), (2, 0, 3)])
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &Event, _| e.1),
        )
        .key_by(|e: &Event| e.0)
        .window(SlidingEventTimeWindows::of(Duration::from_millis(10), Duration::from_millis(5)))
        .allowed_lateness(Duration::MAX)
        .reduce(|a, b| (a.0, a.1, a.2 + b.2))
        .collect("out");
    Ok(())
}
static EXTREMES: Job<()> = Job::new("extremes", extremes);

#[test]
fn extreme_timestamps_and_lateness_neither_panic_nor_lose_records() -> Result<()> {
    let r = Driver::local(Registry::new().register(&EXTREMES)).with_parallelism(1)?.execute(&EXTREMES, ())?;
    let got: Vec<Event> = r.collected("out")?;
    // Each record is in two sliding windows (size 10, slide 5).
    assert_eq!(got.iter().map(|e| e.2).sum::<i64>(), 2 * (1 + 2 + 3), "{got:?}");
    let mut d = Driver::local(Registry::new().register(&EXTREMES));
    for (key, value) in
        [("execution.batch-size", "100000000000"), ("execution.channel-capacity", "18446744073709551615")]
    {
        let e = d.set(key, value).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("must be between 1 and"), "{key}: {e}");
    }
    Ok(())
}
