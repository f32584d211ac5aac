//! The anchor workloads of `shared/anchors/WORKLOADS.md`, written as a user would write them, and
//! the hand-written single-threaded loops they are compared with.
//!
//! ```text
//! cargo run --release --example anchors -- WORKLOAD N P [K]   # RESULT weir WORKLOAD n=.. p=.. ...
//! cargo run --release --example anchors -- loop WORKLOAD N [K] # RESULT loop WORKLOAD n=.. p=1 ...
//! ```
//!
//! Every workload: P parallel source instances, each emitting 0 .. N/P-1; the figure is N divided by
//! the wall time of `execute()`, submission and start included.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use weir::connectors::{OperatorContext, Source, SourceReader, SourceStatus};
use weir::{
    App, DataStream, Error, EventTimeSessionWindows, Job, KeyedContext, KeyedProcessFunction, Result, StreamEnv,
    TumblingEventTimeWindows, ValueStateDescriptor, WatermarkStrategy,
};

/// Arguments of every anchor job.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    /// Records in all.
    n: u64,
    /// Parallelism.
    p: u32,
    /// Number of keys.
    keys: u64,
    /// Collect the output (for tests) instead of discarding it.
    #[serde(default)]
    collect: bool,
    /// Bytes of state per key (the `wide` workload).
    #[serde(default)]
    width: usize,
}

/// Each parallel instance emits 0 .. per_instance - 1, like the Flink job's `Sequence` source.
#[derive(Clone)]
struct PerInstanceSequence {
    per_instance: u64,
}

struct SequenceReader {
    next: u64,
    end: u64,
}

impl Source<u64> for PerInstanceSequence {
    fn name(&self) -> String {
        "Sequence".into()
    }
    fn create_reader(&self, _ctx: &OperatorContext) -> Result<Box<dyn SourceReader<u64>>> {
        Ok(Box::new(SequenceReader { next: 0, end: self.per_instance }))
    }
}

impl SourceReader<u64> for SequenceReader {
    fn poll(&mut self, out: &mut Vec<u64>, max: usize) -> Result<SourceStatus> {
        let stop = self.end.min(self.next + max as u64);
        out.extend(self.next..stop);
        self.next = stop;
        Ok(if stop == self.end { SourceStatus::Finished } else { SourceStatus::Continue })
    }
}

fn source(env: &mut StreamEnv, args: &Args) -> Result<DataStream<u64>> {
    if args.p == 0 {
        return Err(Error::invalid_job("P must be at least 1"));
    }
    env.set_parallelism(args.p);
    Ok(env.add_source(PerInstanceSequence { per_instance: args.n / u64::from(args.p) }))
}

fn sink<T: weir::Data>(stream: DataStream<T>, args: &Args) {
    if args.collect {
        stream.collect("out");
    } else {
        stream.discard();
    }
}

fn stateless(env: &mut StreamEnv, args: Args) -> Result<()> {
    let s = source(env, &args)?.map(|x| x.wrapping_mul(3).wrapping_add(1)).filter(|x| x & 1 == 0);
    sink(s, &args);
    Ok(())
}

fn keyed(env: &mut StreamEnv, args: Args) -> Result<()> {
    let k = args.keys.max(1);
    let s = source(env, &args)?.map(move |x| (x % k, 1u64)).key_by(|t: &(u64, u64)| t.0).sum(|t| &mut t.1);
    sink(s, &args);
    Ok(())
}

/// `(key, x)` for every x of the source, over K keys, timestamped x / 1000 ms (a thousand records
/// per millisecond, in order).
fn timed(env: &mut StreamEnv, args: &Args) -> Result<DataStream<(u64, u64)>> {
    let k = args.keys.max(1);
    Ok(source(env, args)?.map(move |x| (x % k, x)).assign_timestamps_and_watermarks(
        WatermarkStrategy::for_monotonous_timestamps().with_timestamp_assigner(|t: &(u64, u64), _| (t.1 / 1000) as i64),
    ))
}

fn window(env: &mut StreamEnv, args: Args) -> Result<()> {
    let s = timed(env, &args)?
        .key_by(|t: &(u64, u64)| t.0)
        .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
        .reduce(|a, b| (a.0, a.1 + b.1));
    sink(s, &args);
    Ok(())
}

/// One key's state in the `wide` workload: a count and a payload of `width` bytes that every
/// record of the key rewrites (as a per-key profile or session record would be).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Wide {
    key: u64,
    count: u64,
    payload: Vec<u8>,
}

/// Not one of the shared anchors: the keyed workload with `width` bytes of state per key, to make
/// keyed state of a given size (`bench/disk-state.sh`). Payload bytes vary with the record, so
/// nothing compresses them away.
fn wide(env: &mut StreamEnv, args: Args) -> Result<()> {
    let (k, width) = (args.keys.max(1), args.width);
    let s = source(env, &args)?
        .map(move |x| {
            let mut payload = vec![0u8; width];
            let mut r = x.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for chunk in payload.chunks_mut(8) {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                chunk.copy_from_slice(&r.to_le_bytes()[..chunk.len()]);
            }
            Wide { key: x % k, count: 1, payload }
        })
        .key_by(|w: &Wide| w.key)
        .reduce(|a, b| Wide { key: a.key, count: a.count + b.count, payload: b.payload });
    sink(s, &args);
    Ok(())
}

/// A key's count of records and the time of its latest one (the `timeouts` workload).
static LATEST: ValueStateDescriptor<(u64, i64)> = ValueStateDescriptor::new("latest");

/// Event time (ms) a key stays open after its latest record in the `timeouts` workload.
const TIMEOUT_MS: i64 = 2_000;

/// Counts a key's records until none came for [`TIMEOUT_MS`] of event time, then emits
/// `(key, count)` and forgets the key: each record moves the key's timer (deletes it and registers
/// a later one), as an inactivity timeout does.
#[derive(Clone)]
struct Timeout;

impl KeyedProcessFunction<u64, (u64, u64)> for Timeout {
    type Out = (u64, u64);
    fn process_element(&mut self, _: (u64, u64), ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> Result<()> {
        let ts = ctx.timestamp().unwrap_or_default();
        let (count, last) = ctx.value_state(&LATEST)?.value().unwrap_or((0, i64::MIN));
        if last != i64::MIN {
            ctx.delete_event_time_timer(last + TIMEOUT_MS);
        }
        ctx.value_state(&LATEST)?.update((count + 1, ts));
        ctx.register_event_time_timer(ts + TIMEOUT_MS);
        Ok(())
    }
    fn on_timer(&mut self, _: i64, ctx: &mut KeyedContext<'_, u64, (u64, u64)>) -> Result<()> {
        let key = *ctx.key();
        let mut latest = ctx.value_state(&LATEST)?;
        let count = latest.value().map_or(0, |(c, _)| c);
        latest.clear();
        ctx.collect((key, count));
        Ok(())
    }
}

/// Not one of the shared anchors: the window workload's records (timestamps x / 1000 ms) through
/// a keyed process function with one moving event-time timer per key, to measure timers
/// (`bench/timers-disk.sh`). With K keys, every key is live and has one timer while K / 1000 ms is
/// under the timeout; the final watermark fires them all.
fn timeouts(env: &mut StreamEnv, args: Args) -> Result<()> {
    let s = timed(env, &args)?.key_by(|t: &(u64, u64)| t.0).process(Timeout);
    sink(s, &args);
    Ok(())
}

/// Not one of the shared anchors: event-time session windows with a two-second gap, a sum per key
/// and session. A key recurring within the gap extends its session, so every record moves the
/// session's end (`bench/disk-vs-heap.sh sessions`).
fn sessions(env: &mut StreamEnv, args: Args) -> Result<()> {
    let s = timed(env, &args)?
        .key_by(|t: &(u64, u64)| t.0)
        .window(EventTimeSessionWindows::with_gap(Duration::from_secs(2)))
        .reduce(|a, b| (a.0, a.1 + b.1));
    sink(s, &args);
    Ok(())
}

static STATELESS: Job<Args> = Job::new("stateless", stateless);
static KEYED: Job<Args> = Job::new("keyed", keyed);
static WINDOW: Job<Args> = Job::new("window", window);
static WIDE: Job<Args> = Job::new("wide", wide);
static TIMEOUTS: Job<Args> = Job::new("timeouts", timeouts);
static SESSIONS: Job<Args> = Job::new("sessions", sessions);

/// The stateless workload as a plain loop.
fn loop_stateless(n: u64) {
    for x in 0..n {
        let y = x.wrapping_mul(3).wrapping_add(1);
        if y & 1 == 0 {
            black_box(y);
        }
    }
}

/// The keyed workload as a plain loop over a hash map (the same fast hasher weir's state uses).
fn loop_keyed(n: u64, keys: u64) {
    let mut sums: std::collections::HashMap<u64, u64, foldhash::fast::RandomState> = Default::default();
    for x in 0..n {
        let k = x % keys;
        let s = sums.entry(k).or_insert(0);
        *s += 1;
        black_box((k, *s));
    }
}

/// The window workload as a plain loop: timestamps only grow, so a window is complete as soon as
/// the next one starts; then every key's sum is emitted.
fn loop_window(n: u64, keys: u64) {
    let mut sums: std::collections::HashMap<u64, u64, foldhash::fast::RandomState> = Default::default();
    let mut current = 0;
    for x in 0..n {
        let window = x / 1000 / 1000;
        if window != current {
            for kv in sums.drain() {
                black_box(kv);
            }
            current = window;
        }
        *sums.entry(x % keys).or_insert(0) += x;
    }
    for kv in sums.drain() {
        black_box(kv);
    }
}

/// Peak resident memory of this process, in MiB (Linux), or 0 where unknown.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn parse(args: &[String], i: usize, what: &str) -> Result<u64> {
    let text = args.get(i).ok_or_else(|| Error::Config(format!("missing {what}; {USAGE}")))?;
    text.parse().map_err(|_| Error::Config(format!("{what} '{text}' is not a number; {USAGE}")))
}

const USAGE: &str = "usage: anchors WORKLOAD N P [K] | anchors wide N P K WIDTH | anchors loop WORKLOAD N [K]; WORKLOAD: stateless | \
     keyed | window (and, not for loop, timeouts and sessions)";

fn main() -> ExitCode {
    App::new("anchors").job(&STATELESS).job(&KEYED).job(&WINDOW).job(&WIDE).job(&TIMEOUTS).job(&SESSIONS).run(
        |driver, args| {
            let workload = args.first().ok_or_else(|| Error::Config(USAGE.into()))?.clone();
            if workload == "loop" {
                let which = args.get(1).ok_or_else(|| Error::Config(USAGE.into()))?.clone();
                let n = parse(args, 2, "N")?;
                let keys = if args.len() > 3 { parse(args, 3, "K")? } else { 100_000 };
                let t0 = Instant::now();
                match which.as_str() {
                    "stateless" => loop_stateless(n),
                    "keyed" => loop_keyed(n, keys.max(1)),
                    "window" => loop_window(n, keys.max(1)),
                    other => {
                        return Err(Error::Config(format!("unknown workload '{other}'; {USAGE}")));
                    }
                }
                let secs = t0.elapsed().as_secs_f64();
                println!("RESULT loop {which} n={n} p=1 keys={keys} secs={secs:.3} rate={:.0}", n as f64 / secs);
                return Ok(());
            }
            let n = parse(args, 1, "N")?;
            let p = parse(args, 2, "P")?;
            let keys = if args.len() > 3 { parse(args, 3, "K")? } else { 100_000 };
            let width = if workload == "wide" { parse(args, 4, "WIDTH")? } else { 0 };
            let a = Args {
                n,
                p: u32::try_from(p).map_err(|_| Error::Config("P is too large".into()))?,
                keys,
                collect: false,
                width: usize::try_from(width).map_err(|_| Error::Config("WIDTH is too large".into()))?,
            };
            let t0 = Instant::now();
            let job = match workload.as_str() {
                "stateless" => &STATELESS,
                "keyed" => &KEYED,
                "window" => &WINDOW,
                "wide" => &WIDE,
                "timeouts" => &TIMEOUTS,
                "sessions" => &SESSIONS,
                other => {
                    return Err(Error::Config(format!("unknown workload '{other}'; {USAGE}")));
                }
            };
            driver.execute(job, a)?;
            let secs = t0.elapsed().as_secs_f64();
            println!("RESULT weir {workload} n={n} p={p} keys={keys} secs={secs:.3} rate={:.0}", n as f64 / secs);
            eprintln!("peak_rss_mib={:.1}", peak_rss_mib());
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use weir::{Driver, Registry};

    fn driver() -> Driver {
        Driver::local(
            Registry::new()
                .register(&STATELESS)
                .register(&KEYED)
                .register(&WINDOW)
                .register(&WIDE)
                .register(&TIMEOUTS)
                .register(&SESSIONS),
        )
    }

    #[test]
    fn stateless_emits_the_even_values_of_3x_plus_1() -> Result<()> {
        for p in [1u32, 4] {
            let n = 10_000;
            let r = driver().execute(&STATELESS, Args { n, p, keys: 0, collect: true, width: 0 })?;
            let mut got: Vec<u64> = r.collected("out")?;
            got.sort();
            let mut want: Vec<u64> =
                (0..u64::from(p)).flat_map(|_| 0..n / u64::from(p)).map(|x| 3 * x + 1).filter(|y| y % 2 == 0).collect();
            want.sort();
            assert_eq!(got, want, "p={p}");
        }
        Ok(())
    }

    #[test]
    fn keyed_emits_a_running_count_per_key() -> Result<()> {
        for p in [1u32, 4] {
            let (n, keys) = (20_000u64, 97u64);
            let r = driver().execute(&KEYED, Args { n, p, keys, collect: true, width: 0 })?;
            let got: Vec<(u64, u64)> = r.collected("out")?;
            assert_eq!(got.len() as u64, n, "one output per input");
            // Per key, the running counts are exactly 1, 2, ..., total.
            let mut per_key: HashMap<u64, Vec<u64>> = HashMap::new();
            for (k, c) in got {
                per_key.entry(k).or_default().push(c);
            }
            let mut totals: HashMap<u64, u64> = HashMap::new();
            for _ in 0..p {
                for x in 0..n / u64::from(p) {
                    *totals.entry(x % keys).or_default() += 1;
                }
            }
            assert_eq!(per_key.len(), totals.len());
            for (k, mut counts) in per_key {
                counts.sort();
                assert_eq!(counts, (1..=totals[&k]).collect::<Vec<_>>(), "key {k} p={p}");
            }
        }
        Ok(())
    }

    #[test]
    fn wide_keeps_a_count_and_the_latest_payload_per_key() -> Result<()> {
        let (n, keys, width) = (6_000u64, 13u64, 100usize);
        let r = driver().execute(&WIDE, Args { n, p: 2, keys, collect: true, width })?;
        let got: Vec<Wide> = r.collected("out")?;
        assert_eq!(got.len() as u64, n, "one output per input");
        let mut counts: HashMap<u64, Vec<u64>> = HashMap::new();
        for w in got {
            assert_eq!(w.payload.len(), width);
            counts.entry(w.key).or_default().push(w.count);
        }
        assert_eq!(counts.len() as u64, keys);
        for (k, mut c) in counts {
            c.sort();
            let total = 2 * (0..n / 2).filter(|x| x % keys == k).count() as u64;
            assert_eq!(c, (1..=total).collect::<Vec<_>>(), "key {k}");
        }
        Ok(())
    }

    #[test]
    fn timeouts_count_each_key_until_it_goes_quiet() -> Result<()> {
        // 7 keys recur every few records and stay open to the end: one output per key with its
        // count. With 30,000 keys, a key's records (one per source instance) come at the same
        // time and move its timer onto itself: one output per key too.
        for (n, keys) in [(20_000u64, 7u64), (60_000, 30_000)] {
            let r = driver().execute(&TIMEOUTS, Args { n, p: 2, keys, collect: true, width: 0 })?;
            let got: Vec<(u64, u64)> = r.collected("out")?;
            let mut want: HashMap<u64, u64> = HashMap::new();
            for _ in 0..2 {
                for x in 0..n / 2 {
                    *want.entry(x % keys).or_default() += 1;
                }
            }
            let mut got_map = HashMap::new();
            for (k, c) in got {
                assert!(got_map.insert(k, c).is_none(), "key {k} timed out twice");
            }
            assert_eq!(got_map, want, "n={n} keys={keys}");
        }
        Ok(())
    }

    #[test]
    fn sessions_sum_each_key_over_its_one_session() -> Result<()> {
        // Timestamps are x / 1000 ms: 20,000 records span 10 ms, well within the two-second gap,
        // so every key has one session, which the final watermark fires.
        let (n, keys) = (20_000u64, 7u64);
        let r = driver().execute(&SESSIONS, Args { n, p: 2, keys, collect: true, width: 0 })?;
        let mut got: Vec<(u64, u64)> = r.collected("out")?;
        got.sort_unstable();
        let mut want: HashMap<u64, u64> = HashMap::new();
        for _ in 0..2 {
            for x in 0..n / 2 {
                *want.entry(x % keys).or_default() += x;
            }
        }
        let mut want: Vec<(u64, u64)> = want.into_iter().collect();
        want.sort_unstable();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn window_sums_every_key_per_one_second_window() -> Result<()> {
        // Timestamps are x / 1000 ms, so a 1 s window holds one million consecutive values.
        let (n, keys) = (2_500_000u64, 7u64);
        for p in [1u32, 2] {
            let r = driver().execute(&WINDOW, Args { n, p, keys, collect: true, width: 0 })?;
            let mut got: Vec<(u64, u64)> = r.collected("out")?;
            got.sort();
            let mut want: HashMap<(u64, u64), u64> = HashMap::new();
            for _ in 0..p {
                for x in 0..n / u64::from(p) {
                    *want.entry((x / 1_000_000, x % keys)).or_default() += x;
                }
            }
            // A window's result does not say which window it was; its sum identifies it here.
            let mut want: Vec<(u64, u64)> = want.into_iter().map(|((_, k), s)| (k, s)).collect();
            want.sort();
            assert_eq!(got, want, "p={p}");
        }
        Ok(())
    }
}
