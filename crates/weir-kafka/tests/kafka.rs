//! The Kafka source and sink on the embedded cluster, against a Kafka-protocol broker (noida-db)
//! and checked with an independent client (confluent-kafka): see `weir_kafka::testing`. Recovery
//! after failures (kill -9 of TaskManagers, a broker restart) and rescaling from a savepoint are
//! tested on process clusters, in the `weir` crate's integration tests (kafka.rs).

use std::collections::BTreeMap;
use std::time::Duration;

use weir_api::{Driver, Job, Registry, StreamEnv};
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

fn driver(parallelism: u32, checkpoints: Option<&str>) -> Result<Driver> {
    let registry = Registry::new().register(&READ_LINES).register(&READ_NUMBERS).register(&WRITE_NUMBERS);
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
    let at =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
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
