//! The executable form of a job: the plan plus, for every operator, a factory that builds its
//! instances. Factories are type-erased here (records of any type flow through the same executor);
//! the API layer creates them with the types known, and [`StreamOps`] carries the operations the
//! executor needs for each record type (channels, fan-out, exchanges, input tasks).

use std::any::Any;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;

use weir_core::{Error, Plan, PlanEdge, PlanVertex, Result, ShipStrategy};

use crate::config::ExecutionConfig;
use crate::context::{CancelToken, TaskEnv};
use crate::exchange::{ChannelRx, ChannelTx, ExchangeOutput, InputGate, InputTask, KeyHashFn, Message};
use crate::net::{OutLink, PartWiring, RemoteChannel};
use crate::output::{Batch, Control, FanOut, NullOutput, Output, Traced};
use crate::source::TaskBody;

/// A `Box<dyn Output<T>>`, erased.
pub type AnyOutput = Box<dyn Any>;
/// A channel end ([`ChannelTx`] or [`ChannelRx`] of the record type), erased.
pub type AnyChannelEnd = Box<dyn Any + Send>;

/// Builds one instance of an operator, given its output and side outputs; returns its input.
pub type OperatorFactory = Arc<dyn Fn(&TaskEnv, AnyOutput, &mut SideOutputs) -> Result<AnyOutput> + Send + Sync>;

/// The side outputs of one operator instance, by tag, with the operations of their record types.
#[derive(Default)]
pub struct SideOutputs(pub std::collections::HashMap<String, (AnyOutput, Arc<dyn StreamOps>)>);

impl SideOutputs {
    /// The side output `tag` of record type `T`; a [`NullOutput`] when nothing consumes it.
    pub fn take<T: 'static>(&mut self, tag: &str) -> Result<Box<dyn Output<T>>> {
        match self.0.remove(tag) {
            Some((out, _)) => unerase::<T>(out),
            None => Ok(Box::new(NullOutput)),
        }
    }

    /// Every side output as a buffered sink, for operators whose side-output types are only
    /// known where records are emitted.
    pub fn take_all(&mut self) -> Result<std::collections::HashMap<String, Box<dyn SideSink>>> {
        self.0.drain().map(|(tag, (out, ops))| Ok((tag, ops.side_sink(out)?))).collect()
    }
}

/// A side output whose record type is erased: records are added through
/// [`TypedSideSink`] (reached with `as_any`), control events and the end reach it regardless.
pub trait SideSink {
    /// For downcasting to [`TypedSideSink`].
    fn as_any(&mut self) -> &mut dyn Any;
    /// Pushes what is buffered.
    fn flush(&mut self) -> Result<()>;
    /// Forwards a control event (after flushing).
    fn control(&mut self, event: Control) -> Result<()>;
    /// Flushes and ends the output.
    fn finish(&mut self) -> Result<()>;
}

/// A side output of record type `S` with its buffer.
pub struct TypedSideSink<S> {
    /// Where records go.
    pub out: Box<dyn Output<S>>,
    /// Records not yet pushed.
    pub buf: Batch<S>,
}

impl<S: 'static> SideSink for TypedSideSink<S> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() { Ok(()) } else { self.out.push(&mut self.buf) }
    }
    fn control(&mut self, event: Control) -> Result<()> {
        self.flush()?;
        self.out.control(event)
    }
    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        self.out.finish()
    }
}
/// Builds one instance of a source, given its output; returns the task body that drives it.
pub type SourceFactory = Arc<dyn Fn(&TaskEnv, AnyOutput) -> Result<Box<dyn TaskBody>> + Send + Sync>;
/// A check run on the client before the job starts (input files exist, sink paths writable, ...).
pub type Validator = Arc<dyn Fn() -> Result<()> + Send + Sync>;

/// Erases a typed output.
pub fn erase<T: 'static>(out: Box<dyn Output<T>>) -> AnyOutput {
    Box::new(out)
}

/// Recovers a typed output; a mismatch is a bug in the graph builder.
pub fn unerase<T: 'static>(out: AnyOutput) -> Result<Box<dyn Output<T>>> {
    out.downcast::<Box<dyn Output<T>>>()
        .map(|b| *b)
        .map_err(|_| Error::internal(format!("output is not of record type {}", std::any::type_name::<T>())))
}

fn unerase_end<E: 'static>(end: AnyChannelEnd) -> Result<E> {
    end.downcast::<E>()
        .map(|b| *b)
        .map_err(|_| Error::internal(format!("channel end is not a {}", std::any::type_name::<E>())))
}

/// How one subtask's side of an exchange distributes records.
#[derive(Clone)]
pub struct ExchangeShape {
    /// The ship strategy.
    pub strategy: ShipStrategy,
    /// The receiving operator's key groups.
    pub max_parallelism: u32,
    /// The sending subtask.
    pub subtask: u32,
    /// Records a batch to another process collects before it is sent.
    pub network_fill: usize,
    /// The sending task's figures (records and bytes out, back-pressured time).
    pub io: Arc<crate::metrics::TaskIo>,
}

/// The operations the executor needs on records of one type.
pub trait StreamOps: Send + Sync {
    /// The record type's name, for messages.
    fn type_name(&self) -> &'static str;
    /// A bounded channel.
    fn channel(&self, capacity: usize) -> (AnyChannelEnd, AnyChannelEnd);
    /// The sending end of channel `channel` to another process, on `link`.
    fn remote_sender(&self, link: &Arc<OutLink>, channel: u32) -> Result<AnyChannelEnd>;
    /// The receiving end of a channel from another process, its decoder registered in `wiring`.
    fn remote_receiver(&self, capacity: usize, wiring: &mut PartWiring, channel: RemoteChannel) -> AnyChannelEnd;
    /// One output feeding all of `outputs` (a [`NullOutput`] if there are none).
    fn fanout(&self, outputs: Vec<AnyOutput>) -> Result<AnyOutput>;
    /// The sending side of an exchange.
    fn exchange(
        &self,
        shape: ExchangeShape,
        senders: Vec<AnyChannelEnd>,
        key_hash: Option<&Arc<dyn Any + Send + Sync>>,
        cancel: CancelToken,
    ) -> Result<AnyOutput>;
    /// A task reading `receivers` into `head`.
    fn input_task(
        &self,
        receivers: Vec<AnyChannelEnd>,
        head: AnyOutput,
        cancel: CancelToken,
        tick: Option<std::time::Duration>,
        checkpoint: crate::checkpoint::task::TaskCheckpoint,
        io: Arc<crate::metrics::TaskIo>,
    ) -> Result<Box<dyn TaskBody>>;
    /// Wraps an operator's input with counting and panic attribution.
    fn traced(&self, env: &TaskEnv, input: AnyOutput) -> Result<AnyOutput>;
    /// Wraps an operator's output with counting (records out, output watermark).
    fn counted(&self, metrics: Arc<crate::metrics::OperatorMetrics>, output: AnyOutput) -> Result<AnyOutput>;
    /// A buffered, type-erased side output over `out`.
    fn side_sink(&self, out: AnyOutput) -> Result<Box<dyn SideSink>>;
}

/// [`StreamOps`] for records of type `T`.
pub struct TypedOps<T>(PhantomData<fn() -> T>);

impl<T> TypedOps<T> {
    /// The operations for `T`.
    pub fn arc() -> Arc<dyn StreamOps>
    where
        T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static,
    {
        Arc::new(TypedOps::<T>(PhantomData))
    }
}

impl<T: Clone + Send + serde::Serialize + serde::de::DeserializeOwned + 'static> StreamOps for TypedOps<T> {
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }

    fn channel(&self, capacity: usize) -> (AnyChannelEnd, AnyChannelEnd) {
        let (tx, rx) = crossbeam_channel::bounded::<Message<T>>(capacity);
        (Box::new(ChannelTx::from(tx)), Box::new(ChannelRx::from(rx)))
    }

    fn remote_sender(&self, link: &Arc<OutLink>, channel: u32) -> Result<AnyChannelEnd> {
        Ok(Box::new(ChannelTx::Remote(crate::net::remote_tx::<T>(link, channel)?)))
    }

    fn remote_receiver(&self, capacity: usize, wiring: &mut PartWiring, channel: RemoteChannel) -> AnyChannelEnd {
        let (tx, rx) = crossbeam_channel::bounded::<Message<T>>(capacity);
        let credit = wiring.inbound(channel, crate::net::decoder::<T>(tx));
        Box::new(ChannelRx { rx, credit: Some(credit) })
    }

    fn fanout(&self, mut outputs: Vec<AnyOutput>) -> Result<AnyOutput> {
        match outputs.len() {
            0 => Ok(erase::<T>(Box::new(NullOutput))),
            1 => outputs.pop().ok_or_else(|| Error::internal("fan-out lost its output")),
            _ => {
                let typed = outputs.into_iter().map(unerase::<T>).collect::<Result<Vec<_>>>()?;
                Ok(erase::<T>(Box::new(FanOut::new(typed))))
            }
        }
    }

    fn exchange(
        &self,
        shape: ExchangeShape,
        senders: Vec<AnyChannelEnd>,
        key_hash: Option<&Arc<dyn Any + Send + Sync>>,
        cancel: CancelToken,
    ) -> Result<AnyOutput> {
        let ExchangeShape { strategy, max_parallelism, subtask, network_fill, io } = shape;
        let senders = senders.into_iter().map(unerase_end).collect::<Result<Vec<_>>>()?;
        let key_hash = match key_hash {
            Some(k) => Some(
                k.downcast_ref::<KeyHashFn<T>>()
                    .cloned()
                    .ok_or_else(|| Error::internal("key function of the wrong record type"))?,
            ),
            None => None,
        };
        let out = ExchangeOutput::<T>::new(strategy, senders, key_hash, max_parallelism, subtask, cancel)?
            .with_fill(network_fill)
            .with_io(io);
        Ok(erase::<T>(Box::new(out)))
    }

    fn input_task(
        &self,
        receivers: Vec<AnyChannelEnd>,
        head: AnyOutput,
        cancel: CancelToken,
        tick: Option<std::time::Duration>,
        checkpoint: crate::checkpoint::task::TaskCheckpoint,
        io: Arc<crate::metrics::TaskIo>,
    ) -> Result<Box<dyn TaskBody>> {
        let receivers = receivers.into_iter().map(unerase_end).collect::<Result<Vec<_>>>()?;
        let gate = InputGate::<T>::new(receivers, cancel).with_io(io);
        Ok(Box::new(InputTask::new(gate, unerase::<T>(head)?, tick, checkpoint)))
    }

    fn traced(&self, env: &TaskEnv, input: AnyOutput) -> Result<AnyOutput> {
        let inner = unerase::<T>(input)?;
        let traced = Traced::new(env.op.vertex, env.current.clone(), env.metrics.clone(), inner);
        Ok(erase::<T>(Box::new(traced.with_operator_state(env))))
    }

    fn counted(&self, metrics: Arc<crate::metrics::OperatorMetrics>, output: AnyOutput) -> Result<AnyOutput> {
        let inner = unerase::<T>(output)?;
        Ok(erase::<T>(Box::new(crate::output::Counted::new(metrics, inner))))
    }

    fn side_sink(&self, out: AnyOutput) -> Result<Box<dyn SideSink>> {
        Ok(Box::new(TypedSideSink::<T> { out: unerase::<T>(out)?, buf: Batch::default() }))
    }
}

/// How one operator's instances are made.
pub enum NodeKind {
    /// A source.
    Source(SourceFactory),
    /// An operator with inputs of the type `input` describes.
    Operator {
        /// Builds an instance.
        factory: OperatorFactory,
        /// Operations on the input record type.
        input: Arc<dyn StreamOps>,
    },
}

/// One operator of the graph.
pub struct Node {
    /// Its plan entry.
    pub vertex: PlanVertex,
    /// Operations on the output record type.
    pub output: Arc<dyn StreamOps>,
    /// Operations on the record type of each side output, by tag.
    pub side_outputs: Vec<(String, Arc<dyn StreamOps>)>,
    /// How instances are made.
    pub kind: NodeKind,
}

/// One edge of the graph.
pub struct Edge {
    /// Its plan entry.
    pub plan: PlanEdge,
    /// For hash edges, the `KeyHashFn<T>` of the record type, erased.
    pub key_hash: Option<Arc<dyn Any + Send + Sync>>,
}

/// A job ready to run: operators with their factories, edges, client-side checks and settings.
pub struct StreamGraph {
    /// The job's registered name.
    pub job_name: String,
    /// Operators, indexed by vertex id.
    pub nodes: Vec<Node>,
    /// Edges.
    pub edges: Vec<Edge>,
    /// Checks run on the client before the job starts.
    pub validators: Vec<Validator>,
    /// Execution settings.
    pub config: ExecutionConfig,
    /// Cached files by name: the path the job registered, and where this process reads it.
    pub cached_files: BTreeMap<String, (String, std::path::PathBuf)>,
}

impl StreamGraph {
    /// The record operations of what `edge` carries: its source's main or side output.
    pub fn edge_ops(&self, edge: &Edge) -> Result<&Arc<dyn StreamOps>> {
        let node = &self.nodes[edge.plan.source.0 as usize];
        match &edge.plan.side_output {
            None => Ok(&node.output),
            Some(tag) => {
                node.side_outputs.iter().find(|(t, _)| t == tag).map(|(_, ops)| ops).ok_or_else(|| {
                    Error::internal(format!("operator '{}' has no side output '{tag}'", node.vertex.name))
                })
            }
        }
    }

    /// The logical plan.
    pub fn plan(&self) -> Plan {
        Plan {
            vertices: self.nodes.iter().map(|n| n.vertex.clone()).collect(),
            edges: self.edges.iter().map(|e| e.plan.clone()).collect(),
            cached_files: self.cached_files.iter().map(|(name, (path, _))| (name.clone(), path.clone())).collect(),
        }
    }

    /// Plan checks and every validator; the first problem found is the error.
    pub fn validate(&self) -> Result<()> {
        self.config.validate()?;
        self.plan().validate()?;
        for v in &self.validators {
            v()?;
        }
        Ok(())
    }
}
