//! The builder behind a stream environment: the operators and edges a job declares, checked and
//! turned into a stream graph; and the erasure of typed operator factories and key selectors that
//! every kind of stream uses.

use std::collections::HashSet;
use std::sync::Arc;

use weir_core::{Error, PlanEdge, PlanVertex, Result, ShipStrategy, VertexId};
use weir_runtime::ExecutionConfig;
use weir_runtime::exchange::KeyHashFn;
use weir_runtime::graph::{Edge, Node, NodeKind, SideOutputs, StreamGraph, StreamOps, Validator, erase, unerase};

use crate::Data;

/// An operator being declared.
pub(crate) struct DraftNode {
    pub vertex: PlanVertex,
    pub output: Arc<dyn StreamOps>,
    pub kind: NodeKind,
    /// A source's own limit on its parallelism.
    pub parallelism_limit: Option<u32>,
    /// Whether the records this node emits carry event-time timestamps.
    pub timestamps: bool,
    /// Side outputs: tag, record operations, record type.
    pub side_outputs: Vec<(String, Arc<dyn StreamOps>, std::any::TypeId)>,
    /// Whether side outputs are declared by their readers (process functions emit to any tag).
    pub open_side_outputs: bool,
}

/// An edge being declared; `ship: None` means "forward if the parallelisms match, else rebalance",
/// decided when the job is complete (parallelism may still change until then).
pub(crate) struct DraftEdge {
    pub source: VertexId,
    pub target: VertexId,
    pub ship: Option<ShipStrategy>,
    pub key_hash: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// The side output of `source` this edge carries.
    pub side: Option<String>,
}

pub(crate) struct Builder {
    pub job_name: String,
    pub config: ExecutionConfig,
    pub nodes: Vec<DraftNode>,
    pub edges: Vec<DraftEdge>,
    pub validators: Vec<Validator>,
    pub errors: Vec<Error>,
    pub cached_files: std::collections::BTreeMap<String, String>,
}

impl Builder {
    pub fn add_node(&mut self, name: String, operator: String, output: Arc<dyn StreamOps>, kind: NodeKind) -> VertexId {
        let id = VertexId(self.nodes.len() as u32);
        self.nodes.push(DraftNode {
            vertex: PlanVertex {
                id,
                name,
                uid: None,
                operator,
                parallelism: self.config.parallelism,
                max_parallelism: self.config.max_parallelism,
                chainable: true,
            },
            output,
            kind,
            parallelism_limit: None,
            timestamps: false,
            side_outputs: Vec::new(),
            open_side_outputs: false,
        });
        id
    }

    pub fn vertex_mut(&mut self, id: VertexId) -> &mut PlanVertex {
        &mut self.nodes[id.0 as usize].vertex
    }

    pub(crate) fn finish(self) -> Result<StreamGraph> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        let mut uids = HashSet::new();
        for n in &self.nodes {
            if let Some(limit) = n.parallelism_limit
                && n.vertex.parallelism > limit
            {
                return Err(Error::invalid_job(format!(
                    "'{}' supports at most parallelism {limit}, but parallelism {} was set",
                    n.vertex.name, n.vertex.parallelism
                )));
            }
            if let Some(uid) = &n.vertex.uid
                && !uids.insert(uid.clone())
            {
                return Err(Error::invalid_job(format!(
                    "uid '{uid}' is used by more than one operator; uids must be unique within a job"
                )));
            }
        }
        let nodes = self.nodes;
        let edges = self
            .edges
            .into_iter()
            .map(|e| {
                let same =
                    nodes[e.source.0 as usize].vertex.parallelism == nodes[e.target.0 as usize].vertex.parallelism;
                let ship = e.ship.unwrap_or(if same { ShipStrategy::Forward } else { ShipStrategy::Rebalance });
                Edge {
                    plan: PlanEdge {
                        source: e.source,
                        target: e.target,
                        input: 0,
                        ship_strategy: ship,
                        side_output: e.side,
                    },
                    key_hash: e.key_hash,
                }
            })
            .collect();
        Ok(StreamGraph {
            job_name: self.job_name,
            nodes: nodes
                .into_iter()
                .map(|n| Node {
                    vertex: n.vertex,
                    output: n.output,
                    side_outputs: n.side_outputs.into_iter().map(|(tag, ops, _)| (tag, ops)).collect(),
                    kind: n.kind,
                })
                .collect(),
            edges,
            validators: self.validators,
            config: self.config,
            cached_files: self
                .cached_files
                .into_iter()
                .map(|(name, path)| (name, (path.clone(), path.into())))
                .collect(),
        })
    }
}

/// Erases a typed operator factory.
pub(crate) fn operator_factory<I: Data, O: Data>(
    f: impl Fn(
        &weir_runtime::context::TaskEnv,
        Box<dyn weir_runtime::Output<O>>,
        &mut SideOutputs,
    ) -> Result<Box<dyn weir_runtime::Output<I>>>
    + Send
    + Sync
    + 'static,
) -> weir_runtime::graph::OperatorFactory {
    Arc::new(move |env, out, sides| Ok(erase::<I>(f(env, unerase::<O>(out)?, sides)?)))
}

/// The erased key hash of a key selector.
pub(crate) fn key_hash<T: Data, K: crate::Key>(
    key: impl Fn(&T) -> K + Send + Sync + 'static,
) -> Arc<dyn std::any::Any + Send + Sync> {
    let f: KeyHashFn<T> = Arc::new(move |t| weir_core::keygroup::stable_hash(&key(t)));
    Arc::new(f)
}
