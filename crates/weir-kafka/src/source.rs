//! The Kafka source, with the semantics of Flink's `KafkaSource`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use weir_core::clock::now_millis;
use weir_core::{Error, Result};
use weir_runtime::context::OperatorContext;
use weir_runtime::source::Source;
use weir_runtime::state::{OperatorListState, Redistribution};
use weir_runtime::{SourceReader, SourceStatus, SourceTime};

use crate::client::{Commits, Context, Properties, config_error, kafka_error, partition_owner};
use crate::record::{Deserializer, RecordRef};

/// Where a partition starts when no checkpoint says (Flink's `OffsetsInitializer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartingOffsets {
    /// The first record still in the partition.
    Earliest,
    /// Records written after the job started.
    Latest,
    /// The offsets the consumer group (`group.id`) committed; partitions without one start at
    /// `fallback`.
    Committed {
        /// Where partitions without a committed offset start.
        fallback: Reset,
    },
    /// The first record with a timestamp at or after this one (ms since the epoch); partitions
    /// without one start at their end.
    Timestamp(i64),
}

/// Where a partition without a committed offset starts (Flink's `OffsetResetStrategy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reset {
    /// At its first record.
    Earliest,
    /// At its end.
    Latest,
}

/// What the source does with a record its deserializer cannot read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BadRecords {
    /// The job fails, naming topic, partition and offset (the default).
    #[default]
    Fail,
    /// The record is skipped with a warning (and counted in the `numBadRecords` metric).
    Skip,
}

#[derive(Clone, Debug)]
enum Topics {
    Names(Vec<String>),
    Pattern(regex::Regex),
}

/// Reads Kafka topics (Flink's `KafkaSource`).
///
/// - Partitions are spread over the subtasks as Flink spreads them, and discovered again every
///   `partition.discovery.interval.ms` (default 5 minutes; 0 turns it off); partitions found
///   later start at their first record.
/// - The offset of every partition is in the checkpoint (operator state), so a recovery, a
///   restore from a savepoint and a restore at another parallelism go on exactly where the
///   snapshot was: with an exactly-once sink, nothing is lost or read twice.
/// - When a checkpoint completes, its offsets are committed to the consumer group (`group.id`), for
///   lag monitoring only; `commit.offsets.on.checkpoint: false` turns that off.
/// - [`KafkaSource::bounded`] stops each partition at the offset that was its end when the job
///   started (backfills, tests).
/// - Properties are librdkafka's (Kafka's keys, as the Java client names most of them), plus the
///   keys weir reads: `partition.discovery.interval.ms`, `commit.offsets.on.checkpoint`,
///   `client.id.prefix`, `default.api.timeout.ms` (how long to wait for the brokers' metadata;
///   default 60000).
pub struct KafkaSource<T> {
    props: Properties,
    topics: Option<Topics>,
    starting: StartingOffsets,
    bounded: bool,
    bad: BadRecords,
    watermarks: Option<Watermarks>,
    deserializer: Arc<dyn Deserializer<T>>,
}

/// Event time generated in the source, per partition (Flink's `WatermarkStrategy` given to
/// `fromSource`): records carry their Kafka timestamps, each partition's watermark trails its
/// largest timestamp by the allowed out-of-orderness, the source's is the least of its
/// partitions', and a partition without records for `idleness` stops holding it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermarks {
    /// How far behind the largest timestamp seen (ms) a partition's watermark stays.
    pub out_of_orderness_ms: i64,
    /// After how long without records (ms) a partition is idle; `None`: never.
    pub idleness_ms: Option<i64>,
}

impl<T> Clone for KafkaSource<T> {
    fn clone(&self) -> Self {
        KafkaSource {
            props: self.props.clone(),
            topics: self.topics.clone(),
            starting: self.starting,
            bounded: self.bounded,
            bad: self.bad,
            watermarks: self.watermarks,
            deserializer: self.deserializer.clone(),
        }
    }
}

impl<T> KafkaSource<T> {
    /// A source reading from the brokers `bootstrap_servers` (`host:port[,host:port...]`), each
    /// record made by `deserializer` ([`crate::Strings`], [`crate::Bytes`], [`crate::Json`],
    /// [`crate::Records`] or a closure). Name the topics with [`KafkaSource::topics`] or
    /// [`KafkaSource::topic_pattern`].
    pub fn new(bootstrap_servers: &str, deserializer: impl Deserializer<T>) -> Self {
        let mut props = Properties::default();
        props.0.insert("bootstrap.servers".into(), bootstrap_servers.to_string());
        KafkaSource {
            props,
            topics: None,
            starting: StartingOffsets::Earliest,
            bounded: false,
            bad: BadRecords::Fail,
            watermarks: None,
            deserializer: Arc::new(deserializer),
        }
    }

    /// Gives records their Kafka timestamps as event time and generates watermarks per partition
    /// (see [`Watermarks`]): out-of-order records up to `out_of_orderness` behind are on time, and
    /// a partition quiet for `idleness` does not stall event time.
    pub fn watermarks(mut self, out_of_orderness: Duration, idleness: Option<Duration>) -> Self {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.watermarks = Some(Watermarks { out_of_orderness_ms: ms(out_of_orderness), idleness_ms: idleness.map(ms) });
        self
    }

    /// Reads these topics.
    pub fn topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics = Some(Topics::Names(topics.into_iter().map(Into::into).collect()));
        self
    }

    /// Reads every topic whose whole name matches the regular expression `pattern`, including
    /// topics created later (found by partition discovery).
    pub fn topic_pattern(mut self, pattern: &str) -> Result<Self> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            Error::Config(format!("the Kafka topic pattern '{pattern}' is not a regular expression: {e}"))
        })?;
        self.topics = Some(Topics::Pattern(re));
        Ok(self)
    }

    /// The consumer group: where offsets are committed when checkpoints complete, and where
    /// [`StartingOffsets::Committed`] reads them.
    pub fn group_id(self, group: &str) -> Self {
        self.property("group.id", group)
    }

    /// Where partitions start when no checkpoint says (default: earliest).
    pub fn starting_offsets(mut self, starting: StartingOffsets) -> Self {
        self.starting = starting;
        self
    }

    /// Stops each partition at the offset that was its end when the job started; the source ends
    /// when every partition has.
    pub fn bounded(mut self) -> Self {
        self.bounded = true;
        self
    }

    /// Skips records the deserializer cannot read, with a warning, instead of failing.
    pub fn skip_bad_records(mut self) -> Self {
        self.bad = BadRecords::Skip;
        self
    }

    /// Sets a client property (librdkafka's keys, or one of weir's: see the type).
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.props.0.insert(key.to_string(), value.to_string());
        self
    }
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn name(&self) -> String {
        match &self.topics {
            Some(Topics::Names(t)) => format!("Kafka {}", t.join(",")),
            Some(Topics::Pattern(p)) => format!("Kafka /{}/", p.as_str()),
            None => "Kafka".into(),
        }
    }

    fn has_event_time(&self) -> bool {
        self.watermarks.is_some()
    }

    fn validate(&self) -> Result<()> {
        match &self.topics {
            None => {
                return Err(Error::Config(
                    "the Kafka source reads no topic: name them with topics([...]) or topic_pattern(...)".into(),
                ));
            }
            Some(Topics::Names(t)) if t.is_empty() || t.iter().any(|t| t.trim().is_empty()) => {
                return Err(Error::Config("the Kafka source's topic list is empty or names an empty topic".into()));
            }
            Some(_) => {}
        }
        if matches!(self.starting, StartingOffsets::Committed { .. }) && self.props.get("group.id").is_none() {
            return Err(Error::Config(
                "the Kafka source starts from committed offsets but has no consumer group: set group.id".into(),
            ));
        }
        self.props.validate()
    }

    fn create_reader(&self, ctx: &OperatorContext) -> Result<Box<dyn SourceReader<T>>> {
        // validate() ran on the client (it makes a throwaway librdkafka client to check the
        // properties); the reader's own consumer checks them again.
        Ok(Box::new(KafkaReader::open(self, ctx)?))
    }
}

/// One partition this subtask reads.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Split {
    topic: String,
    partition: i32,
    /// The offset of the next record to read.
    next: i64,
    /// Bounded: where the partition ends.
    stop: Option<i64>,
}

impl Split {
    fn done(&self) -> bool {
        self.stop.is_some_and(|s| self.next >= s)
    }
}

struct KafkaReader<T> {
    consumer: Arc<BaseConsumer<Context>>,
    /// The offset commit under way, in a thread of its own (librdkafka reports an asynchronous
    /// commit's outcome to nobody here, and a synchronous one would hold up the task).
    committing: Option<std::thread::JoinHandle<()>>,
    deserializer: Arc<dyn Deserializer<T>>,
    splits: Vec<Split>,
    /// Where the last record's split is in `splits` (records come in runs of one partition).
    last: usize,
    state: OperatorListState<Split>,
    /// Offsets snapshotted for checkpoints not known complete yet, oldest first.
    to_commit: Vec<(u64, Vec<Split>)>,
    commit: bool,
    bounded: bool,
    bad: BadRecords,
    topics: Topics,
    subtask: u32,
    parallelism: u32,
    discovery: Option<Duration>,
    next_discovery: Instant,
    timeout: Duration,
    brokers: String,
    headers: Vec<(String, Option<Vec<u8>>)>,
    bad_records: weir_runtime::Counter,
    watermarks: Option<Watermarks>,
    /// Event time of each split (same order as `splits`).
    times: Vec<PartTime>,
    /// The timestamps of the records the last poll read (with watermarks).
    timestamps: Vec<i64>,
    /// When the reader started (ms): a partition without records is idle from then on.
    started: i64,
    /// Each split's next offset as its `currentOffset` gauge reads it (same order as `splits`).
    positions: Vec<std::sync::Arc<std::sync::atomic::AtomicI64>>,
    /// The `KafkaSourceReader` metric group.
    metrics: weir_runtime::MetricGroup,
    commits: Commits,
}

/// A partition's event time.
#[derive(Clone, Copy, Debug)]
struct PartTime {
    max_ts: i64,
    /// Wall-clock time (ms) of its last record.
    last_active: Option<i64>,
}

impl Default for PartTime {
    fn default() -> Self {
        PartTime { max_ts: i64::MIN, last_active: None }
    }
}

impl<T: 'static> KafkaReader<T> {
    fn open(source: &KafkaSource<T>, ctx: &OperatorContext) -> Result<Self> {
        let props = &source.props;
        let prefix = props.get("client.id.prefix").unwrap_or("weir");
        let client_id = format!("{prefix}-{}-{}", ctx.job_name, ctx.subtask);
        // librdkafka assigns partitions only to a consumer with a group; without one of the
        // user's, offsets are not committed anywhere, so the name only has to be valid.
        let fallback_group = format!("weir-{}", ctx.job_name);
        let config = props.client_config(&[
            ("group.id", &fallback_group),
            ("client.id", &client_id),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("enable.partition.eof", "false"),
        ]);
        // Flink's KafkaSourceReader metrics, in the operator's group.
        let metrics = ctx.metrics.add_group("KafkaSourceReader");
        let commits = Commits::default();
        metrics.add_counter("commitsSucceeded", &commits.succeeded);
        metrics.add_counter("commitsFailed", &commits.failed);
        let consumer: BaseConsumer<Context> =
            config.create_with_context(Context::default()).map_err(|e| config_error(&e))?;
        let group = props.get("group.id").is_some();
        let discovery = props.millis("partition.discovery.interval.ms", 300_000)?;
        let state = ctx.operator_state.list_state::<Split>("kafka-splits", Redistribution::Union)?;
        let topics = source.topics.clone().ok_or_else(|| Error::Config("the Kafka source reads no topic".into()))?;
        let mut reader = KafkaReader {
            consumer: Arc::new(consumer),
            committing: None,
            deserializer: source.deserializer.clone(),
            splits: Vec::new(),
            last: 0,
            to_commit: Vec::new(),
            commit: group && props.flag("commit.offsets.on.checkpoint", true)?,
            bounded: source.bounded,
            bad: source.bad,
            topics,
            subtask: ctx.subtask,
            parallelism: ctx.parallelism,
            discovery: (!source.bounded && !discovery.is_zero()).then_some(discovery),
            next_discovery: Instant::now() + discovery,
            timeout: props.millis("default.api.timeout.ms", 60_000)?,
            brokers: props.brokers()?.to_string(),
            headers: Vec::new(),
            bad_records: ctx.metrics.counter("numBadRecords"),
            watermarks: source.watermarks,
            times: Vec::new(),
            timestamps: Vec::new(),
            started: now_millis(),
            positions: Vec::new(),
            metrics,
            commits,
            state,
        };
        // Restored: the partitions this subtask owns now go on where the snapshot was; every other
        // partition is new since and starts at its first record. Fresh: partitions start where
        // `starting` says.
        let restored = ctx.operator_state.is_restored();
        let mine: Vec<Split> = reader.state.get()?.into_iter().filter(|s| reader.owns(&s.topic, s.partition)).collect();
        let mut seen = std::collections::HashSet::new();
        let mine: Vec<Split> = mine.into_iter().filter(|s| seen.insert((s.topic.clone(), s.partition))).collect();
        reader.splits = mine;
        if source.bounded {
            // Restored from an unbounded run: the ends are those of now.
            for s in reader.splits.iter_mut().filter(|s| s.stop.is_none()) {
                let (_, high) = reader
                    .consumer
                    .fetch_watermarks(&s.topic, s.partition, reader.timeout)
                    .map_err(|e| kafka_error(&format!("reading the offsets of topic '{}'", s.topic), &e))?;
                s.stop = Some(high);
            }
        }
        let found = reader.discover()?;
        let new: Vec<(String, i32)> = found.into_iter().filter(|(t, p)| !reader.has(t, *p)).collect();
        let starting = if restored { StartingOffsets::Earliest } else { source.starting };
        let added = reader.resolve(&new, starting)?;
        reader.splits.extend(added);
        reader.times.resize(reader.splits.len(), PartTime::default());
        reader.register_gauges();
        reader.assign()?;
        reader.state.update(reader.splits.clone())?;
        tracing::info!(
            subtask = ctx.subtask,
            partitions = ?reader.splits.iter().map(|s| format!("{}-{}@{}", s.topic, s.partition, s.next)).collect::<Vec<_>>(),
            restored,
            "Kafka source assigned"
        );
        Ok(reader)
    }

    /// Registers the `currentOffset` and `committedOffset` gauges of splits that have none yet, in
    /// key-value groups as Flink's (`KafkaSourceReader.topic.<topic>.partition.<p>.currentOffset`;
    /// in Prometheus `..._KafkaSourceReader_topic_partition_currentOffset{topic=..,partition=..}`).
    fn register_gauges(&mut self) {
        use std::sync::atomic::{AtomicI64, Ordering};
        while self.positions.len() < self.splits.len() {
            let s = &self.splits[self.positions.len()];
            let position = std::sync::Arc::new(AtomicI64::new(s.next));
            let group =
                self.metrics.add_group_with("topic", &s.topic).add_group_with("partition", &s.partition.to_string());
            let read = position.clone();
            group.gauge("currentOffset", move || read.load(Ordering::Relaxed) as f64);
            let (offsets, key) = (self.commits.offsets.clone(), (s.topic.clone(), s.partition));
            group.gauge("committedOffset", move || {
                offsets.lock().ok().and_then(|m| m.get(&key).copied()).map_or(f64::NAN, |o| o as f64)
            });
            self.positions.push(position);
        }
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        partition_owner(topic, partition, self.parallelism) == self.subtask
    }

    fn has(&self, topic: &str, partition: i32) -> bool {
        self.splits.iter().any(|s| s.partition == partition && s.topic == topic)
    }

    /// The partitions of the topics this source reads that this subtask owns.
    fn discover(&self) -> Result<Vec<(String, i32)>> {
        let what = format!("reading the metadata of Kafka topics from {}", self.brokers);
        let mut out = Vec::new();
        match &self.topics {
            Topics::Names(names) => {
                for name in names {
                    let md =
                        self.consumer.fetch_metadata(Some(name), self.timeout).map_err(|e| kafka_error(&what, &e))?;
                    for t in md.topics() {
                        if let Some(e) = t.error() {
                            let e = rdkafka::error::KafkaError::MetadataFetch(e.into());
                            return Err(kafka_error(&format!("reading topic '{name}' from {}", self.brokers), &e));
                        }
                        out.extend(t.partitions().iter().map(|p| (t.name().to_string(), p.id())));
                    }
                }
            }
            Topics::Pattern(re) => {
                let md = self.consumer.fetch_metadata(None, self.timeout).map_err(|e| kafka_error(&what, &e))?;
                for t in md.topics().iter().filter(|t| t.error().is_none() && re.is_match(t.name())) {
                    out.extend(t.partitions().iter().map(|p| (t.name().to_string(), p.id())));
                }
            }
        }
        out.retain(|(t, p)| self.owns(t, *p));
        out.sort();
        Ok(out)
    }

    /// Splits for `partitions`, their first offsets resolved by `starting` (and, bounded, their
    /// ends), as offsets rather than "earliest" or "latest", so that a snapshot taken before the
    /// first record holds where to start.
    fn resolve(&self, partitions: &[(String, i32)], starting: StartingOffsets) -> Result<Vec<Split>> {
        let what = |t: &str| format!("reading the offsets of topic '{t}' from {}", self.brokers);
        let mut committed = std::collections::HashMap::new();
        if let StartingOffsets::Committed { .. } = starting
            && !partitions.is_empty()
        {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in partitions {
                tpl.add_partition(t, *p);
            }
            let got = self.consumer.committed_offsets(tpl, self.timeout).map_err(|e| kafka_error(&what("*"), &e))?;
            for e in got.elements() {
                if let Offset::Offset(o) = e.offset() {
                    committed.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
        let mut at_time = std::collections::HashMap::new();
        if let StartingOffsets::Timestamp(ts) = starting
            && !partitions.is_empty()
        {
            let mut tpl = TopicPartitionList::new();
            for (t, p) in partitions {
                tpl.add_partition_offset(t, *p, Offset::Offset(ts)).map_err(|e| kafka_error(&what(t), &e))?;
            }
            let got = self.consumer.offsets_for_times(tpl, self.timeout).map_err(|e| kafka_error(&what("*"), &e))?;
            for e in got.elements() {
                if let Offset::Offset(o) = e.offset() {
                    at_time.insert((e.topic().to_string(), e.partition()), o);
                }
            }
        }
        let mut out = Vec::with_capacity(partitions.len());
        for (t, p) in partitions {
            let (low, high) =
                self.consumer.fetch_watermarks(t, *p, self.timeout).map_err(|e| kafka_error(&what(t), &e))?;
            let key = (t.clone(), *p);
            let next = match starting {
                StartingOffsets::Earliest => low,
                StartingOffsets::Latest => high,
                StartingOffsets::Committed { fallback } => match committed.get(&key) {
                    Some(o) => *o,
                    None if fallback == Reset::Earliest => low,
                    None => high,
                },
                StartingOffsets::Timestamp(_) => at_time.get(&key).copied().unwrap_or(high),
            };
            out.push(Split { topic: t.clone(), partition: *p, next, stop: self.bounded.then_some(high) });
        }
        Ok(out)
    }

    /// Points the consumer at every split not done yet.
    fn assign(&self) -> Result<()> {
        let mut tpl = TopicPartitionList::new();
        for s in self.splits.iter().filter(|s| !s.done()) {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.next))
                .map_err(|e| kafka_error("assigning Kafka partitions", &e))?;
        }
        self.consumer.assign(&tpl).map_err(|e| kafka_error("assigning Kafka partitions", &e))
    }

    /// Bounded: splits whose partition reached its end without a record to say so (the last
    /// offsets were transaction markers or aborted records) are done too.
    fn settle_positions(&mut self) -> Result<()> {
        if !self.bounded || self.splits.iter().all(Split::done) {
            return Ok(());
        }
        let pos = self.consumer.position().map_err(|e| kafka_error("reading Kafka positions", &e))?;
        let mut changed = false;
        for e in pos.elements() {
            if let Offset::Offset(o) = e.offset()
                && let Some(s) = self.splits.iter_mut().find(|s| s.partition == e.partition() && s.topic == e.topic())
                && o > s.next
                && s.stop.is_some_and(|stop| o >= stop)
            {
                s.next = o;
                changed = true;
            }
        }
        if changed {
            self.assign()?;
        }
        Ok(())
    }
}

impl<T> Drop for KafkaReader<T> {
    fn drop(&mut self) {
        // The last commit (a bounded job's final offsets) is done before the subtask is.
        if let Some(t) = self.committing.take() {
            let _ = t.join();
        }
    }
}

/// The split of `topic` and `partition`; `last` remembers where the previous one was.
fn split_of<'a>(splits: &'a mut [Split], last: &mut usize, topic: &str, partition: i32) -> Option<&'a mut Split> {
    let hit = splits.get(*last).is_some_and(|s| s.partition == partition && s.topic == topic);
    if !hit {
        *last = splits.iter().position(|s| s.partition == partition && s.topic == topic)?;
    }
    splits.get_mut(*last)
}

impl<T: 'static> SourceReader<T> for KafkaReader<T> {
    fn poll(&mut self, out: &mut Vec<T>, max: usize) -> Result<SourceStatus> {
        if let Some(every) = self.discovery
            && Instant::now() >= self.next_discovery
        {
            self.next_discovery = Instant::now() + every;
            match self.discover() {
                Ok(found) => {
                    let new: Vec<(String, i32)> = found.into_iter().filter(|(t, p)| !self.has(t, *p)).collect();
                    if !new.is_empty() {
                        let added = self.resolve(&new, StartingOffsets::Earliest)?;
                        tracing::info!(subtask = self.subtask, partitions = ?new, "Kafka source found new partitions");
                        self.splits.extend(added);
                        self.times.resize(self.splits.len(), PartTime::default());
                        self.register_gauges();
                        self.assign()?;
                    }
                }
                Err(e) => {
                    tracing::warn!(subtask = self.subtask, "Kafka partition discovery failed, tries again later: {e}")
                }
            }
        }
        let mut read = 0;
        let mut first = true;
        // One clock read per poll: when partitions were last active, and the event time of
        // records without a timestamp.
        let now = if self.watermarks.is_some() { now_millis() } else { 0 };
        let mut ended_split = false;
        while read < max {
            // Nothing buffered on the first try: wait briefly for the next fetch rather than sleep
            // a fixed time (a fetch in flight wakes the poll the moment it lands).
            let wait = if read == 0 && first { Duration::from_millis(10) } else { Duration::ZERO };
            first = false;
            let Some(got) = self.consumer.poll(wait) else { break };
            let m = match got {
                Ok(m) => m,
                Err(e) => {
                    use rdkafka::types::RDKafkaErrorCode as C;
                    match e.rdkafka_error_code() {
                        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::TopicAuthorizationFailed) => {
                            return Err(kafka_error(&format!("reading Kafka from {}", self.brokers), &e));
                        }
                        _ => {
                            // librdkafka reconnects and fetches again by itself.
                            tracing::warn!(subtask = self.subtask, "Kafka consumer: {e}");
                            break;
                        }
                    }
                }
            };
            let (topic, partition, offset) = (m.topic(), m.partition(), m.offset());
            let Some(split) = split_of(&mut self.splits, &mut self.last, topic, partition) else { continue };
            if split.done() || offset < split.next {
                continue;
            }
            split.next = offset + 1;
            ended_split |= split.done();
            let timestamp = m.timestamp().to_millis();
            // Event time: the record's timestamp; one without (an old message format) is stamped
            // with the time it is read.
            let event_time = if self.watermarks.is_some() { timestamp.unwrap_or(now) } else { 0 };
            if self.watermarks.is_some()
                && let Some(t) = self.times.get_mut(self.last)
            {
                t.max_ts = t.max_ts.max(event_time);
                t.last_active = Some(now);
            }
            self.headers.clear();
            if let Some(h) = m.headers() {
                for i in 0..h.count() {
                    let hd = h.get(i);
                    self.headers.push((hd.key.to_string(), hd.value.map(<[u8]>::to_vec)));
                }
            }
            let r = RecordRef {
                topic,
                partition,
                offset,
                timestamp,
                key: m.key(),
                value: m.payload(),
                headers: &self.headers,
            };
            match self.deserializer.deserialize(&r) {
                Ok(v) => {
                    out.push(v);
                    if self.watermarks.is_some() {
                        self.timestamps.push(event_time);
                    }
                    read += 1;
                }
                Err(why) => {
                    let at = format!("the Kafka record at topic '{topic}', partition {partition}, offset {offset}");
                    match self.bad {
                        BadRecords::Fail => {
                            return Err(Error::external(
                                at,
                                format!(
                                    "cannot be deserialized: {why}. Fix the producer, or let the source skip such \
                                     records (skip_bad_records)"
                                ),
                                false,
                            ));
                        }
                        BadRecords::Skip => {
                            self.bad_records.inc();
                            tracing::warn!(subtask = self.subtask, "skipped {at}: {why}");
                        }
                    }
                }
            }
        }
        if read > 0 {
            for (s, p) in self.splits.iter().zip(&self.positions) {
                p.store(s.next, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if ended_split {
            self.assign()?;
        }
        if read == 0 {
            self.settle_positions()?;
        }
        if self.bounded && self.splits.iter().all(Split::done) {
            return Ok(SourceStatus::Finished);
        }
        Ok(if read == 0 { SourceStatus::Wait(Duration::from_millis(1)) } else { SourceStatus::Continue })
    }

    fn snapshot(&mut self) -> Result<()> {
        self.state.update(self.splits.clone())
    }

    fn timestamps(&mut self) -> Option<&mut Vec<i64>> {
        self.watermarks.is_some().then_some(&mut self.timestamps)
    }

    fn event_time(&mut self, now: i64) -> Option<SourceTime> {
        let w = self.watermarks?;
        let mut watermark = i64::MAX;
        let mut active = false;
        for (s, t) in self.splits.iter().zip(&self.times) {
            // An ended partition (bounded) holds nothing back; an idle one neither, until its
            // next record.
            let idle = w.idleness_ms.is_some_and(|i| now - t.last_active.unwrap_or(self.started) >= i);
            if s.done() || idle {
                continue;
            }
            active = true;
            let mine = if t.max_ts == i64::MIN { i64::MIN } else { t.max_ts - w.out_of_orderness_ms - 1 };
            watermark = watermark.min(mine);
        }
        // Without partitions (more subtasks than partitions) the reader is idle too, as Flink's;
        // one whose partitions all ended (bounded) is about to end, which says more.
        if !active && !self.splits.is_empty() && self.splits.iter().all(Split::done) {
            return Some(SourceTime { watermark: i64::MIN, idle: false });
        }
        Some(if active {
            SourceTime { watermark, idle: false }
        } else {
            SourceTime { watermark: i64::MIN, idle: true }
        })
    }

    fn snapshot_checkpoint(&mut self, id: u64) -> Result<()> {
        self.snapshot()?;
        if self.commit {
            self.to_commit.push((id, self.splits.clone()));
        }
        Ok(())
    }

    fn notify_checkpoint_complete(&mut self, id: u64) -> Result<()> {
        let Some(at) = self.to_commit.iter().rposition(|(c, _)| *c <= id) else { return Ok(()) };
        let (_, splits) = self.to_commit.swap_remove(at);
        self.to_commit.retain(|(c, _)| *c > id);
        // For lag monitoring only: one commit at a time, and a failure is counted and logged,
        // never fails the job.
        if let Some(previous) = self.committing.take() {
            let _ = previous.join();
        }
        let mut tpl = TopicPartitionList::new();
        for s in &splits {
            tpl.add_partition_offset(&s.topic, s.partition, Offset::Offset(s.next))
                .map_err(|e| kafka_error("committing Kafka offsets", &e))?;
        }
        let (consumer, commits) = (self.consumer.clone(), self.commits.clone());
        let thread = std::thread::Builder::new()
            .name(format!("kafka-offsets-{}", self.subtask))
            .spawn(move || commits.record(&consumer.commit(&tpl, CommitMode::Sync), &tpl))
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        self.committing = Some(thread);
        Ok(())
    }
}
