//! The Kafka source and sink on the embedded cluster, against a Kafka-protocol broker (noida-db)
//! and checked with an independent client (confluent-kafka): see `weir_kafka::testing`. Recovery
//! after failures (kill -9 of TaskManagers, a broker restart) and rescaling from a savepoint are
//! tested on process clusters, in the `weir` crate's integration tests (kafka.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use weir_api::{Driver, Job, Registry, StreamEnv, TumblingEventTimeWindows};
use weir_core::Result;
use weir_kafka::testing::Broker;
use weir_kafka::{DeliveryGuarantee, Json, KafkaSink, KafkaSource, Reset, StartingOffsets, Strings, Text};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct ReadArgs {
    brokers: String,
    topic: String,
    starting: StartingOffsets,
    group: Option<String>,
    skip_bad: bool,
    timeout_ms: u64,
}

impl ReadArgs {
    fn new(b: &Broker, topic: &str) -> Self {
        ReadArgs {
            brokers: b.address(),
            topic: topic.into(),
            starting: StartingOffsets::Earliest,
            group: None,
            skip_bad: false,
            timeout_ms: 30_000,
        }
    }
}

fn source<T>(a: &ReadArgs, d: impl weir_kafka::Deserializer<T>) -> KafkaSource<T> {
    let mut s = KafkaSource::new(&a.brokers, d)
        .topics([a.topic.as_str()])
        .starting_offsets(a.starting)
        .bounded()
        .property("default.api.timeout.ms", &a.timeout_ms.to_string());
    if let Some(g) = &a.group {
        s = s.group_id(g);
    }
    if a.skip_bad {
        s = s.skip_bad_records();
    }
    s
}

/// A topic read to its end (bounded) into the collect sink.
fn read_lines(env: &mut StreamEnv, a: ReadArgs) -> Result<()> {
    env.add_source(source(&a, Strings)).collect("lines");
    Ok(())
}
static READ_LINES: Job<ReadArgs> = Job::new("read-lines", read_lines);

/// A topic of JSON numbers read to its end.
fn read_numbers(env: &mut StreamEnv, a: ReadArgs) -> Result<()> {
    env.add_source(source(&a, Json::<u64>::default())).collect("numbers");
    Ok(())
}
static READ_NUMBERS: Job<ReadArgs> = Job::new("read-numbers", read_numbers);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct WriteArgs {
    brokers: String,
    topic: String,
    count: u64,
    guarantee: DeliveryGuarantee,
    prefix: String,
}

/// Numbers `0..count` written to a topic as text.
fn write_numbers(env: &mut StreamEnv, a: WriteArgs) -> Result<()> {
    env.datagen(Some(a.count), None, |i| i).add_sink(
        KafkaSink::new(&a.brokers, &a.topic, Text).delivery_guarantee(a.guarantee).transactional_id_prefix(&a.prefix),
    );
    Ok(())
}
static WRITE_NUMBERS: Job<WriteArgs> = Job::new("write-numbers", write_numbers);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct WindowArgs {
    brokers: String,
    topic: String,
    out: String,
    idleness_ms: Option<u64>,
    bounded: bool,
}

/// `key ...` lines counted per key in 1 s event-time windows, by the Kafka timestamps and the
/// source's per-partition watermarks; `key count` records out.
fn window_counts(env: &mut StreamEnv, a: WindowArgs) -> Result<()> {
    let mut source = KafkaSource::new(&a.brokers, Strings)
        .topics([a.topic.as_str()])
        .watermarks(Duration::ZERO, a.idleness_ms.map(Duration::from_millis));
    if a.bounded {
        source = source.bounded();
    }
    env.add_source(source)
        .map(|l: String| (l.split(' ').next().unwrap_or_default().to_string(), 1u64))
        .key_by(|t: &(String, u64)| t.0.clone())
        .window(TumblingEventTimeWindows::of(Duration::from_secs(1)))
        .reduce(|a, b| (a.0, a.1 + b.1))
        .map(|(k, c)| format!("{k} {c}"))
        .add_sink(KafkaSink::new(&a.brokers, &a.out, Text));
    Ok(())
}
static WINDOW_COUNTS: Job<WindowArgs> = Job::new("window-counts", window_counts);

fn driver(parallelism: u32, checkpoints: Option<&str>) -> Result<Driver> {
    let registry = Registry::new()
        .register(&READ_LINES)
        .register(&READ_NUMBERS)
        .register(&WRITE_NUMBERS)
        .register(&WINDOW_COUNTS)
        .register(&READ_FOREVER);
    let mut d = Driver::local(registry).with_parallelism(parallelism)?;
    if let Some(every) = checkpoints {
        d.set("execution.checkpointing.interval", every)?;
    }
    Ok(d)
}

fn lines(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn a_bounded_source_reads_every_record_once_at_any_parallelism() -> Result<()> {
    let b = Broker::start();
    b.create_topic("words", 5);
    let input = lines("w", 2000);
    b.produce("words", 5, &input);
    for p in [1, 3] {
        let got: Vec<String> = driver(p, None)?.execute(&READ_LINES, ReadArgs::new(&b, "words"))?.collected("lines")?;
        assert_eq!(sorted(got), sorted(input.clone()), "parallelism {p}");
    }
    Ok(())
}

#[test]
fn starting_offsets_latest_committed_and_timestamp() -> Result<()> {
    let b = Broker::start();
    b.create_topic("events", 2);
    let first = lines("a", 100);
    b.produce("events", 2, &first);
    // Latest: the end as of the start; a bounded run reads nothing.
    let mut a = ReadArgs::new(&b, "events");
    a.starting = StartingOffsets::Latest;
    let got: Vec<String> = driver(2, None)?.execute(&READ_LINES, a.clone())?.collected("lines")?;
    assert!(got.is_empty(), "{got:?}");
    // A run with checkpoints commits its offsets to the group when they complete.
    a.starting = StartingOffsets::Committed { fallback: Reset::Earliest };
    a.group = Some("readers".into());
    let got: Vec<String> = driver(2, Some("100ms"))?.execute(&READ_LINES, a.clone())?.collected("lines")?;
    assert_eq!(sorted(got), sorted(first.clone()), "no committed offsets yet: from the earliest");
    let committed = b.committed("events", "readers");
    assert_eq!(committed, BTreeMap::from([(0, 50), (1, 50)]), "the group's offsets after the final checkpoint");
    // Committed: the next run goes on from there.
    let second = lines("b", 60);
    b.produce("events", 2, &second);
    let got: Vec<String> = driver(2, Some("100ms"))?.execute(&READ_LINES, a.clone())?.collected("lines")?;
    assert_eq!(sorted(got), sorted(second.clone()));
    // Timestamp: records at or after it.
    std::thread::sleep(Duration::from_millis(50));
    let at = weir_core::clock::now_millis();
    std::thread::sleep(Duration::from_millis(50));
    let third = lines("c", 40);
    b.produce("events", 2, &third);
    a.starting = StartingOffsets::Timestamp(at);
    a.group = None;
    let got: Vec<String> = driver(1, None)?.execute(&READ_LINES, a)?.collected("lines")?;
    assert_eq!(sorted(got), sorted(third));
    Ok(())
}

#[test]
fn a_record_that_does_not_deserialize_fails_the_job_with_its_place_or_is_skipped() -> Result<()> {
    let b = Broker::start();
    b.create_topic("numbers", 1);
    b.produce("numbers", 1, &["1".into(), "two".into(), "3".into()]);
    let a = ReadArgs::new(&b, "numbers");
    let e = driver(1, None)?.execute(&READ_NUMBERS, a.clone()).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("topic 'numbers', partition 0, offset 1") && e.contains("not a JSON u64"), "{e}");
    assert!(e.contains("skip_bad_records"), "the error says what to do: {e}");
    let skipping = ReadArgs { skip_bad: true, ..a };
    let got: Vec<u64> = driver(1, None)?.execute(&READ_NUMBERS, skipping)?.collected("numbers")?;
    assert_eq!(got, vec![1, 3]);
    Ok(())
}

#[test]
fn an_unknown_topic_and_an_unreachable_broker_are_clear_errors() -> Result<()> {
    let b = Broker::start();
    let once = driver(1, None)?;
    let e = once.execute(&READ_LINES, ReadArgs::new(&b, "nowhere")).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("topic 'nowhere'") && e.contains("does not exist"), "{e}");
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(1);
    let mut a = ReadArgs::new(&b, "t");
    a.brokers = format!("127.0.0.1:{port}");
    a.timeout_ms = 2_000;
    let e = once.execute(&READ_LINES, a).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains(&format!("127.0.0.1:{port}")) && e.contains("reachable"), "{e}");
    // Bad configuration is refused before anything runs.
    let mut a = ReadArgs::new(&b, "t");
    a.brokers = "no-port".into();
    let e = once.execute(&READ_LINES, a).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("is not host:port"), "{e}");
    Ok(())
}

fn write(b: &Broker, topic: &str, count: u64, guarantee: DeliveryGuarantee) -> WriteArgs {
    WriteArgs { brokers: b.address(), topic: topic.into(), count, guarantee, prefix: format!("test-{topic}") }
}

#[test]
fn the_sink_writes_every_record_at_least_once_and_exactly_once() -> Result<()> {
    let b = Broker::start();
    for (topic, guarantee) in [("alo", DeliveryGuarantee::AtLeastOnce), ("eos", DeliveryGuarantee::ExactlyOnce)] {
        b.create_topic(topic, 3);
        driver(2, Some("100ms"))?.execute(&WRITE_NUMBERS, write(&b, topic, 5000, guarantee))?;
        let got: Vec<u64> = b
            .consume(topic, None, Duration::from_secs(2))
            .into_iter()
            .filter_map(|s| s.value.and_then(|v| v.parse().ok()))
            .collect();
        let mut got = got;
        got.sort_unstable();
        assert_eq!(got, (0..5000).collect::<Vec<u64>>(), "{topic}");
    }
    // Exactly-once without checkpoints is refused: it commits at checkpoints.
    b.create_topic("nocp", 1);
    let e = driver(1, None)?.execute(&WRITE_NUMBERS, write(&b, "nocp", 10, DeliveryGuarantee::ExactlyOnce)).err();
    assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("enable checkpointing"));
    Ok(())
}

/// A whole second some minutes ago (ms): recent enough for the broker's retention to keep records
/// stamped with it, aligned so that 1 s windows hold whole runs of records.
fn recent_second() -> i64 {
    let now = weir_core::clock::now_millis();
    (now - 600_000) / 1000 * 1000
}

/// A topic read without end, checkpointing, offsets committed to a group.
fn read_forever(env: &mut StreamEnv, a: ReadArgs) -> Result<()> {
    let source = KafkaSource::new(&a.brokers, Strings).topics([a.topic.as_str()]).group_id("watched");
    env.add_source(source).discard();
    Ok(())
}
static READ_FOREVER: Job<ReadArgs> = Job::new("read-forever", read_forever);

fn window_args(b: &Broker, topic: &str, idleness_ms: Option<u64>, bounded: bool) -> WindowArgs {
    WindowArgs { brokers: b.address(), topic: topic.into(), out: format!("{topic}-out"), idleness_ms, bounded }
}

fn seen_values(b: &Broker, topic: &str, idle: Duration) -> Vec<String> {
    let mut v: Vec<String> = b.consume(topic, None, idle).into_iter().filter_map(|s| s.value).collect();
    v.sort();
    v
}

#[test]
fn watermarks_per_partition_keep_a_partition_that_lags_in_event_time_on_time() -> Result<()> {
    let b = Broker::start();
    b.create_topic("skew", 2);
    b.create_topic("skew-out", 1);
    // Partition 0 is 100 s ahead of partition 1 in event time. One watermark for the whole
    // source would make whichever partition is read second late; one per partition does not.
    let base = recent_second();
    let mut feeder = b.feeder("skew", 2);
    for i in 0..500 {
        feeder.send_at("ahead", 0, base + 100_000 + i * 10);
        feeder.send_at("behind", 1, base + i * 10);
    }
    feeder.flush();
    driver(1, None)?.execute(&WINDOW_COUNTS, window_args(&b, "skew", None, true))?;
    let want: Vec<String> = ["ahead 100"; 5].into_iter().chain(["behind 100"; 5]).map(String::from).collect();
    assert_eq!(seen_values(&b, "skew-out", Duration::from_secs(1)), want);
    Ok(())
}

#[test]
fn an_idle_partition_stops_holding_event_time_back() -> Result<()> {
    let b = Broker::start();
    for t in ["quiet", "quiet-out", "stalled", "stalled-out"] {
        b.create_topic(t, if t.ends_with("-out") { 1 } else { 2 });
    }
    let d = driver(1, None)?;
    // With idleness, the empty partition is left out after 300 ms: the watermark follows
    // partition 0, and its windows fire while the job runs.
    let idle = d.execute_async(&WINDOW_COUNTS, window_args(&b, "quiet", Some(300), false))?;
    // Without, it holds the watermark back and nothing fires.
    let stalled = d.execute_async(&WINDOW_COUNTS, window_args(&b, "stalled", None, false))?;
    // Partition 0 of each topic gets a record every 10 ms of event time, for 4 s of it, as it
    // happens; partition 1 gets nothing, ever.
    let base = recent_second();
    let mut feeders = [b.feeder("quiet", 2), b.feeder("stalled", 2)];
    for i in 0..400 {
        for f in &mut feeders {
            f.send_at("k", 0, base + i * 10);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    feeders.iter().for_each(|f| f.flush());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut fired = Vec::new();
    while fired.len() < 3 && std::time::Instant::now() < deadline {
        fired = seen_values(&b, "quiet-out", Duration::from_millis(500));
    }
    let held = seen_values(&b, "stalled-out", Duration::from_millis(500));
    idle.cancel()?;
    stalled.cancel()?;
    // Windows of a second, a hundred records each; the last one waits for later records.
    assert_eq!(fired, ["k 100", "k 100", "k 100"]);
    assert!(held.is_empty(), "{held:?}");
    Ok(())
}

#[test]
fn the_source_reports_flinks_kafka_metrics() -> Result<()> {
    let b = Broker::start();
    b.create_topic("watched", 2);
    b.produce("watched", 2, &lines("m", 100));
    let job = driver(1, Some("100ms"))?.execute_async(&READ_FOREVER, ReadArgs::new(&b, "watched"))?;
    let id = job.job_id().to_string();
    let number = |g: &weir_core::metric::GroupSample, name: &str| g.metric(name).map(|s| s.number());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut current, mut committed, mut commits) = (Vec::new(), Vec::new(), 0.0);
    while std::time::Instant::now() < deadline {
        let groups = weir_metrics::global().samples_where("job_id", &id);
        current = groups
            .iter()
            .filter_map(|g| Some((g.var("partition")?.to_string(), number(g, "currentOffset")?)))
            .collect();
        committed = groups.iter().filter_map(|g| number(g, "committedOffset")).filter(|v| !v.is_nan()).collect();
        commits = groups.iter().filter_map(|g| number(g, "commitsSucceeded")).sum();
        if current.iter().map(|c| c.1).sum::<f64>() >= 100.0 && committed.iter().sum::<f64>() >= 100.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    job.cancel()?;
    current.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(current, [("0".to_string(), 50.0), ("1".to_string(), 50.0)]);
    assert_eq!(committed, [50.0, 50.0]);
    assert!(commits >= 1.0, "{commits}");
    Ok(())
}
