//! Records as Kafka holds them, and how they become a job's records and back.

use std::marker::PhantomData;

/// A record read from Kafka, borrowed from the client: what a [`Deserializer`] sees.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
    /// The record's timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// The headers, in order (a header may have no value).
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

/// A record read from Kafka with everything Kafka holds of it: the source's records with
/// [`Records`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KafkaRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
    /// The record's timestamp (ms since the epoch), if it has one.
    pub timestamp: Option<i64>,
    /// The key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Turns a Kafka record into a record of the job (Flink's `KafkaRecordDeserializationSchema`).
///
/// An error says what is wrong with the record; the source adds where it is (topic, partition,
/// offset) and skips or fails as configured.
pub trait Deserializer<T>: Send + Sync + 'static {
    /// The job's record for `record`.
    fn deserialize(&self, record: &RecordRef<'_>) -> Result<T, String>;
}

impl<T, F: Fn(&RecordRef<'_>) -> Result<T, String> + Send + Sync + 'static> Deserializer<T> for F {
    fn deserialize(&self, record: &RecordRef<'_>) -> Result<T, String> {
        self(record)
    }
}

fn value<'a>(r: &RecordRef<'a>) -> Result<&'a [u8], String> {
    r.value.ok_or_else(|| "the record has no value (a tombstone)".to_string())
}

/// Values as UTF-8 text (Flink's `SimpleStringSchema`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Strings;

impl Deserializer<String> for Strings {
    fn deserialize(&self, r: &RecordRef<'_>) -> Result<String, String> {
        let v = value(r)?;
        std::str::from_utf8(v).map(str::to_string).map_err(|e| format!("the value is not UTF-8 text: {e}"))
    }
}

/// Values as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes;

impl Deserializer<Vec<u8>> for Bytes {
    fn deserialize(&self, r: &RecordRef<'_>) -> Result<Vec<u8>, String> {
        value(r).map(<[u8]>::to_vec)
    }
}

/// Values as JSON documents of type `T` (serde).
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json(PhantomData)
    }
}

impl<T> std::fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Json<{}>", std::any::type_name::<T>())
    }
}

impl<T: serde::de::DeserializeOwned + 'static> Deserializer<T> for Json<T> {
    fn deserialize(&self, r: &RecordRef<'_>) -> Result<T, String> {
        serde_json::from_slice(value(r)?).map_err(|e| format!("the value is not a JSON {}: {e}", short_type::<T>()))
    }
}

/// Whole records, with key, headers, timestamp, partition and offset ([`KafkaRecord`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Records;

impl Deserializer<KafkaRecord> for Records {
    fn deserialize(&self, r: &RecordRef<'_>) -> Result<KafkaRecord, String> {
        Ok(KafkaRecord {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            timestamp: r.timestamp,
            key: r.key.map(<[u8]>::to_vec),
            value: r.value.map(<[u8]>::to_vec),
            headers: r.headers.to_vec(),
        })
    }
}

fn short_type<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// A record on its way to Kafka: what a [`Serializer`] fills in. The sink reuses it, so a
/// serializer writes into `key` and `value` without allocating.
#[derive(Clone, Debug, Default)]
pub struct OutRecord {
    /// The key; empty with `has_key` false means no key.
    pub key: Vec<u8>,
    /// Whether the record has a key (an empty key is a key).
    pub has_key: bool,
    /// The value.
    pub value: Vec<u8>,
    /// The partition; `None`: Kafka's partitioner (by key hash, or spread when there is no key).
    pub partition: Option<i32>,
    /// Another topic than the sink's.
    pub topic: Option<String>,
    /// The timestamp (ms since the epoch); `None`: the record's event time if it has one, or now.
    pub timestamp: Option<i64>,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl OutRecord {
    /// Sets the key.
    pub fn set_key(&mut self, key: impl AsRef<[u8]>) {
        self.key.clear();
        self.key.extend_from_slice(key.as_ref());
        self.has_key = true;
    }

    pub(crate) fn clear(&mut self) {
        self.key.clear();
        self.has_key = false;
        self.value.clear();
        self.partition = None;
        self.topic = None;
        self.timestamp = None;
        self.headers.clear();
    }
}

/// Turns a record of the job into a Kafka record (Flink's `KafkaRecordSerializationSchema`).
pub trait Serializer<T>: Send + Sync + 'static {
    /// Fills `out` (cleared before each record) for `record`; an error fails the job.
    fn serialize(&self, record: &T, out: &mut OutRecord) -> Result<(), String>;
}

impl<T, F: Fn(&T, &mut OutRecord) -> Result<(), String> + Send + Sync + 'static> Serializer<T> for F {
    fn serialize(&self, record: &T, out: &mut OutRecord) -> Result<(), String> {
        self(record, out)
    }
}

/// Records as text (their `Display`), without key.
#[derive(Clone, Copy, Debug, Default)]
pub struct Text;

impl<T: std::fmt::Display> Serializer<T> for Text {
    fn serialize(&self, record: &T, out: &mut OutRecord) -> Result<(), String> {
        use std::io::Write;
        write!(out.value, "{record}").map_err(|e| e.to_string())
    }
}

/// Records as JSON documents (serde), without key.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonOut;

impl<T: serde::Serialize> Serializer<T> for JsonOut {
    fn serialize(&self, record: &T, out: &mut OutRecord) -> Result<(), String> {
        serde_json::to_writer(&mut out.value, record).map_err(|e| e.to_string())
    }
}

/// A serializer with a key: `inner` writes the value, `key` gives the key.
pub struct Keyed<S, K> {
    pub(crate) inner: S,
    pub(crate) key: K,
}

impl<T, S: Serializer<T>, K: Fn(&T) -> R + Send + Sync + 'static, R: AsRef<[u8]>> Serializer<T> for Keyed<S, K> {
    fn serialize(&self, record: &T, out: &mut OutRecord) -> Result<(), String> {
        self.inner.serialize(record, out)?;
        out.set_key((self.key)(record));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(value: Option<&[u8]>) -> RecordRef<'_> {
        RecordRef { topic: "t", partition: 2, offset: 9, timestamp: Some(5), key: Some(b"k"), value, headers: &[] }
    }

    #[test]
    fn deserializers_read_values_and_say_what_is_wrong() {
        assert_eq!(Strings.deserialize(&rec(Some(b"hi"))), Ok("hi".to_string()));
        assert!(Strings.deserialize(&rec(Some(&[0xff]))).is_err_and(|e| e.contains("not UTF-8")));
        assert!(Strings.deserialize(&rec(None)).is_err_and(|e| e.contains("tombstone")));
        let j: Json<(u32, String)> = Json::default();
        assert_eq!(j.deserialize(&rec(Some(br#"[1,"a"]"#))), Ok((1, "a".to_string())));
        assert!(j.deserialize(&rec(Some(b"{"))).is_err_and(|e| e.contains("not a JSON")));
        let r = Records.deserialize(&rec(Some(b"v"))).map(|r| (r.partition, r.offset, r.key));
        assert_eq!(r, Ok((2, 9, Some(b"k".to_vec()))));
    }

    #[test]
    fn serializers_fill_key_and_value() {
        let mut out = OutRecord::default();
        let s = Keyed { inner: Text, key: |r: &String| r[..1].to_string() };
        assert_eq!(s.serialize(&"word".to_string(), &mut out), Ok(()));
        assert!(out.has_key && out.key == b"w" && out.value == b"word");
        out.clear();
        JsonOut.serialize(&("w", 3), &mut out).ok();
        assert_eq!(out.value, br#"["w",3]"#);
        assert!(!out.has_key);
    }
}
