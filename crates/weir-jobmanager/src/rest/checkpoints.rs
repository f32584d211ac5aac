//! `/jobs/{jobid}/checkpoints`, `/jobs/{jobid}/savepoints` and `/jobs/{jobid}/stop`, in the shapes
//! of Flink's REST API (savepoints and stops are asynchronous operations: a trigger id, then its
//! status).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use weir_core::JobStatus;
use weir_runtime::checkpoint::coordinator::CheckpointRecord;

use super::common::{ApiError, parse_job, with_job};
use crate::checkpoints::SavepointStatus;
use crate::cluster::Cluster;

type Shared = State<Arc<Cluster>>;

fn record(r: &CheckpointRecord) -> Value {
    json!({
        "className": if r.status == "COMPLETED" { "completed" } else if r.status == "FAILED" { "failed" } else { "in_progress" },
        "id": r.id,
        "status": r.status,
        "is_savepoint": r.is_savepoint,
        "checkpoint_type": if r.is_savepoint { "SAVEPOINT" } else { "CHECKPOINT" },
        "trigger_timestamp": r.trigger_timestamp,
        "latest_ack_timestamp": r.latest_ack_timestamp,
        "state_size": r.state_size,
        "checkpointed_size": r.checkpointed_size,
        "end_to_end_duration": r.end_to_end_duration,
        "num_subtasks": r.num_subtasks,
        "num_acknowledged_subtasks": r.num_acknowledged_subtasks,
        "external_path": r.external_path,
        "failure_message": r.failure_message,
        "discarded": false,
        // Aligned checkpoints: no in-flight data persisted, nothing buffered.
        "alignment_buffered": 0,
        "persisted_data": 0,
        "savepointFormat": Value::Null,
    })
}

/// `GET /jobs/{jobid}/checkpoints`: counts, the latest completed, failed and restored checkpoint,
/// and the history.
pub async fn checkpoints(State(c): Shared, Path(id): Path<String>) -> Response {
    let stats = match with_job(&c, &id, |j| j.checkpoints.as_ref().map(|cp| cp.view().stats)) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return ApiError(
                StatusCode::NOT_FOUND,
                "the job takes no checkpoints (execution.checkpointing.interval is not set)".into(),
            )
            .into_response();
        }
        Err(e) => return e.into_response(),
    };
    let latest = |status: &str| stats.history.iter().find(|h| h.status == status).map(record);
    let in_progress = stats.history.iter().filter(|h| h.status == "IN_PROGRESS").count();
    Json(json!({
        "counts": {
            "restored": u64::from(stats.restored.is_some()),
            "total": stats.triggered,
            "in_progress": in_progress,
            "completed": stats.completed,
            "failed": stats.failed,
        },
        "latest": {
            "completed": latest("COMPLETED"),
            "failed": latest("FAILED"),
            "savepoint": stats.history.iter().find(|h| h.is_savepoint && h.status == "COMPLETED").map(record),
            "restored": stats.restored.as_ref().map(|(id, path)| json!({ "id": id, "external_path": path, "is_savepoint": false })),
        },
        "history": stats.history.iter().map(record).collect::<Vec<_>>(),
        "summary": summary(&stats.history),
    }))
    .into_response()
}

/// Flink's `tasks` of a checkpoint's details, one per vertex: its subtasks and how many
/// acknowledged (all, once the checkpoint completed). weir accounts sizes and durations per
/// checkpoint, not per vertex: those are null here.
fn tasks(r: &CheckpointRecord, vertices: &[(String, u32)]) -> Value {
    let done = r.status == "COMPLETED";
    let m: serde_json::Map<String, Value> = vertices
        .iter()
        .map(|(vid, p)| {
            let acked = if done { *p } else { 0 };
            let t = json!({
                "id": vid, "status": r.status, "latest_ack_timestamp": if done { json!(r.latest_ack_timestamp) } else { Value::Null },
                "checkpointed_size": Value::Null, "state_size": Value::Null, "end_to_end_duration": Value::Null,
                "alignment_buffered": 0, "processed_data": Value::Null, "persisted_data": 0,
                "num_subtasks": p, "num_acknowledged_subtasks": acked,
            });
            (vid.clone(), t)
        })
        .collect();
    Value::Object(m)
}

/// Flink's `summary` of completed checkpoints: min, max, average and percentiles of their sizes
/// and durations, over the completed checkpoints of the kept history. weir's checkpoints are
/// aligned: nothing in flight is persisted.
fn summary(history: &std::collections::VecDeque<CheckpointRecord>) -> Value {
    let completed: Vec<&CheckpointRecord> = history.iter().filter(|h| h.status == "COMPLETED").collect();
    let stat = |f: &dyn Fn(&CheckpointRecord) -> u64| {
        let mut v: Vec<u64> = completed.iter().map(|r| f(r)).collect();
        v.sort_unstable();
        if v.is_empty() {
            return json!({ "min": 0, "max": 0, "avg": 0, "p50": 0.0, "p90": 0.0, "p95": 0.0, "p99": 0.0, "p999": 0.0 });
        }
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64;
        let avg = v.iter().sum::<u64>() / v.len() as u64;
        json!({
            "min": v[0], "max": v[v.len() - 1], "avg": avg,
            "p50": at(0.5), "p90": at(0.9), "p95": at(0.95), "p99": at(0.99), "p999": at(0.999),
        })
    };
    let zero = || stat(&|_| 0);
    json!({
        "checkpointed_size": stat(&|r| r.checkpointed_size),
        "state_size": stat(&|r| r.state_size),
        "end_to_end_duration": stat(&|r| r.end_to_end_duration),
        "alignment_buffered": zero(),
        "processed_data": zero(),
        "persisted_data": zero(),
    })
}

/// Body of `POST /jobs/{jobid}/savepoints`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SavepointBody {
    #[serde(rename = "target-directory", default)]
    target_directory: Option<String>,
    #[serde(rename = "cancel-job", default)]
    cancel_job: bool,
    #[serde(rename = "formatType", default)]
    format_type: Option<String>,
    /// The client's id for the request (Flink 1.15+ sends one).
    #[serde(rename = "triggerId", default)]
    trigger_id: Option<String>,
}

/// Body of `POST /jobs/{jobid}/stop`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StopBody {
    #[serde(rename = "targetDirectory", default)]
    target_directory: Option<String>,
    #[serde(default)]
    drain: bool,
    #[serde(rename = "formatType", default)]
    format_type: Option<String>,
    /// The client's id for the request.
    #[serde(rename = "triggerId", default)]
    trigger_id: Option<String>,
}

fn trigger(
    c: &Cluster,
    id: &str,
    target: Option<String>,
    (stop, drain): (bool, bool),
    trigger_id: Option<String>,
) -> Result<String, ApiError> {
    let id = parse_job(id)?;
    let job =
        c.job(id).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("job {id} is not known to this cluster")))?;
    if job.status() != JobStatus::Running {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("job {id} is {}; savepoints are taken of running jobs only", job.status()),
        ));
    }
    let cp = job.checkpoints.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "the job takes no checkpoints; savepoints need execution.checkpointing.interval set".into(),
        )
    })?;
    cp.request_savepoint(target, stop, drain, trigger_id).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))
}

fn format_ok(format: &Option<String>) -> Result<(), ApiError> {
    match format.as_deref() {
        None | Some("CANONICAL") => Ok(()),
        Some(other) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("savepoint format '{other}' is not supported; use CANONICAL"),
        )),
    }
}

/// `POST /jobs/{jobid}/savepoints`: triggers a savepoint; 202 with its `request-id`.
pub async fn trigger_savepoint(
    State(c): Shared,
    Path(id): Path<String>,
    body: Result<Json<SavepointBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, format!("bad savepoint request: {e}")).into_response(),
    };
    if body.cancel_job {
        return ApiError(
            StatusCode::BAD_REQUEST,
            "cancel-job is not supported; stop the job with POST /jobs/{jobid}/stop".into(),
        )
        .into_response();
    }
    if let Err(e) = format_ok(&body.format_type) {
        return e.into_response();
    }
    match trigger(&c, &id, body.target_directory, (false, false), body.trigger_id) {
        Ok(t) => (StatusCode::ACCEPTED, Json(json!({ "request-id": t }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /jobs/{jobid}/stop`: stops the job with a savepoint (`drain`: after the largest
/// watermark); 202 with its `request-id`, whose status `/jobs/{jobid}/savepoints/{id}` gives.
pub async fn stop(State(c): Shared, Path(id): Path<String>, body: Result<Json<StopBody>, JsonRejection>) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return ApiError(StatusCode::BAD_REQUEST, format!("bad stop request: {e}")).into_response(),
    };
    if let Err(e) = format_ok(&body.format_type) {
        return e.into_response();
    }
    match trigger(&c, &id, body.target_directory, (true, body.drain), body.trigger_id) {
        Ok(t) => (StatusCode::ACCEPTED, Json(json!({ "request-id": t }))).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/savepoints/{triggerid}`: `IN_PROGRESS`, or `COMPLETED` with the location or
/// the failure.
pub async fn savepoint_status(State(c): Shared, Path((id, trigger)): Path<(String, String)>) -> Response {
    let status = with_job(&c, &id, |j| j.checkpoints.as_ref().and_then(|cp| cp.savepoint(&trigger)));
    match status {
        Ok(Some(SavepointStatus::InProgress)) => Json(json!({ "status": { "id": "IN_PROGRESS" } })).into_response(),
        Ok(Some(SavepointStatus::Completed(location))) => {
            Json(json!({ "status": { "id": "COMPLETED" }, "operation": { "location": location } })).into_response()
        }
        Ok(Some(SavepointStatus::Failed(why))) => Json(json!({
            "status": { "id": "COMPLETED" },
            "operation": { "failure-cause": { "class": "weir.SavepointFailure", "stack-trace": why.clone(), "serialized-throwable": why } },
        }))
        .into_response(),
        Ok(None) => ApiError(StatusCode::NOT_FOUND, format!("no savepoint with trigger id '{trigger}' for this job"))
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/checkpoints/config`: the job's checkpointing settings, in Flink's shape.
pub async fn config(State(c): Shared, Path(id): Path<String>) -> Response {
    let settings = with_job(&c, &id, |j| {
        let backend = j.config.get("state.backend.type").map(|v| v.render()).unwrap_or_else(|| "hashmap".into());
        (j.config.checkpointing(), backend)
    });
    match settings {
        Ok((Ok(cp), backend)) if cp.enabled() => Json(json!({
            "mode": match cp.mode {
                weir_core::checkpointing::CheckpointingMode::ExactlyOnce => "exactly_once",
                weir_core::checkpointing::CheckpointingMode::AtLeastOnce => "at_least_once",
            },
            "interval": cp.interval_ms,
            "timeout": cp.timeout_ms,
            "min_pause": cp.min_pause_ms,
            "max_concurrent": 1,
            // weir keeps the last num-retained checkpoints whatever ended the job.
            "externalization": { "enabled": true, "delete_on_cancellation": false },
            "state_backend": backend,
            "checkpoint_storage": if cp.dir().starts_with("s3://") { "S3CheckpointStorage" } else { "FileSystemCheckpointStorage" },
            "unaligned_checkpoints": false,
            "tolerable_failed_checkpoints": i32::MAX,
            "aligned_checkpoint_timeout": 0,
            "checkpoints_after_tasks_finish": true,
            "state_changelog_enabled": false,
            "changelog_periodic_materialization_interval": 0,
            "changelog_storage": "memory",
            "weir-retained": cp.retained,
            "weir-dir": cp.dir(),
        }))
        .into_response(),
        Ok((Ok(_), _)) => ApiError(
            StatusCode::NOT_FOUND,
            "the job takes no checkpoints (execution.checkpointing.interval is not set)".into(),
        )
        .into_response(),
        Ok((Err(e), _)) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /jobs/{jobid}/checkpoints/details/{checkpointid}`: one checkpoint of the history.
pub async fn details(State(c): Shared, Path((id, cid)): Path<(String, String)>) -> Response {
    let stats = match with_job(&c, &id, |j| j.checkpoints.as_ref().map(|cp| cp.view().stats)) {
        Ok(Some(s)) => s,
        Ok(None) => {
            return ApiError(StatusCode::NOT_FOUND, "the job takes no checkpoints".into()).into_response();
        }
        Err(e) => return e.into_response(),
    };
    let vertices = with_job(&c, &id, |j| {
        j.graph.plan.vertices.iter().map(|v| (v.id.0.to_string(), v.parallelism)).collect::<Vec<_>>()
    })
    .unwrap_or_default();
    match cid.parse::<u64>().ok().and_then(|n| stats.history.iter().find(|h| h.id == n)) {
        Some(r) => {
            let mut v = record(r);
            v["tasks"] = tasks(r, &vertices);
            Json(v).into_response()
        }
        None => ApiError(
            StatusCode::NOT_FOUND,
            format!("checkpoint '{cid}' is not in the job's history (the last {} are kept)", stats.history.len()),
        )
        .into_response(),
    }
}
