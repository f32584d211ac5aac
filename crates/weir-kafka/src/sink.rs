//! The Kafka sink, with the semantics of Flink's `KafkaSink`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use weir_core::{Error, Result};
use weir_runtime::CancelToken;
use weir_runtime::checkpoint::task::TaskCheckpoint;
use weir_runtime::context::TaskEnv;
use weir_runtime::output::{Batch, Control, Output};
use weir_runtime::source::Sink;
use weir_runtime::state::{OperatorListState, Redistribution};

use crate::client::{Context, Properties, config_error, kafka_error};
use crate::record::{OutRecord, Serializer};
use crate::txn;

/// What the sink guarantees (Flink's `DeliveryGuarantee`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum DeliveryGuarantee {
    /// Records are sent and not waited for: a failure can lose what was in flight.
    None,
    /// Every record sent before a checkpoint barrier is acknowledged by the brokers before the
    /// barrier passes: nothing is lost, a recovery writes what came after the last checkpoint
    /// again (the default).
    #[default]
    AtLeastOnce,
    /// Records go into a Kafka transaction per checkpoint and subtask, committed when the
    /// checkpoint completes: a `read_committed` consumer sees every record exactly once.
    ExactlyOnce,
}

/// Writes records to a Kafka topic (Flink's `KafkaSink`).
///
/// Exactly-once works as Flink's does: each subtask writes into a transaction with the id
/// `<prefix>-<subtask>-<n>` (`n` counting the subtask's transactions), pre-committed (flushed) at
/// each checkpoint barrier and committed when the checkpoint completes. The ids and producer ids
/// of pre-committed transactions are in the checkpoint, so a recovery commits those of the
/// checkpoint it restores (they are complete: their checkpoint is) and aborts the transactions of
/// the failed attempt that no checkpoint covers, so `read_committed` consumers are not held up
/// until they time out. The prefix must be unique to the job (default: `weir-<job name>`).
/// Consumers see the output with `isolation.level=read_committed`, at each checkpoint.
///
/// `transaction.timeout.ms` (default here 900000, the brokers' default maximum) has to outlast a
/// checkpoint interval plus a recovery: a transaction that times out is aborted by the broker and
/// its records are lost.
pub struct KafkaSink<T> {
    props: Properties,
    topic: String,
    guarantee: DeliveryGuarantee,
    prefix: Option<String>,
    serializer: Arc<dyn Serializer<T>>,
}

impl<T> KafkaSink<T> {
    /// A sink writing to `topic` on the brokers `bootstrap_servers`, each record made by
    /// `serializer` ([`crate::Text`], [`crate::JsonOut`], [`crate::Keyed`] or a closure).
    pub fn new(bootstrap_servers: &str, topic: &str, serializer: impl Serializer<T>) -> Self {
        let mut props = Properties::default();
        props.0.insert("bootstrap.servers".into(), bootstrap_servers.to_string());
        KafkaSink {
            props,
            topic: topic.to_string(),
            guarantee: DeliveryGuarantee::AtLeastOnce,
            prefix: None,
            serializer: Arc::new(serializer),
        }
    }

    /// Sets the delivery guarantee (default: at-least-once).
    pub fn delivery_guarantee(mut self, guarantee: DeliveryGuarantee) -> Self {
        self.guarantee = guarantee;
        self
    }

    /// The prefix of the transactional ids of exactly-once delivery (Flink's
    /// `setTransactionalIdPrefix`): unique to the job, the same across its restarts.
    pub fn transactional_id_prefix(mut self, prefix: &str) -> Self {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// Sets a producer property (librdkafka's keys).
    pub fn property(mut self, key: &str, value: &str) -> Self {
        self.props.0.insert(key.to_string(), value.to_string());
        self
    }
}

impl<T: Send + 'static> Sink<T> for KafkaSink<T> {
    fn name(&self) -> String {
        format!("Kafka {}", self.topic)
    }

    fn validate(&self) -> Result<()> {
        if self.topic.trim().is_empty() {
            return Err(Error::Config("the Kafka sink needs a topic".into()));
        }
        if self.props.get("transactional.id").is_some() {
            return Err(Error::Config(
                "the Kafka sink makes its transactional ids itself: set transactional_id_prefix instead of \
                 transactional.id"
                    .into(),
            ));
        }
        self.props.validate()
    }

    fn create_writer(&self, env: &TaskEnv) -> Result<Box<dyn Output<T>>> {
        // validate() ran on the client; making the producer below checks the properties again.
        let w = Writer {
            topic: self.topic.clone(),
            serializer: self.serializer.clone(),
            out: OutRecord::default(),
            brokers: self.props.brokers()?.to_string(),
            cancel: env.op.cancel.clone(),
            subtask: env.op.subtask,
            flush_timeout: self.props.millis("delivery.timeout.ms", 300_000)?,
        };
        let exactly_once = self.guarantee == DeliveryGuarantee::ExactlyOnce;
        if exactly_once && !env.checkpoint.enabled() {
            return Err(Error::Config(format!(
                "the Kafka sink to '{}' delivers exactly-once, which commits at checkpoints: enable checkpointing \
                 (execution.checkpointing.interval) or deliver at-least-once",
                self.topic
            )));
        }
        if exactly_once {
            let prefix = self.prefix.clone().unwrap_or_else(|| format!("weir-{}", env.op.job_name));
            return Ok(Box::new(TransactionalWriter::open(w, &self.props, prefix, env)?));
        }
        let producer = plain_producer(&self.props, &format!("weir-{}-{}", env.op.job_name, env.op.subtask))?;
        Ok(Box::new(PlainWriter { w, producer, flush_at_barrier: self.guarantee == DeliveryGuarantee::AtLeastOnce }))
    }
}

pub(crate) type KafkaProducer = ThreadedProducer<Context>;

fn plain_producer(props: &Properties, client_id: &str) -> Result<KafkaProducer> {
    let config = props.client_config(&[("client.id", client_id)]);
    config.create_with_context(Context::default()).map_err(|e| config_error(&e))
}

/// What the writers share: serializing and sending.
struct Writer<T> {
    topic: String,
    serializer: Arc<dyn Serializer<T>>,
    out: OutRecord,
    brokers: String,
    cancel: CancelToken,
    subtask: u32,
    flush_timeout: Duration,
}

impl<T: 'static> Writer<T> {
    fn failed(&self, producer: &KafkaProducer) -> Result<()> {
        match producer.context().take_failure() {
            None => Ok(()),
            Some(why) => Err(Error::external(format!("the Kafka sink to {}", self.brokers), why, true)),
        }
    }

    /// Sends every record of `batch` (waiting while librdkafka's queue is full).
    fn send(&mut self, producer: &KafkaProducer, batch: &mut Batch<T>) -> Result<()> {
        self.failed(producer)?;
        let timestamps = batch.timestamps.take();
        for (i, r) in batch.records.drain(..).enumerate() {
            self.out.clear();
            self.serializer.serialize(&r, &mut self.out).map_err(|why| {
                Error::external(format!("serializing a record for Kafka topic '{}'", self.topic), why, false)
            })?;
            let topic = self.out.topic.as_deref().unwrap_or(&self.topic);
            let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(&self.out.value[..]);
            if self.out.has_key {
                rec = rec.key(&self.out.key[..]);
            }
            if let Some(p) = self.out.partition {
                rec = rec.partition(p);
            }
            if let Some(ts) = self.out.timestamp.or_else(|| timestamps.as_ref().and_then(|t| t.get(i).copied())) {
                rec = rec.timestamp(ts);
            }
            if !self.out.headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(self.out.headers.len());
                for (k, v) in &self.out.headers {
                    h = h.insert(Header { key: k, value: Some(&v[..]) });
                }
                rec = rec.headers(h);
            }
            // The clock is read only when librdkafka's queue is full, not for every record.
            let mut deadline = None;
            let mut rec = rec;
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // Back pressure: librdkafka's queue is full until the brokers acknowledge.
                        let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.flush_timeout);
                        if Instant::now() >= deadline {
                            return Err(Error::external(
                                format!("the Kafka sink to {}", self.brokers),
                                format!(
                                    "the brokers took no record for {} ms (delivery.timeout.ms); are they up?",
                                    self.flush_timeout.as_millis()
                                ),
                                true,
                            ));
                        }
                        if self.cancel.wait_timeout(Duration::from_millis(1)) {
                            return Ok(());
                        }
                        rec = back;
                    }
                    Err((e, _)) => return Err(kafka_error(&format!("sending to Kafka topic '{topic}'"), &e)),
                }
            }
        }
        Ok(())
    }

    /// Waits until the brokers acknowledged every record sent. (librdkafka's own flush, with
    /// delivery reports served by the producer's thread, waits in steps of 100 ms: at every
    /// checkpoint barrier that would be 100 ms of a stalled task.)
    fn flush(&self, producer: &KafkaProducer) -> Result<()> {
        let deadline = Instant::now() + self.flush_timeout;
        let mut pause = Duration::from_micros(50);
        while producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                return Err(Error::external(
                    format!("flushing records to Kafka topic '{}' at {}", self.topic, self.brokers),
                    format!(
                        "{} records were not acknowledged within {} ms (delivery.timeout.ms); are the brokers up?",
                        producer.in_flight_count(),
                        self.flush_timeout.as_millis()
                    ),
                    true,
                ));
            }
            self.failed(producer)?;
            if self.cancel.wait_timeout(pause) {
                return Ok(());
            }
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        self.failed(producer)
    }
}

/// At-least-once and no guarantee: one producer for the subtask's life.
struct PlainWriter<T> {
    w: Writer<T>,
    producer: KafkaProducer,
    flush_at_barrier: bool,
}

impl<T: 'static> Output<T> for PlainWriter<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        self.w.send(&self.producer, batch)
    }

    fn control(&mut self, event: Control) -> Result<()> {
        if let Control::Barrier(_) = event
            && self.flush_at_barrier
        {
            self.w.flush(&self.producer)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.w.flush(&self.producer)
    }
}

/// A transaction pre-committed at a checkpoint, to commit once the checkpoint completes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Pending {
    pub(crate) checkpoint: u64,
    pub(crate) id: String,
    pub(crate) pid: i64,
    pub(crate) epoch: i16,
}

/// A subtask's part of the checkpoint (a union list: a restoring subtask sees every old subtask's).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct SubtaskTxns {
    subtask: u32,
    /// The number of the subtask's next transaction.
    next: u64,
    /// Pre-committed transactions not known committed.
    pending: Vec<Pending>,
}

/// An open transaction.
struct Open {
    producer: KafkaProducer,
    /// Its number among the subtask's transactions.
    n: u64,
    id: String,
    pid: (i64, i16),
}

/// Transactions by id: starting them, committing those of earlier attempts, aborting those left
/// open.
#[derive(Clone)]
pub(crate) struct Txns {
    props: Properties,
    prefix: String,
    brokers: String,
    timeout: Duration,
    cancel: CancelToken,
    /// The subtask, for logs.
    subtask: u32,
}

/// The most transaction ids of one subtask a restore looks at for one left open.
const MAX_PROBE: u64 = 100_000;

impl Txns {
    pub(crate) fn new(props: &Properties, prefix: String, cancel: CancelToken, subtask: u32) -> Result<Txns> {
        let mut props = props.clone();
        props.0.entry("transaction.timeout.ms".into()).or_insert_with(|| "900000".into());
        Ok(Txns {
            brokers: props.brokers()?.to_string(),
            timeout: props.millis("delivery.timeout.ms", 300_000)?.min(Duration::from_secs(60)),
            props,
            prefix,
            cancel,
            subtask,
        })
    }

    fn txn_timeout(&self) -> Duration {
        self.props.millis("transaction.timeout.ms", 900_000).unwrap_or(Duration::from_secs(900))
    }

    pub(crate) fn id(&self, subtask: u32, n: u64) -> String {
        format!("{}-{subtask}-{n}", self.prefix)
    }

    /// A producer for transaction `id`, initialized: any transaction left open under `id` is
    /// aborted. Its producer id and epoch come with it.
    pub(crate) fn producer(&self, id: &str) -> Result<Started> {
        let mut config = self.props.client_config(&[("client.id", id), ("transactional.id", id), ("debug", "eos")]);
        config.set_log_level(RDKafkaLogLevel::Debug);
        let producer: KafkaProducer = config.create_with_context(Context::default()).map_err(|e| config_error(&e))?;
        producer
            .init_transactions(self.timeout)
            .map_err(|e| kafka_error(&format!("starting Kafka transaction '{id}'"), &e))?;
        // librdkafka tells the producer id in a log line, delivered by the producer's thread.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = producer.context().pid() {
                return Ok((producer, pid));
            }
            if Instant::now() >= deadline {
                return Err(Error::internal(format!(
                    "librdkafka did not report the producer id of Kafka transaction '{id}'"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Aborts the transactions of old subtask `subtask` from number `from` on, up to the first id
    /// never used before (producer epoch 0); the number after that one.
    pub(crate) fn abort_lingering(&self, subtask: u32, from: u64) -> Result<u64> {
        for n in from..from + MAX_PROBE {
            if self.cancel.is_cancelled() {
                return Ok(n);
            }
            let id = self.id(subtask, n);
            let (_, (_, epoch)) = self.producer(&id)?;
            if epoch == 0 {
                if n > from {
                    tracing::info!(
                        subtask = self.subtask,
                        "aborted any open Kafka transaction among {}..{} (an earlier attempt's)",
                        self.id(subtask, from),
                        self.id(subtask, n - 1)
                    );
                }
                return Ok(n + 1);
            }
        }
        tracing::warn!(
            subtask = self.subtask,
            "stopped looking for open Kafka transactions after {MAX_PROBE} ids from {}",
            self.id(subtask, from)
        );
        Ok(from + MAX_PROBE)
    }

    /// Commits a transaction pre-committed by an earlier attempt.
    pub(crate) fn resume_commit(&self, p: &Pending) -> Result<txn::Ended> {
        let ended = txn::commit(&self.brokers, &p.id, p.pid, p.epoch, self.timeout)?;
        match ended {
            txn::Ended::Committed => {
                tracing::info!(
                    subtask = self.subtask,
                    checkpoint = p.checkpoint,
                    "committed Kafka transaction '{}' of an earlier attempt",
                    p.id
                );
            }
            txn::Ended::Gone(code) => {
                // Committed by an earlier recovery (and the id used again), or aborted by the broker
                // when it timed out: Kafka cannot tell which, so say both.
                tracing::warn!(
                    subtask = self.subtask,
                    checkpoint = p.checkpoint,
                    code,
                    "Kafka transaction '{}' was already finished: committed by an earlier recovery, or aborted by the \
                     broker after transaction.timeout.ms ({} ms), in which case its records are lost; raise \
                     transaction.timeout.ms if recoveries take that long",
                    p.id,
                    self.txn_timeout().as_millis()
                );
            }
        }
        Ok(ended)
    }
}

/// A producer initialized for a transaction id, with its producer id and epoch.
type Started = (KafkaProducer, (i64, i16));

/// Exactly-once (see [`KafkaSink`]).
struct TransactionalWriter<T> {
    w: Writer<T>,
    txns: Txns,
    current: Option<Open>,
    /// The producer of the next transaction, being made in the background (its number, and the
    /// thread making it): a producer takes a round trip or two to the coordinator to start, which
    /// would otherwise stall the task at every barrier.
    spare: Option<(u64, std::thread::JoinHandle<Result<Started>>)>,
    /// Commits under way, each in a thread of its own (a commit waits for the coordinator to
    /// write its markers, which the task need not wait for): still pending in snapshots until
    /// they are done.
    committing: Vec<(Pending, std::thread::JoinHandle<Result<()>>)>,
    next: u64,
    pending: Vec<(Pending, Option<KafkaProducer>)>,
    state: OperatorListState<SubtaskTxns>,
    checkpoint: TaskCheckpoint,
}

impl<T: 'static> TransactionalWriter<T> {
    fn open(w: Writer<T>, props: &Properties, prefix: String, env: &TaskEnv) -> Result<Self> {
        let state = env.op.operator_state.list_state::<SubtaskTxns>("kafka-transactions", Redistribution::Union)?;
        let restored = state.get()?;
        let (subtask, parallelism) = (env.op.subtask, env.op.parallelism.max(1));
        let mut writer = TransactionalWriter {
            w,
            txns: Txns::new(props, prefix, env.op.cancel.clone(), subtask)?,
            current: None,
            spare: None,
            committing: Vec::new(),
            next: restored.iter().map(|s| s.next).max().unwrap_or(0),
            pending: Vec::new(),
            state,
            checkpoint: env.checkpoint.clone(),
        };
        let mine: Vec<&SubtaskTxns> = restored.iter().filter(|s| s.subtask % parallelism == subtask).collect();
        // The restored checkpoint is complete: so are its pre-committed transactions.
        for p in mine.iter().flat_map(|s| &s.pending) {
            writer.txns.resume_commit(p)?;
        }
        // Transactions the failed attempt opened after the checkpoint: abort them. A fresh job
        // aborts what an earlier run under the same prefix left open, and numbers on from there.
        if restored.is_empty() {
            writer.next = writer.txns.abort_lingering(subtask, 0)?;
        }
        for s in &mine {
            let fresh = writer.txns.abort_lingering(s.subtask, s.next)?;
            if s.subtask == subtask {
                writer.next = writer.next.max(fresh);
            }
        }
        writer.snapshot()?;
        Ok(writer)
    }

    /// Starts the next transaction, and has the producer of the one after it made in the
    /// background. (A made producer whose transaction never starts is harmless: it holds no
    /// transaction, and a restore's search for open ones passes over it.)
    fn begin(&mut self) -> Result<()> {
        let n = self.next;
        let id = self.txns.id(self.w.subtask, n);
        let made = match self.spare.take() {
            Some((m, thread)) if m == n => thread
                .join()
                .map_err(|_| Error::internal(format!("the thread starting Kafka transaction '{id}' panicked")))?,
            _ => self.txns.producer(&id),
        };
        let (producer, pid) = made?;
        producer.begin_transaction().map_err(|e| kafka_error(&format!("beginning Kafka transaction '{id}'"), &e))?;
        self.current = Some(Open { producer, n, id, pid });
        self.next += 1;
        let (txns, after) = (self.txns.clone(), self.txns.id(self.w.subtask, self.next));
        let thread = std::thread::Builder::new()
            .name(format!("kafka-txn-{}", self.w.subtask))
            .spawn(move || txns.producer(&after))
            .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
        self.spare = Some((self.next, thread));
        Ok(())
    }

    /// Commits the pre-committed transactions of checkpoints up to `completed`.
    fn commit(&mut self, completed: u64) -> Result<()> {
        self.reap(false)?;
        if self.pending.first().is_none_or(|(p, _)| p.checkpoint > completed) {
            return Ok(());
        }
        let (done, keep): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(p, _)| p.checkpoint <= completed);
        self.pending = keep;
        for (p, producer) in done {
            match producer {
                Some(producer) => {
                    let (what, timeout) = (format!("committing Kafka transaction '{}'", p.id), self.txns.timeout);
                    let thread = std::thread::Builder::new()
                        .name(format!("kafka-commit-{}", self.w.subtask))
                        .spawn(move || producer.commit_transaction(timeout).map_err(|e| kafka_error(&what, &e)))
                        .map_err(|e| Error::internal(format!("cannot start a thread: {e}")))?;
                    self.committing.push((p, thread));
                }
                None => {
                    self.txns.resume_commit(&p)?;
                }
            }
        }
        Ok(())
    }

    /// Collects the commits that are done (all of them, waiting, with `wait`); the first failure.
    fn reap(&mut self, wait: bool) -> Result<()> {
        let mut first = Ok(());
        let mut still = Vec::with_capacity(self.committing.len());
        for (p, thread) in self.committing.drain(..) {
            if !wait && !thread.is_finished() {
                still.push((p, thread));
                continue;
            }
            let done = thread
                .join()
                .map_err(|_| Error::internal(format!("the thread committing Kafka transaction '{}' panicked", p.id)))
                .and_then(|r| r);
            if first.is_ok() {
                first = done;
            }
        }
        self.committing = still;
        first
    }

    /// The state for a checkpoint: the pre-committed transactions, and the number of the first
    /// transaction it does not cover (the open one), from which a restore aborts.
    fn snapshot(&self) -> Result<()> {
        let pending =
            self.committing.iter().map(|(p, _)| p).chain(self.pending.iter().map(|(p, _)| p)).cloned().collect();
        let next = self.current.as_ref().map_or(self.next, |o| o.n);
        self.state.update(vec![SubtaskTxns { subtask: self.w.subtask, next, pending }])
    }

    /// Pre-commit at barrier `id`: the open transaction is flushed and becomes pending; the next
    /// one starts right away, so that the numbers of the transactions a failed attempt may leave
    /// open follow each other without gaps (a restore looks for them in order).
    fn pre_commit(&mut self, id: u64) -> Result<()> {
        if let Some(open) = self.current.take() {
            self.w.flush(&open.producer)?;
            let p = Pending { checkpoint: id, id: open.id, pid: open.pid.0, epoch: open.pid.1 };
            self.pending.push((p, Some(open.producer)));
        }
        self.begin()?;
        self.snapshot()
    }
}

impl<T: 'static> Output<T> for TransactionalWriter<T> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<()> {
        self.commit(self.checkpoint.completed())?;
        if self.current.is_none() {
            self.begin()?;
        }
        match &self.current {
            Some(open) => self.w.send(&open.producer, batch),
            None => Ok(()),
        }
    }

    fn control(&mut self, event: Control) -> Result<()> {
        match event {
            Control::Barrier(id) => self.pre_commit(id),
            Control::Tick(_) => self.commit(self.checkpoint.completed()),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        // Everything up to the final checkpoint is committed once it completes.
        let last = self.pending.last().map(|(p, _)| p.checkpoint);
        let sink = format!("the Kafka sink to '{}'", self.w.topic);
        let left = "its transactions stay open until transaction.timeout.ms aborts them, or a restore from the \
                    checkpoint commits them";
        if !self.checkpoint.wait_final(last, &self.w.cancel, &sink, left)? {
            return Ok(());
        }
        self.commit(self.checkpoint.completed())?;
        self.reap(true)?;
        // Records after the final barrier (windows flushed at the end of input) go in one more
        // transaction, committed now: the job is over and no replay follows.
        if let Some(open) = self.current.take() {
            self.w.flush(&open.producer)?;
            open.producer
                .commit_transaction(self.txns.timeout)
                .map_err(|e| kafka_error(&format!("committing Kafka transaction '{}'", open.id), &e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Broker;

    fn txns(b: &Broker, prefix: &str) -> Result<Txns> {
        let props = Properties([("bootstrap.servers".to_string(), b.address())].into());
        Txns::new(&props, prefix.into(), CancelToken::new(), 0)
    }

    fn send(p: &KafkaProducer, topic: &str, value: &str) {
        assert!(p.send(BaseRecord::<[u8], [u8]>::to(topic).payload(value.as_bytes())).is_ok());
    }

    fn values(b: &Broker, topic: &str) -> Vec<String> {
        let mut v: Vec<String> =
            b.consume(topic, None, Duration::from_secs(1)).into_iter().filter_map(|s| s.value).collect();
        v.sort();
        v
    }

    #[test]
    fn a_pre_committed_transaction_of_a_dead_producer_is_committed_by_its_ids() -> Result<()> {
        let b = Broker::start();
        b.create_topic("t", 1);
        let t = txns(&b, "resume")?;
        let (producer, (pid, epoch)) = t.producer("resume-0-0")?;
        assert!(producer.begin_transaction().is_ok());
        for v in ["a", "b", "c"] {
            send(&producer, "t", v);
        }
        assert!(producer.flush(Duration::from_secs(10)).is_ok());
        // The producer goes away without committing, as a killed process's does.
        drop(producer);
        assert!(values(&b, "t").is_empty(), "an open transaction is invisible to read_committed");
        let p = Pending { checkpoint: 1, id: "resume-0-0".into(), pid, epoch };
        assert_eq!(t.resume_commit(&p)?, txn::Ended::Committed);
        assert_eq!(values(&b, "t"), ["a", "b", "c"]);
        // A second recovery from the same checkpoint commits again: harmless.
        assert!(t.resume_commit(&p).is_ok());
        assert_eq!(values(&b, "t"), ["a", "b", "c"]);
        Ok(())
    }

    #[test]
    fn transactions_a_failed_attempt_left_open_are_aborted_up_to_the_first_unused_id() -> Result<()> {
        let b = Broker::start();
        b.create_topic("t", 1);
        let t = txns(&b, "left")?;
        for (n, v) in [(0, "x"), (1, "y")] {
            let (producer, _) = t.producer(&t.id(0, n))?;
            assert!(producer.begin_transaction().is_ok());
            send(&producer, "t", v);
            assert!(producer.flush(Duration::from_secs(10)).is_ok());
        }
        let plain: KafkaProducer = Properties([("bootstrap.servers".to_string(), b.address())].into())
            .client_config(&[])
            .create_with_context(Context::default())
            .map_err(|e| config_error(&e))?;
        send(&plain, "t", "after");
        assert!(plain.flush(Duration::from_secs(10)).is_ok());
        assert!(values(&b, "t").is_empty(), "open transactions hold read_committed consumers back");
        // Ids 0 and 1 were used; 2 is the first never used: numbering goes on at 3.
        assert_eq!(t.abort_lingering(0, 0)?, 3);
        assert_eq!(values(&b, "t"), ["after"]);
        Ok(())
    }
}
