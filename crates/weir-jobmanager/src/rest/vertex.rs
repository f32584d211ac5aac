//! Flink's endpoints about one vertex of a job, as its dashboard's vertex drawer reads them:
//! details per subtask, per TaskManager, back pressure (from the tasks' time metrics, as Flink
//! computes it since 1.13), accumulators, subtask times, and the flame graph (not sampled yet:
//! answered as Flink answers with `rest.flamegraph.enabled: false`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::common::{ApiError, Shared, with_job};
use crate::state::{JobView, now_ms};

/// What is known of one subtask of a vertex: where it runs and its task's figures.
struct Subtask {
    index: u32,
    taskmanager: String,
    host: String,
    metrics: BTreeMap<String, f64>,
}

/// The vertex `vid` of job `j` (its plan entry's index), or 404.
fn vertex_of<'a>(j: &'a JobView, vid: &str) -> Result<&'a weir_core::plan::PlanVertex, ApiError> {
    j.graph.plan.vertices.iter().find(|v| v.id.0.to_string() == vid).ok_or_else(|| {
        ApiError(axum::http::StatusCode::NOT_FOUND, format!("job {} has no vertex '{vid}'; see /jobs/{}", j.id, j.id))
    })
}

/// The subtasks of vertex `vid` that reported figures, with their task's metrics and the
/// operator's own record counts.
fn subtasks(j: &JobView, vid: &str) -> Vec<Subtask> {
    let mut out: Vec<Subtask> = super::metrics::subtask_groups(j, vid)
        .into_iter()
        .map(|(index, op, task)| {
            let metrics: BTreeMap<String, f64> = task
                .into_iter()
                .chain([op])
                .flat_map(|g| g.metrics.iter().map(|(n, s)| (n.clone(), s.number())))
                .collect();
            Subtask {
                index,
                taskmanager: op.var("tm_id").unwrap_or_default().to_string(),
                host: op.var("host").unwrap_or_default().to_string(),
                metrics,
            }
        })
        .collect();
    out.sort_by_key(|s| s.index);
    out
}

fn figure(m: &BTreeMap<String, f64>, name: &str) -> f64 {
    m.get(name).copied().filter(|v| v.is_finite()).unwrap_or(0.0)
}

/// Flink's `IOMetricsInfo` of one subtask.
fn io(m: &BTreeMap<String, f64>) -> Value {
    json!({
        "read-bytes": figure(m, "numBytesIn") as u64, "read-bytes-complete": true,
        "write-bytes": figure(m, "numBytesOut") as u64, "write-bytes-complete": true,
        "read-records": figure(m, "numRecordsIn") as u64, "read-records-complete": true,
        "write-records": figure(m, "numRecordsOut") as u64, "write-records-complete": true,
        "accumulated-backpressured-time": figure(m, "accumulatedBackpressuredTimeMs") as u64,
        "accumulated-idle-time": figure(m, "accumulatedIdleTimeMs") as u64,
        "accumulated-busy-time": figure(m, "accumulatedBusyTimeMs").max(0.0),
    })
}

/// Flink's aggregate of `values`: min, max, avg, sum, median and quartiles.
fn agg(mut values: Vec<f64>) -> Value {
    if values.is_empty() {
        values.push(0.0);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    let sum: f64 = values.iter().sum();
    json!({
        "min": values[0], "max": values[values.len() - 1], "avg": sum / values.len() as f64, "sum": sum,
        "median": at(0.5), "p25": at(0.25), "p75": at(0.75), "p95": at(0.95),
    })
}

fn aggregated_io(subs: &[&Subtask]) -> Value {
    let names = [
        ("read-bytes", "numBytesIn"),
        ("write-bytes", "numBytesOut"),
        ("read-records", "numRecordsIn"),
        ("write-records", "numRecordsOut"),
        ("accumulated-backpressured-time", "accumulatedBackpressuredTimeMs"),
        ("accumulated-idle-time", "accumulatedIdleTimeMs"),
        ("accumulated-busy-time", "accumulatedBusyTimeMs"),
    ];
    let m: serde_json::Map<String, Value> =
        names.iter().map(|(k, n)| (k.to_string(), agg(subs.iter().map(|s| figure(&s.metrics, n)).collect()))).collect();
    Value::Object(m)
}

/// The status every subtask of the vertex shows (weir reports tasks per part, not one by one).
fn status(j: &JobView, vid: &str) -> String {
    let per = crate::tasks::per_vertex(j);
    j.graph
        .plan
        .vertices
        .iter()
        .zip(&per)
        .find(|(v, _)| v.id.0.to_string() == vid)
        .map(|(_, c)| c.aggregate().as_str().to_string())
        .unwrap_or_else(|| "CREATED".into())
}

/// `GET /jobs/{jobid}/vertices/{vertexid}`: Flink's `JobVertexDetailsInfo`.
pub(super) async fn details(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| {
        let v = vertex_of(j, &vid)?;
        let (now, start) = (now_ms(), j.submitted_ms);
        let end = j.end_ms().unwrap_or(-1);
        let duration = j.end_ms().unwrap_or(now) - start;
        let st = status(j, &vid);
        let subs = subtasks(j, &vid);
        let list: Vec<Value> = subs
            .iter()
            .map(|s| {
                json!({
                    "subtask": s.index, "status": st, "attempt": j.restarts, "host": s.host,
                    "endpoint": s.host, "start-time": start, "start_time": start, "end-time": end,
                    "duration": duration, "metrics": io(&s.metrics), "taskmanager-id": s.taskmanager,
                    "status-duration": { "CREATED": 0, "SCHEDULED": 0, "DEPLOYING": 0, "INITIALIZING": 0, "RUNNING": duration },
                })
            })
            .collect();
        let refs: Vec<&Subtask> = subs.iter().collect();
        Ok(json!({
            "id": vid, "name": v.name, "parallelism": v.parallelism, "maxParallelism": v.max_parallelism,
            "now": now, "subtasks": list,
            "aggregated": {
                "metrics": aggregated_io(&refs),
                "status-duration": {
                    "CREATED": agg(vec![0.0]), "SCHEDULED": agg(vec![0.0]), "DEPLOYING": agg(vec![0.0]),
                    "INITIALIZING": agg(vec![0.0]), "RUNNING": agg(vec![duration as f64]),
                },
            },
        }))
    }) {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/taskmanagers`: the vertex's subtasks by TaskManager.
pub(super) async fn taskmanagers(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| {
        let v = vertex_of(j, &vid)?;
        let subs = subtasks(j, &vid);
        let st = status(j, &vid);
        let mut by_tm: BTreeMap<&str, Vec<&Subtask>> = BTreeMap::new();
        for s in &subs {
            by_tm.entry(s.taskmanager.as_str()).or_default().push(s);
        }
        let (now, start) = (now_ms(), j.submitted_ms);
        let list: Vec<Value> = by_tm
            .iter()
            .map(|(tm, subs)| {
                let mut sum: BTreeMap<String, f64> = BTreeMap::new();
                for s in subs {
                    for (k, x) in &s.metrics {
                        *sum.entry(k.clone()).or_default() += if x.is_finite() { *x } else { 0.0 };
                    }
                }
                let mut counts = serde_json::Map::new();
                for state in crate::tasks::TaskState::ALL {
                    let n = if state.as_str() == st { subs.len() } else { 0 };
                    counts.insert(state.as_str().to_string(), n.into());
                }
                json!({
                    "host": subs[0].host, "endpoint": subs[0].host, "status": st, "start-time": start,
                    "end-time": j.end_ms().unwrap_or(-1), "duration": j.end_ms().unwrap_or(now) - start,
                    "metrics": io(&sum), "status-counts": counts, "taskmanager-id": tm,
                    "aggregated": { "metrics": aggregated_io(subs), "status-duration": {} },
                })
            })
            .collect();
        Ok(json!({ "id": vid, "name": v.name, "now": now, "taskmanagers": list }))
    }) {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// Flink's level of a back-pressure ratio: `ok` up to 0.1, `low` up to 0.5, `high` above.
fn level(ratio: f64) -> &'static str {
    if ratio > 0.5 {
        "high"
    } else if ratio > 0.1 {
        "low"
    } else {
        "ok"
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/backpressure`: from each subtask's
/// `backPressuredTimeMsPerSecond`, `idleTimeMsPerSecond` and `busyTimeMsPerSecond`, as Flink
/// has computed it since 1.13 (no stack sampling).
pub(super) async fn backpressure(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| {
        vertex_of(j, &vid)?;
        let subs = subtasks(j, &vid);
        let mut worst: f64 = 0.0;
        let list: Vec<Value> = subs
            .iter()
            .map(|s| {
                let ratio = (figure(&s.metrics, "backPressuredTimeMsPerSecond") / 1000.0).clamp(0.0, 1.0);
                worst = worst.max(ratio);
                json!({
                    "subtask": s.index, "backpressure-level": level(ratio), "backpressureLevel": level(ratio),
                    "ratio": ratio,
                    "idleRatio": (figure(&s.metrics, "idleTimeMsPerSecond") / 1000.0).clamp(0.0, 1.0),
                    "busyRatio": (figure(&s.metrics, "busyTimeMsPerSecond") / 1000.0).clamp(0.0, 1.0),
                })
            })
            .collect();
        Ok(json!({
            "status": "ok", "backpressure-level": level(worst), "backpressureLevel": level(worst),
            "end-timestamp": now_ms(), "subtasks": list,
        }))
    }) {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/accumulators`: weir's accumulators belong to the job
/// (`/jobs/{id}/execution-result`), not to vertices, so a vertex lists none.
pub(super) async fn accumulators(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| vertex_of(j, &vid).map(|_| ())) {
        Ok(Ok(())) => Json(json!({ "id": vid, "user-accumulators": [] })).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/subtasks/accumulators`: each subtask, with none (see
/// [`accumulators`]).
pub(super) async fn subtask_accumulators(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| {
        let v = vertex_of(j, &vid)?;
        let list: Vec<Value> = subtasks(j, &vid)
            .iter()
            .map(|s| json!({ "subtask": s.index, "attempt": j.restarts, "host": s.host, "endpoint": s.host, "user-accumulators": [] }))
            .collect();
        Ok(json!({ "id": vid, "parallelism": v.parallelism, "subtasks": list }))
    }) {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/subtasktimes`: when each subtask reached each state
/// (weir knows the job's submission and its current state's start, not each task's).
pub(super) async fn subtask_times(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| {
        let v = vertex_of(j, &vid)?;
        let now = now_ms();
        let st = status(j, &vid);
        let list: Vec<Value> = subtasks(j, &vid)
            .iter()
            .map(|s| {
                let mut ts = serde_json::Map::new();
                for state in crate::tasks::TaskState::ALL {
                    ts.insert(state.as_str().to_string(), 0.into());
                }
                ts.insert("CREATED".into(), j.submitted_ms.into());
                ts.insert(st.clone(), j.modified_ms.into());
                json!({
                    "subtask": s.index, "host": s.host, "endpoint": s.host,
                    "duration": j.end_ms().unwrap_or(now) - j.submitted_ms, "timestamps": ts,
                })
            })
            .collect();
        Ok(json!({ "id": vid, "name": v.name, "now": now, "subtasks": list }))
    }) {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/vertices/{vertexid}/flamegraph`: weir does not sample task threads' stacks
/// yet; the answer is Flink's for `rest.flamegraph.enabled: false` (`endTimestamp` -2), which
/// its dashboard shows as the feature being off.
pub(super) async fn flamegraph(State(c): Shared, Path((id, vid)): Path<(String, String)>) -> Response {
    match with_job(&c, &id, |j| vertex_of(j, &vid).map(|_| ())) {
        Ok(Ok(())) => Json(json!({ "endTimestamp": -2 })).into_response(),
        Ok(Err(e)) | Err(e) => e.into_response(),
    }
}
