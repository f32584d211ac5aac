//! Keyed process functions: timers, keyed state of every kind, TTL, side outputs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use weir::connectors::{OperatorContext, Source, SourceReader, SourceStatus};
use weir::{
    AggregateFunction, Driver, Job, KeyedContext, KeyedProcessFunction, ListStateDescriptor, MapStateDescriptor,
    OutputTag, ReducingStateDescriptor, Registry, Result, StateTtlConfig, StreamEnv, TimeDomain, ValueStateDescriptor,
    WatermarkStrategy,
};

type Event = (u32, i64, i64);

/// Registers an event-time timer at `ts - ts % 100 + 100` for every record (several records share
/// a timer), deletes it again for records whose value is 99, and reports each firing.
#[derive(Clone)]
struct Timers;
static SEEN: ValueStateDescriptor<u64> = ValueStateDescriptor::new("seen");

impl KeyedProcessFunction<u32, Event> for Timers {
    type Out = (u32, i64, u64);
    fn process_element(&mut self, e: Event, ctx: &mut KeyedContext<'_, u32, Self::Out>) -> Result<()> {
        let at = e.1 - e.1.rem_euclid(100) + 100;
        if e.2 == 99 {
            ctx.delete_event_time_timer(at);
        } else {
            ctx.register_event_time_timer(at);
        }
        let mut seen = ctx.value_state(&SEEN)?;
        let n = seen.get().copied().unwrap_or(0);
        seen.update(n + 1);
        Ok(())
    }
    fn on_timer(&mut self, at: i64, ctx: &mut KeyedContext<'_, u32, Self::Out>) -> Result<()> {
        assert_eq!(ctx.timer_domain(), Some(TimeDomain::EventTime));
        assert!(ctx.current_watermark() >= at);
        let seen = ctx.value_state(&SEEN)?.value().unwrap_or(0);
        let key = *ctx.key();
        ctx.collect((key, at, seen));
        Ok(())
    }
}

fn timers(env: &mut StreamEnv, a: (Vec<Event>, u32)) -> Result<()> {
    env.from_collection(a.0)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &Event, _| e.1)
                .with_watermark_per_batch(),
        )
        .key_by(|e: &Event| e.0)
        .process(Timers)
        .set_parallelism(a.1)
        .collect("fired");
    Ok(())
}
static TIMERS: Job<(Vec<Event>, u32)> = Job::new("timers", timers);

#[test]
fn event_time_timers_fire_once_per_key_and_time_unless_deleted() -> Result<()> {
    // In timestamp order (monotonous watermarks), several records per key and 100 ms slot.
    let events: Vec<Event> = (0..600).map(|i| ((i % 5) as u32, i * 7, if i % 37 == 0 { 99 } else { 1 })).collect();
    // Reference: a timer per key and slot, unless the last record of that key and slot deleted it.
    let mut want: BTreeMap<(u32, i64), bool> = BTreeMap::new();
    let mut seen_at: HashMap<u32, u64> = HashMap::new();
    let mut fire_counts = Vec::new();
    for e in &events {
        let at = e.1 - e.1.rem_euclid(100) + 100;
        want.insert((e.0, at), e.2 != 99);
    }
    // A timer at `at` fires on the watermark after the first record with a timestamp above `at`
    // (monotonous: watermark = timestamp - 1), so its count includes the records up to that one.
    for &(k, at) in want.iter().filter(|(_, live)| **live).map(|(k, _)| k) {
        let trigger = events.iter().position(|e| e.1 > at).unwrap_or(events.len() - 1);
        let n = events[..=trigger].iter().filter(|e| e.0 == k).count() as u64;
        fire_counts.push((k, at, n));
        seen_at.insert(k, n);
    }
    fire_counts.sort();
    for p in [1, 3] {
        // One ordered stream with a watermark after every record (the process operator's own
        // parallelism is set in the job).
        let mut d = Driver::local(Registry::new().register(&TIMERS));
        d.set("execution.batch-size", "1")?;
        d.set("parallelism.default", "1")?;
        let r = d.execute(&TIMERS, (events.clone(), p))?;
        let mut got: Vec<(u32, i64, u64)> = r.collected("fired")?;
        got.sort();
        assert_eq!(got, fire_counts, "p={p}");
    }
    Ok(())
}

#[derive(Clone)]
struct Avg;
impl AggregateFunction<i64> for Avg {
    type Acc = (i64, i64);
    type Out = f64;
    fn create_accumulator(&self) -> (i64, i64) {
        (0, 0)
    }
    fn add(&self, v: i64, acc: &mut (i64, i64)) {
        acc.0 += v;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, i64)) -> f64 {
        acc.0 as f64 / acc.1 as f64
    }
    fn merge(&self, o: (i64, i64), acc: &mut (i64, i64)) {
        acc.0 += o.0;
        acc.1 += o.1;
    }
}

/// Keeps every kind of state per key and emits, per record, what they hold.
#[derive(Clone)]
struct AllStates {
    avg: Avg,
}
static VALUES: ListStateDescriptor<i64> = ListStateDescriptor::new("values");
static COUNTS: MapStateDescriptor<i64, u32> = MapStateDescriptor::new("counts");
static SUM: ReducingStateDescriptor<i64> = ReducingStateDescriptor::new("sum", |a, b| a + b);
static ODD: OutputTag<Event> = OutputTag::new_static("odd");

/// (key, values so far, distinct values, sum, average)
type Summary = (u32, Vec<i64>, usize, i64, f64);

impl KeyedProcessFunction<u32, Event> for AllStates {
    type Out = Summary;
    fn process_element(&mut self, e: Event, ctx: &mut KeyedContext<'_, u32, Summary>) -> Result<()> {
        if e.2 % 2 != 0 {
            ctx.output(&ODD, e)?;
        }
        let mut values = ctx.list_state(&VALUES)?;
        values.add(e.2);
        let values = values.get().to_vec();
        let mut counts = ctx.map_state(&COUNTS)?;
        let c = counts.get(&e.2).copied().unwrap_or(0);
        counts.put(e.2, c + 1);
        let distinct = counts.iter().count();
        let mut sum = ctx.reducing_state(&SUM)?;
        sum.add(e.2);
        let sum = sum.get().copied().unwrap_or(0);
        let avg = self.avg.clone();
        let mut a = ctx.aggregating_state("avg", &avg)?;
        a.add(e.2);
        let avg = a.get().unwrap_or(0.0);
        ctx.collect((e.0, values, distinct, sum, avg));
        Ok(())
    }
}

fn states(env: &mut StreamEnv, a: (Vec<Event>, u32)) -> Result<()> {
    let out = env.from_collection(a.0).key_by(|e: &Event| e.0).process(AllStates { avg: Avg }).set_parallelism(a.1);
    out.collect("summaries");
    out.side_output(&ODD).collect("odd");
    Ok(())
}
static STATES: Job<(Vec<Event>, u32)> = Job::new("states", states);

#[test]
fn value_list_map_reducing_and_aggregating_state_are_per_key() -> Result<()> {
    let events: Vec<Event> = (0..300).map(|i| ((i * 7 % 4) as u32, i, (i * 13 % 9) - 3)).collect();
    for p in [1, 4] {
        let r = Driver::local(Registry::new().register(&STATES)).execute(&STATES, (events.clone(), p))?;
        let got: Vec<Summary> = r.collected("summaries")?;
        assert_eq!(got.len(), events.len());
        // The last summary per key (the longest value list) against a direct computation.
        let mut last: HashMap<u32, Summary> = HashMap::new();
        for s in got {
            if last.get(&s.0).is_none_or(|l| l.1.len() < s.1.len()) {
                last.insert(s.0, s);
            }
        }
        for (k, s) in &last {
            let vals: Vec<i64> = events.iter().filter(|e| e.0 == *k).map(|e| e.2).collect();
            let distinct: std::collections::HashSet<i64> = vals.iter().copied().collect();
            let sum: i64 = vals.iter().sum();
            assert_eq!(s.1, vals, "list, key {k}");
            assert_eq!(s.2, distinct.len(), "map, key {k}");
            assert_eq!(s.3, sum, "reducing, key {k}");
            assert!((s.4 - sum as f64 / vals.len() as f64).abs() < 1e-9, "aggregating, key {k}");
        }
        let mut odd: Vec<Event> = r.collected("odd")?;
        odd.sort();
        let mut want: Vec<Event> = events.iter().filter(|e| e.2 % 2 != 0).copied().collect();
        want.sort();
        assert_eq!(odd, want, "side output p={p}");
    }
    Ok(())
}

/// Key 1 twice, with a pause of `pause_ms` (wall clock) between, then a pause before the end.
#[derive(Clone)]
struct Paused(u64);
struct PausedReader(u64, u32, std::time::Instant);
impl Source<u32> for Paused {
    fn name(&self) -> String {
        "Paused".into()
    }
    fn create_reader(&self, _: &OperatorContext) -> Result<Box<dyn SourceReader<u32>>> {
        Ok(Box::new(PausedReader(self.0, 0, std::time::Instant::now())))
    }
}
impl SourceReader<u32> for PausedReader {
    fn poll(&mut self, out: &mut Vec<u32>, _: usize) -> Result<SourceStatus> {
        // The task may poll sooner than asked (it ticks in between): keep to the wall clock.
        let pause = Duration::from_millis(self.0);
        if self.1 > 0 && self.2.elapsed() < pause {
            return Ok(SourceStatus::Wait(pause - self.2.elapsed()));
        }
        self.1 += 1;
        self.2 = std::time::Instant::now();
        match self.1 {
            1 | 2 => {
                out.push(1);
                Ok(SourceStatus::Wait(pause))
            }
            _ => Ok(SourceStatus::Finished),
        }
    }
}

/// Counts records per key in a value state with a TTL of 100 ms; registers a processing-time
/// timer 50 ms ahead and reports when it fires.
#[derive(Clone)]
struct Ttl;
static COUNT_TTL: ValueStateDescriptor<u64> =
    ValueStateDescriptor::new("count").with_ttl(StateTtlConfig::new(Duration::from_millis(100)));

impl KeyedProcessFunction<u32, u32> for Ttl {
    type Out = (String, u64);
    fn process_element(&mut self, _: u32, ctx: &mut KeyedContext<'_, u32, Self::Out>) -> Result<()> {
        let at = ctx.current_processing_time() + 50;
        ctx.register_processing_time_timer(at);
        let mut c = ctx.value_state(&COUNT_TTL)?;
        let n = c.get().copied().unwrap_or(0) + 1;
        c.update(n);
        ctx.collect(("count".into(), n));
        Ok(())
    }
    fn on_timer(&mut self, _: i64, ctx: &mut KeyedContext<'_, u32, Self::Out>) -> Result<()> {
        assert_eq!(ctx.timer_domain(), Some(TimeDomain::ProcessingTime));
        ctx.collect(("timer".into(), 0));
        Ok(())
    }
}

fn ttl(env: &mut StreamEnv, pause_ms: u64) -> Result<()> {
    env.add_source(Paused(pause_ms)).set_parallelism(1).key_by(|k: &u32| *k).process(Ttl).collect("out");
    Ok(())
}
static TTL: Job<u64> = Job::new("ttl", ttl);

#[test]
fn state_expires_after_its_ttl_and_processing_time_timers_fire() -> Result<()> {
    let mut d = Driver::local(Registry::new().register(&TTL));
    d.set("pipeline.auto-watermark-interval", "10")?;
    // 400 ms apart: the count expired in between and starts over.
    let out: Vec<(String, u64)> = d.execute(&TTL, 400)?.collected("out")?;
    let counts: Vec<u64> = out.iter().filter(|o| o.0 == "count").map(|o| o.1).collect();
    assert_eq!(counts, vec![1, 1], "{out:?}");
    assert!(out.iter().filter(|o| o.0 == "timer").count() >= 1, "a processing-time timer fired: {out:?}");
    // Without the pause (both records within the TTL) the count goes on.
    let out: Vec<(String, u64)> = d.execute(&TTL, 1)?.collected("out")?;
    let counts: Vec<u64> = out.iter().filter(|o| o.0 == "count").map(|o| o.1).collect();
    assert_eq!(counts, vec![1, 2], "{out:?}");
    Ok(())
}

/// Uses the name "seen" for two kinds of state.
#[derive(Clone)]
struct Confused;
static SEEN_LIST: ListStateDescriptor<String> = ListStateDescriptor::new("seen");

impl KeyedProcessFunction<u32, Event> for Confused {
    type Out = u32;
    fn process_element(&mut self, _: Event, ctx: &mut KeyedContext<'_, u32, u32>) -> Result<()> {
        ctx.value_state(&SEEN)?.update(1);
        ctx.list_state(&SEEN_LIST)?.add("x".into());
        Ok(())
    }
}

fn confused(env: &mut StreamEnv, _: ()) -> Result<()> {
    env.from_collection(vec![(1u32, 0i64, 0i64)]).key_by(|e: &Event| e.0).process(Confused).name("Confused").discard();
    Ok(())
}
static CONFUSED: Job<()> = Job::new("confused", confused);

#[test]
fn a_state_name_used_with_two_types_is_a_clear_error() {
    let e = Driver::local(Registry::new().register(&CONFUSED))
        .execute(&CONFUSED, ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("operator 'Confused'") && e.contains("state 'seen' is used as List state"), "{e}");
}

/// Reports the watermark each record meets.
#[derive(Clone)]
struct Watermarks;

impl KeyedProcessFunction<u32, Event> for Watermarks {
    type Out = (i64, i64);
    fn process_element(&mut self, e: Event, ctx: &mut KeyedContext<'_, u32, Self::Out>) -> Result<()> {
        let w = ctx.current_watermark();
        ctx.collect((e.1, w));
        Ok(())
    }
}

fn watermarks(env: &mut StreamEnv, (events, source): (Vec<Event>, String)) -> Result<()> {
    env.from_collection(events)
        .uid(&source)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &Event, _| e.1)
                .with_watermark_per_batch(),
        )
        .key_by(|e: &Event| e.0)
        .process(Watermarks)
        .uid("watermarks")
        .collect("seen");
    Ok(())
}
static WATERMARKS: Job<(Vec<Event>, String)> = Job::new("watermarks", watermarks);

#[test]
fn a_restored_keyed_process_function_goes_on_from_its_checkpointed_watermark() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| weir::Error::io("tempdir", "/tmp", e))?;
    let cp = dir.path().join("cp");
    let run = |events: Vec<Event>, restore: Option<&str>| -> Result<Vec<(i64, i64)>> {
        let mut d = Driver::local(Registry::new().register(&WATERMARKS));
        d.set("execution.batch-size", "1")?;
        d.set("parallelism.default", "1")?;
        d.set("execution.checkpointing.interval", "10ms")?;
        d.set("execution.checkpointing.dir", &cp.display().to_string())?;
        // The second run reads other records: its source is another one (the first's position is
        // left behind).
        let source = if let Some(path) = restore {
            d.set("execution.savepoint.path", path)?;
            d.set("execution.savepoint.ignore-unclaimed-state", "true")?;
            "events-2"
        } else {
            "events-1"
        };
        let mut seen: Vec<(i64, i64)> = d.execute(&WATERMARKS, (events, source.to_string()))?.collected("seen")?;
        seen.sort();
        Ok(seen)
    };
    let first: Vec<Event> = (0..200).map(|i| ((i % 3) as u32, 1000 + i * 5, 1)).collect();
    let seen = run(first, None)?;
    let last = seen.iter().map(|s| s.0).max().unwrap_or_default();
    // The final checkpoint of the run (the job's only directory, its newest checkpoint).
    let job_dir = std::fs::read_dir(&cp).map_err(|e| weir::Error::io("list", &cp, e))?.flatten().next();
    let job_dir = job_dir.map(|e| e.path()).ok_or_else(|| weir::Error::internal("no checkpoint directory"))?;
    let newest = std::fs::read_dir(&job_dir)
        .map_err(|e| weir::Error::io("list", &job_dir, e))?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .ok_or_else(|| weir::Error::internal("no checkpoint"))?;
    let path = job_dir.join(format!("chk-{newest}")).display().to_string();
    // Older records after the restore meet the watermark the first run had reached, not the start
    // of time (with monotonous timestamps: the last timestamp minus 1).
    let again = run(vec![(0, 10, 1), (1, 20, 1)], Some(&path))?;
    assert_eq!(again, vec![(10, last - 1), (20, last - 1)]);
    Ok(())
}
