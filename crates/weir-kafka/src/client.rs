//! What the source and the sink share: client properties, librdkafka's callbacks, errors.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use weir_core::{Error, Result};

/// Properties weir reads itself, with Flink's (or the Java client's) names; they are not passed to
/// librdkafka, which would refuse them.
pub(crate) const WEIR_KEYS: &[&str] = &[
    "partition.discovery.interval.ms",
    "commit.offsets.on.checkpoint",
    "client.id.prefix",
    "default.api.timeout.ms",
    "transactional.id.prefix",
];

/// Client properties: Kafka's own keys, given to librdkafka as they are, and the keys of
/// [`WEIR_KEYS`], read by weir.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Properties(pub BTreeMap<String, String>);

impl Properties {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A duration in milliseconds under `key`, or `default`.
    pub(crate) fn millis(&self, key: &str, default: u64) -> Result<Duration> {
        match self.get(key) {
            None => Ok(Duration::from_millis(default)),
            Some(v) => {
                v.trim().parse::<u64>().map(Duration::from_millis).map_err(|_| {
                    Error::Config(format!("Kafka property '{key}' is '{v}'; give a number of milliseconds"))
                })
            }
        }
    }

    /// A boolean under `key`, or `default`.
    pub(crate) fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key).map(str::trim) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(Error::Config(format!("Kafka property '{key}' is '{v}'; give true or false"))),
        }
    }

    /// The librdkafka configuration: `base` first, then every property weir does not read itself.
    pub(crate) fn client_config(&self, base: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in base {
            c.set(*k, *v);
        }
        for (k, v) in &self.0 {
            if !WEIR_KEYS.contains(&k.as_str()) {
                c.set(k, v);
            }
        }
        c
    }

    /// The brokers, as `bootstrap.servers` says.
    pub(crate) fn brokers(&self) -> Result<&str> {
        match self.get("bootstrap.servers").map(str::trim) {
            Some(b) if !b.is_empty() => Ok(b),
            _ => Err(Error::Config(
                "the Kafka connector needs its brokers: set bootstrap.servers (host:port[,host:port...])".into(),
            )),
        }
    }

    /// Checks what can be checked without a broker: brokers given and well formed, weir's own
    /// keys parse, and librdkafka knows every other key.
    pub(crate) fn validate(&self) -> Result<()> {
        for b in self.brokers()?.split(',').map(str::trim) {
            let port = b.rsplit_once(':').and_then(|(h, p)| (!h.is_empty()).then_some(p));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return Err(Error::Config(format!(
                    "Kafka bootstrap.servers entry '{b}' is not host:port; give e.g. 127.0.0.1:9092"
                )));
            }
        }
        for key in ["partition.discovery.interval.ms", "default.api.timeout.ms"] {
            self.millis(key, 0)?;
        }
        self.flag("commit.offsets.on.checkpoint", true)?;
        // librdkafka checks its keys when a client is made; a consumer is the cheapest to make and
        // connects to nothing until used.
        let config = self.client_config(&[("group.id", "weir-validate")]);
        config.create::<rdkafka::consumer::BaseConsumer>().map(drop).map_err(|e| config_error(&e))
    }
}

/// A configuration error from librdkafka, with what to do about it.
pub(crate) fn config_error(e: &KafkaError) -> Error {
    Error::Config(format!(
        "the Kafka client refused its configuration: {e}. Kafka properties are librdkafka's \
         (https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md); Java-only keys such as \
         key.deserializer do not apply"
    ))
}

/// An error of the Kafka client while doing `what`.
pub(crate) fn kafka_error(what: &str, e: &KafkaError) -> Error {
    use rdkafka::types::RDKafkaErrorCode as C;
    let code = e.rdkafka_error_code();
    let retryable = !matches!(
        code,
        Some(
            C::UnknownTopicOrPartition
                | C::UnknownTopic
                | C::TopicAuthorizationFailed
                | C::GroupAuthorizationFailed
                | C::TransactionalIdAuthorizationFailed
                | C::InvalidConfig
                | C::InvalidArgument
                | C::InvalidTransactionTimeout
                | C::MessageSizeTooLarge
                | C::UnsupportedVersion
                | C::ProducerFenced
                | C::Fenced,
        )
    );
    let hint = match code {
        Some(C::UnknownTopicOrPartition | C::UnknownTopic) => {
            " (the topic does not exist: create it, or check its name)"
        }
        Some(C::InvalidTransactionTimeout) => {
            " (transaction.timeout.ms exceeds the broker's transaction.max.timeout.ms: lower it)"
        }
        Some(C::MessageSizeTooLarge) => " (a record exceeds the topic's max.message.bytes)",
        Some(
            C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::OperationTimedOut
            | C::RequestTimedOut
            | C::MessageTimedOut,
        ) => " (are the brokers up and reachable at bootstrap.servers?)",
        _ => "",
    };
    Error::external(what.to_string(), format!("{e}{hint}"), retryable)
}

/// librdkafka's callbacks: logs go to `tracing`; the producer id of a transactional producer is
/// caught as librdkafka reports it (its `eos` debug log is the only place that tells it).
#[derive(Default)]
pub(crate) struct Context {
    /// `(producer id, epoch)` the coordinator gave the latest `init_transactions`.
    pid: Mutex<Option<(i64, i16)>>,
    /// The first delivery failure not reported yet.
    pub(crate) failed: Mutex<Option<String>>,
}

/// What a consumer's offset commits did: Flink's `KafkaSourceReader.commitsSucceeded` and
/// `commitsFailed`, and per partition the offset last committed (`committedOffset`).
#[derive(Clone, Default)]
pub(crate) struct Commits {
    pub(crate) succeeded: weir_runtime::Counter,
    pub(crate) failed: weir_runtime::Counter,
    /// Offsets last committed, by topic and partition.
    pub(crate) offsets: std::sync::Arc<Mutex<std::collections::HashMap<(String, i32), i64>>>,
}

impl Commits {
    /// Counts a commit of `offsets` that ended with `result`.
    pub(crate) fn record(&self, result: &rdkafka::error::KafkaResult<()>, offsets: &rdkafka::TopicPartitionList) {
        match result {
            Ok(()) => {
                self.succeeded.inc();
                if let Ok(mut m) = self.offsets.lock() {
                    for e in offsets.elements() {
                        if let rdkafka::Offset::Offset(o) = e.offset() {
                            m.insert((e.topic().to_string(), e.partition()), o);
                        }
                    }
                }
            }
            Err(e) => {
                self.failed.inc();
                tracing::warn!(target: "weir::kafka", "committing offsets to the consumer group failed: {e}");
            }
        }
    }
}

impl Context {
    /// The producer id and epoch the last `init_transactions` got.
    pub(crate) fn pid(&self) -> Option<(i64, i16)> {
        self.pid.lock().ok().and_then(|p| *p)
    }

    /// The first delivery failure since the last call.
    pub(crate) fn take_failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|mut f| f.take())
    }
}

/// Reads `PID{Id:1000,Epoch:3}` out of a log line.
pub(crate) fn parse_pid(line: &str) -> Option<(i64, i16)> {
    let rest = line.split_once("PID{Id:")?.1;
    let (id, rest) = rest.split_once(",Epoch:")?;
    let epoch = rest.split('}').next()?;
    Some((id.trim().parse().ok()?, epoch.trim().parse().ok()?))
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, line: &str) {
        if fac == "GETPID" && line.contains("Acquired PID{") {
            if let (Some(pid), Ok(mut slot)) = (parse_pid(line), self.pid.lock()) {
                *slot = Some(pid);
            }
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(target: "weir::kafka", facility = fac, "{line}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(target: "weir::kafka", facility = fac, "{line}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "weir::kafka", facility = fac, "{line}")
            }
            RDKafkaLogLevel::Debug => {}
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "weir::kafka", "Kafka client: {error}: {reason}");
    }
}

impl rdkafka::consumer::ConsumerContext for Context {}

impl rdkafka::producer::ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            use rdkafka::message::Message;
            if let Ok(mut f) = self.failed.lock()
                && f.is_none()
            {
                *f = Some(format!("a record to topic '{}' was not delivered: {e}", msg.topic()));
            }
        }
    }
}

/// Java's `String.hashCode`, with which Flink's Kafka source spreads partitions over subtasks.
pub(crate) fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The subtask (of `parallelism`) that reads `partition` of `topic`, as Flink's `KafkaSource`
/// assigns it: partitions of a topic go round-robin from a start that depends on the topic.
pub fn partition_owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let p = i64::from(parallelism.max(1));
    let start = i64::from(java_hash(topic).wrapping_mul(31) & 0x7FFF_FFFF) % p;
    ((start + i64::from(partition)) % p) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_from_librdkafka_lines() {
        assert_eq!(parse_pid("[thrd:main]: Acquired PID{Id:1000,Epoch:0}"), Some((1000, 0)));
        assert_eq!(parse_pid("Acquired PID{Id:7,Epoch:12} (previous PID{Id:7,Epoch:11})"), Some((7, 12)));
        assert_eq!(parse_pid("Acquired PID{Invalid}"), None);
    }

    #[test]
    fn partitions_spread_as_flink_spreads_them() {
        // Java: "topic".hashCode() == 110546223.
        assert_eq!(java_hash("topic"), 110_546_223);
        // Every subtask gets partitions, consecutive partitions go to consecutive subtasks.
        let owners: Vec<u32> = (0..6).map(|p| partition_owner("topic", p, 3)).collect();
        for w in owners.windows(2) {
            assert_eq!(w[1], (w[0] + 1) % 3);
        }
        assert!((0..3).all(|s| owners.contains(&s)));
    }

    #[test]
    fn bad_properties_are_clear_errors() {
        let props = |kv: &[(&str, &str)]| Properties(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let e = props(&[]).validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("set bootstrap.servers"), "{e}");
        let e = props(&[("bootstrap.servers", "localhost")]).validate().err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("is not host:port"));
        let e = props(&[("bootstrap.servers", "h:1"), ("key.deserializer", "x")]).validate().err();
        assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("Java-only keys"));
        let e = props(&[("bootstrap.servers", "h:1"), ("partition.discovery.interval.ms", "soon")]).validate().err();
        assert!(e.map(|e| e.to_string()).unwrap_or_default().contains("number of milliseconds"));
        assert!(props(&[("bootstrap.servers", "h:1,k:2"), ("linger.ms", "5")]).validate().is_ok());
    }
}
