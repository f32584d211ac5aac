//! `DataStream`: a stream of records and the transformations on it.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use weir_connectors::{collect::Collect, discard::Discard, file::TextFileSink, print::Print};
use weir_core::{Error, Result, ShipStrategy, VertexId};
use weir_runtime::Output;
use weir_runtime::context::TaskEnv;
use weir_runtime::graph::{NodeKind, SideOutputs, TypedOps};
use weir_runtime::operators::{Filter, FlatMap, Map};
use weir_runtime::source::Sink;

use crate::Data;
use crate::builder::{Builder, DraftEdge, operator_factory};

/// A stream of records of type `T` (Flink's `DataStream<T>`).
///
/// Transformations return new streams; a stream may feed several transformations (each gets every
/// record). Settings such as [`DataStream::set_parallelism`] apply to the operator that produced
/// this stream.
pub struct DataStream<T> {
    pub(crate) b: Rc<RefCell<Builder>>,
    pub(crate) id: VertexId,
    /// Partitioning chosen for the next edge out of this stream (`rebalance()`, ...).
    pub(crate) ship: Option<ShipStrategy>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream { b: self.b.clone(), id: self.id, ship: self.ship, _t: PhantomData }
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(b: Rc<RefCell<Builder>>, id: VertexId) -> Self {
        DataStream { b, id, ship: None, _t: PhantomData }
    }

    /// The operator that produces this stream.
    pub fn vertex(&self) -> VertexId {
        self.id
    }

    /// Adds a one-input operator fed by this stream.
    pub(crate) fn one_input<O: Data>(
        &self,
        operator: &str,
        factory: impl Fn(&TaskEnv, Box<dyn Output<O>>) -> Result<Box<dyn Output<T>>> + Send + Sync + 'static,
        ship: Option<ShipStrategy>,
        key_hash: Option<Arc<dyn std::any::Any + Send + Sync>>,
    ) -> DataStream<O> {
        self.operator(operator, move |env, next, _| factory(env, next), ship, key_hash, None)
    }

    /// Adds a one-input operator that may use side outputs; `timestamps` says whether its output
    /// carries event time (`None`: as its input does).
    pub(crate) fn operator<O: Data>(
        &self,
        operator: &str,
        factory: impl Fn(&TaskEnv, Box<dyn Output<O>>, &mut SideOutputs) -> Result<Box<dyn Output<T>>>
        + Send
        + Sync
        + 'static,
        ship: Option<ShipStrategy>,
        key_hash: Option<Arc<dyn std::any::Any + Send + Sync>>,
        timestamps: Option<bool>,
    ) -> DataStream<O> {
        let mut b = self.b.borrow_mut();
        let kind = NodeKind::Operator { factory: operator_factory::<T, O>(factory), input: TypedOps::<T>::arc() };
        let id = b.add_node(operator.to_string(), operator.to_string(), TypedOps::<O>::arc(), kind);
        let inherited = b.nodes[self.id.0 as usize].timestamps;
        b.nodes[id.0 as usize].timestamps = timestamps.unwrap_or(inherited);
        b.edges.push(DraftEdge { source: self.id, target: id, ship: ship.or(self.ship), key_hash, side: None });
        drop(b);
        DataStream::new(self.b.clone(), id)
    }

    /// Whether the records of this stream carry event-time timestamps.
    pub fn has_timestamps(&self) -> bool {
        self.b.borrow().nodes[self.id.0 as usize].timestamps
    }

    /// Declares that the operator producing this stream emits records of type `S` on the side
    /// output `tag`.
    pub(crate) fn declare_side_output<S: Data>(&self, tag: &OutputTag<S>) {
        let mut b = self.b.borrow_mut();
        let node = &mut b.nodes[self.id.0 as usize];
        if !node.side_outputs.iter().any(|(t, _, _)| t == tag.id.as_ref()) {
            node.side_outputs.push((tag.id.to_string(), TypedOps::<S>::arc(), std::any::TypeId::of::<S>()));
        }
    }

    /// Lets readers declare this operator's side outputs (a process function may emit to any tag).
    pub(crate) fn open_side_outputs(&self) {
        self.b.borrow_mut().nodes[self.id.0 as usize].open_side_outputs = true;
    }

    /// The records the operator producing this stream sent to the side output `tag` (for example
    /// a window's late records).
    pub fn side_output<S: Data>(&self, tag: &OutputTag<S>) -> DataStream<S> {
        if self.b.borrow().nodes[self.id.0 as usize].open_side_outputs {
            self.declare_side_output(tag);
        }
        let mut b = self.b.borrow_mut();
        let node = &b.nodes[self.id.0 as usize];
        let declared = node.side_outputs.iter().find(|(t, _, _)| t == tag.id.as_ref()).map(|(_, _, ty)| *ty);
        if declared != Some(std::any::TypeId::of::<S>()) {
            let message = match declared {
                None => format!("operator '{}' has no side output '{}'", node.vertex.name, tag.id),
                Some(_) => format!(
                    "side output '{}' of operator '{}' does not carry records of type {}",
                    tag.id,
                    node.vertex.name,
                    std::any::type_name::<S>()
                ),
            };
            b.errors.push(Error::invalid_job(message));
        }
        let kind = NodeKind::Operator {
            factory: operator_factory::<S, S>(|_, next, _| Ok(next)),
            input: TypedOps::<S>::arc(),
        };
        let name = format!("Side Output: {}", tag.id);
        let id = b.add_node(name.clone(), name, TypedOps::<S>::arc(), kind);
        let timestamps = b.nodes[self.id.0 as usize].timestamps;
        b.nodes[id.0 as usize].timestamps = timestamps;
        b.edges.push(DraftEdge {
            source: self.id,
            target: id,
            ship: None,
            key_hash: None,
            side: Some(tag.id.to_string()),
        });
        drop(b);
        DataStream::new(self.b.clone(), id)
    }

    /// One output per record.
    pub fn map<O: Data>(&self, f: impl FnMut(T) -> O + Clone + Send + Sync + 'static) -> DataStream<O> {
        self.one_input("Map", move |_, next| Ok(Box::new(Map::new(f.clone(), next))), None, None)
    }

    /// The records for which `f` is true.
    pub fn filter(&self, f: impl FnMut(&T) -> bool + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.one_input("Filter", move |_, next| Ok(Box::new(Filter::new(f.clone(), next))), None, None)
    }

    /// Any number of outputs per record: `f` pushes them onto the vector it is given.
    pub fn flat_map<O: Data>(&self, f: impl FnMut(T, &mut Vec<O>) + Clone + Send + Sync + 'static) -> DataStream<O> {
        self.one_input("Flat Map", move |_, next| Ok(Box::new(FlatMap::new(f.clone(), next))), None, None)
    }

    /// This stream and `others` as one stream.
    pub fn union(&self, others: &[DataStream<T>]) -> DataStream<T> {
        if others.is_empty() {
            return self.clone();
        }
        if others.iter().any(|o| !Rc::ptr_eq(&o.b, &self.b)) {
            self.b.borrow_mut().errors.push(Error::invalid_job("union of streams from different environments"));
            return self.clone();
        }
        let out = self.one_input::<T>("Union", |_, next| Ok(next), None, None);
        let mut b = self.b.borrow_mut();
        // The union has event time only if every input has.
        let all = others.iter().all(|o| b.nodes[o.id.0 as usize].timestamps) && b.nodes[self.id.0 as usize].timestamps;
        b.nodes[out.id.0 as usize].timestamps = all;
        for o in others {
            b.edges.push(DraftEdge { source: o.id, target: out.id, ship: o.ship, key_hash: None, side: None });
        }
        drop(b);
        out
    }

    fn with_ship(&self, ship: ShipStrategy) -> DataStream<T> {
        DataStream { ship: Some(ship), ..self.clone() }
    }

    /// Round-robin to the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        self.with_ship(ShipStrategy::Rebalance)
    }

    /// Uniformly at random to the next operator's subtasks.
    pub fn shuffle(&self) -> DataStream<T> {
        self.with_ship(ShipStrategy::Shuffle)
    }

    /// Every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        self.with_ship(ShipStrategy::Broadcast)
    }

    /// Subtask `i` to subtask `i` of the next operator, which must have the same parallelism.
    pub fn forward(&self) -> DataStream<T> {
        self.with_ship(ShipStrategy::Forward)
    }

    /// Sets the parallelism of the operator producing this stream.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        set_parallelism(&self.b, self.id, parallelism);
        self
    }

    /// Sets the number of key groups of the operator producing this stream.
    pub fn set_max_parallelism(self, max_parallelism: u32) -> Self {
        self.b.borrow_mut().vertex_mut(self.id).max_parallelism = max_parallelism;
        self
    }

    /// Names the operator producing this stream (shown in plans, logs and errors).
    pub fn name(self, name: impl Into<String>) -> Self {
        self.b.borrow_mut().vertex_mut(self.id).name = name.into();
        self
    }

    /// A stable id for the operator producing this stream, which maps its state across versions.
    pub fn uid(self, uid: impl Into<String>) -> Self {
        self.b.borrow_mut().vertex_mut(self.id).uid = Some(uid.into());
        self
    }

    /// Keeps the operator producing this stream out of operator chains.
    pub fn disable_chaining(self) -> Self {
        self.b.borrow_mut().vertex_mut(self.id).chainable = false;
        self
    }

    /// Writes the stream to any [`Sink`].
    pub fn add_sink(&self, sink: impl Sink<T>) -> DataStreamSink {
        let sink = Arc::new(sink);
        let name = format!("Sink: {}", sink.name());
        let check = sink.clone();
        let stream: DataStream<()> =
            self.one_input(&name, move |env, _next: Box<dyn Output<()>>| sink.create_writer(env), None, None);
        self.b.borrow_mut().validators.push(Arc::new(move || check.validate()));
        DataStreamSink { b: stream.b, id: stream.id }
    }

    /// Prints every record (`Debug` form) to standard output, prefixed `N> ` by the one-based
    /// subtask when the sink runs in parallel.
    pub fn print(&self) -> DataStreamSink
    where
        T: std::fmt::Debug,
    {
        self.add_sink(Print)
    }

    /// Drops every record (after it has passed through the whole pipeline).
    pub fn discard(&self) -> DataStreamSink {
        self.add_sink(Discard)
    }

    /// Writes records (`Display` form, one per line) into directory `dir`, one file per subtask.
    pub fn write_text(&self, dir: impl Into<PathBuf>) -> DataStreamSink
    where
        T: std::fmt::Display,
    {
        self.add_sink(TextFileSink::new(dir))
    }

    /// Hands the records back to the driver with the job's result, under `name`; read them with
    /// [`crate::JobExecutionResult::collected`].
    pub fn collect(&self, name: impl Into<String>) -> DataStreamSink {
        self.add_sink(Collect::new(name))
    }
}

pub(crate) fn set_parallelism(b: &Rc<RefCell<Builder>>, id: VertexId, parallelism: u32) {
    let mut b = b.borrow_mut();
    if parallelism == 0 {
        let name = b.vertex_mut(id).name.clone();
        b.errors.push(Error::invalid_job(format!(
            "operator '{name}' was given parallelism 0; parallelism must be at least 1"
        )));
    } else {
        b.vertex_mut(id).parallelism = parallelism;
    }
}

/// The end of a pipeline: a sink, whose settings can still be changed.
pub struct DataStreamSink {
    b: Rc<RefCell<Builder>>,
    id: VertexId,
}

impl DataStreamSink {
    /// Sets the sink's parallelism.
    pub fn set_parallelism(self, parallelism: u32) -> Self {
        set_parallelism(&self.b, self.id, parallelism);
        self
    }

    /// Names the sink.
    pub fn name(self, name: impl Into<String>) -> Self {
        self.b.borrow_mut().vertex_mut(self.id).name = name.into();
        self
    }

    /// A stable id for the sink.
    pub fn uid(self, uid: impl Into<String>) -> Self {
        self.b.borrow_mut().vertex_mut(self.id).uid = Some(uid.into());
        self
    }
}

/// Names a side output and the type of its records (Flink's `OutputTag`).
pub struct OutputTag<T> {
    pub(crate) id: std::borrow::Cow<'static, str>,
    _t: PhantomData<fn() -> T>,
}

impl<T> OutputTag<T> {
    /// A tag called `id`.
    pub fn new(id: impl Into<String>) -> Self {
        OutputTag { id: std::borrow::Cow::Owned(id.into()), _t: PhantomData }
    }

    /// A tag for a `static`.
    pub const fn new_static(id: &'static str) -> Self {
        OutputTag { id: std::borrow::Cow::Borrowed(id), _t: PhantomData }
    }

    /// The tag's name.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl<T> Clone for OutputTag<T> {
    fn clone(&self) -> Self {
        OutputTag { id: self.id.clone(), _t: PhantomData }
    }
}
