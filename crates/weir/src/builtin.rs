//! Jobs built into the stock `weir` executable.

use std::path::PathBuf;
use std::time::Duration;

use weir_api::{Job, Registry, StreamEnv};
use weir_core::Result;

/// Arguments of [`WORDCOUNT`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WordCountArgs {
    /// A text file, or a directory of text files.
    pub input: PathBuf,
    /// A directory to write `word count` lines into (one file per subtask); standard output if
    /// absent.
    #[serde(default)]
    pub output: Option<PathBuf>,
}

/// Splits text into lower-case words (letters, digits and apostrophes).
pub fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn wordcount(env: &mut StreamEnv, args: WordCountArgs) -> Result<()> {
    let counts = env
        .read_text_file(&args.input)
        .flat_map(|line: String, out: &mut Vec<(String, u64)>| out.extend(words(&line).map(|w| (w, 1))))
        .name("Tokenizer")
        .key_by(|t: &(String, u64)| t.0.clone())
        .sum(|t| &mut t.1)
        .name("Count");
    match args.output {
        Some(dir) => {
            counts.map(|(w, c)| format!("{w} {c}")).name("Format").write_text(dir);
        }
        None => {
            counts.print();
        }
    }
    Ok(())
}

/// Word count over text files: rolling counts per word, printed or written as text.
pub static WORDCOUNT: Job<WordCountArgs> = Job::new("wordcount", wordcount);

/// Arguments of [`GENERATE`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateArgs {
    /// Records per second in all (absent: as fast as possible).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Records in all (absent: without end).
    #[serde(default)]
    pub count: Option<u64>,
}

fn generate(env: &mut StreamEnv, args: GenerateArgs) -> Result<()> {
    env.datagen(args.count, args.rate, |i| i)
        .map(|i| (i % 1000, i))
        .name("Tag")
        .key_by(|t: &(u64, u64)| t.0)
        .sum(|t| &mut t.1)
        .name("Sum")
        .discard();
    Ok(())
}

/// Generated numbers, keyed and summed, into a discarding sink: a load or a long-running job to
/// try clusters with (`{"rate": 1000}`; `{"count": N}` ends it).
pub static GENERATE: Job<GenerateArgs> = Job::new("generate", generate);

/// Arguments of [`KEYED_SUMS`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedSumsArgs {
    /// Records in all: the numbers `0..count`.
    pub count: u64,
    /// Keys: number `i` has key `i % keys`.
    pub keys: u64,
    /// Records per second (absent: as fast as possible).
    #[serde(default)]
    pub rate: Option<f64>,
    /// A directory to write `key sum` lines into.
    pub output: PathBuf,
    /// The parallelism of the keyed sum and the sink (the source has one subtask, so that every
    /// key's records arrive in one order and the output is the same in every run).
    #[serde(default = "two")]
    pub parallelism: u32,
}

fn two() -> u32 {
    2
}

fn keyed_sums(env: &mut StreamEnv, args: KeyedSumsArgs) -> Result<()> {
    let keys = args.keys.max(1);
    env.datagen(Some(args.count), args.rate, |i| i)
        .set_parallelism(1)
        .uid("numbers")
        .map(move |i| (i % keys, i))
        .set_parallelism(1)
        .name("Tag")
        .key_by(|t: &(u64, u64)| t.0)
        .sum(|t| &mut t.1)
        .set_parallelism(args.parallelism)
        .name("Sum")
        .uid("sums")
        .map(|(k, s)| format!("{k} {s}"))
        .set_parallelism(args.parallelism)
        .name("Format")
        .write_text(args.output)
        .set_parallelism(args.parallelism)
        .uid("files");
    Ok(())
}

/// Running sums of `0..count` by key `i % keys`, written as text: the job of the checkpoint and
/// recovery tests, whose output is the same in every run (`{"count": N, "keys": K, "output": DIR}`).
pub static KEYED_SUMS: Job<KeyedSumsArgs> = Job::new("keyed-sums", keyed_sums);

/// Arguments of [`KAFKA_WORDCOUNT`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaWordCountArgs {
    /// The Kafka brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to read lines of text from.
    pub input_topic: String,
    /// The topic to write `word count` records to, keyed by word.
    pub output_topic: String,
    /// Deliver exactly-once, through Kafka transactions committed at checkpoints (needs
    /// checkpointing); at-least-once otherwise.
    #[serde(default)]
    pub exactly_once: bool,
    /// Stop at the input's end as of the start (a backfill); read on forever otherwise.
    #[serde(default)]
    pub bounded: bool,
    /// The consumer group offsets are committed to at checkpoints (default `weir-kafka-wordcount`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// The prefix of the sink's transactional ids (default `weir-kafka-wordcount`).
    #[serde(default)]
    pub transactional_id_prefix: Option<String>,
    /// Also count words per event-time window (the Kafka records' timestamps, watermarks per
    /// partition) and write `word window_start count` lines as files under this path (a directory
    /// or `s3://BUCKET/PREFIX`), committed with each checkpoint.
    #[serde(default)]
    pub files: Option<String>,
    /// The length of those windows in ms (default 60000).
    #[serde(default)]
    pub window_ms: Option<u64>,
}

fn kafka_wordcount(env: &mut StreamEnv, args: KafkaWordCountArgs) -> Result<()> {
    use weir_kafka::{DeliveryGuarantee, KafkaSink, KafkaSource, Keyed, Strings, Text};
    let mut source = KafkaSource::new(&args.brokers, Strings)
        .topics([args.input_topic.as_str()])
        .group_id(args.group_id.as_deref().unwrap_or("weir-kafka-wordcount"));
    if args.bounded {
        source = source.bounded();
    }
    let guarantee = if args.exactly_once { DeliveryGuarantee::ExactlyOnce } else { DeliveryGuarantee::AtLeastOnce };
    let sink = KafkaSink::new(
        &args.brokers,
        &args.output_topic,
        Keyed::new(Text, |r: &String| r.split(' ').next().unwrap_or_default().to_string()),
    )
    .delivery_guarantee(guarantee)
    .transactional_id_prefix(args.transactional_id_prefix.as_deref().unwrap_or("weir-kafka-wordcount"));
    if args.files.is_some() {
        source = source.watermarks(Duration::ZERO, None);
    }
    let words = env
        .add_source(source)
        .uid("kafka-lines")
        .flat_map(|line: String, out: &mut Vec<(String, u64)>| out.extend(words(&line).map(|w| (w, 1))))
        .name("Tokenizer");
    words
        .key_by(|t: &(String, u64)| t.0.clone())
        .sum(|t| &mut t.1)
        .name("Count")
        .uid("counts")
        .map(|(w, c)| format!("{w} {c}"))
        .name("Format")
        .add_sink(sink)
        .uid("kafka-counts");
    if let Some(path) = &args.files {
        let size = Duration::from_millis(args.window_ms.unwrap_or(60_000).max(1));
        let files = weir_files::FileSink::for_row_format(path, weir_files::Rows::text())?
            .with_bucket_assigner(weir_files::Buckets::None);
        words
            .key_by(|t: &(String, u64)| t.0.clone())
            .window(weir_api::TumblingEventTimeWindows::of(size))
            .process(|word: &String, w: &weir_api::TimeWindow, counts: &[(String, u64)], out: &mut Vec<String>| {
                out.push(format!("{word} {} {}", w.start, counts.iter().map(|c| c.1).sum::<u64>()));
            })
            .name("Window counts")
            .uid("window-counts")
            .add_sink(files)
            .uid("window-files");
    }
    Ok(())
}

/// Word count from a Kafka topic to a Kafka topic: lines in, running `word count` records keyed by
/// word out (`{"brokers": "127.0.0.1:9092", "input_topic": "lines", "output_topic": "counts",
/// "exactly_once": true}`); with `"files": PATH`, also counts per event-time window written as
/// files.
pub static KAFKA_WORDCOUNT: Job<KafkaWordCountArgs> = Job::new("kafka-wordcount", kafka_wordcount);

/// Arguments of [`KAFKA_TO_PARQUET`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaToParquetArgs {
    /// The Kafka brokers, `host:port[,host:port...]`.
    pub brokers: String,
    /// The topic to archive.
    pub topic: String,
    /// Where the Parquet files go: `s3://BUCKET/PREFIX` (or a directory).
    pub path: String,
    /// Stop at the topic's end as of the start (a backfill); read on forever otherwise.
    #[serde(default)]
    pub bounded: bool,
    /// The consumer group offsets are committed to at checkpoints (default `weir-kafka-to-parquet`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// The buckets' date-time pattern over the records' Kafka timestamps (default Flink's
    /// `yyyy-MM-dd--HH`).
    #[serde(default)]
    pub bucket_pattern: Option<String>,
    /// Flink's `s3.*` options for the sink (`s3.endpoint`, `s3.path.style.access`, ...); keys are
    /// better given as `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` in the processes' environment,
    /// since job arguments are shown by the REST API.
    #[serde(default)]
    pub s3: std::collections::BTreeMap<String, String>,
}

/// A Kafka record as a row of the archive's Parquet files (key and value as UTF-8 text, invalid
/// sequences replaced).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArchivedRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The Kafka timestamp (ms since the epoch).
    pub timestamp: Option<i64>,
    /// The key.
    pub key: Option<String>,
    /// The value (`None`: a tombstone).
    pub value: Option<String>,
}

fn kafka_to_parquet(env: &mut StreamEnv, args: KafkaToParquetArgs) -> Result<()> {
    use weir_kafka::{KafkaRecord, KafkaSource, Records};
    let mut source = KafkaSource::new(&args.brokers, Records)
        .topics([args.topic.as_str()])
        .group_id(args.group_id.as_deref().unwrap_or("weir-kafka-to-parquet"))
        .watermarks(Duration::ZERO, Some(Duration::from_secs(5)));
    if args.bounded {
        source = source.bounded();
    }
    let pattern = args.bucket_pattern.as_deref().unwrap_or("yyyy-MM-dd--HH");
    let mut sink =
        weir_files::FileSink::for_bulk_format(&args.path, weir_files::Parquet::<ArchivedRecord>::for_type()?)?
            .with_bucket_assigner(weir_files::Buckets::event_time(pattern)?)
            .with_output_file_config(weir_files::OutputFileConfig::new("part", ".parquet"));
    for (k, v) in &args.s3 {
        sink = sink.with_option(k, v);
    }
    let text = |b: Option<Vec<u8>>| {
        b.map(|b| String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    };
    env.add_source(source)
        .uid("kafka-records")
        .map(move |r: KafkaRecord| ArchivedRecord {
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: text(r.key),
            value: text(r.value),
        })
        .name("To rows")
        .add_sink(sink)
        .uid("parquet-files");
    Ok(())
}

/// A Kafka topic archived as Parquet files on S3 (or a directory), bucketed by the records'
/// timestamps, each file committed exactly once with the checkpoint that covers it
/// (`{"brokers": "127.0.0.1:9092", "topic": "events", "path": "s3://lake/events"}`).
pub static KAFKA_TO_PARQUET: Job<KafkaToParquetArgs> = Job::new("kafka-to-parquet", kafka_to_parquet);

/// The `main` of the stock executable in application mode (`run-application -t process weir --
/// JOB [ARGS_JSON] ...`): runs the named built-in jobs one after the other, each with the JSON
/// arguments that follow its name.
pub fn main(driver: &mut weir_api::Driver, args: &[String]) -> Result<()> {
    if args.is_empty() {
        return Err(weir_core::Error::Config(format!(
            "no job to run: give JOB [ARGS_JSON] ... after --, with JOB one of: {}",
            driver.registry().names().join(", ")
        )));
    }
    let mut rest = args.iter().peekable();
    while let Some(job) = rest.next() {
        let json = rest.next_if(|a| a.trim_start().starts_with(['{', '[']) || a.trim() == "null");
        let value = crate::cli::parse_json_args(json.map(String::as_str).unwrap_or("null"))?;
        let result = driver.execute_named(job, &value)?.wait()?;
        println!("Job {} ({job}) FINISHED in {:.3} s", result.job_id(), result.net_runtime().as_secs_f64());
    }
    Ok(())
}

/// The jobs of the stock executable.
pub fn registry() -> Registry {
    Registry::new()
        .register(&WORDCOUNT)
        .register(&GENERATE)
        .register(&KEYED_SUMS)
        .register(&KAFKA_WORDCOUNT)
        .register(&KAFKA_TO_PARQUET)
}
