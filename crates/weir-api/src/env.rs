//! The stream environment: where a job declares its sources (the builder behind it is
//! `builder.rs`).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use weir_connectors::{
    collection::Collection, datagen::DataGen, file::TextFiles, sequence::Sequence, socket::SocketText,
};
use weir_core::{Error, Result};
use weir_runtime::ExecutionConfig;
use weir_runtime::graph::{NodeKind, StreamGraph, TypedOps, unerase};
use weir_runtime::source::{Source, SourceTask};

use crate::builder::Builder;
use crate::{Data, DataStream};

/// The environment a job builder declares its pipeline on (Flink's `StreamExecutionEnvironment`).
///
/// Operators created on it get the environment's parallelism unless they set their own.
pub struct StreamEnv {
    pub(crate) b: Rc<RefCell<Builder>>,
}

impl StreamEnv {
    /// An environment for the job named `job_name`.
    pub fn new(job_name: impl Into<String>, config: ExecutionConfig) -> Self {
        StreamEnv {
            b: Rc::new(RefCell::new(Builder {
                job_name: job_name.into(),
                config,
                nodes: Vec::new(),
                edges: Vec::new(),
                validators: Vec::new(),
                errors: Vec::new(),
                cached_files: Default::default(),
            })),
        }
    }

    /// The parallelism new operators get.
    pub fn parallelism(&self) -> u32 {
        self.b.borrow().config.parallelism
    }

    /// Sets the parallelism of operators created from now on.
    pub fn set_parallelism(&mut self, parallelism: u32) -> &mut Self {
        let mut b = self.b.borrow_mut();
        if parallelism == 0 {
            b.errors.push(Error::invalid_job("the environment's parallelism must be at least 1, not 0"));
        } else {
            b.config.parallelism = parallelism;
        }
        drop(b);
        self
    }

    /// Sets the number of key groups of keyed operators created from now on.
    pub fn set_max_parallelism(&mut self, max_parallelism: u32) -> &mut Self {
        self.b.borrow_mut().config.max_parallelism = max_parallelism;
        self
    }

    /// A stream from any [`Source`].
    pub fn add_source<T: Data>(&mut self, source: impl Source<T>) -> DataStream<T> {
        let source = Arc::new(source);
        let name = format!("Source: {}", source.name());
        let mut b = self.b.borrow_mut();
        let limit = source.max_parallelism();
        let event_time = source.has_event_time();
        let check = source.clone();
        b.validators.push(Arc::new(move || check.validate()));
        let factory = Arc::new(move |env: &weir_runtime::context::TaskEnv, out: weir_runtime::graph::AnyOutput| {
            let reader = source.create_reader(&env.op)?;
            let body: Box<dyn weir_runtime::source::TaskBody> =
                Box::new(SourceTask::new(reader, unerase::<T>(out)?, env));
            Ok(body)
        });
        let id = b.add_node(name.clone(), name, TypedOps::<T>::arc(), NodeKind::Source(factory));
        b.nodes[id.0 as usize].timestamps = event_time;
        if let Some(limit) = limit {
            let node = &mut b.nodes[id.0 as usize];
            node.parallelism_limit = Some(limit);
            node.vertex.parallelism = node.vertex.parallelism.min(limit);
        }
        drop(b);
        DataStream::new(self.b.clone(), id)
    }

    /// Registers a file for the job's tasks to read under `name` (Flink's distributed cache):
    /// wherever a task runs, [`crate::cached_file`]`(name)` gives a local copy. On a cluster the
    /// JobManager reads the file at submission (so it must be reachable there) and TaskManagers
    /// fetch it like an artifact.
    pub fn register_cached_file(&mut self, path: impl AsRef<std::path::Path>, name: impl Into<String>) -> &mut Self {
        let name = name.into();
        let path = path.as_ref().to_string_lossy().into_owned();
        let mut b = self.b.borrow_mut();
        if b.cached_files.insert(name.clone(), path).is_some() {
            b.errors.push(Error::invalid_job(format!("the cached file name '{name}' is registered twice")));
        }
        drop(b);
        self
    }

    /// The numbers `from..=to`, split across parallel readers.
    pub fn from_sequence(&mut self, from: i64, to: i64) -> DataStream<i64> {
        self.add_source(Sequence::new(from, to))
    }

    /// The elements of `items`, with parallelism 1 (set a higher one to split them).
    pub fn from_collection<T: Data>(&mut self, items: Vec<T>) -> DataStream<T> {
        self.add_source(Collection::new(items)).set_parallelism(1)
    }

    /// `f(0), f(1), ...`: `count` records (`None`: unbounded) at most `records_per_second`
    /// (`None`: unlimited), made in parallel.
    pub fn datagen<T: Data>(
        &mut self,
        count: Option<u64>,
        records_per_second: Option<f64>,
        f: impl Fn(u64) -> T + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.add_source(DataGen::new(Arc::new(f), count, records_per_second))
    }

    /// The lines of a text file, or of every file in a directory, split across parallel readers.
    pub fn read_text_file(&mut self, path: impl Into<PathBuf>) -> DataStream<String> {
        self.add_source(TextFiles::new(path))
    }

    /// Lines read from a TCP socket at `address` (`host:port`); ends when the peer closes it.
    pub fn socket_text_stream(&mut self, address: impl Into<String>) -> DataStream<String> {
        self.add_source(SocketText::new(address))
    }

    /// Turns the declared pipeline into a runnable graph; the first declaration error, if any.
    pub(crate) fn into_graph(self) -> Result<StreamGraph> {
        let b = Rc::try_unwrap(self.b)
            .map_err(|_| {
                Error::invalid_job("a DataStream outlived its job builder; do not keep streams outside the builder")
            })?
            .into_inner();
        b.finish()
    }
}
