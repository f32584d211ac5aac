//! weir-api: what a weir user writes against.
//!
//! A job is a registered, deterministic builder function ([`Job`]) that declares sources,
//! transformations and sinks on a [`StreamEnv`]. The program's `main` is the driver: it calls
//! [`Driver::execute`] or [`Driver::execute_async`] with a job and its arguments. No user function is
//! ever serialized: wherever the job runs, the same artifact rebuilds it from its name and
//! arguments, and the plan's fingerprint proves that the rebuilt job is the one submitted.

mod builder;
mod connect;
mod driver;
mod env;
mod functions;
mod job;
mod keyed;
mod process;
mod stream;
mod time;
mod window;

pub use connect::{
    ConnectedStreams, Either, IntervalJoin, IntervalJoinBounded, JoinEqual, JoinWhere, JoinedStreams,
    KeyedCoProcessFunction, KeyedConnectedStreams, WindowJoin,
};
pub use driver::{Driver, Executor, JobClient, JobExecutionResult, SubmittedJob, Targets};
pub use env::StreamEnv;
pub use functions::AggregateFunction;
pub use job::{Job, Registry};
pub use keyed::KeyedStream;
pub use process::{
    AggregatingState, KeyedContext, KeyedProcessFunction, ListState, ListStateDescriptor, MapState, MapStateDescriptor,
    ReducingState, ReducingStateDescriptor, StateTtlConfig, ValueState, ValueStateDescriptor,
};
pub use stream::{DataStream, DataStreamSink, OutputTag};
pub use time::WatermarkStrategy;
pub use weir_runtime::cache::cached_file;
pub use weir_runtime::window::TimeDomain;
pub use weir_runtime::window::trigger::{
    CountEvictor, CountTrigger, EventTimeTrigger, Evictor, NoEvictor, ProcessingTimeTrigger, PurgingTrigger,
    TimeEvictor, Trigger, TriggerContext, TriggerResult,
};
pub use weir_runtime::window::{TimeWindow, WindowAssigner};
pub use weir_runtime::{Counter, MetricGroup};
pub use window::{
    DefaultTrigger, EventTimeSessionWindows, GlobalWindows, ProcessingTimeSessionWindows, SlidingEventTimeWindows,
    SlidingProcessingTimeWindows, TumblingEventTimeWindows, TumblingProcessingTimeWindows, WindowedStream,
};

/// What can flow through a stream: cloneable (for fan-out and broadcast), sendable between
/// threads, and serializable (records cross process boundaries in a cluster).
pub trait Data: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static> Data for T {}

/// What can key a stream: [`Data`] that can be hashed and compared.
pub trait Key: Data + std::hash::Hash + Eq {}
impl<T: Data + std::hash::Hash + Eq> Key for T {}
