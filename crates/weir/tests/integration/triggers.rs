//! Custom triggers and evictors.

use std::collections::HashMap;
use std::time::Duration;

use weir::{
    CountEvictor, CountTrigger, Driver, EventTimeSessionWindows, GlobalWindows, Job, PurgingTrigger, Registry, Result,
    StreamEnv, TimeWindow, Trigger, TriggerContext, TriggerResult, TumblingEventTimeWindows, WatermarkStrategy,
};

/// (key, timestamp, value)
type Ev = (u32, i64, i64);

fn events(n: usize) -> Vec<Ev> {
    (0..n).map(|i| ((i * 7 % 3) as u32, i as i64 * 10, (i * 37 % 150) as i64)).collect()
}

/// Fires early when a record with a value of at least 100 arrives, and fires and purges at the
/// window's end.
#[derive(Clone)]
struct EarlyOnBigValues;

impl Trigger<Ev> for EarlyOnBigValues {
    type State = ();
    fn on_element(
        &mut self,
        e: &Ev,
        _: i64,
        w: &TimeWindow,
        _: &mut (),
        ctx: &mut TriggerContext<'_>,
    ) -> TriggerResult {
        ctx.register_event_time_timer(w.max_timestamp());
        if e.2 >= 100 { TriggerResult::Fire } else { TriggerResult::Continue }
    }
    fn on_event_time(&mut self, t: i64, w: &TimeWindow, _: &mut (), _: &mut TriggerContext<'_>) -> TriggerResult {
        if t == w.max_timestamp() { TriggerResult::FireAndPurge } else { TriggerResult::Continue }
    }
}

/// (key, number of records, sum) per firing
type Fired = (u32, usize, i64);

fn summarize(k: &u32, _: &TimeWindow, records: &[Ev], out: &mut Vec<Fired>) {
    out.push((*k, records.len(), records.iter().map(|e| e.2).sum()));
}

fn triggered(env: &mut StreamEnv, a: (Vec<Ev>, u32)) -> Result<()> {
    let keyed = env
        .from_collection(a.0)
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &Ev, _| e.1)
                .with_watermark_per_batch(),
        )
        .key_by(|e: &Ev| e.0);
    let counted = keyed.window(GlobalWindows::create()).trigger(CountTrigger::of(4));
    counted.process(summarize).set_parallelism(a.1).collect("count");
    keyed
        .window(GlobalWindows::create())
        .trigger(PurgingTrigger::of(CountTrigger::of(4)))
        .process(summarize)
        .set_parallelism(a.1)
        .collect("purging");
    keyed
        .window(TumblingEventTimeWindows::of(Duration::from_millis(200)))
        .evictor(CountEvictor::of(2))
        .process(summarize)
        .set_parallelism(a.1)
        .collect("evicted");
    keyed
        .window(TumblingEventTimeWindows::of(Duration::from_millis(200)))
        .trigger(EarlyOnBigValues)
        .process(summarize)
        .set_parallelism(a.1)
        .collect("early");
    Ok(())
}
static TRIGGERED: Job<(Vec<Ev>, u32)> = Job::new("triggered", triggered);

fn sorted(mut v: Vec<Fired>) -> Vec<Fired> {
    v.sort();
    v
}

#[test]
fn count_purging_evicting_and_user_triggers_match_the_reference() -> Result<()> {
    let evs = events(300);
    let mut per_key: HashMap<u32, Vec<&Ev>> = HashMap::new();
    for e in &evs {
        per_key.entry(e.0).or_default().push(e);
    }
    let (mut count, mut purging, mut evicted, mut early) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, es) in &per_key {
        for n in (4..=es.len()).step_by(4) {
            // Count without purging: everything so far; with purging: the last four.
            count.push((*k, n, es[..n].iter().map(|e| e.2).sum()));
            purging.push((*k, 4, es[n - 4..n].iter().map(|e| e.2).sum()));
        }
        let mut windows: std::collections::BTreeMap<i64, Vec<&Ev>> = Default::default();
        for e in es {
            windows.entry(e.1 / 200).or_default().push(e);
        }
        for w in windows.values() {
            let last2 = &w[w.len().saturating_sub(2)..];
            evicted.push((*k, last2.len(), last2.iter().map(|e| e.2).sum()));
            for (i, e) in w.iter().enumerate() {
                if e.2 >= 100 {
                    early.push((*k, i + 1, w[..=i].iter().map(|e| e.2).sum()));
                }
            }
            early.push((*k, w.len(), w.iter().map(|e| e.2).sum()));
        }
    }
    for p in [1, 3] {
        let mut d = Driver::local(Registry::new().register(&TRIGGERED));
        d.set("execution.batch-size", "1")?;
        d.set("parallelism.default", "1")?;
        let r = d.execute(&TRIGGERED, (evs.clone(), p))?;
        assert_eq!(sorted(r.collected("count")?), sorted(count.clone()), "count trigger p={p}");
        assert_eq!(sorted(r.collected("purging")?), sorted(purging.clone()), "purging p={p}");
        assert_eq!(sorted(r.collected("evicted")?), sorted(evicted.clone()), "count evictor p={p}");
        assert_eq!(sorted(r.collected("early")?), sorted(early.clone()), "custom trigger p={p}");
    }
    Ok(())
}

fn misuse(env: &mut StreamEnv, which: u32) -> Result<()> {
    let keyed = env
        .from_collection(events(3))
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|e: &Ev, _| e.1),
        )
        .key_by(|e: &Ev| e.0);
    match which {
        0 => {
            keyed.window(GlobalWindows::create()).reduce(|a, _| a).discard();
        }
        1 => {
            keyed
                .window(EventTimeSessionWindows::with_gap(Duration::from_secs(1)))
                .trigger(CountTrigger::of(2))
                .reduce(|a, _| a)
                .discard();
        }
        _ => {
            keyed.count_window(3).trigger(CountTrigger::of(2)).reduce(|a, _| a).discard();
        }
    }
    Ok(())
}
static MISUSE: Job<u32> = Job::new("misuse", misuse);

#[test]
fn triggers_where_they_cannot_work_are_plan_errors() {
    let d = Driver::local(Registry::new().register(&MISUSE));
    let expect = ["global windows never fire by themselves", "not sessions", "count windows have their own trigger"];
    for (i, want) in expect.iter().enumerate() {
        let e = d.execute_async(&MISUSE, i as u32).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains(want), "case {i}: {e}");
    }
}
