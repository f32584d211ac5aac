//! Two-input operators: connect with co-functions, window joins, interval joins.

use std::collections::HashMap;
use std::time::Duration;

use weir::{
    Driver, Job, KeyedCoProcessFunction, KeyedContext, Registry, Result, StreamEnv, TumblingEventTimeWindows,
    ValueStateDescriptor, WatermarkStrategy,
};

/// (key, timestamp, value)
type Ev = (u32, i64, i64);
/// Left records, right records, parallelism.
type CoArgs = (Vec<Ev>, Vec<(u32, i64)>, u32);
/// Left records, right records, lower and upper bound, parallelism.
type IntervalArgs = (Vec<Ev>, Vec<Ev>, i64, i64, u32);

fn lcg(seed: u64, n: usize, keys: u32, span: i64) -> Vec<Ev> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 33) as u32 % keys, ((x >> 17) % span as u64) as i64, i as i64)
        })
        .collect()
}

fn co_map(env: &mut StreamEnv, a: (Vec<i64>, Vec<String>)) -> Result<()> {
    let nums = env.from_collection(a.0);
    let words = env.from_collection(a.1).set_parallelism(2);
    nums.connect(&words).map(|n| format!("n{n}"), |w| format!("w{w}")).set_parallelism(3).collect("out");
    Ok(())
}
static CO_MAP: Job<(Vec<i64>, Vec<String>)> = Job::new("co-map", co_map);

#[test]
fn connected_streams_map_both_inputs() -> Result<()> {
    let nums: Vec<i64> = (0..500).collect();
    let words: Vec<String> = (0..300).map(|i| format!("x{i}")).collect();
    let r = Driver::local(Registry::new().register(&CO_MAP)).execute(&CO_MAP, (nums.clone(), words.clone()))?;
    let mut got: Vec<String> = r.collected("out")?;
    got.sort();
    let mut want: Vec<String> =
        nums.iter().map(|n| format!("n{n}")).chain(words.iter().map(|w| format!("w{w}"))).collect();
    want.sort();
    assert_eq!(got, want);
    Ok(())
}

/// Per key, running sums of each input, in two value states.
#[derive(Clone)]
struct Sums;
static LEFT: ValueStateDescriptor<i64> = ValueStateDescriptor::new("left");
static RIGHT: ValueStateDescriptor<i64> = ValueStateDescriptor::new("right");

impl KeyedCoProcessFunction<u32, Ev, (u32, i64)> for Sums {
    type Out = (u32, i64, i64);
    fn process_element1(&mut self, e: Ev, ctx: &mut KeyedContext<'_, u32, Self::Out>) -> Result<()> {
        let mut l = ctx.value_state(&LEFT)?;
        let sum = l.get().copied().unwrap_or(0) + e.2;
        l.update(sum);
        let r = ctx.value_state(&RIGHT)?.value().unwrap_or(0);
        ctx.collect((e.0, sum, r));
        Ok(())
    }
    fn process_element2(&mut self, e: (u32, i64), ctx: &mut KeyedContext<'_, u32, Self::Out>) -> Result<()> {
        let mut r = ctx.value_state(&RIGHT)?;
        let sum = r.get().copied().unwrap_or(0) + e.1;
        r.update(sum);
        let l = ctx.value_state(&LEFT)?.value().unwrap_or(0);
        ctx.collect((e.0, l, sum));
        Ok(())
    }
}

fn co_process(env: &mut StreamEnv, a: CoArgs) -> Result<()> {
    let left = env.from_collection(a.0);
    let right = env.from_collection(a.1);
    left.connect(&right).key_by(|e: &Ev| e.0, |e: &(u32, i64)| e.0).process(Sums).set_parallelism(a.2).collect("sums");
    Ok(())
}
static CO_PROCESS: Job<CoArgs> = Job::new("co-process", co_process);

#[test]
fn keyed_co_process_shares_state_across_both_inputs() -> Result<()> {
    let left = lcg(1, 400, 6, 1000);
    let right: Vec<(u32, i64)> = lcg(2, 300, 6, 1000).into_iter().map(|e| (e.0, e.2 * 3)).collect();
    for p in [1, 4] {
        let r = Driver::local(Registry::new().register(&CO_PROCESS))
            .execute(&CO_PROCESS, (left.clone(), right.clone(), p))?;
        let got: Vec<(u32, i64, i64)> = r.collected("sums")?;
        assert_eq!(got.len(), left.len() + right.len());
        // Both sums only grow (values are non-negative): the largest output per key holds both totals.
        let mut last: HashMap<u32, (i64, i64)> = HashMap::new();
        for (k, l, rr) in got {
            let e = last.entry(k).or_default();
            *e = (e.0.max(l), e.1.max(rr));
        }
        for k in 0..6 {
            let l: i64 = left.iter().filter(|e| e.0 == k).map(|e| e.2).sum();
            let rr: i64 = right.iter().filter(|e| e.0 == k).map(|e| e.1).sum();
            assert_eq!(last.get(&k).copied().unwrap_or_default(), (l, rr), "key {k} p={p}");
        }
    }
    Ok(())
}

fn stamped(env: &mut StreamEnv, events: Vec<Ev>) -> weir::DataStream<Ev> {
    // Out-of-orderness larger than the data's span: nothing is late, whatever the interleaving of
    // the two inputs, so the expected pairs do not depend on timing.
    env.from_collection(events).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(3600))
            .with_timestamp_assigner(|e: &Ev, _| e.1),
    )
}

fn window_join(env: &mut StreamEnv, a: (Vec<Ev>, Vec<Ev>, u32)) -> Result<()> {
    let left = stamped(env, a.0);
    let right = stamped(env, a.1);
    left.join(&right)
        .where_key(|e: &Ev| e.0)
        .equal_to(|e: &Ev| e.0)
        .window(TumblingEventTimeWindows::of(Duration::from_millis(100)))
        .apply(|l: &Ev, r: &Ev| (l.0, l.2, r.2))
        .set_parallelism(a.2)
        .collect("pairs");
    Ok(())
}
static WINDOW_JOIN: Job<(Vec<Ev>, Vec<Ev>, u32)> = Job::new("window-join", window_join);

#[test]
fn a_window_join_pairs_equal_keys_in_the_same_window() -> Result<()> {
    let left = lcg(3, 200, 4, 600);
    let right = lcg(4, 150, 4, 600);
    let mut want = Vec::new();
    for l in &left {
        for r in &right {
            if l.0 == r.0 && l.1 / 100 == r.1 / 100 {
                want.push((l.0, l.2, r.2));
            }
        }
    }
    want.sort();
    assert!(want.len() > 100, "the data should produce pairs: {}", want.len());
    for p in [1, 4] {
        let r = Driver::local(Registry::new().register(&WINDOW_JOIN))
            .execute(&WINDOW_JOIN, (left.clone(), right.clone(), p))?;
        let mut got: Vec<(u32, i64, i64)> = r.collected("pairs")?;
        got.sort();
        assert_eq!(got, want, "p={p}");
    }
    Ok(())
}

fn interval_join(env: &mut StreamEnv, a: IntervalArgs) -> Result<()> {
    let left = stamped(env, a.0).key_by(|e: &Ev| e.0);
    let right = stamped(env, a.1).key_by(|e: &Ev| e.0);
    left.interval_join(&right)
        .between(a.2, a.3)
        .process(|l: &Ev, r: &Ev, out: &mut Vec<(u32, i64, i64)>| out.push((l.0, l.2, r.2)))
        .set_parallelism(a.4)
        .collect("pairs");
    Ok(())
}
static INTERVAL_JOIN: Job<IntervalArgs> = Job::new("interval-join", interval_join);

#[test]
fn an_interval_join_pairs_records_within_the_bounds() -> Result<()> {
    let left = lcg(5, 200, 3, 2000);
    let right = lcg(6, 200, 3, 2000);
    let (lower, upper) = (-20, 30);
    let mut want = Vec::new();
    for l in &left {
        for r in &right {
            if l.0 == r.0 && l.1 + lower <= r.1 && r.1 <= l.1 + upper {
                want.push((l.0, l.2, r.2));
            }
        }
    }
    want.sort();
    assert!(want.len() > 50, "the data should produce pairs: {}", want.len());
    for p in [1, 4] {
        let r = Driver::local(Registry::new().register(&INTERVAL_JOIN))
            .execute(&INTERVAL_JOIN, (left.clone(), right.clone(), lower, upper, p))?;
        let mut got: Vec<(u32, i64, i64)> = r.collected("pairs")?;
        got.sort();
        assert_eq!(got, want, "p={p}");
    }
    let e = Driver::local(Registry::new().register(&INTERVAL_JOIN))
        .execute_async(&INTERVAL_JOIN, (left, right, 10, -10, 1))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("the lower bound must not exceed the upper bound"), "{e}");
    Ok(())
}

fn mixed(env: &mut StreamEnv, _: ()) -> Result<()> {
    // One input with event time, one without: their records share buffers downstream.
    let stamped = stamped(env, lcg(8, 300, 3, 1000));
    let plain = env.from_collection(lcg(9, 300, 3, 1000));
    stamped
        .connect(&plain)
        .flat_map(|a: Ev, out: &mut Vec<i64>| out.push(a.2), |b: Ev, out: &mut Vec<i64>| out.push(b.2))
        .filter(|_| true)
        .rebalance()
        .map(|x| x + 1)
        .collect("out");
    Ok(())
}
static MIXED: Job<()> = Job::new("mixed", mixed);

#[test]
fn streams_with_and_without_event_time_can_share_operators() -> Result<()> {
    let r = Driver::local(Registry::new().register(&MIXED)).with_parallelism(2)?.execute(&MIXED, ())?;
    assert_eq!(r.collected::<i64>("out")?.len(), 600);
    Ok(())
}

/// (side: 0 first input, 1 second; key; timestamp; id)
type Tagged = (u8, u32, i64, i64);

/// Emits its batches in order, with a pause after each: long enough for every record and
/// watermark of one batch to reach the join before the next batch starts.
#[derive(Clone)]
struct Script(Vec<Vec<Tagged>>);
struct ScriptReader(std::collections::VecDeque<Vec<Tagged>>, Option<std::time::Instant>);
impl weir::connectors::Source<Tagged> for Script {
    fn name(&self) -> String {
        "Script".into()
    }
    fn create_reader(
        &self,
        _: &weir::connectors::OperatorContext,
    ) -> Result<Box<dyn weir::connectors::SourceReader<Tagged>>> {
        Ok(Box::new(ScriptReader(self.0.clone().into(), None)))
    }
}
impl weir::connectors::SourceReader<Tagged> for ScriptReader {
    fn poll(&mut self, out: &mut Vec<Tagged>, _: usize) -> Result<weir::connectors::SourceStatus> {
        let pause = Duration::from_millis(300);
        if let Some(since) = self.1.filter(|t| t.elapsed() < pause) {
            return Ok(weir::connectors::SourceStatus::Wait(pause - since.elapsed()));
        }
        match self.0.pop_front() {
            Some(batch) => {
                out.extend(batch);
                self.1 = Some(std::time::Instant::now());
                Ok(weir::connectors::SourceStatus::Wait(pause))
            }
            None => Ok(weir::connectors::SourceStatus::Finished),
        }
    }
}

fn scripted_interval_join(env: &mut StreamEnv, script: Vec<Vec<Tagged>>) -> Result<()> {
    let all = env.add_source(Script(script)).set_parallelism(1).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_monotonous_timestamps()
            .with_timestamp_assigner(|t: &Tagged, _| t.2)
            .with_watermark_per_batch(),
    );
    let left = all.filter(|t: &Tagged| t.0 == 0).key_by(|t: &Tagged| t.1);
    let right = all.filter(|t: &Tagged| t.0 == 1).key_by(|t: &Tagged| t.1);
    left.interval_join(&right)
        .between(-20, 30)
        .process(|l: &Tagged, r: &Tagged, out: &mut Vec<(i64, i64)>| out.push((l.3, r.3)))
        .set_parallelism(1)
        .collect("pairs");
    Ok(())
}
static SCRIPTED_INTERVAL_JOIN: Job<Vec<Vec<Tagged>>> = Job::new("scripted-interval-join", scripted_interval_join);

#[test]
fn an_interval_join_drops_late_records_and_keeps_what_can_still_match() -> Result<()> {
    // Bounds [-20, 30]: first-input l pairs with second-input r when l.ts - 20 <= r.ts <= l.ts + 30.
    // The watermark after each batch is its highest timestamp minus one.
    let script = vec![
        // l1 and r1 pair; the watermark reaches 999.
        vec![(0, 1, 1000, 1), (1, 1, 1000, 101)],
        // l2 is stored; the watermark (4999) passes l1's last chance (1030), which is pruned.
        vec![(0, 1, 5000, 2)],
        // Another key moves the watermark to 5029, one short of l2's last chance (5030).
        vec![(1, 2, 5030, 999)],
        // r3 at 5030 is on time and must still find l2; r4 at 4995 would pair with l2 but is
        // behind the watermark, and l5 at 1010 would pair with r1: both are dropped as late.
        vec![(1, 1, 5030, 103), (1, 1, 4995, 104), (0, 1, 1010, 5)],
    ];
    let r =
        Driver::local(Registry::new().register(&SCRIPTED_INTERVAL_JOIN)).execute(&SCRIPTED_INTERVAL_JOIN, script)?;
    let mut got: Vec<(i64, i64)> = r.collected("pairs")?;
    got.sort();
    assert_eq!(got, vec![(1, 101), (2, 103)]);
    Ok(())
}
