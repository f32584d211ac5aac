//! Flink's REST metric paths: `/jobmanager/metrics`, `/taskmanagers/{id}/metrics`,
//! `/jobs/{id}/metrics`, a vertex's (`/jobs/{id}/vertices/{vid}/metrics`, its subtasks'
//! aggregated and one by one, its watermarks), and the aggregates over TaskManagers and jobs.
//!
//! As in Flink: without `get`, the ids of the metrics there are (`[{"id": ...}]`); with
//! `get=a,b`, their values as strings (`[{"id": "a", "value": "12"}]`); the aggregating paths
//! give `min`, `max`, `avg`, `sum` and `skew` (or those `agg` names) over the subtasks,
//! TaskManagers or jobs that `subtasks`, `taskmanagers` or `jobs` select (all by default). A
//! vertex's metric ids are `<subtask>.<name>` (its task's figures, with the records counted for
//! the vertex itself) and `<subtask>.<operator name>.<name>`. The values are those the
//! TaskManagers last reported (every second for tasks, with each heartbeat for a TaskManager's
//! own) and the JobManager's own now.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_core::metric::GroupSample;

use super::common::{ApiError, Shared, with_job};
use crate::cluster::Cluster;
use crate::state::JobView;

type Params = Query<BTreeMap<String, String>>;

/// A metric value as Flink's REST shows it: a string, whole numbers without a fraction.
fn shown(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 9.3e18 { format!("{}", v as i64) } else { format!("{v}") }
}

fn list(q: &BTreeMap<String, String>, key: &str) -> Option<Vec<String>> {
    q.get(key).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
}

/// Flink's answer for one set of metrics: the ids, or the values `get` names.
fn answer(metrics: &[(String, f64)], q: &BTreeMap<String, String>) -> Response {
    match list(q, "get") {
        None => Json(metrics.iter().map(|(id, _)| json!({ "id": id })).collect::<Vec<_>>()).into_response(),
        Some(wanted) => Json(
            wanted
                .iter()
                .filter_map(|w| metrics.iter().find(|(id, _)| id == w))
                .map(|(id, v)| json!({ "id": id, "value": shown(*v) }))
                .collect::<Vec<_>>(),
        )
        .into_response(),
    }
}

fn flat(groups: &[GroupSample]) -> Vec<(String, f64)> {
    groups.iter().flat_map(|g| g.metrics.iter().map(|(n, s)| (n.clone(), s.number()))).collect()
}

/// Flink's aggregate of each metric `get` names over `sets` (one per subtask, TaskManager or
/// job), with the aggregations `agg` names.
fn aggregate(sets: &[Vec<(String, f64)>], q: &BTreeMap<String, String>) -> Result<Response, ApiError> {
    const ALL: [&str; 5] = ["min", "max", "avg", "sum", "skew"];
    let aggs = list(q, "agg").unwrap_or_else(|| ALL.iter().map(|s| s.to_string()).collect());
    if let Some(bad) = aggs.iter().find(|a| !ALL.contains(&a.as_str())) {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("agg '{bad}' is not one of min, max, avg, sum, skew")));
    }
    let mut ids: Vec<String> = Vec::new();
    for (id, _) in sets.iter().flatten() {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let Some(wanted) = list(q, "get") else {
        return Ok(Json(ids.iter().map(|id| json!({ "id": id })).collect::<Vec<_>>()).into_response());
    };
    let mut out = Vec::new();
    for w in wanted.iter().filter(|w| ids.contains(w)) {
        let values: Vec<f64> = sets
            .iter()
            .filter_map(|s| s.iter().find(|(id, _)| id == w).map(|(_, v)| *v))
            .filter(|v| v.is_finite())
            .collect();
        if values.is_empty() {
            continue;
        }
        let sum: f64 = values.iter().sum();
        let avg = sum / values.len() as f64;
        let max = values.iter().copied().fold(f64::MIN, f64::max);
        let min = values.iter().copied().fold(f64::MAX, f64::min);
        let mut entry = json!({ "id": w });
        for a in &aggs {
            entry[a.as_str()] = json!(match a.as_str() {
                "min" => min,
                "max" => max,
                "sum" => sum,
                "avg" => avg,
                // Flink's skew: how far the largest is above the mean, as a share of the largest.
                _ =>
                    if max > 0.0 {
                        (max - avg) / max * 100.0
                    } else {
                        0.0
                    },
            });
        }
        out.push(entry);
    }
    Ok(Json(out).into_response())
}

/// `GET /jobmanager/metrics`.
pub async fn jobmanager(State(c): Shared, Query(q): Params) -> Response {
    let groups: Vec<GroupSample> = c.metrics.get().map(|g| vec![g.sample()]).unwrap_or_default();
    answer(&flat(&groups), &q)
}

fn taskmanager_metrics(c: &Cluster, id: &str) -> Option<Vec<(String, f64)>> {
    c.taskmanagers().get(id).map(|t| flat(&t.metrics))
}

/// `GET /taskmanagers/{tmid}/metrics`.
pub async fn taskmanager(State(c): Shared, Path(id): Path<String>, Query(q): Params) -> Response {
    match taskmanager_metrics(&c, &id) {
        Some(m) => answer(&m, &q),
        None => ApiError(StatusCode::NOT_FOUND, format!("TaskManager {id} is not registered; see /taskmanagers"))
            .into_response(),
    }
}

/// `GET /taskmanagers/metrics`: aggregated over the TaskManagers `taskmanagers` names (all).
pub async fn taskmanagers(State(c): Shared, Query(q): Params) -> Response {
    let chosen = list(&q, "taskmanagers");
    let sets: Vec<Vec<(String, f64)>> = c
        .taskmanagers()
        .values()
        .filter(|t| chosen.as_ref().is_none_or(|c| c.contains(&t.id)))
        .map(|t| flat(&t.metrics))
        .collect();
    aggregate(&sets, &q).unwrap_or_else(IntoResponse::into_response)
}

fn job_metrics(j: &JobView) -> Vec<(String, f64)> {
    flat(&[crate::metrics::job_group(j, &weir_metrics::hostname())])
}

/// `GET /jobs/{jobid}/metrics`.
pub async fn job(State(c): Shared, Path(id): Path<String>, Query(q): Params) -> Response {
    match with_job(&c, &id, job_metrics) {
        Ok(m) => answer(&m, &q),
        Err(e) => e.into_response(),
    }
}

/// `GET /jobs/metrics`: aggregated over the jobs `jobs` names (all).
pub async fn jobs(State(c): Shared, Query(q): Params) -> Response {
    let chosen = list(&q, "jobs");
    let sets: Vec<Vec<(String, f64)>> = c
        .jobs()
        .iter()
        .filter(|j| chosen.as_ref().is_none_or(|c| c.contains(&j.id.to_string())))
        .map(|j| job_metrics(j))
        .collect();
    aggregate(&sets, &q).unwrap_or_else(IntoResponse::into_response)
}

/// The records metrics an operator counts for itself, which stand for its vertex's task's.
const OWN: [&str; 6] = [
    "numRecordsIn",
    "numRecordsOut",
    "numRecordsInPerSecond",
    "numRecordsOutPerSecond",
    "currentInputWatermark",
    "currentOutputWatermark",
];

/// The metric groups of vertex `vid`'s subtasks, as its parts last reported them: each subtask's
/// index, its operator's group and its task's group (if reported).
pub(super) fn subtask_groups<'a>(j: &'a JobView, vid: &str) -> Vec<(u32, &'a GroupSample, Option<&'a GroupSample>)> {
    let groups: Vec<&GroupSample> = j.parts.iter().flat_map(|p| &p.metrics).collect();
    groups
        .iter()
        .filter(|g| g.scope == "taskmanager.job.task.operator" && g.var("operator_id") == Some(vid))
        .filter_map(|op| {
            let subtask = op.var("subtask_index")?.parse::<u32>().ok()?;
            let task = groups.iter().copied().find(|g| {
                g.scope == "taskmanager.job.task"
                    && g.var("task_id") == op.var("task_id")
                    && g.var("subtask_index") == op.var("subtask_index")
            });
            Some((subtask, *op, task))
        })
        .collect()
}

/// Vertex `vid`'s metrics per subtask, as its parts last reported them: for each subtask its
/// task's figures with the vertex's own records counts, then the operator's under its name.
fn vertex_subtasks(j: &JobView, vid: &str) -> Result<BTreeMap<u32, Vec<(String, f64)>>, ApiError> {
    let Some(vertex) = j.graph.plan.vertices.iter().find(|v| v.id.0.to_string() == vid) else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("job {} has no vertex '{vid}'; see /jobs/{}", j.id, j.id)));
    };
    let mut out: BTreeMap<u32, Vec<(String, f64)>> = BTreeMap::new();
    for (subtask, op, task) in subtask_groups(j, vid) {
        let mut metrics: Vec<(String, f64)> = Vec::new();
        if let Some(task) = task {
            metrics.extend(
                task.metrics.iter().filter(|(n, _)| !OWN.contains(&n.as_str())).map(|(n, s)| (n.clone(), s.number())),
            );
        }
        metrics
            .extend(op.metrics.iter().filter(|(n, _)| OWN.contains(&n.as_str())).map(|(n, s)| (n.clone(), s.number())));
        metrics.extend(op.metrics.iter().map(|(n, s)| (format!("{}.{n}", vertex.name), s.number())));
        out.insert(subtask, metrics);
    }
    Ok(out)
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/metrics`: `<subtask>.<name>` ids.
pub async fn vertex(State(c): Shared, Path((id, vid)): Path<(String, String)>, Query(q): Params) -> Response {
    match with_job(&c, &id, |j| vertex_subtasks(j, &vid)) {
        Ok(Ok(subtasks)) => {
            let all: Vec<(String, f64)> =
                subtasks.iter().flat_map(|(s, m)| m.iter().map(move |(n, v)| (format!("{s}.{n}"), *v))).collect();
            answer(&all, &q)
        }
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/subtasks/metrics`: aggregated over the subtasks
/// `subtasks` names (all).
pub async fn subtasks(State(c): Shared, Path((id, vid)): Path<(String, String)>, Query(q): Params) -> Response {
    let chosen: Option<Vec<u32>> = list(&q, "subtasks").map(|s| s.iter().filter_map(|n| n.parse().ok()).collect());
    match with_job(&c, &id, |j| vertex_subtasks(j, &vid)) {
        Ok(Ok(subtasks)) => {
            let sets: Vec<Vec<(String, f64)>> = subtasks
                .into_iter()
                .filter(|(s, _)| chosen.as_ref().is_none_or(|c| c.contains(s)))
                .map(|(_, m)| m)
                .collect();
            aggregate(&sets, &q).unwrap_or_else(IntoResponse::into_response)
        }
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/subtasks/{subtaskindex}/metrics`.
pub async fn subtask(
    State(c): Shared,
    Path((id, vid, subtask)): Path<(String, String, String)>,
    Query(q): Params,
) -> Response {
    match with_job(&c, &id, |j| vertex_subtasks(j, &vid)) {
        Ok(Ok(subtasks)) => match subtask.parse::<u32>().ok().and_then(|s| subtasks.get(&s)) {
            Some(m) => answer(m, &q),
            None => ApiError(StatusCode::NOT_FOUND, format!("vertex {vid} has no running subtask '{subtask}'"))
                .into_response(),
        },
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/watermarks`: each subtask's input watermark.
pub async fn watermarks(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| vertex_subtasks(j, &vid)) {
        Ok(Ok(subtasks)) => {
            let marks: Vec<Value> = subtasks
                .iter()
                .filter_map(|(s, m)| {
                    m.iter()
                        .find(|(n, _)| n == "currentInputWatermark")
                        .map(|(_, v)| json!({ "id": format!("{s}.currentInputWatermark"), "value": shown(*v) }))
                })
                .collect();
            Json(marks).into_response()
        }
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}
