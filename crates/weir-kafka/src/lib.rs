//! weir-kafka: Kafka sources and sinks for weir, with the semantics of Flink's `KafkaSource` and
//! `KafkaSink`.
//!
//! ```no_run
//! use weir_kafka::{DeliveryGuarantee, KafkaSink, KafkaSource, Strings, Text};
//! # fn job(env: &mut weir_api::StreamEnv) {
//! let lines = env.add_source(KafkaSource::new("127.0.0.1:9092", Strings).topics(["lines"]).group_id("wc"));
//! lines.add_sink(
//!     KafkaSink::new("127.0.0.1:9092", "out", Text).delivery_guarantee(DeliveryGuarantee::ExactlyOnce),
//! );
//! # }
//! ```
//!
//! The client is librdkafka (through `rdkafka`), built from the source it bundles. Properties are
//! librdkafka's, which are Kafka's keys for everything the two clients share.

mod client;
mod record;
mod sink;
mod source;
mod txn;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use client::{Properties, partition_owner};
pub use record::{
    Bytes, Deserializer, Json, JsonOut, KafkaRecord, Keyed, OutRecord, RecordRef, Records, Serializer, Strings, Text,
};
pub use sink::{DeliveryGuarantee, KafkaSink};
pub use source::{BadRecords, KafkaSource, Reset, StartingOffsets, Watermarks};

impl<S> Keyed<S, ()> {
    /// `inner` with a key: `key` gives each record's key.
    pub fn new<K>(inner: S, key: K) -> Keyed<S, K> {
        Keyed { inner, key }
    }
}
