//! Windows, keyed co-process functions and interval joins keep their state in checkpoints: a job
//! restored from a retained checkpoint (at the same or another parallelism) writes, after what it
//! had committed up to that checkpoint, exactly what a run that never stopped writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use weir::{
    AggregateFunction, CountEvictor, CountTrigger, Driver, Error, EventTimeSessionWindows, EventTimeTrigger,
    GlobalWindows, Job, KeyedCoProcessFunction, KeyedContext, MapStateDescriptor, Registry, Result,
    SlidingEventTimeWindows, StreamEnv, TimeWindow, TumblingEventTimeWindows, WatermarkStrategy,
};

use crate::checkpoints::committed;

/// (key, timestamp, value)
type Event = (u32, i64, i64);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Args {
    count: u64,
    keys: u64,
    rate: f64,
    output: PathBuf,
    parallelism: u32,
}

/// Record `i`: key `i % keys`, time moving 2 ms per record in bursts of 500 records separated by
/// 300 ms of silence (so that sessions close), a value that does not follow the key.
fn event(i: u64, keys: u64) -> Event {
    let ts = (i * 2 + (i / 500) * 300) as i64;
    ((i % keys) as u32, ts, ((i / keys) % 5) as i64 - 2)
}

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// Per key and window: key, number of records, sum of values.
#[derive(Clone)]
struct KeySumCount;
impl AggregateFunction<Event> for KeySumCount {
    type Acc = (u32, u64, i64);
    type Out = String;
    fn create_accumulator(&self) -> (u32, u64, i64) {
        (0, 0, 0)
    }
    fn add(&self, e: Event, acc: &mut (u32, u64, i64)) {
        *acc = (e.0, acc.1 + 1, acc.2 + e.2);
    }
    fn get_result(&self, acc: &(u32, u64, i64)) -> String {
        format!("{} {} {}", acc.0, acc.1, acc.2)
    }
    fn merge(&self, other: (u32, u64, i64), acc: &mut (u32, u64, i64)) {
        *acc = (other.0, acc.1 + other.1, acc.2 + other.2);
    }
}

/// Per key and 100 ms of event time: the sum of the first input's values and of the second's,
/// kept in map state and reported by an event-time timer.
#[derive(Clone)]
struct BucketSums;
static BUCKETS: MapStateDescriptor<i64, (i64, i64)> = MapStateDescriptor::new("buckets");

impl BucketSums {
    fn add(ts: i64, left: i64, right: i64, ctx: &mut KeyedContext<'_, u32, String>) -> Result<()> {
        let bucket = ts.div_euclid(100);
        let mut m = ctx.map_state(&BUCKETS)?;
        let (l, r) = m.get(&bucket).copied().unwrap_or((0, 0));
        m.put(bucket, (l + left, r + right));
        ctx.register_event_time_timer(bucket * 100 + 99);
        Ok(())
    }
}

impl KeyedCoProcessFunction<u32, Event, (u32, i64, i64)> for BucketSums {
    type Out = String;
    fn process_element1(&mut self, e: Event, ctx: &mut KeyedContext<'_, u32, String>) -> Result<()> {
        Self::add(e.1, e.2, 0, ctx)
    }
    fn process_element2(&mut self, e: (u32, i64, i64), ctx: &mut KeyedContext<'_, u32, String>) -> Result<()> {
        Self::add(e.1, 0, e.2, ctx)
    }
    fn on_timer(&mut self, at: i64, ctx: &mut KeyedContext<'_, u32, String>) -> Result<()> {
        let bucket = at.div_euclid(100);
        let key = *ctx.key();
        let sums = ctx.map_state(&BUCKETS)?.remove(&bucket);
        if let Some((l, r)) = sums {
            ctx.collect(format!("{key} {bucket} {l} {r}"));
        }
        Ok(())
    }
}

/// The outputs, each a directory under the job's output.
const OUTPUTS: [&str; 8] =
    ["tumbling", "sliding", "sessions", "counts", "global", "evicting", "co-process", "interval-join"];

fn windowed(env: &mut StreamEnv, a: Args) -> Result<()> {
    let (keys, p) = (a.keys.max(1), a.parallelism);
    let events = env
        .datagen(Some(a.count), Some(a.rate), move |i| event(i, keys))
        .set_parallelism(1)
        .uid("events")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_monotonous_timestamps()
                .with_timestamp_assigner(|e: &Event, _| e.1)
                .with_watermark_per_batch(),
        )
        .set_parallelism(1);
    let keyed = events.key_by(|e: &Event| e.0);
    let out = |name: &str| a.output.join(name);
    let report = |k: &u32, w: &TimeWindow, es: &[Event], out: &mut Vec<String>| {
        out.push(format!("{k} {} {} {} {}", w.start, w.end, es.len(), es.iter().map(|e| e.2).sum::<i64>()))
    };
    keyed
        .window(TumblingEventTimeWindows::of(ms(100)))
        .reduce(|x, y| (x.0, x.1.max(y.1), x.2 + y.2))
        .set_parallelism(p)
        .uid("tumbling")
        .map(|e: Event| format!("{} {} {}", e.0, e.1, e.2))
        .set_parallelism(p)
        .write_text(out("tumbling"))
        .set_parallelism(p)
        .uid("tumbling-files");
    keyed
        .window(SlidingEventTimeWindows::of(ms(200), ms(50)))
        .allowed_lateness(ms(100))
        .aggregate(KeySumCount)
        .set_parallelism(p)
        .uid("sliding")
        .write_text(out("sliding"))
        .set_parallelism(p)
        .uid("sliding-files");
    keyed
        .window(EventTimeSessionWindows::with_gap(ms(40)))
        .process(report)
        .set_parallelism(p)
        .uid("sessions")
        .write_text(out("sessions"))
        .set_parallelism(p)
        .uid("sessions-files");
    keyed
        .count_window(7)
        .reduce(|x, y| (x.0, x.1.max(y.1), x.2 + y.2))
        .set_parallelism(p)
        .uid("counts")
        .map(|e: Event| format!("{} {} {}", e.0, e.1, e.2))
        .set_parallelism(p)
        .write_text(out("counts"))
        .set_parallelism(p)
        .uid("counts-files");
    keyed
        .window(GlobalWindows::create())
        .trigger(CountTrigger::of(9))
        .process(report)
        .set_parallelism(p)
        .uid("global")
        .write_text(out("global"))
        .set_parallelism(p)
        .uid("global-files");
    keyed
        .window(TumblingEventTimeWindows::of(ms(100)))
        .trigger(EventTimeTrigger)
        .evictor(CountEvictor::of(3))
        .process(report)
        .set_parallelism(p)
        .uid("evicting")
        .write_text(out("evicting"))
        .set_parallelism(p)
        .uid("evicting-files");
    let scaled = events.map(|e: Event| (e.0, e.1, e.2 * 10)).set_parallelism(1);
    events
        .connect(&scaled)
        .key_by(|e: &Event| e.0, |e: &(u32, i64, i64)| e.0)
        .process(BucketSums)
        .set_parallelism(p)
        .uid("co-process")
        .write_text(out("co-process"))
        .set_parallelism(p)
        .uid("co-process-files");
    let zeros = events.filter(|e: &Event| e.2 == 0).set_parallelism(1).key_by(|e: &Event| e.0);
    let ones = events.filter(|e: &Event| e.2 == 1).set_parallelism(1).key_by(|e: &Event| e.0);
    zeros
        .interval_join(&ones)
        .between(-40, 40)
        .process(|a: &Event, b: &Event, out: &mut Vec<String>| out.push(format!("{} {} {}", a.0, a.1, b.1)))
        .set_parallelism(p)
        .uid("interval-join")
        .write_text(out("interval-join"))
        .set_parallelism(p)
        .uid("interval-join-files");
    Ok(())
}
static WINDOWED: Job<Args> = Job::new("windowed-checkpoints", windowed);

/// Runs the job to its end with checkpoints every 30 ms, all of them retained, and the further
/// `settings`; its checkpoint directory for the job, and whether it restored.
fn run(cp: &Path, args: &Args, restore: Option<&Path>, settings: &[(&str, &str)]) -> Result<(PathBuf, bool)> {
    let mut d = Driver::local(Registry::new().register(&WINDOWED));
    for (k, v) in settings {
        d.set(k, v)?;
    }
    d.set("execution.checkpointing.interval", "30ms")?;
    d.set("execution.checkpointing.dir", &cp.display().to_string())?;
    d.set("execution.checkpointing.num-retained", "1000")?;
    if let Some(r) = restore {
        d.set("execution.savepoint.path", &r.display().to_string())?;
    }
    let client = d.execute_async(&WINDOWED, args.clone())?;
    let result = client.wait_timeout(Duration::from_secs(120))?;
    assert!(result.is_some(), "the job did not finish in 2 minutes");
    let stats = client.checkpoint_stats().ok_or_else(|| Error::internal("no checkpoint statistics"))?;
    assert!(stats.completed >= 1, "{stats:?}");
    Ok((cp.join(client.job_id().to_string()), stats.restored.is_some()))
}

/// The checkpoint numbers of the `chk-N` directories in `job_dir`, ascending.
fn checkpoints(job_dir: &Path) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = std::fs::read_dir(job_dir)
        .map_err(|e| Error::io("cannot list", job_dir, e))?
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("chk-").and_then(|n| n.parse().ok()))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Copies the files of `from` that checkpoints up to `id` committed (`part-<subtask>-<checkpoint>`)
/// into a new directory `to`: the output as it was when the job failed after checkpoint `id`.
fn committed_up_to(from: &Path, to: &Path, id: u64) -> Result<usize> {
    std::fs::create_dir_all(to).map_err(|e| Error::io("cannot create", to, e))?;
    let mut n = 0;
    for entry in std::fs::read_dir(from).map_err(|e| Error::io("cannot list", from, e))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(chk) = name.strip_prefix("part-").and_then(|r| r.split_once('-')).map(|(_, c)| c) else { continue };
        if chk.parse::<u64>().is_ok_and(|c| c <= id) {
            std::fs::copy(entry.path(), to.join(&name)).map_err(|e| Error::io("cannot copy", entry.path(), e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// Runs the job of `args` again at `parallelism` from its checkpoint `id` at `chk`, with
/// `settings`, after copying every sink's output as it was when that checkpoint completed (a
/// restored sink commits its pending files) into a new directory under `dir`; that directory, and
/// whether the job restored.
fn restore(
    dir: &Path,
    args: &Args,
    chk: &Path,
    id: u64,
    parallelism: u32,
    settings: &[(&str, &str)],
) -> Result<(PathBuf, bool)> {
    // Runs with other settings from the same checkpoint get directories of their own.
    let variant = settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let tag = format!("{id}-{parallelism}-{:016x}", weir_core::keygroup::stable_hash(&variant));
    let out = dir.join(format!("restored-{tag}"));
    let mut before = 0;
    for name in OUTPUTS {
        before += committed_up_to(&args.output.join(name), &out.join(name), id)?;
    }
    assert!(before > 0, "checkpoint {id} committed no output");
    let again = Args { output: out.clone(), parallelism, ..args.clone() };
    let (_, restored) = run(&dir.join(format!("cp-{tag}")), &again, Some(chk), settings)?;
    Ok((out, restored))
}

/// Tumbling 100 ms windows of the events, as the job writes them: key, largest timestamp, sum.
fn tumbling_reference(args: &Args) -> Vec<String> {
    let mut windows: BTreeMap<(u32, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..args.count {
        let e = event(i, args.keys);
        let w = windows.entry((e.0, e.1.div_euclid(100))).or_insert((i64::MIN, 0));
        *w = (w.0.max(e.1), w.1 + e.2);
    }
    let mut lines: Vec<String> = windows.iter().map(|((k, _), (ts, sum))| format!("{k} {ts} {sum}")).collect();
    lines.sort();
    lines
}

#[test]
fn windows_co_process_functions_and_interval_joins_go_on_from_a_retained_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    let cp = dir.path().join("cp");
    let args = Args { count: 9_000, keys: 7, rate: 6_000.0, output: dir.path().join("out"), parallelism: 2 };
    let (job_dir, restored) = run(&cp, &args, None, &[])?;
    assert!(!restored);
    let mut want = BTreeMap::new();
    for name in OUTPUTS {
        let (lines, _) = committed(&args.output.join(name))?;
        assert!(!lines.is_empty(), "{name} wrote nothing");
        want.insert(name, lines);
    }
    assert_eq!(want["tumbling"], tumbling_reference(&args));
    assert_eq!(
        want["counts"].len() as u64,
        (0..args.keys).map(|k| (args.count - k).div_ceil(args.keys) / 7).sum::<u64>()
    );
    let ids = checkpoints(&job_dir)?;
    assert!(ids.len() >= 4, "too few checkpoints to restore from the middle: {ids:?}");
    // Restore from checkpoints in the middle of the input, at the same parallelism and at another.
    let mut counts_seen = false;
    for (id, parallelism) in [(ids[ids.len() / 3], 2), (ids[ids.len() / 2], 3), (ids[2 * ids.len() / 3], 1)] {
        let chk = job_dir.join(format!("chk-{id}"));
        let meta = std::fs::read(chk.join("_metadata")).map_err(|e| Error::io("cannot read", &chk, e))?;
        let meta: serde_json::Value = serde_json::from_slice(&meta).map_err(|e| Error::internal(e.to_string()))?;
        let with_state: Vec<&str> = meta["files"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|f| f["uids"].as_array().into_iter().flatten().filter_map(|u| u.as_str()))
            .collect();
        // Count windows hold nothing at a barrier where every key's count is a multiple of the
        // window size (keys take turns, so that happens every 49 records): they are checked over
        // all three checkpoints below.
        for uid in ["tumbling", "sliding", "sessions", "global", "evicting", "co-process", "interval-join"] {
            assert!(with_state.contains(&uid), "checkpoint {id} holds no state of {uid}: {with_state:?}");
        }
        counts_seen |= with_state.contains(&"counts");
        let (out, restored) = restore(dir.path(), &args, &chk, id, parallelism, &[])?;
        assert!(restored);
        for name in OUTPUTS {
            let (lines, _) = committed(&out.join(name))?;
            assert_eq!(lines, want[name], "{name}, restored from checkpoint {id} at parallelism {parallelism}");
        }
    }
    assert!(counts_seen, "no checkpoint held state of the count windows");
    Ok(())
}

/// Keyed state of every kind of window and of process functions in the disk backend,
/// checkpointed incrementally, with a cache of two entries for seven keys (most state reads and
/// writes go to the store).
const DISK: [(&str, &str); 3] =
    [("state.backend.type", "disk"), ("state.backend.incremental", "true"), ("state.backend.disk.cache-entries", "2")];

/// The disk backend with process functions' timers on the heap.
const DISK_HEAP_TIMERS: [(&str, &str); 4] = [
    ("state.backend.type", "disk"),
    ("state.backend.incremental", "true"),
    ("state.backend.disk.cache-entries", "2"),
    ("state.backend.disk.timer-service.factory", "heap"),
];

#[test]
fn windows_and_process_state_on_disk_go_on_from_increments_at_another_parallelism_and_on_the_heap() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
    // 5 s of input: the disk backend's checkpoints (a cache of two entries for seven keys) take
    // longer than the heap's, and the test needs a few of them to restore from the middle, also
    // on a machine the other tests keep busy (3 s gave only three there).
    let args = Args { count: 15_000, keys: 7, rate: 3_000.0, output: dir.path().join("out"), parallelism: 2 };
    let heap = Args { output: dir.path().join("out-heap"), ..args.clone() };
    run(&dir.path().join("cp-heap"), &heap, None, &[])?;
    let (job_dir, _) = run(&dir.path().join("cp"), &args, None, &DISK)?;
    let mut want = BTreeMap::new();
    for name in OUTPUTS {
        let (lines, _) = committed(&args.output.join(name))?;
        let (on_heap, _) = committed(&heap.output.join(name))?;
        assert!(!lines.is_empty(), "{name} wrote nothing");
        assert_eq!(lines, on_heap, "{name}: the disk backend computes what the heap backend does");
        want.insert(name, lines);
    }
    let ids = checkpoints(&job_dir)?;
    assert!(ids.len() >= 4, "too few checkpoints to restore from the middle: {ids:?}");
    // Whether checkpoint `id` builds on earlier ones for operator `uid` (a chain restarts with a
    // full snapshot now and then).
    let builds_on_earlier = |id: &u64, uid: &str| -> Result<bool> {
        let chk = job_dir.join(format!("chk-{id}"));
        let meta = std::fs::read(chk.join("_metadata")).map_err(|e| Error::io("cannot read", &chk, e))?;
        let meta: serde_json::Value = serde_json::from_slice(&meta).map_err(|e| Error::internal(e.to_string()))?;
        let files = meta["files"].as_array().cloned().unwrap_or_default();
        let uids = |f: &serde_json::Value| f["uids"].as_array().cloned().unwrap_or_default();
        Ok(files.iter().any(|f| f["checkpoint"].is_u64() && uids(f).iter().any(|u| u == uid)))
    };
    // The windows' state is in the store: their checkpoints are increments too.
    for uid in ["tumbling", "sliding", "sessions", "counts", "global", "evicting"] {
        let mut incremental = false;
        for id in &ids {
            incremental |= builds_on_earlier(id, uid)?;
        }
        assert!(incremental, "no checkpoint of {uid} builds on earlier ones");
    }
    let mut linked = None;
    for id in &ids[ids.len() / 3..ids.len() - 1] {
        if builds_on_earlier(id, "co-process")? {
            linked = Some(*id);
            break;
        }
    }
    let linked = linked.ok_or_else(|| Error::internal(format!("no checkpoint builds on earlier ones: {ids:?}")))?;
    // Disk to disk at parallelism 3, from a checkpoint that builds on earlier ones, with timers in
    // the store and on the heap; disk to heap at 1.
    let restores = [(linked, 3, &DISK[..]), (linked, 3, &DISK_HEAP_TIMERS[..]), (ids[2 * ids.len() / 3], 1, &[][..])];
    for (id, parallelism, settings) in restores {
        let chk = job_dir.join(format!("chk-{id}"));
        let (out, restored) = restore(dir.path(), &args, &chk, id, parallelism, settings)?;
        assert!(restored);
        for (name, lines) in &want {
            let (got, _) = committed(&out.join(name))?;
            assert_eq!(&got, lines, "{name}, restored from checkpoint {id} at parallelism {parallelism}");
        }
    }
    Ok(())
}
