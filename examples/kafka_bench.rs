//! Kafka throughput on the embedded cluster, for `bench/kafka.sh`: a topic read to its end into a
//! discarding sink, and generated records written to a topic.
//!
//! ```text
//! cargo run --release --example kafka_bench -- read BROKERS TOPIC
//! cargo run --release --example kafka_bench -- write BROKERS TOPIC N SIZE none|at-least-once|exactly-once [-D key=value ...]
//! ```
//!
//! Each prints the job's net run time in seconds and its record count.

use std::process::ExitCode;

use weir::{App, Error, Job, Result, StreamEnv};
use weir_kafka::{Bytes, DeliveryGuarantee, KafkaSink, KafkaSource, OutRecord};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct ReadArgs {
    brokers: String,
    topic: String,
}

fn read(env: &mut StreamEnv, a: ReadArgs) -> Result<()> {
    // noida-db answers a fetch with all it has, whatever fetch.max.bytes says: allow large answers
    // (the anchor client gets the same setting).
    let source = KafkaSource::new(&a.brokers, Bytes)
        .topics([a.topic])
        .bounded()
        .property("receive.message.max.bytes", "1000000000");
    env.add_source(source).discard();
    Ok(())
}

static READ: Job<ReadArgs> = Job::new("kafka-read", read);

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct WriteArgs {
    brokers: String,
    topic: String,
    n: u64,
    size: usize,
    guarantee: DeliveryGuarantee,
}

fn write(env: &mut StreamEnv, a: WriteArgs) -> Result<()> {
    let size = a.size;
    let value = move |_: &u64, out: &mut OutRecord| -> std::result::Result<(), String> {
        out.value.resize(size, b'x');
        Ok(())
    };
    env.datagen(Some(a.n), None, |i| i).add_sink(
        KafkaSink::new(&a.brokers, &a.topic, value)
            .delivery_guarantee(a.guarantee)
            .transactional_id_prefix(&format!("bench-{}", a.topic)),
    );
    Ok(())
}

static WRITE: Job<WriteArgs> = Job::new("kafka-write", write);

fn arg<'a>(args: &'a [String], i: usize, what: &str) -> Result<&'a str> {
    args.get(i).map(String::as_str).ok_or_else(|| Error::Config(format!("missing {what}")))
}

fn main() -> ExitCode {
    App::new("kafka_bench").job(&READ).job(&WRITE).run(|driver, args| {
        let mut rest = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "-D" {
                let kv = it.next().ok_or_else(|| Error::Config("-D needs key=value".into()))?;
                let (k, v) = kv.split_once('=').ok_or_else(|| Error::Config(format!("-D {kv}: not key=value")))?;
                driver.set(k, v)?;
            } else {
                rest.push(a.clone());
            }
        }
        let brokers = arg(&rest, 1, "BROKERS")?.to_string();
        let topic = arg(&rest, 2, "TOPIC")?.to_string();
        let result = match arg(&rest, 0, "read or write")? {
            "read" => driver.execute(&READ, ReadArgs { brokers, topic })?,
            "write" => {
                let num =
                    |i, what| arg(&rest, i, what)?.parse::<u64>().map_err(|e| Error::Config(format!("{what}: {e}")));
                let guarantee = match arg(&rest, 5, "GUARANTEE")? {
                    "none" => DeliveryGuarantee::None,
                    "at-least-once" => DeliveryGuarantee::AtLeastOnce,
                    "exactly-once" => DeliveryGuarantee::ExactlyOnce,
                    g => return Err(Error::Config(format!("unknown guarantee '{g}'"))),
                };
                let args = WriteArgs { brokers, topic, n: num(3, "N")?, size: num(4, "SIZE")? as usize, guarantee };
                driver.execute(&WRITE, args)?
            }
            other => return Err(Error::Config(format!("unknown command '{other}': read or write"))),
        };
        let records = result.counts().first().map(|c| c.records_out).unwrap_or(0);
        println!("{:.3} {records}", result.net_runtime().as_secs_f64());
        Ok(())
    })
}
