//! The logical plan of a job: operators (vertices), the edges between them and how records are
//! shipped along each edge. The plan is what `weir info` prints, what the fingerprint covers, and
//! from which the runtime derives its tasks by chaining.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result, VertexId};

/// How records travel along an edge, with Flink's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ShipStrategy {
    /// Subtask `i` sends to subtask `i`; both sides have the same parallelism. Chainable.
    Forward,
    /// By key group of the record's key.
    Hash,
    /// Round-robin over all receivers.
    Rebalance,
    /// Uniformly at random over all receivers.
    Shuffle,
    /// Every record to every receiver.
    Broadcast,
}

impl ShipStrategy {
    /// Flink's upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShipStrategy::Forward => "FORWARD",
            ShipStrategy::Hash => "HASH",
            ShipStrategy::Rebalance => "REBALANCE",
            ShipStrategy::Shuffle => "SHUFFLE",
            ShipStrategy::Broadcast => "BROADCAST",
        }
    }
}

/// One logical operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanVertex {
    /// Index in [`Plan::vertices`].
    pub id: VertexId,
    /// Display name (the user's `name(..)`, or the operator kind).
    pub name: String,
    /// Stable user-assigned id that maps state to this operator across job versions.
    pub uid: Option<String>,
    /// What the operator does, e.g. `Source: Sequence`, `Map`, `Keyed Reduce`, `Sink: Print`.
    pub operator: String,
    /// Number of parallel subtasks.
    pub parallelism: u32,
    /// Number of key groups (upper bound for rescaling keyed state).
    pub max_parallelism: u32,
    /// Whether the operator may be chained with its neighbours.
    pub chainable: bool,
}

/// A directed edge between two operators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEdge {
    /// Upstream operator.
    pub source: VertexId,
    /// Downstream operator.
    pub target: VertexId,
    /// Which input of the target this edge feeds (0 for one-input operators).
    pub input: u32,
    /// How records are distributed.
    pub ship_strategy: ShipStrategy,
    /// The side output of the source operator this edge carries (e.g. late records of a window),
    /// or `None` for its main output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_output: Option<String>,
}

impl PlanVertex {
    /// The uid its state is kept under: the user's `uid`, or one made of its position and name
    /// (stable while the job's shape does not change).
    pub fn state_uid(&self) -> String {
        self.uid.clone().unwrap_or_else(|| format!("{}:{}", self.id.0, self.name))
    }
}

/// A job's logical plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Operators, indexed by their [`VertexId`].
    pub vertices: Vec<PlanVertex>,
    /// Edges in creation order.
    pub edges: Vec<PlanEdge>,
    /// Files the job registered for its tasks to read (Flink's distributed cache): name and path
    /// where the job was submitted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cached_files: BTreeMap<String, String>,
}

impl Plan {
    /// The vertex with this id.
    pub fn vertex(&self, id: VertexId) -> Result<&PlanVertex> {
        self.vertices.get(id.0 as usize).ok_or_else(|| Error::internal(format!("plan has no vertex {id}")))
    }

    /// Edges into `id`.
    pub fn inputs(&self, id: VertexId) -> impl Iterator<Item = &PlanEdge> {
        self.edges.iter().filter(move |e| e.target == id)
    }

    /// Edges out of `id`.
    pub fn outputs(&self, id: VertexId) -> impl Iterator<Item = &PlanEdge> {
        self.edges.iter().filter(move |e| e.source == id)
    }

    /// Checks what can be checked without running anything.
    pub fn validate(&self) -> Result<()> {
        for (i, v) in self.vertices.iter().enumerate() {
            if v.id.0 as usize != i {
                return Err(Error::internal(format!("vertex {} stored at index {i}", v.id)));
            }
            if v.parallelism == 0 {
                return Err(Error::invalid_job(format!(
                    "operator '{}' has parallelism 0; parallelism must be at least 1",
                    v.name
                )));
            }
            if v.max_parallelism == 0 || v.max_parallelism > crate::keygroup::UPPER_BOUND_MAX_PARALLELISM {
                return Err(Error::invalid_job(format!(
                    "operator '{}' has max parallelism {}; it must be between 1 and {}",
                    v.name,
                    v.max_parallelism,
                    crate::keygroup::UPPER_BOUND_MAX_PARALLELISM
                )));
            }
        }
        for e in &self.edges {
            let (s, t) = (self.vertex(e.source)?, self.vertex(e.target)?);
            if e.ship_strategy == ShipStrategy::Forward && s.parallelism != t.parallelism {
                return Err(Error::invalid_job(format!(
                    "forward edge from '{}' (parallelism {}) to '{}' (parallelism {}): forward \
                     partitioning needs equal parallelism; use rebalance() or set equal parallelism",
                    s.name, s.parallelism, t.name, t.parallelism
                )));
            }
            if e.ship_strategy == ShipStrategy::Hash && t.parallelism > t.max_parallelism {
                return Err(Error::invalid_job(format!(
                    "keyed operator '{}' has parallelism {} above its max parallelism {}; raise \
                     the max parallelism or lower the parallelism",
                    t.name, t.parallelism, t.max_parallelism
                )));
            }
        }
        Ok(())
    }

    /// Whether `edge` joins its two operators into one task: a forward edge between chainable
    /// operators of equal parallelism, into an operator with no other input.
    pub fn is_chained(&self, edge: &PlanEdge) -> bool {
        let (Ok(s), Ok(t)) = (self.vertex(edge.source), self.vertex(edge.target)) else {
            return false;
        };
        edge.ship_strategy == ShipStrategy::Forward
            && s.parallelism == t.parallelism
            && s.chainable
            && t.chainable
            && self.inputs(edge.target).count() == 1
    }

    /// Subtasks of the sources (vertices no edge leads to), in all.
    pub fn source_subtasks(&self) -> usize {
        let targets: std::collections::BTreeSet<VertexId> = self.edges.iter().map(|e| e.target).collect();
        self.vertices.iter().filter(|v| !targets.contains(&v.id)).map(|v| v.parallelism as usize).sum()
    }

    /// For every vertex, the head of the chain (task) it runs in.
    pub fn chain_heads(&self) -> Vec<VertexId> {
        // Vertices are created after their inputs, so one pass in id order suffices.
        let mut heads: Vec<VertexId> = self.vertices.iter().map(|v| v.id).collect();
        for v in &self.vertices {
            let mut inputs = self.inputs(v.id);
            if let (Some(e), None) = (inputs.next(), inputs.next())
                && self.is_chained(e)
            {
                heads[v.id.0 as usize] = heads[e.source.0 as usize];
            }
        }
        heads
    }

    /// A stable digest of the plan: two builds that produce the same plan have the same
    /// fingerprint, whatever process or machine computes it.
    pub fn fingerprint(&self) -> String {
        // Field order of derived Serialize is declaration order and Vec order is fixed, so the
        // JSON text is canonical.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&bytes);
        hex(&digest[..16])
    }

    /// Flink-style plan JSON: one node per task (chain), with the operators chained into it.
    pub fn to_json(&self, job_name: &str) -> serde_json::Value {
        let heads = self.chain_heads();
        let mut chains: BTreeMap<VertexId, Vec<&PlanVertex>> = BTreeMap::new();
        for v in &self.vertices {
            chains.entry(heads[v.id.0 as usize]).or_default().push(v);
        }
        let nodes: Vec<serde_json::Value> = chains
            .iter()
            .map(|(head, ops)| {
                let description = ops.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(" -> ");
                let inputs: Vec<serde_json::Value> = ops
                    .iter()
                    .flat_map(|o| self.inputs(o.id))
                    .filter(|e| !self.is_chained(e))
                    .enumerate()
                    .map(|(num, e)| {
                        serde_json::json!({
                            "num": num,
                            "id": heads[e.source.0 as usize].0.to_string(),
                            "ship_strategy": e.ship_strategy.as_str(),
                            "exchange": "pipelined_bounded",
                        })
                    })
                    .collect();
                serde_json::json!({
                    "id": head.0.to_string(),
                    "parallelism": ops[0].parallelism,
                    "operator": description,
                    "description": description,
                    "inputs": inputs,
                    "operators": ops,
                })
            })
            .collect();
        serde_json::json!({
            "name": job_name,
            "type": "STREAMING",
            "fingerprint": self.fingerprint(),
            "nodes": nodes,
        })
    }

    /// Graphviz DOT: one cluster per task, one box per operator, edges labelled with their ship
    /// strategy.
    pub fn to_dot(&self, job_name: &str) -> String {
        let heads = self.chain_heads();
        let mut out = String::new();
        let _ = writeln!(out, "digraph {} {{", quote(job_name));
        let _ = writeln!(out, "  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];");
        let mut chains: BTreeMap<VertexId, Vec<&PlanVertex>> = BTreeMap::new();
        for v in &self.vertices {
            chains.entry(heads[v.id.0 as usize]).or_default().push(v);
        }
        for (head, ops) in &chains {
            let _ = writeln!(out, "  subgraph cluster_{} {{", head.0);
            let _ =
                writeln!(out, "    label={};", quote(&format!("task {} (parallelism {})", head.0, ops[0].parallelism)));
            for o in ops {
                let label = if o.name == o.operator {
                    format!("{}\\np={}", o.name, o.parallelism)
                } else {
                    format!("{}\\n{}\\np={}", o.name, o.operator, o.parallelism)
                };
                let _ = writeln!(out, "    v{} [label={}];", o.id.0, quote(&label));
            }
            let _ = writeln!(out, "  }}");
        }
        for e in &self.edges {
            let style = if self.is_chained(e) { ", style=dashed" } else { "" };
            let _ = writeln!(
                out,
                "  v{} -> v{} [label={}{style}];",
                e.source.0,
                e.target.0,
                quote(e.ship_strategy.as_str())
            );
        }
        out.push_str("}\n");
        out
    }
}

fn quote(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    // Keep DOT's own line-break escape.
    format!("\"{}\"", escaped.replace("\\\\n", "\\n"))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vertex(id: u32, name: &str, parallelism: u32) -> PlanVertex {
        PlanVertex {
            id: VertexId(id),
            name: name.into(),
            uid: None,
            operator: name.into(),
            parallelism,
            max_parallelism: 128,
            chainable: true,
        }
    }

    fn edge(s: u32, t: u32, ship: ShipStrategy) -> PlanEdge {
        PlanEdge { source: VertexId(s), target: VertexId(t), input: 0, ship_strategy: ship, side_output: None }
    }

    fn sample() -> Plan {
        Plan {
            vertices: vec![vertex(0, "src", 2), vertex(1, "map", 2), vertex(2, "sum", 3), vertex(3, "sink", 3)],
            edges: vec![
                edge(0, 1, ShipStrategy::Forward),
                edge(1, 2, ShipStrategy::Hash),
                edge(2, 3, ShipStrategy::Forward),
            ],
            cached_files: BTreeMap::new(),
        }
    }

    #[test]
    fn forward_edges_of_equal_parallelism_chain() {
        let p = sample();
        assert_eq!(p.chain_heads(), vec![VertexId(0), VertexId(0), VertexId(2), VertexId(2)]);
        let json = p.to_json("j");
        assert_eq!(json["nodes"].as_array().map(Vec::len), Some(2));
        assert_eq!(json["nodes"][1]["inputs"][0]["ship_strategy"], "HASH");
        assert_eq!(json["nodes"][0]["description"], "src -> map");
        let dot = p.to_dot("j");
        assert!(dot.contains("v1 -> v2 [label=\"HASH\"]"), "{dot}");
    }

    #[test]
    fn fingerprint_changes_with_the_plan() {
        let a = sample();
        let mut b = sample();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.vertices[2].parallelism = 4;
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn validation_names_the_operator() {
        let mut p = sample();
        p.vertices[1].parallelism = 0;
        let e = p.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("'map' has parallelism 0"), "{e}");
        let mut p = sample();
        p.vertices[1].parallelism = 3;
        let e = p.validate().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("forward edge from 'src'"), "{e}");
    }
}
